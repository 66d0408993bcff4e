"""The only place that touches ComfyUI: lazy imports of folder_paths / comfy.*, type conversions, progress.

Everything is imported when a node runs, never at import time, so the pack imports without ComfyUI (tests
install stand-ins for ``folder_paths`` and ``comfy`` in sys.modules).
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np
import torch

from ..emodiff_core.checkpoint import is_other_safetensors
from ..emodiff_core.paths import CHECKPOINT_DIR as PACK_CHECKPOINTS

MODEL_FOLDER = "emodiffhead"
NO_CHECKPOINTS = "(no checkpoints found: put .safetensors files in models/emodiffhead)"


class NodeError(ValueError):
    """A clear, user-facing error from a node (shown by ComfyUI in the node's error box)."""


def folder_paths():
    import folder_paths as fp  # ComfyUI's module

    return fp


def register_model_folder() -> None:
    """Register models/emodiffhead (plus the pack's own checkpoints/ with the demo model) once.

    Registered through folder_paths, so extra_model_paths.yaml entries for "emodiffhead" work too.
    """
    fp = folder_paths()
    # add_model_folder_path is idempotent; a new folder name accepts every extension.
    fp.add_model_folder_path(MODEL_FOLDER, os.path.join(fp.models_dir, MODEL_FOLDER), is_default=True)
    fp.add_model_folder_path(MODEL_FOLDER, PACK_CHECKPOINTS)


def checkpoint_names() -> List[str]:
    register_model_folder()
    fp = folder_paths()
    names = [n for n in fp.get_filename_list(MODEL_FOLDER) if n.endswith(".safetensors")
             and not is_other_safetensors(fp.get_full_path(MODEL_FOLDER, n))]   # e.g. the judge, FER weights
    return sorted(names) or [NO_CHECKPOINTS]


def checkpoint_path(name: str) -> str:
    if name == NO_CHECKPOINTS:
        raise NodeError("no EMOdiffhead checkpoint is installed: put a .safetensors checkpoint in "
                        "ComfyUI/models/emodiffhead (the pack's demo checkpoint lives in its checkpoints/ folder)")
    register_model_folder()
    fp = folder_paths()
    path = fp.get_full_path(MODEL_FOLDER, name)
    if path is None or not os.path.isfile(path):
        raise NodeError(f"checkpoint {name!r} was not found in models/emodiffhead; refresh the node list (R) "
                        "or put the file there")
    return path


def output_directory() -> str:
    return folder_paths().get_output_directory()


def input_directory() -> str:
    return folder_paths().get_input_directory()


# --------------------------------------------------------------------------- model management
def torch_device(choice: str = "auto") -> torch.device:
    if choice == "cpu":
        return torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NodeError("device 'cuda' was chosen but no CUDA GPU is available; choose auto or cpu")
        return torch.device(choice)
    try:
        import comfy.model_management as mm

        return mm.get_torch_device()
    except ImportError:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def intermediate_device() -> torch.device:
    try:
        import comfy.model_management as mm

        return mm.intermediate_device()
    except (ImportError, AttributeError):
        return torch.device("cpu")


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed cancel (a no-op outside ComfyUI)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


def soft_empty_cache() -> None:
    try:
        import comfy.model_management as mm
    except ImportError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return
    mm.soft_empty_cache()


class Progress:
    """comfy.utils.ProgressBar with a preview image; silent outside ComfyUI."""

    def __init__(self, total: int):
        self.total = total
        try:
            import comfy.utils

            self.bar = comfy.utils.ProgressBar(total)
        except ImportError:
            self.bar = None

    def update(self, value: int, preview: Optional[torch.Tensor] = None) -> None:
        if self.bar is None:
            return
        image = None
        if preview is not None:
            try:
                from PIL import Image

                arr = (preview.clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).cpu().numpy()
                image = ("JPEG", Image.fromarray(arr), 256)
            except ImportError:
                image = None
        self.bar.update_absolute(value, self.total, image)


# --------------------------------------------------------------------------- type conversions
def image_to_numpy(image: torch.Tensor, what: str = "image") -> np.ndarray:
    """ComfyUI IMAGE [1, H, W, C] (0..1) -> float32 numpy [H, W, C]; a batch of several is an error."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise NodeError(f"{what} must be an IMAGE ([batch, height, width, channels])")
    if image.shape[0] != 1:
        raise NodeError(f"{what} is a batch of {image.shape[0]} images; this node takes one. Pick one first "
                        "(core 'ImageFromBatch' node), or run the workflow once per image")
    return image[0].float().cpu().numpy()


def frames_to_image(frames: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in 0..1 -> ComfyUI IMAGE [N, H, W, 3] on the intermediate device."""
    return frames.permute(0, 2, 3, 1).contiguous().float().to(intermediate_device())


def image_to_frames(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE [N, H, W, C] -> [N, 3, H, W] float on the CPU (alpha dropped, grey repeated)."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise NodeError("images must be an IMAGE ([batch, height, width, channels])")
    x = image.float().cpu()
    if x.shape[-1] == 1:
        x = x.expand(-1, -1, -1, 3)
    return x[..., :3].permute(0, 3, 1, 2).contiguous()


def audio_to_numpy(audio) -> tuple:
    """ComfyUI AUDIO {"waveform": [B, C, T], "sample_rate": int} -> (float32 [C, T], rate)."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise NodeError("audio must be an AUDIO input (from the core LoadAudio node or another audio node)")
    wave = audio["waveform"]
    if wave.dim() != 3:
        raise NodeError(f"AUDIO waveform must be [batch, channels, samples], got {list(wave.shape)}")
    if wave.shape[0] != 1:
        raise NodeError(f"the AUDIO holds a batch of {wave.shape[0]} recordings; this node takes one")
    return wave[0].float().cpu().numpy(), int(audio["sample_rate"])


def make_audio(waveform: np.ndarray, sample_rate: int) -> dict:
    w = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    if w.dim() == 1:
        w = w[None]
    return {"waveform": w[None], "sample_rate": int(sample_rate)}
