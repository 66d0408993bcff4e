"""Training batches from a clip dataset, built with the core's shared definitions (audio features,
window gathering, motion frames, expression smoothing), so training sees exactly what inference makes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, TypeVar

import cv2
import numpy as np
import torch

from emodiff_core.audio import frame_features
from emodiff_core.config import DenoiserConfig
from emodiff_core.emotions import NEUTRAL, emotion_index
from emodiff_core.metrics import psnr
from emodiff_core.diffusion.losses import emotion_region_mask
from emodiff_core.windows import (gather_windows, motion_centre, motion_offsets, motion_source,
                                      smooth_sequence, window_offsets)

from .clips import ClipDataset, ClipFormatError, DataFolders, EmptySplitError, data_roots
from .twins import ClipTwins

T = TypeVar("T")


def frames_to_model_range(frames: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in the models' [-1, 1] range (not [0, 1] like
    `emodiff_core.metrics_video.frames_to_tensor`)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def model_range_to_01(images: torch.Tensor) -> torch.Tensor:
    """Images in the models' [-1, 1] range -> [0, 1] (clamped), the range the metrics take."""
    return ((images.clamp(-1, 1) + 1) / 2)


def mean_psnr(images: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over a batch of each image's PSNR (`emodiff_core.metrics.psnr`) for [B, C, H, W] images in [0, 1]
    (clamped: the images as they would be shown)."""
    images, targets = images.clamp(0, 1).cpu().numpy(), targets.clamp(0, 1).cpu().numpy()
    return float(np.mean([psnr(a, b) for a, b in zip(images, targets)]))


def optional_validation_data(make: Callable[[], T], split: str, announce: bool) -> Optional[T]:
    """``make()`` (the validation data of ``split``), or None when the dataset has no clips in that split:
    validation is then off, and ``announce`` says so with the reason. Any other error (a broken clip, a
    missing psi) is raised: it would break training too."""
    try:
        return make()
    except EmptySplitError as exc:
        if announce:
            print(f"validation is off: {exc} (put clips in split {split!r} or point data.val_split at a "
                  "split that has some)", flush=True)
        return None


def resize_clip_frames(frames: np.ndarray, landmarks: np.ndarray, size: int):
    """Resize frames (area filter) and scale landmarks when a dataset's size differs from the model's."""
    src = frames.shape[1]
    if src == size:
        return np.asarray(frames), np.asarray(landmarks)
    out = np.stack([cv2.resize(np.asarray(f), (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    return out, np.asarray(landmarks) * (size / src)


@dataclass
class LoadedClip:
    meta: dict
    frames: torch.Tensor        # [N, 3, S, S] uint8 (converted to [-1, 1] per example, to save memory)
    features: torch.Tensor      # [N, n_mels, context]
    expression: torch.Tensor    # [N, 50], smoothed as the model's config says
    landmarks: torch.Tensor     # [N, 68, 2]
    twins: Optional[ClipTwins] = None            # corpus clips: the clip re-rendered with another emotion
    neutral_expression: Optional[torch.Tensor] = None   # [N, 50] smoothed psi of the neutral twin


@dataclass(frozen=True)
class TwinOptions:
    """``share``: probability that an example is built from counterfactual twins (clips that have them);
    ``target_share``: of those, the probability that the target is itself a twin (see `DenoiserData`);
    ``same_emotion_share``: of the emotional twins of an emotional clip (motion frames or target), the share
    that shows the clip's own emotion at another intensity rather than another emotion.
    ``neutral_oldest_share``: of the twin examples, the share whose oldest motion frame is the neutral twin's and
    whose newer motion frames and target are the clip's own: the state of sampling with the portrait re-injected
    at every frame (a neutral anchor in the oldest slot, the emotion shown so far in the newest), which the network
    sees nowhere else; it must keep the emotion against the anchor.
    ``photo_anchor_share``: of the twin examples of clips animated from a photo (real-texture clips), the share
    whose identity and oldest motion frame are that photo at its own expression (`ClipTwins.render_source`) and
    whose newer motion frame and target are the clip's own: re-injected sampling's state as it is on a user's
    photo, which carries its own expression (a smile) in its geometry and texture, where the neutral twin has
    only the texture. Drawn before ``neutral_oldest_share``. ``photo_still_share``: of those, the share whose
    motion frames are all the photo (a video's first frame): the target has to be drawn from the photo and psi
    alone, so the network keeps reading the photo rather than copying the newest frame (which, at sampling, is its
    own output and drifts). ``photo_oldest_own_pose``: the oldest slot shows the photo at frame t-2's head pose
    instead of the identity frame's, so it is never the identity image itself (a network trained on that state
    stops copying from the slot, which is what anchors the person: training/README.md, the dropped re-injection
    fine-tune). ``intensity_pair_share``: the probability that a drawn emotional clip with twins gives an
    intensity pair (`DenoiserData.intensity_pair_samples`: two rows, the same context, the clip's emotion at two
    intensities) instead of one example; drawn before ``share``, and only where two rows are left in the batch."""

    share: float = 0.0
    target_share: float = 0.0
    same_emotion_share: float = 0.0
    neutral_oldest_share: float = 0.0
    photo_anchor_share: float = 0.0
    photo_still_share: float = 0.0
    photo_oldest_own_pose: bool = False
    intensity_pair_share: float = 0.0


IDENTITY_SOURCES = ("same_clip", "neutral_clip")


class DenoiserData:
    """All clips of a split in memory; `batch(rng)` draws (clip, frame, identity frame) triples.

    ``root``: a dataset folder or several (`training.clips.data_roots`; ``limit`` clips at most of each).

    ``identity_from``: where the identity frame comes from. "same_clip" (section 3.2.2: a random frame of
    the clip itself) lets the network copy the clip's emotion from the identity and motion frames instead of
    reading it from the expression condition; "neutral_clip" takes it from a neutral clip of the same
    identity when the split has one (else the clip itself), as at inference, where the portrait is usually
    neutral. ``motion_dropout``: the probability that an example's motion frames are copies of the identity
    frame (as for the first frame of a video), so the expression condition, not the previous frames, has to
    carry the emotion.
    """

    def __init__(self, root: DataFolders, cfg: DenoiserConfig, split: str = "train", limit: Optional[int] = None,
                 identity_from: str = "same_clip", motion_dropout: float = 0.0, twins: TwinOptions = TwinOptions()):
        if identity_from not in IDENTITY_SOURCES:
            raise ValueError(f"identity_from must be one of {IDENTITY_SOURCES}, got {identity_from!r}")
        if not 0.0 <= motion_dropout <= 1.0:
            raise ValueError(f"motion_dropout must be in [0, 1], got {motion_dropout}")
        self.cfg = cfg
        self.twin_options = twins
        self.identity_from = identity_from
        self.motion_dropout = float(motion_dropout)
        roots = data_roots(root)
        listed = []
        for folder in roots:
            ds = ClipDataset(folder)
            if ds.sample_rate != cfg.audio.sample_rate:
                raise ClipFormatError(f"{folder} has {ds.sample_rate} Hz audio; the model expects "
                                      f"{cfg.audio.sample_rate} Hz")
            listed += [(folder, ds, meta) for meta in ds.metas(split)[:limit]]
        if not listed:
            raise EmptySplitError(", ".join(roots), split)
        self.clips: List[LoadedClip] = []
        for root, ds, meta in listed:
            clip = ds.load(meta, mmap=False)
            if clip.psi is None:
                raise ClipFormatError(f"clip {meta['clip_id']} in {root} has no expression vectors (psi.npy); "
                                      "prepare real data with --deca so that the denoiser has its condition")
            frames, landmarks = resize_clip_frames(clip.frames, clip.landmarks, cfg.image_size)
            feats = frame_features(clip.audio, meta["fps"], cfg.audio, num_frames=len(frames))
            psi = smooth_sequence(torch.from_numpy(np.asarray(clip.psi, dtype=np.float32)), cfg.expression_smoothing)
            frames_u8 = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()
            twin = ClipTwins.of(meta, clip.extras, clip.psi, cfg.image_size, root=root)
            neutral = (smooth_sequence(torch.from_numpy(twin.neutral_psi), cfg.expression_smoothing)
                       if twin is not None else None)
            self.clips.append(LoadedClip(meta, frames_u8, torch.from_numpy(feats), psi,
                                         torch.from_numpy(np.asarray(landmarks, dtype=np.float32)), twin, neutral))
        self.lengths = np.array([len(c.frames) for c in self.clips])
        # for each clip: the clip whose frames serve as identity frames (itself, or a neutral clip of its identity)
        neutral = {}
        for i, c in enumerate(self.clips):
            if c.meta.get("emotion") == "neutral":
                neutral.setdefault(c.meta["identity"], i)
        self.identity_clip = np.array([neutral.get(c.meta["identity"], i) if identity_from == "neutral_clip" else i
                                       for i, c in enumerate(self.clips)])
        self._audio_offsets = window_offsets(cfg.audio_window)
        self._expr_offsets = window_offsets(cfg.expression_window)
        self._motion_offsets = motion_offsets(cfg.n_motion_frames)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def has_twins(self) -> bool:
        return any(c.twins is not None for c in self.clips)

    def sample(self, clip_index: int, frame: int, identity_frame: int,
               motion_from_identity: bool = False) -> Dict[str, torch.Tensor]:
        """One training example: frame ``frame`` of a clip, with frame ``identity_frame`` of its identity clip
        (`identity_clip`) as the identity; ``motion_from_identity`` makes the motion frames identity copies."""
        c = self.clips[clip_index]
        identity = self.clips[self.identity_clip[clip_index]].frames[identity_frame].float() / 127.5 - 1.0
        previous = c.frames[: 0 if motion_from_identity else frame].float() / 127.5 - 1.0
        item = self._example(c, frame, identity, self._motion(previous, identity, 0 if motion_from_identity else frame))
        self._add_neutral(c, frame, item)
        return item

    def _example(self, c: LoadedClip, frame: int, identity: torch.Tensor,
                 motion: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Frame ``frame`` of clip ``c`` as the target with its own conditions (audio and expression windows,
        landmarks), given the identity and motion frames the caller chose."""
        return {"x0": c.frames[frame].float() / 127.5 - 1.0, "identity": identity, "motion": motion,
                "audio": gather_windows(c.features, [frame], self._audio_offsets)[0],
                "expression": gather_windows(c.expression, [frame], self._expr_offsets)[0],
                "landmarks": c.landmarks[frame],
                "real_texture": torch.tensor(c.meta.get("source") == "real_texture")}

    def _motion(self, previous: torch.Tensor, identity: torch.Tensor, frame: int) -> torch.Tensor:
        source = motion_source(previous, identity, self.cfg.n_motion_frames)
        return gather_windows(source, motion_centre(frame, self.cfg.n_motion_frames), self._motion_offsets)[0]

    def _add_neutral(self, c: LoadedClip, frame: int, item: Dict[str, torch.Tensor],
                     rendered_neutral: Optional[torch.Tensor] = None) -> None:
        """The null condition of guidance and the emotion-region mask: the neutral twin's expression window,
        and the pixels where the target differs from the neutral twin of its frame (empty without twins)."""
        if c.twins is None:
            item["neutral_expression"] = item["expression"]
            item["emotion_mask"] = torch.zeros(1, *item["x0"].shape[1:])
            return
        item["neutral_expression"] = gather_windows(c.neutral_expression, [frame], self._expr_offsets)[0]
        if rendered_neutral is None:
            rendered_neutral = c.twins.render(c.twins.neutral_psi[[frame]], [frame])[0][0]
        item["emotion_mask"] = emotion_region_mask(item["x0"][None], rendered_neutral[None])[0]

    def twin_sample(self, clip_index: int, frame: int, identity_frame: int, rng: np.random.Generator,
                    target_twin: bool = False) -> Dict[str, torch.Tensor]:
        """A counterfactual example: identity frame and motion frames from twins of the clip (the neutral twin,
        or, for the motion frames, half the time a twin with another emotion, or the same emotion at another
        intensity: `ClipTwins.counterfactual`), so the target's emotion is only in its expression window. With
        ``target_twin`` the target is itself such a twin with that twin's psi."""
        c = self.clips[clip_index]
        tw = c.twins
        same = self.twin_options.same_emotion_share
        n_motion = self.cfg.n_motion_frames
        previous = [i for i in range(frame - n_motion, frame) if i >= 0]
        motion_psi = tw.counterfactual(rng, same)
        rows = [tw.neutral_psi[identity_frame], tw.neutral_psi[frame]] + [motion_psi[i] for i in previous]
        indices = [identity_frame, frame] + previous
        target_psi = None
        if target_twin:
            target_psi = tw.counterfactual(rng, same)
            rows.append(target_psi[frame])
            indices.append(frame)
        images, landmarks = tw.render(np.stack(rows), indices)
        identity, neutral_frame = images[0], images[1]
        item = self._example(c, frame, identity, self._motion(images[2: 2 + len(previous)], identity, len(previous)))
        if target_psi is not None:
            smoothed = smooth_sequence(torch.from_numpy(target_psi), self.cfg.expression_smoothing)
            item.update(x0=images[-1], landmarks=landmarks[-1],
                        expression=gather_windows(smoothed, [frame], self._expr_offsets)[0])
        self._add_neutral(c, frame, item, rendered_neutral=neutral_frame)
        return item

    def neutral_oldest_sample(self, clip_index: int, frame: int, identity_frame: int) -> Dict[str, torch.Tensor]:
        """The clip's own frame as the target, the identity from its neutral twin, the oldest motion frame from the
        neutral twin and the newer ones the clip's own (`TwinOptions.neutral_oldest_share`)."""
        c = self.clips[clip_index]
        tw = c.twins
        previous = [i for i in range(frame - self.cfg.n_motion_frames, frame) if i >= 0]
        indices = [identity_frame, frame] + previous[:1]
        images, _ = tw.render(tw.neutral_psi[indices], indices)
        identity, neutral_frame = images[0], images[1]
        own = c.frames[previous[1:]].float() / 127.5 - 1.0
        item = self._example(c, frame, identity, self._motion(torch.cat([images[2:], own]), identity, len(previous)))
        self._add_neutral(c, frame, item, rendered_neutral=neutral_frame)
        return item

    def photo_anchor_sample(self, clip_index: int, frame: int, identity_frame: int,
                            still: bool = False) -> Dict[str, torch.Tensor]:
        """The clip's own frame as the target, the identity and the oldest motion frame the photo the clip was
        animated from (at its own expression, the identity frame's pose: the one image, as when sampling
        re-injects the portrait; with `TwinOptions.photo_oldest_own_pose` at frame t-2's pose), the newer motion
        frames the clip's own (`TwinOptions.photo_anchor_share`);
        ``still``: every motion frame the photo (`TwinOptions.photo_still_share`)."""
        c = self.clips[clip_index]
        previous = [] if still else [i for i in range(frame - self.cfg.n_motion_frames, frame) if i >= 0]
        poses = [identity_frame] + (previous[:1] if self.twin_options.photo_oldest_own_pose else [])
        photo, _ = c.twins.render_source(poses)
        identity = photo[0]
        oldest = photo[-1:] if previous else photo[:0]     # the photo at the last pose rendered
        own = c.frames[previous[1:]].float() / 127.5 - 1.0
        motion = torch.cat([oldest, own])
        item = self._example(c, frame, identity, self._motion(motion, identity, len(previous)))
        self._add_neutral(c, frame, item)
        return item

    def intensity_pair_samples(self, clip_index: int, frame: int, identity_frame: int,
                               rng: np.random.Generator) -> List[Dict[str, torch.Tensor]]:
        """Two examples that differ only in k: the same identity frame (the neutral twin's), motion frames (a
        counterfactual twin's, `ClipTwins.counterfactual`) and audio, with targets the clip's own emotion at two
        intensities drawn uniformly from [0, 1] (0 is the neutral twin), each with its twin's psi. Keys beside
        `sample`'s: ``pair`` (+1 on the first row, -1 on the second: the partner is the next or the previous row)
        and ``pair_mask`` (where the two targets differ, `emotion_region_mask`). Training starts both rows from
        the same x_t (`train_denoiser`), so the network is asked how much the face changes with k, the response
        that FLIE measures."""
        c = self.clips[clip_index]
        tw = c.twins
        if tw is None or tw.emotion in (None, NEUTRAL):
            raise ValueError(f"clip {c.meta.get('clip_id')!r}: intensity pairs need an emotional clip with twins")
        previous = [i for i in range(frame - self.cfg.n_motion_frames, frame) if i >= 0]
        motion_psi = tw.counterfactual(rng, self.twin_options.same_emotion_share)
        targets = [tw.with_emotion(tw.emotion, k) for k in rng.uniform(0.0, 1.0, size=2)]
        rows = ([tw.neutral_psi[identity_frame], tw.neutral_psi[frame]] + [motion_psi[i] for i in previous]
                + [psi[frame] for psi in targets])
        images, landmarks = tw.render(np.stack(rows), [identity_frame, frame] + previous + [frame, frame])
        identity, neutral_frame = images[0], images[1]
        motion = self._motion(images[2: 2 + len(previous)], identity, len(previous))
        mask = emotion_region_mask(images[-2:-1], images[-1:])[0]
        items = []
        for side, psi, x0, marks in zip((1, -1), targets, images[-2:], landmarks[-2:]):
            item = self._example(c, frame, identity, motion)
            smoothed = smooth_sequence(torch.from_numpy(psi), self.cfg.expression_smoothing)
            item.update(x0=x0, landmarks=marks, expression=gather_windows(smoothed, [frame], self._expr_offsets)[0],
                        pair=torch.tensor(side), pair_mask=mask)
            self._add_neutral(c, frame, item, rendered_neutral=neutral_frame)
            items.append(item)
        return items

    def _pairable(self, clip_index: int) -> bool:
        c = self.clips[clip_index]
        return c.twins is not None and c.twins.emotion not in (None, NEUTRAL)

    def _one_example(self, c: int, rng: np.random.Generator) -> Dict[str, torch.Tensor]:
        """One example of clip ``c`` as the twin options draw it (a twin example or the clip's own frame)."""
        opts = self.twin_options
        n, n_identity = self.lengths[c], self.lengths[self.identity_clip[c]]
        if opts.share > 0 and self.clips[c].twins is not None and rng.random() < opts.share:
            frame, identity_frame = int(rng.integers(n)), int(rng.integers(n))
            # drawn only when asked for, so that recipes without them see the batches they always saw
            if (opts.photo_anchor_share > 0 and self.clips[c].twins.has_source
                    and rng.random() < opts.photo_anchor_share):
                still = opts.photo_still_share > 0 and rng.random() < opts.photo_still_share
                return self.photo_anchor_sample(c, frame, identity_frame, still)
            if opts.neutral_oldest_share > 0 and rng.random() < opts.neutral_oldest_share:
                return self.neutral_oldest_sample(c, frame, identity_frame)
            return self.twin_sample(c, frame, identity_frame, rng, target_twin=rng.random() < opts.target_share)
        drop = self.motion_dropout > 0 and rng.random() < self.motion_dropout
        return self.sample(c, int(rng.integers(n)), int(rng.integers(n_identity)), drop)

    def batch(self, rng: np.random.Generator, batch_size: int) -> Dict[str, torch.Tensor]:
        # clips weighted by length, so every frame of the split is equally likely
        weights = self.lengths / self.lengths.sum()
        pair_share = self.twin_options.intensity_pair_share
        if pair_share == 0:   # the draws of every recipe before intensity pairs, unchanged
            items = [self._one_example(int(c), rng) for c in rng.choice(len(self.clips), size=batch_size, p=weights)]
            return {k: torch.stack([it[k] for it in items]) for k in items[0]}
        items = []
        while len(items) < batch_size:
            c = int(rng.choice(len(self.clips), p=weights))
            if len(items) + 2 <= batch_size and self._pairable(c) and rng.random() < pair_share:
                n = self.lengths[c]
                items += self.intensity_pair_samples(c, int(rng.integers(n)), int(rng.integers(n)), rng)
                continue
            item = self._one_example(c, rng)
            item.update(pair=torch.tensor(0), pair_mask=torch.zeros(1, *item["x0"].shape[1:]))
            items.append(item)
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}

    def probe_batch(self, rng: np.random.Generator, examples: int, min_intensity: float = 0.6,
                    emotion_scale: float = 1.0, emotion: Optional[str] = None) -> Dict[str, torch.Tensor]:
        """Twin examples for `training.probes`: frames of emotional clips (k >= ``min_intensity``) where the
        emotion has set in, their neutral twins, identity and motion frames from the neutral twin.
        ``emotion_scale`` below 1: the target is the frame's twin with that share of its emotion (0.5: half
        the intensity), with that twin's psi; the same draws as at 1, so the two batches pair up.
        ``emotion``: only clips of that emotion (the probes per emotion)."""
        if not 0.0 < emotion_scale <= 1.0:
            raise ValueError(f"emotion_scale must be in (0, 1], got {emotion_scale}")
        candidates = [(i, f) for i, c in enumerate(self.clips) if c.twins is not None
                      and c.meta.get("emotion") not in (None, "neutral") and not c.meta.get("emotion_change")
                      and (emotion is None or c.meta.get("emotion") == emotion)
                      and (c.meta.get("intensity") or 0.0) >= min_intensity
                      for f in np.flatnonzero(c.twins.onset >= 0.9)]
        if not candidates:
            which = "emotional clips" if emotion is None else f"{emotion} clips"
            raise ClipFormatError(f"no {which} with twins at full onset for the emotion probes")
        picks = rng.choice(len(candidates), size=min(examples, len(candidates)), replace=False)
        items = []
        for k in picks:
            clip_index, frame = candidates[k]
            c = self.clips[clip_index]
            n_motion = self.cfg.n_motion_frames
            previous = [i for i in range(frame - n_motion, frame) if i >= 0]
            identity_frame = int(rng.integers(len(c.frames)))
            indices = [identity_frame, frame] + previous
            rows = c.twins.neutral_psi[indices]
            x0, expression = c.frames[frame].float() / 127.5 - 1.0, c.expression
            if emotion_scale != 1.0:
                scaled = c.twins.with_scaled_emotion(emotion_scale)
                rows, indices = np.concatenate([rows, scaled[[frame]]]), indices + [frame]
                expression = smooth_sequence(torch.from_numpy(scaled), self.cfg.expression_smoothing)
            images, _ = c.twins.render(rows, indices)
            if emotion_scale != 1.0:
                x0, images = images[-1], images[:-1]
            items.append({"x0": x0, "twin": images[1], "identity": images[0],
                          "motion": self._motion(images[2:], images[0], len(previous)),
                          "audio": gather_windows(c.features, [frame], self._audio_offsets)[0],
                          "expression": gather_windows(expression, [frame], self._expr_offsets)[0],
                          "neutral_expression": gather_windows(c.neutral_expression, [frame], self._expr_offsets)[0],
                          "landmarks": c.landmarks[frame]})
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def half_blurred_sigmas(rng: np.random.Generator, n: int, max_sigma: float) -> np.ndarray:
    """Blur sigmas for `blur_frames`: half of the ``n`` examples (on average) get one drawn uniformly from
    [0, ``max_sigma``), the others 0 (the denoiser's motion-frame and the SR head's input blur)."""
    return rng.uniform(0.0, max_sigma, n) * (rng.random(n) < 0.5)


