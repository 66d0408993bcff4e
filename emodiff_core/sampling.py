"""The sampling policy, decided once: which samplers exist, their options, and how a step count becomes a
spacing of the training schedule.

Every caller (the Sampler node, the CLI, ``training/evaluate.py``, the trainers' validation samples and the
benchmarks) passes a `SamplingSettings` value; none of them spells a sampler name or a spacing string.

    SamplingSettings()                                  the default: DDIM, 10 steps, from the previous frame at 0.5 T
    SamplingSettings(Sampler.ANCESTRAL, steps=1000, start_noise=1.0)   the paper's sampler, literally
    SamplingSettings.parse("ddim25@1")                  the text form used on command lines and in reports
    SamplingSettings(guidance=3.0)                      classifier-free guidance on the expression (`guidance`)
    SamplingSettings(guidance=2.0, guidance_min_noise=0.35)   ... on the steps at or above 0.35 T only

Step count -> spacing: DDIM keeps every s-th step starting at 0, s the smallest integer stride that gives exactly
``steps`` steps (DDIM's uniform skip), when one does, else an even fractional stride with the first and last step; the ancestral
sampler always uses the even stride (improved DDPM's respacing). With ``start_noise < 1`` the spaced process
is truncated to its steps at or below ``start_noise * T`` and each frame starts from the previous one
diffused there (`anchored_start`), which the sweep in benchmarks/README.md chose as the default.
"""
from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Tuple

import torch

from .diffusion.process import GaussianDiffusion
from .diffusion.respace import keep_timesteps, space_timesteps, truncate
from .diffusion.samplers import StepInfo, randn, sample_ancestral, sample_ddim


class SamplingError(ValueError):
    """An unknown sampler, or an option the chosen sampler does not take."""


class Sampler(str, enum.Enum):
    """The samplers. ``str`` values are what node widgets, JSON reports and command lines show."""

    DDIM = "ddim"            # deterministic (eta = 0) or stochastic; good at few steps
    ANCESTRAL = "ancestral"  # x_{t-1} ~ N(mu_theta, Sigma_theta), Eq. 3, with the learned variance

    @classmethod
    def parse(cls, value) -> "Sampler":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise SamplingError(f"unknown sampler {value!r}; choose one of {', '.join(NAMES)}") from None


