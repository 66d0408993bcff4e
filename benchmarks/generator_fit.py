"""How far one expression generator's sequences are from another's at the same noise, per emotion.

    python -m benchmarks.generator_fit --checkpoint B --against A [--seeds 32] [--first-seed 2] [--frames 300] \\
        [--skip-frames 0] [--out FILE]

A fine-tune that keeps an emotion's G(y, z) (the support course's kept components, `training.train_generator`) is
held to the start's sequences only through the training's noises; at the noise a video draws it is off by what the fit
left. Photographs' videos draw one noise per seed for every portrait and voice (`training.evaluate_portraits`), so an
arm's emotion on photos is its G(y, z) at seeds 0 and 1 alone: this reads the fit over other seeds (``--first-seed``,
2 by default, keeps those two out). Per emotion at k = 1 (neutral: e_n, Eq. 14's null sequence), B's sequence less A's
over the named components (the ones the demo-family denoisers read), frames ``--skip-frames`` .. ``--frames``: the
root mean square over seeds, frames and components, and per component the mean (a bias every video shares) and the
root mean square (bias and per-noise error together). Prints one JSON line of the root mean squares; writes the whole
to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from emodiff_core.atomic import atomic_output


def sequence_differences(generator, against, emotions: Sequence[str], seeds: Sequence[int], frames: int,
                         skip_frames: int = 0, components: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Per emotion [seeds, frames - skip_frames, components]: ``generator``'s sequence less ``against``'s at each
    seed's noise (`pipeline.emotion_expression_pair` at k = 1; for "neutral" that is e_n)."""
    from emodiff_core.pipeline import EmotionSpec, PipelineError, emotion_expression_pair

    if not 0 <= skip_frames < frames:
        raise PipelineError(f"skip_frames must be in [0, frames), got {skip_frames} with frames {frames}")
    out = {}
    for emotion in emotions:
        rows = [(emotion_expression_pair(generator, frames, EmotionSpec(emotion, 1.0), seed=seed)[0]
                 - emotion_expression_pair(against, frames, EmotionSpec(emotion, 1.0), seed=seed)[0]).numpy()
                for seed in seeds]
        out[emotion] = np.stack(rows)[:, skip_frames:, :components]
    return out


def fit_report(differences: Dict[str, np.ndarray]) -> Dict[str, dict]:
    """Per emotion: ``rms`` over everything, ``mean`` and ``rms_per_component`` per component."""
    return {e: {"rms": float(np.sqrt((d ** 2).mean())), "mean": d.mean(axis=(0, 1)).astype(float).round(4).tolist(),
                "rms_per_component": np.sqrt((d ** 2).mean(axis=(0, 1))).astype(float).round(4).tolist()}
            for e, d in differences.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="the bundle whose generator is measured (B)")
    p.add_argument("--against", required=True, help="the bundle whose generator it should match (A)")
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--first-seed", type=int, default=2, help="the photographs' videos draw seeds 0 and 1")
    p.add_argument("--frames", type=int, default=300, help="frames per sequence (a 10 s video has 300)")
    p.add_argument("--skip-frames", type=int, default=0, help="frames left out of the measure at the start")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.seeds < 1 or args.first_seed < 0:
        p.error(f"--seeds must be >= 1 and --first-seed >= 0, got {args.seeds} and {args.first_seed}")
    from emodiff_core.checkpoint import CheckpointError, load_components
    from emodiff_core.emotions import EMOTIONS
    from emodiff_core.facemodel import EXPRESSION_COMPONENTS
    from emodiff_core.pipeline import PipelineError

    torch.set_num_threads(1)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    try:
        generator, against = (load_components(path, ["expression_generator"])["expression_generator"].eval()
                              for path in (args.checkpoint, args.against))
        with torch.no_grad():
            report = fit_report(sequence_differences(generator, against, EMOTIONS, seeds, args.frames,
                                                     args.skip_frames, len(EXPRESSION_COMPONENTS)))
    except (CheckpointError, OSError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({e: round(r["rms"], 4) for e, r in report.items()}))
    if args.out:
        full = {"components": list(EXPRESSION_COMPONENTS), "seeds": [seeds.start, seeds.stop - 1],
                "frames": args.frames, "skip_frames": args.skip_frames, "per_emotion": report}
        with atomic_output(args.out) as tmp, open(tmp, "w") as f:
            json.dump(full, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
