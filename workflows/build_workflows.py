"""Builds the example workflows in both formats from one definition each:

    <name>.json       UI format (what the ComfyUI frontend loads and saves; drag it onto the canvas; listed in
                      the template browser, with <name>.jpg as its thumbnail)
    api/<name>.json   API format (what POST /prompt takes; what tests and the acceptance harness run). In a
                      subfolder so that the template browser, which lists workflows/*.json, does not offer it.

Run ``python workflows/build_workflows.py`` after changing a node's inputs. tests/test_workflows.py checks
that the files are up to date and that the widget order below matches the nodes' INPUT_TYPES.
"""
from __future__ import annotations

import json
import os
import sys
from collections import OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))       # the pack root, for the core's sampling defaults
from emodiff_core.anchors import DEFAULT_START_MOUTH  # noqa: E402
from emodiff_core.pipeline import DEFAULT_PORTRAIT_IDENTITY  # noqa: E402
from emodiff_core.sampling import DEFAULT as DEFAULT_SAMPLING  # noqa: E402

CHECKPOINT = "emodiffhead_demo.safetensors"
PORTRAIT = "portrait.jpg"
SPEECH = "speech.wav"

# Widget inputs of each node, in INPUT_TYPES order (required then optional); "+control" marks an INT with
# control_after_generate, which the frontend follows with one more widget value.
WIDGETS = {
    "LoadEMOdiffheadModel": ["ckpt_name", "device", "dtype"],
    "EMOdiffheadLoadPortrait": ["face_index", "detector", "centre_crop_if_no_face"],
    "EMOdiffheadAudioEncode": ["fps"],
    "EMOdiffheadEmotionVector": ["emotion", "intensity", "seed+control", "blend", "keyframes", "mouth"],
    "EMOdiffheadSampler": ["steps", "sampler", "seed+control", "reinject_identity_every", "start_noise", "guidance",
                           "audio_guidance", "portrait_identity", "start_mouth"],
    "EMOdiffheadSuperResolve": ["method", "lanczos_scale", "repeat"],
    "EMOdiffheadPasteBack": ["feather", "region", "max_side"],
    "LoadImage": ["image", "upload=image"],
    "LoadAudio": ["audio", "audioUI=None", "upload=None"],
    "CreateVideo": ["fps"],
    "SaveVideo": ["filename_prefix", "format", "format.codec"],
    "ImageStitch": ["direction", "match_image_size", "spacing_width", "spacing_color"],
    "PreviewImage": [],
}
OUTPUTS = {
    "LoadEMOdiffheadModel": [("model", "EMODIFFHEAD_MODEL")],
    "EMOdiffheadLoadPortrait": [("portrait", "EMODIFFHEAD_PORTRAIT"), ("aligned_crop", "IMAGE")],
    "EMOdiffheadAudioEncode": [("audio_features", "EMODIFFHEAD_AUDIO"), ("frame_count", "INT"), ("audio", "AUDIO")],
    "EMOdiffheadEmotionVector": [("expression", "EMODIFFHEAD_EXPRESSION"), ("emotion_plot", "IMAGE")],
    "EMOdiffheadSampler": [("images", "IMAGE"), ("fps", "FLOAT"), ("audio", "AUDIO")],
    "EMOdiffheadSuperResolve": [("images", "IMAGE")],
    "EMOdiffheadPasteBack": [("images", "IMAGE")],
    "LoadImage": [("IMAGE", "IMAGE"), ("MASK", "MASK")],
    "LoadAudio": [("AUDIO", "AUDIO")],
    "CreateVideo": [("VIDEO", "VIDEO")],
    "SaveVideo": [("video", "VIDEO")],
    "ImageStitch": [("IMAGE", "IMAGE")],
    "PreviewImage": [],
}
LINKED_WIDGET_VALUES = {("CreateVideo", "fps"): 30.0}
INPUT_TYPES = {"model": "EMODIFFHEAD_MODEL", "portrait": "EMODIFFHEAD_PORTRAIT", "audio_features": "EMODIFFHEAD_AUDIO",
               "expression": "EMODIFFHEAD_EXPRESSION", "images": "IMAGE", "image": "IMAGE", "image1": "IMAGE",
               "image2": "IMAGE", "audio": "AUDIO", "video": "VIDEO", "fps": "FLOAT"}


