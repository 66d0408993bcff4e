"""The ComfyUI nodes: contracts, the whole chain in-process (tiny checkpoint, stand-in folder_paths/comfy),
cancel, and bad input."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import comfy_stubs
from emodiff_core.checkpoint import save_checkpoint
from emodiff_core.config import DENOISER_PRESETS, EXPRESSION_PRESETS, SuperResConfig
from emodiff_core.models import EMOdiffheadDenoiser, ExpressionGenerator, SuperResolver
from emodiff_core.sampling import Sampler

ROOT = comfy_stubs.ROOT


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy")
    state = comfy_stubs.install(str(base))
    pack = comfy_stubs.load_pack()
    torch.manual_seed(0)
    folder = os.path.join(state.folder_paths.models_dir, "emodiffhead")
    os.makedirs(folder, exist_ok=True)
    den = EMOdiffheadDenoiser(DENOISER_PRESETS["tiny"])
    gen = ExpressionGenerator(EXPRESSION_PRESETS["tiny"])
    sr = SuperResolver(SuperResConfig(channels=8, num_blocks=1))
    save_checkpoint(os.path.join(folder, "tiny.safetensors"), {"denoiser": den, "expression_generator": gen,
                                                                "superres": sr})
    save_checkpoint(os.path.join(folder, "sr_only.safetensors"), {"superres": sr})
    state.pack = pack
    state.nodes = pack.NODE_CLASS_MAPPINGS
    yield state
    comfy_stubs.uninstall()


def _node_error():
    return sys.modules["ComfyUI-EMOdiffhead.nodes.bridge"].NodeError


def _node(comfy, name):
    return comfy.nodes[name]()


def _image(arr):
    return torch.from_numpy(np.asarray(arr, np.float32) / 255.0)[None]


def _sampler_inputs(comfy, astronaut, emotion):
    """(model, portrait, audio features, expression): the tiny model's Sampler inputs from the nodes before it."""
    model, = _node(comfy, "LoadEMOdiffheadModel").load("tiny.safetensors", "cpu", "fp32")
    portrait, _ = _node(comfy, "EMOdiffheadLoadPortrait").load(model, _image(astronaut))
    feats, _, _ = _node(comfy, "EMOdiffheadAudioEncode").encode(model, _speech_audio(0.3), 30.0)
    expr, _ = _node(comfy, "EMOdiffheadEmotionVector").make(model, feats, emotion, 1.0, 0)
    return model, portrait, feats, expr


def _speech_audio(seconds=0.3, sr=44100, channels=2):
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return {"waveform": torch.from_numpy(np.stack([wave] * channels)).float()[None], "sample_rate": sr}


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


