"""The expression generator's neutral sequence against the corpus' neutral clips: its start-up swing and its bias.

    python -m benchmarks.generator_neutral --checkpoint checkpoints/emodiffhead_demo.safetensors \
        --data CORPUS --out benchmarks/results/generator_neutral_startup.json

At k = 0 a video's expression is the generator's neutral sequence e_n (Eq. 14), so whatever e_n does that a neutral
face does not is drawn on every neutral video, and on every emotional one beneath the emotion. Two things are
measured over many noise seeds (the seeds are what differ between users' videos; what survives their mean is the
generator's own): per frame, the mean of e_n over the seeds, against the mean of the corpus' neutral training clips
at the same frame (the start-up swing: the first frames of every sequence move the same way whatever the seed); and
past ``--settle`` frames, the mean over seeds and frames against the corpus' neutral mean (the bias: a neutral face
that is not neutral). Only the named components are reported (those the demo-family denoisers read).
Prints one JSON line; writes ``--out`` when given.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, Sequence

import numpy as np
import torch

from emodiff_core.atomic import atomic_output


def generator_neutral(generator, frames: int, seeds: int, components: int) -> np.ndarray:
    """[seeds, frames, components]: the neutral sequence e_n the pipeline draws (`emotion_expression_pair`, the
    paper's mouth) for noise seeds 0 .. seeds - 1."""
    from emodiff_core.pipeline import EmotionSpec, emotion_expression_pair

    return np.stack([emotion_expression_pair(generator, frames, EmotionSpec("neutral", 0.0), seed=s)[0].numpy()
                     [:, :components] for s in range(seeds)])


def neutral_profile(generated: np.ndarray, corpus_clips: Sequence[np.ndarray], settle: int) -> Dict[str, object]:
    """The swing and the bias of ``generated`` ([seeds, frames, D]) against the corpus' neutral clips ([T_i, D]
    each). ``swing``: per component, the largest |mean over seeds at frame t - settled mean| over t < settle;
    ``bias``: settled mean (frames >= settle) minus the corpus' neutral mean; ``settled_std``: the spread of the
    settled frames over seeds and frames, the scale both are read against."""
    generated = np.asarray(generated, np.float64)
    if generated.ndim != 3 or generated.shape[1] <= settle:
        raise ValueError(f"need [seeds, frames > settle={settle}, components] sequences, got shape {generated.shape}")
    if not corpus_clips:
        raise ValueError("no neutral corpus clips to compare with")
    per_frame = generated.mean(axis=0)                                   # [frames, D]
    settled = generated[:, settle:]
    settled_mean = settled.mean(axis=(0, 1))
    length = min(len(c) for c in corpus_clips)
    corpus = np.stack([np.asarray(c, np.float64)[:length, :generated.shape[2]] for c in corpus_clips])
    corpus_mean = corpus.mean(axis=(0, 1))
    return {"per_frame_mean": per_frame[:settle + 1].round(4).tolist(),
            "settled_mean": settled_mean.round(4).tolist(),
            "settled_std": settled.std(axis=(0, 1)).round(4).tolist(),
            "swing": np.abs(per_frame[:settle] - settled_mean).max(axis=0).round(4).tolist(),
            "swing_frame": np.abs(per_frame[:settle] - settled_mean).argmax(axis=0).tolist(),
            "corpus_per_frame_mean": corpus.mean(axis=0)[:settle + 1].round(4).tolist(),
            "corpus_mean": corpus_mean.round(4).tolist(),
            "corpus_std": corpus.std(axis=(0, 1)).round(4).tolist(),
            "bias": (settled_mean - corpus_mean).round(4).tolist(),
            "corpus_clips": len(corpus_clips), "corpus_frames": int(length)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a bundle with an expression generator")
    p.add_argument("--data", required=True, help="a corpus folder (its neutral clips of --split are the reference)")
    p.add_argument("--split", default="train")
    p.add_argument("--seeds", type=int, default=64)
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--settle", type=int, default=30, help="frames after which a sequence counts as settled")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from emodiff_core.checkpoint import CheckpointError, load_components
    from emodiff_core.facemodel import EXPRESSION_COMPONENTS
    from training.evaluate import labelled_clip_psi

    torch.set_num_threads(1)
    try:
        generator = load_components(args.checkpoint, ["expression_generator"])["expression_generator"].eval()
        # the neutral clips only: no emotional clip reaches an infinite minimum intensity
        clips = [psi for _, psi in labelled_clip_psi(args.data, args.split, min_intensity=float("inf"))]
        report = neutral_profile(generator_neutral(generator, args.frames, args.seeds, len(EXPRESSION_COMPONENTS)),
                                 clips, args.settle)
    except (CheckpointError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {"components": list(EXPRESSION_COMPONENTS), "seeds": args.seeds, "frames": args.frames,
              "settle": args.settle, "split": args.split, **report}
    print(json.dumps({k: report[k] for k in ("components", "swing", "swing_frame", "bias", "settled_std")}))
    if args.out:
        with atomic_output(args.out) as tmp, open(tmp, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
