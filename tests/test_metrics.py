"""Metrics with known answers: FLIE, LPIPS/LIE, emotion accuracy, lip sync, identity, Frechet distance."""
import os

import numpy as np
import pytest
import torch

from emodiff_core import evaluation as EV
from emodiff_core import feature_nets as FN
from emodiff_core import metrics as M
from emodiff_core import metrics_video as MV
from emodiff_core.sampling import Sampler, SamplingSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- FLIE
def test_flie_is_zero_for_linear_levels():
    direction = np.array([1.0, -0.5, 2.0, 0.25])
    levels = np.linspace(0, 1, 6)[:, None] * direction[None] + np.array([0.3, 0.1, -0.2, 0.0])
    r = M.flie(levels)
    assert r.flie == pytest.approx(0.0, abs=1e-12)
    assert list(r.kept) == [0, 1, 2, 3]


def test_flie_hand_computed_nonlinear_case():
    # dim 0: means 0, 1, 3, 6 -> steps 1, 2, 3: mu 2, sigma sqrt(2/3) (population), CV 0.8165
    # dim 1: means 0, 2, 4, 6 -> steps 2, 2, 2: CV 0
    levels = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0], [6.0, 6.0]])
    r = M.flie(levels)
    assert r.flie == pytest.approx(np.sqrt(2.0 / 3.0) / 2.0, rel=1e-12)
    assert r.per_dimension == pytest.approx([np.sqrt(2 / 3) / 2, 0.0])
    assert r.steps.tolist() == [[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]]


def test_flie_guard_excludes_a_dimension_that_barely_moves():
    # dim 2 moves by +0.001, -0.0012, +0.0005 (mean step 1e-4, far below 1% of the largest mean step 2):
    # its CV would be ~8 and dominate the sum; the guard leaves it out.
    levels = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.001], [3.0, 4.0, -0.0002], [6.0, 6.0, 0.0003]])
    r = M.flie(levels)
    assert list(r.kept) == [0, 1]
    assert r.flie == pytest.approx(np.sqrt(2.0 / 3.0) / 2.0)
    unguarded = M.flie(levels, relative_floor=0.0)
    assert unguarded.flie > r.flie + 5


def test_moved_components_keep_each_rows_moves_of_at_least_the_share_of_its_largest():
    from emodiff_core.metrics_video import moved_components

    moves = np.array([[0.0, 1.0, 0.05, -0.2, 0.0],        # 0.05 is under 10 % of 1.0; |-0.2| is not
                      [0.0, 0.0, 0.0, 0.0, 0.0],          # a row that moves nothing has no moved component
                      [0.3, -0.3, 0.1, 0.0, 0.0]])
    assert moved_components(moves).tolist() == [[False, True, False, True, False], [False] * 5,
                                                [True, True, True, False, False]]
    assert moved_components(moves, share=0.5)[2].tolist() == [True, True, False, False, False]
    assert moved_components(moves[0]).tolist() == [False, True, False, True, False]     # one row alone


def test_edit_dims_are_the_dimensions_the_asked_edit_moves():
    from emodiff_core.feature_nets import MetricInputError
    from emodiff_core.metrics_video import edit_dims

    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 5))                      # 6 frames, 5 dims; the edit moves dims 1 (a lot), 3 (a bit)
    step = np.array([0.0, 1.0, 0.05, -0.2, 0.0])
    levels = [base + k * step for k in (0.0, 0.5, 1.0)]
    assert edit_dims(levels) == [1, 3]                  # 0.05 is under 10 % of 1.0, 0.2 is not
    assert edit_dims(levels, share=0.5) == [1]
    assert edit_dims(levels, among=[0, 2, 3, 4]) == [2, 3]    # measured against the largest candidate, 0.2
    with pytest.raises(MetricInputError, match="does not change"):
        edit_dims([base, base, base])
    with pytest.raises(MetricInputError, match="does not change"):
        edit_dims(levels, among=[0, 4])
    with pytest.raises(MetricInputError, match="share"):
        edit_dims(levels, share=0.0)


