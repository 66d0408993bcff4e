"""Ablation: re-inject the portrait everywhere except where the emotion shows.

    python -m benchmarks.region_reinjection --portraits DIR --audio FILE [--checkpoint PATH] [--seconds 10] \\
        [--emotions happy,sad,surprised] [--region expression|eyes|mouth] [--keep 1] --out DIR

At its recommended settings the real checkpoint re-injects the portrait as the oldest motion frame at every frame
(`generate_frames`' ``reinject_identity_every`` 1): that keeps the person (99 % of the frames) but feeds the photo's
own expression back into every frame, and the asked emotion fades (FER sad 6 %, surprised 38 %). Re-injecting every
second frame keeps more of the emotion and less of the person (benchmarks/README.md). This is the same dial in
space instead of time: the re-injected frame is the portrait outside a region of the aligned crop and, inside it,
the frame generated for the slot (what the slot holds without re-injection), mixed by ``--keep`` (1: all of the
generated frame; 0: the portrait, i.e. plain re-injection). Regions (`region_weight`, on the face template that
`align_face` puts every face on): ``eyes`` (brows, lids, the forehead just above), ``mouth``
(`faces.mouth_region_weight`: lips, corners, jaw opening), ``expression`` (both). The ReferenceNet still reads the
portrait; the first frames (before one is generated) re-inject the portrait itself.

Each run is `python -m training evaluate-portraits` with `pipeline.generate_frames` given that ``reinject_source``
(`benchmarks.portrait_ablation`). Measured on 2026-12-03: benchmarks/README.md, "Re-injecting the portrait outside
the expression".
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict

import numpy as np
import torch

from emodiff_core.faces import mouth_region_weight, template_landmarks

from .portrait_ablation import evaluate_with_patches, portrait_parser

REGIONS = ("expression", "eyes", "mouth")
BROWS_AND_EYES = list(range(17, 27)) + list(range(36, 48))


def eyes_region_weight(height: int, width: int) -> np.ndarray:
    """float32 [H, W] in [0, 1]: 1 over the template's brows and eyes (an ellipse on their 22 points, 1.25 x their
    half-width across, 2 x their half-height down and up, its centre raised by 0.2 of that height for the forehead's
    creases), fading to 0 from squared radius 1 to 1.6 (the falloff of `faces.mouth_region_weight`)."""
    points = template_landmarks((height, width))[BROWS_AND_EYES].astype(np.float64)
    centre = points.mean(axis=0)
    half = (points.max(axis=0) - points.min(axis=0)) / 2.0
    radius_x, radius_y = 1.25 * half[0], 2.0 * half[1]
    y, x = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    squared = ((x - centre[0]) / radius_x) ** 2 + ((y - centre[1] + 0.2 * radius_y) / radius_y) ** 2
    return np.clip((1.6 - squared) / 0.6, 0.0, 1.0).astype(np.float32)


def region_weight(region: str, size: int) -> torch.Tensor:
    """[S, S] in [0, 1]: where the generated frame stands in for the portrait in the re-injected slot."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {', '.join(REGIONS)}, got {region!r}")
    parts = {"eyes": [eyes_region_weight(size, size)], "mouth": [mouth_region_weight(size, size)]}
    parts["expression"] = parts["eyes"] + parts["mouth"]
    return torch.from_numpy(np.maximum.reduce(parts[region]))


class RegionSource:
    """`generate_frames`' ``reinject_source`` and a progress callback in one: the callback keeps the last finished
    frames (frame index -> [B, 3, S, S] in [0, 1]; the few a motion slot can stand for, so memory stays bounded),
    the source returns the portrait with the region taken from the frame the slot stands for (the portrait until
    that frame exists)."""

    KEEP_FRAMES = 4

    def __init__(self, identity: torch.Tensor, weight: torch.Tensor, keep: float, callback=None):
        self.identity = identity.float().cpu()                         # [B, 3, S, S] in [0, 1]
        self.weight = (float(keep) * weight.float())[None, None]       # [1, 1, S, S]
        self.callback = callback
        self.frames: Dict[int, torch.Tensor] = {}

    def progress(self, info) -> None:
        if info.image is not None:
            self.frames[info.frame] = info.image.float().cpu()
            for old in [k for k in self.frames if k <= info.frame - self.KEEP_FRAMES]:
                del self.frames[old]
        if self.callback is not None:
            self.callback(info)

    def __call__(self, index: int) -> torch.Tensor:
        generated = self.frames.get(index)
        if generated is None:
            return self.identity
        return torch.lerp(self.identity, generated, self.weight)


def build_parser() -> argparse.ArgumentParser:
    p = portrait_parser("python -m benchmarks.region_reinjection", __doc__)
    p.add_argument("--region", default="expression", choices=REGIONS)
    p.add_argument("--keep", type=float, default=1.0,
                   help="share of the generated frame inside the region (1: all of it; 0: plain re-injection)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not 0.0 <= args.keep <= 1.0:
        raise SystemExit(f"--keep must be in [0, 1], got {args.keep}")

    def with_region(generate):
        def generate_with_region(denoiser, identity, audio, expression, **k):
            size = identity.shape[-1]
            source = RegionSource(identity, region_weight(args.region, size), args.keep, k.pop("callback", None))
            return generate(denoiser, identity, audio, expression, reinject_source=source, callback=source.progress,
                            **k)
        return generate_with_region

    evaluate_with_patches(args, f"the portrait outside the {args.region} region, the generated frame inside it "
                                f"(keep {args.keep:g})", {"generate_frames": with_region})
    return 0


if __name__ == "__main__":
    sys.exit(main())