class Graph:
    def __init__(self, title: str):
        self.title = title
        self.nodes = OrderedDict()   # id -> (class_type, inputs dict, pos)

    def add(self, class_type: str, pos, **inputs) -> int:
        node_id = len(self.nodes) + 1
        self.nodes[node_id] = (class_type, inputs, pos)
        return node_id

    # ------------------------------------------------------------------ API format
    def api(self) -> dict:
        prompt = {}
        for node_id, (ctype, inputs, _pos) in self.nodes.items():
            prompt[str(node_id)] = {
                "class_type": ctype,
                "inputs": {k: ([str(v[0]), v[1]] if isinstance(v, tuple) else v) for k, v in inputs.items()},
                "_meta": {"title": ctype},
            }
        return prompt

    # ------------------------------------------------------------------ UI format
    def ui(self) -> dict:
        links, nodes = [], []
        out_links = {}
        link_id = 0
        in_links = {}
        for node_id, (ctype, inputs, _pos) in self.nodes.items():
            for name, value in inputs.items():
                if isinstance(value, tuple):
                    link_id += 1
                    src, slot = value
                    out_type = OUTPUTS[self.nodes[src][0]][slot][1]
                    links.append([link_id, src, slot, node_id, None, out_type])
                    out_links.setdefault((src, slot), []).append(link_id)
                    in_links.setdefault(node_id, []).append((name, link_id, out_type))
        by_id = {l[0]: l for l in links}
        for order, (node_id, (ctype, inputs, pos)) in enumerate(self.nodes.items()):
            ui_inputs = []
            widget_names = [w.split("+")[0].split("=")[0] for w in WIDGETS[ctype]]
            for slot, (name, lid, ltype) in enumerate(in_links.get(node_id, [])):
                entry = {"name": name, "type": ltype, "link": lid}
                if name in widget_names:
                    entry["widget"] = {"name": name}
                ui_inputs.append(entry)
                by_id[lid][4] = slot
            values = []
            for spec in WIDGETS[ctype]:
                name, _, fixed = spec.partition("=")
                control = name.endswith("+control")
                name = name.replace("+control", "")
                if fixed:
                    values.append(None if fixed == "None" else fixed)
                    continue
                value = inputs.get(name)
                if isinstance(value, tuple):        # a widget fed by a link keeps a value in the UI
                    value = LINKED_WIDGET_VALUES.get((ctype, name))
                values.append(value)
                if control:
                    values.append("fixed")
            outputs = [{"name": oname, "type": otype, "links": out_links.get((node_id, slot), []), "slot_index": slot}
                       for slot, (oname, otype) in enumerate(OUTPUTS[ctype])]
            nodes.append({"id": node_id, "type": ctype, "pos": list(pos), "size": [300, 120], "flags": {},
                          "order": order, "mode": 0, "inputs": ui_inputs, "outputs": outputs,
                          "properties": {"Node name for S&R": ctype}, "widgets_values": values})
        return {"last_node_id": len(self.nodes), "last_link_id": link_id, "nodes": nodes, "links": links,
                "groups": [], "config": {}, "extra": {"title": self.title}, "version": 0.4}


def _front(graph: Graph):
    """Model, portrait and speech: the start every workflow shares."""
    model = graph.add("LoadEMOdiffheadModel", (0, 0), ckpt_name=CHECKPOINT, device="auto", dtype="auto")
    image = graph.add("LoadImage", (0, 180), image=PORTRAIT)
    audio = graph.add("LoadAudio", (0, 560), audio=SPEECH)
    portrait = graph.add("EMOdiffheadLoadPortrait", (360, 0), model=(model, 0), image=(image, 0), face_index=0,
                         detector="auto", centre_crop_if_no_face=False)
    feats = graph.add("EMOdiffheadAudioEncode", (360, 300), model=(model, 0), audio=(audio, 0), fps=30.0)
    return model, portrait, feats


def _emotion(graph, model, feats, pos, emotion="happy", intensity=1.0, keyframes=""):
    return graph.add("EMOdiffheadEmotionVector", pos, model=(model, 0), audio_features=(feats, 0), emotion=emotion,
                     intensity=intensity, seed=0, blend="", keyframes=keyframes, mouth="auto")


def _sampler(graph, model, portrait, feats, expr, pos):
    return graph.add("EMOdiffheadSampler", pos, model=(model, 0), portrait=(portrait, 0), audio_features=(feats, 0),
                     expression=(expr, 0), steps=DEFAULT_SAMPLING.steps, sampler=DEFAULT_SAMPLING.sampler.value,
                     seed=0, audio=(feats, 2), reinject_identity_every=-1, start_noise=DEFAULT_SAMPLING.start_noise,
                     guidance=-1.0,       # -1: these follow the checkpoint chosen in the graph (the node's defaults)
                     audio_guidance=-1.0, portrait_identity=DEFAULT_PORTRAIT_IDENTITY, start_mouth=DEFAULT_START_MOUTH)


