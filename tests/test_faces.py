"""emodiff_core.landmarks: detection (dlib, FAN with local random weights); emodiff_core.faces: alignment,
paste-back."""
import math
import os
import socket
import sys

import cv2
import numpy as np
import pytest
import torch

from emodiff_core import faces as F
from emodiff_core import landmarks as LM

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut():
    return skdata.astronaut()   # NASA portrait, public domain, 512x512 RGB


@pytest.fixture(scope="module")
def dlib_backend():
    pytest.importorskip("dlib")
    return LM.get_backend("dlib")


@pytest.fixture(scope="module")
def astronaut_landmarks(astronaut, dlib_backend):
    return LM.detect_portrait(astronaut, dlib_backend)


# --------------------------------------------------------------------------- detection
def test_dlib_finds_the_astronaut(astronaut, dlib_backend):
    dets = dlib_backend.detect(astronaut)
    assert len(dets) == 1
    d = dets[0]
    x0, y0, x1, y1 = d.box
    assert 150 < x0 < 200 and 60 < y0 < 110 and 240 < x1 < 290 and 150 < y1 < 200
    assert d.score > 0.5
    lm = d.landmarks
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    assert x0 - 10 < lm[30, 0] < x1 + 10 and y0 < lm[30, 1] < y1 + 10          # nose tip in the face box
    assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0]                     # eyes left to right
    assert lm[36:48, 1].mean() < lm[30, 1] < lm[48:68, 1].mean() < lm[8, 1]  # eyes, nose, mouth, chin downwards
    eye = np.hypot(*(lm[45] - lm[36]))
    assert 50 < eye < 90


def test_image_normalisation_rgba_grey_float(astronaut, dlib_backend, astronaut_landmarks):
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    rgba = np.concatenate([astronaut, np.full(astronaut.shape[:2] + (1,), 255, np.uint8)], axis=2)
    rgba[:, :60, 3] = 0       # a transparent stripe: composited over neutral grey
    assert np.all(F.to_rgb_uint8(rgba)[:, :60] == F.RGBA_BACKGROUND)
    for img in (grey, grey[..., None], rgba, astronaut.astype(np.float32) / 255.0,
                torch.from_numpy(astronaut.astype(np.float32) / 255.0)[None]):
        lm = LM.detect_portrait(img, dlib_backend)
        assert np.abs(lm - astronaut_landmarks).mean() < 2.0
    with pytest.raises(F.FaceError, match="0..1"):
        F.to_rgb_uint8(astronaut.astype(np.float32))
    with pytest.raises(F.FaceError, match="shape"):
        F.to_rgb_uint8(np.zeros((10, 10, 5), np.uint8))


def test_tiny_image_is_rejected_clearly(dlib_backend):
    with pytest.raises(F.FaceError, match=r"16x16 px, too small to hold a face"):
        LM.detect_portrait(np.zeros((16, 16, 3), np.uint8), dlib_backend)


def test_huge_image_detects_on_a_downscaled_copy(astronaut, dlib_backend, astronaut_landmarks):
    big = np.full((4000, 6000, 3), 90, np.uint8)
    big[1000:3048, 2500:4548] = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_LINEAR)
    lm = LM.detect_portrait(big, dlib_backend)
    expected = astronaut_landmarks * 4 + np.array([2500, 1000])
    assert np.abs(lm - expected).mean() < 8.0            # 2 px at the astronaut's own scale
    crop, aligned = F.align_face(big, lm, 128)
    small_crop, _ = F.align_face(astronaut, astronaut_landmarks, 128)
    assert crop.shape == (128, 128, 3) and aligned.image_shape == (4000, 6000)
    assert np.abs(crop.astype(int) - small_crop).mean() < 12
    out = F.paste_back_frame(crop, big, aligned)
    assert out.shape == big.shape


def test_blank_image_and_centre_crop(dlib_backend):
    blank = np.full((300, 400, 3), 200, np.uint8)
    with pytest.raises(LM.FaceNotFoundError, match="enable centre crop"):
        LM.detect_portrait(blank, dlib_backend)
    lm = LM.detect_portrait(blank, dlib_backend, allow_centre_crop=True)
    assert lm.shape == (68, 2)
    # the template's crop is the central square of the image
    ramp = np.tile(np.linspace(0, 255, 400).astype(np.uint8)[None, :, None], (300, 1, 3))
    crop, aligned = F.align_face(ramp, lm, 100)
    assert np.allclose(aligned.to_original([[0, 0], [100, 100]]), [[50, 0], [350, 300]], atol=1e-3)
    assert crop.shape == (100, 100, 3)


