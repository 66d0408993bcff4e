"""Ablation: sample from the portrait warped to a neutral face, the state training knows.

    python -m benchmarks.neutral_portrait --portraits DIR --audio FILE [--checkpoint PATH] [--seconds 10] \\
        [--emotions happy,sad,surprised] --out DIR

(``--checkpoint``: the real checkpoint by default, as the other portrait ablations; the demo is
checkpoints/emodiffhead_demo.safetensors.)

A real-texture training example's identity frame is its photo warped to the neutral twin's geometry (the rig of
`training.corpus.realface` rendered at neutral psi: the photo's texture, its own expression taken out of the
geometry). A user's photograph arrives with its own expression in it, and at the demo's recommendation it is both
the ReferenceNet's input and the frame re-injected at every step. On a smiling portrait the sad video reads sad in
0-1 % of its frames (benchmarks/README.md, the real-texture emotion-weight arm). Here the identity crop is that
portrait's rig (`warp_reinjection.rig_from_portrait`) rendered at each video's neutral sequence's first frame with
the mouth closed (`warp_reinjection.anchor_psi` of e_n against itself): the photo's texture at a neutral geometry,
given to the network as the identity and so re-injected too. The person is still measured against the photograph.

Each run is `python -m training evaluate-portraits` with `pipeline.generate_frames` given that identity
(`benchmarks.portrait_ablation`). Not in the pack: the rig lives in `training/`.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from .portrait_ablation import evaluate_with_patches, portrait_parser, remembering_portrait
from .warp_reinjection import anchor_psi, rig_from_portrait, warp_source


def neutral_identity(portrait, audio, neutral: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 3, S, S] in [0, 1]: the portrait's rig at each video's neutral sequence (``neutral`` [B, N, 50]) first
    frame, mouth closed (the speech components at e_n - e_n = 0)."""
    rig = rig_from_portrait(portrait.image, portrait.landmarks)
    psi = np.stack([anchor_psi(n, n, audio.waveform, audio.fps, audio.config.sample_rate, "closed")[:1]
                    for n in neutral.numpy()])
    return warp_source(rig, psi, size)(0)


def main(argv=None) -> int:
    args = portrait_parser("python -m benchmarks.neutral_portrait", __doc__).parse_args(argv)
    last = {}

    def with_neutral_portrait(generate):
        def generate_from_neutral(denoiser, identity, audio, expression, **k):
            warped = neutral_identity(last["portrait"], audio, k["neutral_expression"], identity.shape[-1])
            return generate(denoiser, warped.to(identity.dtype), audio, expression, **k)
        return generate_from_neutral

    evaluate_with_patches(args, "the identity crop (and so the re-injected frame) is the portrait warped to the "
                                "neutral sequence's first frame, mouth closed",
                          {"prepare_portrait": remembering_portrait(last), "generate_frames": with_neutral_portrait})
    return 0


if __name__ == "__main__":
    sys.exit(main())
