"""Shared machinery of the benchmarks: checkpoints, machine description, held-out corpus clips rendered on
the fly, timed generation, and quality against ground truth.

Held-out clips: the procedural corpus the procedural checkpoint (the demo until 2026-12-05) was trained on (seed
0, 64 identities) puts identity i in the test split when i % 8 == 7 (`training.corpus.generate.split_of`); clip c
shows identity c % 64.
`held_out_clips` renders the first K such clips with `render_clip` (deterministic), at the model's
resolution. Each gives the identity frame (the clip's first frame), the audio, the clip's own
ground-truth psi (the expression condition) and the ground-truth frames.
"""
from __future__ import annotations

import glob
import json
import math
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from emodiff_core.paths import CHECKPOINT_DIR, PACK_ROOT as ROOT

RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")


def shown_path(path: Optional[str]) -> Optional[str]:
    """A path for the JSON record: relative to the repository when inside it (records are committed and
    shared; a machine's absolute paths mean nothing elsewhere), otherwise just the file name."""
    if path is None:
        return None
    full = os.path.abspath(path)
    if os.path.commonpath([full, ROOT]) == ROOT:
        return os.path.relpath(full, ROOT)
    return os.path.basename(full)
CORPUS_SEED = 0
CORPUS_IDENTITIES = 64


class BenchmarkError(RuntimeError):
    """A benchmark cannot run as asked (missing checkpoint, bad option ...), with what to do."""


# --------------------------------------------------------------------------- checkpoint and machine
def default_checkpoint() -> str:
    """$EMODIFFHEAD_CHECKPOINT, else the first bundle in <repo>/checkpoints holding a denoiser and an
    expression generator."""
    env = os.environ.get("EMODIFFHEAD_CHECKPOINT")
    if env:
        return env
    from emodiff_core.checkpoint import read_checkpoint

    for path in sorted(glob.glob(os.path.join(CHECKPOINT_DIR, "*.safetensors"))):
        try:
            comps = read_checkpoint(path).components
        except ValueError:
            continue
        if "denoiser" in comps and "expression_generator" in comps:
            return path
    raise BenchmarkError("no checkpoint given and none in checkpoints/: pass --checkpoint PATH (a bundle with a "
                         "denoiser and an expression generator, e.g. from `python -m training export`)")


def checkpoint_step(path: str) -> Optional[int]:
    """The denoiser's training step recorded in the checkpoint's info (None when absent)."""
    from emodiff_core.checkpoint import read_checkpoint

    info = read_checkpoint(path).info
    for key in ("denoiser.steps", "steps", "denoiser.step", "step"):
        if key in info:
            try:
                return int(info[key])
            except ValueError:
                return None
    return None


@dataclass
class Models:
    bundle: object                  # pipeline.ModelBundle
    regressor: Optional[torch.nn.Module]
    regressor_path: Optional[str]
    checkpoint: str
    step: Optional[int]


def load_benchmark_models(checkpoint: Optional[str], device: str = "cpu", regressor: Optional[str] = None) -> Models:
    """The bundle (denoiser + expression generator) and the expression regressor used to measure frames:
    ``regressor`` (a checkpoint holding one) if given, else the bundle's own if it has one, else None."""
    from emodiff_core.checkpoint import load_components, read_checkpoint
    from emodiff_core.pipeline import load_bundle

    path = checkpoint or default_checkpoint()
    if not os.path.isfile(path):
        raise BenchmarkError(f"checkpoint {path} does not exist")
    bundle = load_bundle(path, device=device)
    bundle.denoiser.eval()
    bundle.generator.eval()
    reg, reg_path = None, None
    for candidate in ([regressor] if regressor else []) + [path]:
        if "regressor" in read_checkpoint(candidate).components:
            reg = load_components(candidate, ["regressor"], device=device)["regressor"].eval()
            reg_path = candidate
            break
        if candidate == regressor:
            raise BenchmarkError(f"{regressor} holds no 'regressor' component")
    return Models(bundle, reg, reg_path, path, checkpoint_step(path))


