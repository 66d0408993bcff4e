"""What makes the denoiser read its expression input: psi standardisation, the emotion-region loss,
classifier-free guidance on the expression, and the probes that measure it."""
import dataclasses
import os

import numpy as np
import pytest
import torch

from emodiff_core import config as C
from emodiff_core import pipeline as pl
from emodiff_core.diffusion import GaussianDiffusion, LossWeights, hybrid_loss
from emodiff_core.diffusion.losses import emotion_region_mask, texture_gap
from emodiff_core.guidance import AudioGuidance, ExpressionGuidance
from emodiff_core.models import EMOdiffheadDenoiser, ExpressionGenerator
from emodiff_core.sampling import SamplingError, SamplingSettings, parse_guidance
from training.probes import emotion_probes

TINY = C.DENOISER_PRESETS["tiny"]


def _tiny(cfg=TINY, seed=0):
    torch.manual_seed(seed)
    den = EMOdiffheadDenoiser(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():      # the conditional projections start at zero: give every path some weight
        for p in den.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return den


def _inputs(cfg=TINY, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    s, w = cfg.image_size, 2 * cfg.expression_window + 1
    return {"identity": torch.rand(batch, 3, s, s, generator=g) * 2 - 1,
            "motion": torch.rand(batch, cfg.n_motion_frames, 3, s, s, generator=g) * 2 - 1,
            "audio_emb": torch.randn(batch, 2 * cfg.audio_window + 1, cfg.audio_dim, generator=g),
            "expression": torch.randn(batch, w, cfg.expression_dim, generator=g)}


# --------------------------------------------------------------------------- psi standardisation
def test_standardised_psi_is_in_the_config_and_a_zero_scale_drops_a_component():
    mean = tuple(float(v) for v in np.linspace(-1, 1, 50))
    scale = tuple([2.0] * 13 + [0.0] * 37)
    cfg = dataclasses.replace(TINY, expression_mean=mean, expression_scale=scale)
    den = _tiny(cfg)
    psi = torch.randn(3, 50)
    assert torch.allclose(den.unet.condition_expression(psi), (psi - torch.tensor(mean)) * torch.tensor(scale))
    x = _inputs(cfg)
    t = torch.tensor([10, 50])
    with torch.no_grad():
        a = den(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), t, **x)
        moved = dict(x, expression=x["expression"].clone())
        moved["expression"][..., 20:] += 5.0                 # dropped components: no effect
        b = den(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), t, **moved)
        moved["expression"][..., 2] += 1.0                   # a kept one: an effect
        c = den(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), t, **moved)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # statistics are config, not weights: the state dict is unchanged, so older checkpoints load into it
    assert set(den.state_dict()) == set(_tiny().state_dict())
    # a config written before these fields existed reads as raw psi; a malformed one is refused
    old = C.to_dict(TINY)
    del old["expression_mean"], old["expression_scale"]
    assert C.from_dict(C.DenoiserConfig, old).expression_scale == ()
    with pytest.raises(C.ConfigError, match="both be empty or both have 50"):
        C.from_dict(C.DenoiserConfig, dict(C.to_dict(TINY), expression_mean=[0.0] * 3, expression_scale=[1.0] * 3))
    with pytest.raises(C.ConfigError, match=">= 0"):
        C.from_dict(C.DenoiserConfig, dict(C.to_dict(TINY), expression_mean=[0.0] * 50, expression_scale=[-1.0] * 50))


def test_the_spatial_expression_map_starts_as_a_no_op_and_learns_where():
    cfg = dataclasses.replace(TINY, expression_spatial=4)
    plain, spatial = _tiny(), EMOdiffheadDenoiser(cfg)     # a "trained" model, fine-tuned with the map added
    missing = spatial.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("unet.expression_spatial") for k in missing)
    x = _inputs(cfg)
    x_t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 50])
    with torch.no_grad():
        assert torch.equal(plain(x_t, t, **x), spatial(x_t, t, **x))       # zero-initialised projection
    out = spatial(x_t, t, **x)
    out.square().mean().backward()
    assert spatial.unet.expression_spatial_proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        spatial.unet.expression_spatial_proj.weight.normal_(0, 0.1)
        moved = dict(x, expression=x["expression"] + 1.0)
        assert not torch.allclose(spatial(x_t, t, **x), spatial(x_t, t, **moved))


# --------------------------------------------------------------------------- emotion-region loss
def test_emotion_region_mask_and_loss_term():
    target = torch.zeros(1, 3, 8, 8)
    twin = target.clone()
    twin[0, 1, 3, 4] = 0.5                                  # one pixel differs in one channel
    mask = emotion_region_mask(target, twin, grow=1)
    assert mask.shape == (1, 1, 8, 8) and mask.sum() == 9 and mask[0, 0, 2:5, 3:6].min() == 1
    assert emotion_region_mask(target, twin, grow=0).sum() == 1
    assert emotion_region_mask(target, target + 0.001).sum() == 0       # below the threshold
    d = GaussianDiffusion.from_config(TINY.diffusion)

    def model(x, t, **cond):
        return torch.zeros(x.shape[0], 6, *x.shape[2:])

    noise = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = hybrid_loss(d, model, target, torch.tensor([5]), {}, LossWeights(), noise=noise)
    weighted = hybrid_loss(d, model, target, torch.tensor([5]), {}, LossWeights(emotion=9.0), noise=noise,
                           emotion_mask=mask)
    expected = float((noise ** 2 * mask).sum() / (mask.sum() * 3))
    assert weighted["emotion"].item() == pytest.approx(expected, rel=1e-5)
    assert weighted["loss"].item() == pytest.approx(plain["loss"].item() + 9.0 * expected, rel=1e-5)
    # a per-sample multiple of the weight (training's emotion.real_texture_emotion_mult)
    scaled = hybrid_loss(d, model, target.repeat(2, 1, 1, 1), torch.tensor([5, 5]), {}, LossWeights(emotion=9.0),
                         noise=noise.repeat(2, 1, 1, 1), emotion_mask=mask.repeat(2, 1, 1, 1),
                         emotion_scale=torch.tensor([3.0, 1.0]))
    assert scaled["loss"][0].item() == pytest.approx(plain["loss"].item() + 27.0 * expected, rel=1e-5)
    assert scaled["loss"][1].item() == pytest.approx(weighted["loss"].item(), rel=1e-6)
    assert torch.equal(scaled["emotion"][0], scaled["emotion"][1])      # the term itself is reported unscaled
    # loss sections written before the emotion weight existed mean "off"
    assert C.from_dict(LossWeights, {"vlb": 0.001, "lip": 0.2, "eye": 0.1}).emotion == 0.0


