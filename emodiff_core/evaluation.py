"""Generate videos in order to measure them: the layer above `pipeline` (which generates) and `metrics_video`
(which measures videos it is given).

- `generate_intensity_videos`: one identity speaking one audio with one emotion at k = 0, 1/L, .., 1 (Eq. 14,
  common random numbers), the input of FLIE and LIE;
- `video_flie`: those videos and their FLIE (`metrics_video.flie_from_videos`);
- `intensity_metrics`: FLIE and, with LPIPS, LIE of those videos; `pooled_flie`: FLIE of several such runs pooled
  (`pooled_flie_jackknife`, `jackknife_se`: its noise over the runs);
- `generated_video_report`: one video generated and measured with every metric whose inputs are available
  (`metrics_video.measure_video`), what an evaluation script calls.

Every function samples with one `sampling.SamplingSettings` (``settings``, default `sampling.DEFAULT`); the
reports carry its fields (sampler, steps, start_noise, eta).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .anchors import check_start_mouth, start_anchor
from .feature_nets import LPIPS
from .metrics import EmotionClassifier
from .metrics_video import (FaceDescriptor, VideoFlie, condition_dims, edit_dims, flie_from_psi, flie_from_videos,
                            frames_to_uint8, intensity_levels, lie, measure_video)
from .pipeline import EmotionSpec, Mouth, emotion_expressions, generate_frames
from .sampling import DEFAULT, SamplingSettings


@torch.no_grad()
def generate_intensity_videos(denoiser, generator, identity: torch.Tensor, audio, emotion: str, levels: int, *,
                              settings: SamplingSettings = DEFAULT, seed: int = 0, expression_seed: int = 0,
                              cache_reference: bool = True, device=None,
                              reinject_identity_every: int = 0,
                              conditions: Optional[Sequence[torch.Tensor]] = None,
                              mouth: Optional[Mouth] = None, start_mouth: str = "previous",
                              portrait=None) -> List[torch.Tensor]:
    """Videos [N, 3, S, S] of one identity speaking ``audio`` with ``emotion`` at k = 0, 1/L, .., 1
    (``reinject_identity_every`` as `pipeline.generate_frames`; 0 = off).

    The expression conditions follow Eq. 14 with the same generator noise (``expression_seed``) at every
    level, and every video is sampled with the same ``settings`` and ``seed`` (common random numbers), so the
    videos differ only by the intensity. ``conditions``: those conditions when the caller already made them
    (`intensity_conditions` with the same arguments); they are used as given. With classifier-free guidance
    (``settings.guidance`` != 1) each video is guided against the k = 0 condition, the neutral sequence e_n of
    Eq. 14 (as the pipeline guides a user's video). ``mouth``: see `pipeline.emotion_expression_pair`.
    ``start_mouth``: what each frame starts from (`anchors.START_MOUTHS`; ``rig`` renders ``portrait``'s rig, a
    `pipeline.Portrait` or anything with its ``image`` and ``landmarks``, at each level's condition against the
    k = 0 one, as the pipeline starts a user's video); the default ``previous`` is the video's previous frame.
    """
    check_start_mouth(start_mouth, "start_mouth")
    if conditions is None:
        conditions = intensity_conditions(generator, audio, emotion, levels, expression_seed, mouth)
    videos = []
    for psi in conditions:
        anchor = start_anchor(start_mouth, portrait, audio, psi, conditions[0], identity.shape[-1])
        frames = generate_frames(denoiser, identity, audio, psi, settings=settings, seed=seed,
                                 cache_reference=cache_reference, device=device,
                                 reinject_identity_every=reinject_identity_every,
                                 neutral_expression=conditions[0],      # used only when guided
                                 anchor_source=anchor)
        videos.append(frames[:, 0])
    return videos


def intensity_conditions(generator, audio, emotion: str, levels: int, expression_seed: int = 0,
                         mouth: Optional[Mouth] = None) -> List[torch.Tensor]:
    """The expression conditions [N, 50] of `generate_intensity_videos` at k = 0, 1/L, .., 1 (Eq. 14, the same
    generator noise at every level; ``mouth`` as `pipeline.emotion_expression_pair`, with ``audio``)."""
    return [emotion_expressions(generator, audio.num_frames, EmotionSpec(emotion, float(k)), fps=audio.fps,
                                seed=expression_seed, mouth=mouth, audio=audio) for k in intensity_levels(levels)]


def video_flie(denoiser, generator, identity: torch.Tensor, audio, emotion: str, extractor: Callable,
               levels: int = 15, dims: Optional[Sequence[int]] = None, **generation) -> Tuple[VideoFlie, List[torch.Tensor]]:
    """Generate the intensity videos (`generate_intensity_videos`, keyword arguments go there) and compute
    their FLIE with psi from ``extractor`` (a `metrics_video.PsiExtractor`). Returns (VideoFlie, videos)."""
    videos = generate_intensity_videos(denoiser, generator, identity, audio, emotion, levels, **generation)
    return flie_from_videos(videos, extractor, dims=dims, intensities=intensity_levels(levels)), videos


def per_dimension_cv(result: VideoFlie) -> Dict[str, float]:
    """FLIE's terms: psi dimension (as text, for JSON) -> its coefficient of variation over the levels."""
    dims = result.dims if result.dims is not None else list(range(result.mean_psi.shape[1]))
    return {str(dims[int(j)]): float(cv) for j, cv in zip(result.result.kept, result.result.per_dimension)}


def pooled_flie(runs: Sequence[Dict[str, object]], among: Optional[Sequence[int]] = None) -> Dict[str, object]:
    """FLIE of several `intensity_metrics` runs pooled as the paper's Eq. 20 reads: the mean psi of each level
    over every video at that level (here the runs' per-level means, averaged), over the dimensions the pooled
    asked edit moves (``among`` them). One set of short videos swings widely with the seed (its noise over a
    1/L step); the pooled mean averages that noise away and keeps what every run shares, such as a response
    that saturates. Keys ``flie_edit_dims_pooled``, ``..._per_dim``, ``edit_dims_pooled``, ``pooled_runs``."""
    if not runs:
        raise ValueError("pooled_flie needs at least one run")
    measured = np.mean([np.asarray(r["level_psi_means"], np.float64) for r in runs], axis=0)
    asked = np.mean([np.asarray(r["level_condition_means"], np.float64) for r in runs], axis=0)
    dims = edit_dims([row[None] for row in asked], among=among)
    result = flie_from_psi([row[None] for row in measured], dims=dims)
    return {"flie_edit_dims_pooled": result.flie, "flie_edit_dims_pooled_per_dim": per_dimension_cv(result),
            "edit_dims_pooled": dims, "pooled_runs": len(runs)}


def pooled_flie_jackknife(runs: Sequence[Dict[str, object]], among: Optional[Sequence[int]] = None,
                          groups: Optional[Sequence[object]] = None) -> np.ndarray:
    """The pooled FLIE (`pooled_flie`) of ``runs`` with each run left out in turn ([len(runs)], NaN where FLIE is
    undefined): with `jackknife_se`, the noise a comparison of pooled FLIEs must be read against. Two models' runs
    at the same seeds, in the same order, give a paired jackknife: the difference of their arrays, seed by seed.
    ``groups`` (one label per run): leave out a whole group at a time instead ([number of groups], in order of
    first appearance), as for runs of several identities whose seeds share the identity's face: the noise between
    identities is what a FLIE pooled over identities must be read against.
    Not a bootstrap: a resample that repeats a seed pools fewer distinct videos per level, and FLIE (a ratio of the
    steps' spread to their mean) rises with that noise, so bootstrap draws sit above the estimate (the demo's angry at
    seeds 5-9: median of the draws 6.49 against 5.62; benchmarks/README.md)."""
    labels = list(range(len(runs))) if groups is None else list(groups)
    if len(labels) != len(runs):
        raise ValueError(f"groups must name one group per run: {len(labels)} labels for {len(runs)} runs")
    order = list(dict.fromkeys(labels))
    if len(order) < 3:
        raise ValueError(f"a jackknife needs at least 3 runs (or groups), got {len(order)}")
    out = np.full(len(order), np.nan)
    for i, left_out in enumerate(order):
        try:
            kept = [r for r, label in zip(runs, labels) if label != left_out]
            out[i] = pooled_flie(kept, among=among)["flie_edit_dims_pooled"]
        except ValueError:
            pass
    return out


def pooled_flie_with_se(runs: Sequence[Dict[str, object]], among: Optional[Sequence[int]] = None,
                        groups: Optional[Sequence[object]] = None) -> Dict[str, object]:
    """`pooled_flie` of ``runs`` and, with 3 runs (or ``groups``) or more, its jackknife standard error
    ``flie_edit_dims_pooled_jackknife_se`` (`pooled_flie_jackknife`, `jackknife_se`). ValueError where FLIE is
    undefined."""
    out = pooled_flie(runs, among=among)
    if len(set(range(len(runs)) if groups is None else groups)) >= 3:
        out["flie_edit_dims_pooled_jackknife_se"] = jackknife_se(
            pooled_flie_jackknife(runs, among=among, groups=groups))
    return out


def jackknife_se(leave_one_out: np.ndarray) -> float:
    """The jackknife standard error sqrt((n - 1) / n * sum (theta_i - mean)^2) of a statistic from its n
    leave-one-out values (`pooled_flie_jackknife`, or a difference of two such arrays); NaN values are dropped."""
    values = np.asarray(leave_one_out, np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        raise ValueError("a jackknife standard error needs at least 2 finite leave-one-out values")
    n = len(values)
    return float(np.sqrt((n - 1) / n * np.sum((values - values.mean()) ** 2)))


def intensity_metrics(denoiser, generator, identity: torch.Tensor, audio, emotion: str, levels: int,
                      extractor: Callable, lpips: Optional[LPIPS] = None, **generation) -> Dict[str, object]:
    """``flie`` (or ``flie_error`` when FLIE is undefined) and, with ``lpips``, ``lie`` of the intensity videos
    of ``emotion`` (`generate_intensity_videos`; keyword arguments go there); ``flie_edit_dims`` is FLIE over
    the dimensions the asked edit moves among those the denoiser reads (``edit_dims``, `metrics_video.edit_dims`,
    `condition_dims`), where the extractor's noise on the others does not swamp it, and
    ``flie_edit_dims_per_dim`` its terms (dimension -> CV): a dimension the edit asks a little of and the video
    does not show has a CV of noise over a small step, and can be most of the sum. ``level_psi_means`` and
    ``level_condition_means`` ([L + 1][D]): the measured and the asked psi per level, averaged over frames."""
    conditions = intensity_conditions(generator, audio, emotion, levels, generation.get("expression_seed", 0),
                                      generation.get("mouth"))
    videos = generate_intensity_videos(denoiser, generator, identity, audio, emotion, levels, conditions=conditions,
                                       **generation)
    out: Dict[str, object] = {}
    psi = [extractor(v) for v in videos]
    # what FLIE is computed from, for a caller that pools several sets of videos (the paper's mean per level)
    out["level_psi_means"] = [p.mean(axis=0).tolist() for p in psi]
    out["level_condition_means"] = [c.numpy().mean(axis=0).tolist() for c in conditions]
    try:
        out["flie"] = flie_from_psi(psi).flie
        dims = edit_dims([c.numpy() for c in conditions], among=condition_dims(denoiser.config))
        edit = flie_from_psi(psi, dims=dims)
        out["flie_edit_dims"], out["edit_dims"] = edit.flie, dims
        out["flie_edit_dims_per_dim"] = per_dimension_cv(edit)
    except ValueError as exc:
        out["flie_error"] = str(exc)
    if lpips is not None:
        out["lie"] = lie(videos, lpips).lie
    return out


def generated_video_report(denoiser, generator, identity: torch.Tensor, audio, emotion: str = "neutral",
                           intensity: float = 1.0, *, expression: Optional[torch.Tensor] = None,
                           extractor: Optional[Callable] = None, classifier: Optional[EmotionClassifier] = None,
                           truth_frames=None, descriptor: Optional[FaceDescriptor] = None, reference_image=None,
                           landmark_backend=None, flie_levels: int = 0, lpips: Optional[LPIPS] = None,
                           settings: SamplingSettings = DEFAULT, seed: int = 0, window: int = 48,
                           max_offset: int = 8, max_frames: Optional[int] = None, device=None) -> Dict[str, object]:
    """Generate one video and measure it (`metrics_video.measure_video`) with every metric whose inputs are
    available.

    The condition is ``expression`` ([N, 50], e.g. a clip's ground-truth psi) or, when None, Eq. 14 from
    ``generator`` for ``emotion`` at ``intensity``. The identity reference defaults to the identity crop.
    ``flie`` (and ``lie`` with ``lpips``) over ``flie_levels`` intensity levels of ``emotion`` when
    flie_levels >= 2 and an extractor is given. ``max_frames`` keeps only the first frames of the audio
    (and of ``expression``). Every video is sampled with ``settings``.
    Returns a flat dict of numbers (plus 'frames' and the settings' fields: sampler, steps, start_noise, eta).
    """
    if max_frames is not None and max_frames < audio.num_frames:
        audio = audio.first(max_frames)
        expression = expression[:max_frames] if expression is not None else None
    n = audio.num_frames
    psi_cond = expression if expression is not None else emotion_expressions(
        generator, n, EmotionSpec(emotion, float(intensity)), fps=audio.fps, seed=seed)
    frames = generate_frames(denoiser, identity, audio, psi_cond, settings=settings, seed=seed, device=device)[:, 0]
    report: Dict[str, object] = {"frames": int(n), **settings.to_dict(), "emotion": emotion,
                                 "intensity": float(intensity)}
    if descriptor is not None and reference_image is None:
        reference_image = frames_to_uint8(identity)[0]
    report.update(measure_video(frames, audio, emotion=emotion, truth_frames=truth_frames, extractor=extractor,
                                classifier=classifier, descriptor=descriptor, reference_image=reference_image,
                                landmark_backend=landmark_backend, window=window, max_offset=max_offset))
    if flie_levels >= 2 and extractor is not None and emotion != "neutral":
        intensity = intensity_metrics(denoiser, generator, identity, audio, emotion, flie_levels, extractor, lpips,
                                      settings=settings, seed=seed, expression_seed=seed, device=device)
        report.update({k: v for k, v in intensity.items() if not k.startswith("level_")})   # flat: no per-level rows
    return report
