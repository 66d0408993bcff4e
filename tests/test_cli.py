"""The main job from a shell: generate and demo write valid mp4s whose durations match the audio."""
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import soundfile
import torch

from emodiff_core.checkpoint import save_checkpoint
from emodiff_core.config import DENOISER_PRESETS, EXPRESSION_PRESETS, SuperResConfig
from emodiff_core.models import EMOdiffheadDenoiser, ExpressionGenerator, SuperResolver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
    save_checkpoint(path, {"denoiser": EMOdiffheadDenoiser(DENOISER_PRESETS["tiny"]),
                           "expression_generator": ExpressionGenerator(EXPRESSION_PRESETS["tiny"]),
                           "superres": SuperResolver(SuperResConfig(channels=8, num_blocks=1))})
    return path


def _stream_durations(path):
    with av.open(path) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        return (float(v.duration * v.time_base), float(a.duration * a.time_base), v.codec_context.name,
                a.codec_context.name, v.frames)


def _run(args):
    out = subprocess.run([sys.executable, "-m", "emodiff_core", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    return out


def test_generate_writes_an_mp4_as_long_as_the_audio(bundle, tmp_path):
    speech = tmp_path / "speech.wav"
    sr = 22050
    t = np.arange(int(0.5 * sr)) / sr
    stereo = np.stack([np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 300 * t)], 1) * 0.3
    soundfile.write(speech, stereo, sr)
    out = tmp_path / "out.mp4"
    result = _run(["generate", "--checkpoint", bundle, "--portrait", os.path.join(ROOT, "assets", "portrait.jpg"),
                   "--audio", str(speech), "--emotion", "sad", "--intensity", "0.7", "--out", str(out),
                   "--steps", "2", "--superres", "head", "--seed", "3"])
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["frames"] == 15 and report["size"] == [64, 64]
    assert report["mouth"] == "generator"           # auto: the tiny denoiser stores no training statistics
    assert report["portrait_identity"] == "neutral"  # the default: the portrait at a neutral expression
    assert report["start_mouth"] == "rig"           # the default: each frame starts with the rig's mouth
    video_s, audio_s, vcodec, acodec, frames = _stream_durations(str(out))
    assert vcodec == "h264" and acodec == "aac" and frames == 15
    assert video_s == pytest.approx(0.5, abs=1e-3) and audio_s == pytest.approx(0.5, abs=1e-3)


def test_generate_with_keyframes_and_paste_back(bundle, tmp_path):
    out = tmp_path / "full.mp4"
    speech = tmp_path / "speech.wav"
    soundfile.write(speech, (0.3 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 150)).astype(np.float32), 16000)
    result = _run(["generate", "--checkpoint", bundle, "--portrait", os.path.join(ROOT, "assets", "portrait.jpg"),
                   "--audio", str(speech), "--keyframes", "0:neutral:0, 0.5:happy:1", "--paste-back",
                   "--out", str(out), "--steps", "2", "--fps", "25"])
    assert result.returncode == 0, result.stderr[-2000:]
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (512, 512) and v.frames == 25
    # the emotion plot is written beside the video by default, before sampling
    report = json.loads(result.stdout.strip().splitlines()[-1])
    plot = tmp_path / "full.emotion.png"
    assert report["emotion_plot"] == str(plot) and result.stdout.startswith(f"emotion plot: {plot}")
    import cv2

    assert cv2.imread(str(plot)).shape == (240, 640, 3)
    # --max-side scales the pasted video down (aspect kept); --plot none writes no plot
    small = tmp_path / "small.mp4"
    result = _run(["generate", "--checkpoint", bundle, "--portrait", os.path.join(ROOT, "assets", "portrait.jpg"),
                   "--audio", str(speech), "--paste-back", "--max-side", "200", "--plot", "none", "--out", str(small),
                   "--steps", "2", "--fps", "10"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["size"] == [200, 200]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("small")) == ["small.mp4"]


def test_bad_cli_input_gives_clear_errors(bundle, tmp_path):
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 16000)
    blip = tmp_path / "blip.wav"
    soundfile.write(blip, np.full(160, 0.1, np.float32), 16000)          # 10 ms: less than a frame
    portrait = os.path.join(ROOT, "assets", "portrait.jpg")
    cases = [
        (["--portrait", str(blank), "--audio", os.path.join(ROOT, "assets", "speech.wav")], "no face found"),
        (["--portrait", portrait, "--audio", str(empty)], "empty"),
        (["--portrait", portrait, "--audio", str(blip)], "shorter than one video frame"),
        (["--portrait", portrait, "--audio", os.path.join(ROOT, "assets", "speech.wav"), "--paste-back",
          "--max-side", "-1"], "--max-side"),
        (["--portrait", portrait, "--audio", os.path.join(ROOT, "assets", "speech.wav"), "--superres", "lanczos99"],
         "unknown --superres"),
        (["--portrait", os.path.join(ROOT, "assets", "portrait.jpg"), "--audio", str(tmp_path / "none.wav")], "not found"),
        (["--portrait", os.path.join(ROOT, "assets", "portrait.jpg"), "--audio", os.path.join(ROOT, "assets", "speech.wav"),
          "--emotion", "joy"], "unknown emotion"),
        (["--portrait", os.path.join(ROOT, "assets", "portrait.jpg"), "--audio", os.path.join(ROOT, "assets", "speech.wav"),
          "--sampler", "ancestral", "--eta", "0.5"], "eta is a DDIM option"),
        (["--portrait", portrait, "--audio", os.path.join(ROOT, "assets", "speech.wav"), "--guidance", "2"],
         "not trained with expression dropout"),
        (["--portrait", portrait, "--audio", os.path.join(ROOT, "assets", "speech.wav"), "--audio-guidance", "-1"],
         "audio_guidance must be a number >= 0"),
        (["--portrait", portrait, "--audio", os.path.join(ROOT, "assets", "speech.wav"), "--mouth", "voice"],
         "needs a denoiser that stores its training statistics"),
    ]
    for args, message in cases:
        out = tmp_path / "x.mp4"
        result = _run(["generate", "--checkpoint", bundle, "--out", str(out), "--steps", "2", *args])
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr[-500:])
        assert "Traceback" not in result.stderr and not out.exists()
        assert not (tmp_path / "x.emotion.png").exists()            # refused before anything was written
    missing = _run(["generate", "--checkpoint", str(tmp_path / "no.safetensors"), "--portrait", "x", "--audio", "y",
                    "--out", str(tmp_path / "y.mp4")])
    assert missing.returncode == 2 and "checkpoint not found" in missing.stderr


