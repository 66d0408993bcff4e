"""The procedural talking-face corpus: identities, clips and the contact sheet.

Every clip is a pure function of (seed, clip index): clip c belongs to identity c mod M and draws all its
randomness from ``numpy.random.default_rng([seed, c])``, so a corpus can be generated in parallel,
resumed, or extended, and any clip can be regenerated exactly.

psi per frame = identity's resting offset
              + sum over emotions of weight(t) * identity's direction of that emotion
                (extras["emotion_weights"]: k * onset(t) of the clip's emotion, Eq. 14's k; in a share of
                clips a change from another emotion or intensity, meta "emotion_change")
              + mouth components driven by the audio (jaw open, width, lip press)
              + blinks (eye openness dips)
              + small smooth noise on the low-energy components 13..49.
Identities are split train/val/test by identity (index mod 8: 6 -> val, 7 -> test), so one-shot
generalisation to unseen faces is measurable.

Counterfactual twins: ``render_twin_frames`` renders chosen frames of a stored clip with another psi (same
identity, pose, speech and blinks when only the emotion part changes), from the clip's meta and extras.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from emodiff_core.audio import mouth_drive, num_video_frames, samples_for_frames
from emodiff_core.emotions import EMOTIONS, MEAD_LEVEL_INTENSITY
from emodiff_core.facemodel import (COMPONENT, EMOTION_DIRECTIONS, EXPRESSION_DIM, IDENTITY_BASIS, IDENTITY_DIM,
                                    NUM_NAMED, TEMPLATE, HeadPose, apply_pose, canonical_to_pixels,
                                    landmarks_canonical, speech_psi)

from ..clips import Clip, write_clip, write_index
from . import speech
from .render import OUTLINE_DEPTH, Appearance, Renderer, outline_points, sample_appearance


@dataclass
class Identity:
    index: int
    split: str
    beta: np.ndarray
    appearance: Appearance
    directions: Dict[str, np.ndarray]   # this person's psi direction per emotion
    rest: np.ndarray                     # resting expression offset [50]
    voice: str
    pitch: int
    speed: int


def split_of(index: int) -> str:
    return {6: "val", 7: "test"}.get(index % 8, "train")


def make_identity(seed: int, index: int) -> Identity:
    rng = np.random.default_rng([seed, 1_000_003, index])
    beta = rng.normal(0, 0.8, IDENTITY_DIM)
    app = sample_appearance(rng)
    directions = {}
    for emotion, d in EMOTION_DIRECTIONS.items():
        own = d * (1.0 + rng.normal(0, 0.15, EXPRESSION_DIM))
        if emotion != "neutral":  # a little cross-talk into the other named actions
            own[:NUM_NAMED] += rng.normal(0, 0.05, NUM_NAMED)
        directions[emotion] = own
    rest = np.zeros(EXPRESSION_DIM)
    rest[:NUM_NAMED] = rng.normal(0, 0.08, NUM_NAMED)
    rest[NUM_NAMED:] = rng.normal(0, 0.3, EXPRESSION_DIM - NUM_NAMED)
    voice = speech.VOICES[rng.integers(len(speech.VOICES))] + speech.VARIANTS[rng.integers(len(speech.VARIANTS))]
    return Identity(index, split_of(index), beta, app, directions, rest, voice,
                    int(rng.integers(30, 70)), int(rng.integers(140, 175)))


def _smooth_noise(rng: np.random.Generator, n: int, fps: float, dims: int, freq=(0.1, 0.7), terms: int = 3):
    """Smooth random curves [n, dims]: sums of a few slow sinusoids with random phases, unit-ish scale."""
    t = np.arange(n) / fps
    out = np.zeros((n, dims))
    for _ in range(terms):
        f = rng.uniform(*freq, dims)
        phase = rng.uniform(0, 2 * np.pi, dims)
        out += np.sin(2 * np.pi * f[None] * t[:, None] + phase[None]) / np.sqrt(terms)
    return out


def _blinks(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    out = np.zeros(n)
    t = rng.uniform(0.2, 2.0)
    while t * fps < n:
        length = rng.uniform(0.15, 0.25) * fps
        centre = t * fps
        idx = np.arange(n)
        out += np.clip(1 - np.abs(idx - centre) / (length / 2), 0, None) ** 0.7
        t += rng.uniform(1.5, 5.0)
    return np.clip(out, 0, 1)


def choose_intensity(rng: np.random.Generator, emotion: str):
    """MEAD level 1..3 (k = 1/3, 2/3, 1) three times out of four, otherwise a continuous k in [0.1, 1]."""
    if emotion == "neutral":
        return None, 0.0
    if rng.random() < 0.75:
        level = int(rng.integers(1, 4))
        return level, MEAD_LEVEL_INTENSITY[level]
    return None, float(rng.uniform(0.1, 1.0))


def clip_speech(identity: Identity, rng: np.random.Generator, emotion: str, sample_rate: int) -> np.ndarray:
    # emotional prosody, mildly: sad slower and lower, angry/surprised/fear faster and higher
    speed_shift = {"sad": -20, "angry": 12, "surprised": 8, "fear": 10, "happy": 6}.get(emotion, 0)
    pitch_shift = {"sad": -10, "angry": 5, "surprised": 15, "fear": 12, "happy": 8}.get(emotion, 0)
    text = speech.SENTENCES[rng.integers(len(speech.SENTENCES))]
    if speech.espeak_available():
        wave = speech.synthesize_espeak(text, identity.voice, identity.speed + speed_shift,
                                        int(np.clip(identity.pitch + pitch_shift, 0, 99)), sample_rate)
    else:
        wave = speech.synthesize_babble(rng, rng.uniform(1.8, 3.0), 100 + 1.5 * (identity.pitch + pitch_shift),
                                        sample_rate)
    pad = [np.zeros(int(rng.uniform(0.15, 0.35) * sample_rate), np.float32) for _ in range(2)]
    return np.concatenate([pad[0], wave.astype(np.float32), pad[1]])


EMOTION_CHANGE_SHARE = 0.18      # share of emotional clips whose emotion changes mid-clip
# meta["corpus_version"]: 2 = clips carry what render_twin_frames needs; 3 = sad re-tuned; 4 = surprised re-tuned
# and teeth covered by rounded lips (facemodel.EMOTION_DIRECTIONS, teeth_showing, as they are now). Twins of another
# emotion are drawn with today's directions and mouth, so they are refused for clips of an older version (their
# stored frames would not match).
CORPUS_VERSION = 4
EMOTION_DIRECTIONS_VERSION = 4   # the corpus version that last changed EMOTION_DIRECTIONS or the mouth's drawing
RIG_CACHE_SIZE = 64              # identities kept rendered-ready (about 1.3 MB each at 64 px, 5 MB at 128 px)


@dataclass
class IdentityRig:
    """What renders any frame of one identity at one size: the identity, its renderer (cached background,
    lighting and texture) and its canonical outlines (forehead, hair, ears, neck, shoulders)."""

    identity: Identity
    renderer: Renderer
    outlines: Dict[str, np.ndarray]
    size: int


@functools.lru_cache(maxsize=RIG_CACHE_SIZE)
def identity_rig(seed: int, index: int, size: int) -> IdentityRig:
    identity = make_identity(seed, index)
    shape = TEMPLATE + np.tensordot(identity.beta, IDENTITY_BASIS, axes=1)
    return IdentityRig(identity, Renderer(identity.appearance, size), outline_points(shape, identity.appearance), size)


def render_frames(rig: IdentityRig, psi: np.ndarray, pose: HeadPose):
    """(frames uint8 [n, S, S, 3], landmarks [n, 68, 2] in pixels) of one identity for psi [n, 50] and a pose
    of n frames. The pixels are a function of (identity, psi, pose) alone."""
    n, size = len(psi), rig.size
    landmarks = canonical_to_pixels(apply_pose(landmarks_canonical(rig.identity.beta, psi), pose), size)
    posed = {name: canonical_to_pixels(apply_pose(np.broadcast_to(pts, (n,) + pts.shape), pose,
                                                  np.full(len(pts), OUTLINE_DEPTH[name])), size)
             for name, pts in rig.outlines.items()}
    frames = np.stack([rig.renderer.render(landmarks[i], {k: v[i] for k, v in posed.items()}, psi[i])
                       for i in range(n)]) if n else np.zeros((0, size, size, 3), np.uint8)
    return frames, landmarks


def _as_stored(x: np.ndarray) -> np.ndarray:
    """x rounded to float32 as the clip stores it (then float64): frames are rendered from the stored values, so
    a twin rendered from the files reproduces them exactly."""
    return np.asarray(x, np.float32).astype(np.float64)


def _pose_of(array: np.ndarray) -> HeadPose:
    a = _as_stored(array)
    return HeadPose(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4])


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0, 1)
    return u * u * (3 - 2 * u)


def emotion_weights_to_psi(identity: Identity, weights: np.ndarray) -> np.ndarray:
    """psi's emotion part [n, 50] for per-frame emotion weights [n, 8] (EMOTIONS order) of this identity:
    sum over emotions of weight * the identity's direction (neutral's direction is zero)."""
    directions = np.stack([identity.directions[e] for e in EMOTIONS])
    return np.asarray(weights, np.float64) @ directions


@dataclass
class EmotionPlan:
    """A clip's emotion: the final emotion with its MEAD level and k, and (for an emotion change) the emotion it
    changes from, that one's k, where the change is centred (as a fraction of the clip) and how long it takes."""

    emotion: str
    level: Optional[int]
    intensity: float
    change_from: Optional[str] = None
    change_intensity: float = 0.0
    change_centre: float = 0.0      # fraction of the clip's duration
    change_seconds: float = 0.0

    @property
    def changes(self) -> bool:
        return self.change_from is not None


