"""GPU throughput of autoregressive generation at 128 px: fp32 vs bf16 autocast vs torch.compile vs CUDA graphs.

    python -m benchmarks.gpu_throughput --json [--preset paper] [--frames 24] [--steps 10] [--batch 1]
                                        [--modes fp32,bf16,compile,cudagraphs,paper_literal] [--checkpoint PATH]

A denoiser of the ``paper`` preset (128 px; random weights unless --checkpoint gives a bundle: throughput
does not depend on the weights) generates --frames frames of --batch videos with `pipeline.generate_frames`
(ReferenceNet cached, DDIM at --steps) in each mode:

    fp32         plain float32
    bf16         torch.autocast(cuda, bfloat16) around generation
    compile      bf16 autocast + torch.compile(denoiser UNet) (default mode; compile time reported apart)
    cudagraphs   bf16 autocast + the UNet forward captured once in a CUDA graph and replayed at every step
    paper_literal  fp32, every training step (1000), ancestral, ReferenceNet recomputed at every step, on
                 --paper-frames frames: the baseline of the speedup on this GPU

Every mode first runs a 2-frame warm-up (compilation, graph capture, cuDNN autotuning), then the timed run.
Reports frames per second (frames x batch / seconds), ms per denoising step, peak CUDA memory, and each
mode's mean absolute difference to fp32 on the first frame (same seed; a broken mode shows up there).
One mode failing does not stop the others (its entry gets an "error").

Prints ONE JSON line and writes <out-dir>/gpu_throughput.json + .png. Without CUDA it prints a JSON line
{"error": ...} and exits with status 2 (nothing else happens).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from typing import Dict, Optional

import torch

from . import common

MODES = ("fp32", "bf16", "compile", "cudagraphs", "paper_literal")


class GraphedDenoiser(torch.nn.Module):
    """The denoiser with its UNet forward captured in a CUDA graph (static input buffers, replayed per step).

    Exposes what `generate_frames` uses (config, parameters, encode_audio, reference_features, forward); the
    graph is (re)captured when the input shapes change. Each call copies the inputs into the static
    buffers, replays, and returns a clone of the static output.
    """

    def __init__(self, denoiser, autocast_dtype: Optional[torch.dtype] = torch.bfloat16, warmup: int = 3):
        super().__init__()
        self.inner = denoiser
        self.config = denoiser.config
        self.autocast_dtype = autocast_dtype
        self.warmup = warmup
        self._graph = None
        self._key = None
        self._static: Dict[str, object] = {}
        self._out = None

    def encode_audio(self, features):
        return self.inner.encode_audio(features)

    def reference_features(self, identity):
        return self.inner.reference_features(identity)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        # cache_enabled=False: autocast's weight-cast cache must not live across a graph capture
        return torch.autocast("cuda", dtype=self.autocast_dtype, cache_enabled=False)

    def _capture(self, inputs: Dict[str, object]) -> None:
        def clone(v):
            return {k: t.clone() for k, t in v.items()} if isinstance(v, dict) else v.clone()

        self._static = {k: clone(v) for k, v in inputs.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), self._autocast():
            for _ in range(self.warmup):
                self.inner.unet(**self._static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), self._autocast():
            self._out = self.inner.unet(**self._static)
        self._graph = graph

    def forward(self, x_t, t, *, identity, motion, audio_emb, expression, reference=None):
        if reference is None:
            reference = self.inner.reference_features(identity)
        inputs = {"x_t": x_t, "t": t, "identity": identity, "motion": motion, "audio_emb": audio_emb,
                  "expression": expression, "reference": reference}
        key = tuple((k, tuple(v.shape), v.dtype) if torch.is_tensor(v) else (k, tuple((n, tuple(r.shape)) for n, r in sorted(v.items())))
                    for k, v in inputs.items())
        if self._graph is None or key != self._key:
            self._capture(inputs)
            self._key = key
        for k, v in inputs.items():
            if isinstance(v, dict):
                for name, tensor in v.items():
                    self._static[k][name].copy_(tensor)
            else:
                self._static[k].copy_(v)
        self._graph.replay()
        return self._out.clone()


def build_denoiser(args, device):
    """The paper-preset denoiser (random, slightly perturbed weights) or the bundle's."""
    from emodiff_core.config import DENOISER_PRESETS
    from emodiff_core.models import EMOdiffheadDenoiser

    if args.checkpoint:
        from emodiff_core.pipeline import load_bundle

        return load_bundle(args.checkpoint, device=device).denoiser.eval()
    cfg = DENOISER_PRESETS[args.preset]
    if args.size and args.size != cfg.image_size:
        import dataclasses

        cfg = dataclasses.replace(cfg, image_size=args.size)
    torch.manual_seed(0)
    den = EMOdiffheadDenoiser(cfg).eval()
    with torch.no_grad():   # the output head starts at zero; perturb so that frames depend on the inputs
        for p in den.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return den.to(device)


