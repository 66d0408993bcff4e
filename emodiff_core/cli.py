"""The main job from a shell: ``python -m emodiff_core generate|demo``.

generate: portrait + speech + emotion (label and intensity, a blend, or keyframes) -> mp4 (H.264 + AAC)
whose duration equals the audio's, and a plot of the emotion over time written before sampling starts.
Silence (the whole recording or pauses) gives a face with a closed, still mouth. Frames are super-resolved,
pasted back and encoded one after another, so memory does not grow with the photo's size times the length.
demo: the same on the shipped portrait and speech with the demo checkpoint, plus a contact sheet of
emotions x intensities.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Iterator, Tuple

import numpy as np
import torch

from . import anchors
from . import pipeline as pl
from .checkpoint import CheckpointError
from .editing import MAX_INTENSITY, parse_blend
from .emotions import EMOTIONS
from .paths import CHECKPOINT_DIR, DEFAULT_CHECKPOINT, DEMO_PORTRAIT, DEMO_PORTRAIT_PROCEDURAL, DEMO_SPEECH
from .sampling import DEFAULT as DEFAULT_SAMPLING, NAMES as SAMPLER_NAMES, SamplingSettings

CONTACT_INTENSITIES = (0.0, 0.5, 1.0)
# Longest side of pasted-back videos unless --max-side says otherwise: full HD. The CLI streams frames into
# the encoder, so this bounds file size and encoding time, not memory (--max-side 0 keeps the photo's size).
DEFAULT_MAX_SIDE = 1920
SUPERRES_CHUNK = 16          # frames super-resolved at a time while streaming
M_MMAP_THRESHOLD = -3        # glibc's mallopt parameter number
STREAMING_MMAP_THRESHOLD = 1 << 20


def load_models(path: str = DEFAULT_CHECKPOINT, device="cpu") -> pl.ModelBundle:
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}. The demo checkpoint ships in {CHECKPOINT_DIR}; "
                              "pass --checkpoint with a file exported by `python -m training export`")
    return pl.load_bundle(path, device=device)


def load_image(path: str) -> np.ndarray:
    import cv2

    if not os.path.isfile(path):
        raise pl.PipelineError(f"portrait not found: {path}")
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise pl.PipelineError(f"cannot read {path} as an image; use a PNG or JPEG file")
    if img.ndim == 3 and img.shape[2] == 4:
        return img[..., [2, 1, 0, 3]]
    if img.ndim == 3:
        return img[..., ::-1].copy()
    return img


def render_video(models: pl.ModelBundle, portrait: pl.Portrait, audio: pl.AudioFeatures, spec: pl.EmotionSpec, *,
                 settings: SamplingSettings, seed: int, superres: str, paste_back: bool, max_side: int = 0,
                 progress: bool = True, reinject_identity_every: int = 0,
                 mouth: pl.Mouth = pl.GENERATOR_MOUTH,
                 portrait_identity: str = pl.DEFAULT_PORTRAIT_IDENTITY,
                 start_mouth: str = anchors.DEFAULT_START_MOUTH) -> Tuple[Iterator[np.ndarray], float]:
    """(uint8 frames [H, W, 3], one at a time, seconds spent sampling) for one portrait: the aligned crop video
    (optionally super-resolved) or, with ``paste_back``, the portrait at `pl.paste_output_size`(max_side).

    Sampling runs first (its crops are small: S x S floats per frame); super-resolution and paste-back run
    lazily as the caller consumes the frames, so a full-size frame exists once at a time. ``mouth``: see
    `pl.emotion_expression_pair` (`pl.resolve_mouth` makes it from --mouth); ``portrait_identity``: see
    `pl.identity_crops`; ``start_mouth``: what each frame starts from, see `anchors.start_anchor`."""
    check_superres(models, superres)         # before minutes of sampling, not after
    psi, neutral = pl.emotion_expression_pair(models.generator, audio.num_frames, spec, fps=audio.fps, seed=seed,
                                              mouth=mouth, audio=audio)
    start = time.perf_counter()

    def report(event: pl.FrameProgress):
        if progress and event.image is not None and (event.frame + 1) % 10 == 0:
            rate = (event.frame + 1) / (time.perf_counter() - start)
            print(f"  frame {event.frame + 1}/{event.total_frames} ({rate:.2f} frames/s)", flush=True)

    size = models.image_size
    identity = pl.identity_crops(portrait, portrait_identity, neutral)
    crops = pl.generate_frames(models.denoiser, identity, audio, psi, settings=settings, seed=seed,
                               callback=report, neutral_expression=neutral,
                               reinject_identity_every=reinject_identity_every,
                               anchor_source=anchors.start_anchor(start_mouth, portrait, audio, psi, neutral, size),
                               **pl.silence_handling(audio))[:, 0]
    seconds = time.perf_counter() - start
    frames = iter_superres(crops, models, superres)
    if paste_back:
        return pl.paste_back_frames(frames, portrait, max_side=max_side), seconds
    return ((f.clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy() for f in frames), seconds


def sampling_settings(args) -> SamplingSettings:
    """The sampling settings the command line asks for (validated: e.g. --eta with the ancestral sampler is an
    error, not ignored)."""
    guidance = 1.0 if args.guidance is None else args.guidance      # None: the checkpoint's (`with_guidance`)
    audio_guidance = 1.0 if args.audio_guidance is None else args.audio_guidance     # likewise
    return SamplingSettings(args.sampler, args.steps, args.start_noise, eta=args.eta, guidance=guidance,
                            audio_guidance=audio_guidance)


def with_guidance(settings: SamplingSettings, args, models: pl.ModelBundle) -> SamplingSettings:
    """``settings`` with the checkpoint's recommended guidance (and audio guidance) when --guidance
    (--audio-guidance) was not given."""
    return dataclasses.replace(settings, guidance=pl.resolve_guidance(args.guidance, models.recommended_guidance,
                                                                      "--guidance"),
                               audio_guidance=pl.resolve_guidance(args.audio_guidance,
                                                                        models.recommended_audio_guidance,
                                                                        "--audio-guidance"))


def reinject_period(args, models: pl.ModelBundle) -> int:
    """--reinject-identity-every, or the checkpoint's recommended period when it was not given (0 = off)."""
    return pl.resolve_reinject(args.reinject_identity_every, models.recommended_reinject_identity_every,
                               "--reinject-identity-every")