def test_face_index_out_of_range(astronaut, dlib_backend):
    with pytest.raises(F.FaceError, match="face_index 1 requested but 1 face"):
        LM.detect_portrait(astronaut, dlib_backend, face_index=1)


# --------------------------------------------------------------------------- alignment
def test_alignment_puts_nose_at_centre_and_eyes_level(astronaut, astronaut_landmarks):
    for size in (64, 256):
        crop, a = F.align_face(astronaut, astronaut_landmarks, size)
        assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
        assert np.allclose(a.landmarks[30], [size / 2, size / 2], atol=1e-3)
        eye = a.landmarks[45] - a.landmarks[36]
        assert abs(eye[1]) < 1e-3
        assert eye[0] == pytest.approx(size / F.ALIGN_CROP_EYE_RATIO, rel=1e-5)
        back = a.to_original(a.landmarks)
        assert np.abs(back - astronaut_landmarks).max() < 0.05
    # without rotation the eye line keeps its tilt
    _, a = F.align_face(astronaut, astronaut_landmarks, 64, rotate=False)
    tilt = astronaut_landmarks[45] - astronaut_landmarks[36]
    eye = a.landmarks[45] - a.landmarks[36]
    assert math.atan2(eye[1], eye[0]) == pytest.approx(math.atan2(tilt[1], tilt[0]), abs=1e-5)


def test_warp_follows_the_continuous_pixel_convention():
    """On a linear ramp image I(x, y) = x + 1.5 y (continuous coordinates) every crop pixel must hold the ramp's
    value at its centre mapped back to the original, for magnifying and for strongly shrinking crops."""
    h = w = 100
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    ramp = np.repeat((xs + 1.5 * ys)[..., None], 3, axis=2)
    img = np.clip(ramp, 0, 255).astype(np.float32) / 255.0
    for centre, side, angle, size in (((50.0, 50.0), 40.0, 0.5, 64), ((47.3, 52.1), 60.0, -0.3, 13),
                                      ((50.0, 50.0), 64.0, 0.0, 64)):
        a = F.AlignedCrop.from_params(centre, side, angle, size, (h, w))
        crop = F.warp_to_crop(img, a)
        cy, cx = np.mgrid[0:size, 0:size] + 0.5
        p = a.to_original(np.stack([cx, cy], -1))
        expected = p[..., 0] + 1.5 * p[..., 1]
        inner = slice(2, size - 2)
        assert np.abs(crop[inner, inner, 0] - expected[inner, inner]).max() < 1.01, (side, size)


def test_video_alignment_smooths_and_tracks(astronaut, dlib_backend, astronaut_landmarks):
    shifts = [0, 2, 4, 6, 8, 10]
    frames = [np.roll(astronaut, s, axis=1) for s in shifts]
    lms, found = LM.track_landmarks(frames, dlib_backend)
    assert lms.shape == (6, 68, 2) and found.all()
    assert np.allclose(lms[:, 30, 0] - lms[0, 30, 0], shifts, atol=1.5)
    crops, aligned = F.align_video(frames, lms, 64, smoothing=2.0)
    assert crops.shape == (6, 64, 64, 3) and len(aligned) == 6
    nose = np.stack([a.landmarks[30] for a in aligned])
    assert np.abs(nose - 32).max() < 2.0
    with pytest.raises(LM.FaceNotFoundError, match="frame"):
        LM.track_landmarks([np.full((200, 200, 3), 128, np.uint8)] * 3, dlib_backend, max_gap=1)


# --------------------------------------------------------------------------- paste-back
def test_paste_back_of_the_unmodified_crop_reproduces_the_original(astronaut, astronaut_landmarks):
    crop, a = F.align_face(astronaut, astronaut_landmarks, 256)
    mask = F.paste_mask(a)
    out = F.paste_back_frame(crop, astronaut, a)
    inside = mask > 0.99
    diff = np.abs(out.astype(int) - astronaut)
    assert inside.sum() > 4000
    assert diff[inside].mean() < 4.0 and np.percentile(diff[inside], 99) < 25
    assert np.array_equal(out[mask == 0], astronaut[mask == 0])     # untouched outside the mask
    # a changed crop only changes the face region; frames are produced one at a time
    red = crop.copy()
    red[..., 0] = 255
    gen = F.paste_back(np.stack([crop, red]), astronaut, a)
    first, second = next(gen), next(gen)
    assert np.array_equal(first, out)
    assert second[inside][:, 0].min() >= 250 and np.array_equal(second[mask == 0], astronaut[mask == 0])
    # region="crop" and a crop at another resolution (e.g. a 64 px model output of a 256 px alignment)
    small = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA)
    out2 = F.paste_back_frame(small, astronaut, a, region="crop")
    inside2 = F.paste_mask(a, region="crop", crop_size=64) > 0.99
    assert np.abs(out2.astype(int) - astronaut)[inside2].mean() < 10.0


