"""The inference pipeline, one function per stage, shared by the ComfyUI nodes and the command line.

    portrait  = prepare_portrait(image, size)                      face, 68 landmarks, aligned crop
    audio     = encode_audio(waveform, sample_rate, fps, cfg)      16 kHz mono -> per-frame features
    psi, e_n  = emotion_expression_pair(generator, n, EmotionSpec) Eq. 14 (label + k, blend or keyframes)
    identity  = identity_crops(portrait, "neutral", e_n)           the portrait at a neutral expression, or as is
    frames    = generate_frames(denoiser, identity, audio, psi, ...)   autoregressive sampling (section 3.4)
    frames    = super_resolve(frames, head or upscale model)       optional
    full      = paste_back(frames, portrait)                       optional, at the portrait's resolution

Every stage works on plain tensors (frames [N, 3, H, W] in [0, 1], CPU) and never imports ComfyUI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import audio as audio_mod
from .config import AudioFeatureConfig, DenoiserConfig
from . import sampling
from .guidance import AudioGuidance, ExpressionGuidance
from .sampling import SamplingSettings
from .editing import Keyframe, blend_from_weights, check_intensity, keyframe_weights, parse_keyframes
from .emotions import EMOTIONS, NEUTRAL, emotion_index
# of the psi every shipped model makes and reads
from .facemodel import COMPONENT, EXPRESSION_DIM, SPEECH_COMPONENTS, SPEECH_MOUTH_COMPONENTS, speech_psi
from .windows import motion_centre, motion_offsets, smooth_sequence, window_indices, window_offsets

MAX_AUDIO_SECONDS = 600.0
# Silence (see `silence_handling`): a video that starts silent first renders this long of silence and drops it;
# a pause is left to the model for PAUSE_SETTLE_SECONDS (the mouth closes) before its frames are held.
SILENT_START_LEAD_IN_SECONDS = 1.0
PAUSE_SETTLE_SECONDS = 0.2
HOLD_SEED_OFFSET = 7919         # held frames draw their (identical) noise from seed + this, not the main stream


class PipelineError(ValueError):
    """Bad input to the pipeline, with what to do about it."""


class Cancelled(Exception):
    """Raised by a progress callback to stop generation."""


# --------------------------------------------------------------------------- models
@dataclass
class ModelBundle:
    """What generation needs from a checkpoint: denoiser, expression generator, optional SR head."""

    denoiser: torch.nn.Module
    generator: torch.nn.Module
    superres: Optional[torch.nn.Module] = None
    name: str = ""
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    # the guidance scale its trainers recommend (the bundle's info.sampling.guidance, `python -m training export
    # --guidance`); 1 = off, for bundles without one. What the CLI samples with unless --guidance is given.
    recommended_guidance: float = 1.0
    # likewise for `generate_frames`' reinject_identity_every (info.sampling.reinject_identity_every; 0 = off)
    recommended_reinject_identity_every: int = 0
    # and for the audio guidance (info.sampling.audio_guidance, `SamplingSettings.audio_guidance`; 1 = off)
    recommended_audio_guidance: float = 1.0
    # and for the generated mouth (info.sampling.mouth, `MOUTH_POLICIES`' "voice" or "generator"): what "auto" means
    recommended_mouth: str = "generator"

    @property
    def image_size(self) -> int:
        return self.denoiser.config.image_size

    @property
    def audio_config(self) -> AudioFeatureConfig:
        return self.denoiser.config.audio


def load_bundle(path: str, device="cpu", dtype: torch.dtype = torch.float32) -> ModelBundle:
    """Load a checkpoint bundle: it must hold a denoiser and an expression generator (an SR head is optional).

    The models are put on ``device``; ``dtype`` applies to the denoiser (fp16/bf16 on GPUs). The expression
    generator stays in fp32 (an LSTM rollout in half precision drifts).
    """
    import os

    from .checkpoint import CheckpointError, build_components, read_checkpoint

    ckpt = read_checkpoint(path)            # the file is read once
    present = ckpt.components
    missing = [c for c in ("denoiser", "expression_generator") if c not in present]
    if missing:
        raise CheckpointError(f"{os.path.basename(path)} holds {', '.join(present)} but not {', '.join(missing)}: "
                              "it is not a generation checkpoint (pick one exported with a denoiser and an "
                              "expression generator)")
    names = ["denoiser", "expression_generator"] + (["superres"] if "superres" in present else [])
    comps = build_components(ckpt, names, device=device)
    comps["denoiser"].to(dtype=dtype)
    guidance = recommended_guidance(ckpt.info, comps["denoiser"].config, os.path.basename(path))
    reinject = recommended_reinject(ckpt.info, os.path.basename(path))
    audio_guidance = recommended_audio_guidance(ckpt.info, os.path.basename(path))
    mouth = recommended_mouth(ckpt.info, comps["denoiser"], os.path.basename(path))
    return ModelBundle(comps["denoiser"], comps["expression_generator"], comps.get("superres"),
                       name=os.path.basename(path), device=torch.device(device), dtype=dtype,
                       recommended_guidance=guidance, recommended_reinject_identity_every=reinject,
                       recommended_audio_guidance=audio_guidance, recommended_mouth=mouth)


SAMPLING_INFO_PREFIX = "sampling"      # a bundle's info keys that recommend how to sample its denoiser
GUIDANCE_INFO_KEY = f"{SAMPLING_INFO_PREFIX}.guidance"
REINJECT_INFO_KEY = f"{SAMPLING_INFO_PREFIX}.reinject_identity_every"
AUDIO_GUIDANCE_INFO_KEY = f"{SAMPLING_INFO_PREFIX}.audio_guidance"
MOUTH_INFO_KEY = f"{SAMPLING_INFO_PREFIX}.mouth"


def recommended_reinject(info: Dict[str, str], name: str = "the checkpoint") -> int:
    """The identity re-injection period a bundle's info recommends (`REINJECT_INFO_KEY`), 0 (off) without one."""
    from .checkpoint import CheckpointError

    text = info.get(REINJECT_INFO_KEY)
    if text is None:
        return 0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise CheckpointError(f"{name}: its recommended info.{REINJECT_INFO_KEY} = {text!r} is not a whole number "
                              ">= 0; re-export it with a valid --reinject-identity-every")
    return value


