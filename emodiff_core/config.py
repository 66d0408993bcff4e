"""Model configurations as frozen dataclasses, with named presets.

One definition serves training, export and inference: a checkpoint stores its config as JSON
(`to_dict`) and loading rebuilds it with `from_dict`, which is strict: an unknown or a missing key is an
error that names the key, because a silently defaulted field would build a different network than the
one the weights were trained for.

Presets:
- ``paper``: 128 px, the ADM/Diffused-Heads sized UNet of the paper's section 4.1 (downsampled twice to
  64 and 32; ReferenceNet fused at 64 and 32; self-attention at 32).
- ``demo``: 64 px, small enough to train on a 2-core CPU in a few hours and to sample a few seconds of
  video within the demo's time budget. Same topology at half the resolution; the ReferenceNet is fused at
  16 px only (a quarter of the input, like the paper's 32 of 128): fusing at 32 px too made a training
  step three times slower on the CPU for an identity that the concatenated identity frame already carries.
- ``tiny``: 32 px, for tests: a forward+backward on a 2-core CPU well under a second.

The super-resolution head, the expression regressor and the emotion judge have ``demo`` and ``tiny`` presets
too (the shipped checkpoints' and the tests' sizes). `build` is the one way to make a config from a preset name
and overrides (what the training files' ``model`` sections hold).
"""
from __future__ import annotations

import collections.abc
import copy
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple

EXPRESSION_DIM = 50  # FLAME/DECA expression vector length (psi in R^50)


class ConfigError(ValueError):
    """A configuration is malformed (unknown key, missing key, wrong type or value)."""


@dataclass(frozen=True)
class AudioFeatureConfig:
    """Log-mel features, one block of ``context`` mel frames per video frame (centred on the frame).

    Mel frames are 10 ms apart (hop 160 at 16 kHz); a video frame i is centred at sample
    round((i + 0.5) * sample_rate / fps), computed exactly (see ``audio.frame_sample_positions``).
    """

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    fmin: float = 55.0
    fmax: float = 7600.0
    context: int = 8

    def validate(self) -> None:
        _require(self.sample_rate > 0, "audio.sample_rate must be positive")
        _require(0 < self.win_length <= self.n_fft, "audio.win_length must be in (0, n_fft]")
        _require(self.hop_length > 0, "audio.hop_length must be positive")
        _require(self.n_mels > 0 and self.context > 0, "audio.n_mels and audio.context must be positive")
        _require(0 <= self.fmin < self.fmax <= self.sample_rate / 2, "audio: need 0 <= fmin < fmax <= sample_rate/2")


@dataclass(frozen=True)
class DiffusionConfig:
    """The Gaussian diffusion process (section 3.2.1): T steps and the beta schedule."""

    steps: int = 1000
    schedule: str = "cosine"  # "cosine" (improved DDPM) or "linear" (DDPM)

    def validate(self) -> None:
        _require(self.steps >= 2, "diffusion.steps must be at least 2")
        _require(self.schedule in ("cosine", "linear"), "diffusion.schedule must be 'cosine' or 'linear'")


