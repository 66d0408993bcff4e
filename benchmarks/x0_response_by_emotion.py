"""The emotion probes (`training.probes`: x0-response, swap loss) per emotion, on one corpus split's twins.

    python -m benchmarks.x0_response_by_emotion --data DIR [--checkpoint PATH] [--split val] [--examples 24] \\
        [--out FILE] [--json]

The training log and `python -m training evaluate` pool the probes over every emotion; a model that renders one
emotion less than the others (sad on photos, issue 10) hides there. Here each emotion gets its own batch of
``--examples`` twin examples (`DenoiserData.probe_batch` with ``emotion``: identity and motion frames from the
neutral twin, so the emotion can only come from psi), the same seed for each. Reported per emotion: the probes,
the emotion's own mean pixel change (target minus neutral twin, 0-255; how much there is to render) and the count
(0, and nothing else, for an emotion whose clips in the split are all below k = 0.6).
A real-texture corpus (``--data`` from `python -m training corpus --real-faces`) shows the photos' case.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import common


def probes_by_emotion(denoiser, data_dir: str, split: str, examples: int, seed: int = 0) -> dict:
    from emodiff_core.diffusion import GaussianDiffusion
    from training.data import ClipFormatError, DenoiserData, TwinOptions
    from training.probes import PROBE_DRAW_SEED, emotion_probes

    data = DenoiserData(data_dir, denoiser.config, split, twins=TwinOptions(share=1.0))
    if not data.has_twins:
        raise common.BenchmarkError(f"{data_dir} has no twins in split {split!r}: the probes need a corpus rendered "
                                    "with them (`python -m training corpus`)")
    diffusion = GaussianDiffusion.from_config(denoiser.config.diffusion)
    emotions = sorted({c.meta.get("emotion") for c in data.clips} - {None, "neutral"})
    out = {}
    for emotion in emotions:
        try:
            batch = data.probe_batch(np.random.default_rng([seed, PROBE_DRAW_SEED]), examples, emotion=emotion)
        except ClipFormatError:         # this emotion's clips are all weak (k < 0.6) or change emotion
            out[emotion] = {"examples": 0}
            continue
        change = float((batch["x0"] - batch["twin"]).abs().mean()) * 127.5       # [-1, 1] -> 0-255
        out[emotion] = {**{k: round(v, 4) for k, v in emotion_probes(denoiser, diffusion, batch, seed=seed).items()},
                        "change_0_255": round(change, 3), "examples": len(batch["x0"])}
        print(f"  {emotion}: {out[emotion]}", file=sys.stderr, flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.x0_response_by_emotion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a corpus folder with twins")
    p.add_argument("--checkpoint", default=None, help="a bundle with a denoiser (default: the demo checkpoint)")
    p.add_argument("--split", default="val")
    p.add_argument("--examples", type=int, default=24, help="twin examples per emotion (default 24)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the result here as JSON")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = p.parse_args(argv)
    if args.examples < 1:
        raise SystemExit("--examples must be at least 1")
    from emodiff_core.checkpoint import load_components
    from emodiff_core.paths import DEFAULT_CHECKPOINT

    checkpoint = args.checkpoint or DEFAULT_CHECKPOINT
    common.set_threads(args.threads)
    denoiser = load_components(checkpoint, ["denoiser"])["denoiser"]
    result = {"benchmark": "x0_response_by_emotion", "checkpoint": common.shown_path(checkpoint),
              "data": os.path.basename(os.path.normpath(args.data)), "split": args.split, "seed": args.seed,
              "per_emotion": probes_by_emotion(denoiser, args.data, args.split, args.examples, args.seed)}
    if args.out:
        from emodiff_core.atomic import atomic_output
        with atomic_output(args.out) as tmp, open(tmp, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result) if args.json else json.dumps(result["per_emotion"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