def _save(graph, images, sampler, prefix, pos):
    video = graph.add("CreateVideo", pos, images=(images, 0), fps=(sampler, 1), audio=(sampler, 2))
    graph.add("SaveVideo", (pos[0] + 320, pos[1]), video=(video, 0), filename_prefix=prefix, format="mp4",
              **{"format.codec": "h264"})


def _superres(graph, model, samp, repeat, pos=(1440, 0)):
    """The checkpoint's SR head applied ``repeat`` times (x2 each) to the sampler's frames."""
    return graph.add("EMOdiffheadSuperResolve", pos, images=(samp, 0), method="sr_head", lanczos_scale=2.0,
                     repeat=repeat, model=(model, 0))


def basic() -> Graph:
    g = Graph("EMOdiffhead: portrait + speech + emotion -> video with audio")
    model, portrait, feats = _front(g)
    expr = _emotion(g, model, feats, (720, 300))
    samp = _sampler(g, model, portrait, feats, expr, (1080, 0))
    sr = _superres(g, model, samp, repeat=1)
    _save(g, sr, samp, "emodiffhead/basic", (1800, 0))
    return g


def emotion_sweep() -> Graph:
    g = Graph("EMOdiffhead: one portrait across emotions and intensities, side by side")
    model, portrait, feats = _front(g)
    panels = []
    variants = [("neutral", 0.0), ("happy", 0.5), ("happy", 1.0), ("sad", 1.0), ("surprised", 1.0)]
    first_sampler = None
    for i, (emotion, k) in enumerate(variants):
        expr = _emotion(g, model, feats, (720, 300 * i), emotion, k)
        samp = _sampler(g, model, portrait, feats, expr, (1080, 300 * i))
        first_sampler = first_sampler or samp
        panels.append(_superres(g, model, samp, repeat=1, pos=(1440, 300 * i)))     # 128 px faces, not 64
    stitched = panels[0]
    for i, panel in enumerate(panels[1:]):
        stitched = g.add("ImageStitch", (1800, 300 * i), image1=(stitched, 0), direction="right", match_image_size=True,
                         spacing_width=0, spacing_color="white", image2=(panel, 0))
    _save(g, stitched, first_sampler, "emodiffhead/sweep", (2160, 0))
    return g


def keyframes() -> Graph:
    g = Graph("EMOdiffhead: a keyframed emotion timeline")
    model, portrait, feats = _front(g)
    expr = _emotion(g, model, feats, (720, 300), keyframes="0:neutral:0, 1:happy:1, 2.5:surprised:1, 4:sad:0.8")
    samp = _sampler(g, model, portrait, feats, expr, (1080, 0))
    g.add("EMOdiffheadSaveExpression", (1080, 400), expression=(expr, 0), filename_prefix="emodiffhead/timeline")
    sr = _superres(g, model, samp, repeat=1)
    _save(g, sr, samp, "emodiffhead/keyframes", (1800, 0))
    g.add("PreviewImage", (720, 560), images=(expr, 1))          # the emotion curve (added last: ids stay stable)
    return g


def paste_back() -> Graph:
    g = Graph("EMOdiffhead: paste the animated face back into the full-resolution portrait")
    model, portrait, feats = _front(g)
    expr = _emotion(g, model, feats, (720, 300))
    samp = _sampler(g, model, portrait, feats, expr, (1080, 0))
    sr = _superres(g, model, samp, repeat=2)
    full = g.add("EMOdiffheadPasteBack", (1800, 0), images=(sr, 0), portrait=(portrait, 0), feather=0.08, region="face",
                 max_side=1280)
    _save(g, full, samp, "emodiffhead/paste_back", (2160, 0))
    return g


WORKFLOWS = {"emodiffhead_basic": basic, "emodiffhead_emotion_sweep": emotion_sweep,
             "emodiffhead_keyframes": keyframes, "emodiffhead_paste_back": paste_back}
WIDGETS["EMOdiffheadSaveExpression"] = ["filename_prefix"]
OUTPUTS["EMOdiffheadSaveExpression"] = []


def render_all() -> dict:
    """{filename: json text} for every workflow in both formats."""
    out = {}
    for name, build in WORKFLOWS.items():
        graph = build()
        out[f"{name}.json"] = json.dumps(graph.ui(), indent=1) + "\n"
        out[os.path.join("api", f"{name}.json")] = json.dumps(graph.api(), indent=1) + "\n"
    return out


def main() -> None:
    os.makedirs(os.path.join(HERE, "api"), exist_ok=True)
    for filename, text in render_all().items():
        with open(os.path.join(HERE, filename), "w") as fh:
            fh.write(text)
        print("wrote", filename)


if __name__ == "__main__":
    main()
