"""The inference pipeline, one function per stage, shared by the ComfyUI nodes and the command line.

    portrait  = prepare_portrait(image, size)                      face, 68 landmarks, aligned crop
    audio     = encode_audio(waveform, sample_rate, fps, cfg)      16 kHz mono -> per-frame features
    psi       = emotion_expressions(generator, n, EmotionSpec)     Eq. 14 (label + k, blend or keyframes)
    frames    = generate_frames(denoiser, crop, audio, psi, ...)   autoregressive sampling (section 3.4)
    frames    = super_resolve(frames, head or upscale model)       optional
    full      = paste_back(frames, portrait)                       optional, at the portrait's resolution

Every stage works on plain tensors (frames [N, 3, H, W] in [0, 1], CPU) and never imports ComfyUI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from . import audio as audio_mod
from .config import AudioFeatureConfig
from . import sampling
from .sampling import SamplingSettings
from .editing import Keyframe, blend_from_weights, check_intensity, keyframe_weights, parse_keyframes
from .emotions import EMOTIONS, NEUTRAL, emotion_index
from .windows import motion_centre, motion_offsets, smooth_sequence, window_indices, window_offsets

MAX_AUDIO_SECONDS = 600.0


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
    return ModelBundle(comps["denoiser"], comps["expression_generator"], comps.get("superres"),
                       name=os.path.basename(path), device=torch.device(device), dtype=dtype)


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


def paste_back_frames(frames: torch.Tensor, portrait: Portrait, feather: float = 0.08, region: str = "face"):
    """Generated crops [N, 3, S, S] in [0, 1] (any S) back into the full-resolution portrait, one frame at a
    time: yields uint8 [H, W, 3]."""
    from . import faces

    crops = (frames.clamp(0, 1) * 255.0 + 0.5).byte().permute(0, 2, 3, 1).numpy()
    return faces.paste_back(iter(crops), portrait.image, portrait.aligned, feather=feather, region=region)


# --------------------------------------------------------------------------- audio
@dataclass
class AudioFeatures:
    features: torch.Tensor      # [N, n_mels, context]
    waveform: np.ndarray        # mono at config.sample_rate, trimmed to exactly N frames
    fps: float
    config: AudioFeatureConfig

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
        return AudioFeatures(self.features[:n], self.waveform[:keep], self.fps, self.config)


def encode_audio(waveform: np.ndarray, sample_rate: int, fps: float, cfg: AudioFeatureConfig,
                 max_seconds: float = MAX_AUDIO_SECONDS, allow_silence: bool = False) -> AudioFeatures:
    """Any rate and channel count -> 16 kHz mono -> per-frame features. The frame count follows the audio:
    floor(duration * fps) frames, and the waveform is trimmed to exactly those frames."""
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
    if audio_mod.is_silent(mono) and not allow_silence:
        raise PipelineError("the audio is silent (its peak is below -80 dBFS), so there is nothing to lip-sync; "
                            "check the file or the audio node feeding this one")
    mono = mono[: audio_mod.samples_for_frames(n, fps, cfg.sample_rate)]
    feats = audio_mod.frame_features(mono, fps, cfg, num_frames=n)
    return AudioFeatures(torch.from_numpy(feats), mono, float(fps), cfg)


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
def emotion_expressions(generator, num_frames: int, spec: EmotionSpec, fps: float = 30.0, seed: int = 0) -> torch.Tensor:
    """Per-frame expression vectors [N, 50]: e_n + sum_j w_j (e_j - e_n) (Eq. 14 with d_y = e_y - e_n).

    The neutral and every target sequence come from the expression generator with the SAME noise z, so the
    differences e_j - e_n isolate the emotions.
    """
    if num_frames < 1:
        raise PipelineError("num_frames must be at least 1")
    weights = spec.weights(num_frames, fps)                       # [N, 8]
    used = [j for j in range(len(EMOTIONS)) if weights[:, j].abs().max() > 0]
    device = next(generator.parameters()).device
    g = torch.Generator().manual_seed(int(seed))
    z = generator.sample_noise(1, g, device)
    labels = torch.tensor([emotion_index(NEUTRAL)] + used, device=device)
    seqs = generator(labels, num_frames, z=z.expand(len(labels), -1)).float().cpu()
    e_n = seqs[0]
    if not used:
        return e_n
    return blend_from_weights(e_n, seqs[1:], weights[:, used].float())


@dataclass
class ExpressionTrack:
    """Per-frame expression vectors with their frame rate and a description of how they were made."""

    psi: torch.Tensor            # [N, 50] float32, CPU
    fps: float
    description: dict = field(default_factory=dict)

    FORMAT = "emodiffhead-expression"

    def to_json(self) -> dict:
        return {"format": self.FORMAT, "version": 1, "fps": self.fps, "frames": int(self.psi.shape[0]),
                "dims": int(self.psi.shape[1]), "description": self.description,
                "psi": [[round(float(v), 6) for v in row] for row in self.psi]}

    @classmethod
    def from_json(cls, data: dict, where: str = "expression file") -> "ExpressionTrack":
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            raise PipelineError(f"{where} is not an EMOdiffhead expression file (saved by Save Expression)")
        try:
            psi = torch.tensor(data["psi"], dtype=torch.float32)
            fps = float(data["fps"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PipelineError(f"{where} is damaged ({exc}); save it again") from None
        if psi.dim() != 2 or psi.shape[0] < 1 or not torch.isfinite(psi).all():
            raise PipelineError(f"{where}: psi must be a non-empty [frames, dims] table of finite numbers")
        return cls(psi, fps, data.get("description", {}))

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
        return ExpressionTrack(self.psi[lo] * (1 - w) + self.psi[hi] * w, fps, dict(self.description, resampled=True))


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


@torch.no_grad()
def generate_frames(denoiser, identity: torch.Tensor, audio: AudioFeatures, expression: torch.Tensor, *,
                    settings: SamplingSettings = sampling.DEFAULT, seed: int = 0,
                    callback: Optional[Callable[[FrameProgress], None]] = None, device=None,
                    dtype: Optional[torch.dtype] = None, cache_reference: bool = True,
                    reinject_identity_every: int = 0) -> torch.Tensor:
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
    if expression.dim() == 2:
        expression = expression[None].expand(batch, -1, -1)
    if tuple(expression.shape) != (batch, n, cfg.expression_dim):
        raise PipelineError(f"expression must be [{batch}, {n}, {cfg.expression_dim}] (one vector per video frame), "
                            f"got {list(expression.shape)}")
    process = settings.process_for(cfg.diffusion)
    ident = _frames_to_model(identity.to(device=device, dtype=dtype))
    reference = denoiser.reference_features(ident) if cache_reference else None
    audio_emb = denoiser.encode_audio(audio.features.to(device=device, dtype=dtype))       # [N, D], once
    expr = torch.stack([smooth_sequence(e.float(), cfg.expression_smoothing) for e in expression]).to(device, dtype)
    a_off, e_off = window_offsets(cfg.audio_window), window_offsets(cfg.expression_window)
    m_off = motion_offsets(cfg.n_motion_frames)
    recent: List[torch.Tensor] = []          # the last n_motion generated frames, on the device
    out = torch.empty(n, batch, 3, size, size)
    generator = torch.Generator().manual_seed(int(seed))
    for i in range(n):
        # Motion frames through the shared window helper: virtual index v < n_motion is the identity.
        virtual = window_indices(motion_centre(i, cfg.n_motion_frames), m_off, i + cfg.n_motion_frames)[0]
        motion = []
        for v in virtual.tolist():
            k = v - cfg.n_motion_frames
            use_identity = k < 0 or (reinject_identity_every and k == i - cfg.n_motion_frames
                                     and i % reinject_identity_every == 0)
            motion.append(ident if use_identity else recent[k - (i - len(recent))])
        cond = {
            "identity": ident,
            "motion": torch.stack(motion, dim=1),
            "audio_emb": audio_emb[window_indices([i], a_off, n)[0].to(device)][None].expand(batch, -1, -1),
            "expression": expr[:, window_indices([i], e_off, n)[0].to(device)],
            "reference": reference,
        }

        def step_callback(info, frame=i):
            if callback is not None and info.step < info.total - 1:
                callback(FrameProgress(frame, n, info.step, info.total))

        start = None
        if settings.anchored:
            start = sampling.anchored_start(process, cond["motion"][:, -1] if cfg.n_motion_frames else ident, generator)
        x = settings.run(process, denoiser, (batch, 3, size, size), cond, generator=generator, device=device,
                         callback=step_callback, noise=start)
        frame01 = ((x.float().clamp(-1, 1) + 1) / 2)
        out[i] = frame01.cpu()
        recent.append(x.to(dtype))
        if len(recent) > cfg.n_motion_frames:
            recent.pop(0)
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