def _draw_emotion_plan(rng: np.random.Generator, emotion: Optional[str], emotion_change: Optional[bool]) -> EmotionPlan:
    """The first draws of a clip. An emotion change (EMOTION_CHANGE_SHARE of the emotional clips; never into
    neutral, so a clip labelled neutral is neutral throughout) comes from another emotion or from the same
    one at a clearly different intensity, around 30-55 % of the clip, as a quick switch (0.1 s) or a ramp
    (0.4-1.2 s), so the final emotion holds for the last part of the clip."""
    if emotion is None:
        emotion = EMOTIONS[rng.integers(len(EMOTIONS))]
    level, k = choose_intensity(rng, emotion)
    draw = rng.random() < EMOTION_CHANGE_SHARE
    if emotion == "neutral" or not (draw if emotion_change is None else emotion_change):
        return EmotionPlan(emotion, level, k)
    first = EMOTIONS[1 + rng.integers(len(EMOTIONS) - 1)]
    _, k_first = choose_intensity(rng, first)
    if first == emotion and abs(k_first - k) < 0.25:
        k_first = k - 0.5 if k > 0.55 else k + 0.5
    seconds = 0.1 if rng.random() < 0.4 else float(rng.uniform(0.4, 1.2))
    return EmotionPlan(emotion, level, k, first, float(k_first), float(rng.uniform(0.3, 0.55)), seconds)