def test_paste_back_checks_the_original_size(astronaut, astronaut_landmarks):
    crop, a = F.align_face(astronaut, astronaut_landmarks, 64)
    with pytest.raises(F.FaceError, match="paste into the image the crop came from"):
        F.paste_back_frame(crop, astronaut[:100], a)


# --------------------------------------------------------------------------- FAN (face-alignment), offline
@pytest.fixture(scope="module")
def face_alignment_module():
    """face_alignment imported with numba's JIT off for its import only: its heat-map decoder would otherwise
    spend ~9 s compiling in every test run (pure Python gives the same numbers; speed is irrelevant here)."""
    if "face_alignment" not in sys.modules:
        try:
            import numba
        except ImportError:
            numba = None
        saved = numba.config.DISABLE_JIT if numba else None
        if numba:
            numba.config.DISABLE_JIT = True
        try:
            pytest.importorskip("face_alignment")
        finally:
            if numba:
                numba.config.DISABLE_JIT = saved
    return pytest.importorskip("face_alignment")


def _write_random_fan_weights(checkpoints: str):
    """Random-init FAN and S3FD state dicts under face-alignment's expected names. S3FD's classifier is set so
    that only its coarsest head fires (one predictable candidate) and the test stays fast."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    torch.manual_seed(0)
    os.makedirs(checkpoints, exist_ok=True)
    torch.save(FAN(4).state_dict(), os.path.join(checkpoints, LM.FAN_WEIGHTS))
    net = s3fd()
    with torch.no_grad():
        for name, mod in net.named_children():
            if name.endswith("mbox_loc"):
                mod.weight.zero_()
                mod.bias.zero_()
            elif name.endswith("mbox_conf"):
                mod.weight.zero_()
                mod.bias.fill_(5.0)
                if name == "conv7_2_mbox_conf":
                    mod.bias.copy_(torch.tensor([-5.0, 5.0]))
                else:
                    mod.bias[-1] = -5.0
    torch.save(net.state_dict(), os.path.join(checkpoints, LM.S3FD_WEIGHTS))


def test_fan_weight_names_match_the_installed_face_alignment(face_alignment_module):
    assert LM._fan_weight_names(face_alignment_module) == (LM.FAN_WEIGHTS, LM.S3FD_WEIGHTS)


def test_fan_missing_weights_error_says_where(face_alignment_module, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(LM.LandmarkBackendError) as exc:
        LM.FanBackend()
    msg = str(exc.value)
    assert os.path.join(str(tmp_path), "hub", "checkpoints") in msg
    assert LM.FAN_WEIGHTS in msg and LM.S3FD_WEIGHTS in msg and "never downloads" in msg
    assert not LM.fan_available()
    assert isinstance(LM.get_backend("auto"), LM.DlibBackend)


def test_fan_backend_loads_local_weights_without_network(face_alignment_module, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _write_random_fan_weights(os.path.join(str(tmp_path), "hub", "checkpoints"))

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    assert LM.fan_available()
    denormal = torch.set_flush_denormal(True)   # random deep weights produce denormals: very slow on CPU
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        backend = LM.FanBackend()
        img = (np.random.default_rng(0).random((128, 128, 3)) * 255).astype(np.uint8)
        dets = backend.detect(img)
        assert len(dets) == 1
        assert dets[0].landmarks.shape == (68, 2) and dets[0].landmarks.dtype == np.float32
        assert np.isfinite(dets[0].landmarks).all()
        lm = backend.fit(img, (30, 20, 100, 90))
        assert lm.shape == (68, 2) and np.isfinite(lm).all()
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)
    del denormal


def test_aligned_crop_for_a_resized_image_maps_the_same_points():
    from emodiff_core.faces import AlignedCrop

    aligned = AlignedCrop.from_params((3000.0, 2000.0), 900.0, 0.2, 64, (4000, 6000))
    small = aligned.for_resized_image(1280, 1920)
    points = np.array([[2800.0, 1900.0], [3300.0, 2250.0]])
    scaled = points * np.array([1920 / 6000, 1280 / 4000])
    assert np.allclose(small.to_crop(scaled), aligned.to_crop(points))
    assert np.allclose(small.to_original(aligned.to_crop(points)), scaled)
    assert small.image_shape == (1280, 1920) and small.size == aligned.size
