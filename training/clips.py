"""The on-disk clip format shared by the procedural corpus and real-dataset preparation.

    <root>/dataset.json       {"format": "emodiffhead-clips", "version": 1, "fps", "sample_rate", "size",
                               "source", "clips": [<meta of each clip>]}
    <root>/clips/<clip_id>/
        frames.npy            uint8 [N, S, S, 3] RGB aligned crops (nose tip at the centre)
        audio.wav             16 kHz mono PCM16, exactly samples_for_frames(N) samples
        psi.npy               float32 [N, 50] expression vectors (corpus ground truth, DECA, or absent)
        landmarks.npy         float32 [N, 68, 2] landmarks in crop pixel coordinates
        meta.json             clip_id, identity, split, emotion, level, intensity, n_frames, fps,
                              sample_rate, size, source, psi_source
        extras.npz            optional: more ground truth (the corpus stores psi's parts and head pose)

``emotion`` is one of MEAD's eight labels or null (unlabelled data such as HDTF); ``level`` is MEAD's
1..3 or null; ``intensity`` is k on Eq. 14's scale or null. Writing goes to a temporary folder that is
renamed when complete, so an interrupted run never leaves a half-written clip.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

import numpy as np

from emodiff_core.audio import samples_for_frames

FORMAT = "emodiffhead-clips"
VERSION = 1
SPLITS = ("train", "val", "test")


class ClipFormatError(ValueError):
    """A dataset folder or clip that does not follow the clip format."""


@dataclass
class Clip:
    meta: dict
    frames: np.ndarray
    audio: np.ndarray
    landmarks: np.ndarray
    psi: Optional[np.ndarray] = None
    extras: Dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def clip_id(self) -> str:
        return self.meta["clip_id"]


def _check(clip: Clip) -> None:
    m = clip.meta
    n = len(clip.frames)
    for key in ("clip_id", "identity", "split", "fps", "sample_rate", "size"):
        if key not in m:
            raise ClipFormatError(f"clip meta lacks {key!r}")
    if m["split"] not in SPLITS:
        raise ClipFormatError(f"clip {m['clip_id']}: split must be one of {SPLITS}")
    if clip.frames.dtype != np.uint8 or clip.frames.shape[1:] != (m["size"], m["size"], 3):
        raise ClipFormatError(f"clip {m['clip_id']}: frames must be uint8 [N, {m['size']}, {m['size']}, 3]")
    if clip.landmarks.shape != (n, 68, 2):
        raise ClipFormatError(f"clip {m['clip_id']}: landmarks must be [{n}, 68, 2]")
    if clip.psi is not None and clip.psi.shape != (n, 50):
        raise ClipFormatError(f"clip {m['clip_id']}: psi must be [{n}, 50]")
    want = samples_for_frames(n, m["fps"], m["sample_rate"])
    if clip.audio.ndim != 1 or len(clip.audio) != want:
        raise ClipFormatError(f"clip {m['clip_id']}: audio must be mono with {want} samples for {n} frames")


def write_clip(root: str, clip: Clip) -> str:
    """Write one clip atomically under <root>/clips/<clip_id>; returns its folder."""
    import soundfile

    clip.meta = dict(clip.meta, n_frames=int(len(clip.frames)),
                     psi_source=clip.meta.get("psi_source", "none" if clip.psi is None else "ground_truth"))
    _check(clip)
    final = os.path.join(root, "clips", clip.clip_id)
    tmp = final + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    np.save(os.path.join(tmp, "frames.npy"), clip.frames)
    np.save(os.path.join(tmp, "landmarks.npy"), clip.landmarks.astype(np.float32))
    if clip.psi is not None:
        np.save(os.path.join(tmp, "psi.npy"), clip.psi.astype(np.float32))
    if clip.extras:
        np.savez(os.path.join(tmp, "extras.npz"), **clip.extras)
    soundfile.write(os.path.join(tmp, "audio.wav"), np.clip(clip.audio, -1, 1), clip.meta["sample_rate"],
                    subtype="PCM_16")
    with open(os.path.join(tmp, "meta.json"), "w") as fh:
        json.dump(clip.meta, fh, indent=1)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def write_index(root: str, fps, sample_rate: int, size: int, source: str) -> dict:
    """(Re)build <root>/dataset.json from the complete clips found under <root>/clips."""
    clips = []
    clip_root = os.path.join(root, "clips")
    for name in sorted(os.listdir(clip_root)) if os.path.isdir(clip_root) else []:
        path = os.path.join(clip_root, name, "meta.json")
        if name.endswith(".partial") or not os.path.isfile(path):
            continue
        with open(path) as fh:
            clips.append(json.load(fh))
    index = {"format": FORMAT, "version": VERSION, "fps": fps, "sample_rate": sample_rate, "size": size,
             "source": source, "clips": clips}
    tmp = os.path.join(root, ".dataset.json.partial")
    with open(tmp, "w") as fh:
        json.dump(index, fh, indent=1)
    os.replace(tmp, os.path.join(root, "dataset.json"))
    return index


class ClipDataset:
    """Read access to a clip folder (arrays are memory-mapped)."""

    def __init__(self, root: str):
        self.root = root
        path = os.path.join(root, "dataset.json")
        if not os.path.isfile(path):
            raise ClipFormatError(f"{root} is not a clip dataset (no dataset.json); make one with "
                                  "`python -m training corpus` or `python -m training prepare`")
        with open(path) as fh:
            try:
                self.index = json.load(fh)
            except json.JSONDecodeError as exc:
                raise ClipFormatError(f"{path} is not valid JSON ({exc}); rebuild the dataset") from None
        if self.index.get("format") != FORMAT or self.index.get("version") != VERSION:
            raise ClipFormatError(f"{path}: not a version-{VERSION} '{FORMAT}' index")
        self.fps = self.index["fps"]
        self.sample_rate = self.index["sample_rate"]
        self.size = self.index["size"]

    def metas(self, split: Optional[str] = None, labelled: Optional[bool] = None) -> List[dict]:
        out = []
        for m in self.index["clips"]:
            if split is not None and m["split"] != split:
                continue
            if labelled is not None and (m.get("emotion") is not None) != labelled:
                continue
            out.append(m)
        return out

    def clip_dir(self, clip_id: str) -> str:
        return os.path.join(self.root, "clips", clip_id)

    def load(self, meta_or_id, mmap: bool = True, with_audio: bool = True) -> Clip:
        import soundfile

        meta = meta_or_id if isinstance(meta_or_id, dict) else self._meta(meta_or_id)
        d = self.clip_dir(meta["clip_id"])
        mode = "r" if mmap else None
        frames = np.load(os.path.join(d, "frames.npy"), mmap_mode=mode)
        landmarks = np.load(os.path.join(d, "landmarks.npy"), mmap_mode=mode)
        psi_path = os.path.join(d, "psi.npy")
        psi = np.load(psi_path, mmap_mode=mode) if os.path.isfile(psi_path) else None
        audio = soundfile.read(os.path.join(d, "audio.wav"), dtype="float32")[0] if with_audio else np.zeros(0)
        extras_path = os.path.join(d, "extras.npz")
        extras = dict(np.load(extras_path)) if os.path.isfile(extras_path) else {}
        return Clip(meta, frames, audio, landmarks, psi, extras)

    def _meta(self, clip_id: str) -> dict:
        for m in self.index["clips"]:
            if m["clip_id"] == clip_id:
                return m
        raise ClipFormatError(f"no clip {clip_id!r} in {self.root}")

    def __iter__(self) -> Iterator[dict]:
        return iter(self.index["clips"])

    def __len__(self) -> int:
        return len(self.index["clips"])
