"""One process with every core, or one single-threaded DDP process per core: training images/s of each on this CPU.

Both layouts run the real command (``spinenet train``) for the same global batch, one after the other on the
same machine; the DDP run is ``--nproc N`` with ``batch_size`` divided by N (gloo on 127.0.0.1, per-process
BatchNorm). The images/s are the trainer's own ``metrics.csv`` figures, with the first logging window (start-up,
first iterations) left out. Prints both rates and their ratio, so the figure is a same-run comparison::

    python benchmarks/bench_ddp_cpu.py                                  # the Fashion-MNIST recipe
    python benchmarks/bench_ddp_cpu.py --task detection --model retinanet_spinenet49s --data trees:yell-train \\
        --recipe trees-cpu --batch-size 8
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path


def images_per_second(run: Path) -> float:
    """The mean of ``metrics.csv``'s ``images_per_s`` over every logging window but the first."""
    with (run / "metrics.csv").open() as f:
        rates = [float(row["images_per_s"]) for row in csv.DictReader(f) if row.get("images_per_s")]
    if len(rates) < 2:
        raise SystemExit(f"{run}/metrics.csv has {len(rates)} logging window(s); raise --steps or lower --log-every")
    return statistics.fmean(rates[1:])


def train(out: Path, args: argparse.Namespace, nproc: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // nproc))}
    command = [sys.executable, "-m", "spinenet", "train", "--task", args.task, "--model", args.model,
               "--data", args.data, "--recipe", args.recipe, "--out", str(out), "--device", "cpu",
               "--nproc", str(nproc), f"batch_size={args.batch_size // nproc}", f"steps={args.steps}",
               f"log_every={args.log_every}", "eval_every=0", f"checkpoint_every={args.steps}", *args.overrides]
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"the {nproc}-process run failed (exit code {done.returncode}): {' '.join(command)}")
    return images_per_second(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="classification")
    parser.add_argument("--model", default="spinenet49s")
    parser.add_argument("--data", default="fashion-mnist:train:5000")
    parser.add_argument("--recipe", default="fashion-mnist-cpu")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch of both layouts")
    parser.add_argument("--nproc", type=int, default=os.cpu_count() or 1, help="processes of the DDP layout")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--out", default="out/bench-ddp-cpu")
    parser.add_argument("overrides", nargs="*", help="recipe key=value overrides for both runs")
    args = parser.parse_args(argv)
    if args.batch_size % args.nproc:
        parser.error(f"--batch-size {args.batch_size} does not split over --nproc {args.nproc}")
    out = Path(args.out)
    single = train(out / "one-process", args, 1)
    ddp = train(out / f"ddp-{args.nproc}", args, args.nproc)
    row = {"task": args.task, "model": args.model, "global_batch": args.batch_size, "cores": os.cpu_count(),
           "one_process_images_per_s": round(single, 1), f"ddp_{args.nproc}x1_images_per_s": round(ddp, 1),
           "ratio_ddp_over_one_process": round(ddp / single, 3)}
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