@dataclass(frozen=True)
class DenoiserConfig:
    """Backbone UNet + ReferenceNet + learned audio encoder (section 3.2.2).

    The backbone input has ``3 * (2 + n_motion_frames)`` channels in this order (Eq. 11):
    noisy frame x_t, identity frame x_id, then the motion frames oldest first, x(i-2), x(i-1).
    The output has 6 channels: epsilon (3) and the learned-range variance interpolant v (3).
    ``audio_window`` and ``expression_window`` are the paper's n: frame i is conditioned on the
    2n+1 embeddings of frames i-n .. i+n.
    ``expression_smoothing`` (frames, odd, 1 = off) low-passes the expression sequence before it is
    used as a condition (see ``windows.smooth_sequence``); it is a deliberate addition to the paper,
    explained in the README: it leaves emotion (slow) in the condition and leaves the fast, speech-driven
    mouth motion to the audio, so that expression sequences from the generator cannot override lip sync.
    """

    image_size: int = 128
    model_channels: int = 256
    channel_mult: Tuple[int, ...] = (1, 2, 3)
    num_res_blocks: int = 2
    attention_resolutions: Tuple[int, ...] = (32,)
    reference_resolutions: Tuple[int, ...] = (64, 32)
    num_head_channels: int = 64
    dropout: float = 0.1
    resblock_updown: bool = True
    n_motion_frames: int = 2
    audio_window: int = 2
    expression_window: int = 2
    expression_dim: int = EXPRESSION_DIM
    expression_embed_dim: int = 64
    audio_dim: int = 256
    expression_smoothing: int = 1
    audio: AudioFeatureConfig = field(default_factory=AudioFeatureConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    # The condition sees (psi - expression_mean) * expression_scale, per component: psi standardised with the
    # training data's statistics (a scale of 0 drops a component). Empty = raw psi, as before these fields.
    expression_mean: Tuple[float, ...] = ()
    expression_scale: Tuple[float, ...] = ()
    # Channels of a learned spatial map of the expression window (image_size/8 square, upsampled and added to
    # the first feature map, zero-initialised): lets psi say WHERE the face changes, which FiLM's per-channel
    # scales cannot. 0 = off (the paper's FiLM-only conditioning).
    expression_spatial: int = 0
    # Share of training examples whose expression window was the neutral twin's (training fact, not
    # architecture): > 0 means the model learned the null condition of classifier-free guidance on the
    # expression (`guidance.py`); sampling with guidance != 1 on a model with 0 is refused.
    expression_dropout: float = 0.0

    # Keys that configs written by earlier versions lack, with the value that reproduces what those versions
    # built (read by `from_dict`): old checkpoints keep loading unchanged.
    ADDED_KEYS: typing.ClassVar[Mapping[str, Any]] = {"expression_mean": (), "expression_scale": (),
                                                      "expression_spatial": 0, "expression_dropout": 0.0}

    @property
    def in_channels(self) -> int:
        return 3 * (2 + self.n_motion_frames)

    @property
    def out_channels(self) -> int:
        return 6

    def resolutions(self) -> Tuple[int, ...]:
        """Feature-map sizes of the UNet levels, from the input resolution down."""
        return tuple(self.image_size // (2 ** level) for level in range(len(self.channel_mult)))

    def validate(self) -> None:
        _require(self.image_size >= 8 and self.image_size % (2 ** (len(self.channel_mult) - 1)) == 0,
                 "image_size must be at least 8 and divisible by 2^(levels-1)")
        _require(self.model_channels > 0 and self.model_channels % 8 == 0,
                 "model_channels must be a positive multiple of 8 (GroupNorm uses groups of channels)")
        _require(len(self.channel_mult) >= 1 and all(m > 0 for m in self.channel_mult), "channel_mult must be positive")
        _require(self.num_res_blocks >= 1, "num_res_blocks must be at least 1")
        levels = set(self.resolutions())
        for name in ("attention_resolutions", "reference_resolutions"):
            bad = [r for r in getattr(self, name) if r not in levels]
            _require(not bad, f"{name} {bad} are not UNet levels {sorted(levels, reverse=True)}")
        _require(self.num_head_channels > 0, "num_head_channels must be positive")
        for level, res in enumerate(self.resolutions()):
            width = self.model_channels * self.channel_mult[level]
            if res in self.attention_resolutions or res in self.reference_resolutions:
                _require(width % self.num_head_channels == 0,
                         f"the {width} channels at resolution {res} are not divisible by num_head_channels")
        _require(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")
        _require(self.n_motion_frames >= 0, "n_motion_frames must be >= 0")
        _require(self.audio_window >= 0 and self.expression_window >= 0, "windows must be >= 0")
        _require(self.expression_smoothing >= 1 and self.expression_smoothing % 2 == 1,
                 "expression_smoothing must be an odd number of frames (1 = off)")
        _require(len(self.expression_mean) == len(self.expression_scale) in (0, self.expression_dim),
                 f"expression_mean and expression_scale must both be empty or both have {self.expression_dim} values")
        _require(all(s >= 0 and s == s and abs(s) != float("inf") for s in self.expression_scale)
                 and all(m == m and abs(m) != float("inf") for m in self.expression_mean),
                 "expression_mean must be finite and expression_scale finite and >= 0")
        _require(0.0 <= self.expression_dropout < 1.0, "expression_dropout must be in [0, 1)")
        _require(self.expression_spatial >= 0 and (self.expression_spatial == 0 or self.image_size % 8 == 0),
                 "expression_spatial must be >= 0 (and image_size divisible by 8 when it is used)")
        self.audio.validate()
        self.diffusion.validate()


@dataclass(frozen=True)
class ExpressionConfig:
    """Expression GAN (section 3.3): LSTM generator, TCN global and MLP local discriminators."""

    expression_dim: int = EXPRESSION_DIM
    num_emotions: int = 8
    emotion_embed_dim: int = 32
    noise_dim: int = 16
    hidden_dim: int = 256
    num_layers: int = 1
    disc_channels: int = 128
    disc_dilations: Tuple[int, ...] = (1, 2, 4, 8)
    disc_kernel: int = 3
    local_hidden_dim: int = 128
    # Frames the generator rolls out and drops before the first one it returns. From its start state every
    # sequence makes the same motion in its first second (the jaw clenched then snapping open, a blink, the brows
    # raised then lowered), whatever the noise; it settles by frame 30
    # (benchmarks/results/generator_neutral_startup.json). A warm-up returns settled frames only; 0 is the paper's.
    # No shipped bundle sets it: settled, the demo's neutral reads sad on some faces that its start-up hides
    # (benchmarks/README.md, "The warm-up on videos").
    warmup_frames: int = 0
    # Emotions whose sequences come from a second network of the same shape (`ExpressionGenerator.override`), the
    # others from the first. A fine-tune of the generator moves every emotion's sequences, the ones it was asked to
    # keep included (about 0.06 rms at any noise; benchmarks/README.md, "The neutral and sad rows weighed"); this
    # keeps the first network's sequences bit for bit for the emotions not listed. `training export
    # --expression-override-from` assembles it. Neutral cannot be listed: e_n is every direction's origin (Eq. 14).
    override_emotions: Tuple[str, ...] = ()

    # configs written before the warm-up / the override existed (see DenoiserConfig.ADDED_KEYS)
    ADDED_KEYS: typing.ClassVar[Mapping[str, Any]] = {"warmup_frames": 0, "override_emotions": ()}

    def validate(self) -> None:
        from .emotions import EMOTIONS, NEUTRAL

        _require(self.expression_dim > 0 and self.num_emotions >= 2, "expression_dim > 0 and num_emotions >= 2")
        _require(self.warmup_frames >= 0, "expression warmup_frames must be >= 0")
        unknown = [e for e in self.override_emotions if e not in EMOTIONS[:self.num_emotions]]
        _require(not unknown, f"override_emotions: unknown emotion {unknown[0] if unknown else ''!r}; "
                              f"choose among {', '.join(EMOTIONS[:self.num_emotions])}")
        _require(NEUTRAL not in self.override_emotions,
                 "override_emotions cannot hold neutral: e_n is the origin of every emotion's direction")
        _require(len(set(self.override_emotions)) == len(self.override_emotions),
                 "override_emotions lists an emotion twice")
        _require(self.hidden_dim > 0 and self.num_layers >= 1, "hidden_dim > 0 and num_layers >= 1")
        _require(self.disc_kernel >= 2 and all(d >= 1 for d in self.disc_dilations), "disc_kernel >= 2, dilations >= 1")


@dataclass(frozen=True)
class SuperResConfig:
    """Super-resolution head: a residual CNN on a bilinear upsample (scale 2 or 4).

    ``mouth_branch``: a second CNN of the same shape whose output is used around the mouth of the aligned crop
    (`faces.mouth_region_weight`), the first one's everywhere else. A head trained to invent texture sharpens the
    face and moves the landmarks that measure lip sync; with a smoother head around the mouth the face keeps most
    of the sharpness (benchmarks/README.md, "Two SR heads: the mouth from the smooth one"). Not trained as one
    network: `training export --superres-mouth-from` assembles it from two trained heads."""

    scale: int = 2
    channels: int = 48
    num_blocks: int = 6
    mouth_branch: bool = False

    # configs written before the mouth branch existed build a plain head (see DenoiserConfig.ADDED_KEYS)
    ADDED_KEYS: typing.ClassVar[Mapping[str, Any]] = {"mouth_branch": False}

    def validate(self) -> None:
        _require(self.scale in (2, 4), "superres.scale must be 2 or 4")
        _require(self.channels > 0 and self.num_blocks >= 1, "superres.channels > 0 and num_blocks >= 1")


@dataclass(frozen=True)
class RegressorConfig:
    """Image -> expression vector psi (the corpus' stand-in for DECA's encoder in metrics)."""

    image_size: int = 64
    channels: int = 32
    expression_dim: int = EXPRESSION_DIM

    def validate(self) -> None:
        _require(self.image_size >= 16 and self.channels > 0, "regressor.image_size >= 16 and channels > 0")


@dataclass(frozen=True)
class JudgeConfig:
    """Emotion judge: an aligned face crop (RGB in [0, 1]) -> logits over the eight MEAD emotions
    (`emotions.EMOTIONS`, in that order) and, with ``intensity_head``, the emotion's intensity k in [0, 1].
    It measures which emotion generated frames show (training/evaluate.py).

    A CNN of four stride-2 levels (``channels`` x 1, 2, 4, 4) down to a 1/16 feature map, flattened (so the
    head knows where on the face a feature is: brows vs mouth) into ``hidden_dim`` units.
    """

    image_size: int = 64
    channels: int = 16
    hidden_dim: int = 128
    dropout: float = 0.2
    intensity_head: bool = True

    def validate(self) -> None:
        _require(self.image_size >= 16 and self.image_size % 16 == 0,
                 "judge.image_size must be a multiple of 16, at least 16 (four stride-2 levels)")
        _require(self.channels > 0 and self.channels % 4 == 0,
                 "judge.channels must be a positive multiple of 4 (GroupNorm uses groups of 4 channels)")
        _require(self.hidden_dim > 0, "judge.hidden_dim must be positive")
        _require(0.0 <= self.dropout < 1.0, "judge.dropout must be in [0, 1)")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


# --------------------------------------------------------------------------- presets
DENOISER_PRESETS = {
    "paper": DenoiserConfig(),
    "demo": DenoiserConfig(
        image_size=64, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
        attention_resolutions=(16,), reference_resolutions=(16,), num_head_channels=32,
        dropout=0.0, audio_dim=64, expression_embed_dim=32, expression_smoothing=9,
    ),
    "tiny": DenoiserConfig(
        image_size=32, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
        attention_resolutions=(16,), reference_resolutions=(16,), num_head_channels=16,
        dropout=0.0, audio_dim=16, expression_embed_dim=16, expression_smoothing=1,
        audio=AudioFeatureConfig(n_mels=16, context=4), diffusion=DiffusionConfig(steps=100),
    ),
}

EXPRESSION_PRESETS = {
    "paper": ExpressionConfig(),
    "demo": ExpressionConfig(hidden_dim=128, disc_channels=64),
    "tiny": ExpressionConfig(emotion_embed_dim=8, noise_dim=4, hidden_dim=16, disc_channels=16,
                             disc_dilations=(1, 2), local_hidden_dim=16),
}


SUPERRES_PRESETS = {
    "demo": SuperResConfig(scale=2, channels=32, num_blocks=4),     # the shipped checkpoint's head
    "tiny": SuperResConfig(scale=2, channels=8, num_blocks=1),
}

REGRESSOR_PRESETS = {
    "demo": RegressorConfig(image_size=64, channels=32),            # the shipped checkpoint's regressor
    "tiny": RegressorConfig(image_size=32, channels=8),
}

JUDGE_PRESETS = {
    "demo": JudgeConfig(image_size=64, channels=16, hidden_dim=128, dropout=0.2),   # checkpoints/emotion_judge
    "tiny": JudgeConfig(image_size=32, channels=4, hidden_dim=16, dropout=0.0),
}

# kind -> (config class, presets): the kinds `preset` and `build` know
KINDS = {
    "denoiser": (DenoiserConfig, DENOISER_PRESETS),
    "expression": (ExpressionConfig, EXPRESSION_PRESETS),
    "superres": (SuperResConfig, SUPERRES_PRESETS),
    "regressor": (RegressorConfig, REGRESSOR_PRESETS),
    "judge": (JudgeConfig, JUDGE_PRESETS),
}


def preset(kind: str, name: str, where: Optional[str] = None):
    """Return the named preset of a config kind ('denoiser', 'expression', 'superres', 'regressor' or 'judge')."""
    context = f"{where}: " if where else ""
    if kind not in KINDS:
        raise ConfigError(f"{context}unknown config kind {kind!r}; choose one of {', '.join(KINDS)}")
    table = KINDS[kind][1]
    if name not in table:
        raise ConfigError(f"{context}unknown {kind} preset {name!r}; choose one of {sorted(table)}")
    return table[name]


def build(kind: str, preset_name: str, overrides: Optional[Mapping[str, Any]] = None, where: str = "config"):
    """The config of ``kind`` made from preset ``preset_name`` with ``overrides`` deep-merged into it, read
    back with the strict `from_dict` (so an override of an unknown field, or of the wrong type, is an error
    that names ``where`` and the key).

    Deep merge: a nested section (``audio``, ``diffusion``) takes only the keys the override gives, e.g.
    ``{"diffusion": {"steps": 100}}`` keeps the preset's schedule; any other value replaces the preset's.
    """
    base = preset(kind, preset_name, where)
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{where}: overrides must be an object of field values, got {type(overrides).__name__}")
    merged = deep_merge(to_dict(base), overrides)
    return from_dict(KINDS[kind][0], merged, where=f"{where} (preset {preset_name!r} with overrides)")


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
    """A new dict: ``base`` with ``overrides`` merged in, recursively where both sides hold a mapping."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# --------------------------------------------------------------------------- (de)serialisation
def to_dict(config) -> dict:
    """A JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def to_json(config) -> str:
    return json.dumps(to_dict(config), sort_keys=True)


def from_dict(cls, data: Mapping[str, Any], where: str = "config"):
    """Build dataclass ``cls`` from ``data``, strictly: every field present, nothing unknown; nested
    dataclass fields are read the same way.

    ``where`` names the source in error messages (a file, a checkpoint); the messages name a nested key by
    its dotted path from the top (``optim.lr``).
    """
    return _from_mapping(cls, data, where, "")


def _from_mapping(cls, data, where: str, path: str):
    if not isinstance(data, Mapping):
        what = f"key {path!r}" if path else "the top level"
        raise ConfigError(f"{where}: {what} must be an object (the fields of {cls.__name__}), "
                          f"got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    prefix = f"{path}." if path else ""
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key {prefix + str(unknown[0])!r} for {cls.__name__}; remove it or fix "
                          f"its spelling (known keys{' in ' + repr(path) if path else ''}: {', '.join(names)})")
    added = getattr(cls, "ADDED_KEYS", {})
    missing = [n for n in names if n not in data and n not in added]
    if missing:
        raise ConfigError(f"{where}: missing key {prefix + missing[0]!r} for {cls.__name__}; add it "
                          f"({cls.__name__} needs: {', '.join(names)})")
    data = {**{k: v for k, v in added.items() if k not in data}, **data}
    kwargs = {name: _coerce(hints[name], data[name], where, prefix + name) for name in names}
    config = cls(**kwargs)
    if hasattr(config, "validate"):
        try:
            config.validate()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return config


def from_json(cls, text: str, where: str = "config"):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc})") from None
    return from_dict(cls, data, where)


def _coerce(hint, value, where: str, path: str):
    if dataclasses.is_dataclass(hint):
        return _from_mapping(hint, value, where, path)
    origin = typing.get_origin(hint)
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {path}: expected a list, got {value!r}")
        (item_type, _ellipsis) = typing.get_args(hint)
        return tuple(_coerce(item_type, v, where, path) for v in value)
    if origin in (dict, collections.abc.Mapping):
        # free-form mappings (a training file's model overrides): checked by whoever reads them
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {path}: expected an object, got {value!r}")
        return copy.deepcopy(dict(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {path}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {path}: expected a string, got {value!r}")
        return value
    return value
