"""The diffusion process (schedule, q, p_theta, losses), respacing and samplers; no network inside."""
from .losses import LossWeights, hybrid_loss, masked_mse, region_masks
from .process import GaussianDiffusion, beta_schedule
from .respace import respace, space_timesteps, truncate
from .samplers import StepInfo, sample_ancestral, sample_ddim

__all__ = [
    "GaussianDiffusion", "beta_schedule", "respace", "space_timesteps", "truncate", "LossWeights", "hybrid_loss",
    "masked_mse", "region_masks", "StepInfo", "sample_ancestral", "sample_ddim",
]
