"""Ablations of the guidance on the voice (`guidance.AudioGuidance`): where and when it acts, and a one-pass
substitute. None of these variants is in the pack; they are measured here so that nobody has to try them again.

    python -m benchmarks.audio_guidance_variants --variant lower_face|floor<x>|embedding \\
        --portraits DIR --audio FILE [--checkpoint PATH] [--scale 2] [--seconds 10] --out DIR

Each run is `python -m training evaluate-portraits --audio-guidance SCALE` (same photos, voice, seed, sampling and
measures; `training.evaluate_portraits`) with the pipeline's audio guidance replaced by the variant:

* ``lower_face``: the guided correction (w - 1) (eps(voice) - eps(silence)) is applied only inside a soft mask of
  the lower face in the aligned crop (`lower_face_mask`: below the nose, mouth, chin and jaw; the crop is aligned
  on the nose tip and the outer eye corners, so the mask sits on the mouth whatever the photo). Asks: does the
  person drift because the guidance also moves the eyes and brows?
* ``floor<x>`` (e.g. ``floor0.25``): guidance only on the steps at or above x T (the noisier ones, where the
  mouth's layout is decided), the conditional model alone below. Asks: does the fine detail of the late steps
  carry the identity cost?
* ``embedding``: no second pass; the voice's embedding is pushed away from silence's,
  e_silence + w (e_voice - e_silence), and the model runs once. Asks: can the effect be had at no extra cost?

Measured on 2026-12-03 (benchmarks/README.md, "Guidance on the voice: three variants"): none keeps the person
while opening the mouth; the identity cost follows the lip-sync gain.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from emodiff_core import pipeline
from emodiff_core.atomic import atomic_output
from emodiff_core.faces import ALIGN_CROP_EYE_RATIO
from emodiff_core.guidance import AudioGuidance, _paired_passes

from .portrait_ablation import add_portrait_identity

# the lower face in units of the outer-eye distance, nose tip at the origin (faces.TEMPLATE_68's frame)
LOWER_FACE_TOP = 0.15          # just below the nostrils (template points 31-35 at 0.075-0.117)
LOWER_FACE_BOTTOM = 0.9        # below the chin (point 8 at 0.69) with room for an open jaw
LOWER_FACE_HALF_WIDTH = 0.62   # the jaw line at mouth height (points 4/12 at +-0.63)
MASK_SOFTNESS = 0.05


def lower_face_mask(size: int) -> torch.Tensor:
    """[1, 1, size, size] in 0..1: the lower face of an aligned crop (nose tip at the centre, side =
    ALIGN_CROP_EYE_RATIO x the outer-eye distance), with sigmoid edges MASK_SOFTNESS wide."""
    coords = ((torch.arange(size, dtype=torch.float64) + 0.5) / size - 0.5) * ALIGN_CROP_EYE_RATIO
    y, x = coords[:, None], coords[None, :]
    inside = (torch.sigmoid((y - LOWER_FACE_TOP) / MASK_SOFTNESS) * torch.sigmoid((LOWER_FACE_BOTTOM - y) / MASK_SOFTNESS)
              * torch.sigmoid((LOWER_FACE_HALF_WIDTH - x.abs()) / MASK_SOFTNESS))
    return inside.float()[None, None]


class LowerFaceAudioGuidance(AudioGuidance):
    """The guided correction inside `lower_face_mask` only; the conditional prediction elsewhere."""

    def __call__(self, x, t, **cond):
        silent = self.silent_embedding.expand_as(cond["audio_emb"])
        voice, silence = _paired_passes(self.model, x, t, cond, "audio_emb", silent)
        c = self.image_channels
        mask = lower_face_mask(x.shape[-1]).to(x)
        eps = voice[:, :c] + (self.scale - 1.0) * mask * (voice[:, :c] - silence[:, :c])
        return torch.cat([eps, voice[:, c:]], dim=1)


def floor_audio_guidance(min_timestep: int):
    """An AudioGuidance class that guides only the steps whose timestep is >= ``min_timestep``."""

    class FloorAudioGuidance(AudioGuidance):
        def __call__(self, x, t, **cond):
            if bool((t < min_timestep).all()):
                return self.model(x, t, **cond)
            return super().__call__(x, t, **cond)

    return FloorAudioGuidance


class EmbeddingExtrapolation(AudioGuidance):
    """One pass with the voice's embedding extrapolated away from silence's by the scale."""

    def __call__(self, x, t, **cond):
        voice = cond["audio_emb"]
        silent = self.silent_embedding.expand_as(voice).to(voice)
        return self.model(x, t, **dict(cond, audio_emb=silent + self.scale * (voice - silent)))


def variant_class(name: str, num_timesteps: int):
    """The AudioGuidance substitute for a variant name (see the module docstring)."""
    if name == "lower_face":
        return LowerFaceAudioGuidance
    if name == "embedding":
        return EmbeddingExtrapolation
    if name.startswith("floor"):
        try:
            floor = float(name[len("floor"):])
        except ValueError:
            floor = -1.0
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"{name!r}: write floor<x> with x in [0, 1], e.g. floor0.25")
        return floor_audio_guidance(int(round(floor * (num_timesteps - 1))))
    raise ValueError(f"unknown variant {name!r}: lower_face, floor<x> or embedding")


def build_parser() -> argparse.ArgumentParser:
    from training.evaluate_portraits import DEFAULT_CHECKPOINT

    p = argparse.ArgumentParser(prog="python -m benchmarks.audio_guidance_variants", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", required=True, help="lower_face, floor<x> (e.g. floor0.25) or embedding")
    p.add_argument("--portraits", required=True, help="folder of photos (as evaluate-portraits)")
    p.add_argument("--audio", required=True, help="a recording (as evaluate-portraits)")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--scale", type=float, default=2.0, help="the guidance scale w (default 2)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--out", required=True, help="where report.json and contact_sheet.png go")
    add_portrait_identity(p)
    return p


def main(argv=None) -> int:
    from emodiff_core.checkpoint import load_components
    from training.evaluate_portraits import evaluate_portraits

    args = build_parser().parse_args(argv)
    steps = load_components(args.checkpoint, ["denoiser"])["denoiser"].config.diffusion.steps
    try:
        substitute = variant_class(args.variant, steps)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    original = pipeline.AudioGuidance
    pipeline.AudioGuidance = substitute          # generate_frames builds its audio guidance from this name
    try:
        report = evaluate_portraits(args.portraits, args.audio, args.checkpoint, seconds=args.seconds, out=args.out,
                                    audio_guidance=args.scale, portrait_identity=args.portrait_identity)
    finally:
        pipeline.AudioGuidance = original
    report["audio_guidance_variant"] = args.variant      # the report's sampling says only "a<scale>"
    with atomic_output(os.path.join(args.out, "report.json")) as tmp, open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
