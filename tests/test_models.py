"""Networks: Eq. 13 conditioning, ReferenceNet caching, overfitting, the expression GAN, Eq. 14."""
import time

import pytest
import torch
import torch.nn.functional as F

from conftest import denoiser_inputs
from emodiff_core.config import EXPRESSION_PRESETS
from emodiff_core.diffusion import GaussianDiffusion, LossWeights, hybrid_loss
from emodiff_core.editing import (MAX_INTENSITY, blend_expressions, edit_expression, emotion_direction,
                                      keyframe_weights, parse_keyframes)
from emodiff_core.emotions import EMOTIONS, EmotionError, emotion_index
from emodiff_core.models import (EMOdiffheadDenoiser, ExpressionGenerator, GlobalDiscriminator,
                                     LocalDiscriminator, direction_error, discriminator_losses, generator_losses)
from emodiff_core.models.layers import ResBlock


def test_conditional_block_computes_eq13_exactly():
    torch.manual_seed(0)
    block = ResBlock(8, 16, emb_dim=12, dropout=0.0)
    for p in block.parameters():          # random weights everywhere, zero-initialised ones included
        torch.nn.init.normal_(p, std=0.3)
    h = torch.randn(3, 16, 5, 5)
    cond = {name: torch.randn(3, 12) for name in ("time", "audio", "expression")}

    def film(name):
        s, b = block.film[name].proj(F.silu(cond[name])).chunk(2, dim=1)
        return (1 + s)[..., None, None], b[..., None, None]

    (ts, tb), (as_, ab), (es, eb) = film("time"), film("audio"), film("expression")
    gn = block.out_norm(h)
    expected = es * (as_ * (ts * gn + tb) + ab) + eb          # Eq. 13
    assert torch.allclose(block.modulate(gn, cond), expected, atol=1e-6)
    # and the block really uses it on the GroupNorm output of its first convolution
    x = torch.randn(3, 8, 5, 5)
    inner = block.in_conv(F.silu(block.in_norm(x)))
    manual = block.skip(x) + block.out_conv(F.silu(block.modulate(block.out_norm(inner), cond)))
    assert torch.allclose(block(x, cond), manual, atol=1e-5)


def test_input_channels_and_output_shape(tiny_config):
    model = EMOdiffheadDenoiser(tiny_config)
    assert tiny_config.in_channels == 12
    assert model.unet.body.input_stages[0].conv.in_channels == 12
    inputs = denoiser_inputs(tiny_config, batch=2)
    out = model(torch.randn(2, 3, 32, 32), torch.tensor([3, 50]), **inputs)
    assert out.shape == (2, 6, 32, 32)
    # zero-initialised output convolution: an untrained network predicts 0
    assert out.abs().max().item() == 0.0
    with pytest.raises(ValueError, match="motion must be"):
        bad = dict(inputs, motion=inputs["motion"][:, :1])
        model(torch.randn(2, 3, 32, 32), torch.tensor([3, 50]), **bad)
    with pytest.raises(ValueError, match="audio_emb must be"):
        model(torch.randn(2, 3, 32, 32), torch.tensor([3, 50]), **dict(inputs, audio_emb=inputs["audio_emb"][:, :2]))


def _randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_reference_features_computed_once_equal_recomputing(tiny_config):
    model = EMOdiffheadDenoiser(tiny_config).eval()
    _randomise(model)
    inputs = denoiser_inputs(tiny_config, batch=2)
    ref = model.reference_features(inputs["identity"])
    assert set(ref) == set(model.unet.body.fusion_points) and len(ref) > 0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for t in (torch.tensor([1, 2]), torch.tensor([90, 40])):
            cached = model(x, t, reference=ref, **inputs)
            fresh = model(x, t, reference=None, **inputs)
            assert torch.equal(cached, fresh)
    # the features do not depend on t or the frame: they are a function of the identity alone
    again = model.reference_features(inputs["identity"])
    assert all(torch.equal(ref[k], again[k]) for k in ref)
    # and they matter: another identity's features change the output
    other = model.reference_features(torch.randn(2, 3, 32, 32))
    with torch.no_grad():
        assert not torch.allclose(model(x, torch.tensor([1, 2]), reference=other, **inputs),
                                  model(x, torch.tensor([1, 2]), reference=ref, **inputs))


