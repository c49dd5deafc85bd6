"""Speed of SpineNet on this machine, against its convolution peak and torchvision, in one process.

Measured in one run, so every ratio compares numbers taken under the same load:

1. the CPU, its flags (AVX-512, native bf16, AMX) and the load average;
2. the **conv peak**: one 3x3 convolution 256 -> 256 channels at 160x160, batch 1, channels_last, fp32 and bf16;
3. **inference** (batch 1, eval, ``torch.inference_mode``) of SpineNet-49S, 49, 96 (backbones) and
   RetinaNet-SpineNet-49 (backbone + head, no post-processing) at their default sizes, against torchvision's
   ResNet-50-FPN (P3-P7, the backbone SpineNet replaces; + torchvision's RetinaNet head for the detector row) at
   the same size. Variants: ``default`` (``model.eval()``; bf16 in channels_last, as the library runs it) and
   ``optimised`` (:func:`spinenet.optimize_for_inference`; the reference gets torch.fx's conv-BN fusion and
   channels_last), each ``eager`` or ``compiled`` (``torch.compile``, inductor), each fp32 or bf16 autocast;
4. **training**: a RetinaNet step (forward + backward + SGD, batch 8 at 512 px by default) against torchvision's
   RetinaNet-ResNet-50-FPN, and classifier training images/s (SpineNet-49 at 224 px) against ResNet-50, both per
   multiply-add (:mod:`spinenet.profile` counts them for both sides);
5. optionally (``--tf-python``) the official TensorFlow SpineNet-49 (Model Garden, ``tf.function``) run by another
   Python that has ``tf-models-official``.

It prints a table (ms, GFLOP/s = 2 x multiply-adds / s, share of the measured peak, ratio to the reference in the
same setting; < 1 is faster) and writes ``bench_speed.csv`` and ``bench_speed.png`` under ``--out``. Weights are
random (cost does not depend on values once denormals are flushed, which they are). Examples::

    python benchmarks/bench_speed.py --quick                       # the docs/performance.md table, ~10 min
    python benchmarks/bench_speed.py --models spinenet49 --no-train --modes eager
    python benchmarks/bench_speed.py --tf-python ~/tf-env/bin/python
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

import spinenet
from spinenet.profile import count_macs

INFERENCE_MODELS = ("spinenet49s", "spinenet49", "spinenet96", "retinanet_spinenet49")
DEFAULT_SIZES = {"spinenet49s": 640, "spinenet49": 640, "spinenet96": 1024, "retinanet_spinenet49": 640}
PEAK_SHAPE = (256, 160)  # channels, side: one 3x3 conv of the size SpineNet's level-2/3 blocks run
QUICK = {"models": ("spinenet49", "retinanet_spinenet49"), "compiled_models": ("spinenet49",),
         "compiled_variants": ("optimised",), "repeats": 3,
         "train_batch": 2, "classifier_batch": 8}


@dataclass
class Row:
    """One measurement (also one CSV line)."""

    section: str  # peak | inference | train
    model: str
    precision: str
    variant: str = ""  # default | optimised
    mode: str = ""  # eager | compiled
    size: int = 0
    batch: int = 1
    ms: float = float("nan")
    gmacs: float = float("nan")  # per step (all images, forward only: the convention of spinenet.profile)
    gflops: float = float("nan")
    share_of_peak: float = float("nan")
    reference: str = ""
    ratio_to_reference: float = float("nan")
    images_per_s: float = float("nan")
    load: float = float("nan")
    note: str = ""
    samples: list[float] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ machine
def cpu_info() -> dict[str, object]:
    """CPU model name and the flags that decide the fast paths (from /proc/cpuinfo where there is one)."""
    name, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("unknown", platform.processor()):
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"cpu": name, "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags, "amx_tile": "amx_tile" in flags,
            "native_bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
            "torch_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return float("nan")


# ------------------------------------------------------------------------------------------------ timing
def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def time_calls(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Seconds of each timed call after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def conv_peak(precision: str, repeats: int) -> Row:
    """GFLOP/s of one 3x3 conv 256 -> 256 at 160x160 in channels_last (best run: the machine's attainable rate)."""
    channels, side = PEAK_SHAPE
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(1, channels, side, side).to(dtype=dtype, memory_format=torch.channels_last)
    macs = channels * channels * 9 * side * side
    with torch.inference_mode():
        samples = time_calls(lambda: conv(x), 2, max(repeats, 5))
    best = min(samples)
    return Row("peak", f"conv3x3 {channels}->{channels} @{side}", precision, "", "eager", side, 1, best * 1e3,
               macs / 1e9, 2 * macs / best / 1e9, 1.0, load=load_average(), note="best run", samples=samples)


# ------------------------------------------------------------------------------------------------ models
class DenseDetector(nn.Module):
    """torchvision detector's backbone + head on a tensor (no resize, anchors or post-processing): its dense
    compute, as ``macs_module()`` is for SpineNet's detectors."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor):
        return self.head(list(self.backbone(x).values()))


def reference_fpn() -> nn.Module:
    """torchvision's ResNet-50-FPN returning P3-P7 (256 channels), plain BatchNorm: what SpineNet replaces."""
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    return resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5,
                               returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))


