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
1..3 or null; ``intensity`` is k on Eq. 14's scale or null.

Crash safety: a clip is written into a hidden temporary folder ``clips/.<clip_id>.<token>.partial`` and
renamed into place when complete. Replacing an existing clip takes two renames (the old folder aside to
``clips/.<clip_id>.<token>.replaced``, then the new one in), because a folder cannot be renamed over a
non-empty one; a kill between them leaves the old clip complete under its aside name, where readers still
find it (`ClipDataset.clip_dir`) and the next `write_clip` of that clip or `write_index` puts it back. The
index is written to a temporary file and renamed. So at every moment each clip the index lists is complete,
as its old or its new version.

This module imports only absolute names, so that tests can load another version of it by file path.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from emodiff_core.atomic import atomic_output
from emodiff_core.audio import samples_for_frames

FORMAT = "emodiffhead-clips"
VERSION = 1
SPLITS = ("train", "val", "test")
PARTIAL = ".partial"      # a clip being written
REPLACED = ".replaced"    # the previous version of a clip being replaced


class ClipFormatError(ValueError):
    """A dataset folder or clip that does not follow the clip format."""


class EmptySplitError(ClipFormatError):
    """The dataset has no clips in the split asked for."""

    def __init__(self, root: str, split: str):
        super().__init__(f"{root} has no clips in split {split!r}")
        self.root, self.split = root, split


DataFolders = Union[str, Sequence[str]]


def data_roots(data: DataFolders) -> List[str]:
    """One dataset folder or several (a training mix, e.g. the procedural and the real-texture corpus): the list.
    Mixed folders are read as one split: every frame of every folder equally likely."""
    roots = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if not roots:
        raise ValueError("no dataset folder given")
    if len(set(map(os.path.abspath, roots))) != len(roots):
        raise ValueError(f"a dataset folder is given twice: {', '.join(map(str, roots))}")
    return [str(r) for r in roots]


def data_label(data: DataFolders) -> str:
    """The folders' names for a checkpoint's training info ("corpus64v2+real64")."""
    return "+".join(os.path.basename(os.path.abspath(r)) for r in data_roots(data))


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
    if str(m["clip_id"]).startswith(".") or os.sep in str(m["clip_id"]) or not str(m["clip_id"]).strip():
        raise ClipFormatError(f"clip id {m['clip_id']!r}: must be a plain folder name not starting with '.'")
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
    """Write one clip atomically under <root>/clips/<clip_id> (replacing an earlier version); returns its
    folder. On an error nothing is left behind and an earlier version stays in place."""
    import soundfile

    clip.meta = dict(clip.meta, n_frames=int(len(clip.frames)),
                     psi_source=clip.meta.get("psi_source", "none" if clip.psi is None else "ground_truth"))
    _check(clip)
    clips_dir = os.path.join(root, "clips")
    os.makedirs(clips_dir, exist_ok=True)
    recover_clip(root, clip.clip_id)       # finish a replacement an earlier run was killed in
    final = os.path.join(clips_dir, clip.clip_id)
    tmp = _hidden_name(clips_dir, clip.clip_id, PARTIAL)
    os.makedirs(tmp)
    try:
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
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _hidden_name(clips_dir: str, clip_id: str, suffix: str) -> str:
    return os.path.join(clips_dir, f".{clip_id}.{secrets.token_hex(4)}{suffix}")


def _move_into_place(tmp: str, final: str) -> None:
    if not os.path.exists(final):
        os.rename(tmp, final)
        return
    aside = _hidden_name(os.path.dirname(final), os.path.basename(final), REPLACED)
    os.rename(final, aside)
    try:
        os.rename(tmp, final)          # the commit
    except BaseException:
        os.rename(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)   # a kill here leaves a stale copy that recovery removes


def _leftovers(clips_dir: str) -> Dict[str, List[str]]:
    """clip id -> hidden leftover folders (temporary or replaced versions) of that clip."""
    out: Dict[str, List[str]] = {}
    names = os.listdir(clips_dir) if os.path.isdir(clips_dir) else []
    for name in names:
        if name.startswith(".") and (name.endswith(PARTIAL) or name.endswith(REPLACED)):
            clip_id = name[1:].rsplit(".", 2)[0]
            out.setdefault(clip_id, []).append(os.path.join(clips_dir, name))
    return out


def recover_clip(root: str, clip_id: str) -> None:
    """Undo what a killed `write_clip` of ``clip_id`` left: restore the previous version if the new one never
    got into place, and remove temporary and replaced folders. Only for a clip nobody is writing now."""
    clips_dir = os.path.join(root, "clips")
    final = os.path.join(clips_dir, clip_id)
    leftovers = sorted(_leftovers(clips_dir).get(clip_id, []))
    if not os.path.exists(final):
        # a replaced folder is complete while the final one is missing: the kill fell between the renames
        aside = [p for p in leftovers if p.endswith(REPLACED)]
        if aside:
            os.rename(aside[0], final)
            leftovers.remove(aside[0])
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)


def write_index(root: str, fps, sample_rate: int, size: int, source: str) -> dict:
    """(Re)build <root>/dataset.json from the complete clips found under <root>/clips, after recovering the
    clips of killed writes (call it when no clip is being written)."""
    clips = []
    clip_root = os.path.join(root, "clips")
    for clip_id in _leftovers(clip_root):
        recover_clip(root, clip_id)
    for name in sorted(os.listdir(clip_root)) if os.path.isdir(clip_root) else []:
        path = os.path.join(clip_root, name, "meta.json")
        # hidden: this version's temporary folders; "<id>.partial": an earlier version's
        if name.startswith(".") or name.endswith(PARTIAL) or not os.path.isfile(path):
            continue
        with open(path) as fh:
            clips.append(json.load(fh))
    index = {"format": FORMAT, "version": VERSION, "fps": fps, "sample_rate": sample_rate, "size": size,
             "source": source, "clips": clips}
    with atomic_output(os.path.join(root, "dataset.json")) as tmp, open(tmp, "w") as fh:
        json.dump(index, fh, indent=1)
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
        """The clip's folder; while a killed replacement of it is not yet recovered, its previous version."""
        final = os.path.join(self.root, "clips", clip_id)
        if not os.path.exists(final):
            aside = sorted(p for p in _leftovers(os.path.join(self.root, "clips")).get(clip_id, [])
                           if p.endswith(REPLACED))
            if aside:
                return aside[0]
        return final

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