def inputs(den, frames: int, batch: int):
    """Random identity crops and audio features, and a fixed expression track, for ``frames`` frames."""
    from emodiff_core.pipeline import AudioFeatures

    cfg = den.config
    g = torch.Generator().manual_seed(1)
    identity = torch.rand(batch, 3, cfg.image_size, cfg.image_size, generator=g)
    feats = torch.randn(frames, cfg.audio.n_mels, cfg.audio.context, generator=g)
    samples = int(frames / 30.0 * cfg.audio.sample_rate)
    audio = AudioFeatures(feats, torch.zeros(samples).numpy(), 30.0, cfg.audio)
    psi = torch.randn(frames, cfg.expression_dim, generator=g) * 0.3
    return identity, audio, psi


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run_mode(mode: str, den, args, device) -> dict:
    """Warm up and time one mode; returns its entry."""
    from emodiff_core.pipeline import generate_frames
    from emodiff_core.sampling import DEFAULT, PAPER

    total = den.config.diffusion.steps
    settings, cache = DEFAULT.replace(steps=args.steps), True
    frames = args.frames
    model = den
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    autocast = (torch.autocast(kind, dtype=torch.bfloat16, cache_enabled=mode != "cudagraphs")
                if mode in ("bf16", "compile", "cudagraphs") else contextlib.nullcontext())
    compile_seconds = None
    if mode == "paper_literal":
        settings, cache, frames = PAPER.replace(steps=total), False, args.paper_frames
    if mode == "compile":
        import copy

        model = copy.copy(den)                       # shallow: shares parameters, own module dict
        model._modules = dict(den._modules)
        model.unet = torch.compile(den.unet)
    if mode == "cudagraphs":
        model = GraphedDenoiser(den)
    identity, audio, psi = inputs(den, max(frames, 2), args.batch)
    warm_audio = audio.first(2)
    _sync(device)
    t0 = time.perf_counter()
    with autocast:
        # the paper-literal mode warms up with the short default sampler: 1000 steps per frame are not needed
        generate_frames(model, identity, warm_audio, psi[:2], settings=DEFAULT.replace(steps=args.steps), seed=0,
                        cache_reference=cache, device=device)
    _sync(device)
    warm_seconds = time.perf_counter() - t0
    if mode == "compile":
        compile_seconds = warm_seconds
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    run_audio = audio.first(frames)
    t0 = time.perf_counter()
    with autocast:
        out = generate_frames(model, identity, run_audio, psi[:frames], settings=settings, seed=0,
                              cache_reference=cache, device=device)
    _sync(device)
    seconds = time.perf_counter() - t0
    steps = settings.denoising_steps(total)
    return {"fps": frames * args.batch / seconds, "frames": frames, "batch": args.batch, "sampling": settings.label,
            "cache_reference": cache, "denoising_steps": steps,
            "ms_per_step": seconds / (frames * steps) * 1000, "seconds": seconds, "warmup_seconds": warm_seconds,
            "compile_seconds": compile_seconds,
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None,
            "_first_frame": out[0].float()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--preset", default="paper", help="denoiser preset (default paper: 128 px)")
    p.add_argument("--size", type=int, default=128, help="image size (default 128)")
    p.add_argument("--checkpoint", default=None, help="use a bundle's denoiser instead of random weights")
    p.add_argument("--frames", type=int, default=24, help="frames per timed run (default 24)")
    p.add_argument("--paper-frames", type=int, default=2, help="frames of the paper_literal mode (default 2)")
    p.add_argument("--batch", type=int, default=1, help="independent videos generated together (default 1)")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps of the default-sampler modes (default 10)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out-dir", default=common.RESULTS_DIR)
    p.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)   # tests: run fp32/bf16 on the CPU
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.device = "cpu"
    elif not torch.cuda.is_available() or not str(args.device).startswith("cuda"):
        common.print_json({"error": "CUDA is not available on this machine: gpu_throughput measures GPU modes "
                                    "(bf16 autocast, torch.compile, CUDA graphs) and needs a CUDA build of PyTorch "
                                    "and a GPU; run benchmarks.speed for CPU numbers",
                           "torch": torch.__version__, "cuda_build": torch.version.cuda})
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        common.print_json({"error": f"unknown modes {bad}; choose from {list(MODES)}"})
        return 2
    device = args.device
    if args.cpu_smoke and any(m in ("compile", "cudagraphs") for m in modes):
        common.print_json({"error": "--cpu-smoke runs fp32, bf16 and paper_literal only"})
        return 2
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False     # fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False
    start = time.perf_counter()
    den = build_denoiser(args, device)
    results: Dict[str, dict] = {}
    reference = None
    for mode in modes:
        try:
            r = run_mode(mode, den, args, device)
            first = r.pop("_first_frame")
            if mode == "fp32":
                reference = first
            if reference is not None and mode != "paper_literal":
                r["first_frame_mean_abs_diff_vs_fp32"] = float((first - reference).abs().mean())
            results[mode] = r
        except Exception as exc:  # noqa: BLE001 - report and go on with the next mode
            results[mode] = {"error": f"{type(exc).__name__}: {exc}"[:500],
                             "trace": traceback.format_exc().splitlines()[-3:]}
        print(f"  {mode}: {common.rounded(results[mode])}", file=sys.stderr, flush=True)
    fp32 = results.get("fp32", {}).get("fps")
    record = {"device": device, "machine": common.machine_info(device), "preset": args.preset,
              "image_size": den.config.image_size, "weights": args.checkpoint or "random (paper preset)",
              "steps": args.steps, "frames": args.frames, "batch": args.batch, "modes": results,
              "fps": {m: r.get("fps") for m, r in results.items()},
              "speedup_vs_fp32": {m: (r["fps"] / fp32 if fp32 and r.get("fps") else None) for m, r in results.items()},
              "seconds_total": time.perf_counter() - start}
    pl = results.get("paper_literal", {}).get("fps")
    if pl:
        record["speedup_vs_paper_literal"] = {m: (r["fps"] / pl if r.get("fps") else None)
                                              for m, r in results.items() if m != "paper_literal"}
    os.makedirs(args.out_dir, exist_ok=True)
    record["json"] = common.write_json(os.path.join(args.out_dir, "gpu_throughput.json"), record)
    try:
        plt = common.plt()
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        names = [m for m in results if results[m].get("fps")]
        ax.bar(names, [results[m]["fps"] for m in names])
        ax.set_yscale("log")
        ax.set_ylabel("frames per second")
        ax.set_title(f"{record['machine'].get('gpu', device)}: {den.config.image_size} px, {args.steps} steps, batch {args.batch}")
        record["plot"] = common.save_plot(fig, os.path.join(args.out_dir, "gpu_throughput.png"))
    except Exception as exc:  # noqa: BLE001 - the numbers matter more than the picture
        record["plot_error"] = str(exc)
    common.print_json(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
