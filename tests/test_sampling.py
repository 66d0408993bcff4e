"""The sampling policy: one typed value decides the sampler, its options, the spacing and the start noise."""
import numpy as np
import pytest
import torch

from emodiff_core import sampling
from emodiff_core.config import DiffusionConfig
from emodiff_core.diffusion import GaussianDiffusion, beta_schedule, respace, truncate
from emodiff_core.sampling import DEFAULT, PAPER, Sampler, SamplingError, SamplingSettings


def test_default_is_ddim_ten_steps_from_the_previous_frame_at_half_noise():
    assert DEFAULT == SamplingSettings(Sampler.DDIM, 10, 0.5)
    assert DEFAULT.label == "ddim10@0.5" and DEFAULT.anchored
    assert DEFAULT.timesteps(1000) == list(range(0, 1000, 100))
    assert DEFAULT.denoising_steps(1000) == 6                 # 0, 100, ..., 500 are <= 0.5 * 999
    assert PAPER.timesteps(1000) == list(range(1000)) and not PAPER.anchored


def test_step_count_becomes_a_spacing_one_way():
    # DDIM: the smallest integer stride from 0 that gives exactly N steps
    assert SamplingSettings("ddim", 25).timesteps(1000) == list(range(0, 1000, 40))
    assert SamplingSettings("ddim", 3).timesteps(100) == [0, 34, 68]
    # no integer stride gives 999 steps out of 1000: the even fractional stride (first and last step kept)
    odd = SamplingSettings("ddim", 999).timesteps(1000)
    assert len(odd) == 999 and odd[0] == 0 and odd[-1] == 999
    # the ancestral sampler always uses the even stride, which keeps the last step
    anc = SamplingSettings("ancestral", 10, 1.0).timesteps(1000)
    assert len(anc) == 10 and anc[0] == 0 and anc[-1] == 999
    with pytest.raises(SamplingError, match="trained with 100"):
        SamplingSettings(steps=200).timesteps(100)


def test_unknown_samplers_and_options_a_sampler_does_not_take_are_errors():
    with pytest.raises(SamplingError, match="unknown sampler 'euler'"):
        SamplingSettings("euler")
    with pytest.raises(SamplingError, match="eta is a DDIM option"):
        SamplingSettings(Sampler.ANCESTRAL, 10, 1.0, eta=0.0)
    for bad in (dict(steps=0), dict(steps=2.5), dict(steps=True), dict(start_noise=0.0), dict(start_noise=1.5),
                dict(eta=-1.0)):
        with pytest.raises(SamplingError):
            SamplingSettings(**bad)
    assert SamplingSettings("DDIM", 4).sampler is Sampler.DDIM          # names are case-insensitive
    assert issubclass(SamplingError, ValueError)


def test_text_form_round_trips():
    for text, expected in [("ddim10", SamplingSettings(Sampler.DDIM, 10, DEFAULT.start_noise)),
                           ("ddim25@1", SamplingSettings(Sampler.DDIM, 25, 1.0)),
                           ("ancestral1000@1", PAPER), (" DDIM5 @ 0.25 ", SamplingSettings(Sampler.DDIM, 5, 0.25))]:
        settings = SamplingSettings.parse(text)
        assert settings == expected and SamplingSettings.parse(settings.label) == settings
    assert SamplingSettings.parse("ddim10", eta=1.0).eta == 1.0
    for bad in ("ddim", "10", "euler10", "ddim10@x", "ddim10@0"):
        with pytest.raises(SamplingError):
            SamplingSettings.parse(bad)
    assert DEFAULT.to_dict() == {"sampler": "ddim", "steps": 10, "start_noise": 0.5, "eta": None, "guidance": 1.0,
                                 "guidance_min_noise": 0.0}


def test_process_is_new_respaced_and_truncated_with_original_timesteps():
    base = GaussianDiffusion(beta_schedule("cosine", 1000))
    betas = base.betas.copy()
    low = SamplingSettings(steps=10, start_noise=0.45).process(base)
    assert low.timestep_map.tolist() == [0, 100, 200, 300, 400]
    assert np.allclose(low.alphas_cumprod, base.alphas_cumprod[[0, 100, 200, 300, 400]], rtol=1e-12)
    assert np.array_equal(base.betas, betas) and base.num_timesteps == 1000   # the source is unchanged
    full = SamplingSettings(steps=10, start_noise=1.0).process(base)
    assert full.timestep_map.tolist() == list(range(0, 1000, 100))
    # the same as respacing then truncating by hand; from a config too
    by_hand = truncate(respace(base, list(range(0, 1000, 100))), 450)
    assert by_hand.schedule_equals(low)
    assert SamplingSettings(steps=10, start_noise=0.45).process_for(DiffusionConfig()).schedule_equals(low)
    assert truncate(full, -5).timestep_map.tolist() == [0]
    assert SamplingSettings(steps=10, start_noise=0.45).denoising_steps(1000) == low.num_timesteps
    # the first step's training timestep (what training's anchored-start examples are diffused to)
    for settings in (SamplingSettings(steps=10, start_noise=0.45), DEFAULT, SamplingSettings.parse("ddim25@0.3"),
                     SamplingSettings.parse("ancestral50@0.7")):
        walked = settings.process(base).timestep_map.tolist()
        assert settings.frame_timesteps(1000) == walked and settings.start_timestep(1000) == walked[-1]
        assert settings.denoising_steps(1000) == len(walked)
    assert (DEFAULT.start_timestep(1000), SamplingSettings(steps=10, start_noise=0.45).start_timestep(1000)) == (500, 400)
    assert full.timestep_map.tolist()[-1] == SamplingSettings(steps=10, start_noise=1.0).start_timestep(1000) == 900


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x, t, **cond):
        return torch.tanh(self.conv(x)) * 0.5


def test_run_dispatches_with_the_options_of_each_sampler():
    torch.manual_seed(0)
    model = _Toy()
    base = GaussianDiffusion(beta_schedule("cosine", 1000))
    shape = (2, 3, 8, 8)

    def run(settings, seed=3):
        process = settings.process(base)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            return settings.run(process, model, shape, {}, generator=torch.Generator().manual_seed(seed), noise=noise)

    ddim = SamplingSettings("ddim", 10, 1.0)
    assert torch.equal(run(ddim, 3), run(ddim, 4))                           # eta 0: the seed does not matter
    stochastic = ddim.replace(eta=1.0)
    assert torch.equal(run(stochastic, 3), run(stochastic, 3)) and not torch.equal(run(stochastic, 3), run(stochastic, 4))
    ancestral = SamplingSettings("ancestral", 10, 1.0)
    assert not torch.allclose(run(ancestral), run(ddim))


def test_anchored_start_is_the_previous_frame_diffused_to_the_first_kept_step():
    base = GaussianDiffusion(beta_schedule("cosine", 1000))
    process = SamplingSettings(steps=10, start_noise=0.45).process(base)
    previous = torch.rand(1, 3, 4, 4) * 2 - 1
    g = torch.Generator().manual_seed(0)
    x = sampling.anchored_start(process, previous, g)
    noise = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    abar = float(base.alphas_cumprod[400])
    assert torch.allclose(x, np.sqrt(abar) * previous + np.sqrt(1 - abar) * noise, atol=1e-5)
