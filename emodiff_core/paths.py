"""Where the pack's own files are: computed here once for the CLI, the nodes and the benchmarks.

The core library sits one level below the pack root (``<pack>/emodiff_core``), which holds the shipped
checkpoints and the demo's assets.
"""
from __future__ import annotations

import os

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKPOINT_DIR = os.path.join(PACK_ROOT, "checkpoints")
DEFAULT_CHECKPOINT = os.path.join(CHECKPOINT_DIR, "emodiffhead_demo.safetensors")
ASSETS = os.path.join(PACK_ROOT, "assets")
DEMO_PORTRAIT = os.path.join(ASSETS, "portrait.jpg")
DEMO_PORTRAIT_PROCEDURAL = os.path.join(ASSETS, "portrait_procedural.png")
DEMO_SPEECH = os.path.join(ASSETS, "speech.wav")
