"""The ``spinenet`` command: a thin shell over the library (heavy imports happen inside subcommands)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence


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


def cmd_list(args: argparse.Namespace) -> int:
    from .registry import get_model_def, list_models

    for name in list_models(args.pattern):
        d = get_model_def(name)
        print(f"{name:22s} {d.family:7s} {d.description} (default input {d.default_size}, flavor {d.flavor})")
    return 0


def _build(name: str, flavor: str | None):
    """A model on the meta device from a registered name or an architecture file."""
    import os

    from .profile import on_meta
    from .registry import create_model, get_model_def

    if os.path.isfile(name):
        from .specs import Architecture

        arch = Architecture.load(name)
        base = "spinenet_mobile49" if arch.family == "mobile" else "spinenet49"
        return on_meta(lambda: create_model(base, block_specs=arch, flavor=flavor)), get_model_def(base).default_size
    return on_meta(lambda: create_model(name, flavor=flavor)), get_model_def(name).default_size


def cmd_summary(args: argparse.Namespace) -> int:
    from .profile import count_macs, count_params
    from .registry import list_models

    rows = []
    for name in args.models or list_models():
        model, default = _build(name, args.flavor)
        size = args.size or (default, default)
        rows.append({"model": name, "params": count_params(model), "macs": count_macs(model, size),
                     "size": list(size), "flavor": model.graph.flavor})
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spinenet", description="SpineNet backbones in PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'spinenet_mobile*'")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("summary", help="parameters and multiply-adds per model")
    p.add_argument("models", nargs="*", metavar="MODEL", help="registered names or spinenet-arch/1 files (default: all)")
    p.add_argument("--size", type=parse_size, help="input H or HxW (default: each model's own input size)")
    p.add_argument("--flavor", choices=("tpu", "model_garden"), help="implementation flavour (default: the model's)")
    p.add_argument("--json", action="store_true", help="print JSON rows {model, params, macs, size, flavor}")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("draw", help="draw the scale-permuted graph (blocks in order on x, level on y)")
    p.add_argument("model", metavar="MODEL|FILE", help="registered name or spinenet-arch/1 JSON file")
    p.add_argument("-o", "--output", required=True, help="output .png or .svg")
    p.add_argument("--flavor", choices=("tpu", "model_garden"))
    p.set_defaults(func=cmd_draw)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"spinenet {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
