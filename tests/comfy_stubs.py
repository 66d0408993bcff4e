"""Stand-ins for ComfyUI's folder_paths and comfy.* modules, installed into sys.modules by tests, and a
loader that imports the pack by file path the way ComfyUI does (so its relative imports are exercised)."""
import importlib.util
import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Interrupted(BaseException):
    """Like ComfyUI's InterruptProcessingException (a BaseException)."""


def install(base_dir: str) -> types.SimpleNamespace:
    state = types.SimpleNamespace(interrupt_after=None, checks=0, progress=[], emptied=0)
    fp = types.ModuleType("folder_paths")
    fp.models_dir = os.path.join(base_dir, "models")
    fp.folder_names_and_paths = {}
    for d in ("models", "output", "input"):
        os.makedirs(os.path.join(base_dir, d), exist_ok=True)

    def add_model_folder_path(name, path, is_default=False):
        paths, exts = fp.folder_names_and_paths.setdefault(name, ([], set()))
        if path not in paths:
            paths.insert(0, path) if is_default else paths.append(path)

    def get_filename_list(name):
        out = []
        for p in fp.folder_names_and_paths.get(name, ([], set()))[0]:
            if os.path.isdir(p):
                out += [f for f in os.listdir(p) if os.path.isfile(os.path.join(p, f))]
        return sorted(set(out))

    def get_full_path(name, filename):
        for p in fp.folder_names_and_paths.get(name, ([], set()))[0]:
            full = os.path.join(p, filename)
            if os.path.isfile(full):
                return full
        return None

    fp.add_model_folder_path = add_model_folder_path
    fp.get_filename_list = get_filename_list
    fp.get_full_path = get_full_path
    fp.get_output_directory = lambda: os.path.join(base_dir, "output")
    fp.get_input_directory = lambda: os.path.join(base_dir, "input")

    comfy = types.ModuleType("comfy")
    mm = types.ModuleType("comfy.model_management")
    utils = types.ModuleType("comfy.utils")
    import torch

    mm.get_torch_device = lambda: torch.device("cpu")
    mm.intermediate_device = lambda: torch.device("cpu")

    def throw():
        state.checks += 1
        if state.interrupt_after is not None and state.checks > state.interrupt_after:
            raise Interrupted("Processing interrupted")

    def soft_empty_cache():
        state.emptied += 1

    mm.throw_exception_if_processing_interrupted = throw
    mm.soft_empty_cache = soft_empty_cache

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            state.progress.append((value, total, preview is not None))

    utils.ProgressBar = ProgressBar
    comfy.model_management = mm
    comfy.utils = utils
    sys.modules.update({"folder_paths": fp, "comfy": comfy, "comfy.model_management": mm, "comfy.utils": utils})
    state.folder_paths = fp
    return state


def uninstall():
    for name in ("folder_paths", "comfy", "comfy.model_management", "comfy.utils"):
        sys.modules.pop(name, None)


def load_pack(name: str = "ComfyUI-EMOdiffhead"):
    """Import the pack's __init__.py by path under a hyphenated module name, as ComfyUI's loader does."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "__init__.py"),
                                                  submodule_search_locations=[ROOT])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
