"""The diffusion process (Eq. 1-10), respacing and samplers, checked numerically."""
import math

import numpy as np
import pytest
import torch

from emodiff_core.diffusion import (GaussianDiffusion, LossWeights, beta_schedule, hybrid_loss, respace,
                                        sample_ancestral, sample_ddim, space_timesteps)
from emodiff_core.diffusion.losses import (box_masks, discretized_gaussian_log_likelihood, landmark_boxes,
                                               masked_mse, normal_kl, region_masks)


@pytest.fixture(params=["cosine", "linear"])
def diffusion(request):
    return GaussianDiffusion(beta_schedule(request.param, 1000))


def test_schedules_are_float64_and_sane():
    for name in ("cosine", "linear"):
        b = beta_schedule(name, 1000)
        assert b.dtype == np.float64 and b.shape == (1000,)
        assert np.all(b > 0) and np.all(b <= 0.999) and np.all(np.diff(b) >= -1e-15)
    lin = beta_schedule("linear", 1000)
    assert lin[0] == pytest.approx(1e-4) and lin[-1] == pytest.approx(0.02)
    with pytest.raises(ValueError):
        beta_schedule("quadratic", 10)


def test_q_sample_matches_eq2(diffusion):
    x0 = torch.linspace(-1, 1, 7).reshape(1, 1, 1, 7).repeat(4000, 3, 2, 1)
    t = torch.full((4000,), 300, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    xt = diffusion.q_sample(x0, t, noise)
    abar = float(np.prod(1.0 - diffusion.betas[:301]))
    # exact formula with the same noise, from the betas by hand (float64)
    expected = math.sqrt(abar) * x0.double() + math.sqrt(1 - abar) * noise.double()
    assert torch.allclose(xt.double(), expected, atol=1e-6)
    # and the sample statistics match N(sqrt(abar) x0, (1 - abar) I)
    assert torch.allclose(xt.mean(0), math.sqrt(abar) * x0[0], atol=0.05)
    assert xt.var(0).mean().item() == pytest.approx(1 - abar, rel=0.05)
    mean, var, logvar = diffusion.q_mean_variance(x0[:1], t[:1])
    assert torch.allclose(mean, math.sqrt(abar) * x0[:1], atol=1e-6)
    assert var.item() == pytest.approx(1 - abar, rel=1e-6) and logvar.item() == pytest.approx(math.log(1 - abar), rel=1e-6)


def test_posterior_matches_closed_form_and_bayes(diffusion):
    t_idx = 417
    b = diffusion.betas
    abar_t = float(np.prod(1 - b[: t_idx + 1]))
    abar_prev = float(np.prod(1 - b[:t_idx]))
    beta, alpha = float(b[t_idx]), 1 - float(b[t_idx])
    x0 = torch.tensor([[[[0.3]]]], dtype=torch.float64)
    xt = torch.tensor([[[[-0.7]]]], dtype=torch.float64)
    t = torch.tensor([t_idx])
    mean, var, logvar = diffusion.q_posterior_mean_variance(x0, xt, t)
    coef1 = math.sqrt(abar_prev) * beta / (1 - abar_t)
    coef2 = math.sqrt(alpha) * (1 - abar_prev) / (1 - abar_t)
    assert mean.item() == pytest.approx(coef1 * 0.3 + coef2 * -0.7, rel=1e-10)
    assert var.item() == pytest.approx(beta * (1 - abar_prev) / (1 - abar_t), rel=1e-10)
    # Bayes: q(x_{t-1}|x_0) = N(sqrt(abar_prev) x0, 1 - abar_prev) times q(x_t|x_{t-1}) = N(sqrt(alpha) x_{t-1}, beta)
    precision = 1 / (1 - abar_prev) + alpha / beta
    bayes_mean = (math.sqrt(abar_prev) * 0.3 / (1 - abar_prev) + math.sqrt(alpha) * -0.7 / beta) / precision
    assert var.item() == pytest.approx(1 / precision, rel=1e-9)
    assert mean.item() == pytest.approx(bayes_mean, rel=1e-9)
    assert logvar.item() == pytest.approx(math.log(var.item()), rel=1e-9)


def test_kl_of_identical_gaussians_is_zero_and_known_value():
    m = torch.randn(5, 3)
    lv = torch.randn(5, 3)
    assert torch.allclose(normal_kl(m, lv, m, lv), torch.zeros_like(m), atol=1e-7)
    # KL(N(0,1) || N(1, 4)) = log 2 + (1 + 1)/8 - 1/2
    kl = normal_kl(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(1.0), torch.tensor(math.log(4.0)))
    assert kl.item() == pytest.approx(math.log(2) + 2 / 8 - 0.5, rel=1e-6)


def test_learned_variance_lies_between_posterior_and_beta(diffusion):
    t = torch.arange(1, 1000, 37)
    v = torch.rand(len(t), 1, 1, 1) * 2 - 1
    logvar = diffusion.learned_log_variance(v, t).double().flatten()
    lo = torch.from_numpy(diffusion.posterior_log_variance_clipped[t.numpy()])
    hi = torch.from_numpy(np.log(diffusion.betas[t.numpy()]))
    assert torch.all(logvar >= lo - 1e-5) and torch.all(logvar <= hi + 1e-5)
    ends = diffusion.learned_log_variance(torch.tensor([-1.0, 1.0]).reshape(2, 1, 1, 1), torch.tensor([500, 500]))
    assert ends[0].item() == pytest.approx(diffusion.posterior_log_variance_clipped[500], rel=1e-5)
    assert ends[1].item() == pytest.approx(math.log(diffusion.betas[500]), rel=1e-5)


def test_model_mean_is_eq4_without_clipping(diffusion):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([5, 250, 900])
    out = diffusion.p_mean_variance(torch.cat([eps, torch.zeros_like(eps)], 1), x, t, clip_denoised=False)
    beta = torch.from_numpy(diffusion.betas[t.numpy()]).reshape(-1, 1, 1, 1)
    abar = torch.from_numpy(diffusion.alphas_cumprod[t.numpy()]).reshape(-1, 1, 1, 1)
    eq4 = (x - beta / torch.sqrt(1 - abar) * eps) / torch.sqrt(1 - beta)
    assert torch.allclose(out["mean"], eq4, atol=1e-9)


def test_discretised_likelihood_is_a_distribution_over_the_256_levels():
    levels = torch.linspace(-1, 1, 256)
    for mean, log_scale in [(0.0, math.log(0.1)), (0.93, math.log(0.03)), (-1.2, math.log(0.5))]:
        ll = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean), torch.full_like(levels, log_scale))
        assert ll.exp().sum().item() == pytest.approx(1.0, abs=1e-4)


