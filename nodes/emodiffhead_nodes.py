"""EMOdiffhead nodes (ComfyUI V1 node API): thin adapters over emodiff_core.pipeline.

Chain: Load EMOdiffhead Model -> Load Portrait (IMAGE) -> Audio Encode (AUDIO) -> Emotion Vector ->
EMOdiffhead Sampler -> IMAGE frames + FLOAT fps + AUDIO -> (Super-Resolve, Paste Back) -> core CreateVideo
-> SaveVideo, or VideoHelperSuite's Video Combine.
"""
from __future__ import annotations

import json
import os
import time

import torch

from ..emodiff_core import anchors
from ..emodiff_core import pipeline as pl
from ..emodiff_core.atomic import atomic_output
from ..emodiff_core.audio import samples_for_frames
from ..emodiff_core.checkpoint import CheckpointError
from ..emodiff_core.editing import MAX_INTENSITY, parse_blend
from ..emodiff_core.emotion_plot import emotion_plot
from ..emodiff_core.emotions import EMOTIONS
from ..emodiff_core.sampling import DEFAULT as DEFAULT_SAMPLING, NAMES as SAMPLER_NAMES, SamplingSettings
from . import bridge
from .bridge import NodeError

CATEGORY = "EMOdiffhead"
MODEL = "EMODIFFHEAD_MODEL"
PORTRAIT = "EMODIFFHEAD_PORTRAIT"
AUDIO_FEATURES = "EMODIFFHEAD_AUDIO"
EXPRESSION = "EMODIFFHEAD_EXPRESSION"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Paste Back returns one IMAGE batch (float32, 12 bytes a pixel) that ComfyUI holds whole, so it cannot stream:
# the output size is the only lever on memory. Default longest side 1280: 8 s at 30 fps of a 3:2 photo is
# 3.1 GB; refused above MAX_PASTE_BYTES with the size that would fit.
PASTE_MAX_SIDE = 1280
MAX_PASTE_BYTES = 8 * 1024 ** 3


def _user_error(exc: Exception) -> NodeError:
    return NodeError(str(exc))


def _run(fn, *args, **kwargs):
    """Turn the core's ValueErrors (bad input) into NodeErrors with the same message."""
    try:
        return fn(*args, **kwargs)
    except NodeError:
        raise
    except ValueError as exc:
        raise _user_error(exc) from None


class LoadEMOdiffheadModel:
    DESCRIPTION = "Loads an EMOdiffhead checkpoint (denoiser + expression generator, optional SR head) from models/emodiffhead."
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded EMOdiffhead models.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (bridge.checkpoint_names(), {"tooltip": "A .safetensors checkpoint from models/emodiffhead "
                                                                 "(the demo checkpoint ships with the pack)."}),
            "device": (["auto", "cpu", "cuda"], {"default": "auto", "tooltip": "auto = ComfyUI's device."}),
            "dtype": (["auto", "fp32", "fp16", "bf16"], {"default": "auto",
                                                        "tooltip": "Denoiser precision. auto = fp16 on CUDA, fp32 on CPU (bf16/fp16 are slow on CPUs)."}),
        }}

    def load(self, ckpt_name, device="auto", dtype="auto"):
        path = bridge.checkpoint_path(ckpt_name)
        dev = bridge.torch_device(device)
        if dtype == "auto":
            torch_dtype = torch.float16 if dev.type == "cuda" else torch.float32
        else:
            torch_dtype = DTYPES[dtype]
        try:
            bundle = pl.load_bundle(path, device=dev, dtype=torch_dtype)
        except CheckpointError as exc:
            raise NodeError(str(exc)) from None
        return (bundle,)


