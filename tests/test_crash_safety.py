"""Crash safety of the training state (training/state.py) and of the clip writer (training/clips.py).

A child process (this file run as a script) saves a state over an earlier one, or writes a new version of a
clip over an earlier one, and is killed with ``os._exit`` (no cleanup handler runs, as with SIGKILL) at the
k-th file-system step: before each rename/remove, and halfway through each file write. For every k the test
then reads back what is left and checks that it is consistent: the weights and the optimizer state belong
to the step stored with them; the clip is complete, as its old or its new version.

The two environment variables CRASH_TEST_STATE_MODULE and CRASH_TEST_CLIPS_MODULE point the test at
another version of those files (e.g. ``git show HEAD~1:training/state.py > /tmp/old_state.py``), to check
that the test catches a save that is not atomic.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILLED = 86        # the child's exit status when it was killed at the chosen point
NOT_ARMED = -1


def _module_path(kind: str) -> str:
    default = os.path.join(ROOT, "training", f"{kind}.py")
    return os.environ.get(f"CRASH_TEST_{kind.upper()}_MODULE", default)


def _load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module        # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- kill points (in the child)
class KillPoints:
    """Wraps the file-system calls the writers use. Once armed, call number ``kill_at`` (0-based) kills the
    process: a rename or removal before it happens, a file write after half of it reached the disk."""

    def __init__(self, kill_at: int):
        self.kill_at = kill_at
        self.passed = 0
        self.armed = False
        self._inside = False     # calls made by a wrapped call (rmtree's unlinks) are not points of their own
        import safetensors.torch

        real = {"replace": os.replace, "rename": os.rename, "remove": os.remove, "unlink": os.unlink,
                "rmdir": os.rmdir, "rmtree": shutil.rmtree, "json_dump": json.dump, "np_save": np.save,
                "save_file": safetensors.torch.save_file}
        self.real = real
        os.replace = self._wrap(real["replace"])
        os.rename = self._wrap(real["rename"])
        os.remove = self._wrap(real["remove"])
        os.unlink = self._wrap(real["unlink"])
        os.rmdir = self._wrap(real["rmdir"])
        shutil.rmtree = self._wrap(real["rmtree"], self._half_rmtree)
        json.dump = self._wrap(real["json_dump"], self._half_json)
        np.save = self._wrap(real["np_save"], self._half_file(real["np_save"]))
        safetensors.torch.save_file = self._wrap(real["save_file"], self._half_file(real["save_file"]))

    def _wrap(self, real, partial=None):
        def wrapper(*args, **kwargs):
            if not self.armed or self._inside:
                return real(*args, **kwargs)
            if self.passed == self.kill_at:
                self._inside = True
                if partial is not None:
                    partial(*args, **kwargs)
                os._exit(KILLED)
            self.passed += 1
            self._inside = True
            try:
                return real(*args, **kwargs)
            finally:
                self._inside = False
        return wrapper

    @staticmethod
    def _half_file(real):
        def write_half(first, second, *args, **kwargs):
            real(first, second, *args, **kwargs)
            # np.save(path, array) and save_file(tensors, path); np.save adds ".npy" to a path without it
            path = str(first if isinstance(first, (str, os.PathLike)) else second)
            if not os.path.exists(path):
                path += ".npy"
            os.truncate(path, os.path.getsize(path) // 2)
        return write_half

    @staticmethod
    def _half_json(obj, fh, **kwargs):
        text = json.dumps(obj, **kwargs)
        fh.write(text[: len(text) // 2])
        fh.flush()

    def _half_rmtree(self, path, *args, **kwargs):
        for folder, _dirs, files in os.walk(path):
            for name in sorted(files)[:1]:          # one file gone, the rest still there
                self.real["remove"](os.path.join(folder, name))
                return


# --------------------------------------------------------------------------- the training state
def _state_at(step: int):
    """A model and an Adam optimizer after ``step`` updates, with every weight equal to ``step``: a state
    whose parts can be checked against its step."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(step):
        opt.zero_grad()
        model(torch.ones(4, 3)).square().sum().backward()
        opt.step()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float(step))
    return model, opt


def _write_version1_state(state_module, run_dir: str, step: int) -> None:
    """A run folder as version 1 left it: tensors in state.safetensors, step and skeleton in state.json."""
    from safetensors.torch import save_file

    model, opt = _state_at(step)
    tensors = {f"module.model.{k}": v.clone() for k, v in model.state_dict().items()}
    skeleton = {"opt": state_module._flatten(opt.state_dict(), "optim.opt", tensors)}
    os.makedirs(run_dir, exist_ok=True)
    save_file(tensors, os.path.join(run_dir, "state.safetensors"))
    with open(os.path.join(run_dir, "state.json"), "w") as fh:
        fh.write(json.dumps({"step": step, "optim": skeleton, "extra": {}}))


def _state_child(scenario: str, folder: str, points: KillPoints) -> None:
    state = _load(_module_path("state"), "state_under_test")
    if scenario == "state-version1":
        _write_version1_state(state, folder, 1)
    else:
        model, opt = _state_at(1)
        state.save_state(folder, 1, {"model": model}, {"opt": opt})
    model, opt = _state_at(2)
    points.armed = True
    state.save_state(folder, 2, {"model": model}, {"opt": opt})


