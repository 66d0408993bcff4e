"""Weight averaging of two denoisers of the same shape: does a point between two checkpoints escape their trade-off?

    python -m benchmarks.denoiser_average A.safetensors B.safetensors --weight 0.5 --out AVG.safetensors
    python -m training export AVG.safetensors --base B.safetensors --out BUNDLE.safetensors

Writes a denoiser component file holding (1 - weight) A + weight B, parameter by parameter (buffers too;
integer tensors must agree). A and B are component files or bundles with a denoiser of the same config; a
denoiser fine-tuned from another (the real checkpoint's from the emotion checkpoint's) shares its basin, so the
average is itself a working denoiser ("model soup", Wortsman et al. 2022). `training export --base` then bundles it
with the other components and recommendations of a bundle.

The question it answers here (2026-12-04, benchmarks/README.md, "Can one checkpoint replace the demo?"): the
emotion checkpoint is better than the demo on the procedural rollouts but loses the person on photos; the real
checkpoint keeps photos but loses rollout SSIM and identity. Halfway (weight 0.5 towards the real one) the rollouts
are the emotion checkpoint's and the photos lose the person on surprise: the trade-off is in the weights' line.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch

from emodiff_core.checkpoint import CheckpointError, load_components, read_checkpoint, save_checkpoint


def average_denoisers(first: str, second: str, weight: float):
    """The first file's denoiser with every floating tensor of its state replaced by (1 - weight) first + weight
    second (computed in float64); non-floating tensors must be equal. The configs must agree but for
    ``expression_dropout``, which says how a denoiser was trained (> 0: the null condition of classifier-free guidance
    was learned), not what its weights compute; the average keeps the smaller, claiming guidance only as far as both
    learned it."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    a = load_components(first, ["denoiser"])["denoiser"]
    b = load_components(second, ["denoiser"])["denoiser"]
    if dataclasses.replace(a.config, expression_dropout=0.0) != dataclasses.replace(b.config, expression_dropout=0.0):
        raise CheckpointError(f"{second}: its denoiser's config differs from {first}'s; only denoisers of the same "
                              "shape can be averaged")
    a.config = dataclasses.replace(a.config, expression_dropout=min(a.config.expression_dropout,
                                                                     b.config.expression_dropout))
    state_b = b.state_dict()
    averaged = {}
    for key, value in a.state_dict().items():
        other = state_b[key]
        if value.is_floating_point():
            averaged[key] = ((1.0 - weight) * value.double() + weight * other.double()).to(value.dtype)
        elif torch.equal(value, other):
            averaged[key] = value
        else:
            raise CheckpointError(f"{key}: integer tensors differ between the two denoisers; cannot average")
    a.load_state_dict(averaged, strict=True)
    return a


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.denoiser_average", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", help="file with a denoiser (weight 0)")
    p.add_argument("second", help="file with a denoiser of the same config (weight 1)")
    p.add_argument("--weight", type=float, required=True, help="share of the second denoiser, in [0, 1]")
    p.add_argument("--out", required=True, help="the averaged denoiser's component file (.safetensors)")
    args = p.parse_args(argv)
    try:
        denoiser = average_denoisers(args.first, args.second, args.weight)
        info = read_checkpoint(args.second).info
        steps = info.get("denoiser.steps") or info.get("steps") or "0"
        save_checkpoint(args.out, {"denoiser": denoiser},
                        info={"kind": "denoiser", "steps": steps,
                              "data": f"average: {1 - args.weight:g} x {os.path.basename(args.first)} + "
                                      f"{args.weight:g} x {os.path.basename(args.second)}"})
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