class EMOdiffheadLoadPortrait:
    DESCRIPTION = "Finds the face in an image (68 landmarks), aligns and crops it like the training data."
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (PORTRAIT, "IMAGE")
    RETURN_NAMES = ("portrait", "aligned_crop")
    OUTPUT_TOOLTIPS = ("The portrait (original, landmarks, crop geometry for paste-back).",
                       "The aligned face crop the model will animate.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The crop size follows the model."}),
            "image": ("IMAGE", {"tooltip": "One portrait (RGB, RGBA or greyscale), from Load Image or any image node."}),
            "face_index": ("INT", {"default": 0, "min": 0, "max": 32, "tooltip": "Which face when there are several: 0 = the largest."}),
            "detector": (["auto", "dlib", "fan"], {"default": "auto",
                                                   "tooltip": "Landmarks: FAN (face-alignment) when its weights are installed, else dlib."}),
            "centre_crop_if_no_face": ("BOOLEAN", {"default": False,
                                                   "tooltip": "Use a centre crop instead of failing when no face is found."}),
        }}

    def load(self, model, image, face_index=0, detector="auto", centre_crop_if_no_face=False):
        arr = bridge.image_to_numpy(image, "portrait image")
        portrait = _run(pl.prepare_portrait, arr, model.image_size, backend=detector, face_index=face_index,
                        allow_centre_crop=centre_crop_if_no_face)
        crop = torch.from_numpy(portrait.crop).float()[None] / 255.0
        return (portrait, crop.to(bridge.intermediate_device()))


class EMOdiffheadAudioEncode:
    DESCRIPTION = "Turns speech into per-frame features at the chosen fps; the video length follows the audio."
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (AUDIO_FEATURES, "INT", "AUDIO")
    RETURN_NAMES = ("audio_features", "frame_count", "audio")
    OUTPUT_TOOLTIPS = ("Per-frame audio features for the sampler.", "Number of video frames.",
                       "The input audio trimmed to exactly frame_count frames (for CreateVideo / Video Combine).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The features follow the model's audio settings."}),
            "audio": ("AUDIO", {"tooltip": "Speech: any sample rate and channel count (resampled to 16 kHz mono). "
                                           "Silence (all of it, or pauses of 0.25 s and more) gives a closed, still mouth."}),
            "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 0.01,
                              "tooltip": "Video frame rate. The model was trained at 30 fps."}),
        }}

    def encode(self, model, audio, fps=30.0):
        wave, sr = bridge.audio_to_numpy(audio)
        features = _run(pl.encode_audio, wave, sr, fps, model.audio_config)
        trimmed = wave[:, : samples_for_frames(features.num_frames, fps, sr)]
        return (features, features.num_frames, bridge.make_audio(trimmed, sr))