def torchvision_retinanet(size: int, num_classes: int = 91) -> nn.Module:
    from torchvision.models.detection import retinanet_resnet50_fpn

    # no weights: plain BatchNorm2d and every layer trainable, like SpineNet
    return retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes, min_size=size,
                                  max_size=size)


def build_inference(name: str, size: int) -> tuple[nn.Module, nn.Module, str]:
    """(SpineNet module, reference module, reference name) computing dense outputs at ``size``."""
    if name.startswith("retinanet_"):
        from spinenet.models import create_detector

        det = create_detector(name, image_size=size)
        ref = torchvision_retinanet(size)
        return det.macs_module().eval(), DenseDetector(ref.backbone, ref.head).eval(), \
            "torchvision RetinaNet-R50-FPN (backbone+head)"
    return spinenet.create_model(name).eval(), reference_fpn().eval(), "torchvision R50-FPN P3-P7"


def fx_fused(model: nn.Module) -> nn.Module:
    """The reference's optimised form: torch.fx conv-BN fusion (torchvision's graphs trace) and channels_last."""
    from torch.fx.experimental.optimization import fuse

    if isinstance(model, DenseDetector):
        fused = DenseDetector(fuse(model.backbone), model.head)
    else:
        fused = fuse(model)
    return fused.eval().to(memory_format=torch.channels_last)


def variant_of(model: nn.Module, variant: str, precision: str, is_reference: bool) -> nn.Module:
    if variant == "optimised":
        from spinenet.layers.fuse import optimize_for_inference

        return fx_fused(model) if is_reference else optimize_for_inference(model)
    if precision == "bf16":  # what the library does wherever bf16 is requested on a CPU
        return copy.deepcopy(model).to(memory_format=torch.channels_last)
    return model


def peak_call(precision: str) -> Callable[[], None]:
    """One call of the conv-peak convolution (see :func:`conv_peak`)."""
    channels, side = PEAK_SHAPE
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(1, channels, side, side).to(dtype=dtype, memory_format=torch.channels_last)

    def call() -> None:
        with torch.inference_mode():
            conv(x)

    return call


def inference_call(model: nn.Module, size: int, precision: str, mode: str) -> tuple[Callable[[], None], str]:
    """A forward of ``model`` (compiled first for ``mode="compiled"``; the note gives the compile time)."""
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    note = ""
    fn = model
    if mode == "compiled":
        torch._dynamo.reset()
        fn = torch.compile(model)
        start = time.perf_counter()
        with torch.inference_mode(), autocast(precision):
            fn(x)
        note = f"compile {time.perf_counter() - start:.0f} s"

    def call() -> None:
        with torch.inference_mode(), autocast(precision):
            fn(x)

    return call, note


def interleaved(calls: Sequence[Callable[[], None]], repeats: int) -> list[list[float]]:
    """Seconds per call, the calls timed in turn (A B C A B C ...) after one warm-up each: on a shared machine a
    change of load then hits every call alike, so their ratios stay meaningful."""
    for call in calls:
        call()
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for call, out in zip(calls, samples):
            start = time.perf_counter()
            call()
            out.append(time.perf_counter() - start)
    return samples