def resolve_mouth(args, models: pl.ModelBundle) -> pl.Mouth:
    """The `pl.Mouth` --mouth asks for (`pl.resolve_mouth`; auto = the checkpoint's recommendation)."""
    return pl.resolve_mouth(args.mouth, models.denoiser, models.recommended_mouth, os.path.basename(args.checkpoint))


def resolve_superres(models: pl.ModelBundle, mode: str) -> str:
    """``auto`` (the default) -> the checkpoint's SR head, or lanczos2 when it has none: the video a user gets
    is twice the model's size (128 px for the demo), not its 64 px crops. Other modes as given."""
    if mode == "auto":
        return "head" if models.superres is not None else "lanczos2"
    return mode


def check_superres(models: pl.ModelBundle, mode: str) -> str:
    """``mode`` resolved (`resolve_superres`) and checked against the checkpoint: "none", "head" or
    "lanczos<scale>"; a clear error for what cannot run."""
    mode = resolve_superres(models, mode)
    if mode == "head" and models.superres is None:
        raise pl.PipelineError("this checkpoint has no super-resolution head; use --superres lanczos or none")
    if mode == "none" or mode == "head":
        return mode
    try:
        scale = float(mode[7:] or 2) if mode.startswith("lanczos") else None
    except ValueError:
        scale = None
    if scale is None or not 1.0 <= scale <= 8.0:
        raise pl.PipelineError(f"unknown --superres {mode!r}; use auto, none, head, or lanczos[scale] with a scale "
                               "of 1 to 8, e.g. lanczos2")
    return mode


def apply_superres(frames: torch.Tensor, models: pl.ModelBundle, mode: str) -> torch.Tensor:
    mode = check_superres(models, mode)
    if mode == "none":
        return frames
    if mode == "head":
        return pl.super_resolve(frames, models.superres)
    return pl.super_resolve(frames, None, scale=float(mode[7:] or 2))