def check_reinject(given: Optional[int], option: str = "reinject_identity_every") -> None:
    """Refuse a negative identity re-injection period (None = the checkpoint's recommendation, 0 = off)."""
    if given is not None and given < 0:
        raise PipelineError(f"{option} must be >= 0 (0 = off; leave it unset for the checkpoint's recommended "
                            f"period), got {given}")


def resolve_reinject(given: Optional[int], recommended: int, option: str = "reinject_identity_every") -> int:
    """The identity re-injection period to sample with: ``given``, or the bundle's ``recommended`` period
    (`recommended_reinject`) when it is None. The one rule behind the CLI, the Sampler's -1, `evaluate` and
    `evaluate-portraits`; ``option`` names the setting in the error."""
    check_reinject(given, option)
    return recommended if given is None else int(given)


def resolve_guidance(given: Optional[float], recommended: float, option: str = "guidance") -> float:
    """A guidance scale to sample with, the expression's or the voice's: ``given``, or the bundle's ``recommended``
    scale (`recommended_guidance`, `recommended_audio_guidance`) when it is None; negative scales are refused
    (1 = off). The one rule behind the CLI, the Sampler's -1 and `evaluate-portraits` (`evaluate`'s sweep defaults
    to the recommendation alone); ``option`` names the setting in the error."""
    if given is None:
        return float(recommended)
    if given < 0:
        raise PipelineError(f"{option} must be >= 0 (1 = off; unset, or -1 in the Sampler node, for the "
                            f"checkpoint's recommended scale), got {given:g}")
    return float(given)


def recommended_audio_guidance(info: Dict[str, str], name: str = "the checkpoint") -> float:
    """The audio guidance scale a bundle's info recommends (`AUDIO_GUIDANCE_INFO_KEY`), 1 (off) without one. Any
    denoiser can be guided on its voice (the null condition is silence, which every model was trained on)."""
    from .checkpoint import CheckpointError

    text = info.get(AUDIO_GUIDANCE_INFO_KEY)
    if text is None:
        return 1.0
    try:
        return SamplingSettings(audio_guidance=float(text)).audio_guidance
    except ValueError as exc:
        raise CheckpointError(f"{name}: its recommended info.{AUDIO_GUIDANCE_INFO_KEY} = {text!r} is unusable ({exc}); "
                              "re-export it with a valid --audio-guidance") from None


def recommended_mouth(info: Dict[str, str], denoiser, name: str = "the checkpoint") -> str:
    """The generated mouth a bundle's info recommends (`MOUTH_INFO_KEY`: one of `MOUTH_CHOICES`; what
    `MOUTH_POLICIES`' "auto" means for it), "generator" (the paper's) without one. "voice" and "speech" need a
    denoiser that stores its training statistics (`voice_mouth_level`)."""
    from .checkpoint import CheckpointError

    text = info.get(MOUTH_INFO_KEY)
    if text is None:
        return "generator"
    if text not in MOUTH_CHOICES:
        raise CheckpointError(f"{name}: its recommended info.{MOUTH_INFO_KEY} = {text!r} is not one of "
                              f"{', '.join(MOUTH_CHOICES)}; re-export it with a valid --mouth")
    if text != "generator" and voice_mouth_level(denoiser) is None:
        raise CheckpointError(f"{name}: it recommends the mouth {text!r}, which needs a denoiser that stores its "
                              "training statistics (expression_mean); re-export it with --mouth generator")
    return text


def recommended_guidance(info: Dict[str, str], cfg: DenoiserConfig, name: str = "the checkpoint") -> float:
    """The guidance scale a bundle's info recommends (`GUIDANCE_INFO_KEY`), checked against its denoiser: a
    scale other than 1 needs a denoiser trained with expression dropout (`check_guidance`). 1 without one."""
    from .checkpoint import CheckpointError

    text = info.get(GUIDANCE_INFO_KEY)
    if text is None:
        return 1.0
    try:
        settings = SamplingSettings(guidance=float(text))
        check_guidance(cfg, settings)
    except (ValueError, PipelineError) as exc:
        raise CheckpointError(f"{name}: its recommended guidance info.{GUIDANCE_INFO_KEY} = {text!r} is unusable "
                              f"({exc}); re-export it with a valid --guidance") from None
    return settings.guidance


# --------------------------------------------------------------------------- portrait
@dataclass
class Portrait:
    """A portrait ready for generation: the original image, its face landmarks and the aligned crop."""

    image: np.ndarray           # uint8 [H, W, 3] RGB, the original
    landmarks: np.ndarray       # [68, 2] in the original's pixel coordinates
    crop: np.ndarray            # uint8 [S, S, 3], nose tip at the centre (the training alignment)
    aligned: "object"           # faces.AlignedCrop: forward and inverse transforms, for paste-back

    def crop_tensor(self) -> torch.Tensor:
        """The crop as [3, S, S] float in [0, 1]."""
        return torch.from_numpy(self.crop).permute(2, 0, 1).float() / 255.0


def prepare_portrait(image, size: int, backend="auto", face_index: int = 0, allow_centre_crop: bool = False,
                     rotate: bool = True) -> Portrait:
    """Find the face (68 landmarks; FAN when its weights are present, dlib otherwise), align it like the
    training data (nose tip centred, eye line level) and crop it to the model's size.

    ``image``: uint8 or float 0..1, [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]. Faces are numbered from the
    largest (0). With ``allow_centre_crop`` an image without a detectable face gives a centre crop instead
    of an error.
    """
    from . import faces
    from .landmarks import detect_portrait

    rgb = faces.to_rgb_uint8(image)
    landmarks = detect_portrait(rgb, backend=backend, face_index=face_index, allow_centre_crop=allow_centre_crop)
    crop, aligned = faces.align_face(rgb, landmarks, size, rotate=rotate)
    return Portrait(rgb, landmarks, crop, aligned)


# What the network is given as the person (the ReferenceNet's input and the frame re-injected at every
# `generate_frames`' reinject_identity_every): "neutral", the portrait's face re-rendered at a neutral expression
# (`neutral_identity`), or "photo", the aligned crop as it is. Neutral is the default: a real-texture training
# example's identity frame is its photo warped to a neutral geometry, and a portrait that smiles fed back as it is
# keeps smiling through a sad video. Measured on the demo checkpoint, 3 held-out photos, 10 s (benchmarks/README.md,
# "The portrait warped to a neutral face"): FER surprised 45 -> 63 %, sad 15 -> 26 %, same person 98 -> 97 %,
# sharpness 0.64 -> 0.68, lip sync 0.76 -> 0.72 (the one cost).
PORTRAIT_IDENTITIES = ("neutral", "photo")
DEFAULT_PORTRAIT_IDENTITY = "neutral"