# which clips a per-source option (motion blur, anchored start) applies to: `examples_from`
EXAMPLE_SOURCES = ("all", "real_texture", "procedural")


def examples_from(real_texture, sources: str) -> np.ndarray:
    """Which examples a per-source option applies to: ``real_texture`` (one bool each: the clip is of the
    real-texture corpus) -> bool [B], all of them ("all"), the real-texture ones ("real_texture") or the others
    ("procedural")."""
    if sources not in EXAMPLE_SOURCES:
        raise ValueError(f"example sources must be one of {', '.join(EXAMPLE_SOURCES)}, got {sources!r}")
    real_texture = np.asarray(real_texture, dtype=bool)
    if sources == "all":
        return np.ones_like(real_texture)
    return real_texture if sources == "real_texture" else ~real_texture


def motion_blur_sigmas(rng: np.random.Generator, real_texture, max_sigma: float, sources: str = "all") -> np.ndarray:
    """The denoiser's motion-frame blur (`half_blurred_sigmas` over the batch) for the examples ``sources`` names
    (`examples_from`; the others get 0). The same draws whatever ``sources`` is, so an example that is blurred gets
    the same sigma under each."""
    chosen = examples_from(real_texture, sources)
    return np.where(chosen, half_blurred_sigmas(rng, len(chosen), max_sigma), 0.0)