def iter_superres(frames: torch.Tensor, models: pl.ModelBundle, mode: str, chunk: int = SUPERRES_CHUNK):
    """`apply_superres` SUPERRES_CHUNK frames at a time, yielding [3, H, W] frames: the upscaled video is never
    held whole."""
    for start in range(0, len(frames), chunk):
        yield from apply_superres(frames[start:start + chunk], models, mode)


def map_big_buffers_while_streaming() -> bool:
    """Fix glibc's mmap threshold at 1 MiB for the streaming phase (super-resolve, paste, encode), so that
    frame-sized buffers are mapped when allocated and returned to the system when freed. Left dynamic, glibc
    raises the threshold after the first such free and serves later ones from the heap, which keeps what
    they fragment: measured at --max-side 1920, 1.46 GB peak RSS after 900 frames against 1.27-1.32 GB after
    90; fixed, 1.27 GB for both. Set after sampling, which this slows by a third (page faults on its
    activations). Returns False where glibc is not there (nothing changes)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        done = bool(libc.mallopt(M_MMAP_THRESHOLD, STREAMING_MMAP_THRESHOLD))
        libc.malloc_trim(0)             # and give back what sampling left free on the heap
        return done
    except (OSError, AttributeError):
        return False


def emotion_plot_path(args) -> str:
    """Where the emotion plot goes: --plot, or beside the video as <out without .mp4>.emotion.png; '' = none."""
    if args.plot == "none":
        return ""
    if args.plot:
        return args.plot
    root, ext = os.path.splitext(args.out)
    return (root if ext.lower() == ".mp4" else args.out) + ".emotion.png"


def generate(args) -> dict:
    from .audio import load_audio_file
    from .emotion_plot import emotion_plot, save_plot
    from .video import write_mp4

    settings = sampling_settings(args)       # validated before any work
    if args.max_side < 0:
        raise pl.PipelineError(f"--max-side {args.max_side} must be >= 0 (0 = the portrait's own size)")
    plot_path = emotion_plot_path(args)
    for path, what in ((args.out, "--out"), (plot_path, "--plot")):
        if path and os.path.isdir(path):
            raise pl.PipelineError(f"{what} {path} is a folder; give a file name")
    torch.manual_seed(args.seed)
    models = load_models(args.checkpoint, args.device)
    check_superres(models, args.superres)
    settings = with_guidance(settings, args, models)
    pl.check_guidance(models.denoiser.config, settings)
    reinject = reinject_period(args, models)
    mouth = resolve_mouth(args, models)
    size = models.denoiser.config.image_size
    portrait = pl.prepare_portrait(load_image(args.portrait), size, face_index=args.face_index,
                                   allow_centre_crop=args.centre_crop)
    wave, sr = load_audio_file(args.audio)
    audio = pl.encode_audio(wave, sr, args.fps, models.denoiser.config.audio)
    spec = pl.EmotionSpec(args.emotion, args.intensity, blend=parse_blend(args.blend), keyframes=args.keyframes)
    if plot_path:       # the emotion curve, to look at while sampling runs
        save_plot(plot_path, emotion_plot(spec, audio.num_frames, audio.fps, silent=audio.silent))
        print(f"emotion plot: {plot_path}", flush=True)
    else:
        spec.weights(audio.num_frames, audio.fps)        # bad keyframes/blends fail before sampling either way
    frames, seconds = render_video(models, portrait, audio, spec, settings=settings, seed=args.seed,
                                   superres=args.superres, paste_back=args.paste_back, max_side=args.max_side,
                                   reinject_identity_every=reinject, mouth=mouth,
                                   portrait_identity=args.portrait_identity, start_mouth=args.start_mouth)
    map_big_buffers_while_streaming()      # sampling is done; what follows allocates frame-sized buffers
    start = time.perf_counter()
    shape = []

    def counted(frames):
        for frame in frames:
            shape[:] = frame.shape[:2]
            yield frame

    write_mp4(args.out, counted(frames), audio.fps, audio=audio.waveform, sample_rate=audio.config.sample_rate)
    report = {"out": os.path.abspath(args.out), "frames": audio.num_frames, "fps": audio.fps,
              "audio_seconds": round(audio.seconds, 3), "silent_seconds": round(audio.silent_seconds, 3),
              "size": [int(v) for v in shape], "sampling": settings.to_dict(), "reinject_identity_every": reinject,
              "mouth": mouth.name, "portrait_identity": args.portrait_identity, "start_mouth": args.start_mouth,
              "generation_seconds": round(seconds, 1),
              "frames_per_second": round(audio.num_frames / max(seconds, 1e-9), 3),
              "write_seconds": round(time.perf_counter() - start, 1)}
    if plot_path:
        report["emotion_plot"] = os.path.abspath(plot_path)
    return report


def emotion_contact_sheet(models: pl.ModelBundle, portrait: pl.Portrait, audio: pl.AudioFeatures, path: str,
                          seed: int = 0, frames: int = 8, settings: SamplingSettings = DEFAULT_SAMPLING,
                          intensities=CONTACT_INTENSITIES, mouth: pl.Mouth = pl.GENERATOR_MOUTH,
                          portrait_identity: str = pl.DEFAULT_PORTRAIT_IDENTITY,
                          start_mouth: str = anchors.DEFAULT_START_MOUTH) -> np.ndarray:
    """A PNG grid of emotions (columns) x intensities (rows): frame ``frames``-1 of a short rollout for each,
    all rendered as one batch. Intensity 0 is neutral in every column (Eq. 14 at k = 0).

    Sampled without guidance on the voice whatever ``settings`` ask: the sheet shows the emotion, which that
    guidance does not move (it opens the mouth further), and it would double the sheet's 40 rollouts (for the demo
    checkpoint, which recommends it, a minute of the demo's time)."""
    import cv2

    settings = dataclasses.replace(settings, audio_guidance=1.0)
    short = audio.first(frames)
    psis, neutrals = [], []
    for k in intensities:
        for emotion in EMOTIONS:
            psi, neutral = pl.emotion_expression_pair(models.generator, short.num_frames, pl.EmotionSpec(emotion, k),
                                                      fps=audio.fps, seed=seed, mouth=mouth, audio=short)
            psis.append(psi)
            neutrals.append(neutral)
    psis, neutrals = torch.stack(psis), torch.stack(neutrals)
    batch = pl.identity_crops(portrait, portrait_identity, neutrals)
    anchor = anchors.start_anchor(start_mouth, portrait, short, psis, neutrals, models.image_size)
    out = pl.generate_frames(models.denoiser, batch, short, psis, settings=settings, seed=seed,
                             neutral_expression=neutrals, anchor_source=anchor)[-1]
    s = out.shape[-1]
    grid = (out.clamp(0, 1) * 255 + 0.5).byte().permute(0, 2, 3, 1).numpy()
    rows = [np.concatenate(list(grid[r * len(EMOTIONS):(r + 1) * len(EMOTIONS)]), axis=1)
            for r in range(len(intensities))]
    sheet = np.concatenate(rows, axis=0)
    scale = max(1, 96 // s)
    sheet = cv2.resize(sheet, (sheet.shape[1] * scale, sheet.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    cell = s * scale
    header = np.full((16, sheet.shape[1], 3), 255, np.uint8)
    for j, emotion in enumerate(EMOTIONS):
        cv2.putText(header, emotion, (j * cell + 2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    side = np.full((16 + sheet.shape[0], 40, 3), 255, np.uint8)
    for r, k in enumerate(intensities):
        cv2.putText(side, f"k={k:g}", (2, 16 + r * cell + cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1,
                    cv2.LINE_AA)
    sheet = np.concatenate([side, np.concatenate([header, sheet], axis=0)], axis=1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cv2.imwrite(path, sheet[..., ::-1])
    return sheet


def demo(args) -> dict:
    """The embedded default: demo checkpoint, shipped portraits and speech; writes two videos and a sheet."""
    from .audio import load_audio_file
    from .video import write_mp4

    start = time.perf_counter()
    settings = sampling_settings(args)
    os.makedirs(args.out, exist_ok=True)
    models = load_models(args.checkpoint, args.device)
    settings = with_guidance(settings, args, models)
    pl.check_guidance(models.denoiser.config, settings)
    reinject = reinject_period(args, models)
    mouth = resolve_mouth(args, models)
    size = models.denoiser.config.image_size
    wave, sr = load_audio_file(DEMO_SPEECH)
    audio = pl.encode_audio(wave, sr, 30, models.denoiser.config.audio)
    spec = pl.EmotionSpec(args.emotion, args.intensity)
    report = {"checkpoint": os.path.basename(args.checkpoint), "emotion": args.emotion, "intensity": args.intensity,
              "audio_seconds": round(audio.seconds, 3), "frames": audio.num_frames, "sampling": settings.to_dict(),
              "reinject_identity_every": reinject, "mouth": mouth.name,
              "portrait_identity": args.portrait_identity, "start_mouth": args.start_mouth, "outputs": []}
    photo = pl.prepare_portrait(load_image(DEMO_PORTRAIT), size)
    procedural = pl.prepare_portrait(load_image(DEMO_PORTRAIT_PROCEDURAL), size)
    # both portraits in one batch: one autoregressive pass renders two videos
    psi, neutral = pl.emotion_expression_pair(models.generator, audio.num_frames, spec, fps=audio.fps, seed=args.seed,
                                              mouth=mouth, audio=audio)
    t0 = time.perf_counter()

    def report_progress(event: pl.FrameProgress):
        if event.image is not None and (event.frame + 1) % 15 == 0:
            print(f"  frame {event.frame + 1}/{event.total_frames}", flush=True)

    crops = torch.cat([pl.identity_crops(p, args.portrait_identity, neutral) for p in (photo, procedural)])
    anchor = anchors.start_anchor(args.start_mouth, [photo, procedural], audio, psi, neutral, size)
    frames = pl.generate_frames(models.denoiser, crops, audio, psi, settings=settings, seed=args.seed,
                                callback=report_progress, neutral_expression=neutral, reinject_identity_every=reinject,
                                anchor_source=anchor, **pl.silence_handling(audio))
    report["sampling_seconds"] = round(time.perf_counter() - t0, 1)
    for b, (name, portrait) in enumerate((("photo", photo), ("procedural", procedural))):
        video = apply_superres(frames[:, b], models, "auto")
        crop_path = os.path.join(args.out, f"{name}_{args.emotion}.mp4")
        write_mp4(crop_path, (video.clamp(0, 1) * 255 + 0.5).byte().permute(0, 2, 3, 1).numpy(), audio.fps,
                  audio=audio.waveform, sample_rate=audio.config.sample_rate)
        report["outputs"].append(crop_path)
        if name == "photo":
            full_path = os.path.join(args.out, f"{name}_{args.emotion}_pasted.mp4")
            write_mp4(full_path, pl.paste_back_frames(video, portrait), audio.fps, audio=audio.waveform,
                      sample_rate=audio.config.sample_rate)
            report["outputs"].append(full_path)
    sheet_path = os.path.join(args.out, "contact_sheet.png")
    emotion_contact_sheet(models, procedural, audio, sheet_path, seed=args.seed, settings=settings,
                          mouth=mouth, portrait_identity=args.portrait_identity, start_mouth=args.start_mouth)
    report["outputs"].append(sheet_path)
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emodiff_core", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint bundle (default: the demo checkpoint)")
    common.add_argument("--steps", type=int, default=DEFAULT_SAMPLING.steps,
                        help=f"denoising steps over the whole schedule (default {DEFAULT_SAMPLING.steps}; with start "
                             "noise below 1 only those under it run)")
    common.add_argument("--sampler", default=DEFAULT_SAMPLING.sampler.value, choices=SAMPLER_NAMES,
                        help="DDIM: deterministic, good at few steps; ancestral: the paper's Eq. 3")
    common.add_argument("--eta", type=float, default=None, help="DDIM only: 0 deterministic (default), 1 = DDPM's variance")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--start-noise", type=float, default=DEFAULT_SAMPLING.start_noise,
                        help="1 = every frame from pure noise (the paper); lower = start from the previous frame "
                             f"noised to that fraction of the schedule (default {DEFAULT_SAMPLING.start_noise:g})")
    common.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance on the emotion: 1 = off, above 1 strengthens what the emotion "
                             "changes (two network passes per step; needs a denoiser trained with expression dropout; "
                             "default: the checkpoint's recommended scale, 1 when it names none)")
    common.add_argument("--audio-guidance", type=float, default=None,
                        help="guidance on the voice against silence: 1 = off, above 1 the mouth follows the voice "
                             "further (two network passes per step; benchmarks/README.md); default: the checkpoint's "
                             "recommended scale, 1 when it names none")
    common.add_argument("--reinject-identity-every", type=int, default=None,
                        help="against identity drift: every N frames the oldest motion frame is the portrait again "
                             "(0 = off; default: the checkpoint's recommended period, 0 when it names none)")
    common.add_argument("--mouth", default="auto", choices=pl.MOUTH_POLICIES,
                        help="the mouth of the generated expression: voice = held at the denoiser's training mean, "
                             "so the audio alone moves it (the emotion keeps its own mouth shape); speech = held, "
                             "and moved by the recording's loudness as in the training corpus; generator = the "
                             "expression generator's own speaking mouth (the paper); auto (default) = what the "
                             "checkpoint recommends (export --mouth), generator when it names none (the shipped ones)")
    common.add_argument("--portrait-identity", default=pl.DEFAULT_PORTRAIT_IDENTITY, choices=pl.PORTRAIT_IDENTITIES,
                        help="what the network is given as the person: neutral (default) = the portrait's face "
                             "re-rendered at a neutral expression (a smiling photo can then look sad), photo = the "
                             "aligned crop as it is (its own expression stays in every frame)")
    common.add_argument("--start-mouth", default=anchors.DEFAULT_START_MOUTH, choices=anchors.START_MOUTHS,
                        help="what each frame's denoising starts from: rig (default) = the previous frame with "
                             "its mouth drawn by the portrait's face rig as the voice moves it, so the lips follow "
                             "the recording (README, \"Each frame started with the rig's mouth\"); previous = the "
                             "previous frame as it is")
    common.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    common.add_argument("--emotion", default="happy", help=f"one of {', '.join(EMOTIONS)} (default happy)")
    common.add_argument("--intensity", type=float, default=1.0, help=f"0 = neutral, 1 = as trained, up to {MAX_INTENSITY:g}")

    p = sub.add_parser("generate", parents=[common], help="portrait + speech + emotion -> mp4")
    p.add_argument("--portrait", required=True, help="image file with a face")
    p.add_argument("--audio", required=True, help="speech recording (wav, flac, mp3, ...)")
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--blend", default=None, help="several emotions at once, e.g. happy:0.6,surprised:0.3")
    p.add_argument("--keyframes", default=None, help="an emotion timeline, e.g. '0:neutral:0, 1.5:happy:1, 3:sad:0.8'")
    p.add_argument("--superres", default="auto",
                   help="auto (default: the checkpoint's SR head, lanczos2 without one), none (the model's own size), "
                        "head or lanczos[scale]")
    p.add_argument("--paste-back", action="store_true", help="paste the face back into the full portrait")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                   help=f"with --paste-back: the video's longest side in pixels; larger portraits are scaled down "
                        f"(default {DEFAULT_MAX_SIDE}, 0 = the portrait's own size)")
    p.add_argument("--plot", default=None,
                   help="where to write the emotion-over-time plot (PNG), before sampling starts; default "
                        "<out>.emotion.png beside the video, 'none' for no plot")
    p.add_argument("--face-index", type=int, default=0, help="which face, 0 = the largest")
    p.add_argument("--centre-crop", action="store_true", help="use a centre crop when no face is found")
    p.set_defaults(func=generate)

    p = sub.add_parser("demo", parents=[common], help="the embedded demo: shipped portraits and speech")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=demo)

    args = parser.parse_args(argv)
    try:
        report = args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0
