"""python -m training evaluate-portraits: its report and contact sheet on a tiny random bundle, its errors, and the
numbers behind two of its measures (sharpness against a photo, mouth opening from landmarks)."""
import hashlib
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import soundfile
import torch

from emodiff_core import pipeline as pl
from emodiff_core.checkpoint import save_checkpoint
from emodiff_core.cli import load_image
from emodiff_core.config import DENOISER_PRESETS, EXPRESSION_PRESETS, SUPERRES_PRESETS
from emodiff_core.faces import align_face, template_landmarks
from emodiff_core.landmarks import detect_portrait
from emodiff_core.metrics_video import (DlibFaceMeter, FrameFaces, aligned_face_box, high_frequency_amplitude,
                                        high_frequency_energy, mouth_opening, sharpness_ratio)
from emodiff_core.models import EMOdiffheadDenoiser, ExpressionGenerator, SuperResolver
from emodiff_core.sampling import DEFAULT
from training.evaluate_portraits import PortraitEvaluationError, evaluate_portraits, list_portraits, parse_emotions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = DEFAULT.replace(steps=2)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
    save_checkpoint(path, {"denoiser": EMOdiffheadDenoiser(DENOISER_PRESETS["tiny"]),
                           "expression_generator": ExpressionGenerator(EXPRESSION_PRESETS["tiny"]),
                           "superres": SuperResolver(SUPERRES_PRESETS["tiny"])})
    return path


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="module")
def astronaut_crop(astronaut):
    """The astronaut's aligned crop at 128 px (what the demo checkpoint's output is compared with)."""
    return align_face(astronaut, detect_portrait(astronaut, backend="dlib"), 128)[0]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, astronaut):
    root = tmp_path_factory.mktemp("inputs")
    photos = root / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "astronaut.png"), astronaut[..., ::-1])
    cv2.imwrite(str(photos / "wall.png"), np.full((200, 200, 3), 128, np.uint8))   # no face: skipped
    (photos / "notes.txt").write_text("not an image")
    sr = 16000
    t = np.arange(int(0.8 * sr)) / sr
    speech = (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2).astype(np.float32)
    soundfile.write(str(root / "speech.wav"), speech, sr)
    soundfile.write(str(root / "silence.wav"), np.zeros(int(0.8 * sr), np.float32), sr)
    empty = root / "empty"
    empty.mkdir()
    walls = root / "walls"
    walls.mkdir()
    cv2.imwrite(str(walls / "wall.png"), np.full((200, 200, 3), 128, np.uint8))
    return root