def test_condition_dims_are_the_components_a_denoiser_reads():
    import dataclasses

    from emodiff_core.config import preset
    from emodiff_core.metrics_video import condition_dims

    raw = preset("denoiser", "tiny")
    assert condition_dims(raw) is None                   # raw psi: every component
    scale = tuple([1.0] * 13 + [0.0] * (raw.expression_dim - 13))
    kept = dataclasses.replace(raw, expression_mean=tuple([0.0] * raw.expression_dim), expression_scale=scale)
    assert condition_dims(kept) == list(range(13))


def test_flie_needs_three_levels():
    with pytest.raises(ValueError, match="at least 2 intensity levels"):
        M.flie(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="does not change"):
        M.flie(np.ones((4, 3)))
    with pytest.raises(FN.MetricInputError, match="3 or more"):
        MV.flie_from_psi([np.zeros((4, 3))] * 2)


def test_flie_from_per_frame_psi_takes_level_means():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=6)
    per_level = []
    for k in np.linspace(0, 1, 5):
        frames = k * direction + rng.normal(0, 0.3, (40, 6))
        per_level.append(frames - frames.mean(0) + k * direction)      # exact level mean k * direction
    r = MV.flie_from_psi(per_level)
    assert r.flie == pytest.approx(0.0, abs=1e-9)
    assert r.mean_psi.shape == (5, 6) and r.intensities.tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    sub = MV.flie_from_psi(per_level, dims=[0, 2])
    assert sub.mean_psi.shape == (5, 2) and sub.dims == [0, 2]
    # a psi extractor callable on "videos"
    r2 = MV.flie_from_videos(per_level, extractor=lambda v: np.asarray(v))
    assert r2.flie == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------- psi extraction
def _tiny_regressor():
    from emodiff_core.config import RegressorConfig
    from emodiff_core.models import ExpressionRegressor

    torch.manual_seed(0)
    return ExpressionRegressor(RegressorConfig(image_size=32, channels=8)).eval()