class EMOdiffheadEmotionVector:
    DESCRIPTION = ("Expression vectors per frame from an emotion label and intensity (Eq. 14 with the "
                   "neutral-to-target direction), or a blend, or a keyframed timeline.")
    CATEGORY = CATEGORY
    FUNCTION = "make"
    RETURN_TYPES = (EXPRESSION, "IMAGE")
    RETURN_NAMES = ("expression", "emotion_plot")
    OUTPUT_TOOLTIPS = ("Per-frame expression vectors (psi).",
                       "The emotion over time: intensity of each emotion (y) against seconds (x), keyframes as dashed "
                       "lines, silent stretches of the audio shaded. Connect to Preview Image to check it before sampling.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "Its expression generator makes the neutral and target sequences."}),
            "audio_features": (AUDIO_FEATURES, {"tooltip": "Gives the number of frames and the fps (and, with the "
                                                           "mouth 'speech', the mouth's motion)."}),
            "emotion": (list(EMOTIONS), {"default": "happy", "tooltip": "MEAD's eight emotions."}),
            "intensity": ("FLOAT", {"default": 1.0, "min": 0.0, "max": MAX_INTENSITY, "step": 0.05,
                                    "tooltip": "0 = neutral, 1 = the emotion as trained, above 1 exaggerates."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1, "control_after_generate": "fixed",
                             "tooltip": "Noise of the expression generator (the same for neutral and target)."}),
        }, "optional": {
            "blend": ("STRING", {"default": "", "tooltip": "Several emotions at once, e.g. happy:0.6, surprised:0.3 "
                                                           "(overrides emotion/intensity)."}),
            "keyframes": ("STRING", {"default": "", "multiline": True,
                                     "tooltip": "A timeline time:emotion:intensity, e.g. 0:neutral:0, 1.5:happy:1, 3:sad:0.8 "
                                                "(seconds; eased between keys; overrides blend)."}),
            "mouth": (list(pl.MOUTH_POLICIES), {"default": "auto",
                                                "tooltip": "voice: the generated mouth is held, the audio alone moves it "
                                                           "(the emotion keeps its own mouth shape); speech: held, and "
                                                           "moved by the recording's loudness as in training; generator: the "
                                                           "expression generator's own speaking mouth (the paper); auto: "
                                                           "what the checkpoint recommends (generator for the shipped "
                                                           "ones)."}),
        }}

    def make(self, model, audio_features, emotion, intensity, seed, blend="", keyframes="", mouth="auto"):
        spec = pl.EmotionSpec(emotion, float(intensity), blend=_run(parse_blend, blend.strip() or None),
                              keyframes=keyframes.strip() or None)
        generated_mouth = _run(pl.resolve_mouth, mouth, model.denoiser, model.recommended_mouth, model.name)
        psi, neutral = _run(pl.emotion_expression_pair, model.generator, audio_features.num_frames, spec,
                            fps=audio_features.fps, seed=seed, mouth=generated_mouth, audio=audio_features)
        description = {"emotion": emotion, "intensity": float(intensity), "blend": blend.strip(),
                       "keyframes": keyframes.strip(), "seed": int(seed), "model": model.name,
                       "mouth": generated_mouth.name}
        plot = emotion_plot(spec, audio_features.num_frames, audio_features.fps, silent=audio_features.silent)
        plot_image = (torch.from_numpy(plot).float() / 255.0)[None].to(bridge.intermediate_device())
        return (pl.ExpressionTrack(psi, audio_features.fps, description, neutral=neutral), plot_image)


# the Sampler's reinject_identity_every and guidance widgets: "what the checkpoint's metadata recommends" (a
# fixed widget default cannot follow the model chosen in the graph; the CLI's defaults do the same)
MODEL_RECOMMENDS = -1


