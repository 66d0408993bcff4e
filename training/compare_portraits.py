"""python -m training compare-portraits: rank two checkpoints on real photos over SEVERAL voices (and seeds).

    python -m training compare-portraits --baseline A_vk5qi/report.json A_other/report.json \
        --candidate B_vk5qi/report.json B_other/report.json [--json out.json]

Each ``report.json`` is one `evaluate-portraits` run (one checkpoint, one recording, one seed). Reports are paired
by run: the voice (the recording's file name) and the seed. The two checkpoints must have been measured on the same
voices and seeds, photos, emotions, seconds, sampling and re-injection period, or the comparison is refused with what
differs. Several seeds of one voice pool as several runs (each named "VOICE seed N" in the result; by the voice alone
where every report has one seed): one seed's dozen videos do not tell a cost of a point or two from the noise of
the sampling (benchmarks/README.md, "`--mouth speech` as the recommendation, over two seeds").

Why: lip sync on the held-out photos swings more with the voice than with the checkpoint (the real checkpoint:
r 0.50 with one held-out recording, 0.31 with another), so a ship decision from one voice is noise. The
measures kept by the shipping rule (README: "at least as good on every kept measure") are averaged over the
runs first (each voice and seed counts once, whatever its number of frames):

- ``face_share``, ``same_person_share``, ``sharpness``, ``lipsync_r``: the report's summary (mean over videos);
- ``fer_<emotion>``: the share of frames the real-face classifier reads as the asked emotion, per non-neutral
  emotion (issue 10 sets no FER target for neutral).

``--allow sampling`` (or ``reinject_identity_every``, ``superres``, ``mouth``, ``start_mouth``, ``expression_noise``)
lets those differ, to rank two ways of running one checkpoint (e.g. start noise 0.5 against 0.7) by the same rule.

The verdict ``candidate_at_least_as_good`` is True when the candidate's run-mean is >= the baseline's minus
``--tolerance`` (default 0) on every kept measure; ``worse`` lists the measures where it is not.

``--paired K`` decides by the demo's standing rule instead (checkpoints/MODEL_CARD.md): the same kept measures,
paired video by video (run, photo, emotion; FER on the videos of its emotion), worse only where the candidate's mean
is below the baseline's by more than K standard errors of the paired differences (K = 2 in the rule). A difference
of means over a dozen videos moves by a few points between seeds; pairing removes what the photo and voice share.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from emodiff_core.sampling import SamplingError, SamplingSettings

SUMMARY_MEASURES = ("face_share", "same_person_share", "sharpness", "lipsync_r")
# what must agree between two reports for their numbers to be comparable (the voice and the seed pair them: `run_of`)
SETTINGS_KEYS = ("emotions", "intensity", "sampling", "reinject_identity_every", "superres", "mouth", "start_mouth",
                 "expression_noise")
# what may differ when the comparison is between two ways of running ONE checkpoint (--allow)
GENERATION_SETTINGS = ("sampling", "reinject_identity_every", "superres", "mouth", "start_mouth", "expression_noise")


class ComparisonError(ValueError):
    """Reports that cannot be compared, said plainly."""


def read_report(path: str) -> dict:
    if not os.path.isfile(path):
        raise ComparisonError(f"report not found: {path} (give evaluate-portraits' report.json files)")
    with open(path) as f:
        try:
            report = json.load(f)
        except json.JSONDecodeError as exc:
            raise ComparisonError(f"{path} is not JSON: {exc}") from None
    missing = [k for k in ("summary", "audio", "portraits") if k not in report]
    if missing:
        raise ComparisonError(f"{path} is not an evaluate-portraits report (no {', '.join(missing)})")
    if not report.get("complete", True):
        raise ComparisonError(f"{path} is from a run that did not finish (complete: false); rerun it")
    return report


def voice_of(report: Mapping) -> str:
    return str(report["audio"]["file"])


def run_of(report: Mapping) -> Tuple[str, int]:
    """(voice, seed): what pairs a baseline report with a candidate report."""
    return voice_of(report), int(report.get("seed", 0))


def kept_measures(report: Mapping) -> Dict[str, Optional[float]]:
    """The measures the shipping rule keeps, from one report's summary."""
    summary = report["summary"]
    out = {key: summary.get(key) for key in SUMMARY_MEASURES}
    for emotion, share in (summary.get("fer_reads_asked") or {}).items():
        if emotion != "neutral":
            out[f"fer_{emotion}"] = share
    return out