def blur_frames(batch: torch.Tensor, sigmas) -> torch.Tensor:
    """Frames [B, n, C, H, W] (the denoiser's motion frames; the SR head's inputs with n = 1) with example b's
    frames blurred by a Gaussian of std ``sigmas[b]`` pixels (0 = left as they are); a separable kernel of
    radius ceil(3 sigma), edges replicated."""
    out = batch.clone()
    for b, sigma in enumerate(np.asarray(sigmas, dtype=np.float64)):
        if sigma <= 0.0:
            continue
        radius = max(1, int(np.ceil(3.0 * sigma)))
        x = torch.arange(-radius, radius + 1, dtype=batch.dtype, device=batch.device)
        kernel = torch.exp(-0.5 * (x / float(sigma)) ** 2)
        kernel = kernel / kernel.sum()
        planes = batch[b].reshape(-1, 1, *batch.shape[-2:])
        planes = torch.nn.functional.pad(planes, (radius, radius, 0, 0), mode="replicate")
        planes = torch.nn.functional.conv2d(planes, kernel.view(1, 1, 1, -1))
        planes = torch.nn.functional.pad(planes, (0, 0, radius, radius), mode="replicate")
        planes = torch.nn.functional.conv2d(planes, kernel.view(1, 1, -1, 1))
        out[b] = planes.reshape(batch.shape[1:])
    return out