class EMOdiffheadSampler:
    DESCRIPTION = "Generates the talking-head frames autoregressively (one frame after another), with the emotion given."
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("IMAGE", "FLOAT", "AUDIO")
    RETURN_NAMES = ("images", "fps", "audio")
    OUTPUT_TOOLTIPS = ("The generated face crops, one per video frame.", "Frame rate of the frames.",
                       "The speech, trimmed to the frames (connect to CreateVideo or Video Combine).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "From Load EMOdiffhead Model."}),
            "portrait": (PORTRAIT, {"tooltip": "From Load Portrait."}),
            "audio_features": (AUDIO_FEATURES, {"tooltip": "From Audio Encode."}),
            "expression": (EXPRESSION, {"tooltip": "From Emotion Vector or Load Expression (resampled to the audio's frames)."}),
            "steps": ("INT", {"default": DEFAULT_SAMPLING.steps, "min": 2, "max": 1000,
                              "tooltip": "Respaced steps over the whole schedule (from the 1000 training steps); with start "
                                         "noise below 1 only those under it run (10 at 0.5 = 6 per frame)."}),
            "sampler": (list(SAMPLER_NAMES), {"default": DEFAULT_SAMPLING.sampler.value,
                                            "tooltip": "DDIM: deterministic, good at few steps; ancestral: the paper's Eq. 3."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1, "control_after_generate": "fixed",
                             "tooltip": "Seed of the sampling noise."}),
        }, "optional": {
            "audio": ("AUDIO", {"tooltip": "Speech to pass through to the audio output (the trimmed audio of Audio Encode)."}),
            "reinject_identity_every": ("INT", {"default": MODEL_RECOMMENDS, "min": MODEL_RECOMMENDS, "max": 1000,
                                                "tooltip": "Against identity drift on long videos: every N frames the oldest motion frame "
                                                           "is the portrait again (0 = off; -1 = what the checkpoint recommends: 1 for "
                                                           "the shipped emodiffhead_demo and emodiffhead_real, 2 for emodiffhead_emotion and "
                                                           "emodiffhead_procedural)."}),
            "start_noise": ("FLOAT", {"default": DEFAULT_SAMPLING.start_noise, "min": 0.05, "max": 1.0, "step": 0.05,
                                      "tooltip": "1 = every frame from pure noise (the paper). Lower = start from the previous frame "
                                                 "noised this far, running only the steps below it: faster and steadier."}),
            "guidance": ("FLOAT", {"default": float(MODEL_RECOMMENDS), "min": float(MODEL_RECOMMENDS), "max": 10.0,
                                   "step": 0.25,
                                   "tooltip": "Classifier-free guidance on the emotion: 1 = off, above 1 strengthens what the "
                                              "emotion changes (two network passes per step); -1 = what the checkpoint "
                                              "recommends (1 when the expression has no neutral sequence to guide from). "
                                              "Needs an expression from Emotion Vector and a model trained for it "
                                              "(emodiffhead_emotion and emodiffhead_real are; the demo is not: "
                                              "its intensity is the dial)."}),
            "audio_guidance": ("FLOAT", {"default": float(MODEL_RECOMMENDS), "min": float(MODEL_RECOMMENDS), "max": 5.0,
                                         "step": 0.25,
                                         "tooltip": "Guidance on the voice against silence: 1 = off, above 1 the mouth follows "
                                                    "the voice further (two network passes per step); -1 = what the "
                                                    "checkpoint recommends (2 for emodiffhead_demo and emodiffhead_real, 1 for the "
                                                    "others)."}),
            "portrait_identity": (list(pl.PORTRAIT_IDENTITIES), {
                "default": pl.DEFAULT_PORTRAIT_IDENTITY,
                "tooltip": "What the network is given as the person. neutral: the portrait's face re-rendered at a "
                           "neutral expression, so a smiling photo can look sad or surprised. photo: the crop as it "
                           "is (its own expression stays in every frame)."}),
            "start_mouth": (list(anchors.START_MOUTHS), {
                "default": anchors.DEFAULT_START_MOUTH,
                "tooltip": "What each frame starts from. rig: the previous frame with its mouth drawn by the "
                           "portrait's face rig as the voice moves it, so the lips follow the recording. previous: "
                           "the previous frame as it is."}),
        }}

    @staticmethod
    def _guidance(model, track, guidance) -> float:
        """The scale to sample with: the widget's, or for -1 (or None) the checkpoint's recommended scale; a
        recommendation needs a neutral sequence to guide from, and without one (a loaded expression file) the
        video is sampled unguided and the console says so (an explicit scale without one is an error)."""
        given = None if guidance is None or guidance == MODEL_RECOMMENDS else guidance
        scale = _run(pl.resolve_guidance, given, model.recommended_guidance)
        if given is None and scale != 1.0 and track.neutral is None:
            print(f"[EMOdiffhead] guidance: the checkpoint recommends {scale:g}, but this expression has no "
                  "neutral sequence to guide from; sampling unguided (1)")
            return 1.0
        return scale

    def sample(self, model, portrait, audio_features, expression, steps, sampler, seed, audio=None,
               reinject_identity_every=MODEL_RECOMMENDS, start_noise=None, guidance=None, audio_guidance=None,
               portrait_identity=pl.DEFAULT_PORTRAIT_IDENTITY, start_mouth=anchors.DEFAULT_START_MOUTH):
        n = audio_features.num_frames
        reinject_identity_every = _run(pl.resolve_reinject,
                                       None if reinject_identity_every == MODEL_RECOMMENDS else reinject_identity_every,
                                       model.recommended_reinject_identity_every, "reinject_identity_every")
        track = expression.resampled(n, audio_features.fps)
        guidance = self._guidance(model, track, guidance)
        settings = _run(SamplingSettings, sampler, steps,
                        DEFAULT_SAMPLING.start_noise if start_noise is None else start_noise, guidance=guidance,
                        audio_guidance=_run(pl.resolve_guidance,
                                            None if audio_guidance in (None, MODEL_RECOMMENDS) else audio_guidance,
                                            model.recommended_audio_guidance, "audio_guidance"))
        if settings.guided and track.neutral is None:
            raise NodeError(f"guidance {settings.guidance:g} needs the neutral sequence the emotion was made from, which "
                            "this expression lacks (it comes from a file or node that does not keep it); make it with "
                            "Emotion Vector or set guidance to 1")
        identity = _run(pl.identity_crops, portrait, portrait_identity, track.neutral)
        anchor = _run(anchors.start_anchor, start_mouth, portrait, audio_features, track.psi, track.neutral,
                      identity.shape[-1])
        progress = bridge.Progress(n)

        def callback(event: pl.FrameProgress):
            bridge.check_interrupt()          # at every denoising step: cancel stops within one step
            if event.image is not None:
                progress.update(event.frame + 1, event.image[0])

        start = time.perf_counter()
        try:
            frames = _run(pl.generate_frames, model.denoiser, identity, audio_features, track.psi,
                          settings=settings, seed=seed, callback=callback, device=model.device, dtype=model.dtype,
                          reinject_identity_every=reinject_identity_every, neutral_expression=track.neutral,
                          anchor_source=anchor, **pl.silence_handling(audio_features))
        finally:
            bridge.soft_empty_cache()
        elapsed = time.perf_counter() - start
        print(f"[EMOdiffhead] {n} frames in {elapsed:.1f} s ({n / max(elapsed, 1e-9):.2f} frames/s)")
        if audio is None:
            audio = bridge.make_audio(audio_features.waveform, audio_features.config.sample_rate)
        return (bridge.frames_to_image(frames[:, 0]), float(audio_features.fps), audio)


