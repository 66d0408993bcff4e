import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The README runs the suite in pytest-xdist workers: each gets its share of the cores, and so do the processes
# the tests start (CLI runs, evaluations: OMP_NUM_THREADS is inherited and `evaluate` keeps an explicit count),
# so that the workers do not wait on each other's OpenMP threads.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
torch.set_num_threads(_THREADS)


@pytest.fixture(scope="session")
def perturbed_tiny_denoiser():
    """Makes the tiny denoiser with every parameter moved by noise of ``scale`` (its output head starts at zero, so
    without this no condition would change its output), after seeding torch's global generator with ``seed``: the
    caller's later draws follow from that seed as they did when each test built its own."""
    from emodiff_core.config import DENOISER_PRESETS
    from emodiff_core.models import EMOdiffheadDenoiser

    def make(seed: int = 0, scale: float = 0.02):
        torch.manual_seed(seed)
        den = EMOdiffheadDenoiser(DENOISER_PRESETS["tiny"]).eval()
        with torch.no_grad():
            for p in den.parameters():
                p.add_(torch.randn(p.shape) * scale)
        return den

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a busy 2-core machine two OpenMP threads wait on each other for a
    whole time slice at every small op (the tiny models' tests ran 50x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_config():
    from emodiff_core.config import DENOISER_PRESETS

    return DENOISER_PRESETS["tiny"]


def denoiser_inputs(cfg, batch=2, seed=0):
    """Random inputs of the right shapes for a denoiser built from ``cfg``."""
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    return dict(
        identity=torch.randn(batch, 3, s, s, generator=g),
        motion=torch.randn(batch, cfg.n_motion_frames, 3, s, s, generator=g),
        audio_emb=torch.randn(batch, 2 * cfg.audio_window + 1, cfg.audio_dim, generator=g),
        expression=torch.randn(batch, 2 * cfg.expression_window + 1, cfg.expression_dim, generator=g),
    )