def test_psi_extractor_regressor_and_errors(tmp_path):
    ex = MV.PsiExtractor(_tiny_regressor())
    frames = torch.rand(5, 1, 3, 48, 48)
    psi = ex(frames)
    assert psi.shape == (5, 50) and psi.dtype == np.float32 and ex.source == "regressor"
    u8 = (frames[:, 0].permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    assert np.allclose(ex(u8), psi, atol=0.05)
    with pytest.raises(FN.MetricWeightsError, match="regressor"):
        MV.PsiExtractor()
    from emodiff_core.checkpoint import save_checkpoint
    from emodiff_core.config import EXPRESSION_PRESETS
    from emodiff_core.models import ExpressionGenerator

    path = save_checkpoint(str(tmp_path / "gen.safetensors"), {"expression_generator": ExpressionGenerator(EXPRESSION_PRESETS["tiny"])})
    with pytest.raises(FN.MetricWeightsError, match="no 'regressor'"):
        MV.PsiExtractor.from_files(regressor_path=path)
    path = save_checkpoint(str(tmp_path / "reg.safetensors"), {"regressor": _tiny_regressor()})
    assert MV.PsiExtractor.from_files(regressor_path=path)(frames).shape == (5, 50)


def test_video_flie_on_tiny_models(perturbed_tiny_denoiser):
    from emodiff_core import pipeline as pl
    from emodiff_core.config import EXPRESSION_PRESETS
    from emodiff_core.models import ExpressionGenerator

    den = perturbed_tiny_denoiser()
    gen = ExpressionGenerator(EXPRESSION_PRESETS["tiny"]).eval()
    t = np.arange(int(0.1 * 16000)) / 16000
    audio = pl.encode_audio((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, 30, den.config.audio)
    result, videos = EV.video_flie(den, gen, torch.rand(3, 32, 32), audio, "happy", MV.PsiExtractor(_tiny_regressor()),
                                   levels=2, settings=SamplingSettings(steps=2))
    assert len(videos) == 3 and videos[0].shape == (audio.num_frames, 3, 32, 32)
    assert np.isfinite(result.flie) and result.mean_psi.shape == (3, 50)
    with pytest.raises(FN.MetricInputError, match="at least 2"):
        MV.intensity_levels(1)


# --------------------------------------------------------------------------- LPIPS / LIE
def _lpips_files(tmp_path, net="alex", fmt="pt"):
    torch.manual_seed(1)
    model = FN.LPIPS(net)
    lins = {f"lin{i}.model.1.weight": lin.weight.detach().abs().clone() for i, lin in enumerate(model.lins)}
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(4, 4)      # a full torchvision state dict has more keys
    if fmt == "pt":
        lin_path, bb_path = tmp_path / f"{net}_lin.pth", tmp_path / f"{net}_backbone.pth"
        torch.save(lins, lin_path)
        torch.save(backbone, bb_path)
    else:
        from safetensors.torch import save_file

        lin_path, bb_path = tmp_path / f"{net}_lin.safetensors", tmp_path / f"{net}_backbone.safetensors"
        save_file(lins, str(lin_path))
        save_file(backbone, str(bb_path))
    return str(lin_path), str(bb_path)


@pytest.mark.parametrize("net,fmt", [("alex", "pt"), ("vgg", "safetensors")])
def test_lpips_loader_and_lie_properties(tmp_path, net, fmt):
    lin, bb = _lpips_files(tmp_path, net, fmt)
    model = FN.load_lpips(lin, bb)
    assert model.backbone.net == net
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 3, 48, 48, generator=g), torch.rand(3, 3, 48, 48, generator=g)
    d_ab, d_ba = MV.lpips_distance(model, a, b), MV.lpips_distance(model, b, a)
    assert np.allclose(d_ab, d_ba, rtol=1e-5) and (d_ab > 0).all()
    assert np.allclose(MV.lpips_distance(model, a, a), 0.0, atol=1e-7)
    same = MV.lie([a, a, a], model)
    assert same.lie == pytest.approx(0.0, abs=1e-7)
    r = MV.lie([a, b, a], model)
    assert r.lie > 0 and r.per_step.shape == (2,) and r.per_step[0] == pytest.approx(r.per_step[1], rel=1e-5)
    assert r.cv == pytest.approx(0.0, abs=1e-4)


def test_lpips_errors_are_clear(tmp_path):
    lin, bb = _lpips_files(tmp_path, "alex")
    with pytest.raises(FN.MetricWeightsError, match="LIE needs LPIPS"):
        MV.lie([torch.rand(2, 3, 32, 32)] * 3, None)
    with pytest.raises(FN.MetricWeightsError, match="no weight file given"):
        FN.load_lpips(None, bb)
    with pytest.raises(FN.MetricWeightsError, match="does not exist"):
        FN.load_lpips(lin, str(tmp_path / "missing.pth"))
    torch.save({"lin0.model.1.weight": torch.ones(1, 64, 1, 1)}, tmp_path / "partial.pth")
    with pytest.raises(FN.MetricWeightsError, match="lin0..lin4"):
        FN.load_lpips(str(tmp_path / "partial.pth"), bb)
    vgg_lin, _ = _lpips_files(tmp_path, "vgg")
    with pytest.raises(FN.MetricWeightsError, match="lacks 'features.0.weight'|shape"):
        FN.load_lpips(vgg_lin, bb)                       # VGG linear heads with AlexNet backbone weights


class _NotAStateDict:
    pass


def test_weight_files_are_loaded_without_running_pickled_code(tmp_path):
    path = tmp_path / "object.pth"
    torch.save({"obj": _NotAStateDict()}, path)
    with pytest.raises(FN.MetricWeightsError, match="weights_only"):
        FN.load_weight_file(str(path), "test net")


# --------------------------------------------------------------------------- emotion accuracy
def test_video_emotion_accuracy_with_a_fitted_classifier():
    from emodiff_core.emotions import EMOTIONS

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (len(EMOTIONS), 50))
    x = torch.from_numpy(np.stack([centres[j] + rng.normal(0, 0.5, (48, 50)) for j in range(8) for _ in range(10)])).float()
    y = torch.tensor([j for j in range(8) for _ in range(10)])
    clf = M.EmotionClassifier.fit(x, y, len(EMOTIONS))
    videos = [centres[EMOTIONS.index("happy")] + rng.normal(0, 0.5, (100, 50)),      # 2 windows of 48
              centres[EMOTIONS.index("sad")] + rng.normal(0, 0.5, (30, 50))]         # shorter: 1 window
    r = MV.video_emotion_accuracy(videos, ["happy", "sad"], clf)
    assert r.accuracy == 1.0 and r.windows == 3 and r.per_emotion == {"happy": 1.0, "sad": 1.0}
    wrong = MV.video_emotion_accuracy(videos, ["angry", "sad"], clf)
    assert wrong.accuracy == pytest.approx(1 / 3) and wrong.per_emotion["angry"] == 0.0
    assert MV.psi_sequence_windows(np.zeros((100, 50)), 48).shape == (2, 48, 50)


