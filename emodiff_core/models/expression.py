"""The expression GAN of section 3.3: an LSTM generator and two discriminators, with the losses of
Eq. 17-19.

Conventions (the paper leaves them open):
- The generator rolls out one frame at a time, ê^(i) = G(ê^(i-1), y, z), from ê^(0) = 0, with one noise
  vector z per sequence fed at every step; a config's ``warmup_frames`` are rolled out and dropped first.
- D_g is a temporal convolutional network (residual blocks of dilated causal 1-D convolutions) whose
  features are mean-pooled over time; it scores the whole sequence conditioned on y (a projection term
  <embed(y), h>) and predicts the emotion label from the same features (an auxiliary classifier).
- D_l is an MLP on one frame and embed(y); Eq. 18 sums its log-likelihoods over the N frames.
- Generator: the non-saturating form -log D(.) replaces log(1 - D(.)) of Eq. 19 (same fixed point,
  usable gradients early in training), plus lambda_MSE ||Ê - E||^2 (squared error summed over the 50
  dims, averaged over frames and batch) and lambda_cls times the classifier's cross-entropy on Ê.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ExpressionConfig
from ..emotions import EMOTIONS


class ExpressionGenerator(nn.Module):
    """G(e_prev, y, z): a conditional LSTM that generates expression sequences [B, N, 50]."""

    def __init__(self, cfg: ExpressionConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.emotion_embed = nn.Embedding(cfg.num_emotions, cfg.emotion_embed_dim)
        cond_dim = cfg.emotion_embed_dim + cfg.noise_dim
        self.initial_state = nn.Linear(cond_dim, 2 * cfg.num_layers * cfg.hidden_dim)
        self.lstm = nn.LSTM(cfg.expression_dim + cond_dim, cfg.hidden_dim, cfg.num_layers, batch_first=True)
        self.head = nn.Linear(cfg.hidden_dim, cfg.expression_dim)
        # the second network of `ExpressionConfig.override_emotions` (None without one)
        self.override = (ExpressionGenerator(dataclasses.replace(cfg, override_emotions=()))
                         if cfg.override_emotions else None)
        self._override_labels = tuple(EMOTIONS.index(e) for e in cfg.override_emotions)

    def sample_noise(self, batch: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
        gen_device = generator.device if generator is not None else "cpu"
        z = torch.randn(batch, self.config.noise_dim, generator=generator, device=gen_device)
        return z.to(device or self.head.weight.device)

    def forward(self, labels: torch.Tensor, num_frames: int, z: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """[B, num_frames, D]: the rollout's frames after the config's ``warmup_frames`` (rolled out, then dropped).

        With ``override_emotions``, the rows of those emotions come from `override` at the same noise; the others
        are this network's rollout of the whole batch, so they are what it makes without an override, bit for bit.
        """
        if num_frames < 1:
            raise ValueError("num_frames must be at least 1")
        if z is None:
            z = self.sample_noise(labels.shape[0], generator)
        out = self._rollout(labels, num_frames, z)
        if self.override is None:
            return out
        routed = torch.isin(labels, torch.tensor(self._override_labels, device=labels.device))
        if not bool(routed.any()):
            return out
        return torch.where(routed[:, None, None], self.override(labels, num_frames, z=z), out)

    def _rollout(self, labels: torch.Tensor, num_frames: int, z: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        b = labels.shape[0]
        cond = torch.cat([self.emotion_embed(labels), z.to(self.head.weight.dtype)], dim=1)
        h0, c0 = torch.tanh(self.initial_state(cond)).reshape(b, 2, cfg.num_layers, cfg.hidden_dim).unbind(1)
        state = (h0.transpose(0, 1).contiguous(), c0.transpose(0, 1).contiguous())
        e = torch.zeros(b, cfg.expression_dim, device=labels.device, dtype=self.head.weight.dtype)
        frames = []
        for _ in range(cfg.warmup_frames + num_frames):
            out, state = self.lstm(torch.cat([e, cond], dim=1)[:, None], state)
            e = self.head(out[:, 0])
            frames.append(e)
        return torch.stack(frames[cfg.warmup_frames:], dim=1)


class _TCNBlock(nn.Module):
    """Residual block of two dilated causal convolutions (left padding only: no look-ahead)."""

    def __init__(self, channels: int, kernel: int, dilation: int):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv1 = nn.Conv1d(channels, channels, kernel, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, kernel, dilation=dilation)

    def forward(self, x):
        h = F.leaky_relu(self.conv1(F.pad(x, (self.pad, 0))), 0.2)
        h = F.leaky_relu(self.conv2(F.pad(h, (self.pad, 0))), 0.2)
        return x + h


class GlobalDiscriminator(nn.Module):
    """D_g: TCN over the whole sequence -> (real/fake logit given y, emotion logits)."""

    def __init__(self, cfg: ExpressionConfig):
        super().__init__()
        self.config = cfg
        self.inp = nn.Conv1d(cfg.expression_dim, cfg.disc_channels, 1)
        self.blocks = nn.Sequential(*[_TCNBlock(cfg.disc_channels, cfg.disc_kernel, d) for d in cfg.disc_dilations])
        self.adv = nn.Linear(cfg.disc_channels, 1)
        self.projection = nn.Embedding(cfg.num_emotions, cfg.disc_channels)
        self.classifier = nn.Linear(cfg.disc_channels, cfg.num_emotions)

    def features(self, sequence: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.inp(sequence.transpose(1, 2)))
        return F.leaky_relu(h, 0.2).mean(dim=2)

    def forward(self, sequence: torch.Tensor, labels: torch.Tensor):
        h = self.features(sequence)
        logit = self.adv(h)[:, 0] + (self.projection(labels) * h).sum(dim=1)
        return logit, self.classifier(h)


class LocalDiscriminator(nn.Module):
    """D_l: an MLP scoring each frame given y -> logits [B, N]."""

    def __init__(self, cfg: ExpressionConfig):
        super().__init__()
        self.config = cfg
        self.emotion_embed = nn.Embedding(cfg.num_emotions, cfg.emotion_embed_dim)
        self.net = nn.Sequential(
            nn.Linear(cfg.expression_dim + cfg.emotion_embed_dim, cfg.local_hidden_dim), nn.LeakyReLU(0.2),
            nn.Linear(cfg.local_hidden_dim, cfg.local_hidden_dim), nn.LeakyReLU(0.2),
            nn.Linear(cfg.local_hidden_dim, 1))

    def forward(self, sequence: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        y = self.emotion_embed(labels)[:, None].expand(-1, sequence.shape[1], -1)
        return self.net(torch.cat([sequence, y], dim=2))[..., 0]


def discriminator_losses(d_global: GlobalDiscriminator, d_local: LocalDiscriminator, real: torch.Tensor,
                         fake: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Negated Eq. 17 and Eq. 18 (to minimise), plus the global classifier's cross-entropy on real data.

    ``fake`` should be detached by the caller so that only the discriminators get gradients.
    """
    real_logit, real_class = d_global(real, labels)
    fake_logit, _ = d_global(fake, labels)
    # -[log D(E|y) + log(1 - D(Ê|y))]; softplus(-x) = -log sigmoid(x), softplus(x) = -log(1 - sigmoid(x)).
    global_loss = (F.softplus(-real_logit) + F.softplus(fake_logit)).mean()
    local_loss = (F.softplus(-d_local(real, labels)).sum(dim=1) + F.softplus(d_local(fake, labels)).sum(dim=1)).mean()
    cls_loss = F.cross_entropy(real_class, labels)
    return {"global": global_loss, "local": local_loss, "cls": cls_loss, "total": global_loss + local_loss + cls_loss}


