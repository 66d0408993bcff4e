"""Speech for the corpus and the mouth motion it drives.

Speech is real synthetic speech from espeak-ng (several English voices, speeds and pitches) when it is
installed, and a formant "babble" synthesiser otherwise (same rhythm statistics, no words). The mouth
components of psi are computed from the audio itself, per video frame, so lip sync is learnable and
measurable: the jaw opens with the loudness envelope, the mouth widens or rounds with the spectral
centroid, and the lips close in pauses.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import numpy as np

from emodiff_core.audio import resample

SENTENCES = (
    "The orange boat drifted slowly past the harbour wall.",
    "Please bring the blue folder to the second meeting.",
    "We watched the storm roll over the hills last night.",
    "My brother fixed the old radio with a paper clip.",
    "A cold wind blew the leaves across the empty square.",
    "She painted the kitchen door a bright shade of green.",
    "The train to the coast leaves at half past nine.",
    "Nobody expected the little dog to win the race.",
    "He keeps his bicycle in the shed behind the house.",
    "The baker sold every loaf before noon on Saturday.",
    "Turn left at the church and follow the river path.",
    "I found a letter hidden inside the library book.",
    "The children built a castle out of wet sand.",
    "Our neighbour grows tomatoes on her sunny balcony.",
    "The museum opens late on the first Friday of the month.",
    "Keep the window open while the soup is cooking.",
    "A pair of swans glided across the quiet lake.",
    "The engineer checked every bolt on the old bridge.",
    "Rain is expected across the north by the weekend.",
    "Put the heavy boxes at the bottom of the van.",
    "The violin sounded warm in the wooden hall.",
    "Can you believe how quickly the summer went by?",
    "Why would anyone leave the gate open in winter?",
    "I told you the keys were under the yellow mat.",
    "They moved to a small town beside the mountains.",
    "The coffee machine on the third floor is broken again.",
    "Each player must roll the dice before moving.",
    "The photographs were taken on a very foggy morning.",
    "Water the plants twice a week during the summer.",
    "The new road will open before the end of the year.",
    "Her grandmother taught her how to bake bread.",
    "A loud noise woke everyone in the middle of the night.",
    "The shop on the corner sells fresh fruit and flowers.",
    "We should finish the report before lunch tomorrow.",
    "The pilot announced a short delay because of fog.",
    "Bright lanterns hung above the narrow street.",
    "Tell me what happened after the lights went out.",
    "The cat slept all afternoon on the warm stone step.",
    "Five students volunteered to clean the river bank.",
    "The old clock in the hall stopped at midnight.",
    "I can hardly hear you over the sound of the engine.",
    "The garden looks wonderful after all that rain.",
    "Move the table closer to the window, please.",
    "He wrote a short song about the sea and the sky.",
    "This is the best soup I have ever tasted.",
    "The match was cancelled because the pitch was flooded.",
    "Somebody left a bag of apples on the bus.",
    "The mountain path was steep, narrow and slippery.",
)
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")
VARIANTS = ("", "+f1", "+f2", "+f3", "+f4", "+m1", "+m2", "+m3", "+m4", "+m5")


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize_espeak(text: str, voice: str, speed: int, pitch: int, sample_rate: int) -> np.ndarray:
    import soundfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path, text],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        wave, sr = soundfile.read(path, dtype="float32", always_2d=False)
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    return resample(wave, sr, sample_rate)


def synthesize_babble(rng: np.random.Generator, duration: float, pitch_hz: float, sample_rate: int) -> np.ndarray:
    """Syllable-rate formant babble: voiced vowels with random formants, noisy consonants, pauses."""
    out = []
    total = 0
    vowels = [(730, 1090), (270, 2290), (300, 870), (530, 1840), (660, 1720), (570, 840)]
    while total < duration * sample_rate:
        if rng.random() < 0.12:
            n = int(rng.uniform(0.08, 0.25) * sample_rate)
            out.append(np.zeros(n, np.float32))
            total += n
            continue
        n = int(rng.uniform(0.09, 0.22) * sample_rate)
        t = np.arange(n) / sample_rate
        f0 = pitch_hz * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        f1, f2 = vowels[rng.integers(len(vowels))]
        source = sum(np.sin(k * phase) / k for k in range(1, 25))
        vowel = sum(np.sin(k * phase) * np.exp(-((k * f0 - f) / 120.0) ** 2) for f in (f1, f2) for k in range(1, 25))
        envelope = np.sin(np.pi * np.arange(n) / n) ** 0.6
        seg = (0.3 * source * 0.05 + vowel) * envelope
        if rng.random() < 0.5:
            c = int(0.04 * sample_rate)
            seg[:c] += rng.normal(0, 0.3, c) * np.linspace(1, 0, c)
        out.append(seg.astype(np.float32))
        total += n
    wave = np.concatenate(out)[: int(duration * sample_rate)]
    return (0.5 * wave / (np.abs(wave).max() + 1e-9)).astype(np.float32)