def check_portrait_identity(how: str, option: str = "portrait identity") -> None:
    """Refuse a portrait identity outside `PORTRAIT_IDENTITIES` (before slow work)."""
    if how not in PORTRAIT_IDENTITIES:
        raise PipelineError(f"{option} must be one of {', '.join(PORTRAIT_IDENTITIES)}; got {how!r}")


def neutral_identity(portrait: Portrait, neutral: Optional[torch.Tensor], size: int) -> torch.Tensor:
    """[B, 3, S, S] in [0, 1]: the portrait's face (`face_rig.rig_from_photo`) rendered at each video's neutral
    sequence's first frame with the speech components at 0 (mouth closed): the photo's texture at a neutral
    geometry, its own expression (a smile, raised brows) taken out. ``neutral``: e_n, [N, D] (one video) or
    [B, N, D], as `emotion_expression_pair` makes it; None (an expression file without one): the face model's
    neutral, psi = 0. Rendered with the crop convention of `prepare_portrait`, so it lines up with the crop."""
    from .face_rig import rig_from_photo

    if neutral is None:
        psi = np.zeros((1, EXPRESSION_DIM))
    else:
        first = torch.as_tensor(neutral).detach().cpu().double()
        if first.dim() not in (2, 3) or first.shape[-1] != EXPRESSION_DIM or first.shape[-2] < 1:
            raise PipelineError(f"the neutral sequence must be [N, {EXPRESSION_DIM}] or [B, N, {EXPRESSION_DIM}], "
                                f"got {list(first.shape)}")
        psi = first.reshape(-1, first.shape[-2], EXPRESSION_DIM)[:, 0].numpy().copy()
    psi[:, [COMPONENT[name] for name in SPEECH_COMPONENTS]] = 0.0
    return rig_crops(rig_from_photo(portrait.image, portrait.landmarks), psi, size)


def rig_crops(rig, psi: np.ndarray, size: int) -> torch.Tensor:
    """[B, 3, S, S] in [0, 1]: a `face_rig.FaceRig` rendered at each row of ``psi`` [B, D], head still, in the crop
    convention of `prepare_portrait`."""
    from .face_rig import render_rig_frames
    from .facemodel import HeadPose

    n = len(psi)
    still = HeadPose(np.zeros(n), np.zeros(n), np.ones(n), np.zeros(n), np.zeros(n))
    frames, _ = render_rig_frames(rig, psi, still, int(size))
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


def identity_crops(portrait: Portrait, how: str = DEFAULT_PORTRAIT_IDENTITY, neutral: Optional[torch.Tensor] = None,
                   videos: int = 1) -> torch.Tensor:
    """The identity ``generate_frames`` takes, [B, 3, S, S] in [0, 1] at the crop's size S: the portrait as
    ``how`` says (`PORTRAIT_IDENTITIES`). ``neutral``: the videos' e_n ([N, D] or [B, N, D], see
    `neutral_identity`); ``videos``: B when ``neutral`` does not say it (one sequence for several videos). Either
    way there is one crop per video of ``neutral``."""
    check_portrait_identity(how)
    given = len(neutral) if neutral is not None and torch.as_tensor(neutral).dim() == 3 else 1
    batch = max(given, int(videos))
    if given not in (1, batch):
        raise PipelineError(f"{given} neutral sequences for {videos} videos")
    size = portrait.crop.shape[0]
    crops = portrait.crop_tensor()[None] if how == "photo" else neutral_identity(portrait, neutral, size)
    return crops.expand(batch, -1, -1, -1).contiguous()


def paste_output_size(image_shape: Sequence[int], max_side: int = 0) -> Tuple[int, int]:
    """(height, width) of pasted-back frames: the portrait's size, scaled down (aspect kept) so that its longer
    side is at most ``max_side``; 0 = the original size. Never scales up."""
    h, w = int(image_shape[0]), int(image_shape[1])
    if int(max_side) < 0:
        raise PipelineError(f"max side {max_side} must be >= 0 (0 = the portrait's own size)")
    if not max_side or max(h, w) <= max_side:
        return h, w
    scale = max_side / float(max(h, w))
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def paste_back_frames(frames: Iterable[torch.Tensor], portrait: Portrait, feather: float = 0.08,
                      region: str = "face", max_side: int = 0) -> Iterator[np.ndarray]:
    """Generated crops ([N, 3, S, S] in [0, 1], any S, or an iterable of [3, S, S]) back into the portrait, one
    frame at a time: yields uint8 [H, W, 3] at `paste_output_size`(portrait, ``max_side``). Only the frame
    being pasted is held at full size, so memory does not grow with the number of frames."""
    import cv2

    from . import faces

    h, w = paste_output_size(portrait.image.shape, max_side)
    image, aligned = portrait.image, portrait.aligned
    if (h, w) != tuple(image.shape[:2]):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        aligned = aligned.for_resized_image(h, w)
    crops = ((f.clamp(0, 1) * 255.0 + 0.5).byte().permute(1, 2, 0).numpy() for f in frames)
    return faces.paste_back(crops, image, aligned, feather=feather, region=region)


# --------------------------------------------------------------------------- audio
@dataclass
class AudioFeatures:
    features: torch.Tensor      # [N, n_mels, context]
    waveform: np.ndarray        # mono at config.sample_rate, trimmed to exactly N frames
    fps: float
    config: AudioFeatureConfig
    silent: Optional[torch.Tensor] = None   # bool [N]: frames in a silent stretch (`audio.silent_frames`)

    @property
    def num_frames(self) -> int:
        return int(self.features.shape[0])

    @property
    def seconds(self) -> float:
        return len(self.waveform) / self.config.sample_rate

    def first(self, frames: int) -> "AudioFeatures":
        """The first ``frames`` frames (features and the waveform that covers exactly them)."""
        n = max(0, min(int(frames), self.num_frames))
        keep = audio_mod.samples_for_frames(n, self.fps, self.config.sample_rate)
        return AudioFeatures(self.features[:n], self.waveform[:keep], self.fps, self.config,
                             None if self.silent is None else self.silent[:n])

    @property
    def silent_seconds(self) -> float:
        return 0.0 if self.silent is None else float(self.silent.sum()) / self.fps