def test_intensity_pair_term_is_the_difference_of_the_partners_noise_errors():
    from emodiff_core.diffusion.losses import intensity_pair_error

    g = torch.Generator().manual_seed(0)
    noise, eps = torch.randn(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    mask = torch.zeros(3, 1, 4, 4)
    mask[:, :, 1:3, :] = 1.0
    partner = torch.tensor([1, 0, -1])                 # rows 0 and 1 a pair, row 2 alone
    term = intensity_pair_error(noise, eps, partner, mask)
    diff = (eps[0] - noise[0]) - (eps[1] - noise[1])
    expected = float((diff ** 2 * mask[0]).sum() / (mask[0].sum() * 3))
    assert term[0].item() == pytest.approx(expected, rel=1e-5) and term[1].item() == pytest.approx(expected, rel=1e-5)
    assert term[2].item() == 0.0
    # an error the two rows share costs nothing: only the response to what differs between them counts
    shared = noise + 0.3
    assert torch.allclose(intensity_pair_error(noise, shared, partner, mask), torch.zeros(3), atol=1e-6)
    d = GaussianDiffusion.from_config(TINY.diffusion)

    def model(x, t, **cond):
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)

    t = torch.tensor([5, 5, 5])
    plain = hybrid_loss(d, model, torch.zeros(3, 3, 4, 4), t, {}, LossWeights(), noise=noise)
    paired = hybrid_loss(d, model, torch.zeros(3, 3, 4, 4), t, {}, LossWeights(intensity_pair=2.0), noise=noise,
                         pair_partner=partner, pair_mask=mask)
    assert torch.allclose(paired["pair"], term) and torch.allclose(paired["loss"], plain["loss"] + 2.0 * term)
    assert "pair" not in plain
    with pytest.raises(ValueError, match="pair_mask"):
        hybrid_loss(d, model, torch.zeros(3, 3, 4, 4), t, {}, LossWeights(), noise=noise, pair_partner=partner)
    assert C.from_dict(LossWeights, {"vlb": 0.001, "lip": 0.2, "eye": 0.1}).intensity_pair == 0.0


def test_pair_rows_share_one_x_t_at_sampling_s_first_step():
    """train_denoiser: a pair's second row takes the first's motion frames, timestep and noise, so the anchored
    start gives both one x_t; the targets (and so the noise the loss asks for) still differ."""
    from training.train_denoiser import anchored_start_noise, pair_partners, share_pair_inputs

    partner = pair_partners(torch.tensor([1, -1, 0, 1, -1]))
    assert partner.tolist() == [1, 0, -1, 4, 3]
    g = torch.Generator().manual_seed(1)
    motion, x0 = torch.randn(5, 2, 3, 4, 4, generator=g), torch.randn(5, 3, 4, 4, generator=g)
    t, noise = torch.tensor([10, 20, 30, 40, 50]), torch.randn(5, 3, 4, 4, generator=g)
    motion_s, t_s, noise_s = share_pair_inputs(partner, motion, t, noise)
    assert t_s.tolist() == [10, 10, 30, 40, 40]
    assert torch.equal(motion_s[1], motion[0]) and torch.equal(motion_s[2], motion[2])
    assert torch.equal(noise_s[4], noise[3])
    d = GaussianDiffusion.from_config(TINY.diffusion)
    chosen = partner >= 0
    start = torch.where(chosen, torch.full_like(t_s, 60), t_s)
    eps = anchored_start_noise(d, x0, motion_s[:, -1], start, noise_s, chosen)
    x_t = d.q_sample(x0, start, eps)
    assert torch.allclose(x_t[0], x_t[1], atol=1e-5) and torch.allclose(x_t[3], x_t[4], atol=1e-5)
    assert not torch.allclose(eps[0], eps[1])


def test_texture_term_asks_for_the_targets_amount_of_fine_detail():
    checker = torch.from_numpy(np.indices((16, 16)).sum(0) % 2 * 1.0 - 0.5).float().expand(1, 3, 16, 16)
    flat = torch.zeros(1, 3, 16, 16)
    # detail maps compare the amount of fine detail, not where it lies: a shifted checker has as much
    assert texture_gap(flat, flat).item() == 0.0 and texture_gap(checker, flat).item() > 1.0
    inner = (slice(None), slice(None), slice(4, 12), slice(4, 12))   # away from the replicated edges
    assert texture_gap(checker.roll(1, -1)[inner], checker[inner]).item() == pytest.approx(0.0, abs=1e-6)
    d = GaussianDiffusion.from_config(TINY.diffusion)

    def model(x, t, **cond):       # predicts no noise at all: x0 = x_t / sqrt(alpha-bar)
        return torch.zeros(x.shape[0], 6, *x.shape[2:])

    target = checker.clone()
    noise = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for step in (2, 50):
        t = torch.tensor([step])
        plain = hybrid_loss(d, model, target, t, {}, LossWeights(), noise=noise)
        textured = hybrid_loss(d, model, target, t, {}, LossWeights(texture=3.0), noise=noise)
        assert "texture" not in plain
        x_t = d.q_sample(target, t, noise)
        signal = float(d.alphas_cumprod[step])
        expected = signal * texture_gap(x_t / signal ** 0.5, target).item()   # the hand-made x0 and its weight
        assert textured["texture"].item() == pytest.approx(expected, rel=1e-5) and expected > 0
        assert textured["loss"].item() == pytest.approx(plain["loss"].item() + 3.0 * expected, rel=1e-5)
    assert C.from_dict(LossWeights, {"vlb": 0.001, "lip": 0.2, "eye": 0.1}).texture == 0.0


