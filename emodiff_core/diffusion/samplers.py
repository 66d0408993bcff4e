"""Samplers: ancestral (Eq. 3, with the learned variance) and DDIM (eta configurable).

Both run a (possibly respaced) `GaussianDiffusion` with any ``model(x, t, **cond)``, draw every random
number from an optional ``torch.Generator`` (so a seed fixes the result, on any device: noise is drawn on
the generator's device and moved), and call ``callback(StepInfo)`` after each step; a callback cancels the
run by raising. Which sampler runs, with which options, is chosen by `emodiff_core.sampling.SamplingSettings`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import torch

from .process import GaussianDiffusion

@dataclass
class StepInfo:
    step: int            # 0-based count of finished steps - 1
    total: int           # number of steps in this run
    t: int               # the process' step index just sampled from
    x: torch.Tensor      # the new sample x_{t-1}
    pred_xstart: torch.Tensor


def randn(shape: Sequence[int], generator: Optional[torch.Generator], device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise drawn from ``generator`` (on its own device), then moved to ``device``."""
    if generator is None:
        return torch.randn(*shape, device=device, dtype=dtype)
    return torch.randn(*shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def _loop(diffusion: GaussianDiffusion, model: Callable, shape, cond: Mapping, step_fn, *,
          generator, noise, device, callback, clip_denoised) -> torch.Tensor:
    x = noise if noise is not None else randn(shape, generator, device)
    x = x.to(device)
    total = diffusion.num_timesteps
    for k, index in enumerate(reversed(range(total))):
        t = torch.full((x.shape[0],), index, dtype=torch.long, device=device)
        output = diffusion.run_model(model, x, t, cond)
        out = diffusion.p_mean_variance(output, x, t, clip_denoised=clip_denoised)
        x = step_fn(x, t, index, out)
        if callback is not None:
            callback(StepInfo(step=k, total=total, t=index, x=x, pred_xstart=out["pred_xstart"]))
    return x


def sample_ancestral(diffusion: GaussianDiffusion, model: Callable, shape, cond: Mapping, *,
                     generator: Optional[torch.Generator] = None, noise: Optional[torch.Tensor] = None,
                     device=None, callback: Optional[Callable[[StepInfo], None]] = None,
                     clip_denoised: bool = True) -> torch.Tensor:
    """x_{t-1} ~ N(mu_theta, Sigma_theta) for t = T .. 1 (Eq. 3), no noise at the last step."""
    device = device or (noise.device if noise is not None else "cpu")

    def step(x, t, index, out):
        if index == 0:
            return out["mean"]
        z = randn(x.shape, generator, x.device, x.dtype)
        return out["mean"] + torch.exp(0.5 * out["log_variance"]) * z

    return _loop(diffusion, model, shape, cond, step, generator=generator, noise=noise, device=device,
                 callback=callback, clip_denoised=clip_denoised)


def sample_ddim(diffusion: GaussianDiffusion, model: Callable, shape, cond: Mapping, *, eta: float = 0.0,
                generator: Optional[torch.Generator] = None, noise: Optional[torch.Tensor] = None,
                device=None, callback: Optional[Callable[[StepInfo], None]] = None,
                clip_denoised: bool = True) -> torch.Tensor:
    """DDIM (Song et al.): deterministic for eta = 0; eta = 1 matches DDPM's posterior variance.

    The learned variance is not used; epsilon is re-derived from the (clipped) x_0 prediction.
    """
    if eta < 0:
        raise ValueError("eta must be >= 0")
    device = device or (noise.device if noise is not None else "cpu")

    def step(x, t, index, out):
        eps = diffusion.predict_eps_from_xstart(x, t, out["pred_xstart"])
        abar = diffusion.extract(diffusion.alphas_cumprod, t, x)
        abar_prev = diffusion.extract(diffusion.alphas_cumprod_prev, t, x)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
        mean = out["pred_xstart"] * torch.sqrt(abar_prev) + torch.sqrt((1 - abar_prev - sigma ** 2).clamp(min=0)) * eps
        if index == 0 or eta == 0:
            return mean
        return mean + sigma * randn(x.shape, generator, x.device, x.dtype)

    return _loop(diffusion, model, shape, cond, step, generator=generator, noise=noise, device=device,
                 callback=callback, clip_denoised=clip_denoised)