def generator_losses(d_global: GlobalDiscriminator, d_local: LocalDiscriminator, fake: torch.Tensor,
                     real: torch.Tensor, labels: torch.Tensor, lambda_mse: float = 1.0,
                     lambda_cls: float = 1.0, lambda_adversarial: float = 1.0) -> Dict[str, torch.Tensor]:
    """Eq. 19 (non-saturating adversarial terms, times ``lambda_adversarial``: 1 in the paper) + lambda_MSE ||Ê - E||^2
    + lambda_cls CE(D_g's class, y)."""
    fake_logit, fake_class = d_global(fake, labels)
    adv_global = F.softplus(-fake_logit).mean()
    adv_local = F.softplus(-d_local(fake, labels)).sum(dim=1).mean()
    mse = ((fake - real) ** 2).sum(dim=2).mean()
    cls = F.cross_entropy(fake_class, labels)
    total = lambda_adversarial * (adv_global + adv_local) + lambda_mse * mse + lambda_cls * cls
    return {"adv_global": adv_global, "adv_local": adv_local, "mse": mse, "cls": cls, "total": total}


def direction_error(emotional: torch.Tensor, neutral: torch.Tensor, directions: torch.Tensor,
                    labels: torch.Tensor, neutral_label: int) -> torch.Tensor:
    """How far Eq. 14's d_y = e_y - e_n (one noise z per row: ``emotional`` is G(y, z), ``neutral`` G(neutral, z),
    both [B, N, D]) is from the data's emotion direction ``directions[y]`` ([num_emotions, D]), at every frame: the
    squared error summed over D, averaged over frames and the rows whose label is not ``neutral_label`` (0 when
    there are none).

    Not in the paper. Why: an intensity edit asks the denoiser for e_n + k d_y, and the GAN's losses only ask each
    sequence to look like the data, not the two sequences of one z to differ by the emotion alone; the demo's d_y
    carried small parts the data's emotions do not have (blinks, jaw, brows; benchmarks/README.md, "The generator's
    directions"), which the denoiser draws as noise over a small step (FLIE). In the corpus an emotion is a part
    added to the neutral clip, the same at every frame, so this is the data's own structure.
    """
    rows = labels != neutral_label
    if not bool(rows.any()):
        return emotional.new_zeros(())
    step = emotional[rows] - neutral[rows] - directions[labels[rows]][:, None]
    return (step ** 2).sum(dim=2).mean()
