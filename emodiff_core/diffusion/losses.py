"""Loss building blocks: Gaussian KL, the discretised decoder likelihood, landmark-region masks and the
hybrid objective of Eq. 16.

The unit and convention of ``vlb_weight`` (lambda_vlb): improved DDPM writes
L_hybrid = L_simple + lambda * L_vlb with L_vlb = L_0 + ... + L_{T-1} (a SUM over the T terms, in bits per
dimension) and lambda = 0.001. One training step draws a single t uniformly, so T * L_t is the unbiased
estimate of L_vlb and the weight on the per-step term is lambda * T (1.0 at T = 1000; this is what
improved-diffusion's RESCALED_MSE does). Diffused Heads instead puts 1e-4 directly on the per-step term,
which is lambda = 1e-7 here, 10^4 times weaker. Our ``vlb_weight`` is lambda in the improved-DDPM sense.
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F

# iBUG-68 index groups (FAN and dlib use the same layout).
MOUTH = tuple(range(48, 68))
LEFT_EYE_REGION = tuple(range(36, 42)) + tuple(range(17, 22))   # eye + brow above it (image-left)
RIGHT_EYE_REGION = tuple(range(42, 48)) + tuple(range(22, 27))


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor,
                                        bins: int = 256) -> torch.Tensor:
    """Log-likelihood of data x in [-1, 1] quantised to ``bins`` levels under N(means, exp(log_scales)^2).

    Each level owns a bin of width 2/(bins-1); the two end bins extend to -inf and +inf. In nats.
    """
    half_bin = 1.0 / (bins - 1)
    centred = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _standard_normal_cdf(inv_std * (centred + half_bin))
    cdf_minus = _standard_normal_cdf(inv_std * (centred - half_bin))
    tiny = 1e-12
    log_cdf_plus = torch.log(cdf_plus.clamp(min=tiny))
    log_one_minus_cdf_minus = torch.log((1.0 - cdf_minus).clamp(min=tiny))
    log_delta = torch.log((cdf_plus - cdf_minus).clamp(min=tiny))
    edge = 1.0 - half_bin
    return torch.where(x < -edge, log_cdf_plus, torch.where(x > edge, log_one_minus_cdf_minus, log_delta))


# --------------------------------------------------------------------------- landmark regions
def landmark_boxes(landmarks: torch.Tensor, groups, margin: float) -> torch.Tensor:
    """Axis-aligned boxes [B, G, 4] (x0, y0, x1, y1) around each landmark group, padded by ``margin`` px.

    ``landmarks`` is [B, 68, 2] in pixel coordinates (x right, y down) of the image the mask is for.
    """
    boxes = []
    for group in groups:
        pts = landmarks[:, list(group), :]
        lo = pts.amin(dim=1) - margin
        hi = pts.amax(dim=1) + margin
        boxes.append(torch.cat([lo, hi], dim=1))
    return torch.stack(boxes, dim=1)


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Union of boxes as a {0,1} mask [B, 1, H, W]; a pixel belongs to a box if its centre is inside.

    Vectorised over the batch; a box with NaN corners (no landmarks) selects nothing.
    """
    device, dtype = boxes.device, boxes.dtype
    ys = torch.arange(height, device=device, dtype=dtype) + 0.5
    xs = torch.arange(width, device=device, dtype=dtype) + 0.5
    x0, y0, x1, y1 = (boxes[..., k, None, None] for k in range(4))  # [B, G, 1, 1]
    inside_x = (xs[None, None, None, :] >= x0) & (xs[None, None, None, :] <= x1)
    inside_y = (ys[None, None, :, None] >= y0) & (ys[None, None, :, None] <= y1)
    return (inside_x & inside_y).any(dim=1, keepdim=True).to(dtype)


def region_masks(landmarks: torch.Tensor, height: int, width: int, margin: Optional[float] = None
                 ) -> Dict[str, torch.Tensor]:
    """Mouth and eye-region masks from 68 landmarks (the regions of L_lip and L_eye, Eq. 16).

    The margin defaults to 5 px at 128 px (Diffused Heads' lip box), scaled with the image size.
    """
    if margin is None:
        margin = 5.0 * height / 128.0
    mouth = box_masks(landmark_boxes(landmarks, [MOUTH], margin), height, width)
    eyes = box_masks(landmark_boxes(landmarks, [LEFT_EYE_REGION, RIGHT_EYE_REGION], margin), height, width)
    return {"mouth": mouth, "eyes": eyes}