def clip_emotion_plan(seed: int, clip_index: int) -> EmotionPlan:
    """The emotion plan of corpus clip ``clip_index`` (what render_clip draws first), without rendering it."""
    return _draw_emotion_plan(np.random.default_rng([seed, clip_index]), None, None)


def _emotion_track(rng: np.random.Generator, plan: EmotionPlan, n: int, fps: int):
    """Per-frame emotion weights [n, 8] (EMOTIONS order, before the wobble) and the final emotion's onset [n]
    (its weight / k). A steady clip holds its emotion from the start or ramps up from neutral."""
    t = np.arange(n) / fps
    weights = np.zeros((n, len(EMOTIONS)))
    if plan.changes:
        onset = _smoothstep((t - (plan.change_centre * n / fps - plan.change_seconds / 2)) / plan.change_seconds)
        weights[:, EMOTIONS.index(plan.change_from)] += plan.change_intensity * (1 - onset)
    elif rng.random() < 0.6:
        onset = np.ones(n)
    else:
        start, length = rng.uniform(0.0, 0.6), rng.uniform(0.3, 0.8)
        onset = _smoothstep((t - start) / length)
    weights[:, EMOTIONS.index(plan.emotion)] += plan.intensity * onset
    return weights, onset


def render_clip(seed: int, clip_index: int, n_identities: int, size: int, fps: int = 30,
                sample_rate: int = 16000, max_seconds: float = 4.0, emotion: Optional[str] = None,
                emotion_change: Optional[bool] = None) -> Clip:
    """Clip ``clip_index`` of the corpus ``seed``. ``emotion`` forces the (final) emotion; ``emotion_change``
    forces (True) or forbids (False) a mid-clip emotion change (default: EMOTION_CHANGE_SHARE of emotional
    clips)."""
    index = clip_index % n_identities
    rig = identity_rig(seed, index, size)
    identity = rig.identity
    rng = np.random.default_rng([seed, clip_index])
    plan = _draw_emotion_plan(rng, emotion, emotion_change)
    tracks = clip_tracks(identity, rng, plan, fps, sample_rate, max_seconds)
    frames, landmarks = render_frames(rig, tracks.psi, _pose_of(tracks.pose))
    meta = {"clip_id": f"c{clip_index:06d}", "identity": f"id{identity.index:04d}", "split": identity.split,
            "source": "procedural", **_track_meta(tracks, identity, seed, index, n_identities, fps, sample_rate, size)}
    return Clip(meta, frames, tracks.wave, landmarks.astype(np.float32), tracks.psi.astype(np.float32),
                tracks.extras())


