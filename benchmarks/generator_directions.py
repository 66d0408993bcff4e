"""The expression generator's emotion directions against the corpus' own: where Eq. 14 asks for what the data does not.

    python -m benchmarks.generator_directions --checkpoint BUNDLE --data CORPUS [--split test] [--identities 8] \\
        [--seeds 32] [--frames 16] [--skip-frames 0] [--out FILE]

An intensity edit asks the denoiser for e_n + k d_y with d_y = e_y - e_n, the generator's two sequences at one noise
(`pipeline.emotion_expression_pair`). FLIE sums the unevenness of every component that d_y moves by at least 10 % of its
largest move (`metrics_video.edit_dims`); a small part of d_y that the corpus' emotion does not have enters that sum,
and the denoiser, trained on the corpus' emotions, draws it as noise over a small step (benchmarks/README.md, "The
generator's directions: a diagnostic": the demo asked for the corpus' own directions scores FLIE on the ruler's floor).
Per emotion: the generator's d_y averaged over ``--seeds`` noise seeds and ``--frames`` frames (what every user's edit
shares; after ``--skip-frames`` frames rolled out first, to read what a long video plays later), the corpus' emotion
part at k = 1 averaged over the first clip of ``--identities`` identities (`ClipTwins.with_emotion`), their cosine, and
the components each moves by at least 10 % of its own largest move that the other does not (``extra``: the generator's
alone, which FLIE then sums; ``missing``: the corpus' alone). Over the named components (those the demo-family denoisers
read). Prints one JSON line; writes ``--out`` when given.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, Sequence

import numpy as np
import torch

from emodiff_core.atomic import atomic_output
from emodiff_core.metrics_video import EDIT_DIM_SHARE, moved_components


def corpus_directions(data_dir: str, split: str, emotions: Sequence[str], identities: int,
                      components: int) -> Dict[str, np.ndarray]:
    """Per emotion [components]: the corpus' emotion part at k = 1 (`ClipTwins.with_emotion` less the neutral twin,
    frame 0) averaged over the first clip of the first ``identities`` identities of ``split`` (as FLIE takes them)."""
    from training.clips import ClipDataset
    from training.evaluate import flie_clip_metas
    from training.twins import load_clip_twins, mean_emotion_parts

    metas = flie_clip_metas(sorted(ClipDataset(data_dir).metas(split), key=lambda m: m["clip_id"]), identities)
    twins = load_clip_twins(data_dir, metas)
    for meta, twin in zip(metas, twins):
        if twin is None:
            raise ValueError(f"clip {meta['clip_id']} has no counterfactual twins: the corpus' emotion parts need "
                             "a corpus rendered with them (`python -m training corpus`)")
    return {e: part[:components] for e, part in mean_emotion_parts(twins, emotions).items()}


def compare_directions(generated: Dict[str, np.ndarray], corpus: Dict[str, np.ndarray],
                       share: float = EDIT_DIM_SHARE) -> Dict[str, dict]:
    """Per emotion: ``cosine``, ``extra`` / ``missing`` (components moved by at least ``share`` of the generator's /
    the corpus' largest move and not by the other's), and both directions (4 decimals)."""
    out = {}
    for emotion, g in generated.items():
        g, c = np.asarray(g, np.float64), np.asarray(corpus[emotion], np.float64)
        moved_g, moved_c = moved_components(g, share), moved_components(c, share)
        out[emotion] = {"cosine": round(float(g @ c / (np.linalg.norm(g) * np.linalg.norm(c))), 4),
                        "extra": np.flatnonzero(moved_g & ~moved_c).tolist(),
                        "missing": np.flatnonzero(moved_c & ~moved_g).tolist(),
                        "generator": g.round(4).tolist(), "corpus": c.round(4).tolist()}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a bundle with an expression generator")
    p.add_argument("--data", required=True, help="a corpus folder with counterfactual twins")
    p.add_argument("--split", default="test")
    p.add_argument("--identities", type=int, default=8, help="the first clip of this many identities (FLIE's clips)")
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--frames", type=int, default=16, help="frames per sequence (FLIE's videos have 16)")
    p.add_argument("--skip-frames", type=int, default=0,
                   help="frames rolled out before the averaged ones (e.g. 48 --frames 252: a 10 s video's rest)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.skip_frames < 0:
        p.error(f"--skip-frames must be >= 0 (frames rolled out before the averaged ones), got {args.skip_frames}")
    from emodiff_core.checkpoint import CheckpointError, load_components
    from emodiff_core.facemodel import EXPRESSION_COMPONENTS
    from emodiff_core.pipeline import mean_emotion_directions
    from training.evaluate import FLIE_EMOTIONS

    torch.set_num_threads(1)
    components = len(EXPRESSION_COMPONENTS)
    try:
        generator = load_components(args.checkpoint, ["expression_generator"])["expression_generator"].eval()
        corpus = corpus_directions(args.data, args.split, FLIE_EMOTIONS, args.identities, components)
        report = compare_directions(mean_emotion_directions(generator, FLIE_EMOTIONS, args.frames, args.seeds,
                                                            components, args.skip_frames), corpus)
    except (CheckpointError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({e: {k: r[k] for k in ("cosine", "extra", "missing")} for e, r in report.items()}))
    if args.out:
        full = {"components": list(EXPRESSION_COMPONENTS), "seeds": args.seeds, "frames": args.frames,
                "skip_frames": args.skip_frames, "split": args.split, "identities": args.identities,
                "per_emotion": report}
        with atomic_output(args.out) as tmp, open(tmp, "w") as f:
            json.dump(full, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