def _by_run(reports: Sequence[Mapping], side: str) -> Dict[Tuple[str, int], Mapping]:
    out: Dict[Tuple[str, int], Mapping] = {}
    for report in reports:
        run = run_of(report)
        if run in out:
            raise ComparisonError(f"two {side} reports are for the same voice {run[0]!r} and seed {run[1]}; give "
                                  "one per voice and seed")
        out[run] = report
    return out


def _setting(report: Mapping, key: str):
    """A report's setting; sampling as `SamplingSettings`, so that a report written before a sampling option
    existed (without its key) equals one that has the option's default; likewise the mouth policy, the start and the
    expression generator's noise."""
    value = report.get(key)
    if key == "mouth" and value is None:      # reports from before the mouth policy: the generator's mouth
        return "generator"
    if key == "start_mouth" and value is None:      # reports from before the start policy: the previous frame
        return "previous"
    if key == "expression_noise" and value is None:     # reports from before the option: one draw per seed
        return "shared"
    if key == "sampling" and isinstance(value, Mapping):
        try:
            return SamplingSettings(**value)
        except (TypeError, SamplingError):
            return value
    return value


def _check_comparable(a: Mapping, b: Mapping, run: str, allow: Sequence[str] = ()) -> None:
    differ = [k for k in SETTINGS_KEYS if k not in allow and _setting(a, k) != _setting(b, k)]
    if sorted(a["portraits"]) != sorted(b["portraits"]):
        differ.append("portraits")
    if a["audio"].get("seconds_used") != b["audio"].get("seconds_used"):
        differ.append("seconds")
    if differ:
        raise ComparisonError(f"the reports for {run!r} differ in {', '.join(differ)}: rerun "
                              "evaluate-portraits with the same options for both checkpoints")


