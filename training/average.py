"""python -m training average: two denoisers of the same shape averaged parameter by parameter.

    python -m training average A.safetensors B.safetensors --weight 0.5 --out AVG.safetensors
    python -m training export AVG.safetensors --base BUNDLE.safetensors ... --out NEW_BUNDLE.safetensors

Writes a denoiser component file holding (1 - weight) A + weight B, parameter by parameter (buffers too;
integer tensors must agree). A and B are component files or bundles with a denoiser of the same config; a
denoiser fine-tuned from another shares its basin, so the average is itself a working denoiser ("model soup",
Wortsman et al. 2022). `export --base` then bundles it with the other components and recommendations of a bundle.

Why it is a training step: the demo's denoiser since 2026-12-06 is such an average, of the no-dropout arm and the
arm fine-tuned from it with the anchored start (checkpoints/MODEL_CARD.md, "Why the average replaced the no-dropout
arm"): halfway in weights the photos keep the first's person and the corpus keeps most of the second's emotion.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

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


def write_average(first: str, second: str, weight: float, out: str) -> str:
    """`average_denoisers` saved as a denoiser component file (written whole or not at all); its info names both."""
    denoiser = average_denoisers(first, second, weight)
    info = read_checkpoint(second).info
    steps = info.get("denoiser.steps") or info.get("steps") or "0"
    save_checkpoint(out, {"denoiser": denoiser},
                    info={"kind": "denoiser", "steps": steps,
                          "data": f"average: {1 - weight:g} x {os.path.basename(first)} + "
                                  f"{weight:g} x {os.path.basename(second)}"})
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("first", help="file with a denoiser (weight 0)")
    p.add_argument("second", help="file with a denoiser of the same config (weight 1)")
    p.add_argument("--weight", type=float, required=True, help="share of the second denoiser, in [0, 1]")
    p.add_argument("--out", required=True, help="the averaged denoiser's component file (.safetensors)")


def run(args) -> int:
    print(f"wrote {write_average(args.first, args.second, args.weight, args.out)}")
    return 0
