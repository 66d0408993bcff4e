"""Weight averaging of two denoisers: moved to `python -m training average` (training/average.py) when an average
became the demo's denoiser (2026-12-06). This name stays so that the commands recorded in benchmarks/README.md run
as written:

    python -m benchmarks.denoiser_average A.safetensors B.safetensors --weight 0.5 --out AVG.safetensors
"""
from __future__ import annotations

import sys

from training.__main__ import main as _training_main


def main(argv=None) -> int:
    return _training_main(["average", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