def pick_device(name: Optional[str]) -> str:
    """'cuda' when available and not told otherwise, else 'cpu'."""
    if name:
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def machine_info(device: str) -> Dict[str, object]:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def set_threads(threads: int) -> None:
    """Torch intra-op threads (the benchmarks default to 1: the numbers then do not depend on a busy machine's
    free cores as much)."""
    if threads and threads > 0:
        torch.set_num_threads(int(threads))


# --------------------------------------------------------------------------- held-out clips
def test_clip_indices(count: int, n_identities: int = CORPUS_IDENTITIES) -> List[int]:
    """The first ``count`` clip indices whose identity is in the test split (identity % 8 == 7)."""
    from training.corpus.generate import split_of

    out, c = [], 0
    while len(out) < count:
        if split_of(c % n_identities) == "test":
            out.append(c)
        c += 1
    return out


@dataclass
class HeldOutClip:
    clip_index: int
    meta: dict
    identity: torch.Tensor          # [3, S, S] in [0, 1]: the clip's first frame
    audio: object                   # pipeline.AudioFeatures for the first `frames` frames
    psi: torch.Tensor               # [F, 50] ground-truth expression (the condition)
    frames: np.ndarray              # uint8 [F, S, S, 3] ground truth
    waveform: np.ndarray            # the speech of those frames (16 kHz mono)
    sample_rate: int

    @property
    def num_frames(self) -> int:
        return int(self.psi.shape[0])


def held_out_clips(count: int, frames: int, size: int, audio_config, seed: int = CORPUS_SEED,
                   n_identities: int = CORPUS_IDENTITIES) -> List[HeldOutClip]:
    """Render the first ``count`` test-split clips at ``size`` px; keep at most ``frames`` frames of each."""
    from emodiff_core.pipeline import encode_audio
    from training.corpus.generate import render_clip

    out = []
    for c in test_clip_indices(count, n_identities):
        clip = render_clip(seed, c, n_identities, size)
        sr, fps = clip.meta["sample_rate"], clip.meta["fps"]
        audio = encode_audio(clip.audio, sr, fps, audio_config).first(frames)
        n = audio.num_frames
        identity = torch.from_numpy(clip.frames[0]).permute(2, 0, 1).float() / 255.0
        out.append(HeldOutClip(c, clip.meta, identity, audio, torch.from_numpy(clip.psi[:n]).float(),
                               clip.frames[:n], audio.waveform, audio.config.sample_rate))
    return out


# --------------------------------------------------------------------------- generation
class _Stop(Exception):
    pass


def timed_generation(denoiser, clip: HeldOutClip, settings, cache_reference: bool = True,
                     seed: int = 0, max_frames: Optional[int] = None, device=None, expression=None):
    """Generate the clip's video (a full autoregressive rollout from the identity frame, no teacher
    forcing) and time it. With ``max_frames`` the rollout stops after that many frames; the conditions
    are the same as for the full clip; ``settings`` is a `sampling.SamplingSettings`. Returns (frames [n, 3, S, S] float in [0, 1], wall seconds, CPU
    seconds of this process - the fairer clock on a shared CPU with one torch thread)."""
    from emodiff_core.pipeline import generate_frames

    done: List[torch.Tensor] = []
    limit = max_frames if max_frames is not None else clip.num_frames

    def callback(progress):
        if progress.image is not None:
            done.append(progress.image[0].clone())
            if len(done) >= limit:
                raise _Stop()

    psi = clip.psi if expression is None else expression
    sync = torch.cuda.synchronize if str(device or "").startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    cpu_start = time.process_time()
    try:
        generate_frames(denoiser, clip.identity, clip.audio, psi, settings=settings, seed=seed,
                        cache_reference=cache_reference, callback=callback, device=device)
    except _Stop:
        pass
    sync()
    seconds = time.perf_counter() - start
    return torch.stack(done), seconds, time.process_time() - cpu_start


