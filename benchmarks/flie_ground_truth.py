"""The FLIE floor of a psi reader: the corpus' own linear rendering of FLIE's clips, pooled as a model's FLIE is.

    python -m benchmarks.flie_ground_truth --data DIR --regressor FILE [--checkpoint BUNDLE] [--split test] \\
        [--clips 8] [--levels 6] [--frames 16] [--emotions all]

`training evaluate` reads FLIE (issue 9) from the psi a regressor reads off the generated videos at k = 0, 1/L, .., 1.
The corpus renders psi exactly, and linearly in k, so its own rendering of the same clips at the same levels, read by
the same regressor, scores what the regressor's errors alone cost: a model that drew every asked expression exactly
would score this (`evaluate.ground_truth_flie_over`: one set per clip, the first clip of the first ``--clips``
identities as FLIE's videos take them, over the components the bundle's denoiser reads, pooled per emotion and
averaged over emotions with evaluate's functions). evaluate reports the first clip's figure beside a model's
(``flie_edit_dims_ground_truth``); this pools every clip the way the model's figure is pooled, so the two compare.
Prints one JSON line: the mean over emotions with its identity-jackknife SE, each emotion's pooled FLIE and its
per-level response along the asked change (`benchmarks.flie_response`).
"""
from __future__ import annotations

import argparse
import json
import sys

from . import common


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="corpus folder (clips with counterfactual twins)")
    p.add_argument("--regressor", required=True, help="checkpoint holding the psi regressor that reads the frames")
    p.add_argument("--checkpoint", default=None, help="bundle whose denoiser sets the image size and the components "
                   "read (default: the first bundle in checkpoints/, the demo)")
    p.add_argument("--split", default="test")
    p.add_argument("--clips", type=int, default=8,
                   help="identities (the first clip of each), as evaluate's --flie-clips")
    p.add_argument("--levels", type=int, default=6, help="intervals between k = 0 and 1, as --flie-levels")
    p.add_argument("--frames", type=int, default=16, help="frames per set (evaluate's FLIE videos have 16)")
    p.add_argument("--emotions", default="all", help="as --flie-emotion")
    args = p.parse_args(argv)
    from emodiff_core import metrics_video as mv
    from emodiff_core.checkpoint import load_components
    from training.evaluate import flie_emotions, ground_truth_flie_over

    from .flie_response import intensity_response

    try:
        if args.clips < 3:
            raise ValueError("--clips must be at least 3 (the identity jackknife)")
        emotions = flie_emotions(args.emotions)
        denoiser = load_components(args.checkpoint or common.default_checkpoint(), ["denoiser"])["denoiser"]
        extractor = mv.PsiExtractor(load_components(args.regressor, ["regressor"])["regressor"])
        out = ground_truth_flie_over(args.data, args.split, args.clips, emotions, args.levels, args.frames,
                                     denoiser.config.image_size, extractor, mv.condition_dims(denoiser.config))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    over = out["flie_over_emotions"]
    print(json.dumps({"data": args.data, "split": args.split, "clips": args.clips, "levels": args.levels,
                      "frames": args.frames, "identities": over["identities"],
                      "flie_edit_dims_pooled_mean": over.get("flie_edit_dims_pooled_mean"),
                      "jackknife_se": over.get("jackknife_se"),
                      "per_emotion": {e: {"flie_edit_dims_pooled": r.get("flie_edit_dims_pooled"),
                                          **intensity_response(r)} for e, r in out["flie_per_emotion"].items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