def _mean(values) -> Optional[float]:
    vals = [float(v) for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def _checked_reports(baseline: Sequence[Mapping], candidate: Sequence[Mapping], allow: Sequence[str]):
    """Both sides' reports keyed by run name, and the run names, once every refusal (module docstring) has been
    checked. A run is named by its voice, and by its voice and seed where the reports hold more than one seed."""
    if not baseline or not candidate:
        raise ComparisonError("give at least one report for --baseline and one for --candidate")
    unknown = [k for k in allow if k not in GENERATION_SETTINGS]
    if unknown:
        raise ComparisonError(f"--allow takes {', '.join(GENERATION_SETTINGS)}; not {', '.join(unknown)}")
    base, cand = _by_run(baseline, "baseline"), _by_run(candidate, "candidate")
    names = _run_names(set(base) | set(cand))      # both sides, so that runs differing only by seed say so
    if set(base) != set(cand):
        raise ComparisonError(f"the checkpoints were measured on different voices or seeds: baseline "
                              f"{sorted(names[r] for r in base)}, candidate {sorted(names[r] for r in cand)}")
    base = {names[run]: report for run, report in base.items()}
    cand = {names[run]: report for run, report in cand.items()}
    runs = sorted(base)
    for run in runs:
        _check_comparable(base[run], cand[run], run, allow)
    return base, cand, runs


def _run_names(runs: Iterable[Tuple[str, int]]) -> Dict[Tuple[str, int], str]:
    """Each (voice, seed) run's name: the voice, or "VOICE seed N" where the runs hold more than one seed."""
    runs = set(runs)
    one_seed = len({seed for _, seed in runs}) == 1
    return {(voice, seed): voice if one_seed else f"{voice} seed {seed}" for voice, seed in runs}


def _allowed_settings(base: Mapping, cand: Mapping, runs: Sequence[str], allow: Sequence[str]) -> dict:
    return {side: {k: reports[runs[0]].get(k) for k in allow} for side, reports in (("baseline", base),
                                                                                       ("candidate", cand))}


def compare(baseline: Sequence[Mapping], candidate: Sequence[Mapping], tolerance: float = 0.0,
            allow: Sequence[str] = ()) -> dict:
    """Per-run and run-mean kept measures of both checkpoints, and the verdict (module docstring); the result's
    ``voices``, ``per_voice`` and ``mean_over_voices`` are the runs (a run is a voice where one seed was measured).
    ``allow``: generation settings (`GENERATION_SETTINGS`) that may differ, to compare two ways of sampling one
    checkpoint; the settings of both sides are then part of the result."""
    if tolerance < 0:
        raise ComparisonError(f"--tolerance must be >= 0, got {tolerance}")
    base, cand, runs = _checked_reports(baseline, candidate, allow)
    per_run = {run: {"baseline": kept_measures(base[run]), "candidate": kept_measures(cand[run])} for run in runs}
    keys: List[str] = list(per_run[runs[0]]["baseline"])
    mean = {side: {key: _mean(per_run[run][side].get(key) for run in runs) for key in keys}
            for side in ("baseline", "candidate")}
    worse = [key for key in keys if mean["baseline"][key] is not None and
             (mean["candidate"][key] is None or mean["candidate"][key] < mean["baseline"][key] - tolerance)]
    result = {"voices": runs, "tolerance": tolerance, "per_voice": per_run, "mean_over_voices": mean,
              "worse": worse, "candidate_at_least_as_good": not worse}
    if allow:
        result["settings"] = _allowed_settings(base, cand, runs, allow)
    return result


def video_measures(report: Mapping, run: str) -> Dict[tuple, Dict[str, float]]:
    """The kept measures of each video of one report, keyed (``run``: its run's name, photo file name, emotion):
    the summary measures, and ``fer_<emotion>`` (the share of its frames read as the asked emotion) for a
    non-neutral one."""
    out: Dict[tuple, Dict[str, float]] = {}
    for photo in report.get("results") or []:
        for emotion, video in (photo.get("videos") or {}).items():
            measures = {key: video[key] for key in SUMMARY_MEASURES if video.get(key) is not None}
            asked = (video.get("fer") or {}).get("asked_share")
            if emotion != "neutral" and asked is not None:
                measures[f"fer_{emotion}"] = asked
            out[(run, os.path.basename(str(photo["file"])), emotion)] = measures
    return out


def paired_stats(pairs: Sequence[tuple]) -> dict:
    """(baseline, candidate) pairs: both means, the mean difference, its SE (sd / sqrt(n); None for one pair), how many
    are higher. Unrounded, so that a verdict near the bar is not decided by the rounding (`_rounded` is for the
    report)."""
    base = np.array([b for b, _ in pairs], np.float64)
    diff = np.array([c for _, c in pairs], np.float64) - base
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None
    return {"baseline": float(base.mean()), "candidate": float((base + diff).mean()), "difference": float(diff.mean()),
            "se": se, "higher": int((diff > 0).sum()), "videos": len(diff)}


def _rounded(stats: Optional[Mapping]) -> Optional[dict]:
    return None if stats is None else {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}


def compare_paired(baseline: Sequence[Mapping], candidate: Sequence[Mapping], standard_errors: float = 2.0,
                   allow: Sequence[str] = ()) -> dict:
    """The kept measures paired video by video over every run (module docstring, ``--paired``): per measure the
    two means, the mean difference (candidate minus baseline), its standard error, how many videos the candidate
    is higher on; ``by_emotion``: the summary measures on each emotion's videos alone (to read, not to decide).
    ``worse``: the measures whose difference is below -``standard_errors`` SE (or below 0 where one video leaves
    no SE)."""
    if standard_errors < 0:
        raise ComparisonError(f"--paired takes a number of standard errors >= 0, got {standard_errors}")
    base, cand, runs = _checked_reports(baseline, candidate, allow)
    before, after = {}, {}
    for run in runs:
        before.update(video_measures(base[run], run))
        after.update(video_measures(cand[run], run))
    shared = sorted(set(before) & set(after))
    if not shared:
        raise ComparisonError("the reports share no video (run, photo, emotion): a paired comparison needs "
                              "evaluate-portraits reports with per-video results of the same photos and emotions")

    def stats(keys, measure):
        pairs = [(before[k][measure], after[k][measure]) for k in keys
                 if measure in before[k] and measure in after[k]]
        return paired_stats(pairs) if pairs else None

    measures = sorted({m for k in shared for m in before[k]}, key=lambda m: (m.startswith("fer_"), m))
    paired = {m: s for m in measures if (s := stats(shared, m)) is not None}
    worse = [m for m, s in paired.items()
             if s["difference"] < -standard_errors * (s["se"] if s["se"] is not None else 0.0)]
    emotions = sorted({k[2] for k in shared})
    by_emotion = {e: {m: _rounded(stats([k for k in shared if k[2] == e], m)) for m in SUMMARY_MEASURES}
                  for e in emotions}
    paired = {m: _rounded(st) for m, st in paired.items()}
    result = {"voices": runs, "videos": len(shared), "standard_errors": standard_errors, "paired": paired,
              "by_emotion": by_emotion, "worse": worse, "candidate_at_least_as_good": not worse}
    if allow:
        result["settings"] = _allowed_settings(base, cand, runs, allow)
    return result


def format_table(result: Mapping) -> str:
    voices = result["voices"]
    head = ["measure"] + [f"{v} base/cand" for v in voices] + ["mean base/cand", ""]
    rows = [head]
    for key in result["mean_over_voices"]["baseline"]:
        row = [key]
        for v in voices:
            pv = result["per_voice"][v]
            row.append(f"{_fmt(pv['baseline'][key])} / {_fmt(pv['candidate'][key])}")
        m = result["mean_over_voices"]
        row += [f"{_fmt(m['baseline'][key])} / {_fmt(m['candidate'][key])}", "worse" if key in result["worse"] else ""]
        rows.append(row)
    verdict = "candidate at least as good on every kept measure" if result["candidate_at_least_as_good"] else \
        f"candidate worse on: {', '.join(result['worse'])}"
    return _aligned(rows, verdict)


def format_paired_table(result: Mapping) -> str:
    rows = [["measure", "baseline", "candidate", "difference (SE)", "higher", ""]]
    for key, st in result["paired"].items():
        se = "-" if st["se"] is None else f"{st['se']:.3f}"
        rows.append([key, _fmt(st["baseline"]), _fmt(st["candidate"]), f"{st['difference']:+.3f} ({se})",
                     f"{st['higher']} of {st['videos']}", "worse" if key in result["worse"] else ""])
    k = result["standard_errors"]
    verdict = (f"candidate within {k:g} SE of the baseline on every kept measure ({result['videos']} paired videos)"
               if result["candidate_at_least_as_good"] else
               f"candidate lower by more than {k:g} SE on: {', '.join(result['worse'])}")
    return _aligned(rows, verdict)


def _aligned(rows: Sequence[Sequence[str]], verdict: str) -> str:
    """The rows as left-aligned columns, then the verdict line."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines + [verdict])


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", nargs="+", required=True,
                   help="report.json files of the checkpoint to beat, one per voice and seed")
    p.add_argument("--candidate", nargs="+", required=True,
                   help="report.json files of the candidate, the same voices and seeds")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="a kept measure counts as worse only below baseline - TOLERANCE (default 0)")
    p.add_argument("--allow", nargs="+", default=(), choices=GENERATION_SETTINGS,
                   help="generation settings that may differ (to compare two ways of sampling ONE checkpoint)")
    p.add_argument("--paired", type=float, default=None, metavar="K",
                   help="decide video by video: worse only where lower by more than K standard errors of the paired "
                        "differences (the demo's rule: 2)")
    p.add_argument("--json", default=None, help="also write the comparison here")


def run(args) -> int:
    baseline, candidate = [read_report(p) for p in args.baseline], [read_report(p) for p in args.candidate]
    if args.paired is None:
        result = compare(baseline, candidate, tolerance=args.tolerance, allow=args.allow)
        print(format_table(result))
    elif args.tolerance:
        raise ComparisonError("--paired decides by standard errors; --tolerance is for the comparison of means")
    else:
        result = compare_paired(baseline, candidate, standard_errors=args.paired, allow=args.allow)
        print(format_paired_table(result))
    if args.json:
        from emodiff_core.atomic import atomic_output

        with atomic_output(args.json) as tmp:
            with open(tmp, "w") as f:
                json.dump(result, f, indent=1)
                f.write("\n")
    return 0
