"""emodiff_core.cpu_allocator: glibc malloc keeps freed blocks in the process after `keep_freed_memory`, only
where it is ours to change, and the command line applies it."""
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from emodiff_core.cpu_allocator import OPT_OUT_VARIABLE, TUNING, keep_freed_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# allocate and free 64 MiB in 8 MiB blocks, 20 times; print the minor page faults it took
CHURN = textwrap.dedent("""
    import resource, sys
    import numpy as np
    if sys.argv[1] == "tuned":
        from emodiff_core.cpu_allocator import keep_freed_memory
        assert keep_freed_memory(), "not applied"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        blocks = [np.ones(1 << 20) for _ in range(8)]
        del blocks
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.pop(OPT_OUT_VARIABLE, None)
    env["PYTHONPATH"] = ROOT
    return env


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    faults = {arm: int(subprocess.run([sys.executable, "-c", CHURN, arm], env=_clean_env(), check=True,
                                      capture_output=True, text=True).stdout)
              for arm in ("default", "tuned")}
    # 20 rounds of 64 MiB are ~330k pages if every round faulted them in; tuned, only the first round does
    assert faults["tuned"] * 4 < faults["default"], faults


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_applies_the_documented_values_on_glibc():
    done = keep_freed_memory(environ={})
    assert done == {name: value for name, (_, value) in TUNING.items()}
    assert done["M_MMAP_THRESHOLD"] == 32 << 20 and done["M_TRIM_THRESHOLD"] == 1 << 30


@pytest.mark.parametrize("environ", [{"MALLOC_TRIM_THRESHOLD_": "131072"}, {"GLIBC_TUNABLES": "glibc.malloc.x=1"},
                                     {OPT_OUT_VARIABLE: "1"}])
def test_leaves_malloc_alone_when_the_user_chose(environ):
    assert keep_freed_memory(environ=environ) == {}


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_the_command_line_applies_it(tmp_path):
    # the entry point applies it before the command runs: seen from a command that fails fast (--help exits 0)
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent("""
        import runpy, sys
        import emodiff_core.cpu_allocator as a
        calls = []
        original = a.keep_freed_memory
        a.keep_freed_memory = lambda *k: calls.append(1) or original(*k)
        sys.argv = ["emodiff_core", "--help"]
        try:
            runpy.run_module("emodiff_core", run_name="__main__")
        except SystemExit:
            pass
        print("applied", len(calls), file=sys.stderr)
    """))
    done = subprocess.run([sys.executable, str(probe)], env=_clean_env(), capture_output=True, text=True)
    assert "applied 1" in done.stderr, done.stderr[-2000:]
