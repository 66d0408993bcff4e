"""`python -m training export`: bundle trained components into the one checkpoint file the nodes load.

Each part is an exported component file (the runs write <run>/<component>.safetensors, EMA weights). The
bundle keeps every component's config and its training info (prefixed with the component's name), plus
an optional model card.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

from emodiff_core.checkpoint import CheckpointError, build_components, read_checkpoint, save_checkpoint
from emodiff_core.emotions import EMOTIONS, emotion_index
from emodiff_core.models import ExpressionGenerator, SuperResolver
from emodiff_core.pipeline import (AUDIO_GUIDANCE_INFO_KEY, GUIDANCE_INFO_KEY, MOUTH_INFO_KEY, REINJECT_INFO_KEY,
                                   SAMPLING_INFO_PREFIX, recommended_audio_guidance, recommended_guidance,
                                   recommended_mouth, recommended_reinject)

from .clips import DataFolders, data_label


def export_component(out_dir: str, name: str, module, step: int, data_dir: DataFolders) -> str:
    """A trainer's (EMA) weights as ``<out_dir>/<name>.safetensors``: one component, the format `export`
    bundles and the nodes load."""
    return save_checkpoint(os.path.join(out_dir, f"{name}.safetensors"), {name: module},
                           info={"kind": name, "steps": step, "data": data_label(data_dir)})


def _training_info(source, component: str) -> dict:
    """The training info of ``component`` in an opened file: a component file's whole info, a bundle's entries
    prefixed with the component's name; the model card left out."""
    trained = (source.info if source.components == (component,) else
               {key.split(".", 1)[1]: value for key, value in source.info.items() if key.startswith(f"{component}.")})
    return {key: value for key, value in trained.items() if key != "card"}


def _second_component(path: str, component: str, option: str, purpose: str, components) -> tuple:
    """(module, training info) of ``component`` in the file ``option`` names, to be combined with the bundle's own
    (an SR mouth branch, a generator override); refused, before anything is read, when the parts and the base
    hold no such component or the file is missing."""
    if component not in components:
        raise CheckpointError(f"{option} {purpose}; neither the parts nor the base hold one")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{option}: file not found: {path}")
    source = read_checkpoint(path)
    return build_components(source, [component])[component], _training_info(source, component)


def with_mouth_branch(detail: SuperResolver, mouth: SuperResolver, where: str = "--superres-mouth-from") \
        -> SuperResolver:
    """One SR head from two trained ones (`SuperResConfig.mouth_branch`): ``detail`` everywhere, ``mouth`` around
    the mouth of the aligned crop. Both must be plain heads of the same shape."""
    for name, head in (("the bundle's SR head", detail), (where, mouth)):
        if head.config.mouth_branch:
            raise CheckpointError(f"{name} already has a mouth branch; give two plain SR heads")
    if mouth.config != detail.config:
        raise CheckpointError(f"{where}: its SR head ({mouth.config}) differs in shape from the bundle's "
                              f"({detail.config}); a mouth branch has the main head's scale, channels and blocks")
    combined = SuperResolver(dataclasses.replace(detail.config, mouth_branch=True))
    state = dict(detail.state_dict())
    state.update({f"mouth.{k}": v for k, v in mouth.state_dict().items()})
    combined.load_state_dict(state, strict=True)
    return combined.eval()


def with_warmup(generator: ExpressionGenerator, frames: int) -> ExpressionGenerator:
    """The same generator (same weights) rolling out ``frames`` frames before the first it returns
    (`ExpressionConfig.warmup_frames`)."""
    warmed = ExpressionGenerator(dataclasses.replace(generator.config, warmup_frames=int(frames)))
    warmed.load_state_dict(generator.state_dict(), strict=True)
    return warmed.eval()


def with_override(generator: ExpressionGenerator, override: ExpressionGenerator, emotions: Sequence[str],
                  where: str = "--expression-override-from") -> ExpressionGenerator:
    """One expression generator from two trained ones (`ExpressionConfig.override_emotions`): ``override``'s
    sequences for ``emotions``, ``generator``'s, bit for bit, for every other. Both must be plain generators of
    the same shape and warm-up."""
    for name, gen in (("the bundle's expression generator", generator), (where, override)):
        if gen.config.override_emotions:
            raise CheckpointError(f"{name} already routes {', '.join(gen.config.override_emotions)} to a second "
                                  "network; give two plain generators")
    if override.config != generator.config:
        raise CheckpointError(f"{where}: its expression generator ({override.config}) differs in shape or warm-up "
                              f"from the bundle's ({generator.config}); an override has the bundle's shape")
    names = tuple(EMOTIONS[emotion_index(e)] for e in emotions)
    if not names:
        raise CheckpointError("--expression-override-emotions: name at least one emotion the override makes")
    routed = ExpressionGenerator(dataclasses.replace(generator.config, override_emotions=names))
    state = dict(generator.state_dict())
    state.update({f"override.{k}": v for k, v in override.state_dict().items()})
    routed.load_state_dict(state, strict=True)
    return routed.eval()


