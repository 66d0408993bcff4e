"""Does silence give a still mouth? `generate` on speech, digital silence and room tone, mouth motion measured.

    python -m benchmarks.silence --json [--checkpoint PATH] [--seconds 3] [--steps 10] [--seeds 0,1,2]

Each case runs the real command line (`python -m emodiff_core generate`, a fresh subprocess, no paste-back or
super-resolution, so the video holds the model's aligned crops) with the shipped portrait; the mp4 is decoded
and every frame's expression is regressed with the checkpoint's own expression regressor
(`metrics_video.PsiExtractor`). Mouth opening = psi[:, 0] (jaw_open on the corpus' scale,
`metrics_video.mouth_opening_from_frames` with that extractor), eye openness = psi[:, 7].

Cases: ``speech`` (the first --seconds of assets/speech.wav), ``silence`` (digital zeros), ``room_tone``
(white noise at -65 dBFS RMS, which loudness normalisation would otherwise lift to speech level). Ablations
run the same pipeline in-process with parts of the silence handling off, to show what each contributes:
``silence_free`` (digital silence, no lead-in, no hold: the model left to itself), ``silence_lead_in_only``
(lead-in, no hold) and ``room_tone_raw_features`` (the noise's own features, no substitution, no lead-in or
hold: the behaviour before silence handling, when only digital silence was refused).

Every case runs once per seed (--seeds: the sampling and expression-generator seed, `generate --seed`).
Reported per case and seed: mouth std and mean, eye-openness std, blinks (dips of eye openness 0.5 below its
1 s running median; the corpus' blinks dip by up to 2.2); per case ``mouth_std_ratio_speech_over_case``, the
speech video's mouth std over the case's at the same seed, and its minimum over seeds. The goal is a minimum
speech / silence ratio >= 10. Prints ONE JSON line; writes <out-dir>/silence.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import common

CASES = ("speech", "silence", "room_tone")
ABLATIONS = ("silence_free", "silence_lead_in_only", "room_tone_raw_features")
ROOM_TONE_DBFS = -65.0
BLINK_DEPTH = 0.5          # corpus blinks lower eye openness by up to 2.2; a real blink dips far below 0.5
RATIO_GOAL = 10.0


def case_waveform(name: str, seconds: float):
    """(mono float32, sample rate) for a case."""
    from emodiff_core.audio import load_audio_file
    from emodiff_core.paths import DEMO_SPEECH

    if name == "speech":
        wave, sr = load_audio_file(DEMO_SPEECH)
        wave = wave.mean(axis=0)
        if len(wave) < seconds * sr:
            raise common.BenchmarkError(f"assets/speech.wav is shorter than {seconds:g} s; use a smaller --seconds")
        return wave[: int(round(seconds * sr))].astype(np.float32), sr
    sr = 16000
    n = int(round(seconds * sr))
    if name.startswith("silence"):
        return np.zeros(n, np.float32), sr
    rms = 10 ** (ROOM_TONE_DBFS / 20)
    return (np.random.default_rng(0).standard_normal(n) * rms).astype(np.float32), sr


def blinks(eye: np.ndarray, fps: float) -> int:
    """Dips of eye openness more than BLINK_DEPTH below its running median over 1 s."""
    half = max(1, int(round(fps / 2)))
    padded = np.pad(eye, half, mode="edge")
    median = np.array([np.median(padded[i:i + 2 * half + 1]) for i in range(len(eye))])
    below = eye < median - BLINK_DEPTH
    return int(np.sum(below[1:] & ~below[:-1]) + int(below[0]))


def mouth_and_eyes(frames, extractor, fps: float) -> dict:
    from emodiff_core.metrics_video import mouth_opening_from_frames

    mouth, source = mouth_opening_from_frames(frames, extractor)
    eye = np.asarray(extractor(frames), np.float64)[:, 7]
    return {"frames": int(len(mouth)), "mouth_source": source, "mouth_std": float(mouth.std()),
            "mouth_mean": float(mouth.mean()), "eye_std": float(eye.std()), "eye_min": float(eye.min()),
            "eye_max": float(eye.max()), "blinks": blinks(eye, fps)}


def run_cli_case(name: str, args, checkpoint: str, folder: str, extractor, seed: int) -> dict:
    import soundfile

    from emodiff_core.video import read_video

    wave, sr = case_waveform(name, args.seconds)
    wav = os.path.join(folder, f"{name}.wav")
    soundfile.write(wav, wave, sr)
    out = os.path.join(folder, f"{name}_{seed}.mp4")
    cmd = [sys.executable, "-m", "emodiff_core", "generate", "--checkpoint", checkpoint, "--portrait", args.portrait,
           "--audio", wav, "--out", out, "--emotion", args.emotion, "--steps", str(args.steps), "--seed", str(seed),
           "--device", "cpu", "--plot", "none", "--superres", "none"]     # the model's own crops, as regressed
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, cwd=common.ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise common.BenchmarkError(f"generate on {name} failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    report = json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])
    video = read_video(out, with_audio=False)
    result = mouth_and_eyes(video.frames, extractor, video.fps)
    shown = [common.shown_path(a) if a in (checkpoint, args.portrait) else a for a in cmd[1:]]   # no machine paths
    result.update(silent_seconds=report["silent_seconds"], command=" ".join(["python"] + shown))
    return result


def run_ablation(name: str, args, checkpoint: str, extractor, seed: int) -> dict:
    """The pipeline in-process with one measure switched off (see the module docstring)."""
    import torch

    from emodiff_core import audio as audio_mod
    from emodiff_core import pipeline as pl
    from emodiff_core.cli import load_image
    from emodiff_core.sampling import DEFAULT

    bundle = pl.load_bundle(checkpoint)
    portrait = pl.prepare_portrait(load_image(args.portrait), bundle.image_size)
    wave, sr = case_waveform(name, args.seconds)
    audio = pl.encode_audio(wave, sr, 30.0, bundle.audio_config)
    if name == "room_tone_raw_features":
        mono = audio_mod.prepare_waveform(wave, sr, bundle.audio_config.sample_rate)
        feats = audio_mod.frame_features(mono, 30.0, bundle.audio_config, num_frames=audio.num_frames)
        audio = pl.AudioFeatures(torch.from_numpy(feats), audio.waveform, audio.fps, audio.config)
    psi = pl.emotion_expressions(bundle.generator, audio.num_frames, pl.EmotionSpec(args.emotion, 1.0), fps=30.0,
                                 seed=seed)
    lead_in = pl.silent_start_lead_in(audio) if name == "silence_lead_in_only" else 0
    frames = pl.generate_frames(bundle.denoiser, portrait.crop_tensor(), audio, psi,
                                settings=DEFAULT.replace(steps=args.steps), seed=seed, lead_in=lead_in)[:, 0]
    uint8 = (frames.clamp(0, 1) * 255 + 0.5).byte().permute(0, 2, 3, 1).numpy()
    return mouth_and_eyes(uint8, extractor, 30.0)


def run(args) -> dict:
    from emodiff_core.metrics_video import PsiExtractor

    common.set_threads(args.threads)
    checkpoint = args.checkpoint or common.default_checkpoint()
    if not os.path.isfile(checkpoint):
        raise common.BenchmarkError(f"checkpoint {checkpoint} does not exist")
    extractor = PsiExtractor.from_files(regressor_path=checkpoint)
    start = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = CASES + (() if args.no_ablations else ABLATIONS)
    cases = {name: {} for name in names}
    with tempfile.TemporaryDirectory() as folder:
        for seed in seeds:
            for name in names:
                cases[name][str(seed)] = (run_cli_case(name, args, checkpoint, folder, extractor, seed) if name in CASES
                                          else run_ablation(name, args, checkpoint, extractor, seed))
    ratios, worst = {}, {}
    for name in names:
        if name == "speech":
            continue
        ratios[name] = {s: cases["speech"][s]["mouth_std"] / max(c["mouth_std"], 1e-12) for s, c in cases[name].items()}
        worst[name] = min(ratios[name].values())
    record = {"checkpoint": common.shown_path(checkpoint), "checkpoint_step": common.checkpoint_step(checkpoint),
              "portrait": common.shown_path(args.portrait), "seconds": args.seconds, "emotion": args.emotion,
              "steps": args.steps, "seeds": seeds, "room_tone_dbfs": ROOM_TONE_DBFS, "cases": cases,
              "mouth_std_ratio_speech_over_case": ratios, "min_ratio_over_seeds": worst,
              "goal_silence_ratio_at_least": RATIO_GOAL, "goal_met": worst["silence"] >= RATIO_GOAL,
              "machine": common.machine_info("cpu"), "seconds_total": time.perf_counter() - start}
    os.makedirs(args.out_dir, exist_ok=True)
    record["json"] = common.write_json(os.path.join(args.out_dir, "silence.json"), record)
    return record


def build_parser() -> argparse.ArgumentParser:
    from emodiff_core.paths import DEMO_PORTRAIT

    p = argparse.ArgumentParser(prog="python -m benchmarks.silence", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--checkpoint", default=None, help="bundle with denoiser, expression generator and regressor")
    p.add_argument("--portrait", default=DEMO_PORTRAIT)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--emotion", default="happy")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, each case runs once per seed")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps (default 10, the generate default)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-ablations", action="store_true", help="only the command-line cases")
    p.add_argument("--out-dir", default=common.RESULTS_DIR)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        record = run(args)
    except (common.BenchmarkError, ValueError, FileNotFoundError) as exc:
        common.print_json({"error": str(exc)})
        return 2
    common.print_json(record)
    if not args.json:
        for name, per_seed in record["cases"].items():
            for seed, c in per_seed.items():
                print(f"{name:>24} seed {seed}: mouth std {c['mouth_std']:.4f}, eye std {c['eye_std']:.4f}, "
                      f"blinks {c['blinks']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
