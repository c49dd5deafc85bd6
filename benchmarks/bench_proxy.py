"""Time and score proxy trials (docs/experiments/search.md): one trial per architecture and seed, one thread.

    python benchmarks/bench_proxy.py --archs spinenet49 random-0 --seeds 0 1 --out out/bench-proxy
    python benchmarks/bench_proxy.py --archs spinenet49 --seeds 0 steps=300 image_size=160   # proxy overrides

``random-K`` is the K-th draw of the ``spinenet49`` search space from ``numpy.random.default_rng(0)`` (the same
draws as the proxy-rank experiment's ``spinenet49-random-K``). Prints, per trial, the wall time, the process's CPU
time, the reward (the proxy's metric) and AP, with the load average before and after; appends the rows to
``OUT/trials.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def architecture(name: str):
    import numpy as np

    from spinenet.experiments import spinenet49_architecture
    from spinenet.search.space import get_space

    if name == "spinenet49":
        return spinenet49_architecture()
    if name.startswith("random-"):
        k = int(name.split("-", 1)[1])
        space, rng = get_space("spinenet49"), np.random.default_rng(0)
        draws = [space.decode(space.sample(rng), name=f"spinenet49-random-{i}") for i in range(k + 1)]
        return draws[k]
    raise SystemExit(f"--archs: unknown architecture {name!r} (spinenet49 or random-K)")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["spinenet49", "random-0"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--proxy", default="trees-cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="out/bench-proxy")
    parser.add_argument("overrides", nargs="*", help="key=value settings of the proxy's recipe")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from spinenet.engine.recipes import _auto
    from spinenet.search.proxy import get_proxy, train_proxy

    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{item!r} is not key=value")
        overrides[key] = _auto(value)
    proxy = get_proxy(args.proxy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"CPU {cpu_name()}, {args.threads} thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
          f"overrides {overrides}", flush=True)
    for name in args.archs:
        arch = architecture(name)
        for seed in args.seeds:
            load0 = os.getloadavg()[0]
            wall0, cpu0 = time.time(), time.process_time()
            metrics = train_proxy(arch, proxy, out / f"{name}-s{seed}", seed, overrides)
            wall, cpu = time.time() - wall0, time.process_time() - cpu0
            row = {"arch": name, "seed": seed, "reward": float(metrics[proxy.metric]), "AP": float(metrics["AP"]),
                   "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_before": load0,
                   "load_after": os.getloadavg()[0], "threads": args.threads, "overrides": overrides,
                   "cpu": cpu_name()}
            print(json.dumps(row), flush=True)
            with open(out / "trials.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