# --------------------------------------------------------------------------- lip sync
def _speech_like(n_frames=90, fps=30, sr=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(n_frames / fps * sr)) / sr
    amplitude = np.clip(np.convolve(rng.random(len(t) // 800 + 2), np.ones(3) / 3, "same"), 0.05, None)
    amp = np.interp(t, np.linspace(0, t[-1], len(amplitude)), amplitude)
    return (amp * rng.normal(0, 0.3, len(t))).astype(np.float32)


def test_lip_sync_recovers_a_known_offset():
    fps, sr, n = 30, 16000, 90
    wave = _speech_like(n, fps, sr)
    env = M.audio_envelope(wave, n, fps, sr)
    mouth = np.concatenate([np.full(3, env[0]), env[:-3]])          # mouth[t + 3] = env[t]: lags by 3 frames
    r = MV.video_lip_sync(None, wave, fps, sr, mouth=mouth)
    assert r.sync.best_offset == 3 and r.sync.best_correlation == pytest.approx(1.0, abs=1e-9)
    assert r.sync.confidence > 0.5
    noise = np.random.default_rng(5).normal(size=n)
    r_noise = MV.video_lip_sync(None, wave, fps, sr, mouth=noise)
    assert r_noise.sync.confidence < 0.3 and abs(r_noise.sync.correlation) < 0.3
    with pytest.raises(FN.MetricInputError, match="at least 20 frames"):
        MV.video_lip_sync(None, wave, fps, sr, mouth=mouth[:10])


def test_lip_sync_mouth_from_psi_extractor():
    fps, sr, n = 30, 16000, 40
    wave = _speech_like(n, fps, sr, seed=2)
    env = M.audio_envelope(wave, n, fps, sr)
    frames = torch.rand(n, 3, 16, 16)
    extractor = lambda f: np.stack([env, np.zeros(n)], 1)       # a stand-in regressor: jaw_open = envelope
    r = MV.video_lip_sync(frames, wave, fps, sr, extractor=extractor)
    assert r.source == "psi" and r.sync.best_offset == 0 and r.correlation == pytest.approx(1.0)
    with pytest.raises(FN.MetricInputError, match="no mouth signal"):
        MV.video_lip_sync(frames, wave, fps, sr)


# --------------------------------------------------------------------------- identity
@pytest.fixture(scope="module")
def descriptor():
    pytest.importorskip("dlib")
    return MV.FaceDescriptor()


def test_identity_similarity_of_dlib_descriptors(descriptor):
    skdata = pytest.importorskip("skimage.data")
    import cv2

    face = skdata.astronaut()
    assert MV.identity_similarity(face, face, descriptor).similarity == pytest.approx(1.0, abs=1e-9)
    moved = np.ascontiguousarray(np.roll(face[:, ::-1], (12, -20), axis=(0, 1)))
    r_moved = MV.identity_similarity(face, np.stack([face[:, ::-1], moved]), descriptor)
    assert r_moved.frames_with_face == 2 and r_moved.similarity > 0.97
    other = cv2.imread(os.path.join(ROOT, "assets", "portrait_procedural.png"))[..., ::-1]
    r_other = MV.identity_similarity(face, np.ascontiguousarray(other), descriptor)
    assert r_other.similarity < r_moved.similarity - 0.03
    with pytest.raises(FN.MetricInputError, match="no face"):
        MV.identity_similarity(face, skdata.chelsea(), descriptor)
    # an aligned crop without a detectable face is measured at the alignment template's box
    r_aligned = MV.identity_similarity(face, skdata.chelsea(), descriptor, assume_aligned=True)
    assert r_aligned.frames_with_face == 0 and r_aligned.per_frame.shape == (1,)


# --------------------------------------------------------------------------- Frechet distance
def test_frechet_distance_known_answers():
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2 for standard deviations s
    assert MV.frechet_distance([0.0], [[1.0]], [1.0], [[4.0]]) == pytest.approx(1.0 + 1.0)
    # diagonal covariances: sum (dmu)^2 + sum (sqrt a - sqrt b)^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert MV.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)
    # non-commuting: S1 = I, S2 = R diag(4, 1) R^T -> Tr(I + S2 - 2 S2^(1/2)) = 2 + 5 - 2 * 3 = 1
    c, s = np.cos(0.7), np.sin(0.7)
    rot = np.array([[c, -s], [s, c]])
    s2 = rot @ np.diag([4.0, 1.0]) @ rot.T
    assert MV.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), s2) == pytest.approx(1.0)
    assert MV.frechet_distance(mu1, np.diag(a), mu1, np.diag(a)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_from_samples_matches_the_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (20000, 3))
    y = rng.normal(0, 1, (20000, 3)) * np.array([1.0, 2.0, 0.5]) + np.array([1.0, 0.0, 0.0])
    expected = 1.0 + 0.0 + 1.0 + 0.25
    assert MV.frechet_distance_from_features(x, y) == pytest.approx(expected, abs=0.08)
    with pytest.raises(FN.MetricInputError):
        MV.feature_statistics(np.zeros((1, 3)))


def test_fid_fvd_need_user_weights_and_load_them(tmp_path):
    with pytest.raises(FN.MetricWeightsError, match="Inception"):
        FN.load_inception(None)
    with pytest.raises(FN.MetricWeightsError, match="I3D"):
        FN.load_i3d(str(tmp_path / "nope.pt"))
    with pytest.raises(FN.MetricWeightsError, match="FID needs"):
        MV.fid(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), None)
    with pytest.raises(FN.MetricWeightsError, match="FVD needs"):
        MV.fvd([torch.rand(16, 3, 8, 8)], [torch.rand(16, 3, 8, 8)], None)
    torch.manual_seed(0)
    inc = FN.InceptionV3Features()
    state = inc.state_dict()
    state["fc.weight"] = torch.zeros(1008, 2048)          # pytorch-fid's file has the classifier too
    torch.save(state, tmp_path / "inception.pth")
    loaded = FN.load_inception(str(tmp_path / "inception.pth"))
    frames = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.allclose(loaded(frames), inc.eval()(frames), atol=1e-5)
    small = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    fakes = torch.rand(4, 3, 40, 40)
    assert MV.fid(frames.repeat(2, 1, 1, 1), frames.repeat(2, 1, 1, 1), small) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        expected = MV.frechet_distance_from_features(small(frames.repeat(2, 1, 1, 1)), small(fakes))
    assert MV.fid(frames.repeat(2, 1, 1, 1), fakes, small, batch_size=3) == pytest.approx(expected, rel=1e-3)
    assert expected > 0
    del state["Mixed_7c.branch_pool.conv.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(FN.MetricWeightsError, match="lacks 'Mixed_7c.branch_pool.conv.weight'"):
        FN.load_inception(str(tmp_path / "broken.pth"))
    i3d = FN.I3DFeatures()
    torch.save(i3d.state_dict(), tmp_path / "i3d.pt")
    loaded3 = FN.load_i3d(str(tmp_path / "i3d.pt"))
    assert loaded3.input_size == 224
    loaded3.input_size = 64                       # a quick check at a small size (FVD itself uses 224)
    clips = MV.video_clips(torch.rand(18, 3, 16, 16), length=9)
    assert clips.shape == (2, 3, 9, 16, 16)
    with torch.no_grad():
        assert loaded3(clips[:1]).shape == (1, 400) and loaded3(clips[:1], pooled=True).shape == (1, 1024)
    tiny3d = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten())
    videos = [torch.rand(18, 3, 8, 8), torch.rand(9, 3, 8, 8)]
    assert MV.fvd(videos, videos, tiny3d, length=9) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(FN.MetricInputError, match="fewer than the clip length"):
        MV.fvd([torch.rand(5, 3, 8, 8)], videos, tiny3d, length=9)


