"""How the FER2013 classifier (emodiff_core.fer_net) reads faces whose emotion is known: a confusion matrix.

    # frames of a procedural corpus (python -m training corpus --out /tmp/fer_corpus --clips 320 --size 64)
    python -m training.fer_confusion corpus /tmp/fer_corpus [--min-intensity 1.0] [--frames-per-clip 8] [--by-source]

    # labelled photos (face found with the project's landmark detector, aligned like the training crops)
    python -m training.fer_confusion images photo1.jpg:surprised photo2.jpg:happy ...

Rows are the asked emotion (MEAD's eight, emodiff_core.emotions.EMOTIONS), columns the arg-max FER label
(angry, disgust, fear, happy, sad, surprise, neutral). The headline number is the share of frames asked for
one of the six emotions both name (angry, disgusted, fear, happy, sad, surprised) that FER reads as that
emotion; contempt has no FER class and neutral is not counted there (its row is still shown).

Crops: corpus frames and aligned photos are the project's alignment crop (side 2.6 x outer-eye distance,
nose tip at the centre); ``--crop-fraction`` (default 0.7) keeps the central part, about the face box plus
margin that fer classifies (fer squares its detector's box and widens it by 10 px a side).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from emodiff_core.emotions import EMOTIONS, emotion_index
from emodiff_core.fer_net import FER_LABELS, FER_TO_EMOTION, SHARED_EMOTIONS, load_fer_classifier

DEFAULT_CROP_FRACTION = 0.7
EMOTION_TO_FER = {name: label for label, name in FER_TO_EMOTION.items()}


def centre_crop(frames: np.ndarray, fraction: float) -> np.ndarray:
    """The central ``fraction`` of uint8 frames [N, H, W, C] (square crops stay square)."""
    if not 0.1 <= fraction <= 1.0:
        raise ValueError(f"crop fraction must be in [0.1, 1], got {fraction}")
    h, w = frames.shape[1:3]
    ch, cw = max(1, int(round(h * fraction))), max(1, int(round(w * fraction)))
    top, left = (h - ch) // 2, (w - cw) // 2
    return frames[:, top:top + ch, left:left + cw]


def confusion(asked: Sequence[str], read: Sequence[str]) -> np.ndarray:
    """Counts [8 asked emotions, 7 FER labels]."""
    m = np.zeros((len(EMOTIONS), len(FER_LABELS)), dtype=np.int64)
    for a, r in zip(asked, read):
        m[EMOTIONS.index(a), FER_LABELS.index(r)] += 1
    return m


def summarise(asked: Sequence[str], read: Sequence[str], mean_probs: Optional[Dict[str, List[float]]] = None) -> dict:
    m = confusion(asked, read)
    hits = {e: int(m[EMOTIONS.index(e), FER_LABELS.index(EMOTION_TO_FER[e])]) for e in SHARED_EMOTIONS}
    totals = {e: int(m[EMOTIONS.index(e)].sum()) for e in SHARED_EMOTIONS}
    per_emotion = {e: (hits[e] / totals[e] if totals[e] else None) for e in SHARED_EMOTIONS}
    shared, shared_total = sum(hits.values()), sum(totals.values())
    neutral_row = m[EMOTIONS.index("neutral")]
    out = {"frames": int(m.sum()), "rows": list(EMOTIONS), "columns": list(FER_LABELS), "confusion": m.tolist(),
           "shared_emotion_accuracy": (shared / shared_total) if shared_total else None,
           "shared_emotion_frames": shared_total, "per_emotion_accuracy": per_emotion,
           "neutral_read_neutral": (float(neutral_row[FER_LABELS.index("neutral")] / neutral_row.sum())
                                    if neutral_row.sum() else None),
           "chance_over_shared": 1.0 / len(SHARED_EMOTIONS)}
    if mean_probs is not None:
        out["mean_probs"] = mean_probs
    return out


def format_matrix(summary: dict) -> str:
    m = np.asarray(summary["confusion"])
    cols = [c[:8] for c in summary["columns"]]
    corner = "asked \\ FER"
    lines = [f"{corner:>12s} " + " ".join(f"{c:>8s}" for c in cols) + f" {'n':>6s}"]
    for name, row in zip(summary["rows"], m):
        lines.append(f"{name:>12s} " + " ".join(f"{v:8d}" for v in row) + f" {row.sum():6d}")
    acc = summary["shared_emotion_accuracy"]
    lines.append(f"FER reads the asked emotion on {acc * 100:.1f}% of {summary['shared_emotion_frames']} frames "
                 f"asked for {', '.join(SHARED_EMOTIONS)} (chance {100 / len(SHARED_EMOTIONS):.1f}%)"
                 if acc is not None else "no frames asked for the shared emotions")
    per = ", ".join(f"{e} {v * 100:.0f}%" for e, v in summary["per_emotion_accuracy"].items() if v is not None)
    lines.append(f"per emotion: {per}")
    if summary.get("neutral_read_neutral") is not None:
        lines.append(f"neutral read as neutral: {summary['neutral_read_neutral'] * 100:.1f}%")
    return "\n".join(lines)


def _mean_probs(asked: Sequence[str], probs: torch.Tensor) -> Dict[str, List[float]]:
    out = {}
    for e in EMOTIONS:
        idx = [i for i, a in enumerate(asked) if a == e]
        if idx:
            out[e] = [round(float(v), 4) for v in probs[idx].mean(0)]
    return out


# --------------------------------------------------------------------------- sources
def corpus_frames(root: str, min_intensity: float = 1.0, min_onset: float = 0.9, frames_per_clip: int = 8,
                  split: Optional[str] = None, max_clips_per_emotion: Optional[int] = None):
    """(frames uint8 [N, S, S, 3], asked emotions, clip ids, stats) from clips at intensity >= ``min_intensity``
    (neutral clips, k = 0, are all taken), using frames where the emotion's onset has reached ``min_onset``."""
    from .clips import ClipDataset

    ds = ClipDataset(root)
    frames, asked, ids = [], [], []
    taken: Dict[str, int] = {}
    identities = set()
    for meta in ds.metas(split=split, labelled=True):
        emotion = EMOTIONS[emotion_index(meta["emotion"])]
        k = meta.get("intensity")
        if emotion != "neutral" and (k is None or k < min_intensity - 1e-6):
            continue
        if max_clips_per_emotion is not None and taken.get(emotion, 0) >= max_clips_per_emotion:
            continue
        clip = ds.load(meta, with_audio=False)
        onset = clip.extras.get("onset")
        usable = np.arange(len(clip.frames)) if onset is None or emotion == "neutral" else \
            np.flatnonzero(np.asarray(onset) >= min_onset)
        if len(usable) == 0:
            continue
        pick = usable[np.linspace(0, len(usable) - 1, min(frames_per_clip, len(usable))).round().astype(int)]
        frames.append(np.asarray(clip.frames[pick]))
        asked += [emotion] * len(pick)
        ids += [meta["clip_id"]] * len(pick)
        taken[emotion] = taken.get(emotion, 0) + 1
        identities.add(meta.get("identity"))
    if not frames:
        raise SystemExit(f"no clips in {root} with intensity >= {min_intensity} (or neutral)")
    stats = {"clips_per_emotion": {e: taken[e] for e in EMOTIONS if e in taken}, "identities": len(identities),
             "frame_size": int(frames[0].shape[1])}
    return np.concatenate(frames), asked, ids, stats