def test_vb_terms_are_zero_for_the_true_posterior_and_decoder_at_t0(diffusion):
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64).clamp(-1, 1)
    noise = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([100, 700])
    xt = diffusion.q_sample(x0, t, noise)
    # the true epsilon and v = -1 (beta_tilde) give exactly the posterior: KL = 0
    vb = diffusion.vb_terms_bpd(torch.cat([noise, -torch.ones_like(noise)], 1), x0, xt, t)
    assert torch.allclose(vb, torch.zeros_like(vb), atol=1e-6)
    # the prior term L_T is tiny for a full schedule (Eq. 10 is dropped from training)
    assert diffusion.prior_bpd(x0).max().item() < 1e-3


def test_hybrid_loss_terms_and_vlb_convention(diffusion):
    calls = []

    def model(x, t, **cond):
        calls.append(t.clone())
        return torch.cat([torch.zeros_like(x), torch.zeros_like(x)], 1)

    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    t = torch.tensor([3, 800])
    lm = torch.rand(2, 68, 2) * 10 + 3
    terms = hybrid_loss(diffusion, model, x0, t, {}, LossWeights(vlb=0.001, lip=0.2, eye=0.1), landmarks=lm)
    assert set(terms) == {"simple", "vlb", "lip", "eye", "loss"}
    expected = terms["simple"] + 0.001 * 1000 * terms["vlb"] + 0.2 * terms["lip"] + 0.1 * terms["eye"]
    assert torch.allclose(terms["loss"], expected)
    # zero epsilon prediction: L_simple is the noise power
    assert terms["simple"].mean().item() == pytest.approx(1.0, abs=0.2)


def test_vlb_term_trains_only_the_variance_channels():
    d = GaussianDiffusion(beta_schedule("cosine", 100))
    out = torch.zeros(1, 6, 4, 4, requires_grad=True)

    def model(x, t, **cond):
        return out

    terms = hybrid_loss(d, model, torch.zeros(1, 3, 4, 4), torch.tensor([50]), {}, LossWeights(vlb=1.0))
    terms["vlb"].sum().backward()
    assert out.grad[:, :3].abs().max().item() == 0.0     # stop-gradient on the mean
    assert out.grad[:, 3:].abs().max().item() > 0.0


def test_region_masks_are_vectorised_and_area_normalised():
    lm = torch.zeros(2, 68, 2)
    lm[0, 48:68] = torch.tensor([10.0, 20.0])
    lm[0, 48, :] = torch.tensor([8.0, 18.0])
    lm[1, 48:68] = torch.tensor([5.0, 5.0])
    lm[:, 36:48] = torch.tensor([16.0, 8.0])
    lm[:, 17:27] = torch.tensor([16.0, 6.0])
    masks = region_masks(lm, 32, 32, margin=1.0)
    mouth = masks["mouth"]
    assert mouth.shape == (2, 1, 32, 32)
    # sample 0: box x in [7, 11], y in [17, 21] -> pixel centres 7.5..10.5 x 17.5..20.5 -> 4 x 4 pixels
    assert mouth[0].sum().item() == 16
    assert mouth[0, 0, 18, 8].item() == 1 and mouth[0, 0, 5, 5].item() == 0
    # the loop-free masks equal per-sample masks
    for i in range(2):
        single = box_masks(landmark_boxes(lm[i:i + 1], [list(range(48, 68))], 1.0), 32, 32)
        assert torch.equal(single[0], mouth[i])
    target = torch.zeros(2, 3, 32, 32)
    pred = torch.zeros(2, 3, 32, 32)
    pred[0] += 2.0 * mouth[0]
    loss = masked_mse(target, pred, mouth)
    assert loss[0].item() == pytest.approx(4.0)      # mean over the masked area only
    assert loss[1].item() == 0.0
    empty = masked_mse(target, pred, torch.zeros_like(mouth))
    assert torch.equal(empty, torch.zeros(2))