@dataclass
class ClipTracks:
    """Everything of a clip but its pixels: speech, per-frame psi (stored precision) and its parts, head pose."""

    plan: EmotionPlan
    wave: np.ndarray
    psi: np.ndarray
    psi_emotion: np.ndarray
    psi_speech: np.ndarray
    weights: np.ndarray
    envelope: np.ndarray
    pose: np.ndarray
    onset: np.ndarray

    def extras(self) -> Dict[str, np.ndarray]:
        return {"psi_emotion": self.psi_emotion.astype(np.float32), "psi_speech": self.psi_speech.astype(np.float32),
                "emotion_weights": self.weights.astype(np.float32), "envelope": self.envelope.astype(np.float32),
                "pose": self.pose.astype(np.float32), "onset": self.onset.astype(np.float32)}


def _track_meta(tracks: ClipTracks, identity: Identity, seed: int, index: int, n_identities: int, fps: int,
                sample_rate: int, size: int) -> dict:
    plan = tracks.plan
    n = len(tracks.psi)
    meta = {"emotion": plan.emotion, "level": plan.level, "intensity": plan.intensity, "fps": fps,
            "sample_rate": sample_rate, "size": size, "psi_source": "ground_truth", "voice": identity.voice,
            "speech": "espeak-ng" if speech.espeak_available() else "babble",
            # what render_twin_frames needs to rebuild the identity
            "corpus_version": CORPUS_VERSION, "corpus_seed": int(seed), "identity_index": int(index),
            "n_identities": int(n_identities),
            # True: the emotion changes mid-clip ("emotion" is the final one); per-frame truth in emotion_weights
            "emotion_change": plan.changes}
    if plan.changes:
        meta.update(emotion_from=plan.change_from, intensity_from=plan.change_intensity,
                    emotion_change_time=plan.change_centre * n / fps, emotion_change_seconds=plan.change_seconds)
    return meta