def inference_rows(args: argparse.Namespace, peaks: dict[str, float]) -> list[Row]:
    """Per setting, the SpineNet model, the reference and the conv peak are timed in turn; the share of the peak
    is against the peak convolution's median in that same window (``peaks`` is only the start-up reading)."""
    rows: list[Row] = []
    for name in args.models:
        size = args.size or DEFAULT_SIZES.get(name, 640)
        base, base_ref, ref_name = build_inference(name, size)
        macs = count_macs(base, size) / 1e9
        ref_macs = count_macs(base_ref, size) / 1e9
        for precision in args.precisions:
            peak = peak_call(precision)
            peak_gmacs = PEAK_SHAPE[0] ** 2 * 9 * PEAK_SHAPE[1] ** 2 / 1e9
            for variant in args.variants:
                for mode in args.modes:
                    if mode == "compiled" and (name not in args.compiled_models
                                               or variant not in args.compiled_variants):
                        continue
                    print(f"  inference {name} {precision} {variant} {mode} ...", file=sys.stderr, flush=True)
                    ours, note = inference_call(variant_of(base, variant, precision, False), size, precision, mode)
                    theirs, ref_note = inference_call(variant_of(base_ref, variant, precision, True), size,
                                                      precision, mode)
                    s_ours, s_ref, s_peak = interleaved([ours, theirs, peak], args.repeats)
                    local_peak = 2 * peak_gmacs / statistics.median(s_peak)
                    load = load_average()
                    for is_ref, samples, n, gm, nt in ((False, s_ours, name, macs, note),
                                                       (True, s_ref, ref_name, ref_macs, ref_note)):
                        ms = statistics.median(samples) * 1e3
                        gflops = 2 * gm / (ms / 1e3)
                        rows.append(Row("inference", n, precision, variant, mode, size, 1, ms, gm, gflops,
                                        gflops / local_peak, "" if is_ref else ref_name,
                                        float("nan") if is_ref else ms / (statistics.median(s_ref) * 1e3),
                                        1e3 / ms, load, f"{nt}; peak here {local_peak:.0f} GFLOP/s".lstrip("; "),
                                        samples))
                    del ours, theirs
                    gc.collect()
        del base, base_ref
        gc.collect()
    return rows


# ------------------------------------------------------------------------------------------------ training
def random_targets(batch: int, size: int, num_classes: int, gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
    targets = []
    for _ in range(batch):
        xy = torch.rand(6, 2, generator=gen) * (size * 0.7)
        wh = torch.rand(6, 2, generator=gen) * (size * 0.25) + 16
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).clamp(max=size - 1),
                        "labels": torch.randint(1, num_classes, (6,), generator=gen)})
    return targets


def train_step_fn(model: nn.Module, inputs, targets, precision: str) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> None:
        with autocast(precision):
            out = model(inputs, targets)
        loss = sum(out.values()) if isinstance(out, dict) else out
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


class ClassifierLoss(nn.Module):
    """torchvision classifier with the same call as SpineNetClassifier: ``(images, labels) -> {"loss"}``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.cross_entropy(self.net(images).float(), labels)}


def training_rows(args: argparse.Namespace, peaks: dict[str, float]) -> list[Row]:
    from torchvision.models import resnet50

    from spinenet.models import create_classifier, create_detector

    rows: list[Row] = []
    gen = torch.Generator().manual_seed(0)
    size, batch = args.train_size, args.train_batch
    cls_size, cls_batch = 224, args.classifier_batch
    det_images = [torch.rand(3, size, size, generator=gen) for _ in range(batch)]
    det_targets = random_targets(batch, size, 91, gen)
    cls_images = torch.rand(cls_batch, 3, cls_size, cls_size, generator=gen)
    cls_labels = torch.randint(0, 1000, (cls_batch,), generator=gen)

    def spinenet_det() -> tuple[nn.Module, float]:
        det = create_detector("retinanet_spinenet49", image_size=size)
        return det, count_macs(det.macs_module(), size) / 1e9

    def tv_det() -> tuple[nn.Module, float]:
        det = torchvision_retinanet(size)
        return det, count_macs(DenseDetector(det.backbone, det.head), size) / 1e9

    def spinenet_cls() -> tuple[nn.Module, float]:
        net = create_classifier("spinenet49", 1000)
        return net, count_macs(net, cls_size) / 1e9

    def tv_cls() -> tuple[nn.Module, float]:
        net = resnet50(num_classes=1000)
        return ClassifierLoss(net), count_macs(net, cls_size) / 1e9

    cases = [("RetinaNet-SpineNet-49", "torchvision RetinaNet-R50-FPN", spinenet_det, tv_det, det_images,
              det_targets, size, batch),
             ("SpineNet-49 classifier", "torchvision ResNet-50", spinenet_cls, tv_cls, cls_images, cls_labels,
              cls_size, cls_batch)]
    for name, ref_name, ours, theirs, inputs, targets, sz, bs in cases:
        for precision in args.precisions:
            print(f"  training {name} {precision} batch {bs} at {sz} px ...", file=sys.stderr, flush=True)
            steps, macs = [], []
            for build in (ours, theirs):
                torch.manual_seed(0)
                model, gmacs = build()
                model.train()
                if precision == "bf16":  # as the trainer runs bf16 on a CPU
                    model = model.to(memory_format=torch.channels_last)
                steps.append(train_step_fn(model, inputs, targets, precision))
                macs.append(gmacs * bs)
            s_ours, s_ref, s_peak = interleaved([*steps, peak_call(precision)], args.train_repeats)
            local_peak = 2 * PEAK_SHAPE[0] ** 2 * 9 * PEAK_SHAPE[1] ** 2 / 1e9 / statistics.median(s_peak)
            ref_per_mac = statistics.median(s_ref) / macs[1]
            load = load_average()
            for is_ref, samples, gmacs in ((False, s_ours, macs[0]), (True, s_ref, macs[1])):
                ms = statistics.median(samples) * 1e3
                gflops = 3 * 2 * gmacs / (ms / 1e3)  # forward + backward ~ 3x the forward's multiply-adds
                rows.append(Row("train", ref_name if is_ref else name, precision, "default", "eager", sz, bs, ms,
                                gmacs, gflops, gflops / local_peak, "" if is_ref else ref_name,
                                float("nan") if is_ref else (ms / 1e3 / gmacs) / ref_per_mac, bs * 1e3 / ms,
                                load, f"x ref per multiply-add; peak here {local_peak:.0f} GFLOP/s", samples))
            del steps
            gc.collect()
    return rows


# ------------------------------------------------------------------------------------------------ TensorFlow
TF_SCRIPT = r"""
import json, statistics, sys, time
size, threads, repeats = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(1)
from official.vision.modeling.backbones import spinenet
model = spinenet.SpineNet(input_specs=tf.keras.layers.InputSpec(shape=[None, size, size, 3]), model_id="49",
                          min_level=3, max_level=7)
