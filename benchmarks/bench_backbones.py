"""Forward-latency benchmark of the registered SpineNet backbones against torchvision's ResNet-50-FPN.

Every selected backbone and the reference are timed in the same process, at batch 1, in eval mode under
``torch.inference_mode``, in fp32 and in bf16 autocast. The reference is torchvision's RetinaNet-style
ResNet-50-FPN backbone (P3-P7, 256 channels), i.e. the feature extractor SpineNet replaces in the paper.

Example::

    PYTHONPATH=src python benchmarks/bench_backbones.py --models 'spinenet49*' --repeats 3
    PYTHONPATH=src python benchmarks/bench_backbones.py --channels-last --json out/bench.json

Latencies are medians over the timed runs. Random initialisation is used (no checkpoint needed): the cost of a
dense forward does not depend on the weight values, except through denormals, which are flushed (see below).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Sequence

import torch
from torch import nn

import spinenet
from spinenet.profile import count_macs, count_params

REFERENCE_NAME = "resnet50_fpn (torchvision)"
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

# Models whose MAC count (at the requested size) exceeds this are "heavy": unless --repeats / --warmup are given
# explicitly, they get fewer runs so the default sweep stays within a few minutes on a 2-core CPU. The threshold
# is in MACs rather than a fixed model list so that it follows --size.
DEFAULT_REPEATS = 5
DEFAULT_WARMUP = 2
HEAVY_GMACS = 60.0
HEAVY_REPEATS = 3
HEAVY_WARMUP = 1
# A max/min spread above this among the timed runs of one model means something else was competing for the cores
# (on a small CPU, two OpenMP programs time-slicing the same cores can slow each other down several-fold).
NOISY_SPREAD = 1.5


@dataclass
class Row:
    """One line of the result table (also the JSON record)."""

    model: str
    params_m: float
    gmacs: float
    repeats: int
    warmup: int
    is_reference: bool = False
    # Per precision: median / min latency in milliseconds, ratio to the reference, achieved GFLOP/s.
    ms: dict[str, float] = field(default_factory=dict)
    min_ms: dict[str, float] = field(default_factory=dict)
    max_ms: dict[str, float] = field(default_factory=dict)
    ratio_to_ref: dict[str, float] = field(default_factory=dict)
    gflops: dict[str, float] = field(default_factory=dict)


def build_reference() -> nn.Module:
    """torchvision's RetinaNet-style ResNet-50-FPN backbone returning P3-P7 with 256 channels.

    ``norm_layer=nn.BatchNorm2d`` replaces torchvision's default ``FrozenBatchNorm2d``: SpineNet uses plain
    ``nn.BatchNorm2d``, so both sides pay for the same (native, unfused in eager mode) normalisation kernel.
    ``trainable_layers=5`` keeps every parameter trainable so that ``count_params`` counts the whole network,
    as it does for SpineNet.
    """
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    return resnet_fpn_backbone(
        backbone_name="resnet50",
        weights=None,
        norm_layer=nn.BatchNorm2d,
        trainable_layers=5,
        returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(256, 256),
    )


def select_models(patterns: Sequence[str] | None) -> list[str]:
    """Registered names matching any of the shell-style patterns, in registry order; all if none are given."""
    available = spinenet.list_models(task="backbone")
    if not patterns:
        return available
    # Accept both "--models a b" and "--models a,b" since either is natural on a command line.
    flat = [p.strip() for item in patterns for p in item.split(",") if p.strip()]
    unmatched = [p for p in flat if not fnmatch.filter(available, p)]
    if unmatched:
        raise ValueError(f"no registered model matches {unmatched}; known: {', '.join(available)}")
    return [name for name in available if any(fnmatch.fnmatch(name, p) for p in flat)]


def autocast_context(device: torch.device, precision: str) -> ContextManager[object]:
    """fp32 runs without autocast (a disabled autocast region would still add dispatch overhead)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def synchronizer(device: torch.device) -> Callable[[], None]:
    """CUDA kernels are asynchronous: without a sync the timer would only measure the kernel launches."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_forward(model: nn.Module, image: torch.Tensor, precision: str, warmup: int, repeats: int) -> list[float]:
    """Wall-clock seconds of each timed forward pass (after ``warmup`` untimed passes)."""
    sync = synchronizer(image.device)
    times: list[float] = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            # The autocast region is entered per pass, as a caller would: its fp32->bf16 weight casts are cached
            # only inside one region, so re-casting the weights is part of the real cost of autocast inference.
            sync()
            start = time.perf_counter()
            with autocast_context(image.device, precision):
                outputs = model(image)
            sync()
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times.append(elapsed)
            del outputs
    return times


def run_precisions(model: nn.Module, image: torch.Tensor, warmup: int, repeats: int) -> dict[str, list[float]]:
    return {prec: time_forward(model, image, prec, warmup, repeats) for prec in PRECISIONS}


def benchmark_one(name: str, build: Callable[[], nn.Module], args: argparse.Namespace, device: torch.device,
                  is_reference: bool = False) -> Row:
    """Build, count, time and release one model."""
    model = build().eval()
    # Counting runs a meta-device copy, so it is cheap and independent of the device/memory format used below.
    macs = count_macs(model, args.size)
    params = count_params(model)
    heavy = macs / 1e9 > args.heavy_gmacs
    repeats = args.repeats if args.repeats is not None else (HEAVY_REPEATS if heavy else DEFAULT_REPEATS)
    warmup = args.warmup if args.warmup is not None else (HEAVY_WARMUP if heavy else DEFAULT_WARMUP)

    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    # A fixed seed keeps the input identical across models and runs.
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, args.size, args.size, generator=generator).to(device=device,
                                                                             memory_format=memory_format)

    print(f"  {name}: {macs / 1e9:.1f} GMACs, {warmup} warm-up + {repeats} timed runs per precision ...",
          file=sys.stderr, flush=True)
    times = run_precisions(model, image, warmup, repeats)

    row = Row(model=name, params_m=params / 1e6, gmacs=macs / 1e9, repeats=repeats, warmup=warmup,
              is_reference=is_reference)
    for prec, samples in times.items():
        median_s = statistics.median(samples)
        row.ms[prec] = median_s * 1e3
        row.min_ms[prec] = min(samples) * 1e3
        row.max_ms[prec] = max(samples) * 1e3
        # One MAC is two floating-point operations (a multiply and an add).
        row.gflops[prec] = 2 * macs / median_s / 1e9

    # Large models hold hundreds of MB of weights and activations; free them before building the next one.
    del model, image
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def load_average() -> str:
    """1-minute load average (where the OS has one): a value above the thread count means shared cores."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "n/a"


