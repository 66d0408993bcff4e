"""Ablation: re-inject a warp of the portrait that shows the asked expression, instead of the portrait itself.

    python -m benchmarks.warp_reinjection --portraits DIR --audio FILE [--checkpoint PATH] [--seconds 10] \\
        [--emotions happy,sad,surprised] [--mouth voice|closed] [--strength 1] [--psi-strength 1] --out DIR

(``--checkpoint``: the real checkpoint by default, the one whose recommendation this ablation is about.)

At its recommended settings the real checkpoint re-injects the portrait as the oldest motion frame at every frame
(`generate_frames`' ``reinject_identity_every``): that keeps the person (99 % of the frames) but feeds the photo's
own expression back into every frame, and the asked emotion fades (FER sad 6 %, surprised 37 %). The real-texture
corpus the checkpoint was trained on animates photos with a warp that follows psi (`training.corpus.realface`); its
motion frames were such warps. Here the re-injected frame is that warp of the portrait itself, for the frame the
slot stands for: the expression generator's e_y (the asked emotion, blinks) with the mouth components replaced by
the emotion's own part of them (e_y - e_n) plus, with ``--mouth voice``, the corpus' mouth drive computed from the
voice (`emodiff_core.audio.mouth_drive`: jaw, width, lip press), or nothing (``closed``). The ReferenceNet still
reads the portrait. ``--psi-strength`` scales the emotion the network is asked for in the same way (e_n + s (e_y -
e_n)), the warp keeping its own ``--strength``: with the full warp the network renders the warp's emotion on top of
psi's, and this asks for less of it from psi.

Each run is `python -m training evaluate-portraits` with `pipeline.generate_frames` given that ``reinject_source``
(`benchmarks.portrait_ablation`). Not in the pack: at every setting measured it costs the person somewhere (at warp
and psi strength 0.75, the best of a sweep, the smiling photos' happy videos; benchmarks/README.md, "The full
measurement of the warp at (0.75, 0.75)"). Measured on 2026-12-03 and 2026-12-06: benchmarks/README.md,
"Re-injecting a warp that shows the emotion" and what follows it.
"""
from __future__ import annotations

import argparse
import sys

import torch

from emodiff_core.anchors import RIG_MOUTHS, rig_source

from .portrait_ablation import evaluate_with_patches, portrait_parser, remembering_portrait


def scaled_emotion(expression: torch.Tensor, neutral: torch.Tensor, strength: float) -> torch.Tensor:
    """e_n + strength (e_y - e_n): the asked emotion at part strength; at 1 e_y itself, bit for bit."""
    return expression if strength == 1 else neutral + float(strength) * (expression - neutral)


def build_parser() -> argparse.ArgumentParser:
    p = portrait_parser("python -m benchmarks.warp_reinjection", __doc__)
    p.add_argument("--mouth", default="voice", choices=RIG_MOUTHS, help="the warp's mouth: from the voice or closed")
    p.add_argument("--strength", type=float, default=1.0,
                   help="how much of the asked emotion the warp shows (e_n + strength (e_y - e_n); default 1)")
    p.add_argument("--psi-strength", type=float, default=1.0,
                   help="how much of the asked emotion the network's psi holds (e_n + s (e_y - e_n); default 1)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    last = {}

    def with_warp(generate):
        def generate_with_warp(denoiser, identity, audio, expression, **k):
            source = rig_source(last["portrait"], audio, expression, k["neutral_expression"], identity.shape[-1],
                                args.mouth, args.strength)
            expression = scaled_emotion(expression, k["neutral_expression"], args.psi_strength)
            return generate(denoiser, identity, audio, expression, reinject_source=source, **k)
        return generate_with_warp

    evaluate_with_patches(args, f"warp of the portrait at the asked expression (strength {args.strength:g}), "
                                f"mouth {args.mouth}; the network's psi at strength {args.psi_strength:g}",
                          {"prepare_portrait": remembering_portrait(last), "generate_frames": with_warp})
    return 0


if __name__ == "__main__":
    sys.exit(main())
