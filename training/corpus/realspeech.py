"""Real recorded speech for the real-texture corpus (``python -m training corpus --real-faces DIR --real-speech DIR``).

A speech folder holds WAV files, one speaker per sub-folder (``<speaker>/*.wav``, any depth below it) or per
``speech.json`` entry: {"speakers": {relative path: speaker}, "splits": {speaker: "train" | "val" | "test"}}.
Speakers without a split are train speakers. An identity of the corpus speaks with one voice: a speaker of its
split (val/test identities get the held-out speakers, when the folder has any), chosen by (seed, identity)
with weights min(recorded seconds, 60).

A clip's speech is 1.8-3.2 s of that speaker: whole prompts (silence trimmed) joined by short pauses, or a
window of a long recording, resampled to 16 kHz, peak-normalised like the corpus' synthetic speech and padded
with 0.15-0.35 s of silence at both ends (as ``generate.clip_speech``). The mouth then follows it through the
same ``emodiff_core.audio.mouth_drive`` as espeak-ng speech.

``python -m training.corpus.collect_real --speech-out DIR ...`` fills such a folder from Debian's
``asterisk-core-sounds-en-wav`` (one voice, Allison Smith, CC-BY-SA-3.0: train) and ``codec2-examples``
(several speakers, LGPL-2.1; ``morig`` and ``mmt1`` are held out for the test/val identities, ``vk5qi``, the
evaluation voice of ``evaluate-portraits``, is not collected; ``david4`` and ``vk2tpm_004`` are skipped by
``noise_floor``: radio noise as loud as the speech).
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from emodiff_core.audio import load_audio_file, resample, to_mono

SPEECH_FILE = "speech.json"
SPEECH_CACHE = "real_speech.npz"


@dataclass
class SpeechBank:
    speakers: List[str]          # per recording
    names: List[str]             # per recording (path relative to the folder)
    waves: List[np.ndarray]      # float32 mono at the recording's rate, silence trimmed
    rates: List[int]
    splits: Dict[str, str]       # speaker -> split
    skipped: List[str] = dataclasses.field(default_factory=list)   # "name: why"

    def pool(self, split: str) -> List[str]:
        return sorted({s for s in self.speakers if self.splits.get(s) == split})

    def summary(self) -> dict:
        seconds = {}
        for s, w, r in zip(self.speakers, self.waves, self.rates):
            seconds[s] = seconds.get(s, 0.0) + len(w) / r
        return {"recordings": len(self.waves), "speakers": {s: {"split": self.splits[s], "seconds": round(v, 1)}
                                                            for s, v in sorted(seconds.items())},
                "skipped": self.skipped}


def _pcm(wave: np.ndarray) -> np.ndarray:
    """float32 on the 16-bit grid (what the corpus stores: recordings are 16-bit PCM anyway)."""
    return np.clip(np.round(np.asarray(wave, np.float64) * 32767), -32768, 32767).astype(np.int16)


def _from_pcm(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / np.float32(32767)


MAX_NOISE_FLOOR = 0.3   # recordings whose quiet parts are this loud relative to the speech are skipped


def noise_floor(wave: np.ndarray, rate: int) -> float:
    """10th-percentile over 95th-percentile RMS of 40 ms windows: ~0.01 for clean speech, 0.6-0.8 for a radio
    recording whose noise fills the pauses (mouth_drive would keep the mouth open throughout)."""
    n = max(1, int(0.04 * rate))
    rms = np.sqrt(np.convolve(np.asarray(wave, np.float64) ** 2, np.ones(n) / n, "valid")[:: max(1, n // 2)])
    return float(np.percentile(rms, 10) / (np.percentile(rms, 95) + 1e-12))


def _trim(wave: np.ndarray, rate: int, margin: float = 0.05) -> np.ndarray:
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak <= 0:
        return wave[:0]
    loud = np.flatnonzero(np.abs(wave) > 0.03 * peak)
    pad = int(margin * rate)
    return wave[max(0, loud[0] - pad): loud[-1] + pad]


def load_speech(folder: str) -> SpeechBank:
    spec = {}
    if os.path.isfile(os.path.join(folder, SPEECH_FILE)):
        with open(os.path.join(folder, SPEECH_FILE)) as f:
            spec = json.load(f)
    given = spec.get("speakers", {})
    files = sorted(glob.glob(os.path.join(folder, "**", "*.wav"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no .wav files in {folder}")
    bank = SpeechBank([], [], [], [], {}, [])
    for path in files:
        rel = os.path.relpath(path, folder).replace(os.sep, "/")
        speaker = given.get(rel) or (rel.split("/")[0] if "/" in rel else os.path.splitext(rel)[0])
        data, rate = load_audio_file(path)
        wave = _from_pcm(_pcm(_trim(to_mono(data).astype(np.float32), rate)))
        if len(wave) < 0.3 * rate:
            bank.skipped.append(f"{rel}: shorter than 0.3 s")
            continue
        if noise_floor(wave, rate) > MAX_NOISE_FLOOR:
            bank.skipped.append(f"{rel}: noise as loud as the speech (the mouth would never close)")
            continue
        bank.speakers.append(speaker)
        bank.names.append(rel)
        bank.waves.append(wave)
        bank.rates.append(int(rate))
    if not bank.waves:
        raise ValueError(f"no usable recording in {folder}")
    speakers = sorted(set(bank.speakers))
    missing = sorted(set(spec.get("splits", {})) - set(speakers))
    bank.skipped += [f"{s}: held-out speaker without usable recordings" for s in missing]
    splits = {s: "train" for s in speakers}
    splits.update({s: v for s, v in spec.get("splits", {}).items() if s in splits})
    bank.splits = splits
    return bank


def save_speech(path: str, bank: SpeechBank) -> None:
    lengths = np.array([len(w) for w in bank.waves])
    np.savez_compressed(path, audio=_pcm(np.concatenate(bank.waves)), lengths=lengths,
                        rates=np.array(bank.rates),
                        info=np.array(json.dumps({"speakers": bank.speakers, "names": bank.names,
                                                  "splits": bank.splits, "skipped": bank.skipped})))


@functools.lru_cache(maxsize=2)
def read_speech(path: str) -> SpeechBank:
    with np.load(path) as z:
        info = json.loads(str(z["info"]))
        audio, lengths, rates = z["audio"], z["lengths"], z["rates"]
    waves = np.split(_from_pcm(audio), np.cumsum(lengths)[:-1])
    return SpeechBank(info["speakers"], info["names"], list(waves), [int(r) for r in rates], info["splits"],
                      info.get("skipped", []))


def prepare_speech(folder: str, out: str) -> str:
    bank = load_speech(folder)
    path = os.path.join(out, SPEECH_CACHE)
    if os.path.isfile(path) and glob.glob(os.path.join(out, "clips", "*", "meta.json")):
        old = read_speech(path)
        same = (old.names == bank.names and old.speakers == bank.speakers and old.splits == bank.splits
                and all(np.array_equal(a, b) for a, b in zip(old.waves, bank.waves)))
        if not same:
            raise ValueError(f"{out} holds clips made with other recordings (the speech folder or speech.json changed); "
                             "render into a new --out folder, or delete that one")
        return path
    tmp = path + ".tmp.npz"
    save_speech(tmp, bank)
    os.replace(tmp, path)
    read_speech.cache_clear()
    return path


SPEAKER_WEIGHT_CAP = 60.0   # seconds: a speaker's chance grows with its recorded time, up to this much


def speaker_of(bank: SpeechBank, seed: int, identity_index: int, split: str) -> Optional[str]:
    """The voice of identity ``identity_index``: a speaker of its split (None when the folder has none), drawn
    with weights min(recorded seconds, 60), so that a 1-second sample is not spoken as often as 25 minutes."""
    pool = bank.pool(split)
    if not pool:
        return None
    seconds = {s: 0.0 for s in pool}
    for s, w, r in zip(bank.speakers, bank.waves, bank.rates):
        if s in seconds:
            seconds[s] += len(w) / r
    weights = np.array([min(seconds[s], SPEAKER_WEIGHT_CAP) for s in pool])
    rng = np.random.default_rng([seed, 7_000_011, identity_index])
    return pool[int(rng.choice(len(pool), p=weights / weights.sum()))]


def real_clip_speech(bank: SpeechBank, speaker: str, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """1.8-3.2 s of ``speaker`` at ``sample_rate``, padded with silence at both ends."""
    own = [i for i, s in enumerate(bank.speakers) if s == speaker]
    target = rng.uniform(1.8, 3.2)
    parts, total = [], 0.0
    while total < target:
        i = own[int(rng.integers(len(own)))]
        wave, rate = bank.waves[i], bank.rates[i]
        need = target - total
        if len(wave) / rate > need + 1.0:       # a long recording: a window of it
            n = int(need * rate)
            start = int(rng.integers(0, len(wave) - n))
            wave = wave[start:start + n]
        piece = resample(wave, rate, sample_rate)
        parts.append(piece)
        total += len(piece) / sample_rate
        if total < target:
            gap = rng.uniform(0.05, 0.25)
            parts.append(np.zeros(int(gap * sample_rate), np.float32))
            total += gap
    wave = np.concatenate(parts)[: int(target * sample_rate)]
    wave = 0.5 * wave / (np.abs(wave).max() + 1e-9)
    pad = [np.zeros(int(rng.uniform(0.15, 0.35) * sample_rate), np.float32) for _ in range(2)]
    return np.concatenate([pad[0], wave.astype(np.float32), pad[1]])
