"""Two models' FLIE over several emotions, paired by identity: the difference and its standard error.

    python -m training evaluate --checkpoints BUNDLE_A ... --flie-emotion all --flie-clips 4 --json > a.json
    python -m training evaluate --checkpoints BUNDLE_B ... (the same options) --json > b.json
    python -m benchmarks.flie_paired a.json b.json

FLIE's videos of one face are one draw: over four test identities one emotion's FLIE ranged from 1.7 to 7.0 by
identity (the first demo's contempt; the no-dropout arm's happy 2.4 to 9.5, benchmarks/README.md), so two models
measured on the same identities are compared identity by identity (`evaluate.paired_flie_difference`:
B minus A on the mean over emotions, with a leave-one-identity-out jackknife SE of the difference). Prints one JSON
line; a report without `videos.flie_over_emotions` (one emotion asked, or FLIE undefined) is an error.
"""
from __future__ import annotations

import argparse
import json
import sys

from .common import flie_report_block


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before", help="evaluate --json report of the first model (A)")
    p.add_argument("after", help="evaluate --json report of the second model (B), same FLIE options")
    args = p.parse_args(argv)
    from training.evaluate import paired_flie_difference

    try:
        reports = []
        for path in (args.before, args.after):
            over = flie_report_block(path, "flie_over_emotions")
            if "flie_pooled_error" in over:
                raise ValueError(f"{path}: FLIE is undefined there ({over['flie_pooled_error']})")
            reports.append(over)
        print(json.dumps(paired_flie_difference(*reports)))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