def test_demo_runs_on_the_shipped_assets(bundle, tmp_path):
    result = _run(["demo", "--checkpoint", bundle, "--out", str(tmp_path / "demo"), "--steps", "2"])
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    names = sorted(os.path.basename(p) for p in report["outputs"])
    assert names == ["contact_sheet.png", "photo_happy.mp4", "photo_happy_pasted.mp4", "procedural_happy.mp4"]
    audio_seconds = soundfile.info(os.path.join(ROOT, "assets", "speech.wav")).duration
    video_s, audio_s, *_ = _stream_durations(os.path.join(tmp_path, "demo", "procedural_happy.mp4"))
    assert audio_s == pytest.approx(report["audio_seconds"], abs=1e-3)
    assert video_s == pytest.approx(report["frames"] / 30, abs=1e-3)
    assert abs(video_s - audio_seconds) < 1 / 30


@pytest.mark.parametrize("how", ["neutral", "photo"])
def test_contact_sheet_samples_every_cell_from_either_identity(bundle, tmp_path, how):
    import cv2

    from emodiff_core import cli
    from emodiff_core import pipeline as pl
    from emodiff_core.emotions import EMOTIONS

    models = pl.load_bundle(bundle)
    portrait = pl.prepare_portrait(cli.load_image(os.path.join(ROOT, "assets", "portrait.jpg")), models.image_size)
    t = np.arange(int(0.2 * 16000)) / 16000
    audio = pl.encode_audio((0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000, 30.0,
                            models.denoiser.config.audio)
    path = str(tmp_path / "sheet.png")
    sheet = cli.emotion_contact_sheet(models, portrait, audio, path, frames=2, intensities=(0.0, 1.0),
                                      settings=cli.DEFAULT_SAMPLING.replace(steps=2), portrait_identity=how)
    cell = models.image_size * max(1, 96 // models.image_size)
    assert sheet.shape == (16 + 2 * cell, 40 + len(EMOTIONS) * cell, 3)
    assert cv2.imread(path).shape == sheet.shape


def test_silence_gives_a_video(bundle, tmp_path):
    """Digital silence is a listening face, not an error: a video as long as the audio, all of it silent."""
    silence = tmp_path / "silence.wav"
    soundfile.write(silence, np.zeros(8000, np.float32), 16000)
    out = tmp_path / "listen.mp4"
    result = _run(["generate", "--checkpoint", bundle, "--portrait", os.path.join(ROOT, "assets", "portrait.jpg"),
                   "--audio", str(silence), "--out", str(out), "--steps", "2"])
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["frames"] == 15 and report["silent_seconds"] == pytest.approx(0.5)
    video_s, audio_s, *_ = _stream_durations(str(out))
    assert video_s == pytest.approx(0.5, abs=1e-3) and audio_s == pytest.approx(0.5, abs=1e-3)


def test_paste_back_memory_does_not_scale_with_photo_times_length(bundle, tmp_path):
    """A 24-megapixel portrait pasted back at full size, 20 frames: streamed, the peak RSS of the whole command
    stays far below what holding the frames would take (20 x 72 MB, twice, plus the encoder's default 40-frame
    lookahead at ~70 MB a frame). Measured in a child process with os.wait4; a generous bound, not a timing."""
    from benchmarks.memory import big_photo, peak_rss_of

    photo = big_photo(str(tmp_path / "photo.jpg"))
    speech = tmp_path / "speech.wav"
    t = np.arange(32000) / 16000
    soundfile.write(speech, (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), 16000)
    out = tmp_path / "big.mp4"
    rc, stdout, stderr, peak_mb = peak_rss_of(
        [sys.executable, "-m", "emodiff_core", "generate", "--checkpoint", bundle, "--portrait", photo, "--audio",
         str(speech), "--out", str(out), "--paste-back", "--max-side", "0", "--fps", "10", "--steps", "2",
         "--plot", "none"], cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert rc == 0, stderr[-2000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["frames"] == 20 and report["size"] == [4000, 6000]
    assert peak_mb < 3500, f"peak RSS {peak_mb:.0f} MB"      # 2.6 GB measured; holding the frames: 4.2 GB