run = tf.function(lambda x: model(x, training=False))
x = tf.random.normal([1, size, size, 3])
run(x)
samples = []
for _ in range(repeats):
    start = time.perf_counter(); out = run(x); [v.numpy() for v in out.values()]
    samples.append(time.perf_counter() - start)
print(json.dumps({"ms": statistics.median(samples) * 1e3, "samples": samples, "tf": tf.__version__}))
"""


def check_tf_python(path: str) -> None:
    """Fail before the long run if ``path`` is not a Python with TensorFlow and tf-models-official."""
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        raise ValueError(f"--tf-python {path}: not an executable file; give the python of an environment with "
                         "tensorflow and tf-models-official (pip install tf-models-official)")
    probe = subprocess.run([path, "-c", "import tensorflow, official.vision.modeling.backbones.spinenet"],
                           capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"--tf-python {path}: cannot import TensorFlow Model Garden's SpineNet ({last}); install "
                         "tensorflow and tf-models-official in that environment")


def tf_row(args: argparse.Namespace, peaks: dict[str, float], macs: float) -> Row:
    size = DEFAULT_SIZES["spinenet49"]
    print("  TensorFlow SpineNet-49 ...", file=sys.stderr, flush=True)
    done = subprocess.run([args.tf_python, "-c", TF_SCRIPT, str(size), str(torch.get_num_threads()),
                           str(args.repeats)], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"--tf-python run failed: {done.stderr.strip()[-500:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    ms = result["ms"]
    gflops = 2 * macs / (ms / 1e3)
    return Row("inference", "TF Model Garden SpineNet-49 (tf.function)", "fp32", "official", "tf.function", size, 1,
               ms, macs, gflops, gflops / peaks["fp32"], load=load_average(), note=f"tensorflow {result['tf']}",
               samples=result["samples"])


# ------------------------------------------------------------------------------------------------ profile
def profile_outside_conv(args: argparse.Namespace) -> None:
    """torch.profiler on each selected model and variant (``--precisions``' first, eager): the share of the
    forward's time spent outside ``aten::conv2d`` calls (their children, e.g. weight reorders and bias copies,
    count as convolution), and the costliest other operators."""
    from torch.profiler import ProfilerActivity, profile, record_function

    precision = args.precisions[0]
    for name in args.models:
        size = args.size or DEFAULT_SIZES.get(name, 640)
        base, _, _ = build_inference(name, size)
        for variant in args.variants:
            model = variant_of(base, variant, precision, False)
            x = torch.randn(1, 3, size, size)
            with torch.inference_mode(), autocast(precision):
                model(x)
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(args.repeats):
                        with record_function("forward"):
                            model(x)
            total, conv, outside = 0.0, 0.0, {}
            for event in prof.events():
                chain, parent = [], event.cpu_parent
                while parent is not None:
                    chain.append(parent.name)
                    parent = parent.cpu_parent
                if event.name == "forward":
                    total += event.cpu_time_total
                elif event.name == "aten::conv2d" and "aten::conv2d" not in chain:
                    conv += event.cpu_time_total
                elif "aten::conv2d" not in chain and "forward" in chain:  # self time of the rest
                    outside[event.name] = outside.get(event.name, 0.0) + event.self_cpu_time_total
            others = sorted(outside.items(), key=lambda kv: -kv[1])[:6]
            detail = ", ".join(f"{k.removeprefix('aten::')} {100 * v / total:.1f}%" for k, v in others)
            print(f"profile {name} {precision} {variant}: {total / args.repeats / 1e3:.0f} ms per forward, "
                  f"{100 * (1 - conv / total):.1f}% outside conv2d (load {load_average()}); largest others: "
                  f"{detail}", flush=True)
            del model


# ------------------------------------------------------------------------------------------------ report
def fmt(value: float, spec: str) -> str:
    return "" if value != value else format(value, spec)  # NaN -> blank


def table(rows: list[Row]) -> str:
    headers = ["section", "model", "prec", "variant", "mode", "size", "batch", "ms", "GMACs", "GFLOP/s", "peak",
               "x ref", "load", "note"]
    lines = [[r.section, r.model, r.precision, r.variant, r.mode, str(r.size), str(r.batch), fmt(r.ms, ".1f"),
              fmt(r.gmacs, ".2f"), fmt(r.gflops, ".1f"), fmt(r.share_of_peak, ".2f"), fmt(r.ratio_to_reference, ".2f"),
              fmt(r.load, ".2f"), r.note] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def write_csv(rows: list[Row], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        names = [k for k in asdict(rows[0]) if k != "samples"] + ["samples_ms"]
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for r in rows:
            record = {k: v for k, v in asdict(r).items() if k != "samples"}
            record["samples_ms"] = " ".join(f"{s * 1e3:.1f}" for s in r.samples)
            writer.writerow(record)
    os.replace(tmp, path)


def write_png(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.section != "peak" and r.share_of_peak == r.share_of_peak]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(shown) + 1.5))
    labels = [f"{r.section[:5]} {r.model[:34]} {r.precision} {r.variant} {r.mode}" for r in shown]
    colors = ["tab:gray" if not r.reference and r.section != "peak" else
              ("tab:orange" if r.precision == "bf16" else "tab:blue") for r in shown]
    ax.barh(range(len(shown)), [r.share_of_peak for r in shown], color=colors)
    ax.set_yticks(range(len(shown)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of the measured conv peak (same precision); grey: reference")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ main
def split(values: Sequence[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="SpineNet-49 and RetinaNet-SpineNet-49 only, compiled rows for optimised SpineNet-49 only, "
                        "3 repeats, "
                        "training at batch 2 (RetinaNet) / 8 (classifier): the docs table in ~10 minutes")
    p.add_argument("--models", nargs="+", help=f"inference models (default: {', '.join(INFERENCE_MODELS)})")
    p.add_argument("--compiled-models", nargs="+", help="models that get compiled rows (default: all selected)")
    p.add_argument("--precisions", nargs="+", default=["fp32,bf16"], help="fp32 and/or bf16 (default both)")
    p.add_argument("--variants", nargs="+", default=["default,optimised"], help="default and/or optimised")
    p.add_argument("--modes", nargs="+", default=["eager,compiled"], help="eager and/or compiled")
    p.add_argument("--size", type=int, help="one input size for every inference model (default: each its own)")
    p.add_argument("--repeats", type=int, help="timed inference runs (default 5; --quick 3), after 1 warm-up")
    p.add_argument("--no-inference", action="store_true", help="skip the inference rows")
    p.add_argument("--no-train", action="store_true", help="skip the training rows")
    p.add_argument("--train-size", type=int, default=512, help="RetinaNet training image size (default 512)")
    p.add_argument("--train-batch", type=int, help="RetinaNet training batch (default 8; --quick 2)")
    p.add_argument("--classifier-batch", type=int, help="classifier training batch at 224 px (default 32; --quick 8)")
    p.add_argument("--train-repeats", type=int, default=2, help="timed training steps after 1 warm-up (default 2)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--tf-python", metavar="PATH", help="a python with tensorflow + tf-models-official: adds the "
                   "official TF SpineNet-49 (tf.function, fp32) and the ratio to it")
    p.add_argument("--profile", action="store_true", help="only print torch.profiler's share of time outside "
                   "convolutions per model and variant (first precision, eager), then exit")
    p.add_argument("--out", type=Path, default=Path("out/bench_speed"), help="folder for the CSV and PNG")
    args = p.parse_args(argv)
    args.models = split(args.models) or list(QUICK["models"] if args.quick else INFERENCE_MODELS)
    args.compiled_models = split(args.compiled_models) or (list(QUICK["compiled_models"]) if args.quick
                                                           else list(args.models))
    args.compiled_variants = list(QUICK["compiled_variants"]) if args.quick else list(split(args.variants))
    args.precisions, args.variants, args.modes = split(args.precisions), split(args.variants), split(args.modes)
    for what, values, allowed in (("precisions", args.precisions, ("fp32", "bf16")),
                                  ("variants", args.variants, ("default", "optimised")),
                                  ("modes", args.modes, ("eager", "compiled"))):
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            p.error(f"--{what} {bad or values}: expected some of {', '.join(allowed)}")
    from spinenet.models import list_detectors

    unknown = [m for m in args.models if m not in spinenet.list_models() and m not in list_detectors()]
    if unknown:
        p.error(f"--models {unknown}: not registered backbones or detectors (spinenet list)")
    args.repeats = args.repeats or (QUICK["repeats"] if args.quick else 5)
    args.train_batch = args.train_batch or (QUICK["train_batch"] if args.quick else 8)
    args.classifier_batch = args.classifier_batch or (QUICK["classifier_batch"] if args.quick else 32)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tf_python:
        try:
            check_tf_python(args.tf_python)
        except ValueError as err:
            print(f"bench_speed: error: {err}", file=sys.stderr)
            return 2
    torch.set_flush_denormal(True)
    if args.profile:
        profile_outside_conv(args)
        return 0
    info = cpu_info()
    wall = time.perf_counter()
    print(f"CPU: {info['cpu']}  threads {info['threads']}  torch {torch.__version__}  capability "
          f"{info['torch_capability']}")
    print(f"flags: avx512f={info['avx512f']} avx512_bf16={info['avx512_bf16']} amx_bf16={info['amx_bf16']} "
          f"amx_tile={info['amx_tile']} -> native bf16: {'yes (AMX)' if info['amx_bf16'] else 'yes (AVX-512 BF16)' if info['native_bf16'] else 'no (emulated)'}")
    print(f"load average at start: {load_average()}", flush=True)

    rows = [conv_peak(p, args.repeats) for p in ("fp32", "bf16")]
    peaks = {r.precision: r.gflops for r in rows}
    print(f"conv peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s (channels_last)",
          flush=True)
    if not args.no_inference:
        rows += inference_rows(args, peaks)
    if args.tf_python:
        macs = count_macs(spinenet.create_model("spinenet49"), DEFAULT_SIZES["spinenet49"]) / 1e9
        tf = tf_row(args, peaks, macs)
        for r in rows:
            if r.section == "inference" and r.model == "spinenet49" and r.precision == "fp32":
                r.note = (r.note + "; " if r.note else "") + f"x TF {r.ms / tf.ms:.2f}"
        rows.append(tf)
    if not args.no_train:
        rows += training_rows(args, peaks)
    print()
    print(table(rows))
    print()
    print("ms: median of the timed runs (peak: best); GFLOP/s = 2 x multiply-adds / s (training: 3 x the forward's); "
          "peak = share of the conv peak in the same precision; x ref = time / reference time in the same setting "
          "(training: per multiply-add); < 1 is faster")
    print(f"total {time.perf_counter() - wall:.0f} s; load average at end: {load_average()}")
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "bench_speed.csv")
    write_png(rows, args.out / "bench_speed.png", f"{info['cpu']}, {info['threads']} threads, torch {torch.__version__}")
    (args.out / "environment.json").write_text(json.dumps({**info, "torch": torch.__version__}, indent=2) + "\n")
    print(f"wrote {args.out / 'bench_speed.csv'} and {args.out / 'bench_speed.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