def test_reference_features_broadcast_over_a_batch(tiny_config):
    model = EMOdiffheadDenoiser(tiny_config).eval()
    _randomise(model, 1)
    inputs = denoiser_inputs(tiny_config, batch=3)
    identity = inputs["identity"][:1]
    ref1 = model.reference_features(identity)
    with torch.no_grad():
        a = model(torch.zeros(3, 3, 32, 32), torch.tensor([5, 5, 5]), **dict(inputs, identity=identity), reference=ref1)
        b = model(torch.zeros(3, 3, 32, 32), torch.tensor([5, 5, 5]),
                  **dict(inputs, identity=identity.expand(3, -1, -1, -1)))
    assert torch.allclose(a, b, atol=1e-5)


def test_every_parameter_takes_part_in_the_training_loss():
    """DDP (without find_unused_parameters) requires every parameter to receive a gradient: no dead layers,
    e.g. past the ReferenceNet's last fusion point, and the audio encoder trained through the loss."""
    from emodiff_core.config import preset

    for name in ("tiny", "demo"):
        cfg = preset("denoiser", name)
        model = EMOdiffheadDenoiser(cfg)
        inputs = denoiser_inputs(cfg, batch=1)
        a = cfg.audio
        features = torch.randn(1, 2 * cfg.audio_window + 1, a.n_mels, a.context)
        inputs["audio_emb"] = model.encode_audio(features)
        x = torch.randn(1, 3, cfg.image_size, cfg.image_size)
        model(x, torch.tensor([1]), **inputs).square().sum().backward()
        unused = [n for n, p in model.named_parameters() if p.grad is None]
        assert not unused, (name, unused)


def test_tiny_forward_backward_is_fast(tiny_config):
    model = EMOdiffheadDenoiser(tiny_config)
    inputs = denoiser_inputs(tiny_config, batch=1)
    x = torch.randn(1, 3, 32, 32)
    model(x, torch.tensor([1]), **inputs).sum().backward()       # warm-up
    start = time.perf_counter()
    model(x, torch.tensor([1]), **inputs).square().sum().backward()
    # sizing check of the 'tiny' preset ("well under a second"), with a wide margin for shared machines
    assert time.perf_counter() - start < 1.0


def test_tiny_unet_overfits_one_batch(tiny_config):
    """The hybrid loss (with lip and eye terms) on one fixed batch falls by 90% within 200 Adam steps."""
    torch.manual_seed(0)
    model = EMOdiffheadDenoiser(tiny_config)
    diffusion = GaussianDiffusion.from_config(tiny_config.diffusion)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    inputs = denoiser_inputs(tiny_config, batch=2, seed=1)
    t = torch.tensor([5, 90])
    noise = torch.randn(x0.shape, generator=g)
    landmarks = torch.rand(2, 68, 2, generator=g) * 20 + 6
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss():
        return hybrid_loss(diffusion, model, x0, t, inputs, LossWeights(vlb=0.001, lip=0.2, eye=0.1),
                           landmarks=landmarks, noise=noise)["loss"].mean()

    first = loss().item()
    history = []
    for _ in range(200):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
        history.append(value.item())
        if value.item() < 0.1 * first:
            break
    assert history[-1] < 0.1 * first, (first, history[::10])


# --------------------------------------------------------------------------- expression GAN
def test_generator_rolls_out_sequences_and_is_seeded():
    cfg = EXPRESSION_PRESETS["tiny"]
    gen = ExpressionGenerator(cfg)
    labels = torch.tensor([0, 5, 7])
    a = gen(labels, 12, generator=torch.Generator().manual_seed(3))
    b = gen(labels, 12, generator=torch.Generator().manual_seed(3))
    assert a.shape == (3, 12, 50) and torch.equal(a, b)
    # frame i depends on frame i-1: the rollout is sequential, the first frames do not see later ones
    short = gen(labels, 5, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(short, a[:, :5], atol=1e-6)


def test_generator_warmup_returns_the_rollout_after_its_first_frames_and_old_configs_have_none():
    """A warm-up of W frames is the same rollout with its first W frames dropped (same weights, same noise); a
    config written before the field existed reads as no warm-up; a negative one is refused."""
    import dataclasses
    import json

    from emodiff_core.config import ConfigError, from_json

    cfg = EXPRESSION_PRESETS["tiny"]
    gen = ExpressionGenerator(cfg).eval()
    warmed = ExpressionGenerator(dataclasses.replace(cfg, warmup_frames=7)).eval()
    warmed.load_state_dict(gen.state_dict())
    labels = torch.tensor([1, 4])
    z = gen.sample_noise(2, torch.Generator().manual_seed(5))
    with torch.no_grad():
        full, tail = gen(labels, 7 + 9, z=z), warmed(labels, 9, z=z)
    assert tail.shape == (2, 9, 50) and torch.allclose(tail, full[:, 7:], atol=1e-6)
    old = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "warmup_frames"}
    assert from_json(type(cfg), json.dumps(old)).warmup_frames == 0
    with pytest.raises(ConfigError, match="warmup_frames must be >= 0"):
        ExpressionGenerator(dataclasses.replace(cfg, warmup_frames=-1))


