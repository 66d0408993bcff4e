"""Keep freed memory in the process while sampling on a CPU (glibc's malloc on Linux).

glibc's malloc serves a block above its mmap threshold with a fresh mapping and returns it to the kernel when it is
freed, and trims the top of its heap back to the kernel once more than the trim threshold is free there; both
thresholds move with what was freed before. Torch's CPU allocator asks malloc for every activation, so an
autoregressive loop that allocates and frees the same few megabytes at every network pass falls into faulting the
same pages in again and again: the demo command took 8-17 million minor page faults and 16-39 s of system time, how
many depending on the order of earlier frees. Fixed thresholds, set once at the start, make malloc reuse those blocks
(0.2-0.7 million faults, 1-3 s); the demo then took 0.79 of the time, same files bit for bit
(`benchmarks/cpu_allocator.py`, benchmarks/README.md). Training steps were measured
unchanged, so only the inference command line applies it. Peak memory stays what the work needs (freed memory is
reused, not added to); the process just does not hand it back before it exits.

Applied by `python -m emodiff_core` (its ``__main__``), never on import: a ComfyUI server is not ours to reconfigure
(the README says how a CPU user sets the same through glibc's environment variables). Nothing is changed when the C
library is not glibc, when the user already set one of glibc's ``MALLOC_*`` variables or ``GLIBC_TUNABLES`` (their
choice wins), or with ``EMODIFF_MALLOC_DEFAULTS=1``.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Dict

OPT_OUT_VARIABLE = "EMODIFF_MALLOC_DEFAULTS"
USER_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")

# mallopt parameters (malloc.h) and the values set: a 1 GiB trim threshold (mallopt takes a C int); glibc's ceiling
# for the mmap threshold on 64-bit systems (larger blocks are still mapped, and are rare here); 64 MiB of top padding
TUNING: Dict[str, tuple] = {"M_TRIM_THRESHOLD": (-1, 1 << 30), "M_TOP_PAD": (-2, 64 << 20),
                            "M_MMAP_THRESHOLD": (-3, 32 << 20)}


def keep_freed_memory(environ=None) -> Dict[str, int]:
    """Raise glibc malloc's trim and mmap thresholds for this process (module docstring). Returns what was set
    (name -> bytes), empty when nothing was (not glibc, the user's own settings, or the opt-out variable)."""
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or environ.get(OPT_OUT_VARIABLE, "") not in ("", "0"):
        return {}
    if any(name in environ for name in USER_VARIABLES):
        return {}
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version      # glibc only: musl's mallopt accepts and ignores everything
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = {}
    for name, (param, value) in TUNING.items():
        if mallopt(param, value) == 1:     # 1 = accepted
            done[name] = value
    return done
