"""Two models' emotion-control grids, paired by emotion: what the standing rule reads before a generator swap.

    python -m training evaluate --checkpoints A ... --control-start-mouth rig --json > a.json
    python -m training evaluate --checkpoints B ... (the same options) --json > b.json
    python -m benchmarks.grid_paired a.json b.json [--json OUT]

Both reports are `training evaluate` grids (`emotion_control`) measured with the same options, so each emotion's
videos are the same identities, voices and seeds in both and an emotion is a pair. Per measure read per emotion
(the hard judge's Spearman of k against the asked emotion's probability, the same with every `--also-judge`, the
hard judge's intensity head, and FER on the k = 1 frames) it gives B - A as the mean of the per-emotion
differences with its standard error over emotions (sd / sqrt(n)); a measure is ``worse`` when that mean is lower
by more than two SE. The share of videos read as asked at k = 1 (hard judge and every other judge) is ``worse``
when B's is lower at all; the share of neutral videos read neutral at k = 0 (`neutral_k0_seeds`, every judge) when
B's is under issue 9's 90 % (the row the neutral seeds are run for; at 3 seeds a video is 8 points). Prints one JSON
line (and writes it, indented, to --json); reports that are not grids, or grids of different emotions, are errors.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Mapping, Optional

from training.compare_portraits import paired_stats

from .common import print_json, write_json

NEUTRAL_K0_TARGET = 0.9     # issue 9: judged neutral at k = 0 in at least 90 % of the neutral videos


def _grid(path: str) -> Mapping:
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    grid = report.get("emotion_control")
    if not isinstance(grid, Mapping) or "spearman_per_emotion" not in grid:
        raise ValueError(f"{path} has no emotion_control grid; make it with `python -m training evaluate ... "
                         f"--json` (the grid runs unless --control-identities 0)")
    return grid


def paired_over_emotions(before: Mapping[str, float], after: Mapping[str, float]) -> dict:
    """``after`` minus ``before`` per emotion (the emotions both hold a number for), the mean difference and its SE
    over emotions (`compare_portraits.paired_stats`, the photographs' rule's arithmetic). ValueError when the two
    name different emotions: then they are not the same grid."""
    if set(before) != set(after):
        raise ValueError(f"the two grids differ in emotions: {sorted(before)} vs {sorted(after)}")
    emotions = [e for e in before if before[e] is not None and after[e] is not None]
    if len(emotions) < 2:
        raise ValueError(f"a paired difference over emotions needs at least two measured ones, got {emotions}")
    stats = paired_stats([(before[e], after[e]) for e in emotions])
    return {"before": stats["baseline"], "after": stats["candidate"], "difference": stats["difference"],
            "se": stats["se"], "per_emotion": {e: after[e] - before[e] for e in emotions},
            "lower_by_two_se": stats["difference"] < -2 * stats["se"]}


def _shares(before: Mapping, after: Mapping, key: str, floor: Optional[float] = None) -> dict:
    """A share both reports hold under ``key``; ``worse`` when B's is lower than A's, or, given ``floor``, under it."""
    worse = after[key] < before[key] if floor is None else after[key] < floor
    return {"before": before[key], "after": after[key], "worse": worse}


def compare_grids(before: Mapping, after: Mapping) -> dict:
    """The comparison `main` prints, from two `emotion_control` blocks."""
    judges = sorted(set(before.get("by_judge", {})) & set(after.get("by_judge", {})))
    per_emotion: Dict[str, dict] = {
        "spearman": paired_over_emotions(before["spearman_per_emotion"], after["spearman_per_emotion"]),
        "intensity_head_spearman": paired_over_emotions(before["judged_intensity_spearman"],
                                                        after["judged_intensity_spearman"]),
        "fer_k1": paired_over_emotions(before["fer"]["per_emotion_k1"], after["fer"]["per_emotion_k1"]),
    }
    for judge in judges:
        per_emotion[f"spearman[{judge}]"] = paired_over_emotions(before["by_judge"][judge]["spearman_per_emotion"],
                                                                 after["by_judge"][judge]["spearman_per_emotion"])
    shares = {"video_accuracy_k1": _shares(before, after, "video_accuracy_k1")}
    for judge in judges:
        shares[f"video_accuracy_k1[{judge}]"] = _shares(before["by_judge"][judge], after["by_judge"][judge],
                                                         "video_accuracy_k1")
    if "neutral_k0_seeds" in before and "neutral_k0_seeds" in after:
        shares["neutral_share_k0"] = _shares(before["neutral_k0_seeds"], after["neutral_k0_seeds"], "neutral_share",
                                             NEUTRAL_K0_TARGET)
        for judge in judges:
            shares[f"neutral_share_k0[{judge}]"] = _shares(before["by_judge"][judge]["neutral_k0_seeds"],
                                                           after["by_judge"][judge]["neutral_k0_seeds"],
                                                           "neutral_share", NEUTRAL_K0_TARGET)
    worse: List[str] = [name for name, v in per_emotion.items() if v["lower_by_two_se"]]
    worse += [name for name, v in shares.items() if v["worse"]]
    return {"per_emotion": per_emotion, "shares": shares, "worse": worse}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before", help="evaluate --json report with the grid of the first model (A)")
    p.add_argument("after", help="evaluate --json report of the second model (B), the same options")
    p.add_argument("--json", default=None, help="also write the comparison to this file")
    args = p.parse_args(argv)
    try:
        result = compare_grids(_grid(args.before), _grid(args.after))
    except (OSError, ValueError, KeyError) as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        print(f"error: {detail}; both files must be grids of the same `training evaluate` options", file=sys.stderr)
        return 2
    if args.json:
        write_json(args.json, result)
    print_json(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
