"""Probes that tell whether the denoiser reads its expression input, far sharper than video accuracy.

They run on a fixed batch of *twin examples*: a target frame showing an emotion, its neutral twin (the same
frame with the emotion part of psi removed: same pose, mouth, blinks), the identity frame and motion frames
taken from the neutral twin, the target's expression window and the neutral twin's. With identity and motion
neutral, the emotion can only come from psi.

x0-response at t (a fraction of T): x_t = q(target, t); the predicted x0 is taken with the target's psi and
with the neutral psi, same x_t and noise; the response is the share of the emotion's pixel change
d = target - twin that the psi swap moves the prediction along:

    response(t) = <x0(psi) - x0(neutral psi), d> / <d, d>          (pooled over the batch)

1 = psi alone renders the whole emotion, 0 = the network ignores psi. At low t the noisy input already shows
the emotion, so judge it at mid noise levels (0.4-0.6 T).

Swap: the noise-prediction error with the neutral psi relative to the error with the true psi, minus 1, on
the whole image and on the emotion's pixels (`emotion_region_mask`): how much worse the model gets when it is
told the wrong emotion. Near 0 means psi is ignored.

Half-intensity x0-response: the same, on the same frames' twins at half the emotion's intensity (target and
psi both halved; `DenoiserData.probe_batch(emotion_scale=0.5)`), measured against the half twin's own change.
A response that follows k linearly reads the same at half as at full intensity; a model that saturates early
reads higher at half (it renders more than half the emotion for half the k), one that rises late lower.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence

import torch

from emodiff_core.diffusion.losses import emotion_region_mask

TWIN_KEYS = ("x0", "twin", "identity", "motion", "audio", "expression", "neutral_expression")
PROBE_LEVELS = (0.2, 0.4, 0.6)
# twin batches are drawn with default_rng([seed, PROBE_DRAW_SEED]): the log, evaluate and the benchmarks draw alike
PROBE_DRAW_SEED = 424_242
SWAP_LEVEL = 0.6


def _check(batch: Mapping[str, torch.Tensor]) -> None:
    missing = [k for k in TWIN_KEYS if k not in batch]
    if missing:
        raise ValueError(f"a twin probe batch needs {', '.join(TWIN_KEYS)}; missing {', '.join(missing)}")


@torch.no_grad()
def emotion_probes(model, diffusion, batch: Mapping[str, torch.Tensor], levels: Sequence[float] = PROBE_LEVELS,
                   swap_level: float = SWAP_LEVEL, seed: int = 0) -> Dict[str, float]:
    """x0-response at each level (keys ``x0_response_<level>``, fractions) and the swap probe
    (``swap_loss``, ``swap_loss_mask``: relative loss increases) on a twin batch (module docstring)."""
    _check(batch)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        b = {k: v.to(device) for k, v in batch.items()}
        audio_emb = model.encode_audio(b["audio"])
        reference = model.reference_features(b["identity"])
        d = b["x0"] - b["twin"]
        mask = emotion_region_mask(b["x0"], b["twin"])
        gen = torch.Generator().manual_seed(seed)
        steps = diffusion.num_timesteps
        out: Dict[str, float] = {}
        for level in sorted(set(levels) | {swap_level}):
            t = torch.full((len(d),), int(round(level * (steps - 1))), dtype=torch.long, device=device)
            noise = torch.randn(d.shape, generator=gen).to(device)
            x_t = diffusion.q_sample(b["x0"], t, noise)
            eps = {}
            for name in ("expression", "neutral_expression"):
                output = diffusion.run_model(model, x_t, t, {"identity": b["identity"], "motion": b["motion"],
                                                             "audio_emb": audio_emb, "expression": b[name],
                                                             "reference": reference})
                eps[name] = output[:, :3]
            if level in levels:
                moved = (diffusion.predict_xstart_from_eps(x_t, t, eps["expression"])
                         - diffusion.predict_xstart_from_eps(x_t, t, eps["neutral_expression"]))
                out[f"x0_response_{level:g}"] = float((moved * d).sum() / (d * d).sum().clamp(min=1e-12))
            if level == swap_level:
                err = {k: (v - noise) ** 2 for k, v in eps.items()}
                out["swap_loss"] = float(err["neutral_expression"].mean() / err["expression"].mean() - 1.0)
                area = mask.expand_as(d)
                out["swap_loss_mask"] = float((err["neutral_expression"] * area).sum()
                                              / (err["expression"] * area).sum().clamp(min=1e-12) - 1.0)
        return out
    finally:
        model.train(was_training)


HALF_LEVEL = 0.6


def half_intensity_probe(model, diffusion, half_batch: Mapping[str, torch.Tensor], level: float = HALF_LEVEL,
                         seed: int = 0) -> Dict[str, float]:
    """``x0_response_half_<level>``: the x0-response on a half-intensity twin batch (module docstring)."""
    out = emotion_probes(model, diffusion, half_batch, levels=(level,), swap_level=level, seed=seed)
    return {f"x0_response_half_{level:g}": out[f"x0_response_{level:g}"]}
