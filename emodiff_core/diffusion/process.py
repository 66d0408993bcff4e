"""The Gaussian diffusion process of section 3.2.1 (Eq. 1-10), separate from any network.

`GaussianDiffusion` holds a beta schedule (float64, cast only when indexed) and works with any callable
``model(x_t, t, **cond) -> [B, 2C, H, W]`` whose first C output channels predict epsilon and whose last C
channels are the learned-range variance interpolant v in [-1, 1] (Eq. 5).

A respaced process (see `respace.py`) is another `GaussianDiffusion` whose ``timestep_map`` sends its own
step indices to the ORIGINAL training timesteps: the network is always called with original t.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Mapping, Optional

import numpy as np
import torch

from ..config import DiffusionConfig
from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl


def beta_schedule(name: str, num_steps: int) -> np.ndarray:
    """Betas in float64 for the 'linear' (DDPM) or 'cosine' (improved DDPM) schedule."""
    if num_steps < 2:
        raise ValueError("a diffusion needs at least 2 steps")
    if name == "linear":
        # DDPM's 1e-4 .. 0.02 at T=1000, scaled so that other T give the same total noise.
        scale = 1000.0 / num_steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    if name == "cosine":
        s = 0.008

        def alpha_bar(u: np.ndarray) -> np.ndarray:
            return np.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2

        u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
        abar = alpha_bar(u)
        # 0.999 cap: the last steps of the cosine schedule would otherwise have beta = 1 (a singular posterior).
        return np.minimum(1.0 - abar[1:] / abar[:-1], 0.999)
    raise ValueError(f"unknown beta schedule {name!r}; choose 'linear' or 'cosine'")


class GaussianDiffusion:
    """Forward process q, posterior, model distribution p_theta and the hybrid loss.

    :param betas: 1-D float64 array of beta_t, t = 0 .. T-1 (the paper's t = 1 .. T).
    :param timestep_map: for each step index, the original timestep handed to the network
        (identity for a process that was not respaced).
    """

    def __init__(self, betas: np.ndarray, timestep_map: Optional[np.ndarray] = None):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 1:
            raise ValueError("betas must be a non-empty 1-D array")
        if not np.all((betas > 0) & (betas <= 1)):
            raise ValueError("betas must lie in (0, 1]")
        self.betas = betas
        self.num_timesteps = int(betas.shape[0])
        if timestep_map is None:
            timestep_map = np.arange(self.num_timesteps, dtype=np.int64)
        self.timestep_map = np.asarray(timestep_map, dtype=np.int64)
        if self.timestep_map.shape != betas.shape:
            raise ValueError("timestep_map must have one entry per step")

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # Posterior q(x_{t-1} | x_t, x_0) = N(coef1 * x_0 + coef2 * x_t, beta_tilde_t).
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta_tilde_0 is 0; its log is replaced by log beta_tilde_1 (as improved DDPM does) so that the
        # learned-range interpolation stays finite at t = 0.
        first = self.posterior_variance[1] if self.num_timesteps > 1 else self.betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(first, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        self.log_betas = np.log(betas)

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> "GaussianDiffusion":
        config.validate()
        return cls(beta_schedule(config.schedule, config.steps))

    def __repr__(self) -> str:
        return f"GaussianDiffusion(steps={self.num_timesteps}, original_steps={int(self.timestep_map.max()) + 1})"

    def schedule_equals(self, other: "GaussianDiffusion") -> bool:
        return (np.array_equal(self.betas, other.betas) and np.array_equal(self.timestep_map, other.timestep_map))

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def extract(array: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """array[t] as a tensor broadcastable to ``like`` (float64 -> like.dtype at the last moment)."""
        values = torch.from_numpy(array)[t.detach().cpu().long()]
        values = values.to(device=like.device, dtype=like.dtype)
        return values.reshape(-1, *([1] * (like.dim() - 1)))

    def original_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The timesteps the network sees: original ones, also for a respaced process."""
        return torch.from_numpy(self.timestep_map)[t.detach().cpu().long()].to(t.device)

    def run_model(self, model: Callable, x_t: torch.Tensor, t: torch.Tensor, cond: Mapping) -> torch.Tensor:
        out = model(x_t, self.original_timesteps(t), **cond)
        if out.shape[0] != x_t.shape[0] or out.shape[1] != 2 * x_t.shape[1] or out.shape[2:] != x_t.shape[2:]:
            raise ValueError(f"the model must return [B, 2C, H, W] = epsilon and v; got {tuple(out.shape)} "
                             f"for an input of {tuple(x_t.shape)}")
        return out

    # ------------------------------------------------------------------ forward process
    def q_mean_variance(self, x_start: torch.Tensor, t: torch.Tensor):
        """Mean, variance and log-variance of q(x_t | x_0) (Eq. 2)."""
        mean = self.extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
        variance = self.extract(1.0 - self.alphas_cumprod, t, x_start)
        log_variance = self.extract(np.log(1.0 - self.alphas_cumprod), t, x_start)
        return mean, variance, log_variance

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Eq. 2)."""
        if noise is None:
            noise = torch.randn_like(x_start)
        return (self.extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
                + self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance (beta_tilde_t) and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (self.extract(self.posterior_mean_coef1, t, x_t) * x_start
                + self.extract(self.posterior_mean_coef2, t, x_t) * x_t)
        variance = self.extract(self.posterior_variance, t, x_t)
        log_variance = self.extract(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    # ------------------------------------------------------------------ model distribution
    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (self.extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
                - self.extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)

    def predict_eps_from_xstart(self, x_t: torch.Tensor, t: torch.Tensor, x_start: torch.Tensor) -> torch.Tensor:
        return ((self.extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x_start)
                / self.extract(self.sqrt_recipm1_alphas_cumprod, t, x_t))

    def learned_log_variance(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Eq. 5: log Sigma = v' log beta_t + (1 - v') log beta_tilde_t with v' = (v + 1) / 2.

        v is the network's raw output in [-1, 1]; v' = 1 gives beta_t, v' = 0 gives beta_tilde_t.
        """
        frac = (v + 1.0) / 2.0
        max_log = self.extract(self.log_betas, t, v)
        min_log = self.extract(self.posterior_log_variance_clipped, t, v)
        return frac * max_log + (1.0 - frac) * min_log

    def p_mean_variance(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool = True) -> Dict[str, torch.Tensor]:
        """Mean and variance of p_theta(x_{t-1} | x_t) from the network output (Eq. 3-5).

        The mean is the posterior mean at the predicted x_0, which equals Eq. 4's
        1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps) when x_0 is not clipped.
        """
        channels = x_t.shape[1]
        eps, v = model_output[:, :channels], model_output[:, channels:]
        log_variance = self.learned_log_variance(v, t)
        pred_xstart = self.predict_xstart_from_eps(x_t, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
        return {"mean": mean, "variance": torch.exp(log_variance), "log_variance": log_variance,
                "pred_xstart": pred_xstart, "eps": eps}

    # ------------------------------------------------------------------ variational bound
    def vb_terms_bpd(self, model_output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
        """Per-sample L_{t-1} (Eq. 9, a Gaussian KL) or, at t = 0, L_0 (Eq. 8, the discretised decoder
        NLL), in bits per dimension."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised=False)
        kl = normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])
        kl = mean_flat(kl) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])
        nll = mean_flat(nll) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def prior_bpd(self, x_start: torch.Tensor) -> torch.Tensor:
        """L_T (Eq. 10): KL(q(x_T | x_0) || N(0, I)) in bits/dim; constant in theta, so not trained."""
        t = torch.full((x_start.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x_start.device)
        mean, _, log_variance = self.q_mean_variance(x_start, t)
        kl = normal_kl(mean, log_variance, torch.zeros_like(mean), torch.zeros_like(mean))
        return mean_flat(kl) / math.log(2.0)

    def sample_timesteps(self, batch: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Uniform t in [0, T) for training."""
        gen_device = generator.device if generator is not None else "cpu"
        t = torch.randint(0, self.num_timesteps, (batch,), generator=generator, device=gen_device)
        return t.to(device)
