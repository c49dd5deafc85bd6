"""The ``spinenet`` command: a thin shell over the library (heavy imports happen inside subcommands)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from .constants import RECIPE_TASKS


def parse_size(text: str) -> tuple[int, int]:
    """``640`` -> (640, 640); ``512x768`` -> (512, 768) as (height, width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not H or HxW (e.g. 640 or 512x768)") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size {text!r} is not H or HxW with positive integers")
    return parts[0], parts[1]


# the registry's task names and the engine task that trains, evaluates and reads data for them, plus detection
# (both detectors): `train --task`, `list --datasets --task`
TRAIN_TASKS = {**RECIPE_TASKS, "detection": "detection"}


CHECKPOINT_HELP = ("a training checkpoint (RUN/checkpoints/final.pt) or a spinenet-weights/1 .safetensors file "
                   "(`spinenet convert`, spinenet.save_weights); a weights file has no recipe: fp32, the model's "
                   "image_size, the task's default evaluation settings (docs/training.md)")


def cmd_list(args: argparse.Namespace) -> int:
    from .registry import get_entry, list_models

    if args.datasets:
        return _list_datasets(args)
    for name in list_models(args.pattern, task=args.task):
        e = get_entry(name)
        print(f"{name:32s} {e.task:14s} {e.description} (input {e.default_size})")
    return 0


def _list_datasets(args: argparse.Namespace) -> int:
    """The named datasets of the catalog (``--data`` specs), with their task and the files they read."""
    from fnmatch import fnmatch

    from .data.catalog import TASKS, get_dataset_entry, list_datasets

    if args.task is not None and args.task not in TRAIN_TASKS:
        raise ValueError(f"--task {args.task} has no datasets; with --datasets use one of {', '.join(TASKS)}")
    tasks = [TRAIN_TASKS[args.task]] if args.task else list(TASKS)
    for task in tasks:
        for spec in list_datasets(task):
            if args.pattern is None or fnmatch(spec, args.pattern):
                print(f"{spec:24s} {task:14s} {get_dataset_entry(spec.split(':')[0], task).source}")
    return 0


def _build(name: str, flavor: str | None):
    """A model on the meta device from a registered name or an architecture file."""
    import os

    from .profile import on_meta
    from .registry import create_model, get_entry, get_model_def

    if os.path.isfile(name):
        from .specs import Architecture

        arch = Architecture.load(name)
        base = "spinenet_mobile49" if arch.family == "mobile" else "spinenet49"
        return on_meta(lambda: create_model(base, block_specs=arch, flavor=flavor)), get_model_def(base).default_size
    entry = get_entry(name)
    overrides = {"flavor": flavor} if flavor else {}
    return on_meta(lambda: create_model(name, **overrides)), entry.default_size


def _flavor(model) -> str:
    return (model.graph if hasattr(model, "graph") else model.backbone.graph).flavor