def clip_tracks(identity: Identity, rng: np.random.Generator, plan: EmotionPlan, fps: int = 30,
                sample_rate: int = 16000, max_seconds: float = 4.0, speech_fn=None) -> ClipTracks:
    """A clip's speech, psi and head pose for one identity, drawn from ``rng`` after the emotion plan (the
    procedural and the real-texture corpus share it, so their psi has the same distribution). ``speech_fn``
    (identity, rng, emotion, sample_rate) -> waveform replaces the synthetic speech (real recordings)."""
    emotion = plan.emotion
    wave = (speech_fn or clip_speech)(identity, rng, emotion, sample_rate)[: int(max_seconds * sample_rate)]
    n = num_video_frames(len(wave), fps, sample_rate)
    wave = wave[: samples_for_frames(n, fps, sample_rate)]

    weights, onset = _emotion_track(rng, plan, n, fps)
    wobble = 1.0 + 0.08 * _smooth_noise(rng, n, fps, 1)[:, 0]
    weights = weights * wobble[:, None]
    weights[:, EMOTIONS.index("neutral")] = np.clip(1.0 - weights.sum(1), 0, 1)   # the rest of the face is neutral
    psi_emotion = emotion_weights_to_psi(identity, weights)
    drive = mouth_drive(wave, fps, n, sample_rate)
    psi_speech = speech_psi(drive)
    psi_blink = np.zeros((n, EXPRESSION_DIM))
    psi_blink[:, COMPONENT["eye_openness"]] = -2.2 * _blinks(rng, n, fps)
    psi_noise = np.zeros((n, EXPRESSION_DIM))
    psi_noise[:, NUM_NAMED:] = 0.15 * _smooth_noise(rng, n, fps, EXPRESSION_DIM - NUM_NAMED, (0.2, 1.5))
    psi_noise[:, :NUM_NAMED] = 0.02 * _smooth_noise(rng, n, fps, NUM_NAMED, (0.2, 1.5))
    psi = _as_stored(identity.rest[None] + psi_emotion + psi_speech + psi_blink + psi_noise)

    # head motion: slow yaw/roll/scale/translation, and a small nod with the speech envelope
    pose_noise = _smooth_noise(rng, n, fps, 5, (0.05, 0.4))
    amplitude = rng.uniform(0.3, 1.0)
    pose_array = np.stack([0.12 * amplitude * pose_noise[:, 0], 0.04 * amplitude * pose_noise[:, 1],
                           1.0 + 0.025 * amplitude * pose_noise[:, 2], 0.05 * amplitude * pose_noise[:, 3],
                           0.04 * amplitude * pose_noise[:, 4] + 0.02 * drive["envelope"]], 1)
    return ClipTracks(plan, wave, psi, psi_emotion, psi_speech, weights, drive["envelope"], pose_array, onset)


def _rig_of_clip(meta: Mapping, size: Optional[int]) -> IdentityRig:
    missing = [key for key in ("corpus_seed", "identity_index") if key not in meta]
    if meta.get("source") != "procedural" or missing:
        raise ValueError(f"clip {meta.get('clip_id')!r} is not a procedural corpus clip with "
                         f"{', '.join(missing) or 'its identity'} in its meta (corpus version >= {CORPUS_VERSION}); "
                         "regenerate the corpus with python -m training corpus")
    size = int(size or meta["size"])
    if size not in (64, 128):
        raise ValueError(f"size must be 64 or 128, got {size}")
    return identity_rig(int(meta["corpus_seed"]), int(meta["identity_index"]), size)


def render_twin_frames(meta: Mapping, extras: Mapping[str, np.ndarray], psi: np.ndarray,
                       frame_indices: Sequence[int], size: Optional[int] = None):
    """Counterfactual frames of a corpus clip: frames ``frame_indices`` rendered with ``psi`` [len(frame_indices),
    50] instead of the clip's own psi, with the clip's identity and head pose (from ``meta`` and ``extras``).

    Given the clip's own psi rows it reproduces the clip's frames exactly. Keep speech and blinks by changing
    only psi's emotion part: the neutral twin is ``psi - extras["psi_emotion"]`` (rows of the chosen frames),
    another emotion ``psi - psi_emotion + emotion_psi(meta, weights)``. Returns (frames uint8 [n, S, S, 3],
    landmarks float [n, 68, 2]) at ``size`` (default the clip's size)."""
    rig = _rig_of_clip(meta, size)
    idx = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
    psi = _as_stored(psi).reshape(len(idx), EXPRESSION_DIM)
    return render_frames(rig, psi, _pose_of(np.asarray(extras["pose"])[idx]))


def check_directions_version(meta: Mapping) -> None:
    """Refuse to draw another emotion's psi for a clip rendered with older emotion directions."""
    version = int(meta.get("corpus_version", 0))
    if version < EMOTION_DIRECTIONS_VERSION:
        raise ValueError(f"clip {meta.get('clip_id')!r} is from corpus version {version}, rendered with emotion "
                         f"directions that changed in version {EMOTION_DIRECTIONS_VERSION} (surprised, teeth): its twins of "
                         "another emotion would not match its frames; regenerate the corpus with "
                         "python -m training corpus, or train without twins (emotion.twin_share 0)")