def by_source(root: str, clip_ids: Sequence[str], asked: Sequence[str], read: Sequence[str]) -> Dict[str, dict]:
    """How FER reads the frames of each source file of a real-texture corpus: {file: {"frames", "smile" (mean
    fitted lip_corner_up of the file's faces that were animated, each face and its mirror image once), "read": {asked emotion: {FER label: share}}}};
    morphs of two faces are pooled as "morphs", procedural clips as "procedural". Why: every frame of a
    real-texture clip is a warp of one photo, whose own expression texture (a smile's cheeks and eyes) stays
    whatever psi asks; this shows which sources keep it (e.g. neutral asked, read happy)."""
    from .clips import ClipDataset

    metas = {m["clip_id"]: m for m in ClipDataset(root).metas(labelled=True)}
    groups: Dict[str, dict] = {}
    for clip_id, want, got in zip(clip_ids, asked, read):
        real = metas[clip_id].get("real")
        single = bool(real) and len(real["sources"]) == 1
        key = real["sources"][0].split("#")[0] if single else ("morphs" if real else "procedural")
        g = groups.setdefault(key, {"frames": 0, "smiles": {}, "counts": {}})
        if single and "lip_corner_up" in real.get("source_psi", {}):
            face = (real["sources"][0], bool(real.get("flips", [False])[0]))   # a mirrored face is fitted anew
            g["smiles"][face] = float(real["source_psi"]["lip_corner_up"])
        g["frames"] += 1
        counts = g["counts"].setdefault(want, {})
        counts[got] = counts.get(got, 0) + 1
    out = {}
    for key in sorted(groups, key=lambda k: (k in ("morphs", "procedural"), k)):
        g = groups[key]
        out[key] = {"frames": g["frames"], "smile": round(float(np.mean(list(g["smiles"].values()))), 3) if g["smiles"] else None,
                    "read": {e: {label: round(n / sum(c.values()), 3) for label, n in
                                 sorted(c.items(), key=lambda kv: -kv[1])}
                             for e, c in sorted(g["counts"].items(), key=lambda kv: EMOTIONS.index(kv[0]))}}
    return out