class EMOdiffheadSuperResolve:
    DESCRIPTION = ("Upscales frames with the checkpoint's trained SR head, or any upscale model (UPSCALE_MODEL "
                   "from Load Upscale Model), or Lanczos when neither is connected. An SR head with a mouth branch "
                   "(emodiffhead_real's) expects the Sampler's aligned face crops: it finds the mouth where they "
                   "have it.")
    CATEGORY = CATEGORY
    FUNCTION = "upscale"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The upscaled frames.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Frames to upscale."}),
            "method": (["sr_head", "upscale_model", "lanczos"], {"default": "sr_head",
                                                                 "tooltip": "sr_head needs the model input; upscale_model needs the upscale_model input."}),
            "lanczos_scale": ("FLOAT", {"default": 2.0, "min": 1.0, "max": 8.0, "step": 0.5,
                                        "tooltip": "Scale factor for Lanczos."}),
            "repeat": ("INT", {"default": 1, "min": 1, "max": 3,
                               "tooltip": "Apply the upscaler this many times (e.g. the x2 head twice for x4)."}),
        }, "optional": {
            "model": (MODEL, {"tooltip": "For sr_head."}),
            "upscale_model": ("UPSCALE_MODEL", {"tooltip": "For upscale_model (e.g. Real-ESRGAN via Load Upscale Model)."}),
        }}

    def upscale(self, images, method, lanczos_scale=2.0, repeat=1, model=None, upscale_model=None):
        frames = bridge.image_to_frames(images)
        if method == "sr_head":
            if model is None or model.superres is None:
                raise NodeError("method sr_head needs a model with an SR head connected; connect the model, or "
                                "choose lanczos or upscale_model")
            upscaler = model.superres
        elif method == "upscale_model":
            if upscale_model is None:
                raise NodeError("method upscale_model needs an UPSCALE_MODEL (core Load Upscale Model node) connected")
            upscaler = upscale_model
        else:
            upscaler = None
        progress = bridge.Progress(repeat)
        for r in range(repeat):
            bridge.check_interrupt()
            frames = _run(pl.super_resolve, frames, upscaler, scale=lanczos_scale)
            progress.update(r + 1)
        bridge.soft_empty_cache()
        return (bridge.frames_to_image(frames),)


