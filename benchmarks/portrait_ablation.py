"""Shared scaffolding of the ablations that change how photos are sampled (`warp_reinjection`,
`region_reinjection`): each is `python -m training evaluate-portraits` (same photos, voice, seed, sampling and
measures; `training.evaluate_portraits`) with one or two functions of `emodiff_core.pipeline` replaced for the
length of the run. This module holds what they share: the parser's common options and the run itself (patch,
evaluate, restore, record what was changed, write report.json).
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Callable, Dict

from emodiff_core import pipeline
from emodiff_core.anchors import START_MOUTHS
from emodiff_core.atomic import atomic_output
from emodiff_core.paths import CHECKPOINT_DIR

# the checkpoint these ablations are about: its recommendation re-injects the portrait at every frame (the pack's
# default until 2026-12-05, now emodiffhead_procedural, was not trained on photos)
REAL_CHECKPOINT = os.path.join(CHECKPOINT_DIR, "emodiffhead_real.safetensors")


def portrait_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with the options every such ablation takes (those of evaluate-portraits it passes on, and --out)."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--portraits", required=True, help="folder of photos (as evaluate-portraits)")
    p.add_argument("--audio", required=True, help="a recording (as evaluate-portraits)")
    p.add_argument("--checkpoint", default=REAL_CHECKPOINT,
                   help="default: the real checkpoint (checkpoints/emodiffhead_real.safetensors)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--emotions", default="happy,sad,surprised")
    p.add_argument("--intensity", type=float, default=1.0,
                   help="k of every asked emotion (as evaluate-portraits'; default 1)")
    p.add_argument("--start-noise", type=float, default=None,
                   help="the sampler's start noise (as evaluate-portraits'; default: the pack's, 0.5)")
    p.add_argument("--start-mouth", default="previous", choices=START_MOUTHS,
                   help="what each frame starts from, as evaluate-portraits' (default previous, as the recorded "
                        "runs; rig = the pack's default since 2026-12-07)")
    p.add_argument("--out", required=True, help="where report.json and contact_sheet.png go")
    add_portrait_identity(p)
    return p


def add_portrait_identity(p: argparse.ArgumentParser) -> None:
    """--portrait-identity, as evaluate-portraits', but ``photo`` by default: the pack's default until 2026-12-06,
    what every recorded run of these ablations used (benchmarks/README.md)."""
    p.add_argument("--portrait-identity", default="photo", choices=pipeline.PORTRAIT_IDENTITIES,
                   help="what the network is given as the person (default photo, as the recorded runs; neutral = "
                        "the pack's default now)")


def remembering_portrait(memo: dict) -> Callable[[Callable], Callable]:
    """A patch factory for `pipeline.prepare_portrait` that keeps the portrait it last prepared in
    ``memo["portrait"]``: evaluate_portraits prepares each photo right before sampling it, so a stand-in for
    `generate_frames` finds there the photo it is sampling."""
    def patch(prepare):
        def prepare_and_remember(*a, **k):
            memo["portrait"] = prepare(*a, **k)
            return memo["portrait"]
        return prepare_and_remember
    return patch


def evaluate_with_patches(args: argparse.Namespace, reinjected: str,
                          patches: Dict[str, Callable[[Callable], Callable]]) -> dict:
    """Run evaluate-portraits as ``args`` say with `pipeline`'s functions replaced: ``patches`` maps a function's
    name to a factory that takes the original and returns its stand-in. The originals come back however the run
    ends. The report gets a ``reinjected`` line (what this ablation changed) and is written to OUT/report.json;
    returns it."""
    from emodiff_core import sampling
    from training.evaluate_portraits import evaluate_portraits

    originals = {name: getattr(pipeline, name) for name in patches}
    try:
        for name, make in patches.items():
            setattr(pipeline, name, make(originals[name]))
        report = evaluate_portraits(args.portraits, args.audio, args.checkpoint, seconds=args.seconds,
                                    emotions=args.emotions, intensity=args.intensity, out=args.out,
                                    portrait_identity=args.portrait_identity, start_mouth=args.start_mouth,
                                    settings=(sampling.DEFAULT if args.start_noise is None else
                                              sampling.DEFAULT.replace(start_noise=args.start_noise)))
    finally:
        for name, original in originals.items():
            setattr(pipeline, name, original)
    report["reinjected"] = reinjected
    with atomic_output(os.path.join(args.out, "report.json")) as tmp, open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    return report