# --------------------------------------------------------------------------- respacing
def test_space_timesteps_forms():
    s250 = space_timesteps(1000, "250")
    assert len(s250) == 250 and s250[0] == 0 and s250[-1] == 999
    assert space_timesteps(1000, 10) == space_timesteps(1000, "10")
    assert space_timesteps(100, [99, 0, 50, 50]) == [0, 50, 99]
    sections = space_timesteps(300, "10,5,1")
    assert len(sections) == 16 and sections[-1] == 200
    for bad in ("7x", "abc", "0", "1001", [1000], []):
        with pytest.raises(ValueError):
            space_timesteps(1000, bad)


def test_respacing_returns_a_new_process_and_feeds_original_t():
    base = GaussianDiffusion(beta_schedule("cosine", 1000))
    betas_before = base.betas.copy()
    map_before = base.timestep_map.copy()
    a = respace(base, list(range(0, 1000, 40)))
    b = respace(base, list(range(0, 1000, 40)))
    assert a is not base and a.schedule_equals(b)
    assert np.array_equal(base.betas, betas_before) and np.array_equal(base.timestep_map, map_before)
    assert a.num_timesteps == 25
    # recomputed betas reproduce the base's abar at the kept steps
    kept = np.arange(0, 1000, 40)
    assert np.allclose(a.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-12)
    seen = []

    def model(x, t, **cond):
        seen.extend(t.tolist())
        return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])

    sample_ddim(a, model, (1, 3, 4, 4), {}, generator=torch.Generator().manual_seed(0))
    assert seen == list(reversed(kept.tolist()))
    # respacing a respaced process composes the maps: still original timesteps
    c = respace(a, "5")
    assert set(c.timestep_map.tolist()) <= set(kept.tolist())
    assert np.allclose(c.alphas_cumprod, base.alphas_cumprod[c.timestep_map], rtol=1e-12)


# --------------------------------------------------------------------------- samplers
class _ToyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x, t, **cond):
        return torch.tanh(self.conv(x)) * 0.5


def test_ddim_eta0_is_deterministic_for_a_seed_and_seeds_differ():
    torch.manual_seed(0)
    model = _ToyModel()
    d = respace(GaussianDiffusion(beta_schedule("cosine", 1000)), list(range(0, 1000, 100)))
    run = lambda seed: sample_ddim(d, model, (2, 3, 8, 8), {}, eta=0.0, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with torch.no_grad():
        n1 = sample_ddim(d, model, (2, 3, 8, 8), {}, eta=1.0, generator=torch.Generator().manual_seed(7))
        n2 = sample_ddim(d, model, (2, 3, 8, 8), {}, eta=1.0, generator=torch.Generator().manual_seed(7))
        anc1 = sample_ancestral(d, model, (2, 3, 8, 8), {}, generator=torch.Generator().manual_seed(3))
        anc2 = sample_ancestral(d, model, (2, 3, 8, 8), {}, generator=torch.Generator().manual_seed(3))
    assert torch.equal(n1, n2) and not torch.equal(n1, a) and torch.equal(anc1, anc2)


def test_callback_sees_every_step_and_can_cancel():
    model = _ToyModel()
    d = respace(GaussianDiffusion(beta_schedule("linear", 100)), "10")
    steps = []
    with torch.no_grad():
        sample_ancestral(d, model, (1, 3, 4, 4), {}, callback=lambda info: steps.append((info.step, info.total)))
    assert steps == [(i, 10) for i in range(10)]

    class Cancelled(Exception):
        pass

    def cancel(info):
        if info.step == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        sample_ddim(d, model, (1, 3, 4, 4), {}, callback=cancel)


def test_ancestral_sampling_recovers_a_point_mass():
    """With the exact epsilon of a known x0, ancestral sampling lands on x0."""
    d = respace(GaussianDiffusion(beta_schedule("cosine", 1000)), "50")
    target = torch.full((1, 3, 4, 4), 0.25)

    def oracle(x, t_orig, **cond):
        idx = torch.tensor([int(np.searchsorted(d.timestep_map, t_orig[0].item()))])
        abar = d.extract(d.alphas_cumprod, idx, x)
        eps = (x - torch.sqrt(abar) * target) / torch.sqrt(1 - abar)
        return torch.cat([eps, -torch.ones_like(eps)], 1)

    out = sample_ancestral(d, oracle, (1, 3, 4, 4), {}, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, target, atol=1e-3)
