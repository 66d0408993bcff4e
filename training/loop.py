"""Pieces every training run shares: distributed setup (torchrun/DDP), EMA, CSV log, progress bar,
mixed precision, learning-rate schedule, and the resumable step loop."""
from __future__ import annotations

import contextlib
import copy
import csv
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn

from .state import has_state, load_state, save_state


@dataclass
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: Optional[str] = None) -> DistInfo:
    """Join a torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return DistInfo(rank, world, local_rank, dev)


def teardown_distributed() -> None:
    """Leave the process group, if one was joined, once every rank is done: left to the interpreter's exit, gloo's
    threads can be torn down while a peer still talks to them ("terminate called without an active exception",
    SIGABRT on one rank after a finished run)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    if info.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


class EMA:
    """Exponential moving average of a module's parameters (and a copy of its buffers)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(unwrap(model)).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))   # short warm-up: early averages follow the model
        for ema_p, p in zip(self.shadow.parameters(), unwrap(model).parameters()):
            ema_p.lerp_(p.detach(), 1.0 - decay)
        for ema_b, b in zip(self.shadow.buffers(), unwrap(model).buffers()):
            ema_b.copy_(b)


class CsvLog:
    """Appends rows to <run>/log.csv; the header is written once (resume keeps appending)."""

    def __init__(self, path: str, fields):
        self.path = path
        self.fields = list(fields)
        self._new = not os.path.isfile(path)

    def write(self, row: Mapping) -> None:
        with open(self.path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.fields, extrasaction="ignore")
            if self._new:
                writer.writeheader()
                self._new = False
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def autocast(device: torch.device):
    """bf16 autocast on CUDA (where it is fast); nothing on CPU, where bf16 is many times slower."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the base rate at ``total`` steps."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, lr: float,
                   clip_params=None, max_norm: Optional[float] = None) -> Optional[float]:
    """Set the learning rate (times a group's ``lr_mult``, when it has one), backpropagate ``loss``, clip
    gradients if asked, step. Returns the grad norm."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = None
    if max_norm is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(clip_params, max_norm))
    opt.step()
    return norm


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, mininterval=5.0)


def run_steps(*, run_dir: str, total_steps: int, step_fn: Callable[[int], Dict[str, float]],
              modules: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer],
              info: DistInfo, log: CsvLog, resume: bool, checkpoint_every: int, log_every: int,
              on_checkpoint: Optional[Callable[[int], None]] = None, sample_every: int = 0,
              on_sample: Optional[Callable[[int], Dict[str, float]]] = None, desc: str = "train",
              extra_state: Optional[Callable[[], dict]] = None, stop_after: Optional[int] = None) -> int:
    """The resumable loop. ``step_fn(step)`` does one optimisation step and returns scalars to log.

    With ``resume`` it restores ``modules`` and ``optimizers`` from <run>/state.safetensors and continues from the
    saved step; data and noise for step s are drawn from generators seeded by (seed, s) inside step_fn,
    so a resumed run makes the same updates as one that was never interrupted.
    ``stop_after`` ends the loop after that step as if the process had been killed there (the schedule still
    runs to ``total_steps``; only the states saved so far remain): for time-boxed sessions and resume tests.
    With several ranks, the end of the run checks that every rank holds the same weights and writes the
    per-rank checksums to <run>/ddp_check.json.
    """
    start = 0
    if resume and has_state(run_dir):
        start, _ = load_state(run_dir, modules, optimizers, map_location=info.device)
        if info.main:
            print(f"resumed {run_dir} at step {start}", flush=True)
    elif resume and info.main:
        print(f"--resume: no saved state in {run_dir}; starting from step 0", flush=True)
    bar = progress_bar(total_steps, start, info.main, desc)
    t0 = time.perf_counter()
    for step in range(start, total_steps):
        scalars = step_fn(step)
        done = step + 1
        if bar is not None:
            bar.update(1)
            if done % log_every == 0:
                bar.set_postfix({k: f"{v:.4g}" for k, v in list(scalars.items())[:4]})
        if info.main and (done % log_every == 0 or done == total_steps):
            log.write(dict(scalars, step=done, seconds=round(time.perf_counter() - t0, 2)))
        if on_sample is not None and sample_every and info.main and (done % sample_every == 0 or done == total_steps):
            log.write(dict(on_sample(done), step=done, seconds=round(time.perf_counter() - t0, 2)))
        if done % checkpoint_every == 0 or done == total_steps:
            if info.main:
                save_state(run_dir, done, modules, optimizers, extra_state() if extra_state else None)
                if on_checkpoint is not None:
                    on_checkpoint(done)
            if info.world > 1:
                dist.barrier()
        if stop_after is not None and done >= stop_after:
            break
    if bar is not None:
        bar.close()
    if info.world > 1:
        _check_ranks_agree(run_dir, modules, info)
    return step + 1 if total_steps > start else start


def parameter_checksums(modules: Mapping[str, nn.Module]) -> torch.Tensor:
    """One float64 sum per parameter tensor (exact enough to tell diverged replicas apart)."""
    sums = [p.detach().double().sum() for m in modules.values() for p in m.parameters()]
    return torch.stack(sums).cpu()


def _check_ranks_agree(run_dir: str, modules: Mapping[str, nn.Module], info: DistInfo) -> None:
    import json

    local = parameter_checksums(modules).to(info.device)
    gathered = [torch.zeros_like(local) for _ in range(info.world)]
    dist.all_gather(gathered, local)
    identical = all(torch.equal(gathered[0], g) for g in gathered[1:])
    if info.main:
        with open(os.path.join(run_dir, "ddp_check.json"), "w") as fh:
            json.dump({"world_size": info.world, "identical": identical,
                       "checksums": [g.cpu().tolist()[:8] for g in gathered]}, fh)
    if not identical:
        raise RuntimeError("the ranks ended with different weights; distributed training went out of sync")
