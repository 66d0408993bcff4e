"""Reference: the real-texture corpus' own rendering of each video that evaluate-portraits asks a model for.

    python -m benchmarks.warp_reference --portraits DIR --audio FILE [--checkpoint PATH] [--seconds 10] \\
        [--emotions neutral,happy,sad,surprised] [--mouth voice|closed] --out DIR

The real checkpoint learned photos from the real-texture corpus (`training.corpus.realface`): a photo warped by a
rig fitted to its 68 points, following psi. What that renderer makes of a held-out photo, asked for the same
expression sequence (the checkpoint's expression generator, same seed and intensity) with the mouth driven by the
same voice as the corpus drives it (`emodiff_core.anchors.rig_psi`, ``voice``), is the video the model
was trained to reproduce. Here it stands in for the sampled frames (`pipeline.generate_frames` replaced), so every
measure of evaluate-portraits (face found, same person, sharpness through the checkpoint's SR head, lip sync, FER)
is read off the training target itself: the ceiling a model trained on this corpus can be expected to reach, as
``identity_ground_truth`` is for the procedural rollouts (`training.evaluate.evaluate_videos`). A warp that shows
surprise moves dlib's descriptor too; a measure the reference does not reach (FER sad) asks for more than the
corpus shows. No network is sampled; the run takes seconds per video. Measured 2026-12-04: benchmarks/README.md,
"The corpus' own rendering as the reference".
"""
from __future__ import annotations

import sys

import torch

from emodiff_core.anchors import RIG_MOUTHS, rig_source

from .portrait_ablation import evaluate_with_patches, portrait_parser, remembering_portrait


def reference_frames(portrait, audio, expression: torch.Tensor, neutral: torch.Tensor, size: int,
                     mouth: str = "voice") -> torch.Tensor:
    """[N, B, 3, S, S] in [0, 1]: the portrait's rig rendered at each video's expression sequence (``expression``,
    ``neutral``: [B, N, 50]) with the voice's mouth drive (``closed``: the emotion's own mouth only, no speech), the
    layout `generate_frames` returns."""
    source = rig_source(portrait, audio, expression, neutral, size, mouth)
    return torch.stack([source(i) for i in range(expression.shape[1])])


def main(argv=None) -> int:
    p = portrait_parser("python -m benchmarks.warp_reference", __doc__)
    p.add_argument("--mouth", default="voice", choices=RIG_MOUTHS,
                   help="voice (default: the corpus' drive, the training target) or closed (what the emotion alone "
                        "does to the mouth: which part of a reading the open mouth makes)")
    args = p.parse_args(argv)
    last = {}

    def render_instead(_generate):
        def render(denoiser, identity, audio, expression, **k):    # evaluate_portraits passes [B, N, 50] sequences
            return reference_frames(last["portrait"], audio, expression, k["neutral_expression"], identity.shape[-1],
                                    args.mouth)
        return render

    mouth = ("mouth driven by the voice (the training target)" if args.mouth == "voice" else
             "mouth closed but for the emotion's own part of it")
    evaluate_with_patches(args, f"nothing sampled: the real-texture corpus' warp of the portrait at the asked "
                                f"expression, {mouth}",
                          {"prepare_portrait": remembering_portrait(last), "generate_frames": render_instead})
    return 0


if __name__ == "__main__":
    sys.exit(main())