def silent_start_lead_in(audio: AudioFeatures) -> int:
    """Frames to generate and drop before frame 0 (`generate_frames`' ``lead_in``) when the audio starts with
    silence: SILENT_START_LEAD_IN_SECONDS of it. Without them a silent start shows the model moving the
    portrait's mouth to its own closed rest over the first second (measured on the procedural checkpoint); 0 when
    the audio starts with sound."""
    if audio.silent is None or audio.num_frames == 0 or not bool(audio.silent[0]):
        return 0
    return int(round(SILENT_START_LEAD_IN_SECONDS * audio.fps))


def silent_hold_frames(audio: AudioFeatures) -> Optional[torch.Tensor]:
    """bool [N]: the frames `generate_frames` holds (``hold``): every silent frame, except the first
    PAUSE_SETTLE_SECONDS of a pause after sound (there the model closes the mouth itself). None without a
    silence mask."""
    if audio.silent is None:
        return None
    silent = audio.silent.numpy().astype(bool)
    hold = np.zeros(len(silent), bool)
    settle = int(round(PAUSE_SETTLE_SECONDS * audio.fps))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2]):
        hold[start if start == 0 else start + settle: stop] = True
    return torch.from_numpy(hold)


def silence_handling(audio: AudioFeatures) -> dict:
    """`generate_frames` options for the audio's silence: ``lead_in`` and ``hold`` (pass as ``**``)."""
    return {"lead_in": silent_start_lead_in(audio), "hold": silent_hold_frames(audio)}


def encode_audio(waveform: np.ndarray, sample_rate: int, fps: float, cfg: AudioFeatureConfig,
                 max_seconds: float = MAX_AUDIO_SECONDS) -> AudioFeatures:
    """Any rate and channel count -> 16 kHz mono -> per-frame features. The frame count follows the audio:
    floor(duration * fps) frames, and the waveform is trimmed to exactly those frames.

    Silence is valid input (a listening face, a pause): frames in a silent stretch (`audio.silent_frames`:
    the whole clip, or pauses of 0.25 s and more) are marked in ``silent`` and get the features of digital
    silence (`audio.silence_feature_value`), the input the model learned a closed, still mouth from, whatever
    room noise the recording has there."""
    if not (1.0 <= float(fps) <= 120.0):
        raise PipelineError(f"fps {fps} is out of range; use 1 to 120 (30 is what the model was trained at)")
    mono = audio_mod.prepare_waveform(np.asarray(waveform), int(sample_rate), cfg.sample_rate)
    seconds = len(mono) / cfg.sample_rate
    if seconds > max_seconds:
        raise PipelineError(f"the audio is {seconds / 60:.1f} minutes long; the limit is {max_seconds / 60:.0f} "
                            "minutes per run. Split it into shorter parts and generate them one after another")
    n = audio_mod.num_video_frames(len(mono), fps, cfg.sample_rate)
    if n < 1:
        raise PipelineError(f"the audio is {seconds * 1000:.0f} ms long, shorter than one video frame at {fps:g} fps; "
                            "use a longer recording")
    mono = mono[: audio_mod.samples_for_frames(n, fps, cfg.sample_rate)]
    feats = audio_mod.frame_features(mono, fps, cfg, num_frames=n)
    silent = audio_mod.silent_frames(mono, fps, cfg.sample_rate, n)
    feats[silent] = audio_mod.silence_feature_value()
    return AudioFeatures(torch.from_numpy(feats), mono, float(fps), cfg, torch.from_numpy(silent))


# --------------------------------------------------------------------------- emotion
@dataclass
class EmotionSpec:
    """What emotion to show: one label and intensity, a blend {label: k}, or a keyframe timeline.

    Exactly one of ``emotion``/``blend``/``keyframes`` drives the result; ``keyframes`` wins over ``blend``,
    which wins over ``emotion``.
    """

    emotion: str = NEUTRAL
    intensity: float = 1.0
    blend: Optional[Dict[str, float]] = None
    keyframes: Optional[Union[str, Sequence[Keyframe]]] = None

    def weights(self, num_frames: int, fps: float) -> torch.Tensor:
        """Per-frame weight of each emotion [N, len(EMOTIONS)] (the neutral column is 0)."""
        if self.keyframes:
            kfs = parse_keyframes(self.keyframes) if isinstance(self.keyframes, str) else list(self.keyframes)
            return keyframe_weights(kfs, num_frames, fps)
        w = torch.zeros(len(EMOTIONS), dtype=torch.float64)
        items = self.blend.items() if self.blend else [(self.emotion, self.intensity)]
        for label, k in items:
            idx = emotion_index(label)
            check_intensity(float(k), f"intensity of {EMOTIONS[idx]}")
            if EMOTIONS[idx] != NEUTRAL:
                w[idx] += float(k)
        check_intensity(w.sum(), "sum of blend weights")
        return w[None].expand(num_frames, -1).clone()


@torch.no_grad()
def emotion_expressions(generator, num_frames: int, spec: EmotionSpec, fps: float = 30.0, seed: int = 0,
                        mouth: Optional[Mouth] = None, audio: Optional[AudioFeatures] = None) -> torch.Tensor:
    """Per-frame expression vectors [N, 50]: e_n + sum_j w_j (e_j - e_n) (Eq. 14 with d_y = e_y - e_n).

    The neutral and every target sequence come from the expression generator with the SAME noise z, so the
    differences e_j - e_n isolate the emotions. ``mouth``, ``audio``: see `emotion_expression_pair`.
    """
    return emotion_expression_pair(generator, num_frames, spec, fps, seed, mouth=mouth, audio=audio)[0]