def noisy_rows(rows: list[Row]) -> list[str]:
    """Models whose timed runs spread more than NOISY_SPREAD (max/min) in some precision."""
    return [r.model for r in rows
            if any(r.max_ms[p] > NOISY_SPREAD * r.min_ms[p] for p in PRECISIONS if r.min_ms.get(p))]


def environment(args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    import torchvision

    env: dict[str, object] = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "spinenet": getattr(spinenet, "__version__", "?"),
        "python": platform.python_version(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "size": args.size,
        "batch": 1,
        "channels_last": bool(args.channels_last),
        "flush_denormal": bool(args.flush_denormal),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def format_table(rows: list[Row]) -> str:
    """A fixed-width text table; ratios are (model latency) / (reference latency) in the same precision."""
    headers = ["model", "params(M)", "GMACs", "fp32 ms", "bf16 ms", "fp32 x ref", "bf16 x ref",
               "fp32 GFLOP/s", "bf16 GFLOP/s", "runs"]
    lines: list[list[str]] = []
    for r in rows:
        lines.append([
            r.model + (" *" if r.is_reference else ""),
            f"{r.params_m:.2f}",
            # Mobile models at small sizes are well below 1 GMAC: keep three significant digits for them.
            f"{r.gmacs:.2f}" if r.gmacs >= 1 else f"{r.gmacs:.3f}",
            f"{r.ms['fp32']:.1f}",
            f"{r.ms['bf16']:.1f}",
            f"{r.ratio_to_ref['fp32']:.2f}",
            f"{r.ratio_to_ref['bf16']:.2f}",
            f"{r.gflops['fp32']:.1f}",
            f"{r.gflops['bf16']:.1f}",
            f"{r.warmup}+{r.repeats}",
        ])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        # Model names left-aligned, numbers right-aligned so that decimal points line up.
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [fmt(headers), fmt(["-" * w for w in widths])]
    out.extend(fmt(line) for line in lines)
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Forward latency of SpineNet backbones vs torchvision ResNet-50-FPN (P3-P7), fp32 and bf16.")
    parser.add_argument("--models", nargs="+", default=None, metavar="PATTERN",
                        help="shell-style name patterns (space- or comma-separated); default: all registered")
    parser.add_argument("--size", type=int, default=640, help="square input size (default: 640)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed runs per model and precision (default: {DEFAULT_REPEATS}, "
                             f"or {HEAVY_REPEATS} for models above --heavy-gmacs)")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"untimed warm-up runs (default: {DEFAULT_WARMUP}, "
                             f"or {HEAVY_WARMUP} for models above --heavy-gmacs)")
    parser.add_argument("--heavy-gmacs", type=float, default=HEAVY_GMACS,
                        help=f"MAC budget (G) above which the default repeats/warm-up are lowered "
                             f"(default: {HEAVY_GMACS:g})")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--channels-last", action="store_true",
                        help="run models and inputs in torch.channels_last memory format")
    parser.add_argument("--no-flush-denormal", dest="flush_denormal", action="store_false",
                        help="keep denormal floats (by default they are flushed to zero on CPU)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.size < 32:
        parser.error("--size must be at least 32 (five stride-2 levels down to P7 need it)")
    for opt in ("repeats", "warmup"):
        value = getattr(args, opt)
        if value is not None and value < (1 if opt == "repeats" else 0):
            parser.error(f"--{opt} must be {'>= 1' if opt == 'repeats' else '>= 0'}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        names = select_models(args.models)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda requested but CUDA is not available", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.flush_denormal and device.type == "cpu":
        # Randomly initialised deep nets can drift into denormal activations, which x86 handles with a slow
        # microcode path; flushing keeps the timings about the architecture, not about the random weights.
        torch.set_flush_denormal(True)

    env = environment(args, device)
    print(f"torch {env['torch']}  torchvision {env['torchvision']}  spinenet {env['spinenet']}  "
          f"python {env['python']}")
    print(f"device {env['device']}{'  (' + str(env['gpu']) + ')' if 'gpu' in env else ''}  "
          f"threads {env['threads']}  cpu capability {env['cpu_capability']}")
    print(f"input 1x3x{args.size}x{args.size}  channels_last {env['channels_last']}  "
          f"flush_denormal {env['flush_denormal']}  eval + inference_mode, bf16 = {device.type} autocast")
    print(f"load average at start: {load_average()}")
    if args.repeats is None or args.warmup is None:
        print(f"note: models above {args.heavy_gmacs:g} GMACs use {HEAVY_WARMUP} warm-up + {HEAVY_REPEATS} timed "
              f"runs (others {DEFAULT_WARMUP} + {DEFAULT_REPEATS}) to bound the runtime; "
              "pass --repeats/--warmup to override")
    print(flush=True)

    wall_start = time.perf_counter()
    print("benchmarking:", file=sys.stderr, flush=True)
    # The reference runs first so every SpineNet row can be normalised by it.
    reference = benchmark_one(REFERENCE_NAME, build_reference, args, device, is_reference=True)
    rows = [reference]
    for name in names:
        rows.append(benchmark_one(name, lambda n=name: spinenet.create_model(n), args, device))
    for row in rows:
        row.ratio_to_ref = {prec: row.ms[prec] / reference.ms[prec] for prec in PRECISIONS}
    wall = time.perf_counter() - wall_start

    print(format_table(rows))
    print()
    print("* reference: torchvision resnet_fpn_backbone('resnet50', returned_layers=[2, 3, 4], "
          "LastLevelP6P7(256, 256)), nn.BatchNorm2d")
    print("ms = median latency of the timed runs; 'x ref' = latency / reference latency in the same precision "
          "(< 1 is faster); GFLOP/s = 2 * MACs / median seconds; runs = warm-up + timed")
    print(f"total benchmark time: {wall:.1f} s  (load average at end: {load_average()})")
    noisy = noisy_rows(rows)
    if noisy:
        print(f"warning: run-to-run spread above {NOISY_SPREAD:g}x (max/min) for {', '.join(noisy)}: "
              "another process was probably using the cores; treat those timings as noisy")

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"environment": env, "wall_seconds": wall, "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