class EMOdiffheadPasteBack:
    DESCRIPTION = ("Pastes the generated face crops back into the portrait with a feathered mask, at the portrait's "
                   "size or scaled down to max_side.")
    CATEGORY = CATEGORY
    FUNCTION = "paste"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The portrait with the animated face, one frame per crop, longest side at most max_side.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Generated crops (any size: super-resolved crops paste sharper)."}),
            "portrait": (PORTRAIT, {"tooltip": "The portrait the crops were made from."}),
            "feather": ("FLOAT", {"default": 0.08, "min": 0.0, "max": 0.5, "step": 0.01,
                                  "tooltip": "Width of the soft mask edge, as a fraction of the crop."}),
            "region": (["face", "crop"], {"default": "face",
                                          "tooltip": "face: blend only the face; crop: the whole crop square."}),
            "max_side": ("INT", {"default": PASTE_MAX_SIDE, "min": 0, "max": 16384, "step": 16,
                                 "tooltip": "Longest side of the output in pixels; larger portraits are scaled down "
                                            "(0 = the portrait's own size). The frames are one IMAGE batch in memory "
                                            "(12 bytes a pixel per frame), so this sets how much memory they take."}),
        }}

    def paste(self, images, portrait, feather=0.08, region="face", max_side=PASTE_MAX_SIDE):
        frames = bridge.image_to_frames(images)
        n = frames.shape[0]
        h, w = _run(pl.paste_output_size, portrait.image.shape, max_side)
        need = n * h * w * 3 * 4
        if need > MAX_PASTE_BYTES:         # before any work: the batch would not fit
            fit = int(max(h, w) * (MAX_PASTE_BYTES / need) ** 0.5) // 16 * 16
            advice = (f"set max_side to {fit} or less" if fit >= 64 else "use shorter audio") + \
                " (or split the audio into parts)"
            raise NodeError(f"pasting {n} frames at {w}x{h} needs {need / 1024 ** 3:.1f} GB of memory (ComfyUI holds "
                            f"the whole IMAGE batch, 12 bytes a pixel); the limit is {MAX_PASTE_BYTES / 1024 ** 3:.1f} GB: "
                            f"{advice}")
        out = torch.empty(n, h, w, 3)
        progress = bridge.Progress(n)
        for i, frame in enumerate(_run(pl.paste_back_frames, frames, portrait, feather=feather, region=region,
                                       max_side=max_side)):
            out[i] = torch.from_numpy(frame).float() / 255.0
            if i % 16 == 0:
                bridge.check_interrupt()
                progress.update(i + 1)
        return (out.to(bridge.intermediate_device()),)