def test_pack_imports_without_comfyui():
    code = ("import sys; sys.path.insert(0, %r); import comfy_stubs; pack = comfy_stubs.load_pack(); "
            "assert 'folder_paths' not in sys.modules and 'comfy' not in sys.modules; "
            "print(len(pack.NODE_CLASS_MAPPINGS))" % os.path.join(ROOT, "tests"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == 9


def test_node_contracts(comfy):
    assert set(comfy.nodes) == set(comfy.pack.NODE_DISPLAY_NAME_MAPPINGS)
    for name, cls in comfy.nodes.items():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"} and "required" in spec
        for section in spec.values():
            for input_name, entry in section.items():
                assert isinstance(entry, tuple) and len(entry) == 2, (name, input_name)
                assert entry[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
        assert isinstance(cls.RETURN_TYPES, tuple)
        assert cls.CATEGORY == "EMOdiffhead" and callable(getattr(cls, cls.FUNCTION))
        if cls.RETURN_TYPES:
            assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
        # the function accepts every declared input by name
        import inspect

        params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        for section in spec.values():
            assert set(section) <= set(params), name
    ckpts = comfy.nodes["LoadEMOdiffheadModel"].INPUT_TYPES()["required"]["ckpt_name"][0]
    assert "tiny.safetensors" in ckpts


def test_the_nodes_chain_into_a_video(comfy, astronaut):
    model, = _node(comfy, "LoadEMOdiffheadModel").load("tiny.safetensors", "cpu", "auto")
    portrait, crop = _node(comfy, "EMOdiffheadLoadPortrait").load(model, _image(astronaut))
    assert crop.shape == (1, 32, 32, 3)
    feats, count, audio = _node(comfy, "EMOdiffheadAudioEncode").encode(model, _speech_audio(0.3), 30.0)
    assert count == 9 and audio["sample_rate"] == 44100 and audio["waveform"].shape == (1, 2, 13230)
    expr, plot = _node(comfy, "EMOdiffheadEmotionVector").make(model, feats, "happy", 0.8, 1)
    assert expr.psi.shape == (9, 50)
    assert plot.shape == (1, 240, 640, 3) and 0.0 <= plot.min() and plot.max() <= 1.0
    comfy.progress.clear()
    checks_before = comfy.checks
    images, fps, audio_out = _node(comfy, "EMOdiffheadSampler").sample(model, portrait, feats, expr, 3, Sampler.DDIM.value, 0,
                                                                       audio=audio)
    assert images.shape == (9, 32, 32, 3) and fps == 30.0 and audio_out is audio
    assert 0.0 <= images.min() and images.max() <= 1.0
    # a sampler the core does not know is a node error before any sampling (not a silent fallback)
    with pytest.raises(_node_error(), match="unknown sampler 'euler'"):
        _node(comfy, "EMOdiffheadSampler").sample(model, portrait, feats, expr, 3, "euler", 0)
    assert len(comfy.progress) == 9 and all(p[2] for p in comfy.progress)       # a preview per frame
    assert comfy.checks - checks_before >= 9 * 2                                  # an interrupt check per step
    # guidance on the voice: both passes in one batch at every step (tests/test_emotion_conditioning.py has the numbers)
    batches, forward = [], model.denoiser.forward
    model.denoiser.forward = lambda x, *a, **k: batches.append(x.shape[0]) or forward(x, *a, **k)
    try:
        voiced, _, _ = _node(comfy, "EMOdiffheadSampler").sample(model, portrait, feats, expr, 3, Sampler.DDIM.value,
                                                                 0, audio=audio, audio_guidance=2.0)
    finally:
        del model.denoiser.forward
    assert voiced.shape == images.shape and batches and set(batches) == {2}
    with pytest.raises(_node_error(), match="audio_guidance must be >= 0"):
        _node(comfy, "EMOdiffheadSampler").sample(model, portrait, feats, expr, 3, Sampler.DDIM.value, 0,
                                                  audio_guidance=-0.5)
    up, = _node(comfy, "EMOdiffheadSuperResolve").upscale(images, "sr_head", model=model)
    assert up.shape == (9, 64, 64, 3)
    twice, = _node(comfy, "EMOdiffheadSuperResolve").upscale(images, "lanczos", 2.0, repeat=2)
    assert twice.shape == (9, 128, 128, 3)
    full, = _node(comfy, "EMOdiffheadPasteBack").paste(up, portrait, 0.08, "face")
    assert full.shape == (9, 512, 512, 3)          # smaller than the default max_side: the portrait's own size
    half, = _node(comfy, "EMOdiffheadPasteBack").paste(up, portrait, 0.08, "face", max_side=256)
    assert half.shape == (9, 256, 256, 3)
    import cv2

    def thumb(img):                            # both at 64 px: a misplaced face would differ locally
        return cv2.resize(img.numpy(), (64, 64), interpolation=cv2.INTER_AREA)

    assert np.abs(thumb(half[0]) - thumb(full[0])).max() < 0.05                   # the same picture, smaller
    # outside the face, the pasted frames are the portrait itself
    assert torch.allclose(full[0, :20, :20], _image(astronaut)[0, :20, :20], atol=1 / 255)
    ui = _node(comfy, "EMOdiffheadSaveExpression").save(expr, "emodiffhead/test")
    saved = os.path.join(comfy.folder_paths.get_output_directory(), "emodiffhead", "test_00001.json")
    assert os.path.isfile(saved) and "9 frames" in ui["ui"]["text"][0]
    assert json.load(open(saved))["frames"] == 9
    files = comfy.nodes["EMOdiffheadLoadExpression"].INPUT_TYPES()["required"]["file"][0]
    assert "emodiffhead/test_00001.json" in files
    loaded, = _node(comfy, "EMOdiffheadLoadExpression").load("emodiffhead/test_00001.json")
    assert torch.allclose(loaded.psi, expr.psi, atol=1e-5) and torch.allclose(loaded.neutral, expr.neutral, atol=1e-5)
    # guidance: the tiny model was not trained with expression dropout, and a track without its neutral
    # sequence cannot be guided; both are node errors before sampling
    with pytest.raises(_node_error(), match="not trained with expression dropout"):
        _node(comfy, "EMOdiffheadSampler").sample(model, portrait, feats, expr, 3, "ddim", 0, guidance=2.0)
    bare = type(expr)(expr.psi, expr.fps, expr.description)
    with pytest.raises(_node_error(), match="make it with Emotion Vector or set guidance to 1"):
        _node(comfy, "EMOdiffheadSampler").sample(model, portrait, feats, bare, 3, "ddim", 0, guidance=2.0)
    # a saved expression of another length is resampled to the audio's frames
    feats2, count2, _ = _node(comfy, "EMOdiffheadAudioEncode").encode(model, _speech_audio(0.2), 30.0)
    images2, _, audio2 = _node(comfy, "EMOdiffheadSampler").sample(model, portrait, feats2, loaded, 2, "ancestral", 0)
    assert images2.shape[0] == count2 == 6 and audio2["sample_rate"] == 16000


def test_sampler_reinjects_the_identity_as_the_checkpoint_recommends_by_default(comfy, astronaut, monkeypatch):
    model, portrait, feats, expr = _sampler_inputs(comfy, astronaut, "happy")
    sampler = _node(comfy, "EMOdiffheadSampler")
    widget = type(sampler).INPUT_TYPES()["optional"]["reinject_identity_every"][1]
    assert widget["default"] == widget["min"] == -1
    pl = sys.modules[type(sampler).__module__].pl
    generate, periods = pl.generate_frames, []

    def spy(*args, **kwargs):
        periods.append(kwargs["reinject_identity_every"])
        return generate(*args, **kwargs)

    monkeypatch.setattr(pl, "generate_frames", spy)
    recommends = dataclasses.replace(model, recommended_reinject_identity_every=2)
    assert model.recommended_reinject_identity_every == 0
    for bundle, given in ((model, None), (recommends, None), (recommends, 0), (model, 3)):
        extra = {} if given is None else {"reinject_identity_every": given}
        images = sampler.sample(bundle, portrait, feats, expr, 2, Sampler.DDIM.value, 0, **extra)[0]
        assert images.shape[0] == feats.num_frames
    assert periods == [0, 2, 0, 3]        # -1 follows the checkpoint; an explicit value wins


def _calls_without_sampling(monkeypatch, sampler):
    """The Sampler's core module and the list each `generate_frames` call's (identity, keyword arguments) goes to,
    with sampling itself replaced by blank frames (what these tests check is what the node passes on)."""
    pl = sys.modules[type(sampler).__module__].pl
    calls = []

    def spy(denoiser, identity, audio, psi, **kwargs):
        calls.append((identity, kwargs))
        return torch.zeros(audio.num_frames, 1, 3, *identity.shape[-2:])

    monkeypatch.setattr(pl, "generate_frames", spy)
    return pl, calls


def test_sampler_gives_the_portrait_at_a_neutral_expression_by_default(comfy, astronaut, monkeypatch):
    model, portrait, feats, expr = _sampler_inputs(comfy, astronaut, "sad")
    sampler = _node(comfy, "EMOdiffheadSampler")
    widget = type(sampler).INPUT_TYPES()["optional"]["portrait_identity"]
    assert widget[0] == ["neutral", "photo"] and widget[1]["default"] == "neutral"
    pl, calls = _calls_without_sampling(monkeypatch, sampler)
    sampler.sample(model, portrait, feats, expr, 2, Sampler.DDIM.value, 0)
    sampler.sample(model, portrait, feats, expr, 2, Sampler.DDIM.value, 0, portrait_identity="photo")
    track = expr.resampled(feats.num_frames, feats.fps)
    identities = [identity for identity, _ in calls]
    assert torch.equal(identities[0], pl.neutral_identity(portrait, track.neutral, 32))
    assert torch.equal(identities[1], portrait.crop_tensor()[None])
    assert float((identities[0] - identities[1]).abs().mean()) > 0.005       # the warp changed the face
    with pytest.raises(_node_error(), match="portrait identity must be one of neutral, photo"):
        sampler.sample(model, portrait, feats, expr, 2, Sampler.DDIM.value, 0, portrait_identity="smile")


def test_sampler_starts_each_frame_with_the_rigs_mouth_by_default(comfy, astronaut, monkeypatch):
    model, portrait, feats, expr = _sampler_inputs(comfy, astronaut, "sad")
    sampler = _node(comfy, "EMOdiffheadSampler")
    widget = type(sampler).INPUT_TYPES()["optional"]["start_mouth"]
    assert widget[0] == ["previous", "rig"] and widget[1]["default"] == "rig"
    _, calls = _calls_without_sampling(monkeypatch, sampler)
    sampler.sample(model, portrait, feats, expr, 2, Sampler.DDIM.value, 0)
    sampler.sample(model, portrait, feats, expr, 2, Sampler.DDIM.value, 0, start_mouth="previous")
    starts = [kwargs["anchor_source"] for _, kwargs in calls]
    assert starts[1] is None                                                    # the previous frame as it is
    previous = torch.zeros(1, 3, 32, 32)
    frame = starts[0](3, previous)                                              # the rig's mouth on the previous frame
    assert frame.shape == (1, 3, 32, 32) and float(frame.mean()) > 0.01               # the rig drew a mouth
    assert float(frame[..., :12, :].abs().max()) == 0.0                               # and nothing above it
    with pytest.raises(_node_error(), match="start mouth must be one of previous, rig"):
        sampler.sample(model, portrait, feats, expr, 2, Sampler.DDIM.value, 0, start_mouth="smile")


def test_sampler_guides_as_the_checkpoint_recommends_by_default(comfy, astronaut, monkeypatch, capsys):
    model, portrait, feats, expr = _sampler_inputs(comfy, astronaut, "happy")
    bare = type(expr)(expr.psi, expr.fps, expr.description)          # a loaded track without its neutral sequence
    sampler = _node(comfy, "EMOdiffheadSampler")
    widget = type(sampler).INPUT_TYPES()["optional"]["guidance"][1]
    assert widget["default"] == widget["min"] == -1
    pl = sys.modules[type(sampler).__module__].pl
    generate, scales = pl.generate_frames, []

    def spy(*args, **kwargs):          # records the node's choice; the tiny model samples unguided (no dropout)
        scales.append(kwargs["settings"].guidance)
        return generate(*args, **dict(kwargs, settings=dataclasses.replace(kwargs["settings"], guidance=1.0)))

    monkeypatch.setattr(pl, "generate_frames", spy)
    recommends = dataclasses.replace(model, recommended_guidance=2.0)
    assert model.recommended_guidance == 1.0
    for bundle, track, given in ((model, expr, None), (recommends, expr, None), (recommends, expr, 1.0),
                                 (recommends, expr, -1.0), (model, expr, 3.0), (recommends, bare, None)):
        extra = {} if given is None else {"guidance": given}
        images = sampler.sample(bundle, portrait, feats, track, 2, Sampler.DDIM.value, 0, **extra)[0]
        assert images.shape[0] == feats.num_frames
    assert scales == [1.0, 2.0, 1.0, 2.0, 3.0, 1.0]      # -1 follows the checkpoint; an explicit value wins
    assert "recommends 2, but this expression has no neutral sequence" in capsys.readouterr().out
    with pytest.raises(_node_error(), match=r"guidance must be >= 0 \(1 = off; unset, or -1 in the Sampler node"):
        sampler.sample(model, portrait, feats, expr, 2, Sampler.DDIM.value, 0, guidance=-0.5)


def test_cancel_stops_within_one_denoising_step(comfy, astronaut):
    model, portrait, feats, expr = _sampler_inputs(comfy, astronaut, "sad")
    forwards = []
    hook = model.denoiser.register_forward_hook(lambda *a: forwards.append(1))
    comfy.checks = 0
    comfy.interrupt_after = 4
    emptied = comfy.emptied
    try:
        with pytest.raises(comfy_stubs.Interrupted):
            _node(comfy, "EMOdiffheadSampler").sample(model, portrait, feats, expr, 3, Sampler.DDIM.value, 0)
    finally:
        comfy.interrupt_after = None
        hook.remove()
    assert comfy.checks == 5 and len(forwards) == 5     # stopped right after the step where cancel was seen
    assert comfy.emptied == emptied + 1                 # and freed memory on the way out


@pytest.mark.parametrize("case", ["blank", "tiny_image", "batch"])
def test_bad_portraits_give_clear_errors(comfy, astronaut, case):
    model, = _node(comfy, "LoadEMOdiffheadModel").load("tiny.safetensors", "cpu", "auto")
    image = {"blank": _image(np.full((256, 256, 3), 128, np.uint8)),
             "tiny_image": _image(np.zeros((16, 16, 3), np.uint8)),
             "batch": torch.cat([_image(astronaut)] * 2)}[case]
    message = {"blank": "no face found", "tiny_image": "too small", "batch": "batch of 2"}[case]
    with pytest.raises(_node_error(), match=message):
        _node(comfy, "EMOdiffheadLoadPortrait").load(model, image)


def test_portrait_options(comfy, astronaut):
    model, = _node(comfy, "LoadEMOdiffheadModel").load("tiny.safetensors", "cpu", "auto")
    blank = _image(np.full((200, 300, 3), 90, np.uint8))
    portrait, crop = _node(comfy, "EMOdiffheadLoadPortrait").load(model, blank, centre_crop_if_no_face=True)
    assert crop.shape == (1, 32, 32, 3)
    rgba = np.concatenate([astronaut, np.full((512, 512, 1), 255, np.uint8)], axis=2)
    _, crop_rgba = _node(comfy, "EMOdiffheadLoadPortrait").load(model, _image(rgba))
    grey = astronaut.mean(axis=2, keepdims=True).astype(np.uint8)
    _, crop_grey = _node(comfy, "EMOdiffheadLoadPortrait").load(model, _image(grey))
    assert crop_rgba.shape == crop_grey.shape == (1, 32, 32, 3)
    import cv2

    big = cv2.resize(astronaut, (4000, 4000))
    big = np.pad(big, ((0, 0), (1000, 1000), (0, 0)), mode="edge")            # 6000 x 4000
    portrait_big, crop_big = _node(comfy, "EMOdiffheadLoadPortrait").load(model, _image(big))
    assert crop_big.shape == (1, 32, 32, 3) and portrait_big.image.shape == (4000, 6000, 3)
    module = sys.modules[type(_node(comfy, "EMOdiffheadPasteBack")).__module__]
    frames = torch.rand(3, 32, 32, 3)
    # the default output size keeps a 24 MP portrait's frames small: longest side 1280
    scaled, = _node(comfy, "EMOdiffheadPasteBack").paste(frames, portrait_big)
    assert scaled.shape == (3, 853, 1280, 3)
    # the original size on request; over the limit it is refused before any work, with a max_side that fits
    old, module.MAX_PASTE_BYTES = module.MAX_PASTE_BYTES, 100 * 1024 ** 2
    try:
        with pytest.raises(module.NodeError, match=r"3 frames at 6000x4000 needs 0.8 GB .* set max_side to (\d+)") as info:
            _node(comfy, "EMOdiffheadPasteBack").paste(frames, portrait_big, max_side=0)
        import re

        fit = int(re.search(r"set max_side to (\d+)", str(info.value)).group(1))
        fitted, = _node(comfy, "EMOdiffheadPasteBack").paste(frames, portrait_big, max_side=fit)
        assert max(fitted.shape[1:3]) == fit and fitted.numel() * 4 <= module.MAX_PASTE_BYTES
    finally:
        module.MAX_PASTE_BYTES = old


def test_bad_audio_emotion_and_checkpoints(comfy):
    err = _node_error()
    model, = _node(comfy, "LoadEMOdiffheadModel").load("tiny.safetensors", "cpu", "auto")
    enc = _node(comfy, "EMOdiffheadAudioEncode")
    empty = {"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000}
    blip = {"waveform": torch.full((1, 1, 160), 0.1), "sample_rate": 16000}       # 10 ms
    with pytest.raises(err, match="empty"):
        enc.encode(model, empty, 30.0)
    with pytest.raises(err, match="shorter than one video frame"):
        enc.encode(model, blip, 30.0)
    with pytest.raises(err, match="AUDIO"):
        enc.encode(model, {"samples": 1}, 30.0)
    feats, count, _ = enc.encode(model, _speech_audio(0.1, 16000, 1), 30.0)
    assert count == 3
    ten_minutes = _speech_audio(600.0, 8000, 1)
    feats10, count10, trimmed = enc.encode(model, ten_minutes, 30.0)
    assert count10 == 18000 and trimmed["waveform"].shape[-1] == 600 * 8000
    with pytest.raises(err, match="minutes"):
        enc.encode(model, _speech_audio(601.0, 8000, 1), 30.0)
    emo = _node(comfy, "EMOdiffheadEmotionVector")
    with pytest.raises(err, match="out of range"):
        emo.make(model, feats, "happy", 2.5, 0)
    with pytest.raises(err, match="unknown emotion"):
        emo.make(model, feats, "happy", 1.0, 0, blend="joyful:0.5")
    with pytest.raises(err, match="keyframe"):
        emo.make(model, feats, "happy", 1.0, 0, keyframes="1.0:happy")
    with pytest.raises(err, match="training statistics"):     # the tiny denoiser stores none
        emo.make(model, feats, "happy", 1.0, 0, mouth="voice")
    # with training statistics: 'speech' is 'voice' plus the connected recording's mouth motion
    stats = EMOdiffheadDenoiser(dataclasses.replace(model.denoiser.config, expression_mean=(0.2,) * 50,
                                                    expression_scale=(1.0,) * 50))
    with_stats = dataclasses.replace(model, denoiser=stats)
    pl = sys.modules[type(emo).__module__].pl
    feats2 = enc.encode(model, _speech_audio(2.0, 16000, 1), 30.0)[0]
    spoken, voiced = (emo.make(with_stats, feats2, "sad", 1.0, 0, mouth=m)[0] for m in ("speech", "voice"))
    assert spoken.description["mouth"] == "speech" and voiced.description["mouth"] == "voice"
    assert torch.allclose(spoken.psi - voiced.psi, pl.speech_mouth_motion(feats2), atol=1e-6)
    assert torch.allclose(spoken.neutral - voiced.neutral, pl.speech_mouth_motion(feats2), atol=1e-6)
    loader = _node(comfy, "LoadEMOdiffheadModel")
    with pytest.raises(err, match="not a generation checkpoint"):
        loader.load("sr_only.safetensors", "cpu", "auto")
    with pytest.raises(err, match="not found"):
        loader.load("missing.safetensors", "cpu", "auto")
    with pytest.raises(err, match="no EMOdiffhead checkpoint is installed"):
        loader.load("(no checkpoints found: put .safetensors files in models/emodiffhead)", "cpu", "auto")
    bad = os.path.join(comfy.folder_paths.models_dir, "emodiffhead", "bad.safetensors")
    with open(bad, "wb") as fh:
        fh.write(b"\x80\x04not really a checkpoint")
    try:
        with pytest.raises(err, match="pickle"):
            loader.load("bad.safetensors", "cpu", "auto")
    finally:
        os.remove(bad)
    # a checkpoint whose config does not describe its weights
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    good = os.path.join(comfy.folder_paths.models_dir, "emodiffhead", "tiny.safetensors")
    with safe_open(good, framework="pt") as fh:
        meta = dict(fh.metadata())
    cfg = json.loads(meta["config.denoiser"])
    cfg["model_channels"] = 32
    meta["config.denoiser"] = json.dumps(cfg)
    mismatched = os.path.join(comfy.folder_paths.models_dir, "emodiffhead", "mismatched.safetensors")
    save_file(load_file(good), mismatched, metadata=meta)
    try:
        with pytest.raises(err, match="has shape .* but the model built from"):
            loader.load("mismatched.safetensors", "cpu", "auto")
    finally:
        os.remove(mismatched)
    sr = _node(comfy, "EMOdiffheadSuperResolve")
    with pytest.raises(err, match="UPSCALE_MODEL"):
        sr.upscale(torch.rand(1, 8, 8, 3), "upscale_model")


def test_silence_gives_frames_and_a_shaded_plot(comfy, astronaut):
    """Silent audio is a listening face: Audio Encode, Emotion Vector and the Sampler all accept it."""
    model, = _node(comfy, "LoadEMOdiffheadModel").load("tiny.safetensors", "cpu", "auto")
    portrait, _ = _node(comfy, "EMOdiffheadLoadPortrait").load(model, _image(astronaut))
    silent = {"waveform": torch.zeros(1, 2, 22050 // 5), "sample_rate": 22050}          # 0.2 s, stereo
    feats, count, audio = _node(comfy, "EMOdiffheadAudioEncode").encode(model, silent, 30.0)
    assert count == 6 and bool(feats.silent.all())
    expr, plot = _node(comfy, "EMOdiffheadEmotionVector").make(model, feats, "sad", 1.0, 0)
    from emodiff_core.emotion_plot import SILENCE_COLOUR

    shade = torch.tensor(SILENCE_COLOUR, dtype=torch.float32) / 255.0
    assert ((plot[0] - shade).abs().max(dim=-1).values < 1e-3).any()           # the silent stretch is shaded
    images, fps, _ = _node(comfy, "EMOdiffheadSampler").sample(model, portrait, feats, expr, 2, Sampler.DDIM.value, 0, audio=audio)
    assert images.shape == (6, 32, 32, 3) and fps == 30.0


def test_checkpoint_list_leaves_out_files_that_are_not_bundles(comfy):
    from safetensors.torch import save_file

    from emodiff_core import config as core_config
    from emodiff_core.checkpoint import save_checkpoint
    from emodiff_core.models.judge import EmotionJudge

    folder = os.path.join(comfy.folder_paths.models_dir, "emodiffhead")
    judge = os.path.join(folder, "judge_only.safetensors")
    other = os.path.join(folder, "other_format.safetensors")
    damaged = os.path.join(folder, "damaged.safetensors")
    save_checkpoint(judge, {"emotion_judge": EmotionJudge(core_config.preset("judge", "tiny"))})
    save_file({"w": torch.zeros(1)}, other, metadata={"format": "something_else"})
    with open(damaged, "wb") as fh:
        fh.write(b"not a safetensors file")
    try:
        names = comfy.nodes["LoadEMOdiffheadModel"].INPUT_TYPES()["required"]["ckpt_name"][0]
        assert "tiny.safetensors" in names and "damaged.safetensors" in names     # loading it says what is wrong
        assert "judge_only.safetensors" not in names and "other_format.safetensors" not in names
        # the pack's own folder: the four bundles listed, the measuring files (judge, psi regressor, FER weights) not
        assert {"emodiffhead_demo.safetensors", "emodiffhead_emotion.safetensors", "emodiffhead_real.safetensors",
                "emodiffhead_procedural.safetensors"} <= set(names)
        assert not {"emotion_judge.safetensors", "psi_regressor_v3.safetensors",
                    "fer_mini_xception.safetensors"} & set(names)
    finally:
        for path in (judge, other, damaged):
            os.remove(path)
