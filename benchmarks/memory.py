"""Peak memory of generation against the length of the audio.

    python -m benchmarks.memory --json [--checkpoint PATH] [--seconds 2,10,60] [--steps 2] [--device cpu|cuda]

Each length runs in a FRESH subprocess (so each peak belongs to one length): load the bundle, encode the
speech (assets/speech.wav repeated to the length), make the expression track (happy, k = 0.7), generate
the frames, and report peak RSS (getrusage) and, on a GPU, peak CUDA memory (max_memory_allocated after
the models are loaded). Memory does not depend on the number of denoising steps, so a few steps are used
(--steps, default 2 DDIM steps) and 60 s finish in minutes on a CPU.

What "flat in length" means here: `generate_frames` moves every finished frame to the host at once, so
device memory must not grow with the length, and host memory may grow only by the output frames
(N x 3 x S x S float32, allocated up front) plus the per-frame inputs (audio features, expression
vectors). Both are reported next to the peaks (``output_frames_mb``, ``inputs_mb``) together with the
host growth during generation (``host_growth_mb``), so the check can be read off; ``host_growth_per_output_mb``
is the slope of that growth against the output size between the shortest and the longest run (1.0 = the
output frames explain all of it).

Prints ONE JSON line; writes <out-dir>/memory.json and memory.png.

    python -m benchmarks.memory --paste-back --json [--seconds-list 3,30] [--max-sides 0,1920] [--steps 2]

Paste-back mode: the real command line, ``python -m emodiff_core generate --paste-back --superres head`` (lanczos2
when the checkpoint has no SR head), on a
6000x4000 photo (assets/portrait.jpg upscaled to 4000x4000 and widened by mirroring, written to a temporary
folder) for each length and each --max-side, every run a fresh subprocess whose peak RSS is read from
os.wait4. The CLI streams frames (sample, super-resolve, paste, encode), so the peak must not grow with the
length: ``peak_ratio_longest_over_shortest`` per max side, goal <= 1.10, and full size (max side 0) under
4 GB. Writes <out-dir>/memory_paste_back.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from emodiff_core.paths import DEMO_SPEECH as SPEECH

from . import common


def speech_of_length(seconds: float, sample_rate_hint: int = 16000):
    """(waveform, sample rate): the shipped speech sample repeated to ``seconds`` (a tone burst train when
    the asset is missing)."""
    from emodiff_core.audio import load_audio_file

    if os.path.isfile(SPEECH):
        wave, sr = load_audio_file(SPEECH)
        wave = np.asarray(wave, np.float32)
        if wave.ndim > 1:
            wave = wave.mean(axis=0) if wave.shape[0] < wave.shape[-1] else wave.mean(axis=1)
    else:
        sr = sample_rate_hint
        t = np.arange(sr) / sr
        wave = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    reps = int(np.ceil(seconds * sr / len(wave)))
    return np.tile(wave, reps)[: int(round(seconds * sr))], sr


def child(args) -> dict:
    """One length, in this process: returns the measurements."""
    from emodiff_core.pipeline import EmotionSpec, emotion_expressions, encode_audio, generate_frames, load_bundle
    from emodiff_core.sampling import DEFAULT

    settings = DEFAULT.replace(steps=args.steps)

    common.set_threads(args.threads)
    device = common.pick_device(args.device)
    bundle = load_bundle(args.checkpoint, device=device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        model_cuda_mb = torch.cuda.memory_allocated() / 2 ** 20
        torch.cuda.reset_peak_memory_stats()
    size = bundle.image_size
    identity = torch.full((3, size, size), 0.5)
    # warm-up: 0.2 s through every stage, so that imported libraries (librosa ...), the mel filter bank and
    # the allocator's first buffers are in the baseline and not counted as growth with length
    warm_wave, warm_sr = speech_of_length(0.2)
    warm = encode_audio(warm_wave, warm_sr, args.fps, bundle.audio_config)
    warm_psi = emotion_expressions(bundle.generator, warm.num_frames, EmotionSpec("happy", 0.7), fps=args.fps)
    generate_frames(bundle.denoiser, identity, warm, warm_psi, settings=settings, device=device)
    del warm, warm_psi
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    wave, sr = speech_of_length(args.seconds)
    rss_before = common.current_rss_mb()
    peak_before = common.peak_rss_mb()
    audio = encode_audio(wave, sr, args.fps, bundle.audio_config)
    n = audio.num_frames
    psi = emotion_expressions(bundle.generator, n, EmotionSpec("happy", 0.7), fps=args.fps)
    start = time.perf_counter()
    frames = generate_frames(bundle.denoiser, identity, audio, psi, settings=settings, device=device)
    seconds = time.perf_counter() - start
    out = {"seconds": args.seconds, "frames": n, "image_size": size, "steps": args.steps,
           "peak_rss_mb": common.peak_rss_mb(), "rss_before_generation_mb": rss_before,
           "peak_rss_before_generation_mb": peak_before,
           "output_frames_mb": frames.numel() * frames.element_size() / 2 ** 20,
           "inputs_mb": (audio.features.numel() * audio.features.element_size() + psi.numel() * psi.element_size()
                         + audio.waveform.nbytes) / 2 ** 20,
           "generation_seconds": seconds, "device": device,
           "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None,
           "model_cuda_mb": model_cuda_mb if cuda else None}
    out["host_growth_mb"] = out["peak_rss_mb"] - rss_before
    return out


def run_lengths(args) -> dict:
    """Every length in its own subprocess; returns the JSON record."""
    from emodiff_core.checkpoint import read_checkpoint  # noqa: F401 - fail early on a bad file

    common.set_threads(args.threads)
    checkpoint = args.checkpoint or common.default_checkpoint()
    if not os.path.isfile(checkpoint):
        raise common.BenchmarkError(f"checkpoint {checkpoint} does not exist")
    device = common.pick_device(args.device)
    lengths = [float(s) for s in args.seconds_list.split(",") if s.strip()]
    runs = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([common.ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    start = time.perf_counter()
    for seconds in lengths:
        cmd = [sys.executable, "-m", "benchmarks.memory", "--child", "--seconds", str(seconds), "--checkpoint",
               checkpoint, "--steps", str(args.steps), "--device", device, "--threads", str(args.threads), "--fps", str(args.fps)]
        proc = subprocess.run(cmd, cwd=common.ROOT, env=env, capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise common.BenchmarkError(f"the {seconds:g} s run failed (exit {proc.returncode}): "
                                        f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        runs.append(json.loads(lines[-1]))
    first, last = runs[0], runs[-1]
    d_out = last["output_frames_mb"] - first["output_frames_mb"]
    slope = (last["host_growth_mb"] - first["host_growth_mb"]) / d_out if d_out > 0 else None
    cuda = [r["peak_cuda_mb"] for r in runs]
    record = {
        "checkpoint": common.shown_path(checkpoint), "checkpoint_step": common.checkpoint_step(checkpoint),
        "device": device, "machine": common.machine_info(device), "threads": args.threads, "steps": args.steps,
        "seconds": [r["seconds"] for r in runs], "frames": [r["frames"] for r in runs],
        "peak_rss_mb": [r["peak_rss_mb"] for r in runs], "peak_cuda_mb": cuda if all(c is not None for c in cuda) else None,
        "rss_before_generation_mb": [r["rss_before_generation_mb"] for r in runs],
        "host_growth_mb": [r["host_growth_mb"] for r in runs],
        "output_frames_mb": [r["output_frames_mb"] for r in runs], "inputs_mb": [r["inputs_mb"] for r in runs],
        "host_growth_per_output_mb": slope,
        "host_growth_minus_output_mb": [r["host_growth_mb"] - r["output_frames_mb"] for r in runs],
        "device_peak_spread_mb": (max(cuda) - min(cuda)) if all(c is not None for c in cuda) else None,
        "generation_seconds": [r["generation_seconds"] for r in runs],
        "seconds_total": time.perf_counter() - start,
    }
    os.makedirs(args.out_dir, exist_ok=True)
    record["json"] = common.write_json(os.path.join(args.out_dir, "memory.json"), record)
    record["plot"] = plot(os.path.join(args.out_dir, "memory.png"), record)
    return record


def plot(path: str, r: dict) -> str:
    plt = common.plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    s = r["seconds"]
    ax.plot(s, r["peak_rss_mb"], "o-", label="peak RSS (host)")
    base = [b + o + i for b, o, i in zip(r["rss_before_generation_mb"], r["output_frames_mb"], r["inputs_mb"])]
    ax.plot(s, base, "x--", label="RSS before generation + output frames + inputs")
    if r.get("peak_cuda_mb"):
        ax.plot(s, r["peak_cuda_mb"], "s-", label="peak CUDA memory")
    ax.set_xlabel("audio length (s)")
    ax.set_ylabel("MB")
    ax.set_title(f"memory vs length ({r['device']}, {r['steps']} steps, step {r.get('checkpoint_step')})")
    ax.legend(fontsize=8)
    return common.save_plot(fig, path)


PHOTO_SIZE = (6000, 4000)          # width, height: a 24-megapixel camera photo
PASTE_GOAL_MB = 4096.0
PASTE_GOAL_RATIO = 1.10


def big_photo(path: str, size=PHOTO_SIZE) -> str:
    """assets/portrait.jpg upscaled to the photo's height and widened by mirroring its sides (the face keeps its
    proportions), written as JPEG to ``path``."""
    import cv2

    from emodiff_core.paths import DEMO_PORTRAIT

    width, height = size
    image = cv2.imread(DEMO_PORTRAIT)
    if image is None:
        raise common.BenchmarkError(f"cannot read {DEMO_PORTRAIT}")
    image = cv2.resize(image, (height, height), interpolation=cv2.INTER_CUBIC)
    pad = max(0, width - height)
    image = cv2.copyMakeBorder(image, 0, 0, pad // 2, pad - pad // 2, cv2.BORDER_REFLECT)
    cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def peak_rss_of(cmd, **kwargs):
    """(exit status, stdout, stderr, peak RSS in MB) of a command run as one child process (os.wait4 reads
    that child's own maximum resident set size)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, **kwargs)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), usage.ru_maxrss / 1024.0


def run_paste_back(args) -> dict:
    """Peak RSS of `generate --paste-back` on a 24 MP photo, per length and max side (see the docstring)."""
    import soundfile

    checkpoint = args.checkpoint or common.default_checkpoint()
    if not os.path.isfile(checkpoint):
        raise common.BenchmarkError(f"checkpoint {checkpoint} does not exist")
    from emodiff_core.checkpoint import read_checkpoint

    superres = "head" if "superres" in read_checkpoint(checkpoint).components else "lanczos2"
    lengths = [float(s) for s in args.seconds_list.split(",") if s.strip()]
    sides = [int(s) for s in args.max_sides.split(",") if s.strip()]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    runs = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        photo = big_photo(os.path.join(folder, "photo.jpg"))
        for seconds in lengths:
            wave, sr = speech_of_length(seconds)
            wav = os.path.join(folder, f"speech_{seconds:g}.wav")
            soundfile.write(wav, wave, sr)
            for side in sides:
                out = os.path.join(folder, f"out_{seconds:g}_{side}.mp4")
                cmd = [sys.executable, "-m", "emodiff_core", "generate", "--checkpoint", checkpoint, "--portrait", photo,
                       "--audio", wav, "--out", out, "--paste-back", "--max-side", str(side), "--superres", superres,
                       "--steps", str(args.steps), "--device", "cpu", "--plot", "none"]
                t0 = time.perf_counter()
                rc, stdout, stderr, peak = peak_rss_of(cmd, cwd=common.ROOT, env=env)
                if rc != 0:
                    raise common.BenchmarkError(f"generate ({seconds:g} s, max side {side}) failed (exit {rc}): "
                                                f"{stderr.strip()[-800:]}")
                report = json.loads([l for l in stdout.splitlines() if l.startswith("{")][-1])
                runs.append({"seconds": seconds, "max_side": side, "frames": report["frames"], "size": report["size"],
                             "peak_rss_mb": peak, "mp4_mb": os.path.getsize(out) / 2 ** 20,
                             "wall_seconds": time.perf_counter() - t0})
                os.remove(out)
    ratios = {}
    for side in sides:
        peaks = [r["peak_rss_mb"] for r in runs if r["max_side"] == side]
        ratios[str(side)] = peaks[-1] / peaks[0]
    full = [r["peak_rss_mb"] for r in runs if r["max_side"] == 0]
    record = {"checkpoint": common.shown_path(checkpoint), "photo": list(PHOTO_SIZE), "steps": args.steps,
              "superres": superres, "runs": runs, "peak_ratio_longest_over_shortest": ratios,
              "goal_full_size_peak_mb": PASTE_GOAL_MB, "goal_ratio": PASTE_GOAL_RATIO,
              "goals_met": {"full_size_under_goal": bool(full) and max(full) < PASTE_GOAL_MB,
                            "flat_in_length": all(v <= PASTE_GOAL_RATIO for v in ratios.values())},
              "machine": common.machine_info("cpu"), "seconds_total": time.perf_counter() - start}
    os.makedirs(args.out_dir, exist_ok=True)
    record["json"] = common.write_json(os.path.join(args.out_dir, "memory_paste_back.json"), record)
    return record


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--checkpoint", default=None, help="bundle with denoiser + expression generator")
    p.add_argument("--seconds-list", "--lengths", dest="seconds_list", default=None,
                   help="audio lengths in seconds, comma-separated (default 2,10,60; with --paste-back 3,30)")
    p.add_argument("--paste-back", action="store_true",
                   help="measure `generate --paste-back` on a 6000x4000 photo instead (see above)")
    p.add_argument("--max-sides", default="0,1920", help="with --paste-back: --max-side values (default 0,1920)")
    p.add_argument("--steps", type=int, default=2, help="DDIM steps (memory does not depend on them; default 2)")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--device", default=None, help="cpu or cuda (default cuda when available)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out-dir", default=common.RESULTS_DIR)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.seconds_list is None:
        args.seconds_list = "3,30" if args.paste_back else "2,10,60"
    try:
        if args.paste_back:
            record = run_paste_back(args)
            common.print_json(record)
            return 0
        record = child(args) if args.child else run_lengths(args)
    except (common.BenchmarkError, ValueError, FileNotFoundError) as exc:
        common.print_json({"error": str(exc)})
        return 2
    common.print_json(record)
    if not args.json and not args.child:
        for k in ("seconds", "peak_rss_mb", "peak_cuda_mb", "host_growth_mb", "output_frames_mb", "host_growth_per_output_mb"):
            print(f"{k:>26}: {common.rounded(record[k])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