class EMOdiffheadSaveExpression:
    DESCRIPTION = "Saves per-frame expression vectors (psi curves) as JSON in ComfyUI's output folder."
    CATEGORY = CATEGORY
    FUNCTION = "save"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "expression": (EXPRESSION, {"tooltip": "From Emotion Vector or Load Expression."}),
            "filename_prefix": ("STRING", {"default": "emodiffhead/expression",
                                           "tooltip": "Path under the output folder; a counter and .json are added."}),
        }}

    def save(self, expression, filename_prefix="emodiffhead/expression"):
        root = os.path.abspath(bridge.output_directory())
        prefix = os.path.abspath(os.path.join(root, filename_prefix))
        if os.path.commonpath([root, prefix]) != root:
            raise NodeError("filename_prefix must stay inside the output folder (no '..' or absolute paths)")
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        counter = 1
        while os.path.exists(f"{prefix}_{counter:05d}.json"):
            counter += 1
        path = f"{prefix}_{counter:05d}.json"
        with atomic_output(path) as tmp, open(tmp, "w") as fh:
            json.dump(expression.to_json(), fh)
        rel = os.path.relpath(path, root)
        return {"ui": {"text": [f"saved {rel} ({expression.psi.shape[0]} frames)"]}}


class EMOdiffheadLoadExpression:
    DESCRIPTION = "Loads expression vectors saved by Save Expression (from the output or input folder)."
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (EXPRESSION,)
    RETURN_NAMES = ("expression",)
    OUTPUT_TOOLTIPS = ("Per-frame expression vectors; the sampler resamples them to the audio's frames.",)

    @classmethod
    def _files(cls):
        found = []
        for base in (bridge.output_directory(), bridge.input_directory()):
            folder = os.path.join(base, "emodiffhead")
            if os.path.isdir(folder):
                found += [f"emodiffhead/{name}" for name in sorted(os.listdir(folder)) if name.endswith(".json")]
        return sorted(set(found)) or ["(no saved expressions)"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"file": (cls._files(), {"tooltip": "A .json from output/emodiffhead or input/emodiffhead."})}}

    @classmethod
    def IS_CHANGED(cls, file):
        path = cls._path(file)
        return os.path.getmtime(path) if path else float("nan")

    @classmethod
    def _path(cls, file):
        for base in (bridge.output_directory(), bridge.input_directory()):
            root = os.path.abspath(base)
            path = os.path.abspath(os.path.join(root, file))
            if os.path.commonpath([root, path]) == root and os.path.isfile(path):
                return path
        return None

    def load(self, file):
        path = self._path(file)
        if path is None:
            raise NodeError(f"expression file {file!r} not found in output/emodiffhead or input/emodiffhead")
        try:
            with open(path) as fh:
                data = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise NodeError(f"cannot read {file}: {exc}") from None
        return (_run(pl.ExpressionTrack.from_json, data, file),)


NODE_CLASS_MAPPINGS = {
    "LoadEMOdiffheadModel": LoadEMOdiffheadModel,
    "EMOdiffheadLoadPortrait": EMOdiffheadLoadPortrait,
    "EMOdiffheadAudioEncode": EMOdiffheadAudioEncode,
    "EMOdiffheadEmotionVector": EMOdiffheadEmotionVector,
    "EMOdiffheadSampler": EMOdiffheadSampler,
    "EMOdiffheadSuperResolve": EMOdiffheadSuperResolve,
    "EMOdiffheadPasteBack": EMOdiffheadPasteBack,
    "EMOdiffheadSaveExpression": EMOdiffheadSaveExpression,
    "EMOdiffheadLoadExpression": EMOdiffheadLoadExpression,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadEMOdiffheadModel": "Load EMOdiffhead Model",
    "EMOdiffheadLoadPortrait": "Load Portrait (EMOdiffhead)",
    "EMOdiffheadAudioEncode": "Audio Encode (EMOdiffhead)",
    "EMOdiffheadEmotionVector": "Emotion Vector (EMOdiffhead)",
    "EMOdiffheadSampler": "EMOdiffhead Sampler",
    "EMOdiffheadSuperResolve": "Super-Resolve (EMOdiffhead)",
    "EMOdiffheadPasteBack": "Paste Back (EMOdiffhead)",
    "EMOdiffheadSaveExpression": "Save Expression (EMOdiffhead)",
    "EMOdiffheadLoadExpression": "Load Expression (EMOdiffhead)",
}