# --------------------------------------------------------------------------- guidance
def test_expression_guidance_is_the_cfg_combination_in_one_batch():
    den = _tiny()
    x = _inputs()
    neutral = torch.randn(x["expression"].shape, generator=torch.Generator().manual_seed(5))
    x_t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([30, 60])
    with torch.no_grad():
        cond = den(x_t, t, **x)
        uncond = den(x_t, t, **dict(x, expression=neutral))
        for w in (0.0, 1.0, 3.0):
            guided = ExpressionGuidance(den, w)(x_t, t, **x, neutral_expression=neutral)
            assert torch.allclose(guided[:, :3], uncond[:, :3] + w * (cond[:, :3] - uncond[:, :3]), atol=1e-5)
            assert torch.allclose(guided[:, 3:], cond[:, 3:], atol=1e-5)      # variance of the conditional pass


def test_guidance_limited_to_the_noisier_steps():
    den = _tiny()
    x = _inputs()
    neutral = torch.randn(x["expression"].shape, generator=torch.Generator().manual_seed(5))
    x_t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    batches = []

    def counted(x_in, t_in, **cond):
        batches.append(x_in.shape[0])
        return den(x_in, t_in, **cond)

    with torch.no_grad():
        t = torch.tensor([30, 60])
        cond = den(x_t, t, **x)
        full = ExpressionGuidance(den, 3.0)(x_t, t, **x, neutral_expression=neutral)
        limited = ExpressionGuidance(counted, 3.0, min_timestep=45)(x_t, t, **x, neutral_expression=neutral)
        assert torch.allclose(limited[0], cond[0], atol=1e-5)          # below 45: the conditional model alone
        assert torch.allclose(limited[1], full[1], atol=1e-5)          # at or above: guided
        assert batches == [4]
        below = ExpressionGuidance(counted, 3.0, min_timestep=61)(x_t, t, **x, neutral_expression=neutral)
        assert torch.allclose(below, cond, atol=1e-5) and batches == [4, 2]   # one pass when no row is guided
    # the settings: which training steps are guided, the text form, the range
    s = SamplingSettings(guidance=2.0, guidance_min_noise=0.35)
    assert s.guidance_min_timestep(1000) == 350 and SamplingSettings(guidance=2.0).guidance_min_timestep(1000) == 0
    assert s.label == "ddim10@0.5g2>0.35" and SamplingSettings.parse(s.label) == s
    assert parse_guidance("2>0.35") == (2.0, 0.35) and parse_guidance(3) == (3.0, 0.0)
    for bad in (dict(guidance_min_noise=-0.1), dict(guidance_min_noise=0.6)):      # above start_noise 0.5: none
        with pytest.raises(SamplingError, match="guidance_min_noise"):
            SamplingSettings(guidance=2.0, **bad)
    for bad in ("2>x", "2>", ""):
        with pytest.raises(SamplingError, match="cannot read the guidance"):
            parse_guidance(bad)
        with pytest.raises(SamplingError, match="cannot read the guidance"):     # the same grammar after "g"
            SamplingSettings.parse(f"ddim10@0.5g{bad}")
    assert SamplingSettings.parse("DDIM10 @0.5 g 2 > 0.35") == s


def test_generate_frames_with_guidance():
    den = _tiny(dataclasses.replace(TINY, expression_dropout=0.1))
    gen = ExpressionGenerator(C.EXPRESSION_PRESETS["tiny"]).eval()
    t = np.arange(int(0.1 * 16000)) / 16000
    audio = pl.encode_audio((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, 30, TINY.audio)
    psi, e_n = pl.emotion_expression_pair(gen, audio.num_frames, pl.EmotionSpec("happy", 1.0), seed=1)
    assert torch.equal(psi, pl.emotion_expressions(gen, audio.num_frames, pl.EmotionSpec("happy", 1.0), seed=1))
    identity = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    plain = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=3), seed=4)
    one = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=3, guidance=1.0), seed=4,
                             neutral_expression=e_n)
    three = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=3, guidance=3.0), seed=4,
                               neutral_expression=e_n)
    assert torch.equal(plain, one) and not torch.allclose(plain, three)
    # steps 3 keep t = 0, 334 below 0.5 T; guided at 334 only: neither the unguided nor the fully guided frames
    first = pl.generate_frames(den, identity, audio, psi, seed=4, neutral_expression=e_n,
                               settings=SamplingSettings(steps=3, guidance=3.0, guidance_min_noise=0.3))
    assert not torch.allclose(first, three) and not torch.allclose(first, plain)
    with pytest.raises(pl.PipelineError, match="neutral expression"):
        pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=3, guidance=2.0))
    with pytest.raises(pl.PipelineError, match="not trained with expression dropout"):   # no null condition learned
        pl.generate_frames(_tiny(), identity, audio, psi, settings=SamplingSettings(steps=3, guidance=2.0), seed=4,
                           neutral_expression=e_n)
    s = SamplingSettings(guidance=2.5)
    assert s.guided and s.label == "ddim10@0.5g2.5" and SamplingSettings.parse(s.label) == s
    with pytest.raises(SamplingError, match="guidance"):
        SamplingSettings(guidance=-1.0)