# --------------------------------------------------------------------------- quality
def frame_quality(frames: torch.Tensor, truth: np.ndarray) -> Dict[str, float]:
    """Mean PSNR (dB) and SSIM over frames of generated frames [n, 3, S, S] against ground truth uint8 [>= n, S, S, 3]."""
    from emodiff_core.metrics import psnr, ssim

    ps, ss = [], []
    for i, f in enumerate(frames):
        pred = f.clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float64)
        gt = truth[i].astype(np.float64) / 255.0
        ps.append(psnr(pred, gt))
        ss.append(ssim(pred, gt))
    return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "psnr_per_frame": [round(float(p), 3) for p in ps]}


def lip_sync_quality(frames: torch.Tensor, clip: HeldOutClip, extractor, max_offset: int = 8) -> Dict[str, object]:
    """Lip sync of generated frames against the clip's speech (`metrics_video.video_lip_sync`, mouth = regressed
    psi[:, 0]), next to the same measure on the ground-truth frames and the correlation of the generated mouth
    with the ground truth's. None values when there is no regressor or too few frames (< 2 max_offset + 4)."""
    from emodiff_core.metrics_video import video_lip_sync

    n = len(frames)
    empty = {"lipsync": None, "lipsync_best_offset": None, "lipsync_confidence": None, "lipsync_gt_frames": None,
             "mouth_corr_gt": None}
    if extractor is None or n < 2 * max_offset + 4:
        return empty
    gen_mouth = np.asarray(extractor(frames), np.float64)[:, 0]
    gt_mouth = np.asarray(extractor(clip.frames[:n]), np.float64)[:, 0]
    from emodiff_core.audio import samples_for_frames

    wave = clip.waveform[: samples_for_frames(n, clip.audio.fps, clip.sample_rate)]
    gen = video_lip_sync(None, wave, clip.audio.fps, clip.sample_rate, mouth=gen_mouth, max_offset=max_offset).sync
    gt = video_lip_sync(None, wave, clip.audio.fps, clip.sample_rate, mouth=gt_mouth, max_offset=max_offset).sync
    corr = float(np.corrcoef(gen_mouth, gt_mouth)[0, 1]) if gen_mouth.std() > 1e-12 and gt_mouth.std() > 1e-12 else 0.0
    return {"lipsync": gen.correlation, "lipsync_best_offset": gen.best_offset, "lipsync_confidence": gen.confidence,
            "lipsync_gt_frames": gt.correlation, "mouth_corr_gt": corr}


def flie_report_block(path: str, key: str):
    """``videos.<key>`` of a `training evaluate --json` report with FLIE over several emotions (the part
    `flie_paired` and `flie_response` read); ValueError saying how to make one when the report lacks it."""
    with open(path) as f:
        block = json.load(f).get("videos", {}).get(key)
    if not block:
        raise ValueError(f"{path} has no videos.{key}: evaluate it with --flie-emotion naming "
                         f"several emotions (or all) and --flie-clips 3 or more")
    return block


def mean_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    """Mean of the non-None values (None when there are none)."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


# --------------------------------------------------------------------------- output
def rounded(obj, digits: int = 4):
    """Round floats in nested dicts/lists for printing."""
    if isinstance(obj, float):
        return round(obj, digits) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return rounded(obj.item(), digits)
    return obj


def write_json(path: str, obj) -> str:
    """Write ``obj`` as indented JSON (creating folders); returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(rounded(obj), fh, indent=1)
        fh.write("\n")
    return path


def print_json(obj) -> None:
    """The one JSON line a benchmark prints."""
    sys.stdout.write(json.dumps(rounded(obj)) + "\n")
    sys.stdout.flush()


def peak_rss_mb() -> float:
    """This process' peak resident set size so far (MB; Linux reports ru_maxrss in KB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2 ** 20


def current_rss_mb() -> float:
    """Current resident set size (MB) from /proc/self/status (peak RSS where /proc is absent)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def plt():
    """matplotlib.pyplot with the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save_plot(fig, path: str) -> str:
    """Lay out, write (PNG, 110 dpi) and close a benchmark figure; returns the path."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt().close(fig)
    return path