def image_faces(specs: Sequence[str], size: int = 256, backend: str = "auto"):
    """(aligned face crops uint8 [N, size, size, 3], asked emotions, names) from 'path:emotion' specs."""
    from PIL import Image

    from emodiff_core.pipeline import prepare_portrait

    crops, asked, names = [], [], []
    for spec in specs:
        path, sep, label = spec.rpartition(":")
        if not sep or not path:
            raise SystemExit(f"{spec!r}: give images as path:emotion (e.g. face.jpg:happy)")
        emotion = EMOTIONS[emotion_index(label)]
        image = np.asarray(Image.open(path).convert("RGB"))
        crops.append(prepare_portrait(image, size=size, backend=backend).crop)
        asked.append(emotion)
        names.append(os.path.basename(path))
    return np.stack(crops), asked, names


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.fer_confusion", description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=None, help="FER weights (default: checkpoints/fer_mini_xception.safetensors)")
    ap.add_argument("--crop-fraction", type=float, default=DEFAULT_CROP_FRACTION,
                    help="central part of the aligned crop given to FER (default %(default)s)")
    ap.add_argument("--antialias", action="store_true",
                    help="low-pass when shrinking crops to 64 px (default: plain bilinear like fer's cv2.resize)")
    ap.add_argument("--json", default=None, help="also write the summary here")
    sub = ap.add_subparsers(dest="source", required=True)
    c = sub.add_parser("corpus", help="frames of a clip dataset with ground-truth emotions")
    c.add_argument("data", help="clip dataset folder (python -m training corpus --out ...)")
    c.add_argument("--min-intensity", type=float, default=1.0, help="clips with k >= this (default 1.0)")
    c.add_argument("--min-onset", type=float, default=0.9, help="frames where the onset reached this (default 0.9)")
    c.add_argument("--frames-per-clip", type=int, default=8)
    c.add_argument("--split", default=None, choices=("train", "val", "test"))
    c.add_argument("--max-clips-per-emotion", type=int, default=None)
    c.add_argument("--by-source", action="store_true",
                   help="also the reading per source photo of a real-texture corpus (neutral, sad and happy asked)")
    i = sub.add_parser("images", help="photos given as path:emotion")
    i.add_argument("images", nargs="+")
    i.add_argument("--backend", default="auto", help="landmark backend: auto, fan or dlib")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    clf = load_fer_classifier(args.weights, antialias=args.antialias)
    extra = {}
    if args.source == "corpus":
        frames, asked, ids, extra = corpus_frames(args.data, args.min_intensity, args.min_onset, args.frames_per_clip,
                                                  args.split, args.max_clips_per_emotion)
        print(f"{len(frames)} frames from {sum(extra['clips_per_emotion'].values())} clips of {extra['identities']} "
              f"identities ({extra['frame_size']} px): {extra['clips_per_emotion']}")
    else:
        frames, asked, ids = image_faces(args.images, backend=args.backend)
    pred = clf.predict(centre_crop(frames, args.crop_fraction))
    summary = summarise(asked, pred.labels, _mean_probs(asked, pred.probs))
    summary.update(extra, source=args.source, crop_fraction=args.crop_fraction, antialias=args.antialias)
    if args.source == "images":
        summary["images"] = [{"name": n, "asked": a, "fer": label, "p": round(float(p.max()), 4),
                              "probs": [round(float(v), 4) for v in p]}
                             for n, a, label, p in zip(ids, asked, pred.labels, pred.probs)]
        for item in summary["images"]:
            print(f"{item['name']}: asked {item['asked']}, FER {item['fer']} (p {item['p']:.3f})")
    print(format_matrix(summary))
    if args.source == "corpus" and args.by_source:
        summary["by_source"] = by_source(args.data, ids, asked, pred.emotions)
        for key, g in summary["by_source"].items():
            smile = "" if g["smile"] is None else f" (smile {g['smile']:+.2f})"
            shown = "; ".join(f"{e}: " + ", ".join(f"{label} {share:.0%}" for label, share in list(r.items())[:3])
                              for e, r in g["read"].items() if e in ("neutral", "sad", "happy"))
            print(f"{key}{smile}, {g['frames']} frames | {shown}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