def expression_statistics(psi: np.ndarray, keep: int, min_std: float = 1e-3):
    """(mean, scale) per component for `DenoiserConfig.expression_mean/expression_scale` from psi rows [M, D]:
    the condition then sees (psi - mean) / std on the first ``keep`` components and nothing of the rest.

    Why drop components: in the procedural corpus components 13..49 are per-identity offsets that move the
    face by under 0.1 px yet dominate psi's length (std 0.3 against the named actions' ~0.1-0.5), so a
    condition network reacts to them more than to the emotion. Real psi (DECA) keeps all 50 (keep = 50).
    ``min_std`` guards components that never move in the data."""
    psi = np.asarray(psi, dtype=np.float64)
    if psi.ndim != 2 or len(psi) < 2:
        raise ValueError("expression statistics need at least two psi rows [M, D]")
    if not 1 <= keep <= psi.shape[1]:
        raise ValueError(f"keep must be in [1, {psi.shape[1]}], got {keep}")
    mean = psi.mean(axis=0)
    scale = 1.0 / np.maximum(psi.std(axis=0), min_std)
    scale[keep:] = 0.0
    mean[keep:] = 0.0
    return tuple(float(v) for v in mean), tuple(float(v) for v in scale)


def emotion_sequences(root: str, split: str, length: int, min_intensity: float = 0.99):
    """Labelled psi sequences for the expression GAN: clips at full intensity (MEAD level 3, as the paper
    trains on) plus neutral clips; clips whose emotion changes (`meta["emotion_change"]`) are left out.
    Returns (list of [N_i, 50] arrays, labels)."""
    ds = ClipDataset(root)
    seqs, labels = [], []
    for meta in ds.metas(split, labelled=True):
        if meta.get("emotion_change"):      # one label per sequence: clips whose emotion changes have none
            continue
        if meta["emotion"] != "neutral" and (meta.get("intensity") or 0.0) < min_intensity:
            continue
        clip = ds.load(meta, with_audio=False)
        if clip.psi is None or len(clip.psi) < length:
            continue
        seqs.append(np.asarray(clip.psi, dtype=np.float32))
        labels.append(emotion_index(meta["emotion"]))
    if not seqs:
        raise ClipFormatError(f"{root}: no labelled clips of at least {length} frames at full intensity in "
                              f"split {split!r}; the generator needs emotional psi sequences")
    return seqs, np.array(labels)


