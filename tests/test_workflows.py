"""The example workflows: generated files are current, widget orders match the nodes, graphs are wired."""
import importlib.util
import json
import os

import pytest

import comfy_stubs

ROOT = comfy_stubs.ROOT


def _builder():
    spec = importlib.util.spec_from_file_location("build_workflows", os.path.join(ROOT, "workflows", "build_workflows.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_workflow_files_are_up_to_date():
    for filename, text in _builder().render_all().items():
        path = os.path.join(ROOT, "workflows", filename)
        assert os.path.isfile(path), f"{filename} missing: run python workflows/build_workflows.py"
        assert open(path).read() == text, f"{filename} is stale: run python workflows/build_workflows.py"
    for name in _builder().WORKFLOWS:
        assert os.path.isfile(os.path.join(ROOT, "workflows", f"{name}.jpg")), f"{name}.jpg thumbnail missing"


def test_workflows_use_the_default_sampling_settings():
    from emodiff_core.sampling import DEFAULT

    for name in _builder().WORKFLOWS:
        with open(os.path.join(ROOT, "workflows", "api", f"{name}.json")) as fh:
            graph = json.load(fh)
        samplers = [node["inputs"] for node in graph.values() if node["class_type"] == "EMOdiffheadSampler"]
        assert samplers, name
        for inputs in samplers:
            assert (inputs["sampler"], inputs["steps"], inputs["start_noise"]) == (
                DEFAULT.sampler.value, DEFAULT.steps, DEFAULT.start_noise), name


def test_widget_order_matches_the_nodes(tmp_path):
    comfy_stubs.install(str(tmp_path))
    try:
        pack = comfy_stubs.load_pack()
        builder = _builder()
        for name, cls in pack.NODE_CLASS_MAPPINGS.items():
            if name not in builder.WIDGETS:
                continue
            spec = cls.INPUT_TYPES()
            widgets = []
            for section in ("required", "optional"):
                for input_name, (kind, options) in spec.get(section, {}).items():
                    if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                        widgets.append(input_name + ("+control" if options.get("control_after_generate") else ""))
            assert builder.WIDGETS[name] == widgets, name
            outputs = [t for _, t in builder.OUTPUTS[name]]
            assert outputs == list(cls.RETURN_TYPES), name
    finally:
        comfy_stubs.uninstall()


@pytest.mark.parametrize("name", ["emodiffhead_basic", "emodiffhead_emotion_sweep", "emodiffhead_keyframes",
                                  "emodiffhead_paste_back"])
def test_api_workflows_are_wired(name):
    prompt = json.load(open(os.path.join(ROOT, "workflows", "api", f"{name}.json")))
    outputs = {k: len(_builder().OUTPUTS[v["class_type"]]) for k, v in prompt.items()}
    for node_id, node in prompt.items():
        for value in node["inputs"].values():
            if isinstance(value, list):
                src, slot = value
                assert src in prompt and slot < outputs[src], (name, node_id, value)
    assert any(n["class_type"] == "SaveVideo" for n in prompt.values())
    ui = json.load(open(os.path.join(ROOT, "workflows", f"{name}.json")))
    assert len(ui["nodes"]) == len(prompt) and ui["links"]