def emotion_psi(meta: Mapping, weights: np.ndarray) -> np.ndarray:
    """psi's emotion part [n, 50] of the clip's identity for emotion weights [n, 8] (EMOTIONS order; a row
    with weight k on one emotion is that emotion at intensity k, as in extras["emotion_weights"])."""
    check_directions_version(meta)
    return emotion_weights_to_psi(_rig_of_clip(meta, None).identity, np.atleast_2d(weights))


def _work(args):
    out, seed, index, n_ids, size = args
    clip = render_clip(seed, index, n_ids, size)
    write_clip(out, clip)
    return index


def check_corpus_options(clips: int, size: int) -> None:
    if clips < 1:
        raise ValueError("--clips must be at least 1")
    if size not in (64, 128):
        raise ValueError("--size must be 64 or 128")


def pending_clips(out: str, clips: int) -> List[int]:
    """Indices of the first ``clips`` clips not yet complete in ``out`` (a rerun continues a corpus)."""
    os.makedirs(os.path.join(out, "clips"), exist_ok=True)
    return [i for i in range(clips) if not os.path.isfile(os.path.join(out, "clips", f"c{i:06d}", "meta.json"))]


def run_clip_jobs(work: Callable, jobs: Sequence, workers: int, progress=None) -> None:
    """``work(job)`` for every job, in a pool of ``workers`` spawned processes when more than one (``work`` must
    be a module-level function), calling ``progress(done, total)`` after each."""
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for done, _ in enumerate(pool.imap_unordered(work, jobs), 1):
                if progress:
                    progress(done, len(jobs))
        return
    for done, job in enumerate(jobs, 1):
        work(job)
        if progress:
            progress(done, len(jobs))


def generate_corpus(out: str, clips: int, seed: int, size: int = 64, identities: Optional[int] = None,
                    workers: int = 1, progress=None) -> dict:
    """Render ``clips`` clips into ``out`` (skipping clips already complete there); returns stats."""
    check_corpus_options(clips, size)
    n_ids = identities or max(8, clips // 10)
    start = time.perf_counter()
    jobs = [(out, seed, i, n_ids, size) for i in pending_clips(out, clips)]
    run_clip_jobs(_work, jobs, workers, progress)
    seconds = time.perf_counter() - start
    index = write_index(out, fps=30, sample_rate=16000, size=size, source="procedural")
    return {"clips_rendered": len(jobs), "clips_total": len(index["clips"]), "identities": n_ids,
            "seconds": seconds, "clips_per_minute": (len(jobs) / seconds * 60) if jobs else None,
            "speech": "espeak-ng" if speech.espeak_available() else "babble"}


def corpus_contact_sheet(path: str, seed: int, size: int = 64, identity_indices: Sequence[int] = (7, 15, 23, 31),
                         intensities: Sequence[float] = (1 / 3, 2 / 3, 1.0)) -> np.ndarray:
    """A PNG grid: rows = identities x intensities, columns = MEAD's eight emotions (mouth closed, frontal)."""
    import cv2

    rows: List[np.ndarray] = []
    frontal = HeadPose(*(np.zeros(1) for _ in range(2)), np.ones(1), np.zeros(1), np.zeros(1))
    for idx in identity_indices:
        rig = identity_rig(seed, idx, size)
        for k in intensities:
            row = []
            for emotion in EMOTIONS:
                psi = rig.identity.rest + k * rig.identity.directions[emotion]
                psi[COMPONENT["lip_press"]] += 0.2
                row.append(render_frames(rig, psi[None], frontal)[0][0])
            rows.append(np.concatenate(row, axis=1))
    sheet = np.concatenate(rows, axis=0)
    header = np.full((18, sheet.shape[1], 3), 255, np.uint8)
    for j, emotion in enumerate(EMOTIONS):
        cv2.putText(header, emotion[:9], (j * size + 2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.33 * size / 64, (0, 0, 0), 1,
                    cv2.LINE_AA)
    sheet = np.concatenate([header, sheet], axis=0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cv2.imwrite(path, sheet[..., ::-1])
    return sheet