def _check_state(folder: str, completed: bool) -> int:
    state = _load(_module_path("state"), "state_under_test")
    assert state.has_state(folder)
    model, opt = _state_at(0)
    step, _ = state.load_state(folder, {"model": model}, {"opt": opt})
    assert step == 2 if completed else step in (1, 2)
    want_model, want_opt = _state_at(step)
    for key, value in want_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), f"weights of step {_first(model)} beside step {step}"
    for got, want in zip(opt.state_dict()["state"].values(), want_opt.state_dict()["state"].values()):
        assert all(torch.equal(torch.as_tensor(got[k]), torch.as_tensor(want[k])) for k in want), \
            f"optimizer state of another step beside step {step}"
    # the run goes on: the next save succeeds and leaves no temporary file behind
    state.save_state(folder, step + 1, {"model": want_model}, {"opt": want_opt})
    assert not [n for n in os.listdir(folder) if n.startswith(".")], os.listdir(folder)
    return step


def _first(model) -> float:
    return float(next(iter(model.parameters())).detach().flatten()[0])


# --------------------------------------------------------------------------- clips
CLIP_ID = "c000007"


def _clip(clips_module, version: int):
    """Version 1 has frames of value 10 and no psi; version 2 frames of value 20 and psi: a folder that
    mixes files of the two is detectable."""
    from emodiff_core.audio import samples_for_frames

    n, size = 6, 8
    meta = {"clip_id": CLIP_ID, "identity": "id0001", "split": "train", "emotion": "happy", "level": 3,
            "intensity": 1.0, "fps": 30, "sample_rate": 16000, "size": size, "source": f"v{version}"}
    frames = np.full((n, size, size, 3), 10 * version, np.uint8)
    psi = np.full((n, 50), float(version), np.float32) if version == 2 else None
    audio = np.zeros(samples_for_frames(n, 30, 16000), np.float32)
    return clips_module.Clip(meta, frames, audio, np.zeros((n, 68, 2), np.float32), psi)


def _clips_child(folder: str, points: KillPoints) -> None:
    clips = _load(_module_path("clips"), "clips_under_test")
    clips.write_clip(folder, _clip(clips, 1))
    clips.write_index(folder, fps=30, sample_rate=16000, size=8, source="test")
    points.armed = True
    clips.write_clip(folder, _clip(clips, 2))
    clips.write_index(folder, fps=30, sample_rate=16000, size=8, source="test")


def _check_clip_version(ds, clip_dir: str) -> int:
    with open(os.path.join(clip_dir, "meta.json")) as fh:
        version = int(json.load(fh)["source"][1:])
    clip = ds.load(CLIP_ID)
    assert np.all(np.asarray(clip.frames) == 10 * version), f"frames of another version beside meta v{version}"
    assert (clip.psi is not None) == (version == 2), f"psi.npy of another version beside meta v{version}"
    assert len(clip.audio) == len(clip.frames) * 16000 // 30
    return version


def _check_clips(folder: str, completed: bool) -> int:
    clips = _load(_module_path("clips"), "clips_under_test")
    # readers, right after the kill: the listed clip is complete (old or new)
    ds = clips.ClipDataset(folder)
    assert [m["clip_id"] for m in ds] == [CLIP_ID]
    _check_clip_version(ds, ds.clip_dir(CLIP_ID))
    # the writer's next run ends with write_index: afterwards no leftovers, and the index matches the folder
    clips.write_index(folder, fps=30, sample_rate=16000, size=8, source="test")
    assert os.listdir(os.path.join(folder, "clips")) == [CLIP_ID]
    ds = clips.ClipDataset(folder)
    version = _check_clip_version(ds, os.path.join(folder, "clips", CLIP_ID))
    assert ds.index["clips"][0]["source"] == f"v{version}"
    assert version == 2 or not completed
    return version


# --------------------------------------------------------------------------- the tests
def _run_child(scenario: str, kill_at: int, folder: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, os.path.abspath(__file__), scenario, str(kill_at), folder],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("scenario", ["state", "state-version1", "clips"])
def test_a_kill_at_any_point_of_a_save_leaves_a_consistent_state(scenario, tmp_path):
    dry = _run_child(scenario, NOT_ARMED, str(tmp_path / "dry"))
    assert dry.returncode == 0, dry.stderr[-3000:]
    points = json.loads(dry.stdout.strip().splitlines()[-1])["points"]
    assert points >= 2           # at least a write and a rename, or the harness does not see the writer
    outcomes = []
    for kill_at in range(points + 1):           # points + 1: the save completes
        folder = str(tmp_path / f"kill{kill_at}")
        result = _run_child(scenario, kill_at, folder)
        completed = kill_at == points
        assert result.returncode == (0 if completed else KILLED), result.stderr[-3000:]
        check = _check_clips if scenario == "clips" else _check_state
        try:
            outcomes.append(check(folder, completed))
        except Exception as exc:
            raise AssertionError(f"killed at point {kill_at} of {points}: {type(exc).__name__}: {exc}") from exc
    assert outcomes[0] == 1 and outcomes[-1] == 2     # killed before anything: old; not killed: new


def test_version1_run_folders_still_resume(tmp_path):
    state = _load(_module_path("state"), "state_under_test")
    _write_version1_state(state, str(tmp_path), 3)
    model, opt = _state_at(0)
    assert state.has_state(str(tmp_path))
    assert state.load_state(str(tmp_path), {"model": model}, {"opt": opt})[0] == 3
    assert _first(model) == 3.0


if __name__ == "__main__":      # the child: <scenario> <kill_at> <folder>
    scenario_arg, kill_at_arg, folder_arg = sys.argv[1:4]
    kill_points = KillPoints(int(kill_at_arg))
    if scenario_arg == "clips":
        _clips_child(folder_arg, kill_points)
    else:
        _state_child(scenario_arg, folder_arg, kill_points)
    print(json.dumps({"points": kill_points.passed}))