def test_audio_guidance_is_the_cfg_combination_against_silence_in_one_batch():
    den = _tiny()
    x = _inputs()
    x_t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([30, 60])
    tone = np.arange(int(0.1 * 16000)) / 16000
    spoken = pl.encode_audio((0.3 * np.sin(2 * np.pi * 220 * tone)).astype(np.float32), 16000, 30, TINY.audio)
    features = spoken.features
    silent = pl.silent_audio_embedding(den, features)
    from emodiff_core import audio as audio_mod
    with torch.no_grad():
        assert silent.shape == (TINY.audio_dim,)
        digital_silence = torch.full_like(features[:1], audio_mod.silence_feature_value())
        assert torch.allclose(silent, den.encode_audio(digital_silence)[0])
        voiced = den(x_t, t, **x)
        quiet = den(x_t, t, **dict(x, audio_emb=silent.expand_as(x["audio_emb"])))
        assert not torch.allclose(voiced, quiet)
        for w in (0.0, 1.0, 2.5):
            guided = AudioGuidance(den, w, silent)(x_t, t, **x)
            assert torch.allclose(guided[:, :3], quiet[:, :3] + w * (voiced[:, :3] - quiet[:, :3]), atol=1e-5)
            assert torch.allclose(guided[:, 3:], voiced[:, 3:], atol=1e-5)       # variance of the voiced pass
        # inside the expression guidance: four passes, each expression with and without the voice
        neutral = torch.randn(x["expression"].shape, generator=torch.Generator().manual_seed(5))
        both = ExpressionGuidance(AudioGuidance(den, 2.0, silent), 3.0)(x_t, t, **x, neutral_expression=neutral)
        calm = dict(x, expression=neutral)
        audio_neutral = den(x_t, t, **calm)
        quiet_neutral = den(x_t, t, **dict(calm, audio_emb=silent.expand_as(x["audio_emb"])))
        with_emotion = quiet[:, :3] + 2.0 * (voiced[:, :3] - quiet[:, :3])
        without = quiet_neutral[:, :3] + 2.0 * (audio_neutral[:, :3] - quiet_neutral[:, :3])
        assert torch.allclose(both[:, :3], without + 3.0 * (with_emotion - without), atol=1e-4)
    # the settings: text form, range, and reports written before it existed
    s = SamplingSettings(audio_guidance=2.0)
    assert s.audio_guided and not s.guided and s.label == "ddim10@0.5a2" and SamplingSettings.parse(s.label) == s
    g = SamplingSettings(guidance=2.0, guidance_min_noise=0.35, audio_guidance=1.5)
    assert g.label == "ddim10@0.5g2>0.35a1.5" and SamplingSettings.parse(g.label) == g
    assert "audio_guidance" not in SamplingSettings().to_dict() and s.to_dict()["audio_guidance"] == 2.0
    assert SamplingSettings.parse("ddim10 a 3").audio_guidance == 3.0
    with pytest.raises(SamplingError, match="audio_guidance must be a number >= 0"):
        SamplingSettings(audio_guidance=-1.0)
    with pytest.raises(SamplingError, match="cannot read sampling settings"):
        SamplingSettings.parse("ddim10ax")


def test_generate_frames_with_audio_guidance_follows_the_voice_further():
    den = _tiny()
    gen = ExpressionGenerator(C.EXPRESSION_PRESETS["tiny"]).eval()
    t = np.arange(int(0.1 * 16000)) / 16000
    audio = pl.encode_audio((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, 30, TINY.audio)
    psi = pl.emotion_expressions(gen, audio.num_frames, pl.EmotionSpec("neutral"), seed=1)
    identity = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    plain = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=3), seed=4)
    one = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=3, audio_guidance=1.0), seed=4)
    assert torch.equal(plain, one)                                  # 1 = off: not even the silent pass runs
    # no autograd graph is kept across frames (memory would grow with the video: 23 GB by 2 minutes of frames)
    assert not plain.requires_grad and torch.is_grad_enabled()
    calls = []
    original = den.forward

    def counted(*a, **k):
        calls.append(a[0].shape[0])
        return original(*a, **k)

    den.forward = counted
    try:
        two = pl.generate_frames(den, identity, audio, psi, settings=SamplingSettings(steps=3, audio_guidance=2.0),
                                 seed=4)
    finally:
        del den.forward
    assert not torch.allclose(plain, two) and set(calls) == {2}     # one batch of both passes per step
    assert not two.requires_grad
    # on a model whose frame does not hear the voice, guidance changes nothing
    deaf = _tiny()
    with torch.no_grad():
        for p in deaf.audio_encoder.parameters():
            p.zero_()
    assert torch.allclose(pl.generate_frames(deaf, identity, audio, psi, settings=SamplingSettings(steps=3), seed=4),
                          pl.generate_frames(deaf, identity, audio, psi, seed=4,
                                             settings=SamplingSettings(steps=3, audio_guidance=3.0)), atol=1e-5)