@torch.no_grad()
def emotion_expression_pair(generator, num_frames: int, spec: EmotionSpec, fps: float = 30.0, seed: int = 0,
                            mouth: Optional[Mouth] = None, audio: Optional[AudioFeatures] = None):
    """(psi, e_n): the per-frame expression vectors of `emotion_expressions` and the neutral sequence e_n they
    were made from (the null condition of classifier-free guidance, `guidance.ExpressionGuidance`).

    :param mouth: how the mouth is made (`resolve_mouth`; None = `GENERATOR_MOUTH`): the generator's sequences as
        they are (the paper); or held (``mouth.level``, `hold_voice_mouth`): the speaking mouth the generator drew
        is replaced by that level and each emotion keeps only its own mouth offset; and, with
        ``mouth.follows_speech``, the recording's mouth motion (`speech_mouth_motion` of ``audio``) added to both
        psi and e_n, so that Eq. 14's directions are unchanged.
    :param audio: the recording the video will speak (its `num_frames` must be ``num_frames``); needed, and only
        used, by a mouth that follows the speech.
    """
    mouth = GENERATOR_MOUTH if mouth is None else mouth
    if num_frames < 1:
        raise PipelineError("num_frames must be at least 1")
    motion = None
    if mouth.follows_speech:
        if audio is None:
            raise PipelineError("the mouth 'speech' follows the recording: give the audio features")
        if audio.num_frames != num_frames:
            raise PipelineError(f"the audio has {audio.num_frames} frames; the expressions are asked for "
                                f"{num_frames}")
        motion = speech_mouth_motion(audio)
    weights = spec.weights(num_frames, fps)                       # [N, 8]
    used = [j for j in range(len(EMOTIONS)) if weights[:, j].abs().max() > 0]
    device = next(generator.parameters()).device
    g = torch.Generator().manual_seed(int(seed))
    z = generator.sample_noise(1, g, device)
    labels = torch.tensor([emotion_index(NEUTRAL)] + used, device=device)
    seqs = generator(labels, num_frames, z=z.expand(len(labels), -1)).float().cpu()
    e_n, targets = seqs[0], seqs[1:]
    if mouth.level is not None:
        e_n, targets = hold_voice_mouth(e_n, targets, mouth.level)
    psi = blend_from_weights(e_n, targets, weights[:, used].float()) if used else e_n
    if motion is not None:
        psi, e_n = psi + motion, e_n + motion
    return psi, e_n


@torch.no_grad()
def mean_emotion_directions(generator, emotions: Sequence[str], frames: int, seeds: int,
                            components: Optional[int] = None, skip_frames: int = 0) -> Dict[str, np.ndarray]:
    """Per emotion [components]: d_y = e_y - e_n as `emotion_expression_pair` makes it (the paper's mouth, k = 1),
    averaged over noise seeds 0 .. seeds - 1 and the frames: what every user's edit of that emotion shares.
    ``components``: the first that many psi components (None = all); ``skip_frames``: frames rolled out and left
    out of the mean before the ``frames`` averaged (a 10 s video plays what a clip's first second does not show)."""
    if skip_frames < 0:
        raise PipelineError(f"skip_frames must be >= 0, got {skip_frames}")
    out = {}
    for emotion in emotions:
        steps = []
        for seed in range(seeds):
            psi, e_n = emotion_expression_pair(generator, skip_frames + frames, EmotionSpec(emotion, 1.0), seed=seed)
            steps.append((psi - e_n).numpy()[skip_frames:, :components].mean(axis=0))
        out[emotion] = np.mean(steps, axis=0)
    return out


def speech_mouth_motion(audio: AudioFeatures) -> torch.Tensor:
    """[N, 50]: how a recording moves psi's speech components (`facemodel.SPEECH_COMPONENTS`: jaw, mouth width, lip
    press), as the corpora drove them (`audio.mouth_drive`), less their time mean; zero elsewhere.

    Why: in training, psi's mouth is the drive of the clip's own voice, in step with the audio the denoiser hears;
    the expression generator never hears the voice, so its speaking mouth is out of step with it (and `--mouth
    voice` holds it still). The mean is left out so that the level stays the held one (`Mouth.level`) whatever the
    recording's loudness (benchmarks/README.md, "psi's speech components from the recording").
    """
    drive = audio_mod.mouth_drive(audio.waveform, audio.fps, audio.num_frames, audio.config.sample_rate)
    # each track as a contiguous float32 row, so its time mean is summed as the measured runs summed it, bit for bit
    tracks = torch.from_numpy(speech_psi(drive)).float().T.contiguous()                  # [D, N]
    return (tracks - tracks.mean(dim=1, keepdim=True)).T.contiguous()


# How `emotion_expression_pair`'s mouth is chosen (`resolve_mouth`): "generator" keeps the generator's speaking mouth
# (the paper), "voice" holds it (`hold_voice_mouth`), "speech" holds it and adds the recording's mouth motion
# (`speech_mouth_motion`), "auto" is what the bundle recommends (`recommended_mouth`: its info.sampling.mouth,
# "generator" without one).
MOUTH_CHOICES = ("voice", "generator", "speech")     # what a bundle can recommend (`recommended_mouth`)
MOUTH_POLICIES = ("auto",) + MOUTH_CHOICES


@dataclass(frozen=True)
class Mouth:
    """How `emotion_expression_pair` makes the expressions' mouth (`resolve_mouth` makes it from a policy).

    ``level``: None keeps the generator's own speaking mouth; D values hold the speech-mouth components there
    (`hold_voice_mouth`). ``follows_speech``: psi's speech components also follow the recording
    (`speech_mouth_motion`), on top of the held level."""

    level: Optional[Tuple[float, ...]] = None
    follows_speech: bool = False

    def __post_init__(self):
        if self.follows_speech and self.level is None:
            raise PipelineError("a mouth that follows the speech rides on a held level: give the level")

    @property
    def name(self) -> str:
        """How reports and expression descriptions name it: one of `MOUTH_CHOICES`."""
        if self.level is None:
            return "generator"
        return "speech" if self.follows_speech else "voice"


GENERATOR_MOUTH = Mouth()


def check_mouth_policy(policy: str) -> None:
    """Refuse a mouth policy outside `MOUTH_POLICIES` (before slow work, as `check_reinject`)."""
    if policy not in MOUTH_POLICIES:
        raise PipelineError(f"mouth must be one of {', '.join(MOUTH_POLICIES)}; got {policy!r}")


def hold_voice_mouth(neutral: torch.Tensor, targets: torch.Tensor, level: Sequence[float]):
    """(e_n, e_targets) with the mouth left to the voice: in e_n the `SPEECH_MOUTH_COMPONENTS` are set to
    ``level`` in every frame; in each target e_j they are that level plus the emotion's own mouth, the time-mean of
    (e_j - e_n) over the sequence. The other components are unchanged, so Eq. 14's directions keep everything but
    the mouth's motion.

    Why: the generator learned whole psi sequences of speaking clips, so its e_n and e_j carry a speaking mouth of
    their own, at a level that differs between generator training runs (mean jaw_open of a 10 s sequence: 0.11 to
    0.60 over four runs). The denoiser reads psi's (smoothed) mouth as an offset to the mouth the audio gives,
    and lip sync then depends on which generator run made the sequence (benchmarks/README.md, "The mouth is the
    voice's").

    :param neutral: [N, D]; :param targets: [J, N, D] (J may be 0); :param level: D values (the denoiser's
        training mean psi).
    """
    level_t = torch.as_tensor(level, dtype=neutral.dtype).reshape(-1)
    if level_t.numel() != neutral.shape[-1]:
        raise PipelineError(f"the mouth level has {level_t.numel()} values; the expression vectors have "
                            f"{neutral.shape[-1]} components")
    mouth = list(SPEECH_MOUTH_COMPONENTS)
    held = neutral.clone()
    held[:, mouth] = level_t[mouth]
    offsets = (targets[..., mouth] - neutral[None, :, mouth]).mean(dim=1, keepdim=True)     # [J, 1, M]
    held_targets = targets.clone()
    held_targets[..., mouth] = held[None, :, mouth] + offsets
    return held, held_targets