def test_generated_video_report_on_tiny_models(tmp_path, perturbed_tiny_denoiser):
    from emodiff_core import pipeline as pl
    from emodiff_core.config import EXPRESSION_PRESETS
    from emodiff_core.emotions import EMOTIONS
    from emodiff_core.models import ExpressionGenerator

    den = perturbed_tiny_denoiser()
    gen = ExpressionGenerator(EXPRESSION_PRESETS["tiny"]).eval()
    audio = pl.encode_audio(_speech_like(21, 30, 16000), 16000, 30, den.config.audio)
    x = torch.randn(16, 48, 50)
    clf = M.EmotionClassifier.fit(x, torch.arange(16) % len(EMOTIONS), len(EMOTIONS), steps=5)
    lin, bb = _lpips_files(tmp_path, "alex")
    r = EV.generated_video_report(den, gen, torch.rand(3, 32, 32), audio, "happy", 0.8,
                                  extractor=MV.PsiExtractor(_tiny_regressor()), classifier=clf,
                                  truth_frames=torch.rand(audio.num_frames, 3, 32, 32), flie_levels=2,
                                  lpips=FN.load_lpips(lin, bb), settings=SamplingSettings(steps=2))
    assert r["frames"] == 21 and (r["sampler"], r["steps"], r["start_noise"]) == (Sampler.DDIM.value, 2, 0.5)
    for key in ("psnr", "ssim", "lipsync", "lipsync_confidence", "emotion_accuracy", "lie"):
        assert isinstance(r[key], float), key
    assert "flie" in r or "flie_error" in r
    assert r["lipsync_source"] == "psi"
    assert not any(k.startswith("level_") for k in r)      # a flat report: the per-level rows stay inside