def test_a_bundle_recommends_its_guidance_and_the_cli_samples_with_it(tmp_path):
    import json
    import subprocess
    import sys

    from emodiff_core.checkpoint import CheckpointError, save_checkpoint
    from training.export import export

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    gen = ExpressionGenerator(C.EXPRESSION_PRESETS["tiny"])
    guided, plain = str(tmp_path / "guided_parts.safetensors"), str(tmp_path / "plain_parts.safetensors")
    save_checkpoint(guided, {"denoiser": _tiny(dataclasses.replace(TINY, expression_dropout=0.1)),
                             "expression_generator": gen})
    save_checkpoint(plain, {"denoiser": _tiny(), "expression_generator": gen})
    bundle = export(str(tmp_path / "guided.safetensors"), [guided], guidance=2.0, reinject_identity_every=2,
                    audio_guidance=1.5)
    assert pl.load_bundle(bundle).recommended_guidance == 2.0
    assert pl.load_bundle(bundle).recommended_reinject_identity_every == 2
    assert pl.load_bundle(bundle).recommended_audio_guidance == 1.5
    assert pl.load_bundle(guided).recommended_guidance == 1.0                  # a bundle that names none
    assert pl.load_bundle(guided).recommended_reinject_identity_every == 0
    assert pl.load_bundle(guided).recommended_audio_guidance == 1.0
    # a re-export of the whole bundle keeps its denoiser's recommendations unless it is given new ones
    again = export(str(tmp_path / "again.safetensors"), [], base=bundle, audio_guidance=2.0)
    assert pl.load_bundle(again).recommended_audio_guidance == 2.0 and pl.load_bundle(again).recommended_guidance == 2.0
    with pytest.raises(CheckpointError, match="audio_guidance must be a number >= 0"):
        export(str(tmp_path / "refused.safetensors"), [guided], audio_guidance=-1.0)
    assert pl.resolve_guidance(None, 1.5) == 1.5 and pl.resolve_guidance(1, 1.5) == 1.0
    with pytest.raises(pl.PipelineError, match="--audio-guidance must be >= 0"):
        pl.resolve_guidance(-2, 1.5, "--audio-guidance")
    with pytest.raises(CheckpointError, match="whole number"):
        export(str(tmp_path / "refused.safetensors"), [guided], reinject_identity_every=-1)
    with pytest.raises(CheckpointError, match="expression dropout"):           # nothing written for a plain one
        export(str(tmp_path / "refused.safetensors"), [plain], guidance=2.0)
    assert not (tmp_path / "refused.safetensors").exists()
    # the generated mouth: "voice" needs a denoiser with training statistics (expression_mean)
    with pytest.raises(CheckpointError, match="training statistics"):
        export(str(tmp_path / "refused.safetensors"), [guided], mouth="voice")
    assert not (tmp_path / "refused.safetensors").exists() and pl.load_bundle(bundle).recommended_mouth == "generator"
    stats = str(tmp_path / "stats_parts.safetensors")
    save_checkpoint(stats, {"denoiser": _tiny(dataclasses.replace(TINY, expression_mean=(0.1,) * 50,
                                                                  expression_scale=(1.0,) * 50)),
                            "expression_generator": gen})
    voiced = pl.load_bundle(export(str(tmp_path / "voiced.safetensors"), [stats], mouth="voice"))
    assert voiced.recommended_mouth == "voice"
    assert pl.resolve_mouth("auto", voiced.denoiser, voiced.recommended_mouth) == pl.Mouth((0.1,) * 50)
    spoken = pl.load_bundle(export(str(tmp_path / "spoken.safetensors"), [stats], mouth="speech"))
    assert pl.resolve_mouth("auto", spoken.denoiser, spoken.recommended_mouth) == pl.Mouth((0.1,) * 50, True)
    speech = os.path.join(root, "assets", "speech.wav")
    portrait = os.path.join(root, "assets", "portrait.jpg")

    def run(*extra):
        out = subprocess.run([sys.executable, "-m", "emodiff_core", "generate", "--checkpoint", bundle, "--portrait",
                              portrait, "--audio", speech, "--out", str(tmp_path / "v.mp4"), "--steps", "2",
                              "--fps", "4", "--plot", "none", *extra], cwd=root, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run()
    assert first["sampling"]["guidance"] == 2.0                                # the checkpoint's settings by default
    assert first["reinject_identity_every"] == 2 and first["sampling"]["audio_guidance"] == 1.5
    assert first["size"] == [64, 64]                                           # auto: lanczos2 of the 32 px model
    given = run("--guidance", "1", "--superres", "none", "--reinject-identity-every", "0", "--audio-guidance", "1")
    assert given["sampling"]["guidance"] == 1.0 and given["size"] == [32, 32]
    assert "audio_guidance" not in given["sampling"]                            # off
    assert given["reinject_identity_every"] == 0


def test_expression_track_keeps_its_neutral_sequence_through_files_and_resampling():
    psi = torch.randn(12, 50, generator=torch.Generator().manual_seed(0))
    neutral = torch.randn(12, 50, generator=torch.Generator().manual_seed(1))
    track = pl.ExpressionTrack(psi, 30.0, {"emotion": "happy"}, neutral=neutral)
    back = pl.ExpressionTrack.from_json(track.to_json())
    assert torch.allclose(back.psi, psi, atol=1e-6) and torch.allclose(back.neutral, neutral, atol=1e-6)
    half = track.resampled(6, 15.0)
    assert half.neutral.shape == (6, 50) and torch.allclose(half.neutral[0], neutral[0])
    old = {k: v for k, v in track.to_json().items() if k != "neutral"}     # files saved before the field existed
    assert pl.ExpressionTrack.from_json(old).neutral is None and pl.ExpressionTrack.from_json(old).resampled(6, 15.0).neutral is None
    with pytest.raises(pl.PipelineError, match="neutral must have the shape"):
        pl.ExpressionTrack.from_json(dict(track.to_json(), neutral=[[0.0] * 50] * 3))
    with pytest.raises(pl.PipelineError, match="shaped like psi"):
        pl.ExpressionTrack(psi, 30.0, neutral=neutral[:5])


# --------------------------------------------------------------------------- probes
def _twin_batch(cfg=TINY, batch=3):
    x = _inputs(cfg, batch)
    g = torch.Generator().manual_seed(9)
    twin = torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1
    emotion = torch.zeros_like(twin)
    emotion[:, :, 8:14, 10:22] = 0.4                         # the emotion: a brighter band
    return {"x0": (twin + emotion).clamp(-1, 1), "twin": twin, "identity": x["identity"], "motion": x["motion"],
            "audio": torch.randn(batch, 2 * cfg.audio_window + 1, cfg.audio.n_mels, cfg.audio.context, generator=g),
            "expression": x["expression"], "neutral_expression": x["expression"] * 0.0}


class _Oracle(torch.nn.Module):
    """Predicts x0 = the target when given the target's psi and = the twin when given neutral psi: a model that
    renders the emotion from psi alone (response 1) or, with ``reads_psi`` False, never (response 0)."""

    def __init__(self, batch, diffusion, reads_psi=True):
        super().__init__()
        self.batch, self.d, self.reads_psi = batch, diffusion, reads_psi
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def encode_audio(self, features):
        return torch.zeros(features.shape[0], features.shape[1], TINY.audio_dim)

    def reference_features(self, identity):
        return {}

    def forward(self, x_t, t, **cond):
        emotional = self.reads_psi and bool(cond["expression"].abs().sum() > 0)
        target = self.batch["x0"] if emotional else self.batch["twin"]
        idx = torch.tensor([int(np.searchsorted(self.d.timestep_map, int(t[0])))] * len(t))
        abar = self.d.extract(self.d.alphas_cumprod, idx, x_t)
        eps = (x_t - abar.sqrt() * target) / (1 - abar).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], 1)