def voice_mouth_level(denoiser) -> Optional[Tuple[float, ...]]:
    """The level `hold_voice_mouth` holds the mouth at for this denoiser: the mean psi of its training data
    (`DenoiserConfig.expression_mean`), where the speech-driven mouth of its condition was on average. None for a
    denoiser that stores no statistics (trained on raw psi, as the procedural checkpoint)."""
    mean = tuple(denoiser.config.expression_mean)
    return mean if mean else None


def resolve_mouth(policy: str, denoiser, recommended: str = "generator", name: str = "this checkpoint") -> Mouth:
    """The `Mouth` for `emotion_expression_pair` under a policy of `MOUTH_POLICIES`, "auto" being ``recommended``
    (the bundle's `recommended_mouth`). The one rule behind the CLI's --mouth, the Emotion Vector node's mouth
    input, `evaluate` and `evaluate-portraits`."""
    check_mouth_policy(policy)
    if policy == "auto":
        policy = recommended
    if policy == "generator":
        return GENERATOR_MOUTH
    level = voice_mouth_level(denoiser)
    if level is None:
        raise PipelineError(f"mouth {policy!r} needs a denoiser that stores its training statistics "
                            f"(expression_mean); {name} does not: use 'generator'")
    return Mouth(level, follows_speech=policy == "speech")


