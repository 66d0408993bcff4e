"""The procedural talking-face corpus: identities, clips and the contact sheet.

Every clip is a pure function of (seed, clip index): clip c belongs to identity c mod M and draws all its
randomness from ``numpy.random.default_rng([seed, c])``, so a corpus can be generated in parallel,
resumed, or extended, and any clip can be regenerated exactly.

psi per frame = identity's resting offset
              + k * (identity's direction of the clip's emotion) * onset(t)     (emotion, Eq. 14's k)
              + mouth components driven by the audio (jaw open, width, lip press)
              + blinks (eye openness dips)
              + small smooth noise on the low-energy components 13..49.
Identities are split train/val/test by identity (index mod 8: 6 -> val, 7 -> test), so one-shot
generalisation to unseen faces is measurable.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from emodiff_core.audio import num_video_frames, samples_for_frames
from emodiff_core.emotions import EMOTIONS, MEAD_LEVEL_INTENSITY

from ..clips import Clip, write_clip, write_index
from . import speech
from .facemodel import (COMPONENT, EMOTION_DIRECTIONS, EXPRESSION_DIM, IDENTITY_DIM, NUM_NAMED, TEMPLATE,
                        HeadPose, apply_pose, landmarks_canonical, IDENTITY_BASIS)
from .render import OUTLINE_DEPTH, Appearance, Renderer, canonical_to_pixels, outline_points, sample_appearance

SPEECH_COMPONENTS = ("jaw_open", "mouth_width", "lip_press")


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


def render_clip(seed: int, clip_index: int, n_identities: int, size: int, fps: int = 30,
                sample_rate: int = 16000, max_seconds: float = 4.0, emotion: Optional[str] = None) -> Clip:
    identity = make_identity(seed, clip_index % n_identities)
    rng = np.random.default_rng([seed, clip_index])
    if emotion is None:
        emotion = EMOTIONS[rng.integers(len(EMOTIONS))]
    level, k = choose_intensity(rng, emotion)
    wave = clip_speech(identity, rng, emotion, sample_rate)[: int(max_seconds * sample_rate)]
    n = num_video_frames(len(wave), fps, sample_rate)
    wave = wave[: samples_for_frames(n, fps, sample_rate)]

    # emotion with onset: held from the start, or ramping up from neutral
    t = np.arange(n) / fps
    if rng.random() < 0.6:
        onset = np.ones(n)
    else:
        start, length = rng.uniform(0.0, 0.6), rng.uniform(0.3, 0.8)
        u = np.clip((t - start) / length, 0, 1)
        onset = u * u * (3 - 2 * u)
    wobble = 1.0 + 0.08 * _smooth_noise(rng, n, fps, 1)[:, 0]
    psi_emotion = k * onset[:, None] * wobble[:, None] * identity.directions[emotion][None]
    drive = speech.mouth_drive(wave, fps, n, sample_rate)
    psi_speech = np.zeros((n, EXPRESSION_DIM))
    for name in SPEECH_COMPONENTS:
        psi_speech[:, COMPONENT[name]] = drive[name]
    psi_blink = np.zeros((n, EXPRESSION_DIM))
    psi_blink[:, COMPONENT["eye_openness"]] = -2.2 * _blinks(rng, n, fps)
    psi_noise = np.zeros((n, EXPRESSION_DIM))
    psi_noise[:, NUM_NAMED:] = 0.15 * _smooth_noise(rng, n, fps, EXPRESSION_DIM - NUM_NAMED, (0.2, 1.5))
    psi_noise[:, :NUM_NAMED] = 0.02 * _smooth_noise(rng, n, fps, NUM_NAMED, (0.2, 1.5))
    psi = identity.rest[None] + psi_emotion + psi_speech + psi_blink + psi_noise

    # head motion: slow yaw/roll/scale/translation, and a small nod with the speech envelope
    pose_noise = _smooth_noise(rng, n, fps, 5, (0.05, 0.4))
    amplitude = rng.uniform(0.3, 1.0)
    pose = HeadPose(yaw=0.12 * amplitude * pose_noise[:, 0], roll=0.04 * amplitude * pose_noise[:, 1],
                    scale=1.0 + 0.025 * amplitude * pose_noise[:, 2],
                    tx=0.05 * amplitude * pose_noise[:, 3], ty=0.04 * amplitude * pose_noise[:, 4] + 0.02 * drive["envelope"])
    canonical = landmarks_canonical(identity.beta, psi)
    landmarks = canonical_to_pixels(apply_pose(canonical, pose), size)
    shape = TEMPLATE + np.tensordot(identity.beta, IDENTITY_BASIS, axes=1)
    outlines = outline_points(shape, identity.appearance)
    posed_outlines = {name: canonical_to_pixels(apply_pose(np.broadcast_to(pts, (n,) + pts.shape), pose,
                                                           np.full(len(pts), OUTLINE_DEPTH[name])), size)
                      for name, pts in outlines.items()}
    renderer = Renderer(identity.appearance, size)
    frames = np.stack([renderer.render(landmarks[i], {k_: v[i] for k_, v in posed_outlines.items()})
                       for i in range(n)])
    meta = {"clip_id": f"c{clip_index:06d}", "identity": f"id{identity.index:04d}", "split": identity.split,
            "emotion": emotion, "level": level, "intensity": k, "fps": fps, "sample_rate": sample_rate,
            "size": size, "source": "procedural", "psi_source": "ground_truth", "voice": identity.voice,
            "speech": "espeak-ng" if speech.espeak_available() else "babble"}
    extras = {"psi_emotion": psi_emotion.astype(np.float32), "psi_speech": psi_speech.astype(np.float32),
              "envelope": drive["envelope"].astype(np.float32),
              "pose": np.stack([pose.yaw, pose.roll, pose.scale, pose.tx, pose.ty], 1).astype(np.float32),
              "onset": onset.astype(np.float32)}
    return Clip(meta, frames, wave, landmarks.astype(np.float32), psi.astype(np.float32), extras)


def _work(args):
    out, seed, index, n_ids, size = args
    clip = render_clip(seed, index, n_ids, size)
    write_clip(out, clip)
    return index


def generate_corpus(out: str, clips: int, seed: int, size: int = 64, identities: Optional[int] = None,
                    workers: int = 1, progress=None) -> dict:
    """Render ``clips`` clips into ``out`` (skipping clips already complete there); returns stats."""
    if clips < 1:
        raise ValueError("--clips must be at least 1")
    if size not in (64, 128):
        raise ValueError("--size must be 64 or 128")
    n_ids = identities or max(8, clips // 10)
    os.makedirs(os.path.join(out, "clips"), exist_ok=True)
    todo = [i for i in range(clips) if not os.path.isfile(os.path.join(out, "clips", f"c{i:06d}", "meta.json"))]
    start = time.perf_counter()
    jobs = [(out, seed, i, n_ids, size) for i in todo]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for done, _ in enumerate(pool.imap_unordered(_work, jobs), 1):
                if progress:
                    progress(done, len(jobs))
    else:
        for done, job in enumerate(jobs, 1):
            _work(job)
            if progress:
                progress(done, len(jobs))
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
    for idx in identity_indices:
        identity = make_identity(seed, idx)
        renderer = Renderer(identity.appearance, size)
        shape = TEMPLATE + np.tensordot(identity.beta, IDENTITY_BASIS, axes=1)
        outlines = outline_points(shape, identity.appearance)
        pose = HeadPose(*(np.zeros(1) for _ in range(2)), np.ones(1), np.zeros(1), np.zeros(1))
        posed = {k: canonical_to_pixels(apply_pose(v[None], pose, np.full(len(v), OUTLINE_DEPTH[k]))[0], size)
                 for k, v in outlines.items()}
        for k in intensities:
            row = []
            for emotion in EMOTIONS:
                psi = identity.rest + k * identity.directions[emotion]
                psi[COMPONENT["lip_press"]] += 0.2
                lm = canonical_to_pixels(apply_pose(landmarks_canonical(identity.beta, psi[None]), pose)[0], size)
                row.append(renderer.render(lm, posed))
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