def test_probes_read_one_for_a_model_that_renders_psi_and_zero_for_one_that_ignores_it():
    d = GaussianDiffusion.from_config(TINY.diffusion)
    batch = _twin_batch()
    reads = emotion_probes(_Oracle(batch, d, True), d, batch)
    ignores = emotion_probes(_Oracle(batch, d, False), d, batch)
    for level in (0.2, 0.4, 0.6):
        assert reads[f"x0_response_{level:g}"] == pytest.approx(1.0, abs=1e-4)
        assert ignores[f"x0_response_{level:g}"] == pytest.approx(0.0, abs=1e-6)
    assert reads["swap_loss"] > 0 and reads["swap_loss_mask"] > reads["swap_loss"]
    assert ignores["swap_loss"] == pytest.approx(0.0, abs=1e-6)
    # a real (tiny, random) denoiser: finite numbers, and it leaves the model in the mode it found
    den = _tiny().train()
    out = emotion_probes(den, d, batch)
    assert den.training and all(np.isfinite(v) for v in out.values())
    with pytest.raises(ValueError, match="missing twin"):
        emotion_probes(den, d, {k: v for k, v in batch.items() if k != "twin"})


# --------------------------------------------------------------------------- twins in the data loader, training
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from training.corpus import generate_corpus

    out = str(tmp_path_factory.mktemp("twin_corpus"))
    generate_corpus(out, clips=8, seed=5, size=64, identities=8)
    return out


def test_twin_examples_keep_the_emotion_in_psi_only(corpus):
    from training.data import DenoiserData, TwinOptions

    cfg = dataclasses.replace(C.DENOISER_PRESETS["demo"])
    data = DenoiserData(corpus, cfg, "train", twins=TwinOptions(share=1.0, target_share=0.0))
    assert data.has_twins
    emotional = next(i for i, c in enumerate(data.clips) if c.meta["emotion"] != "neutral" and c.twins is not None)
    c = data.clips[emotional]
    frame = int(np.argmax(c.twins.onset))
    item = data.twin_sample(emotional, frame, 0, np.random.default_rng(0))
    neutral_identity, _ = c.twins.render(c.twins.neutral_psi[[0]], [0])
    assert torch.equal(item["identity"], neutral_identity[0])                  # identity from the neutral twin
    assert torch.equal(item["x0"], c.frames[frame].float() / 127.5 - 1.0)      # the clip's own target
    assert item["emotion_mask"].sum() > 0                                      # where the emotion shows
    neutral_frame, _ = c.twins.render(c.twins.neutral_psi[[frame]], [frame])
    outside = item["emotion_mask"][0] == 0
    assert torch.allclose(item["x0"][:, outside], neutral_frame[0][:, outside], atol=2.0 / 127.5 + 1e-6)
    assert not torch.equal(item["expression"], item["neutral_expression"])
    # a twin target carries that twin's psi: the neutral twin target has the neutral window
    rng = np.random.default_rng(3)
    targets = [data.twin_sample(emotional, frame, 0, rng, target_twin=True) for _ in range(6)]
    assert any(torch.equal(t["expression"], t["neutral_expression"]) for t in targets)
    batch = data.batch(np.random.default_rng(1), 4)
    assert set(batch) >= {"neutral_expression", "emotion_mask"} and batch["emotion_mask"].shape == (4, 1, 64, 64)
    probe = data.probe_batch(np.random.default_rng(2), 3)
    assert probe["twin"].shape == probe["x0"].shape and (probe["x0"] - probe["twin"]).abs().max() > 0
    # one emotion's probe batch: every target is a frame of a clip of that emotion
    strongest = max((d for d in data.clips if d.twins is not None and d.meta["emotion"] != "neutral"),
                    key=lambda d: d.meta.get("intensity") or 0.0)
    emotion = strongest.meta["emotion"]
    only = data.probe_batch(np.random.default_rng(2), 3, emotion=emotion)
    own = torch.cat([d.frames.float() / 127.5 - 1.0 for d in data.clips if d.meta["emotion"] == emotion])
    assert all(bool((own == x).flatten(1).all(1).any()) for x in only["x0"])
    from training.data import ClipFormatError
    with pytest.raises(ClipFormatError, match="no elated clips"):
        data.probe_batch(np.random.default_rng(2), 3, emotion="elated")


def test_probes_by_emotion_report_each_emotion_of_the_split(corpus):
    """benchmarks.x0_response_by_emotion: one probe batch per emotion (the same draws as the pooled probe's,
    restricted), every emotion of the split reported."""
    from benchmarks.x0_response_by_emotion import probes_by_emotion
    from training.data import DenoiserData, TwinOptions

    torch.manual_seed(0)
    den = EMOdiffheadDenoiser(dataclasses.replace(C.DENOISER_PRESETS["demo"])).eval()
    report = probes_by_emotion(den, corpus, "train", examples=2)
    data = DenoiserData(corpus, den.config, "train", twins=TwinOptions(share=1.0))
    assert set(report) == {c.meta["emotion"] for c in data.clips} - {"neutral"}
    measured = {e: r for e, r in report.items() if r["examples"]}
    assert measured, report
    for r in measured.values():
        assert r["examples"] == 2 and r["change_0_255"] > 0
        assert all(np.isfinite(r[k]) for k in ("x0_response_0.2", "x0_response_0.4", "x0_response_0.6", "swap_loss"))


