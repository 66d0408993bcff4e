"""Renders the example workflows' thumbnails (<name>.jpg) by running their API-format twins in one process.

    python workflows/render_thumbnails.py [--seconds 2] [--frame 45] [--only basic,paste_back]

The pack's own nodes run as ComfyUI runs them (imported by path, with tests/comfy_stubs.py standing in for
folder_paths and comfy.*); ComfyUI's LoadImage, LoadAudio, ImageStitch, CreateVideo, SaveVideo and PreviewImage are
stood in for by the few lines below that do what those nodes do with these graphs' inputs (files from assets/).
The speech is cut to ``--seconds`` (a thumbnail is one frame); the thumbnail is frame ``--frame`` of the video the
graph saves, scaled to the size the thumbnail file already has (a new one: 256 px high). For acceptance in a real
ComfyUI use shared/tools/comfy_accept.py; this only draws pictures.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from emodiff_core.audio import load_audio_file  # noqa: E402
from emodiff_core.cli import load_image as read_image  # noqa: E402
from tests import comfy_stubs  # noqa: E402

ASSETS = os.path.join(ROOT, "assets")


def stand_ins(bridge, seconds: float, saved: dict) -> dict:
    """ComfyUI core nodes used by the example graphs, reduced to what these graphs ask of them; ``bridge`` is the
    pack's own `nodes.bridge`, whose AUDIO constructor the audio stand-in uses."""

    def load_image(image, **_):
        rgb = read_image(os.path.join(ASSETS, image))[..., :3]
        tensor = torch.from_numpy(np.ascontiguousarray(rgb)).float()[None] / 255.0
        return tensor, torch.zeros(tensor.shape[1:3])[None]

    def load_audio(audio, **_):
        wave, sr = load_audio_file(os.path.join(ASSETS, audio))
        return (bridge.make_audio(wave[:, : int(seconds * sr)], sr),)

    def image_stitch(image1, image2, direction="right", **_):
        if direction != "right":
            raise ValueError(f"stand-in ImageStitch does only 'right', not {direction!r}")
        if image1.shape[1] != image2.shape[1]:
            image2 = torch.nn.functional.interpolate(image2.movedim(-1, 1), size=(image1.shape[1], image2.shape[2]),
                                                     mode="bilinear", align_corners=False).movedim(1, -1)
        return (torch.cat([image1, image2], dim=2),)

    def create_video(images, fps, audio=None, **_):
        return ({"images": images, "fps": fps, "audio": audio},)

    def save_video(video, **_):
        saved["video"] = video["images"]
        return ()

    def preview_image(images, **_):
        saved.setdefault("previews", []).append(images)
        return ()

    return {"LoadImage": load_image, "LoadAudio": load_audio, "ImageStitch": image_stitch,
            "CreateVideo": create_video, "SaveVideo": save_video, "PreviewImage": preview_image}


def run_graph(graph: dict, mappings: dict, core: dict) -> None:
    """Every node once, each after the nodes it takes inputs from."""
    outputs = {}

    def run(node_id: str):
        if node_id in outputs:
            return outputs[node_id]
        node = graph[node_id]
        inputs = {k: (run(v[0])[v[1]] if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) else v)
                  for k, v in node["inputs"].items()}
        kind = node["class_type"]
        if kind in core:
            result = core[kind](**inputs)
        else:
            cls = mappings[kind]
            result = getattr(cls(), cls.FUNCTION)(**inputs)
            if isinstance(result, dict):
                result = result.get("result", ())
        outputs[node_id] = tuple(result)
        return outputs[node_id]

    for node_id in graph:
        run(node_id)


def thumbnail(frames: torch.Tensor, frame: int, size) -> np.ndarray:
    image = (frames[min(frame, len(frames) - 1)].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    height, width = size if size else (256, round(256 * image.shape[1] / image.shape[0]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)[..., ::-1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=2.0, help="speech cut to this length (default 2)")
    p.add_argument("--frame", type=int, default=45, help="frame of the saved video to draw (default 45)")
    p.add_argument("--only", default="", help="comma-separated workflow names without emodiffhead_ (default all)")
    args = p.parse_args(argv)
    names = sorted(f[:-5] for f in os.listdir(os.path.join(HERE, "api")) if f.endswith(".json"))
    if args.only:
        wanted = {f"emodiffhead_{n}" for n in args.only.split(",")}
        names = [n for n in names if n in wanted]
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as base:
        comfy_stubs.install(base)
        try:
            pack = comfy_stubs.load_pack()
            bridge = importlib.import_module(f"{pack.__name__}.nodes.bridge")
            for name in names:
                with open(os.path.join(HERE, "api", f"{name}.json")) as fh:
                    graph = json.load(fh)
                saved = {}
                run_graph(graph, pack.NODE_CLASS_MAPPINGS, stand_ins(bridge, args.seconds, saved))
                path = os.path.join(HERE, f"{name}.jpg")
                old = cv2.imread(path)
                image = thumbnail(saved["video"], args.frame, old.shape[:2] if old is not None else None)
                cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 90])
                print(json.dumps({"workflow": name, "frames": int(len(saved["video"])),
                                  "thumbnail": os.path.relpath(path, ROOT), "size": list(image.shape[:2])}), flush=True)
        finally:
            comfy_stubs.uninstall()
    return 0


if __name__ == "__main__":
    sys.exit(main())