class _StubDeca:
    """Stands in for deca.DecaExpressionEncoder: records what it was given."""

    def __init__(self):
        self.seen = None

    def encode(self, images, landmarks):
        self.seen = (len(images), np.asarray(landmarks))
        return np.zeros((len(images), 50), np.float32)


def test_psi_extractor_with_deca_uses_alignment_template_for_crops():
    from emodiff_core.faces import template_landmarks

    deca = _StubDeca()
    ex = MV.PsiExtractor(deca=deca)
    assert ex.source == "deca" and ex(torch.rand(3, 3, 64, 64)).shape == (3, 50)
    n, lms = deca.seen
    assert n == 3 and np.allclose(lms[0], template_landmarks((64, 64, 3)))
    with pytest.raises(FN.MetricInputError, match="not the jaw"):
        MV.mouth_opening_from_frames(torch.rand(3, 3, 64, 64), extractor=ex)


def test_pooled_flie_averages_the_runs_noise_away_and_names_each_term():
    """Two runs of a linear edit with opposite noise on the second level: each run's FLIE is > 0, the pooled one
    (mean psi per level over the runs, Eq. 20's mean over videos) is 0; a dimension asked little of is left out."""
    levels = np.linspace(0.0, 1.0, 4)[:, None]                            # k = 0, 1/3, 2/3, 1
    asked = levels * np.array([[1.0, 0.5, 0.05, 0.0]])                    # dims 0, 1 moved; 2 under 10 %; 3 still
    noise = np.zeros_like(asked)
    noise[1, :2] = 0.1
    runs = []
    for sign in (1.0, -1.0):
        measured = asked + sign * noise
        flie = MV.flie_from_psi([row[None] for row in measured], dims=[0, 1])
        assert flie.flie > 0.3
        runs.append({"level_psi_means": measured.tolist(), "level_condition_means": asked.tolist(),
                     "flie_edit_dims_per_dim": EV.per_dimension_cv(flie)})
    # per run, by hand: steps of dim 0 are 1/3 + 0.1, 1/3 - 0.1, 1/3 (or mirrored): CV = std / mean
    steps = np.array([1 / 3 + 0.1, 1 / 3 - 0.1, 1 / 3])
    assert runs[0]["flie_edit_dims_per_dim"]["0"] == pytest.approx(steps.std() / steps.mean())
    pooled = EV.pooled_flie(runs)
    assert pooled["edit_dims_pooled"] == [0, 1] and pooled["pooled_runs"] == 2
    assert pooled["flie_edit_dims_pooled"] == pytest.approx(0.0, abs=1e-9)
    assert set(pooled["flie_edit_dims_pooled_per_dim"]) == {"0", "1"}
    assert EV.pooled_flie(runs, among=[1])["edit_dims_pooled"] == [1]
    with pytest.raises(ValueError):
        EV.pooled_flie([])