NAMES = tuple(s.value for s in Sampler)
# the guidance part after "g" is `parse_guidance`'s grammar, read by it
_TEXT = re.compile(r"^\s*([a-z]+)\s*(\d+)\s*(?:@\s*([0-9.e+-]+))?\s*(?:g([^a]*))?\s*(?:a\s*([0-9.e+-]+))?\s*$")


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample each frame. Validated on construction: an unknown sampler or an option the sampler does
    not take (``eta`` for the ancestral sampler) is an error, never silently dropped.

    :param sampler: `Sampler` (or its name)
    :param steps: denoising steps over the whole schedule (before the start-noise truncation)
    :param start_noise: in (0, 1]; 1 = every frame from pure noise (the paper), lower = from the previous frame
        noised to that fraction of the schedule (fewer steps are then actually run, see `denoising_steps`)
    :param eta: DDIM only: 0 deterministic, 1 matches DDPM's posterior variance; ``None`` = 0
    :param guidance: classifier-free guidance on the expression condition, w >= 0: the noise prediction is
        eps(neutral psi) + w (eps(psi) - eps(neutral psi)); 1 = the conditional model alone (no extra cost),
        above 1 exaggerates the emotion (two network evaluations per step). Needs the neutral expression
        sequence (`pipeline.emotion_expression_pair`) and a model trained with expression dropout.
    :param guidance_min_noise: in [0, start_noise]: guidance runs only on the steps at or above this fraction of
        the schedule, the conditional model alone below it (one evaluation instead of two). 0 = every step. The
        emotion's layout is decided on the noisier steps; the last ones only refine it.
    :param audio_guidance: guidance on the audio condition, w >= 0 (`guidance.AudioGuidance`): eps(silence) +
        w (eps(audio) - eps(silence)), the null being digital silence, where the model learned a closed, still
        mouth; above 1 the mouth follows the voice further (two network evaluations per step, four with
        ``guidance``). 1 = off. Needs no special training. Left out of `to_dict` when off, so that reports and
        saved crops written before it existed read the same.
    """

    sampler: Sampler = Sampler.DDIM
    steps: int = 10
    start_noise: float = 0.5
    eta: Optional[float] = None
    guidance: float = 1.0
    guidance_min_noise: float = 0.0
    audio_guidance: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "sampler", Sampler.parse(self.sampler))
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise SamplingError(f"steps must be a whole number >= 1, got {self.steps!r}")
        start = float(self.start_noise)
        if not 0.0 < start <= 1.0:
            raise SamplingError(f"start_noise must be in (0, 1]; got {self.start_noise} (1 = from pure noise)")
        object.__setattr__(self, "start_noise", start)
        guidance = float(self.guidance)
        if not 0.0 <= guidance < float("inf"):
            raise SamplingError(f"guidance must be a number >= 0 (1 = off), got {self.guidance}")
        object.__setattr__(self, "guidance", guidance)
        floor = float(self.guidance_min_noise)
        if not 0.0 <= floor <= start:
            raise SamplingError(f"guidance_min_noise must be in [0, start_noise = {start:g}], got "
                                f"{self.guidance_min_noise} (above the start noise no step would be guided)")
        object.__setattr__(self, "guidance_min_noise", floor if guidance != 1.0 else 0.0)   # unguided: moot
        audio_guidance = float(self.audio_guidance)
        if not 0.0 <= audio_guidance < float("inf"):
            raise SamplingError(f"audio_guidance must be a number >= 0 (1 = off), got {self.audio_guidance}")
        object.__setattr__(self, "audio_guidance", audio_guidance)
        if self.eta is not None:
            if self.sampler is not Sampler.DDIM:
                raise SamplingError(f"eta is a DDIM option; the {self.sampler.value} sampler does not take it")
            if not float(self.eta) >= 0.0:
                raise SamplingError(f"eta must be >= 0, got {self.eta}")
            object.__setattr__(self, "eta", float(self.eta))

    # ----------------------------------------------------------------- text form
    @classmethod
    def parse(cls, text: str, **options) -> "SamplingSettings":
        """``"<sampler><steps>[@<start_noise>][g<guidance>[><guidance_min_noise>]][a<audio_guidance>]"``, e.g.
        ``ddim10``, ``ddim25@1``, ``ancestral1000@1``, ``ddim10@0.5g3``, ``ddim10@0.5g2>0.35``, ``ddim10@0.5a2``.
        Without ``@`` the start noise is the default's, without ``g`` or ``a`` that guidance is off (1), without
        ``>`` it runs on every step. ``options`` (e.g. ``eta``) are passed on."""
        match = _TEXT.match(str(text).lower())
        if not match:
            raise SamplingError(f"cannot read sampling settings {text!r}: write <sampler><steps>[@<start noise>]"
                                f"[g<guidance>[><lowest guided noise>]][a<audio guidance>], e.g. ddim10, "
                                f"ancestral1000@1, ddim10@0.5g2>0.35 or ddim10a2 (samplers: {', '.join(NAMES)})")
        name, steps, start, guidance, audio = match.groups()
        try:
            start_noise = float(start) if start is not None else DEFAULT.start_noise
        except ValueError:
            raise SamplingError(f"cannot read the start noise in {text!r}") from None
        scale, min_noise = parse_guidance(guidance) if guidance is not None else (1.0, 0.0)
        try:
            audio_scale = float(audio) if audio is not None else 1.0
        except ValueError:
            raise SamplingError(f"cannot read the audio guidance in {text!r}") from None
        return cls(Sampler.parse(name), int(steps), start_noise, guidance=scale, guidance_min_noise=min_noise,
                   audio_guidance=audio_scale, **options)

    @property
    def label(self) -> str:
        """The text form `parse` reads back (eta is not part of it)."""
        text = f"{self.sampler.value}{self.steps}@{self.start_noise:g}"
        if self.guided:
            text = f"{text}g{self.guidance:g}"
            if self.guidance_min_noise > 0:
                text = f"{text}>{self.guidance_min_noise:g}"
        return f"{text}a{self.audio_guidance:g}" if self.audio_guided else text

    @property
    def guided(self) -> bool:
        """Whether sampling runs classifier-free guidance (two network evaluations per step)."""
        return self.guidance != 1.0

    @property
    def audio_guided(self) -> bool:
        """Whether sampling runs guidance on the audio condition (`guidance.AudioGuidance`)."""
        return self.audio_guidance != 1.0

    def to_dict(self) -> dict:
        out = {"sampler": self.sampler.value, "steps": self.steps, "start_noise": self.start_noise, "eta": self.eta,
               "guidance": self.guidance, "guidance_min_noise": self.guidance_min_noise}
        if self.audio_guided:
            out["audio_guidance"] = self.audio_guidance
        return out

    def replace(self, **changes) -> "SamplingSettings":
        return dataclasses.replace(self, **changes)

    # ----------------------------------------------------------------- the process
    def timesteps(self, num_timesteps: int) -> List[int]:
        """The training steps this policy keeps out of ``num_timesteps`` (before the start-noise truncation)."""
        if self.steps > num_timesteps:
            raise SamplingError(f"{self.steps} steps asked, but the model was trained with {num_timesteps}")
        if self.sampler is Sampler.DDIM:
            # the smallest integer stride that gives exactly `steps` steps from 0 (DDIM's uniform skip)
            stride = -(-num_timesteps // self.steps)
            while len(range(0, num_timesteps, stride)) > self.steps:
                stride += 1
            if len(range(0, num_timesteps, stride)) == self.steps:
                return list(range(0, num_timesteps, stride))
        return space_timesteps(num_timesteps, self.steps)

    def process(self, diffusion: GaussianDiffusion) -> GaussianDiffusion:
        """The process the sampler walks: a NEW respaced (and, with start_noise < 1, truncated) copy of the
        full training process ``diffusion``; ``diffusion`` itself is never modified."""
        spaced = keep_timesteps(diffusion, self.timesteps(diffusion.num_timesteps))
        if self.anchored:
            spaced = truncate(spaced, self._start_limit(diffusion.num_timesteps))
        return spaced

    def process_for(self, diffusion_config) -> GaussianDiffusion:
        """`process` of the training process described by a `config.DiffusionConfig`."""
        return self.process(GaussianDiffusion.from_config(diffusion_config))

    def frame_timesteps(self, num_timesteps: int) -> List[int]:
        """The training timesteps one frame is denoised through, the steps of `process`: the kept steps, when
        anchored only those at or below start_noise * T (the lowest one if none is)."""
        kept = self.timesteps(num_timesteps)
        if not self.anchored:
            return kept
        limit = self._start_limit(num_timesteps)
        return [t for t in kept if t <= limit] or [min(kept)]

    def denoising_steps(self, num_timesteps: int) -> int:
        """Network evaluations per frame (after the start-noise truncation)."""
        return len(self.frame_timesteps(num_timesteps))

    def start_timestep(self, num_timesteps: int) -> int:
        """The training timestep of a frame's first denoising step (the step `anchored_start` diffuses the
        previous frame to when anchored)."""
        return max(self.frame_timesteps(num_timesteps))

    def _start_limit(self, num_timesteps: int) -> int:
        """start_noise * T on the training grid: the highest timestep an anchored frame starts at."""
        return int(round(self.start_noise * (num_timesteps - 1)))

    def guidance_min_timestep(self, num_timesteps: int) -> int:
        """The smallest training timestep that is guided (`guidance_min_noise` on the same grid as the start
        noise's truncation); 0 when every step is."""
        return int(round(self.guidance_min_noise * (num_timesteps - 1)))

    @property
    def anchored(self) -> bool:
        """Whether each frame starts from the previous frame diffused to start_noise * T."""
        return self.start_noise < 1.0

    # ----------------------------------------------------------------- running
    def run(self, process: GaussianDiffusion, model: Callable, shape, cond: Mapping, *,
            generator: Optional[torch.Generator] = None, noise: Optional[torch.Tensor] = None, device=None,
            callback: Optional[Callable[[StepInfo], None]] = None, clip_denoised: bool = True) -> torch.Tensor:
        """Sample ``process`` (from `process`) with this sampler and its options."""
        options = dict(generator=generator, noise=noise, device=device, callback=callback, clip_denoised=clip_denoised)
        if self.sampler is Sampler.DDIM:
            return sample_ddim(process, model, shape, cond, eta=self.eta or 0.0, **options)
        return sample_ancestral(process, model, shape, cond, **options)


_GUIDANCE_TEXT = re.compile(r"^\s*([0-9.e+-]+)\s*(?:>\s*([0-9.e+-]+))?\s*$")


def parse_guidance(text) -> Tuple[float, float]:
    """``"<scale>[><min noise>]"`` (e.g. ``2``, ``2>0.35``) -> (guidance, guidance_min_noise); a number is a scale
    on every step. Range checks are `SamplingSettings`'."""
    match = _GUIDANCE_TEXT.match(str(text))
    try:
        if match:
            return float(match.group(1)), float(match.group(2) or 0.0)
    except ValueError:
        pass
    raise SamplingError(f"cannot read the guidance {text!r}: write a scale, optionally with the lowest guided noise "
                        f"level, e.g. 2 or 2>0.35")


DEFAULT = SamplingSettings()
"""Chosen from the sweep in benchmarks/README.md (the procedural checkpoint, the demo of the time, held-out
clips, full rollouts): starting each frame from the previous one diffused to 0.5 T instead of pure noise raised
rollout PSNR from 17.3 to 24.0 dB, lip sync r from 0.86 to 0.89 and lowered FLIE from 12.7 to 6.9, at 1.9x the
frame rate. 10 DDIM steps keep 6 steps below 0.5 T (5 steps: 3, as good on that checkpoint)."""

PAPER = SamplingSettings(Sampler.ANCESTRAL, steps=1000, start_noise=1.0)
"""The paper's sampler, literally: every frame from pure noise through all 1,000 steps of Eq. 3."""


def anchored_start(process: GaussianDiffusion, previous: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """x at the first kept step of a truncated process: the previous frame diffused there (Eq. 2)."""
    t_first = torch.full((previous.shape[0],), process.num_timesteps - 1, dtype=torch.long, device=previous.device)
    noise = randn(tuple(previous.shape), generator, previous.device, previous.dtype)
    return process.q_sample(previous, t_first, noise)