def test_report_contact_sheet_and_ranges(bundle, folders, tmp_path):
    out = tmp_path / "out"
    emotions = ["neutral", "happy"]
    report = evaluate_portraits(str(folders / "photos"), str(folders / "speech.wav"), checkpoint=bundle,
                                seconds=0.7, emotions=emotions, out=str(out), settings=FAST, log=lambda m: None)
    assert report["portraits"] == ["astronaut.png"]
    assert [s["file"] for s in report["skipped"]] == ["wall.png"] and "no face" in report["skipped"][0]["reason"]
    assert report["audio"]["frames"] == 21 and report["audio"]["seconds_used"] == pytest.approx(0.7)
    assert report["superres"] == "head" and report["sampling"]["steps"] == 2
    assert report["portrait_identity"] == "neutral" and report["start_mouth"] == "rig"   # the pack's defaults
    (entry,) = report["results"]
    assert entry["output_size"] == 64                                  # tiny: 32 px sampled, x2 SR head
    assert entry["reference"]["face_in_photo"] is True
    # the resolution ceiling: the photo's own crop at the model's size, super-resolved like the videos
    models = pl.load_bundle(bundle)
    portrait = pl.prepare_portrait(load_image(str(folders / "photos" / "astronaut.png")), 32)
    perfect = pl.super_resolve(portrait.crop_tensor()[None], models.superres)
    reference, _ = align_face(portrait.image, portrait.landmarks, 64)
    want = sharpness_ratio((perfect.clamp(0, 1) * 255 + 0.5).byte().permute(0, 2, 3, 1).numpy(), reference)[0]
    assert entry["reference"]["sharpness_ceiling"] == pytest.approx(want, abs=1e-3) and want > 0
    assert report["summary"]["sharpness_ceiling"] == pytest.approx(want, abs=1e-3)
    assert set(entry["videos"]) == set(emotions)
    for emotion, video in entry["videos"].items():
        assert video["frames"] == 21
        assert 0.0 <= video["face_share"] <= 1.0 and 0.0 <= video["same_person_share"] <= video["face_share"]
        assert video["sharpness"] >= 0 and video["sharpness_energy"] >= 0
        assert video["lipsync_r"] is None or -1.0 <= video["lipsync_r"] <= 1.0
        assert video["fer"]["asked"] == emotion and 0.0 <= video["fer"]["asked_share"] <= 1.0
        assert sum(video["fer"]["labels"].values()) == pytest.approx(1.0, abs=1e-3)
        # drift: 21 frames are one (partial) second, and both the first and the last 2 s are the whole video
        assert len(video["same_person_by_second"]) == 1
        assert video["same_person_first"] == video["same_person_last"] == video["same_person_share"]
        assert video["drift"] == 0.0
    gen = entry["generation"]
    assert gen["video_frames"] == 42 and gen["seconds"] > 0 and gen["frames_per_second"] > 0
    summary = report["summary"]
    for key in ("face_share", "same_person_share", "sharpness", "sharpness_energy", "fer_reads_asked",
                "per_emotion", "generation", "targets", "meets_target", "drift", "same_person_first"):
        assert key in summary
    assert set(summary["fer_reads_asked"]) == set(emotions)
    assert summary["generation"]["video_frames"] == 42

    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape == (20 + 64 + 30, 120 + 3 * 64, 3)
    saved = json.loads((out / "report.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(summary))
    text = (out / "report.json").read_text()
    assert str(tmp_path) not in text and str(folders) not in text          # no machine paths in the report


def test_silent_audio_is_measured_without_lip_sync(bundle, folders, tmp_path):
    report = evaluate_portraits(str(folders / "photos"), str(folders / "silence.wav"), checkpoint=bundle,
                                seconds=0.7, emotions="neutral", out=str(tmp_path / "out"), settings=FAST,
                                log=lambda m: None)
    video = report["results"][0]["videos"]["neutral"]
    assert report["audio"]["silent_seconds"] == pytest.approx(0.7)
    assert video["lipsync_r"] is None and video["lipsync_note"]
    assert report["summary"]["meets_target"]["lipsync_r"] is None


def test_saved_crops_measure_another_sr_head_without_sampling(bundle, folders, tmp_path):
    """--save-crops then --crops-from reproduces the report exactly; --superres-from swaps only the head."""
    photos, speech = str(folders / "photos"), str(folders / "speech.wav")
    common = dict(checkpoint=bundle, seconds=0.7, emotions="neutral,happy", settings=FAST, log=lambda m: None)
    first = evaluate_portraits(photos, speech, out=str(tmp_path / "first"), save_crops=True, **common)
    crops = np.load(tmp_path / "first" / "crops" / "astronaut.png.npy")
    assert crops.dtype == np.float32 and crops.shape == (21, 2, 3, 32, 32) and 0 <= crops.min() <= crops.max() <= 1
    index = json.loads((tmp_path / "first" / "crops" / "crops.json").read_text())
    assert list(index["portraits"]) == ["astronaut.png"] and index["settings"]["frames"] == 21
    assert index["settings"]["checkpoint_sha256"] == hashlib.sha256(open(bundle, "rb").read()).hexdigest()
    assert first["crops"] == "sampled, saved in crops/"

    again = evaluate_portraits(photos, speech, out=str(tmp_path / "again"),
                               crops_from=str(tmp_path / "first" / "crops"), **common)
    assert again["results"][0]["videos"] == first["results"][0]["videos"]         # the same videos, measured alike
    assert again["results"][0]["generation"]["sampling_seconds"] == \
        first["results"][0]["generation"]["sampling_seconds"]
    assert again["crops"].startswith("read from") and again["superres"] == "head"

    torch.manual_seed(7)                                   # another head: same crops, other pixels
    other = SuperResolver(SUPERRES_PRESETS["tiny"])
    with torch.no_grad():                                  # (a fresh head starts as plain upsampling: perturb it)
        for weight in other.parameters():
            weight.add_(0.05 * torch.randn_like(weight))
    head = tmp_path / "other_head.safetensors"
    save_checkpoint(str(head), {"superres": other})
    swapped = evaluate_portraits(photos, speech, out=str(tmp_path / "swapped"), superres_from=str(head),
                                 crops_from=str(tmp_path / "first" / "crops"), **common)
    assert swapped["superres"] == "head of other_head.safetensors"
    sharp = [swapped["results"][0]["videos"][e]["sharpness"] for e in ("neutral", "happy")]
    assert sharp != [first["results"][0]["videos"][e]["sharpness"] for e in ("neutral", "happy")]
    assert swapped["results"][0]["reference"]["sharpness_ceiling"] != first["results"][0]["reference"]["sharpness_ceiling"]

    # crops made otherwise are refused by name; so are a folder without crops, both flags, a file without a head
    with pytest.raises(PortraitEvaluationError, match="other settings.*seed: crops 0, this run 1"):
        evaluate_portraits(photos, speech, out=str(tmp_path / "x"), crops_from=str(tmp_path / "first" / "crops"),
                           seed=1, **common)
    with pytest.raises(PortraitEvaluationError, match="portrait_identity: crops 'neutral', this run 'photo'"):
        evaluate_portraits(photos, speech, out=str(tmp_path / "x"), crops_from=str(tmp_path / "first" / "crops"),
                           portrait_identity="photo", **common)
    with pytest.raises(PortraitEvaluationError, match="holds no crops.json"):
        evaluate_portraits(photos, speech, out=str(tmp_path / "x"), crops_from=str(folders), **common)
    with pytest.raises(PortraitEvaluationError, match="exclude each other"):
        evaluate_portraits(photos, speech, out=str(tmp_path / "x"), crops_from=str(tmp_path / "first" / "crops"),
                           save_crops=True, **common)
    denoiser_only = tmp_path / "denoiser_only.safetensors"
    save_checkpoint(str(denoiser_only), {"denoiser": EMOdiffheadDenoiser(DENOISER_PRESETS["tiny"])})
    with pytest.raises(PortraitEvaluationError, match="--superres-from: .*not 'superres'"):
        evaluate_portraits(photos, speech, out=str(tmp_path / "x"), superres_from=str(denoiser_only), **common)
    assert not any(n.endswith(".partial.npy") for n in os.listdir(tmp_path / "first" / "crops"))


def test_expression_noise_per_portrait_draws_the_generator_per_photo(bundle, folders, tmp_path):
    """Two copies of one photo: with the shared noise their videos are the same; per portrait the first keeps the
    shared draw (seed * 1000 + 0) and the second gets its own; the setting is reported and keeps crops apart."""
    import shutil

    from training.evaluate_portraits import expression_seed

    assert [expression_seed(1, i, "per-portrait") for i in (0, 2)] == [1000, 1002]
    assert expression_seed(1, 2, "shared") == 1
    with pytest.raises(PortraitEvaluationError, match="--expression-noise must be one of shared, per-portrait"):
        expression_seed(0, 0, "per-video")
    with pytest.raises(PortraitEvaluationError, match="up to 1000 portraits per seed"):
        expression_seed(0, 1000, "per-portrait")
    photos = tmp_path / "twins"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(folders / "photos" / "astronaut.png", photos / name)
    common = dict(checkpoint=bundle, seconds=0.3, emotions="sad", settings=FAST, save_crops=True, log=lambda m: None)
    runs = {noise: evaluate_portraits(str(photos), str(folders / "speech.wav"), out=str(tmp_path / noise),
                                      expression_noise=noise, **common) for noise in ("shared", "per-portrait")}
    crops = {(noise, name): np.load(tmp_path / noise / "crops" / f"{name}.npy") for noise in runs
             for name in ("a.png", "b.png")}
    assert np.array_equal(crops["shared", "a.png"], crops["shared", "b.png"])
    assert np.array_equal(crops["per-portrait", "a.png"], crops["shared", "a.png"])
    assert not np.array_equal(crops["per-portrait", "b.png"], crops["shared", "b.png"])
    assert runs["per-portrait"]["expression_noise"] == "per-portrait" and runs["shared"]["expression_noise"] == "shared"
    with pytest.raises(PortraitEvaluationError, match="expression_noise: crops 'shared', this run 'per-portrait'"):
        evaluate_portraits(str(photos), str(folders / "speech.wav"), out=str(tmp_path / "x"),
                           crops_from=str(tmp_path / "shared" / "crops"), expression_noise="per-portrait",
                           **dict(common, save_crops=False))
    with pytest.raises(PortraitEvaluationError, match="--expression-noise must be one of"):
        evaluate_portraits(str(photos), str(folders / "speech.wav"), out=str(tmp_path / "y"),
                           expression_noise="per-video", **common)
    assert not (tmp_path / "y").exists()                  # refused before anything is written


def test_bad_input_gives_clear_errors(bundle, folders, tmp_path):
    speech = str(folders / "speech.wav")
    with pytest.raises(PortraitEvaluationError, match="no images"):
        list_portraits(str(folders / "empty"))
    with pytest.raises(PortraitEvaluationError, match="not found"):
        list_portraits(str(folders / "nowhere"))
    with pytest.raises(PortraitEvaluationError, match="folder"):
        list_portraits(speech)
    with pytest.raises(PortraitEvaluationError, match="unknown emotion"):
        parse_emotions("happy,elated")
    assert parse_emotions("Happy, surprise,happy") == ["happy", "surprised"]
    with pytest.raises(PortraitEvaluationError, match="audio file not found"):
        evaluate_portraits(str(folders / "photos"), str(folders / "missing.wav"), checkpoint=bundle,
                           out=str(tmp_path / "a"))
    with pytest.raises(pl.PipelineError, match="--reinject-identity-every must be >= 0"):
        evaluate_portraits(str(folders / "photos"), speech, checkpoint=bundle, reinject_identity_every=-1,
                           out=str(tmp_path / "b"))
    with pytest.raises(pl.PipelineError, match="--portrait-identity must be one of neutral, photo"):
        evaluate_portraits(str(folders / "photos"), speech, checkpoint=bundle, portrait_identity="crop",
                           out=str(tmp_path / "b"))
    with pytest.raises(pl.PipelineError, match="--start-mouth must be one of previous, rig"):
        evaluate_portraits(str(folders / "photos"), speech, checkpoint=bundle, start_mouth="warp",
                           out=str(tmp_path / "b"))
    with pytest.raises(PortraitEvaluationError, match="--seconds"):
        evaluate_portraits(str(folders / "photos"), speech, checkpoint=bundle, seconds=0, out=str(tmp_path / "b"))
    with pytest.raises(PortraitEvaluationError, match="no usable portrait.*wall.png"):
        evaluate_portraits(str(folders / "walls"), speech, checkpoint=bundle, seconds=0.7, emotions="neutral",
                           out=str(tmp_path / "c"), settings=FAST, log=lambda m: None)
    # the command line: exit status 2 and the reason, no traceback
    result = subprocess.run([sys.executable, "-m", "training", "evaluate-portraits", "--portraits",
                             str(folders / "empty"), "--audio", speech, "--checkpoint", bundle,
                             "--out", str(tmp_path / "d")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no images" in result.stderr and "Traceback" not in result.stderr


def test_sharpness_is_one_against_itself_and_lower_when_blurred(astronaut_crop):
    crop = astronaut_crop
    box = aligned_face_box(128)
    for statistic in ("median_abs", "mean_square"):
        assert sharpness_ratio(crop[None], crop, statistic=statistic)[0] == pytest.approx(1.0)
        blurred = np.stack([cv2.GaussianBlur(crop, (0, 0), s) for s in (0.7, 1.0, 2.0)])
        ratios = sharpness_ratio(blurred, crop, statistic=statistic)
        assert np.all(ratios < 0.8) and np.all(np.diff(ratios) < 0), (statistic, ratios)
    # the median measure sees flat skin behind hard edges: a blurred face with sharp outlines drawn back in
    # keeps most of its energy but not its typical-pixel detail
    flat = cv2.GaussianBlur(crop, (0, 0), 2.0)
    edges = cv2.Canny(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), 100, 200) > 0
    outlined = flat.copy()
    outlined[edges] = 0
    assert sharpness_ratio(outlined[None], crop, statistic="median_abs")[0] < 0.5
    assert sharpness_ratio(outlined[None], crop, statistic="mean_square")[0] > 1.0
    # a larger reference is brought to the frames' size first (area averaging), then compared
    big = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_CUBIC)
    assert 0.5 < sharpness_ratio(crop[None], big)[0] < 2.0
    # the definitions: mean square and median absolute value of the 4-neighbour Laplacian inside the box
    grey = crop.astype(np.float64) / 255 @ np.array([0.299, 0.587, 0.114])
    lap = cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT)
    x0, y0, x1, y1 = box
    assert high_frequency_energy(crop, box) == pytest.approx(float(np.mean(lap[y0:y1, x0:x1] ** 2)), rel=1e-4)
    assert high_frequency_amplitude(crop, box) == pytest.approx(float(np.median(np.abs(lap[y0:y1, x0:x1]))),
                                                                rel=1e-4)


def test_mouth_opening_on_known_landmarks():
    lm = template_landmarks((256, 256)).astype(np.float64)
    eye = np.linalg.norm(lm[45] - lm[36])
    closed = lm.copy()
    closed[[65, 66, 67]] = closed[[63, 62, 61]]           # lower inner lip on the upper one
    opened = closed.copy()
    opened[[65, 66, 67], 1] += 12.0                       # 12 px gap
    wide = closed.copy()
    wide[[65, 66, 67], 1] += 30.0
    values = mouth_opening(np.stack([closed, opened, wide]))
    assert values == pytest.approx([0.0, 12.0 / eye, 30.0 / eye])
    assert mouth_opening(opened) == pytest.approx([12.0 / eye])        # one [68, 2] frame
    # scale invariance: the same face twice as large opens the same amount
    assert mouth_opening(opened * 2.0) == pytest.approx([12.0 / eye])
    with pytest.raises(ValueError):
        mouth_opening(np.zeros((5, 2)))
    # frames without a face: interpolated between frames with one, and count as "not the same person"
    faces = FrameFaces(found=np.array([True, False, True, False]), distance=np.array([0.3, np.nan, 0.7, np.nan]),
                       landmarks=np.stack([closed, np.zeros_like(closed), wide, np.zeros_like(closed)]))
    mouth, measured = faces.mouth()
    assert measured == 2 and mouth == pytest.approx([0.0, 15.0 / eye, 30.0 / eye, 30.0 / eye])
    assert faces.face_share == 0.5 and faces.same_person_share() == 0.25


def test_dlib_meter_on_a_photo_and_its_crop(astronaut, astronaut_crop):
    meter = DlibFaceMeter()
    photo = meter.face(astronaut)
    crop = meter.face(astronaut_crop)                       # 128 px: upscaled to 256 before detection
    assert photo is not None and crop is not None
    assert np.linalg.norm(photo[0] - crop[0]) < 0.6        # the same person
    assert meter.face(np.full((128, 128, 3), 128, np.uint8)) is None
    faces = meter.measure(np.stack([astronaut_crop, np.full_like(astronaut_crop, 128)]), photo[0])
    assert faces.found.tolist() == [True, False] and faces.same_person_share() == 0.5
    # landmarks come back in the frame's own pixels: the mouth sits in the lower half of the crop
    assert 64 < faces.landmarks[0, 62, 1] < 128