def test_neutral_oldest_examples_hold_the_neutral_twin_in_the_oldest_slot_and_the_clip_in_the_rest(corpus):
    """emotion.twin_neutral_oldest_share: re-injected sampling's state (a neutral anchor in the oldest motion slot,
    the emotion so far in the newest, the clip's own frame as the target); off, batches unchanged."""
    from training.data import DenoiserData, TwinOptions

    cfg = dataclasses.replace(C.DENOISER_PRESETS["demo"])
    assert cfg.n_motion_frames == 2
    data = DenoiserData(corpus, cfg, "train", twins=TwinOptions(share=1.0, neutral_oldest_share=1.0))
    emotional = next(i for i, c in enumerate(data.clips) if c.meta["emotion"] != "neutral" and c.twins is not None)
    c = data.clips[emotional]
    frame = max(2, int(np.argmax(c.twins.onset)))
    item = data.neutral_oldest_sample(emotional, frame, 1)
    neutral, _ = c.twins.render(c.twins.neutral_psi[[1, frame - 2]], [1, frame - 2])
    assert torch.equal(item["identity"], neutral[0])                           # identity: the neutral twin
    assert torch.equal(item["motion"][0], neutral[1])                          # oldest slot: neutral twin of t-2
    assert torch.equal(item["motion"][1], c.frames[frame - 1].float() / 127.5 - 1.0)   # newest: the clip's t-1
    assert torch.equal(item["x0"], c.frames[frame].float() / 127.5 - 1.0)      # target: the clip's own frame
    assert not torch.equal(item["expression"], item["neutral_expression"]) and item["emotion_mask"].sum() > 0
    first = data.neutral_oldest_sample(emotional, 0, 1)                       # no previous frame: identity copies
    assert torch.equal(first["motion"], first["identity"][None].expand_as(first["motion"]))
    batch = data.batch(np.random.default_rng(7), 4)
    assert batch["motion"].shape == (4, 2, 3, 64, 64) and set(batch) >= {"neutral_expression", "emotion_mask"}
    twins = TwinOptions(share=0.6, target_share=0.5)
    off = DenoiserData(corpus, cfg, "train", twins=twins)
    again = DenoiserData(corpus, cfg, "train", twins=TwinOptions(share=0.6, target_share=0.5, neutral_oldest_share=0.0))
    a, b = off.batch(np.random.default_rng(8), 4), again.batch(np.random.default_rng(8), 4)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_emotion_twins_change_only_the_intensity_and_the_half_probe_pairs_with_the_full_one(corpus):
    from training.data import DenoiserData, TwinOptions

    cfg = dataclasses.replace(C.DENOISER_PRESETS["demo"])
    data = DenoiserData(corpus, cfg, "train", twins=TwinOptions(share=1.0, target_share=1.0, same_emotion_share=1.0))
    emotional = next(i for i, c in enumerate(data.clips) if c.meta["emotion"] != "neutral" and c.twins is not None)
    tw = data.clips[emotional].twins
    emotion = np.asarray(tw.extras["psi_emotion"])
    frame = int(np.argmax(tw.onset))
    rng = np.random.default_rng(0)
    draws = [tw.counterfactual(rng, 1.0) for _ in range(40)]
    neutral = [d for d in draws if np.array_equal(d, tw.neutral_psi)]
    assert 10 <= len(neutral) <= 30                                        # half neutral
    for d in draws:
        if d is tw.neutral_psi or np.array_equal(d, tw.neutral_psi):
            continue
        # the clip's own emotion direction, scaled: the emotion part is parallel to the clip's
        part = (d - tw.neutral_psi)[frame]
        k = float(part @ emotion[frame] / (emotion[frame] @ emotion[frame]))
        assert k > 0 and np.allclose(part, k * emotion[frame], atol=1e-5)
    # with share 0 the draws are the older recipe's, draw for draw (no extra random number)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(20):
        old = tw.neutral_psi if a.random() < 0.5 else tw.with_other_emotion(a)
        assert np.array_equal(tw.counterfactual(b, 0.0), old)
    # with share 0 no same-emotion twin is drawn; a neutral clip never asks for one
    other = [tw.counterfactual(np.random.default_rng(s), 0.0) for s in range(20)]
    for d in other:
        part = (d - tw.neutral_psi)[frame]
        assert np.array_equal(d, tw.neutral_psi) or not np.allclose(
            part, float(part @ emotion[frame] / (emotion[frame] @ emotion[frame])) * emotion[frame], atol=1e-5)
    neutral_clip = next((c for c in data.clips if c.meta["emotion"] == "neutral" and c.twins is not None), None)
    if neutral_clip is not None:
        assert neutral_clip.twins.counterfactual(np.random.default_rng(1), 1.0).shape == neutral_clip.twins.neutral_psi.shape
        with pytest.raises(ValueError, match="neutral clip"):
            neutral_clip.twins.with_same_emotion(np.random.default_rng(1))
    assert np.allclose(tw.with_scaled_emotion(1.0), tw.neutral_psi + emotion)
    # the half-intensity probe batch: the same frames, a target between the neutral twin and the clip's frame
    full = data.probe_batch(np.random.default_rng(2), 3)
    half = data.probe_batch(np.random.default_rng(2), 3, emotion_scale=0.5)
    for key in ("twin", "identity", "motion", "audio", "neutral_expression"):
        assert torch.equal(full[key], half[key]), key
    change_full = (full["x0"] - full["twin"]).abs().sum()
    change_half = (half["x0"] - half["twin"]).abs().sum()
    assert 0.2 * change_full < change_half < 0.8 * change_full
    assert torch.allclose(half["expression"], (full["expression"] + full["neutral_expression"]) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="emotion_scale"):
        data.probe_batch(np.random.default_rng(2), 3, emotion_scale=0.0)


def test_intensity_pairs_share_their_context_and_differ_in_k_alone(corpus):
    from emodiff_core.diffusion.losses import emotion_region_mask
    from training.data import DenoiserData, TwinOptions

    cfg = dataclasses.replace(C.DENOISER_PRESETS["demo"])
    data = DenoiserData(corpus, cfg, "train", twins=TwinOptions(share=0.5, intensity_pair_share=1.0))
    emotional = next(i for i, c in enumerate(data.clips) if c.meta["emotion"] != "neutral" and c.twins is not None)
    tw = data.clips[emotional].twins
    frame = max(2, int(np.argmax(tw.onset)))
    a, b = data.intensity_pair_samples(emotional, frame, 1, np.random.default_rng(0))
    for key in ("identity", "motion", "audio", "neutral_expression"):
        assert torch.equal(a[key], b[key]), key
    neutral_identity, _ = tw.render(tw.neutral_psi[[1]], [1])
    assert torch.equal(a["identity"], neutral_identity[0])
    assert (a["pair"].item(), b["pair"].item()) == (1, -1)
    assert not torch.equal(a["x0"], b["x0"]) and torch.equal(a["pair_mask"], b["pair_mask"])
    assert torch.equal(a["pair_mask"], emotion_region_mask(a["x0"][None], b["x0"][None])[0])
    assert a["pair_mask"].sum() > 0
    # each target's condition is the clip's own emotion at its own k: parallel to the emotion's direction
    direction = (tw.with_emotion(tw.emotion, 1.0) - tw.neutral_psi)[frame]
    for item in (a, b):
        part = (item["expression"] - item["neutral_expression"]).numpy()
        k = part @ direction / (direction @ direction)
        assert np.all(k >= -1e-6) and np.all(k <= 1 + 1e-5) and np.allclose(part, k[:, None] * direction, atol=1e-5)
    neutral = next((i for i, c in enumerate(data.clips) if c.meta["emotion"] == "neutral"), None)
    if neutral is not None:
        with pytest.raises(ValueError, match="emotional clip"):
            data.intensity_pair_samples(neutral, 0, 0, np.random.default_rng(0))
    batch = data.batch(np.random.default_rng(4), 5)
    pair = batch["pair"].tolist()
    assert len(pair) == 5 and pair.count(1) == pair.count(-1) >= 1
    assert all(pair[i + 1] == -1 for i in range(5) if pair[i] == 1)
    assert all(batch["pair_mask"][i].sum() == 0 for i in range(5) if pair[i] == 0)
    without = DenoiserData(corpus, cfg, "train", twins=TwinOptions(share=0.5))
    assert "pair" not in without.batch(np.random.default_rng(4), 5)


