"""What fixing glibc malloc's thresholds (`emodiff_core.cpu_allocator`) does to the demo command on a CPU.

    python -m benchmarks.cpu_allocator --json [--checkpoint PATH] [--pairs 2] [--steps N]

Runs the README's demo command itself (`python -m emodiff_core demo`, which applies `keep_freed_memory` as it starts)
in fresh subprocesses, once as shipped (``tuned``) and once with ``EMODIFF_MALLOC_DEFAULTS=1`` (glibc's defaults),
any ``MALLOC_*`` variables of the caller removed. A busy or throttled machine drifts by tens of percent over minutes,
so the two arms alternate in ABBA order (``--pairs`` such quadruples) and each quadruple is compared within itself.
Reported per run: the command's own sampling and total seconds, the process's user and system CPU seconds, minor
page faults and peak RSS (`os.wait4`), and a digest of the files it wrote; per quadruple the tuned / default ratio
of total seconds, and their median; and whether every run wrote the same files bit for bit (the allocator must not
change a result). Prints ONE JSON line; writes benchmarks/results/cpu_allocator.json (``--out`` to change).
About 20 min with 2 pairs on this project's 2-core CPU.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile

from . import common

ARMS = ("default", "tuned")


def demo_command(args, out_dir: str) -> list:
    """The README's demo command, writing into ``out_dir``."""
    cmd = [sys.executable, "-m", "emodiff_core", "demo", "--out", out_dir, "--checkpoint", args.checkpoint]
    return cmd + (["--steps", str(args.steps)] if args.steps else [])


def run_arm(arm: str, args) -> dict:
    """One demo command in a fresh process, as ``arm`` says; its report, CPU use and the digest of its files."""
    from emodiff_core.cpu_allocator import OPT_OUT_VARIABLE, USER_VARIABLES

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in USER_VARIABLES}
    env.pop(OPT_OUT_VARIABLE, None)
    if arm == "default":
        env[OPT_OUT_VARIABLE] = "1"
    with tempfile.TemporaryDirectory(prefix="emodiff_alloc_") as tmp:
        out_dir, log = os.path.join(tmp, "out"), os.path.join(tmp, "log")
        with open(log + ".out", "w") as out, open(log + ".err", "w") as err:
            proc = subprocess.Popen(demo_command(args, out_dir), env=env, cwd=common.ROOT, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)       # this child's own CPU, faults and peak memory
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            with open(log + ".err") as err:
                raise common.BenchmarkError(f"the {arm} demo run failed:\n{err.read()[-2000:]}")
        with open(log + ".out") as out:
            report = json.loads([line for line in out.read().splitlines() if line.startswith("{")][-1])
        digest = hashlib.sha256()
        for name in sorted(os.listdir(out_dir)):
            with open(os.path.join(out_dir, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return {"arm": arm, "sampling_seconds": report["sampling_seconds"], "total_seconds": report["total_seconds"],
            "user_seconds": round(usage.ru_utime, 2), "system_seconds": round(usage.ru_stime, 2),
            "minor_page_faults": usage.ru_minflt, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "outputs_sha256": digest.hexdigest()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_allocator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="the demo's --checkpoint (default: the demo checkpoint)")
    p.add_argument("--pairs", type=int, default=2, help="ABBA quadruples (default 2: 8 runs)")
    p.add_argument("--steps", type=int, default=None, help="the demo's --steps (default: the demo's own)")
    p.add_argument("--out", default=os.path.join(common.RESULTS_DIR, "cpu_allocator.json"))
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = p.parse_args(argv)
    if args.pairs < 1:
        raise SystemExit("--pairs must be at least 1")
    if args.checkpoint is None:
        from emodiff_core.paths import DEFAULT_CHECKPOINT
        args.checkpoint = DEFAULT_CHECKPOINT
    runs = []
    for _ in range(args.pairs):
        for arm in ("default", "tuned", "tuned", "default"):      # ABBA: a linear drift cancels within a quadruple
            runs.append(run_arm(arm, args))
            print(f"  {arm}: {runs[-1]['total_seconds']} s", file=sys.stderr, flush=True)
    ratios = []
    for q in range(args.pairs):
        quad = runs[4 * q: 4 * q + 4]
        total = {arm: sum(r["total_seconds"] for r in quad if r["arm"] == arm) for arm in ARMS}
        ratios.append(round(total["tuned"] / total["default"], 4))
    result = {"benchmark": "cpu_allocator", "command": "python -m emodiff_core demo",
              "checkpoint": common.shown_path(args.checkpoint), "machine": common.machine_info("cpu"), "runs": runs,
              "tuned_over_default_total_per_quadruple": ratios,
              "tuned_over_default_total_median": statistics.median(ratios),
              "same_outputs": len({r["outputs_sha256"] for r in runs}) == 1}
    from emodiff_core.atomic import atomic_output
    with atomic_output(args.out) as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result) if args.json else f"tuned / default demo time: {ratios} (median "
                                                 f"{result['tuned_over_default_total_median']}); same outputs: "
                                                 f"{result['same_outputs']}; {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