def export(out: str, parts: Sequence[str], card: Optional[str] = None, base: Optional[str] = None,
           guidance: Optional[float] = None, reinject_identity_every: Optional[int] = None,
           audio_guidance: Optional[float] = None, superres_mouth_from: Optional[str] = None,
           mouth: Optional[str] = None, expression_warmup: Optional[int] = None,
           expression_override_from: Optional[str] = None,
           expression_override_emotions: Sequence[str] = ()) -> str:
    """Bundle ``parts`` into ``out``. ``base``: a bundle whose other components (those no part holds) are kept,
    with their training info, e.g. a fine-tuned denoiser with the demo's generator, SR head and regressor.
    ``guidance``: the classifier-free guidance scale to recommend (`pipeline.GUIDANCE_INFO_KEY`, what the CLI
    samples with by default; chosen by `evaluate --guidance`'s sweep); refused for a denoiser not trained for it.
    ``reinject_identity_every``: likewise the identity re-injection period (`pipeline.REINJECT_INFO_KEY`), and
    ``audio_guidance`` the guidance on the voice (`pipeline.AUDIO_GUIDANCE_INFO_KEY`), and ``mouth`` the generated
    mouth, one of `pipeline.MOUTH_CHOICES` (`pipeline.MOUTH_INFO_KEY`, what --mouth auto samples with; "voice" and
    "speech" need a denoiser with training statistics).
    ``expression_warmup``: the frames the bundle's expression generator rolls out and drops before the first
    it returns (`ExpressionConfig.warmup_frames`, `with_warmup`; its weights unchanged).
    ``expression_override_from``: a file holding an expression generator (a component file or a bundle) whose
    sequences the exported generator uses for ``expression_override_emotions`` (`with_override`; the generator
    from the parts or the base makes the others, neutral always).
    ``superres_mouth_from``: a file holding an SR head (a component file or a bundle) that becomes the mouth branch
    of the exported SR head (`with_mouth_branch`; the SR head from the parts or the base is the main one).
    No parts with a ``base``: the base re-exported whole (same weights) with a new card or recommendation. The
    base's sampling recommendations stay with its denoiser: kept when the parts do not replace it."""
    if not parts and not base:
        raise CheckpointError("nothing to export: give component files, or --base to re-export a bundle")
    components, info = {}, {}
    for path in parts:
        ckpt = read_checkpoint(path)
        for name in ckpt.components:
            if name in components:
                raise CheckpointError(f"component {name!r} is in two of the parts ({path}); give each once")
        components.update(build_components(ckpt))
        for key, value in ckpt.info.items():
            prefix = ckpt.components[0] if len(ckpt.components) == 1 else "bundle"
            info[f"{prefix}.{key}"] = value
    if base:
        base_ckpt = read_checkpoint(base)
        kept = [name for name in base_ckpt.components if name not in components]
        if not kept:
            raise CheckpointError(f"--base {base}: every one of its components is replaced by the parts; drop --base")
        components.update(build_components(base_ckpt, kept))
        owners = set(kept) | ({SAMPLING_INFO_PREFIX} if "denoiser" in kept else set())
        info.update({key: value for key, value in base_ckpt.info.items() if key.split(".", 1)[0] in owners})
    if superres_mouth_from is not None:
        branch, trained = _second_component(superres_mouth_from, "superres", "--superres-mouth-from",
                                            "adds a mouth branch to the bundle's SR head", components)
        components["superres"] = with_mouth_branch(components["superres"], branch)
        info["superres.mouth_branch"] = os.path.basename(superres_mouth_from)
        info.update({f"superres.mouth.{key}": value for key, value in trained.items()})
    if expression_override_emotions and expression_override_from is None:
        raise CheckpointError("--expression-override-emotions names the emotions of --expression-override-from; "
                              "give the file too")
    if expression_override_from is not None:
        override, trained = _second_component(expression_override_from, "expression_generator",
                                              "--expression-override-from",
                                              "routes emotions of the bundle's expression generator", components)
        components["expression_generator"] = with_override(components["expression_generator"], override,
                                                           expression_override_emotions)
        info["expression_generator.override"] = os.path.basename(expression_override_from)
        info["expression_generator.override_emotions"] = ",".join(
            components["expression_generator"].config.override_emotions)
        info.update({f"expression_generator.override.{key}": value for key, value in trained.items()})
    if expression_warmup is not None:
        if "expression_generator" not in components:
            raise CheckpointError("--expression-warmup sets how a bundle's expression generator rolls out; neither "
                                  "the parts nor the base hold one")
        # a negative count is refused by ExpressionConfig.validate (a ValueError), before anything is written
        components["expression_generator"] = with_warmup(components["expression_generator"], expression_warmup)
    if guidance is not None:
        if "denoiser" not in components:
            raise CheckpointError("--guidance recommends a sampling scale for a bundle's denoiser; none is exported")
        info[GUIDANCE_INFO_KEY] = f"{float(guidance):g}"
        recommended_guidance(info, components["denoiser"].config, out)       # checked before writing
    if reinject_identity_every is not None:
        info[REINJECT_INFO_KEY] = str(reinject_identity_every)
        recommended_reinject(info, out)                                        # checked before writing
    if audio_guidance is not None:
        if "denoiser" not in components:
            raise CheckpointError("--audio-guidance recommends a sampling scale for a bundle's denoiser; none is "
                                  "exported")
        info[AUDIO_GUIDANCE_INFO_KEY] = f"{float(audio_guidance):g}"
        recommended_audio_guidance(info, out)                                  # checked before writing
    if mouth is not None:
        if "denoiser" not in components:
            raise CheckpointError("--mouth recommends how a bundle's denoiser is sampled; none is exported")
        info[MOUTH_INFO_KEY] = str(mouth)
        recommended_mouth(info, components["denoiser"], out)                   # checked before writing
    if card:
        if not os.path.isfile(card):
            raise FileNotFoundError(f"model card not found: {card}")
        with open(card) as fh:
            info["card"] = fh.read()
    return save_checkpoint(out, components, info=info)