def test_pooled_flie_jackknife_leaves_each_run_out_and_pairs_two_models_by_seed():
    """Identical runs: every leave-one-out FLIE is the full one and the SE is 0. A run that alone bends the edit:
    leaving it out gives FLIE 0, keeping it does not, and the SE follows the jackknife's formula. A model paired
    with itself differs by exactly 0 at every seed."""
    levels = np.linspace(0.0, 1.0, 4)[:, None]
    asked = levels * np.array([[1.0, 0.5]])
    same = [{"level_psi_means": asked.tolist(), "level_condition_means": asked.tolist()}] * 4
    assert np.allclose(EV.pooled_flie_jackknife(same), 0.0, atol=1e-9)
    assert EV.jackknife_se(EV.pooled_flie_jackknife(same)) == pytest.approx(0.0, abs=1e-9)
    bent = asked.copy()
    bent[1] += 0.2
    runs = same[:3] + [{"level_psi_means": bent.tolist(), "level_condition_means": asked.tolist()}]
    loo = EV.pooled_flie_jackknife(runs)
    assert loo[3] == pytest.approx(0.0, abs=1e-9) and np.all(loo[:3] > 0.1)
    assert np.allclose(loo[:3], loo[0])
    n = 4
    assert EV.jackknife_se(loo) == pytest.approx(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
    assert np.array_equal(EV.pooled_flie_jackknife(runs) - loo, np.zeros(4))
    assert EV.jackknife_se(np.array([1.0, np.nan, 3.0])) == pytest.approx(np.sqrt(0.5 * 2.0))   # NaN dropped
    with pytest.raises(ValueError, match="at least 3 runs"):
        EV.pooled_flie_jackknife(runs[:2])
    # grouped: a whole group (an identity's seeds) is left out at a time, one value per group in first-seen order
    grouped = EV.pooled_flie_jackknife(runs + runs[:2], groups=["a", "b", "c", "bent", "a", "b"])
    assert grouped.shape == (4,) and grouped[3] == pytest.approx(0.0, abs=1e-9) and np.all(grouped[:3] > 0.1)
    with pytest.raises(ValueError, match="at least 3 runs \\(or groups\\), got 2"):
        EV.pooled_flie_jackknife(runs, groups=["a", "a", "b", "b"])
    with pytest.raises(ValueError, match="one group per run"):
        EV.pooled_flie_jackknife(runs, groups=["a", "b", "c"])
    with pytest.raises(ValueError, match="at least 2 finite"):
        EV.jackknife_se(np.array([1.0, np.nan]))