def cmd_summary(args: argparse.Namespace) -> int:
    from .profile import count_macs, count_params
    from .registry import list_models

    rows = []
    for name in args.models or list_models(task="backbone"):
        model, default = _build(name, args.flavor)
        size = args.size or (default, default)
        counted = model.macs_module() if hasattr(model, "macs_module") else model  # detectors: backbone + head
        # Mask R-CNN: + RoI heads at 1000 proposals / 100 masks (the zoo's convention)
        macs = model.total_macs(size) if hasattr(model, "total_macs") else count_macs(counted, size)
        rows.append({"model": name, "params": count_params(model), "macs": macs,
                     "size": list(size), "flavor": _flavor(model)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':22s} {'flavor':13s} {'input':>10s} {'params':>14s} {'MACs (G)':>10s}")
    for r in rows:
        h, w = r["size"]
        print(f"{r['model']:22s} {r['flavor']:13s} {f'{h}x{w}':>10s} {r['params']:>14,d} {r['macs'] / 1e9:>10.3f}")
    print("MACs: multiply-adds of conv and linear layers (the paper's 'FLOPs'); params: trainable.")
    return 0


def cmd_draw(args: argparse.Namespace) -> int:
    from .draw import draw_model

    overrides = {"flavor": args.flavor} if args.flavor else {}
    path = draw_model(args.model, args.output, **overrides)
    print(f"wrote {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import os

    from .engine import Trainer, get_recipe, parse_overrides
    from .engine.distributed import cleanup_distributed, init_distributed, launch_local, python_module_command, \
        strip_nproc
    from .tasks import get_task

    if args.nproc is not None and "RANK" not in os.environ:  # the launcher: N copies of this command, DDP
        return launch_local(args.nproc, python_module_command(strip_nproc(args.argv)))
    args.task = TRAIN_TASKS[args.task or _model_task(args.model)]
    base = get_recipe(args.recipe or DEFAULT_RECIPES[args.task]).for_task(args.task)  # smoke serves every task
    recipe = parse_overrides(base, [*args.overrides, *(["optim.compile=true"] if args.compile else [])])
    if args.task == "detection":
        task_kwargs = {"classes": args.classes} if args.classes else {}
    elif args.classes:
        raise ValueError(f"--classes selects a class mode of the built-in detection sets; not for --task {args.task}")
    else:
        task_kwargs = {"report_dir": args.out}  # confusion matrix / overlay PNGs beside metrics.csv
    task = get_task(args.task, model=args.model, data=args.data, val_data=args.val_data, **task_kwargs)
    dist, device = init_distributed(args.device)  # torchrun / --nproc environment; a no-op for one process
    try:
        trainer = Trainer(task, recipe, args.out, device=device, resume=args.resume, dist=dist)
        metrics = trainer.fit()
    finally:
        cleanup_distributed()
    if not dist.is_main:
        return 0
    if metrics:
        print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    print(f"checkpoints, metrics.csv and curves.png in {args.out}")
    return 0


DEFAULT_RECIPES = {"detection": "trees-cpu", "classification": "fashion-mnist-cpu", "segmentation": "nuclei-cpu"}


def _model_task(name: str) -> str:
    """The training task of a registered task model (``--task`` left out); a backbone name needs ``--task``."""
    from .registry import get_entry

    task = get_entry(name).task
    if task not in TRAIN_TASKS:
        raise ValueError(f"--model {name} is a {task}; give --task (retinanet, maskrcnn, classification or "
                         "segmentation) or a task model's name (`spinenet list --task TASK`)")
    return task


def _prepare(args: argparse.Namespace, optimize: bool):
    """The model transform of eval / predict: ``optimize_for_inference`` when ``optimize``, then ``--compile``."""
    from .layers.fuse import compile_dense, optimize_for_inference

    def prepare(model):
        model = optimize_for_inference(model, inplace=True) if optimize else model
        return compile_dense(model) if args.compile else model

    return prepare


def cmd_eval(args: argparse.Namespace) -> int:
    from .tasks import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.data, device=args.device, out=args.out,
                                 image_size=args.image_size, classes=args.classes,
                                 prepare=_prepare(args, args.optimize))
    print("\n".join(result.lines))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .tasks import predict_checkpoint

    result = predict_checkpoint(args.checkpoint, args.images, out=args.out, device=args.device,
                                image_size=args.image_size, score_thresh=args.score_thresh,
                                overwrite=args.overwrite, prepare=_prepare(args, not args.no_optimize))
    print("\n".join(result.lines))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert.api import convert_checkpoint, parse_set
    from .convert.presets import PRESETS, get_preset, status

    if args.list_presets:
        for p in PRESETS.values():
            print(f"{p.name:26s} {p.source:12s} {p.task:14s} {p.model:30s} {p.metric}")
            print(f"    {status(p) if p.supported else 'not supported: ' + p.note}")
        return 0
    if not args.checkpoint or not args.output:
        raise ValueError("give CKPT and -o OUT.safetensors (or --list-presets)")
    result = convert_checkpoint(args.checkpoint, args.output, source=args.source, model=args.model, task=args.task,
                                num_classes=args.num_classes, activation=args.activation, bn_eps=args.bn_eps,
                                overrides=parse_set(args.set), preset=args.preset)
    s = result.settings
    print(f"{s['task']} {s['model']} from {s['source']} checkpoint {result.checkpoint}: "
          f"activation={s.get('activation') or 'default'} bn_eps={s.get('bn_eps')} bn_momentum={s.get('bn_momentum')}")
    print(result.report.summary())
    slots = [k for k in result.report.unused if k.rsplit("/", 1)[-1] in ("Momentum", "ExponentialMovingAverage")]
    if slots:
        print(f"  of the unused: {len(slots)} optimizer/moving-average slots (e.g. {slots[0]})")
    for key in [k for k in result.report.unused if k not in set(slots)][:10]:
        print(f"  unused: {key}")
    if args.preset:
        print(f"{args.preset} against the official code in CI: {status(get_preset(args.preset))}")
    print(f"wrote {result.path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import describe, export, load_for_export

    net, task, size = load_for_export(args.model, args.size)
    if not args.no_optimize:
        from .layers.fuse import optimize_for_inference

        net = optimize_for_inference(net, inplace=True)
    path = export(net, args.output, args.format, size, task=task, pre_nms_top_k=args.pre_nms_top_k)
    print(f"exported {describe(task, size)} to {path}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .engine.recipes import _auto
    from .search.runner import Search, SearchConfig

    def parse(items: list[str], what: str) -> dict:
        out: dict = {}
        for item in items:
            if "=" not in item:
                raise ValueError(f"{what} {item!r} is not key=value")
            key, value = item.split("=", 1)
            out[key.strip()] = _auto(value)
        return out

    config = None
    if not args.resume or args.space:
        if not (args.space and args.strategy):
            raise ValueError("a new search needs --space and --strategy")
        reward_options = parse(args.options, "reward option")
        if args.device:
            reward_options["device"] = args.device
        config = SearchConfig(args.space, args.strategy, args.reward, reward_options,
                              parse(args.strategy_option or [], "--strategy-option"), seed=args.seed)
    search = Search(args.out, config, trials=args.trials, workers=args.workers, address=args.address,
                    resume=args.resume, threads=args.threads)
    best = search.run(progress=not args.quiet)
    if best is None:
        print(f"no successful trial; journal in {args.out}/journal.sqlite")
        return 1
    print(f"best: trial {best.id} reward {best.reward:.4f}; {args.out}/best.json, rewards.png, trials.csv, "
          f"journal.sqlite")
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    from .search.scale import scale_architecture

    arch = scale_architecture(args.arch, block_repeats=args.block_repeats, filter_size_scale=args.filter_size_scale,
                              resample_alpha=args.resample_alpha, endpoints_num_filters=args.endpoints_num_filters)
    arch.save(args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from .experiments import create_experiment, report_experiment, run_experiment

    experiment = create_experiment(args.name, args.seeds, args.overrides)
    if args.report:
        report_experiment(experiment, args.out)
    else:
        run_experiment(experiment, args.out, resume=args.resume, device=args.device, progress=not args.quiet)
    print(f"{args.name}: {args.out}/runs.csv, summary.png, summary.json, summary.md")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spinenet", description="SpineNet backbones in PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered models (name, task, description, input size) or --datasets")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'spinenet_mobile*'")
    p.add_argument("--task", choices=("backbone", "retinanet", "maskrcnn", "classification", "segmentation",
                                      "detection"),
                   help="only this task's models (detection: RetinaNet and Mask R-CNN)")
    p.add_argument("--datasets", action="store_true",
                   help="list the named datasets (--data specs such as trees:yell-train) instead of models")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("summary", help="parameters and multiply-adds per model")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="registered models (see `spinenet list`), or spinenet-arch/1 files (default: all backbones)")
    p.add_argument("--size", type=parse_size, help="input H or HxW (default: each model's own input size)")
    p.add_argument("--flavor", choices=("tpu", "model_garden"), help="implementation flavour (default: the model's)")
    p.add_argument("--json", action="store_true", help="print JSON rows {model, params, macs, size, flavor}")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("draw", help="draw the scale-permuted graph (blocks in order on x, level on y)")
    p.add_argument("model", metavar="MODEL|FILE", help="registered name or spinenet-arch/1 JSON file")
    p.add_argument("-o", "--output", required=True, help="output .png or .svg")
    p.add_argument("--flavor", choices=("tpu", "model_garden"))
    p.set_defaults(func=cmd_draw)

    p = sub.add_parser("train", help="train a model (one engine and grammar for every task)")
    p.add_argument("--task", choices=tuple(TRAIN_TASKS), default=None,
                   help="retinanet or maskrcnn (both also as detection: the model name tells them apart), "
                   "classification, segmentation; default: the task of --model in the registry")
    p.add_argument("--model", required=True, help="a registered name of the task (`spinenet list --task TASK`): "
                   "e.g. retinanet_spinenet49s, maskrcnn_spinenet49, classifier_spinenet49s, segmenter_spinenet49s")
    p.add_argument("--data", required=True, help="detection: COCO .json, VOC folder, trees:<yell-train|yell-val|"
                   "osbs|soap>, or nuclei:<left|right|top|bottom> (instance masks); classification: an image folder "
                   "ROOT/<class>/*.jpg|png, or fashion-mnist:<train|test>[:N]; segmentation: "
                   "nuclei:<left|right|top|bottom>")
    p.add_argument("--val-data", help="evaluation set (same forms as --data)")
    p.add_argument("--classes", help="class mode of built-in sets, e.g. dead_alive for trees:soap")
    p.add_argument("--recipe", help="named recipe (coco-protocol-a|b|c, trees-cpu, nuclei-maskrcnn-cpu, imagenet, "
                   "fashion-mnist-cpu, nuclei-cpu, smoke; default: trees-cpu, fashion-mnist-cpu or nuclei-cpu by "
                   "--task)")
    p.add_argument("--out", required=True, help="run folder (refused if it exists, unless --resume)")
    p.add_argument("--device", help="cpu or cuda[:N] (default: cuda if available)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="data-parallel training in N local processes (DDP: NCCL on CUDA, gloo on CPU; batch_size "
                        "is per process); or start the command with torchrun (docs/distributed.md)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe settings: section.field=value or a field's name, e.g. optim.lr=0.05 "
                        "model.filter_size_scale=0.5 steps=200 (docs/training.md)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the backbone and heads (the recipe setting optim.compile=true)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="metrics of a trained model on a dataset (COCO AP, top-1/top-5, or IoU by its "
                       "task)")
    p.add_argument("--checkpoint", required=True, metavar="CKPT|WEIGHTS", help=CHECKPOINT_HELP)
    p.add_argument("--data", required=True)
    p.add_argument("--classes", help="class mode of built-in sets, e.g. dead_alive")
    p.add_argument("--out", help="detection: write COCO results JSON here; classification / segmentation: a folder "
                   "for metrics.json and confusion_matrix.png / overlays/")
    p.add_argument("--image-size", type=int, help="resize the long side to this (e.g. the images' native size); "
                   "default: the recipe's eval.image_size for detection, else the training size (a weights file: "
                   "the model's image_size)")
    p.add_argument("--device")
    p.add_argument("--optimize", action="store_true",
                   help="evaluate spinenet.optimize_for_inference(model) (BatchNorm folded, channels_last) instead of "
                        "the plain eval() model")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone and heads (slow first call)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="run a trained model on images (boxes and Mask R-CNN masks, top-5 classes, "
                       "or segmentation masks, by its task)")
    p.add_argument("--checkpoint", required=True, metavar="CKPT|WEIGHTS", help=CHECKPOINT_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--out", required=True, help="folder for predictions.json and a drawn image per input, "
                   "*_pred.png: boxes, top-5 class labels or masks (segmentation: also *_mask.png with class ids)")
    p.add_argument("--score-thresh", type=float, default=0.3,
                   help="keep detections at or above this score (also lowers the model's own 0.05 if smaller)")
    p.add_argument("--image-size", type=int, help="resize the long side to this; default: the recipe's "
                   "eval.image_size for detection, else the training size (a weights file: the model's image_size)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace predictions.json and drawn images already in --out (refused otherwise)")
    p.add_argument("--device")
    p.add_argument("--no-optimize", action="store_true",
                   help="keep the plain eval() model (default: spinenet.optimize_for_inference, BatchNorm folded; "
                        "outputs within 1e-4, docs/performance.md)")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone and heads (slow first call)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("convert", help="convert an official TensorFlow checkpoint to .safetensors (no TensorFlow)",
                       description="Convert a TF1 (tensorflow/tpu) or Model Garden SpineNet checkpoint. CKPT is a "
                       "checkpoint prefix, its .index file, a folder or the released .tar.gz. Every tensor must map "
                       "(missing tensors or shape mismatches fail and write nothing); the output's metadata holds the "
                       "full model configuration. TF1 Mask R-CNN checkpoints convert with --task maskrcnn. With "
                       "--preset it also prints what CI checks of that release against the official code. See "
                       "docs/weights.md.")
    p.add_argument("checkpoint", nargs="?", metavar="CKPT")
    p.add_argument("-o", "--output", metavar="OUT.safetensors")
    p.add_argument("--preset", help="a released checkpoint's settings (spinenet convert --list-presets)")
    p.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    p.add_argument("--source", choices=("tpu", "model_garden"), help="which official code wrote CKPT")
    p.add_argument("--model", help="backbone, detector or classifier name (e.g. spinenet49, retinanet_spinenet49, "
                   "maskrcnn_spinenet49)")
    p.add_argument("--task", choices=("backbone", "retinanet", "maskrcnn", "classification"),
                   help="what CKPT holds (default backbone; a detector/classifier checkpoint converts to its "
                   "backbone with --task backbone)")
    p.add_argument("--num-classes", type=int, help="logits of the checkpoint's head (COCO 91, ImageNet 1001)")
    p.add_argument("--activation", choices=("relu", "swish", "hard_swish"),
                   help="the activation the checkpoint was trained with (protocol B relu, '-best' swish)")
    p.add_argument("--bn-eps", type=float, help="BatchNorm epsilon (default per source/task: TF1 1e-4, TF1 "
                   "Mask R-CNN 1e-3, TF1 classifier 1e-5, Model Garden 1e-3)")
    p.add_argument("--set", action="append", metavar="key=value",
                   help="builder override, repeatable (filter_size_scale=0.125, head_width=32, image_size=256, ...)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="export a model to ONNX or a torch.export program (fixed size, dynamic batch)")
    p.add_argument("model", metavar="MODEL|WEIGHTS", help="a registered name (`spinenet list`), a .safetensors "
                   "weights file or a training checkpoint (final.pt)")
    p.add_argument("--format", choices=("onnx", "exported-program"), default="onnx")
    p.add_argument("--size", type=parse_size, help="input HxW fixed in the export (default: the model's size)")
    p.add_argument("--pre-nms-top-k", type=int, default=1000,
                   help="detector: candidates per image entering NMS (static shape; see docs/weights.md)")
    p.add_argument("-o", "--output", required=True, help="output .onnx or .pt2")
    p.add_argument("--no-optimize", action="store_true",
                   help="keep the plain eval() model (default: spinenet.optimize_for_inference, BatchNorm folded; "
                        "outputs within 1e-4, docs/performance.md)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("search", help="learn a scale-permuted backbone (paper section 3; docs/search.md)")
    p.add_argument("--space", choices=("spinenet49", "r35-sp18", "r23-sp30", "r14-sp39", "r0-sp53"),
                   help="search space (Table 1 allocations; spinenet49 also searches level adjustments and types)")
    p.add_argument("--strategy", choices=("rl", "evolution", "random"),
                   help="rl: LSTM controller + REINFORCE (or PPO); evolution: regularized evolution; random")
    p.add_argument("--strategy-option", action="append", metavar="key=value",
                   help="e.g. algorithm=ppo, lr=0.002, batch_size=10 (rl); population_size=50, sample_size=10 "
                        "(evolution)")
    p.add_argument("--trials", type=int, required=True, help="finished trials to reach (done + failed)")
    p.add_argument("--workers", type=int, default=2,
                   help="trials in parallel as Ray tasks on a local 127.0.0.1 instance (default 2; 0: in this "
                        "process, no Ray)")
    p.add_argument("--address", help="join this existing Ray cluster instead of starting one")
    p.add_argument("--out", required=True, help="search folder (refused if it exists, unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the search in --out from its journal")
    p.add_argument("--reward", choices=("proxy", "synthetic"), default="proxy",
                   help="proxy: train a small RetinaNet (default CPU proxy on trees); synthetic: agreement with a "
                        "hidden architecture (tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per trial")
    p.add_argument("--device", help="where proxy trials train: cpu (default) or cuda[:N]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("options", nargs="*", metavar="key=value",
                   help="reward options: proxy=trees-cpu|coco, reward_set=large-block|small-image, steps=..., "
                        "macs_weight=-0.07 target_macs=4e8, "
                        "device=cpu|cuda; synthetic: target_seed=..., sleep=...")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("scale", help="scale an architecture file (the paper's 96/143/190 recipe, section 3.4)")
    p.add_argument("arch", metavar="ARCH", help="spinenet-arch/1 file")
    p.add_argument("--block-repeats", type=int, default=1)
    p.add_argument("--filter-size-scale", type=float, default=1.0)
    p.add_argument("--resample-alpha", type=float, default=0.5)
    p.add_argument("--endpoints-num-filters", type=int, default=256)
    p.add_argument("-o", "--output", required=True, help="output spinenet-arch/1 file")
    p.set_defaults(func=cmd_scale)

    p = sub.add_parser("experiment", help="run a resumable experiment of training runs (docs/experiments/README.md)",
                       usage="spinenet experiment NAME [key=value ...] --out DIR [--seeds S,S] [--resume | --report] "
                             "[--device cpu|cuda]")
    p.add_argument("name", metavar="NAME", help="permuted-vs-decreased-trees, permuted-vs-decreased-fmnist, "
                                               "ablations, proxy-rank or search-vs-random")
    p.add_argument("--seeds", type=lambda t: [int(v) for v in t.split(",") if v.strip()], default=None,
                   help="comma-separated training seeds (default: the experiment's)")
    p.add_argument("--out", required=True, help="experiment folder (refused if it exists, unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the experiment in --out after an interruption")
    p.add_argument("--report", action="store_true",
                   help="only rewrite runs.csv and the summaries in --out from its journal (safe while it runs); "
                        "for a new --out, from the runs that reuse= holds, running nothing")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="experiment settings (lr_factors=0.5,1,2), proxy.* options, recipe overrides (steps=2)")
    p.set_defaults(func=cmd_experiment)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    # a renamed model name still works for a release: say so on the command line too (hidden by default)
    warnings.filterwarnings("default", category=DeprecationWarning, module=r"spinenet\.")
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `train --nproc N` re-runs in each process
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:  # the library's errors for user input
        print(f"spinenet {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