def test_one_gan_step_gives_finite_losses_and_updates_all_three_networks():
    torch.manual_seed(0)
    cfg = EXPRESSION_PRESETS["tiny"]
    gen, d_g, d_l = ExpressionGenerator(cfg), GlobalDiscriminator(cfg), LocalDiscriminator(cfg)
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(list(d_g.parameters()) + list(d_l.parameters()), lr=1e-3)
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in
              (("G", gen), ("Dg", d_g), ("Dl", d_l))}
    labels = torch.randint(0, 8, (6,))
    real = torch.randn(6, 20, 50)
    fake = gen(labels, 20)
    d_losses = discriminator_losses(d_g, d_l, real, fake.detach(), labels)
    opt_d.zero_grad()
    d_losses["total"].backward()
    opt_d.step()
    g_losses = generator_losses(d_g, d_l, gen(labels, 20), real, labels, lambda_mse=1.0, lambda_cls=1.0)
    opt_g.zero_grad()
    g_losses["total"].backward()
    opt_g.step()
    for losses in (d_losses, g_losses):
        assert all(torch.isfinite(v).all() for v in losses.values())
    # the adversarial terms' weight (1 in the paper) scales them alone
    weighted = generator_losses(d_g, d_l, fake.detach(), real, labels, lambda_mse=2.0, lambda_cls=3.0,
                                lambda_adversarial=0.5)
    parts = 0.5 * (weighted["adv_global"] + weighted["adv_local"]) + 2 * weighted["mse"] + 3 * weighted["cls"]
    assert weighted["total"].item() == pytest.approx(parts.item(), rel=1e-6)
    for name, net in (("G", gen), ("Dg", d_g), ("Dl", d_l)):
        changed = [not torch.equal(b, p) for b, p in zip(before[name], net.parameters())]
        assert all(changed), f"{name}: {changed.count(False)} parameter tensors were not updated"


def test_gan_losses_match_eq17_and_eq18():
    cfg = EXPRESSION_PRESETS["tiny"]
    d_g, d_l = GlobalDiscriminator(cfg), LocalDiscriminator(cfg)
    labels = torch.tensor([1, 2])
    real, fake = torch.randn(2, 9, 50), torch.randn(2, 9, 50)
    losses = discriminator_losses(d_g, d_l, real, fake, labels)
    pr = torch.sigmoid(d_g(real, labels)[0])
    pf = torch.sigmoid(d_g(fake, labels)[0])
    eq17 = (torch.log(pr) + torch.log(1 - pf)).mean()
    assert losses["global"].item() == pytest.approx(-eq17.item(), rel=1e-5)
    lr_, lf = torch.sigmoid(d_l(real, labels)), torch.sigmoid(d_l(fake, labels))
    eq18 = (torch.log(lr_).sum(1) + torch.log(1 - lf).sum(1)).mean()
    assert losses["local"].item() == pytest.approx(-eq18.item(), rel=1e-5)


def test_global_discriminator_is_causal_per_block():
    cfg = EXPRESSION_PRESETS["tiny"]
    d_g = GlobalDiscriminator(cfg)
    x = torch.randn(1, 16, 50)
    h1 = d_g.blocks(d_g.inp(x.transpose(1, 2)))
    x2 = x.clone()
    x2[:, 10:] += 1.0
    h2 = d_g.blocks(d_g.inp(x2.transpose(1, 2)))
    assert torch.allclose(h1[..., :10], h2[..., :10]) and not torch.allclose(h1[..., 10:], h2[..., 10:])


