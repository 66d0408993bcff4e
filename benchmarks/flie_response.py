"""How far the rendered expression follows the asked intensity, level by level, from FLIE's stored level means.

    python -m benchmarks.flie_response REPORT.json [REPORT.json ...]

FLIE (`metrics.flie`) sums the unevenness of every component's steps, which over a few identities swings with the
components the edit barely moves (its identity SE is often larger than a change between two models). This reads the same
videos along one line: each level's psi, pooled over the report's clips and seeds (as `pooled_flie` pools them),
projected on the asked change from k = 0 to k = 1 (the level conditions' difference) over the components FLIE sums (the
report's ``edit_dims_pooled``; every stored one without it), so 0 is the k = 0 video's expression and 1 the asked edit
drawn in full. Per emotion of `videos.flie_per_emotion`: ``response`` per level, ``steps`` (each level's step over the
mean step: 1 everywhere for a response linear in k) and ``unevenness`` (the largest |step - 1|). A response that
under-draws small k and saturates near k = 1 reads steps below 1 at both ends and above it in the middle. Prints one
JSON line per report.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .common import flie_report_block


def intensity_response(per_emotion_report: dict) -> dict:
    """``response``, ``steps`` and ``unevenness`` (module docstring) of one emotion's `flie_over_clips` report."""
    psi = np.mean([np.asarray(s, np.float64) for clip in per_emotion_report["level_psi_means_per_clip_seed"]
                   for s in clip], axis=0)
    asked = np.mean([np.asarray(s, np.float64) for clip in per_emotion_report["level_condition_means_per_clip_seed"]
                     for s in clip], axis=0)
    dims = per_emotion_report.get("edit_dims_pooled")     # the components FLIE sums over (`pooled_flie`)
    if dims is not None:
        psi, asked = psi[:, dims], asked[:, dims]
    change = asked[-1] - asked[0]
    if not np.any(change):
        raise ValueError("the asked expression does not change between the first and the last level")
    response = (psi - psi[0]) @ change / (change @ change)
    steps = np.diff(response)
    if steps.mean() <= 0:
        raise ValueError("the rendered expression does not move along the asked change")
    steps = steps / steps.mean()
    return {"response": [round(float(v), 4) for v in response], "steps": [round(float(v), 3) for v in steps],
            "unevenness": round(float(np.abs(steps - 1).max()), 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", help="evaluate --json reports with FLIE over several emotions")
    args = p.parse_args(argv)
    try:
        for path in args.reports:
            per_emotion = flie_report_block(path, "flie_per_emotion")
            print(json.dumps({"report": path, **{e: intensity_response(r) for e, r in per_emotion.items()}}))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