class FrameData:
    """Every frame of a split (uint8, in memory) with its psi and landmarks when asked for, for the per-frame models
    (SR, regressor), from one dataset folder or several (``limit`` clips at most of each)."""

    def __init__(self, root: DataFolders, split: str, size: Optional[int] = None, need_psi: bool = False,
                 limit: Optional[int] = None, need_landmarks: bool = False):
        listed = [(ds, meta) for ds in map(ClipDataset, data_roots(root)) for meta in ds.metas(split)[:limit]]
        if not listed:
            raise EmptySplitError(", ".join(data_roots(root)), split)
        frames, psis, owners, marks = [], [], [], []
        for ds, meta in listed:
            clip = ds.load(meta, with_audio=False)
            f, lm = np.asarray(clip.frames), np.asarray(clip.landmarks)
            if size is not None and f.shape[1] != size:
                f, lm = resize_clip_frames(f, lm, size)
            frames.append(f)
            if need_landmarks:
                marks.append(lm.astype(np.float32))
            owners.append(np.full(len(f), meta["identity"], dtype=object))
            if need_psi:
                if clip.psi is None:
                    raise ClipFormatError(f"clip {meta['clip_id']} has no psi.npy; the regressor needs expression "
                                          "vectors (prepare real data with --deca)")
                psis.append(np.asarray(clip.psi, dtype=np.float32))
        self.frames = torch.from_numpy(np.concatenate(frames)).permute(0, 3, 1, 2).contiguous()   # uint8
        self.psi = torch.from_numpy(np.concatenate(psis)) if need_psi else None
        # each frame's 68 ground-truth points in its (resized) pixels, [N, 68, 2]; None unless asked for
        self.landmarks = torch.from_numpy(np.concatenate(marks)) if need_landmarks else None
        self.identity = np.concatenate(owners)    # the identity each frame belongs to

    def __len__(self) -> int:
        return len(self.frames)

    def draw(self, rng: np.random.Generator, batch_size: int) -> torch.Tensor:
        """Indices of ``batch_size`` frames drawn with replacement."""
        return torch.from_numpy(rng.integers(len(self.frames), size=batch_size))

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        """The frames at ``idx`` as float [B, 3, S, S] in 0..1."""
        return self.frames[idx].float() / 255.0

    def batch(self, rng: np.random.Generator, batch_size: int):
        idx = self.draw(rng, batch_size)
        return self.images(idx), (self.psi[idx] if self.psi is not None else None)