def test_direction_error_scores_e_y_minus_e_n_against_the_data_direction_and_teaches_it():
    neutral = emotion_index("neutral")
    g = torch.Generator().manual_seed(0)
    directions = torch.randn(8, 50, generator=g)
    directions[neutral] = 0
    labels = torch.tensor([neutral, emotion_index("happy"), emotion_index("sad")])
    e_n = torch.randn(3, 7, 50, generator=g)
    exact = e_n + directions[labels][:, None]
    assert direction_error(exact, e_n, directions, labels, neutral).item() == pytest.approx(0, abs=1e-9)
    # an offset of 0.5 on two components of one frame of the happy row: 0.5 / 7 frames / 2 emotional rows
    off = exact.clone()
    off[1, 3, :2] += 0.5
    off[0] += 9.0                                                 # the neutral row is not scored
    assert direction_error(off, e_n, directions, labels, neutral).item() == pytest.approx(0.5 / 14, rel=1e-4)
    assert direction_error(e_n, e_n, directions, torch.tensor([neutral]), neutral) == 0   # nothing to score
    # as a loss it moves a generator's d_y (one z, two labels) to the direction
    torch.manual_seed(0)
    gen = ExpressionGenerator(EXPRESSION_PRESETS["tiny"])
    opt = torch.optim.Adam(gen.parameters(), lr=3e-3)
    y, z = torch.full((4,), emotion_index("happy")), gen.sample_noise(4, g)

    def error():
        return direction_error(gen(y, 6, z=z), gen(torch.full_like(y, neutral), 6, z=z), directions, y, neutral)

    first = error().item()
    for _ in range(60):
        opt.zero_grad()
        error().backward()
        opt.step()
    assert error().item() < 0.1 * first


# --------------------------------------------------------------------------- Eq. 14
def test_eq14_endpoints_affinity_and_corrected_sign():
    g = torch.Generator().manual_seed(0)
    e_n, e_y = torch.randn(30, 50, generator=g), torch.randn(30, 50, generator=g)
    assert torch.allclose(edit_expression(e_n, e_y, 0.0), e_n)
    assert torch.allclose(edit_expression(e_n, e_y, 1.0), e_y, atol=1e-6)
    ks = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0]
    outs = [edit_expression(e_n, e_y, k) for k in ks]
    for k, out in zip(ks, outs):   # affine: e(k) = e(0) + k (e(1) - e(0))
        assert torch.allclose(out, outs[0] + k * (outs[3] - outs[0]), atol=1e-5)
    # d_y points from neutral to the target (the paper's Eq. 15 has the opposite sign)
    d = emotion_direction(e_n, e_y)
    assert torch.allclose(e_n + d, e_y)
    assert (edit_expression(e_n, e_y, 0.5) - e_y).norm() < (e_n - e_y).norm()
    per_frame = edit_expression(e_n, e_y, torch.linspace(0, 1, 30))
    assert torch.allclose(per_frame[0], e_n[0]) and torch.allclose(per_frame[-1], e_y[-1], atol=1e-6)
    for bad in (-0.1, MAX_INTENSITY + 0.01, float("nan")):
        with pytest.raises(EmotionError):
            edit_expression(e_n, e_y, bad)


def test_blends_and_keyframes():
    g = torch.Generator().manual_seed(1)
    e_n = torch.randn(10, 50, generator=g)
    targets = {"happy": torch.randn(10, 50, generator=g), "surprise": torch.randn(10, 50, generator=g)}
    out = blend_expressions(e_n, targets, {"happy": 0.5, "surprised": 0.25})
    expected = e_n + 0.5 * (targets["happy"] - e_n) + 0.25 * (targets["surprise"] - e_n)
    assert torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(EmotionError, match="sum of blend weights"):
        blend_expressions(e_n, targets, {"happy": 1.5, "surprised": 1.0})
    kfs = parse_keyframes("2:happy:1, 0:neutral:0, 4:sad:0.5")
    assert [k.time for k in kfs] == [0, 2, 4]
    w = keyframe_weights(kfs, num_frames=151, fps=30)
    happy, sad = emotion_index("happy"), emotion_index("sad")
    assert w.shape == (151, len(EMOTIONS))
    assert w[0].abs().sum() == 0 and w[60, happy] == pytest.approx(1.0) and w[150, sad] == pytest.approx(0.5)
    assert w[30, happy] == pytest.approx(0.5)                   # smoothstep midpoint
    assert w[15, happy] == pytest.approx(3 * 0.25 ** 2 - 2 * 0.25 ** 3)
    assert torch.all(torch.diff(w[:61, happy]) >= 0)            # monotone ease-in/out
    for bad in ("1:joy:1", "1:happy", "x:happy:1", "1:happy:3", "1:happy:1, 1:sad:1"):
        with pytest.raises(EmotionError):
            parse_keyframes(bad)
    json_kfs = parse_keyframes('[{"time": 0, "emotion": "angry", "intensity": 0.3}]')
    assert json_kfs[0].emotion == "angry"
