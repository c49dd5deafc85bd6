"""The search demo of docs/search.md: search on the CPU tree proxy, then an honest comparison on unseen data.

1. ``spinenet search --space spinenet49 --strategy rl --trials 20 --workers 2`` with the default reward (the
   ``trees-cpu`` proxy: AP50 on the small YELL image's tiles after a short training on the large image's).
2. ``spinenet search ... --strategy random --trials 10``: the *median random* architecture is the random trial
   with the median proxy reward.
3. Both architectures are re-trained with 3 fresh seeds (longer: ``--final-steps``) on all of ``yell-train`` and
   evaluated on ``yell-val``, the held-out block no reward ever saw. Prints a Markdown table (mean and spread).

Run on a quiet 2-core machine (``make search-demo``); ``--quick`` checks the plumbing in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def run_search(out: Path, strategy: str, trials: int, workers: int, options: list[str]) -> float:
    cmd = [sys.executable, "-m", "spinenet", "search", "--space", "spinenet49", "--strategy", strategy, "--trials",
           str(trials), "--workers", str(workers), "--out", str(out), *(["--resume"] if out.exists() else []),
           *options]
    print("$", " ".join(cmd[1:]), flush=True)
    start = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - start


def retrain(arch_path: str, seed: int, steps: int, out: str) -> dict[str, float]:
    """Train the proxy-sized detector on all of yell-train, evaluate on yell-val (the unseen block)."""
    import torch

    torch.set_num_threads(1)
    from spinenet.engine.trainer import Trainer
    from spinenet.search.proxy import get_proxy, proxy_recipe
    from spinenet.tasks.detection import DetectionTask

    proxy = get_proxy("trees-cpu")
    recipe = proxy_recipe(proxy, arch_path, seed, {"steps": steps, "val_tile_size": 200})
    task = DetectionTask(proxy.detector, "trees:yell-train", "trees:yell-val")
    return Trainer(task, recipe, out, device="cpu", progress=False).fit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/search-demo")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--random-trials", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--final-steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1001, 1002, 1003])
    parser.add_argument("--quick", action="store_true", help="plumbing check: 2+2 trials of 5 steps, 5-step retrain")
    args = parser.parse_args()
    out = Path(args.out)
    options: list[str] = []
    if args.quick:
        args.trials, args.random_trials, args.final_steps, options = 2, 2, 5, ["steps=5"]

    from spinenet.search.journal import Journal

    rl_time = run_search(out / "rl", "rl", args.trials, args.workers, options)
    random_time = run_search(out / "random", "random", args.random_trials, args.workers, options)
    rl = Journal(out / "rl" / "journal.sqlite")
    rnd = Journal(out / "random" / "journal.sqlite")
    best = rl.best()
    done = sorted((t for t in rnd.trials("done")), key=lambda t: t.reward)
    if best is None or not done:
        print("no successful trial to compare", file=sys.stderr)
        return 1
    median = done[(len(done) - 1) // 2]
    picks = {"searched (best RL)": best, "median random": median}
    final = out / "final"
    final.mkdir(parents=True, exist_ok=True)
    jobs = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for label, trial in picks.items():
            tag = "best" if label.startswith("searched") else "median_random"
            arch_path = final / f"{tag}.json"
            arch_path.write_text(json.dumps(trial.arch, indent=2) + "\n")
            for seed in args.seeds:
                run_dir = final / f"{tag}-seed{seed}"
                if run_dir.exists():
                    import shutil

                    shutil.rmtree(run_dir)
                jobs[(label, seed)] = pool.submit(retrain, str(arch_path), seed, args.final_steps, str(run_dir))
        results = {key: job.result() for key, job in jobs.items()}

    summary = {"rl_search_seconds": rl_time, "rl_trials": args.trials, "random_search_seconds": random_time,
               "random_trials": args.random_trials, "final_steps": args.final_steps, "seeds": args.seeds, "rows": []}
    print(f"\nRL search: {args.trials} trials in {rl_time / 60:.1f} min with {args.workers} workers; random: "
          f"{args.random_trials} trials in {random_time / 60:.1f} min\n")
    print("| architecture | trial | proxy AP50 (search reward) | yell-val AP50, 3 seeds (mean ± sd) | backbone params "
          "| backbone MACs at 128 px |")
    print("|---|---|---|---|---|---|")
    for label, trial in picks.items():
        values = [results[(label, s)]["AP50"] for s in args.seeds]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        row = {"label": label, "trial": trial.id, "proxy_reward": trial.reward, "val_AP50": values,
               "mean": statistics.mean(values), "sd": sd, "params": trial.params, "macs": trial.macs}
        summary["rows"].append(row)
        print(f"| {label} | {trial.id} | {trial.reward:.3f} | {row['mean']:.3f} ± {sd:.3f} "
              f"({', '.join(f'{v:.3f}' for v in values)}) | {trial.params:,} | {trial.macs / 1e6:.0f} M |")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nsummary: {out}/summary.json; rewards: {out}/rl/rewards.png, {out}/random/rewards.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
