"""What keeping freed memory in the process (`emodiff_core.cpu_allocator`) does to sampling speed on a CPU.

    python -m benchmarks.cpu_allocator --json [--checkpoint PATH] [--seconds 4] [--pairs 2] [--threads 2]

The workload is the demo command's sampling (`python -m emodiff_core demo`: the shipped photo and the procedural
portrait in one batch, the demo speech's first --seconds, the checkpoint's recommended sampling, neutral identity,
happy at k = 1), run in fresh subprocesses (the allocator's settings hold for a whole process): one with glibc's
defaults, one with `keep_freed_memory` applied first. A busy or throttled machine drifts by tens of percent over
minutes, so the two arms alternate in ABBA order (``--pairs`` such quadruples) and each pair is compared within
itself; reported per run: wall seconds of sampling, user and system CPU seconds, minor page faults, peak RSS; and
per pair the tuned / default wall-time ratio, with the median over pairs. Prints ONE JSON line; writes
benchmarks/results/cpu_allocator.json (``--out`` to change).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from . import common

ARMS = ("default", "tuned")


def sampling_workload(checkpoint: str, seconds: float) -> None:
    """The demo's sampling, as `emodiff_core.cli.demo` does it, on the first ``seconds`` of the demo speech."""
    import dataclasses

    import torch

    from emodiff_core import pipeline as pl
    from emodiff_core.audio import load_audio_file
    from emodiff_core.cli import load_image, load_models
    from emodiff_core.paths import DEMO_PORTRAIT, DEMO_PORTRAIT_PROCEDURAL, DEMO_SPEECH
    from emodiff_core.sampling import DEFAULT

    models = load_models(checkpoint)
    settings = dataclasses.replace(DEFAULT, guidance=models.recommended_guidance,
                                   audio_guidance=models.recommended_audio_guidance)
    size = models.denoiser.config.image_size
    wave, sr = load_audio_file(DEMO_SPEECH)
    audio = pl.encode_audio(wave[..., : int(round(seconds * sr))], sr, 30, models.denoiser.config.audio)
    mouth_level = pl.resolve_mouth_level("auto", models.denoiser, models.recommended_mouth)
    psi, neutral = pl.emotion_expression_pair(models.generator, audio.num_frames, pl.EmotionSpec("happy", 1.0),
                                              fps=audio.fps, seed=0, mouth_level=mouth_level)
    portraits = [pl.prepare_portrait(load_image(p), size) for p in (DEMO_PORTRAIT, DEMO_PORTRAIT_PROCEDURAL)]
    crops = torch.cat([pl.identity_crops(p, pl.DEFAULT_PORTRAIT_IDENTITY, neutral) for p in portraits])
    pl.generate_frames(models.denoiser, crops, audio, psi, settings=settings, seed=0, neutral_expression=neutral,
                       reinject_identity_every=models.recommended_reinject_identity_every,
                       **pl.silence_handling(audio))


def child(arm: str, checkpoint: str, seconds: float, threads: int) -> dict:
    """One run in this process: the allocator as ``arm`` says, then the timed workload."""
    from emodiff_core.cpu_allocator import keep_freed_memory

    tuned = keep_freed_memory() if arm == "tuned" else {}
    if arm == "tuned" and not tuned:
        raise common.BenchmarkError("the allocator could not be tuned here (not glibc, or MALLOC_* variables set); "
                                    "nothing to compare")
    common.set_threads(threads)
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    sampling_workload(checkpoint, seconds)
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return {"arm": arm, "sampling_seconds": round(wall, 2),
            "user_seconds": round(after.ru_utime - before.ru_utime, 2),
            "system_seconds": round(after.ru_stime - before.ru_stime, 2),
            "minor_page_faults": after.ru_minflt - before.ru_minflt, "peak_rss_mb": round(after.ru_maxrss / 1024, 1),
            "mallopt": tuned}


def run_arm(arm: str, args) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    cmd = [sys.executable, "-m", "benchmarks.cpu_allocator", "--child", arm, "--checkpoint", args.checkpoint,
           "--seconds", str(args.seconds), "--threads", str(args.threads)]
    done = subprocess.run(cmd, env=env, cwd=common.ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise common.BenchmarkError(f"the {arm} run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_allocator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="default: the demo checkpoint")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds of the demo speech to sample (default 4)")
    p.add_argument("--pairs", type=int, default=2, help="ABBA quadruples (default 2: 8 runs)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=os.path.join(common.RESULTS_DIR, "cpu_allocator.json"))
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.checkpoint is None:
        from emodiff_core.paths import DEFAULT_CHECKPOINT
        args.checkpoint = DEFAULT_CHECKPOINT
    if args.child:
        print(json.dumps(child(args.child, args.checkpoint, args.seconds, args.threads)))
        return 0
    if args.pairs < 1:
        raise SystemExit("--pairs must be at least 1")
    runs = []
    for _ in range(args.pairs):
        for arm in ("default", "tuned", "tuned", "default"):      # ABBA: a linear drift cancels within a quadruple
            runs.append(run_arm(arm, args))
            print(f"  {arm}: {runs[-1]['sampling_seconds']} s", file=sys.stderr, flush=True)
    ratios = []
    for q in range(args.pairs):
        quad = runs[4 * q: 4 * q + 4]
        wall = {arm: sum(r["sampling_seconds"] for r in quad if r["arm"] == arm) for arm in ARMS}
        ratios.append(round(wall["tuned"] / wall["default"], 4))
    result = {"benchmark": "cpu_allocator", "checkpoint": common.shown_path(args.checkpoint),
              "seconds": args.seconds, "machine": common.machine_info("cpu"), "runs": runs,
              "tuned_over_default_wall_per_quadruple": ratios,
              "tuned_over_default_wall_median": statistics.median(ratios)}
    from emodiff_core.atomic import atomic_output
    with atomic_output(args.out) as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result) if args.json else f"tuned / default wall time: {ratios} (median "
                                                 f"{result['tuned_over_default_wall_median']}); {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