def test_half_intensity_probe_reads_how_the_response_follows_k():
    from training.probes import half_intensity_probe

    d = GaussianDiffusion.from_config(TINY.diffusion)
    batch = _twin_batch()
    assert half_intensity_probe(_Oracle(batch, d, True), d, batch) == {"x0_response_half_0.6": pytest.approx(1.0, abs=1e-4)}
    assert half_intensity_probe(_Oracle(batch, d, False), d, batch)["x0_response_half_0.6"] == pytest.approx(0.0, abs=1e-6)


def test_expression_statistics_standardise_and_drop():
    from training.data import expression_statistics

    rng = np.random.default_rng(0)
    psi = rng.normal(size=(500, 50)) * np.linspace(0.1, 2, 50) + np.arange(50)
    mean, scale = expression_statistics(psi, keep=13)
    z = (psi - np.array(mean)) * np.array(scale)
    assert np.allclose(z[:, :13].mean(0), 0, atol=1e-9) and np.allclose(z[:, :13].std(0), 1, atol=1e-9)
    assert np.all(z[:, 13:] == 0) and len(mean) == len(scale) == 50
    with pytest.raises(ValueError):
        expression_statistics(psi, keep=0)


def test_emotion_recipe_trains_fine_tunes_and_logs_the_probes(corpus, tmp_path):
    import csv
    import json

    from emodiff_core.checkpoint import load_components
    from training.configfile import CONFIG_DIR
    from training.train_denoiser import train

    with open(f"{CONFIG_DIR}/denoiser_tiny.json") as fh:
        base = json.load(fh)
    plain = train(f"{CONFIG_DIR}/denoiser_tiny.json", corpus, str(tmp_path / "plain"))
    recipe = dict(base, loss=dict(base["loss"], emotion=4.0),
                  model={"preset": "tiny", "overrides": {"expression_spatial": 2}},
                  emotion={"twin_share": 0.5, "twin_target_share": 0.5, "twin_same_emotion_share": 0.5,
                           "expression_dropout": 0.5,
                           "standardise_expression": True, "expression_components": 13, "expression_lr_mult": 5.0,
                           "reset_expression_path": True, "probe_examples": 2})
    recipe["data"] = dict(base["data"], val_split="train", motion_blur=1.0)
    path = tmp_path / "emotion.json"
    path.write_text(json.dumps(recipe))
    out = train(str(path), corpus, str(tmp_path / "emotion"), init_from=plain)
    den = load_components(out, ["denoiser"])["denoiser"]
    assert den.config.expression_spatial == 2 and den.config.expression_scale[13:] == (0.0,) * 37
    assert den.config.expression_dropout == 0.5 and load_components(plain, ["denoiser"])["denoiser"].config.expression_dropout == 0
    assert all(s > 0 for s in den.config.expression_scale[:13])
    with open(tmp_path / "emotion" / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    sampled = [r for r in rows if r["x0_response_0.4"]]
    assert sampled and all(np.isfinite(float(r["swap_loss_mask"])) and np.isfinite(float(r["x0_response_half_0.6"]))
                           for r in sampled)
    assert any(r["emotion"] for r in rows)
    # a fine-tune of it on a mix of two corpora keeps its psi statistics (its expression path reads psi
    # through them) and records both folders; it runs with the real-texture emotion weight (no real-texture
    # clips here: the term's extra is zero, the path is exercised) and half its examples start from the previous
    # frame as sampling does (data.anchored_start_share; kept to the procedural clips, which all of these are)
    from emodiff_core.checkpoint import read_checkpoint
    from training.corpus import generate_corpus

    other = str(tmp_path / "other_corpus")
    generate_corpus(other, clips=4, seed=6, size=64, identities=4)
    again = dict(recipe, emotion=dict(recipe["emotion"], reset_expression_path=False, real_texture_emotion_mult=3.0,
                                      intensity_pair_share=0.5),
                 loss=dict(recipe["loss"], intensity_pair=2.0),
                 data=dict(recipe["data"], anchored_start_share=0.5, anchored_start_sources="procedural"))
    path.write_text(json.dumps(again))
    more = train(str(path), [corpus, other], str(tmp_path / "mix"), init_from=out)
    tuned = load_components(more, ["denoiser"])["denoiser"]
    assert tuned.config.expression_mean == den.config.expression_mean
    assert tuned.config.expression_scale == den.config.expression_scale
    assert read_checkpoint(more).info["data"] == f"{os.path.basename(corpus)}+other_corpus"
    with open(tmp_path / "mix" / "log.csv") as fh:     # and intensity pairs, whose term is logged
        pair_terms = [float(r["pair"]) for r in csv.DictReader(fh) if r["pair"]]
    assert pair_terms and all(np.isfinite(v) and v >= 0 for v in pair_terms) and max(pair_terms) > 0