def emotion_region_mask(target: torch.Tensor, neutral_twin: torch.Tensor, threshold: float = 2.0 / 127.5,
                        grow: int = 1) -> torch.Tensor:
    """{0,1} mask [B, 1, H, W] of the pixels where a frame differs from its neutral twin (frames in [-1, 1]) by
    more than ``threshold`` in any channel, grown by ``grow`` pixels (a max filter)."""
    diff = (target - neutral_twin).abs().amax(dim=1, keepdim=True)
    mask = (diff > threshold).to(target.dtype)
    if grow > 0:
        mask = torch.nn.functional.max_pool2d(mask, 2 * grow + 1, stride=1, padding=grow)
    return mask


def masked_mse(target: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample squared error averaged over the masked pixels and channels (normalised by mask area).

    A sample whose mask is empty contributes 0.
    """
    squared = (target - prediction) ** 2 * mask
    area = mask.reshape(mask.shape[0], -1).sum(dim=1) * target.shape[1]
    return squared.reshape(squared.shape[0], -1).sum(dim=1) / area.clamp(min=1.0)


def intensity_pair_error(noise: torch.Tensor, eps: torch.Tensor, partner: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """Per sample [B]: the squared difference between a row's noise error and its partner's (``partner`` [B]: the
    partner's row index, -1 for rows without one, which get 0), averaged over ``mask`` [B, 1, H, W] (where the two
    targets differ). For partners that share x_t (one frame diffused, two targets), the difference of the
    predicted noises maps linearly to the difference of the predicted x0, so the term asks the prediction to
    change between the rows exactly as the targets do, whatever error the two share. Each pair is counted on both
    of its rows."""
    paired = partner >= 0
    index = torch.where(paired, partner, torch.arange(len(partner), device=partner.device))
    error = eps - noise
    return masked_mse(error, error[index], mask.to(error.dtype) * paired[:, None, None, None].to(error.dtype))


# --------------------------------------------------------------------------- fine detail
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian(images: torch.Tensor) -> torch.Tensor:
    """The 4-neighbour Laplacian of every channel of [B, C, H, W] images (edges replicated), same shape."""
    c = images.shape[1]
    kernel = _LAPLACIAN.to(images).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)


def local_detail(images: torch.Tensor, window: int, stride: int = 0) -> torch.Tensor:
    """The mean absolute Laplacian of every channel over ``window``-pixel squares placed every ``stride`` pixels
    (0: the window, side by side): [B, C, (H - window) / stride + 1, ...] (a partial last square is dropped).
    How much fine detail each patch holds, whatever its phase (the SR head's texture term and the denoiser's)."""
    return F.avg_pool2d(laplacian(images).abs(), window, stride or window)


TEXTURE_WINDOW = 4   # the denoiser's texture term: 4-pixel squares at every pixel of the 64 px frame


def texture_gap(pred_xstart: torch.Tensor, x_start: torch.Tensor, window: int = TEXTURE_WINDOW) -> torch.Tensor:
    """Per-sample L1 between the local detail maps (`local_detail`, sliding ``window``-pixel squares) of a
    predicted x0 and the target: how far the prediction's amount of fine detail is from the target's,
    wherever its phase."""
    gap = (local_detail(pred_xstart, window, 1) - local_detail(x_start, window, 1)).abs()
    return mean_flat(gap)


# --------------------------------------------------------------------------- hybrid objective
@dataclass(frozen=True)
class LossWeights:
    """Weights of Eq. 16. ``vlb`` is lambda_vlb in the improved-DDPM convention (see module docstring).

    ``emotion`` (our addition, 0 = off) weights the noise error on the pixels where the target differs from
    its neutral twin (the emotion's region, `emotion_region_mask`): the emotion is a few pixels of thin
    edges that the whole-image loss barely sees, so without it the network can ignore its expression input.
    ``texture`` (ours, 0 = off) weights `texture_gap` between the predicted x0 and the target, times the step's
    signal share alpha-bar_t: the noise error is a mean over pixels, and a prediction that leaves fine detail
    out costs it little, so a network that must draw a new expression (twin examples) draws it soft. The
    alpha-bar factor keeps the term to the steps where x0 is mostly known; at high noise the best prediction is
    rightly smooth.
    ``intensity_pair`` (ours, 0 = off) weights `intensity_pair_error` on rows that come in pairs (the same x_t,
    the same emotion at two intensities): the error common to both rows (texture, mouth, blur) cancels, and what
    is left is how the prediction responds to the change of k alone.
    """

    vlb: float = 0.001
    lip: float = 0.2
    eye: float = 0.1
    emotion: float = 0.0
    texture: float = 0.0
    intensity_pair: float = 0.0

    # read by config.from_dict: loss sections written before these keys existed mean "off"
    ADDED_KEYS: typing.ClassVar[Mapping[str, float]] = {"emotion": 0.0, "texture": 0.0, "intensity_pair": 0.0}


def hybrid_loss(diffusion, model, x_start: torch.Tensor, t: torch.Tensor, cond: Mapping,
                weights: LossWeights = LossWeights(), landmarks: Optional[torch.Tensor] = None,
                noise: Optional[torch.Tensor] = None, emotion_mask: Optional[torch.Tensor] = None,
                emotion_scale: Optional[torch.Tensor] = None, pair_partner: Optional[torch.Tensor] = None,
                pair_mask: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Eq. 16: L_simple + lambda_vlb L_vlb + lambda_lip L_lip + lambda_eye L_eye, per sample, plus
    ``weights.emotion`` times the noise error on ``emotion_mask`` [B, 1, H, W] when given, that weight multiplied
    per sample by ``emotion_scale`` [B] when given (the term is a mean over the region's pixels, so scaling the mask
    would change nothing), plus ``weights.intensity_pair`` times `intensity_pair_error` when ``pair_partner`` [B]
    and ``pair_mask`` are given.

    Returns a dict of per-sample tensors: ``simple`` (Eq. 6), ``vlb`` (the per-step term in bits/dim),
    ``lip``, ``eye``, ``emotion`` (when a mask is given), ``texture`` (when weighted), ``pair`` (when partners are
    given) and ``loss`` (the weighted total). Take ``.mean()`` of ``loss`` to optimise.
    The vlb term sees the network's epsilon through a stop-gradient, so it trains only v (improved DDPM).
    """
    if noise is None:
        noise = torch.randn_like(x_start)
    x_t = diffusion.q_sample(x_start, t, noise)
    output = diffusion.run_model(model, x_t, t, cond)
    channels = x_start.shape[1]
    eps = output[:, :channels]
    terms = {"simple": mean_flat((noise - eps) ** 2)}
    frozen = torch.cat([eps.detach(), output[:, channels:]], dim=1)
    terms["vlb"] = diffusion.vb_terms_bpd(frozen, x_start, x_t, t)
    loss = terms["simple"] + weights.vlb * diffusion.num_timesteps * terms["vlb"]
    if landmarks is not None:
        masks = region_masks(landmarks.to(x_start.dtype), x_start.shape[2], x_start.shape[3])
        terms["lip"] = masked_mse(noise, eps, masks["mouth"])
        terms["eye"] = masked_mse(noise, eps, masks["eyes"])
        loss = loss + weights.lip * terms["lip"] + weights.eye * terms["eye"]
    if emotion_mask is not None:
        terms["emotion"] = masked_mse(noise, eps, emotion_mask.to(x_start.dtype))
        weight = weights.emotion if emotion_scale is None else weights.emotion * emotion_scale.to(x_start.dtype)
        loss = loss + weight * terms["emotion"]
    if weights.texture > 0:
        pred_xstart = diffusion.predict_xstart_from_eps(x_t, t, eps)
        signal = diffusion.extract(diffusion.alphas_cumprod, t, x_start).reshape(-1)
        terms["texture"] = signal * texture_gap(pred_xstart, x_start)
        loss = loss + weights.texture * terms["texture"]
    if pair_partner is not None:
        if pair_mask is None:
            raise ValueError("hybrid_loss: pair_partner needs pair_mask (where the two targets of a pair differ)")
        terms["pair"] = intensity_pair_error(noise, eps, pair_partner, pair_mask)
        loss = loss + weights.intensity_pair * terms["pair"]
    terms["loss"] = loss
    return terms