@dataclass
class ExpressionTrack:
    """Per-frame expression vectors with their frame rate and a description of how they were made.

    ``neutral`` (optional, shaped like ``psi``) is the neutral sequence e_n the emotion was added to
    (`emotion_expression_pair`): the null condition of classifier-free guidance. Tracks from other sources
    (an older expression file, a track made by hand) have none and sample without guidance."""

    psi: torch.Tensor            # [N, 50] float32, CPU
    fps: float
    description: dict = field(default_factory=dict)
    neutral: Optional[torch.Tensor] = None

    FORMAT = "emodiffhead-expression"

    def __post_init__(self):
        if self.neutral is not None and tuple(self.neutral.shape) != tuple(self.psi.shape):
            raise PipelineError(f"the neutral sequence must be shaped like psi {list(self.psi.shape)}, "
                                f"got {list(self.neutral.shape)}")

    def to_json(self) -> dict:
        data = {"format": self.FORMAT, "version": 1, "fps": self.fps, "frames": int(self.psi.shape[0]),
                "dims": int(self.psi.shape[1]), "description": self.description, "psi": _table(self.psi)}
        if self.neutral is not None:
            data["neutral"] = _table(self.neutral)
        return data

    @classmethod
    def from_json(cls, data: dict, where: str = "expression file") -> "ExpressionTrack":
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            raise PipelineError(f"{where} is not an EMOdiffhead expression file (saved by Save Expression)")
        try:
            psi = torch.tensor(data["psi"], dtype=torch.float32)
            neutral = torch.tensor(data["neutral"], dtype=torch.float32) if "neutral" in data else None
            fps = float(data["fps"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PipelineError(f"{where} is damaged ({exc}); save it again") from None
        for name, table in (("psi", psi), ("neutral", neutral)):
            if table is not None and (table.dim() != 2 or table.shape[0] < 1 or not torch.isfinite(table).all()):
                raise PipelineError(f"{where}: {name} must be a non-empty [frames, dims] table of finite numbers")
        if neutral is not None and neutral.shape != psi.shape:
            raise PipelineError(f"{where}: neutral must have the shape of psi {list(psi.shape)}, "
                                f"got {list(neutral.shape)}")
        return cls(psi, fps, data.get("description", {}), neutral)

    def resampled(self, num_frames: int, fps: float) -> "ExpressionTrack":
        """The track on another frame grid (linear interpolation in time, held at the ends)."""
        if num_frames == self.psi.shape[0] and abs(fps - self.fps) < 1e-9:
            return self
        src_t = torch.arange(self.psi.shape[0], dtype=torch.float64) / self.fps
        dst_t = torch.arange(num_frames, dtype=torch.float64) / fps
        pos = torch.from_numpy(np.interp(dst_t.numpy(), src_t.numpy(), np.arange(len(src_t)))).float()
        lo = pos.floor().long().clamp(0, self.psi.shape[0] - 1)
        hi = (lo + 1).clamp(max=self.psi.shape[0] - 1)
        w = (pos - lo.float())[:, None]

        def resample(table):
            return None if table is None else table[lo] * (1 - w) + table[hi] * w
        return ExpressionTrack(resample(self.psi), fps, dict(self.description, resampled=True), resample(self.neutral))


def _table(values: torch.Tensor) -> list:
    return [[round(float(v), 6) for v in row] for row in values]


# --------------------------------------------------------------------------- sampling
@dataclass
class FrameProgress:
    frame: int                  # index of the frame being generated
    total_frames: int
    step: int                   # denoising step within the frame (0-based)
    total_steps: int
    image: Optional[torch.Tensor] = None   # the finished frame [B, 3, H, W] in [0, 1] (only when step == total_steps-1)


def _frames_to_model(frames: torch.Tensor) -> torch.Tensor:
    return frames * 2.0 - 1.0


def _reinjected(source: Callable[[int], torch.Tensor], index: int, batch: int, size: int, device, dtype,
                what: str = "reinject_source") -> torch.Tensor:
    """``generate_frames``' reinject_source (or the source named ``what``) for video frame ``index``, checked and in
    the model's range."""
    frame = torch.as_tensor(source(index))
    if frame.dim() == 3:
        frame = frame[None].expand(batch, -1, -1, -1)
    if tuple(frame.shape) != (batch, 3, size, size):
        raise PipelineError(f"{what}({index}) must give [{batch}, 3, {size}, {size}] or [3, {size}, {size}] "
                            f"frames in [0, 1], got {list(frame.shape)}")
    return _frames_to_model(frame.to(device=device, dtype=dtype))


def _per_video(sequence: torch.Tensor, batch: int, frames: int, dims: int, what: str) -> torch.Tensor:
    """[N, D] (shared by the batch) or [B, N, D] -> [B, N, D], checked."""
    if sequence.dim() == 2:
        sequence = sequence[None].expand(batch, -1, -1)
    if tuple(sequence.shape) != (batch, frames, dims):
        raise PipelineError(f"{what} must be [{batch}, {frames}, {dims}] (one vector per video frame), "
                            f"got {list(sequence.shape)}")
    return sequence


def check_guidance(cfg: DenoiserConfig, settings: SamplingSettings) -> None:
    """Guidance needs a denoiser that learned the neutral (null) condition: one trained with expression dropout."""
    if settings.guided and cfg.expression_dropout <= 0:
        raise PipelineError(f"guidance {settings.guidance:g}: this denoiser was not trained with expression dropout, "
                            "so it has no null condition to guide away from; set guidance to 1")


@torch.no_grad()
def silent_audio_embedding(denoiser, features: torch.Tensor) -> torch.Tensor:
    """The denoiser's audio embedding [D] of digital silence (`audio.silence_feature_value` in every bin), shaped
    like one frame of ``features`` [N, ...]: the null condition of `guidance.AudioGuidance`."""
    p = next(denoiser.parameters())
    silence = torch.full_like(features[:1], audio_mod.silence_feature_value(), dtype=p.dtype, device=p.device)
    return denoiser.encode_audio(silence)[0]


@torch.no_grad()
def generate_frames(denoiser, identity: torch.Tensor, audio: AudioFeatures, expression: torch.Tensor, *,
                    settings: SamplingSettings = sampling.DEFAULT, seed: int = 0,
                    callback: Optional[Callable[[FrameProgress], None]] = None, device=None,
                    dtype: Optional[torch.dtype] = None, cache_reference: bool = True,
                    reinject_identity_every: int = 0, lead_in: int = 0, hold: Optional[torch.Tensor] = None,
                    neutral_expression: Optional[torch.Tensor] = None,
                    reinject_source: Optional[Callable[[int], torch.Tensor]] = None,
                    anchor_source: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """Autoregressive generation (section 3.4): frame i is sampled from noise conditioned on the identity
    crop, the motion frames x(i-2), x(i-1) (copies of the identity before the first frame, generated frames
    after), and the audio and expression windows i-n .. i+n.

    :param identity: [B, 3, S, S] or [3, S, S] in [0, 1]: B independent videos share the audio.
    :param expression: [N, 50] or [B, N, 50] expression vectors (smoothed here as the model's config says).
    :param settings: the sampler, its step count and options, and the start noise (`sampling.SamplingSettings`).
        1.0 start noise samples every frame from pure noise (the paper). Below 1, frame i starts from the
        previous frame (the identity for frame 0) diffused to timestep start_noise * T, and only the spaced
        steps at or below that timestep run (like img2img strength). Consecutive frames differ little, so
        this skips the high-noise steps, where an epsilon-predicting network recovers the image worst. A new
        process is built for every call; the model's own schedule is never modified.
    :param cache_reference: compute the ReferenceNet features once per video (False recomputes them at every
        step, as a literal reading of the paper would; same result, much slower).
    :param reinject_identity_every: if > 0, the oldest motion frame is replaced by the identity crop every
        that many frames, against drift on long videos.
    :param lead_in: frames generated before frame 0 on frame 0's conditions and dropped, so that the video
        starts from the model's own rendering of those conditions rather than from the portrait (see
        `silent_start_lead_in`); their denoising steps are reported to ``callback`` as frame 0's.
    :param hold: bool [N], frames to hold (silence, `silent_hold_frames`): each is rendered from one rest state,
        the frame generated just before the hold began (as both motion frames and the start-noise anchor),
        with the same noise for every held frame, so only its own conditions (its expression: emotion,
        blinks) change the face. Left free, the autoregression drifts in silence: on the procedural checkpoint
        the mouth and eyes wandered over seconds (benchmarks/README.md, silence).
    :param neutral_expression: like ``expression``: the neutral sequence e_n it was made from (the second
        value of `emotion_expression_pair`); needed, and only used, when ``settings.guidance`` is not 1.
    :param reinject_source: what stands in for the identity crop in the motion slots (the copies before the
        first frame and the re-injected oldest frame): a function of the video frame index that slot stands for
        (0 before the video starts) returning [B, 3, S, S] or [3, S, S] in [0, 1]; called once per slot, so memory
        does not grow with the video. None: the identity crop itself. The ReferenceNet always reads the identity
        crop. (An ablation hook: `benchmarks.warp_reinjection` re-injects a warp of the portrait that follows the
        asked expression.)
    :param anchor_source: what a frame's first denoising step starts from, diffused to the start noise (with
        ``settings.start_noise`` below 1 only): a function of the video frame index and the default anchor (the
        newest motion frame, [B, 3, S, S] in [0, 1] on the CPU) returning frames as ``reinject_source``'s; None:
        that default. Held frames keep their rest state. `anchors.start_anchor` makes the pack's policies (the
        previous frame with the mouth of the portrait's rig, by default); `benchmarks.warp_anchor` the ablations.
    :returns: frames [N, B, 3, S, S] on the CPU in [0, 1] (finished frames leave the device at once, so device
        memory does not grow with the length of the video).
    """
    cfg = denoiser.config
    if not isinstance(settings, SamplingSettings):
        raise PipelineError(f"settings must be a sampling.SamplingSettings, got {type(settings).__name__}")
    if audio.config != cfg.audio:
        raise PipelineError("the audio features were computed with another audio configuration than this model's; "
                            "encode the audio with this model's settings")
    device = torch.device(device) if device is not None else next(denoiser.parameters()).device
    dtype = dtype or next(denoiser.parameters()).dtype
    if identity.dim() == 3:
        identity = identity[None]
    size = cfg.image_size
    if tuple(identity.shape[1:]) != (3, size, size):
        raise PipelineError(f"the identity crop must be 3x{size}x{size} for this model, got {list(identity.shape[1:])}")
    batch = identity.shape[0]
    n = audio.num_frames
    expression = _per_video(expression, batch, n, cfg.expression_dim, "expression")
    model = denoiser
    if settings.audio_guided:      # inside the expression guidance: both its passes get the audio's two
        model = AudioGuidance(denoiser, settings.audio_guidance, silent_audio_embedding(denoiser, audio.features))
    if settings.guided:
        if neutral_expression is None:
            raise PipelineError(f"guidance {settings.guidance:g} needs the neutral expression sequence the emotion "
                                "was made from (pipeline.emotion_expression_pair); set guidance to 1 without it")
        check_guidance(cfg, settings)
        neutral_expression = _per_video(neutral_expression, batch, n, cfg.expression_dim, "neutral expression")
        model = ExpressionGuidance(model, settings.guidance,
                                   min_timestep=settings.guidance_min_timestep(cfg.diffusion.steps))
    process = settings.process_for(cfg.diffusion)
    ident = _frames_to_model(identity.to(device=device, dtype=dtype))
    reference = denoiser.reference_features(ident) if cache_reference else None
    audio_emb = denoiser.encode_audio(audio.features.to(device=device, dtype=dtype))       # [N, D], once
    expr = torch.stack([smooth_sequence(e.float(), cfg.expression_smoothing) for e in expression]).to(device, dtype)
    neutral = (torch.stack([smooth_sequence(e.float(), cfg.expression_smoothing) for e in neutral_expression])
               .to(device, dtype) if settings.guided else None)
    a_off, e_off = window_offsets(cfg.audio_window), window_offsets(cfg.expression_window)
    m_off = motion_offsets(cfg.n_motion_frames)
    recent: List[torch.Tensor] = []          # the last n_motion generated frames, on the device
    out = torch.empty(n, batch, 3, size, size)
    generator = torch.Generator().manual_seed(int(seed))
    lead_in = max(0, int(lead_in))
    held_frames = None if hold is None else torch.as_tensor(hold, dtype=torch.bool).reshape(-1)
    if held_frames is not None and len(held_frames) != n:
        raise PipelineError(f"hold must have one entry per video frame ({n}), got {len(held_frames)}")
    rest = None                               # the rest state of the current hold, on the device
    for j in range(n + lead_in):
        i = max(0, j - lead_in)               # the frame whose conditions are used (lead-in frames: frame 0's)
        held = held_frames is not None and j >= lead_in and bool(held_frames[i])
        if not held:
            rest = None
        elif rest is None:
            rest = recent[-1] if recent else ident
        frame_generator = torch.Generator().manual_seed(int(seed) + HOLD_SEED_OFFSET) if held else generator
        # Motion frames through the shared window helper: virtual index v < n_motion is the identity.
        virtual = window_indices(motion_centre(j, cfg.n_motion_frames), m_off, j + cfg.n_motion_frames)[0]
        motion = []
        for v in virtual.tolist():
            k = v - cfg.n_motion_frames
            use_identity = k < 0 or (reinject_identity_every and k == j - cfg.n_motion_frames
                                     and j % reinject_identity_every == 0)
            if held:
                motion.append(rest)
            elif not use_identity:
                motion.append(recent[k - (j - len(recent))])
            elif reinject_source is None:
                motion.append(ident)
            else:
                motion.append(_reinjected(reinject_source, min(max(0, k - lead_in), n - 1), batch, size, device,
                                          dtype))
        cond = {
            "identity": ident,
            "motion": torch.stack(motion, dim=1),
            "audio_emb": audio_emb[window_indices([i], a_off, n)[0].to(device)][None].expand(batch, -1, -1),
            "expression": expr[:, window_indices([i], e_off, n)[0].to(device)],
            "reference": reference,
        }
        if neutral is not None:
            cond["neutral_expression"] = neutral[:, window_indices([i], e_off, n)[0].to(device)]

        def step_callback(info, frame=i):
            if callback is not None and info.step < info.total - 1:
                callback(FrameProgress(frame, n, info.step, info.total))

        start = None
        if settings.anchored:
            anchor = cond["motion"][:, -1] if cfg.n_motion_frames else ident
            if held:
                anchor = rest
            elif anchor_source is not None:
                previous = ((anchor.float().clamp(-1, 1) + 1) / 2).cpu()
                anchor = _reinjected(lambda index: anchor_source(index, previous), i, batch, size, device, dtype,
                                     "anchor_source")
            start = sampling.anchored_start(process, anchor, frame_generator)
        x = settings.run(process, model, (batch, 3, size, size), cond, generator=frame_generator, device=device,
                         callback=step_callback, noise=start)
        recent.append(x.to(dtype))
        if len(recent) > cfg.n_motion_frames:
            recent.pop(0)
        if j < lead_in:
            continue
        out[i] = ((x.float().clamp(-1, 1) + 1) / 2).cpu()
        if callback is not None:
            callback(FrameProgress(i, n, process.num_timesteps - 1, process.num_timesteps, out[i]))
    return out


# --------------------------------------------------------------------------- super-resolution
def lanczos_upscale(frames: torch.Tensor, scale: float) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] -> Lanczos-resized frames (OpenCV, per frame)."""
    import cv2

    n, _, h, w = frames.shape
    size = (int(round(w * scale)), int(round(h * scale)))
    out = [cv2.resize(f.permute(1, 2, 0).numpy(), size, interpolation=cv2.INTER_LANCZOS4) for f in frames]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).clamp(0, 1)


@torch.no_grad()
def super_resolve(frames: torch.Tensor, model=None, scale: float = 2.0, batch_size: int = 16,
                  device=None) -> torch.Tensor:
    """Upscale [N, 3, H, W] frames in [0, 1]: with the trained SR head (its own scale), any callable
    image model with a ``scale`` attribute (e.g. a spandrel descriptor from ComfyUI's UpscaleModelLoader),
    or Lanczos when ``model`` is None. Processed in batches; the result is on the CPU."""
    if model is None:
        return lanczos_upscale(frames, scale)
    if device is None:
        device = _model_device(model)
    out = []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start: start + batch_size].to(device)
        out.append(model(chunk).float().clamp(0, 1).cpu())
    return torch.cat(out)


def _model_device(model) -> torch.device:
    """The device of a module's first parameter (or of a spandrel descriptor's .device); CPU otherwise."""
    if hasattr(model, "device") and not callable(model.device):
        return torch.device(model.device)
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- helpers for callers
def video_frame_count(seconds: float, fps: float) -> int:
    return int(math.floor(seconds * fps))
