"""Ablation: start every frame's denoising from a warp of the portrait at that frame's expression.

    python -m benchmarks.warp_anchor --portraits DIR --audio FILE --checkpoint PATH --portrait-identity neutral \\
        [--seconds 4] [--emotions sad,surprised] [--mouth voice|closed] [--strength 1] [--region face|mouth] \\
        [--start-noise 0.5] --out DIR

From the previous frame (`--start-mouth previous`, the pack's start until 2026-12-07) frame i starts from frame i-1
diffused to 0.5 T, where the network takes about two thirds of the expression from x_t and a third from psi
(benchmarks/README.md, "Training the first step of sampling"), so the emotion settles at the share it renders. A
real-texture training example's x_t is its target diffused, and that target is a warp of a photo following psi
(`training.corpus.realface`); the warp of a held-out photo at the asked expression reads sad in two thirds of its
frames with the person kept (`benchmarks.warp_reference`). Here x_t is that warp, for the frame being sampled
(`anchors.rig_source`: e_y's emotion and blinks, the mouth from the voice as the corpus drives it, or closed but for
the emotion's own part), diffused to the start noise; the identity, the motion frames (the video's own previous
frames) and psi are as the pack gives them. So the network starts where its training examples start, and its
conditions and the previous frames decide what it keeps of the warp. ``--strength`` scales the warp's emotion (e_n +
s (e_y - e_n)); psi is left as asked. ``--region mouth`` starts from the previous frame with the warp inside the
mouth region of the aligned crop (`faces.mouth_region_weight`): the warp's mouth, the rest of the face as the video
has rendered it; the pack's `--start-mouth rig` since 2026-12-07 (`anchors.start_anchor`), which this ablation
measured first.

Each run is `python -m training evaluate-portraits` with `pipeline.generate_frames` given that ``anchor_source``
(`benchmarks.portrait_ablation`). Measured 2026-12-07: benchmarks/README.md, "Every frame started from the warp".
"""
from __future__ import annotations

import sys

from emodiff_core.anchors import RIG_MOUTHS, mouth_from, rig_source

from .portrait_ablation import evaluate_with_patches, portrait_parser, remembering_portrait

REGIONS = ("face", "mouth")


def anchor_from(warp, region: str, size: int):
    """`generate_frames`' ``anchor_source``: the warp of frame i (``face``), or the previous frame with the warp
    inside the aligned crop's mouth region (``mouth``: `anchors.mouth_from`, the pack's ``rig`` start)."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {', '.join(REGIONS)}, got {region!r}")
    if region == "face":
        return lambda index, previous: warp(index)
    return mouth_from(warp, size)


def build_parser():
    p = portrait_parser("python -m benchmarks.warp_anchor", __doc__)
    p.add_argument("--mouth", default="voice", choices=RIG_MOUTHS,
                   help="the warp's mouth: from the voice (default, as the corpus drives it) or closed")
    p.add_argument("--strength", type=float, default=1.0,
                   help="how much of the asked emotion the warp shows (e_n + strength (e_y - e_n); default 1)")
    p.add_argument("--region", default="face", choices=REGIONS,
                   help="face (default): every frame starts from the warp; mouth: from the previous frame with the "
                        "warp's mouth region")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.start_mouth != "previous":
        parser.error("this ablation sets what each frame starts from itself; leave --start-mouth at previous")
    last = {}

    def with_anchor(generate):
        def generate_from_warp(denoiser, identity, audio, expression, **k):
            size = identity.shape[-1]
            warp = rig_source(last["portrait"], audio, expression, k["neutral_expression"], size, args.mouth,
                              args.strength)
            k["anchor_source"] = anchor_from(warp, args.region, size)
            return generate(denoiser, identity, audio, expression, **k)
        return generate_from_warp

    where = "the warp" if args.region == "face" else "the previous frame with the warp's mouth region"
    evaluate_with_patches(args, f"every frame started from {where} (the portrait at its expression, strength "
                                f"{args.strength:g}, mouth {args.mouth}) diffused to the start noise",
                          {"prepare_portrait": remembering_portrait(last), "generate_frames": with_anchor})
    return 0


if __name__ == "__main__":
    sys.exit(main())
