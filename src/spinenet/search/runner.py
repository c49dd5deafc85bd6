"""Run a search into a folder: strategy + trials (in-process or Ray tasks) + SQLite journal + outputs.

``DIR/journal.sqlite`` holds every trial as it finishes and the strategy state (:mod:`spinenet.search.journal`);
``DIR/best.json`` is the best architecture so far (``spinenet-arch/1``: ``create_model("spinenet49",
block_specs=...)``, ``spinenet draw``); ``DIR/rewards.png`` plots the reward of each trial and the running best.

Trials run as Ray tasks (``workers >= 1``): a local Ray instance bound to 127.0.0.1 by default, or an existing
cluster with ``address``. A trial whose worker process dies is retried once by Ray; if it dies again the trial is
recorded as failed and the search goes on. ``workers=0`` evaluates in the search process itself (no Ray; a crash
then ends the search, and ``--resume`` retries the trial).
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..files import json_safe
from ..specs import Architecture
from .journal import Journal, Trial
from .space import SearchSpace, agreement, get_space
from .strategies import Strategy, make_strategy

REWARDS = ("synthetic", "proxy")


@dataclass
class SearchConfig:
    """What defines a search; stored in the journal and checked on ``--resume``."""

    space: str
    strategy: str
    reward: str = "proxy"
    reward_options: dict[str, Any] = field(default_factory=dict)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def check(self) -> None:
        get_space(self.space)
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; choose one of {', '.join(REWARDS)}")
        if self.reward == "proxy":  # recipe settings among the options are checked as train overrides are
            from .proxy import check_proxy_options

            check_proxy_options(self.reward_options)


# --------------------------------------------------------------------------------------------- evaluation
def _id_list(value: Any) -> set[int]:
    if value is None or value == "":
        return set()
    if isinstance(value, (int, float)):
        return {int(value)}
    return {int(v) for v in str(value).replace(";", ",").split(",") if v.strip()}


def evaluate_trial(payload: dict[str, Any]) -> dict[str, Any]:
    """Score one trial (runs in a Ray worker or in-process). Returns reward, metrics, MACs and params.

    ``payload``: ``trial`` id, ``attempt``, ``seed``, ``space``, ``arch`` (dict), ``reward`` name,
    ``options``, ``out`` (the search folder) and ``threads`` (torch threads while it runs; the caller's count is
    restored afterwards, so an in-process trial leaves its process as it found it).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(int(payload.get("threads", 1)))
    try:
        return _evaluate_trial(payload)
    finally:
        torch.set_num_threads(threads)


def _evaluate_trial(payload: dict[str, Any]) -> dict[str, Any]:
    arch = Architecture.from_dict(payload["arch"], source=f"trial {payload['trial']}")
    options = dict(payload.get("options") or {})
    trial = int(payload["trial"])
    if payload["reward"] == "synthetic":
        return _synthetic(arch, trial, payload, options)
    from .proxy import score_architecture

    return score_architecture(arch, options, Path(payload["out"]) / "trials" / f"{trial:05d}", int(payload["seed"]))


def synthetic_target(space: SearchSpace, target_seed: int = 0) -> Architecture:
    """The hidden architecture of the synthetic reward: a sample of ``space`` from its own random stream (seeded
    with ``[target_seed, 2020]``, so no strategy seeded with a plain integer draws it by chance)."""
    return space.decode(space.sample(np.random.default_rng([target_seed, 2020])), name="synthetic-target")


def _synthetic(arch: Architecture, trial: int, payload: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Agreement with a hidden target architecture (drawn from the space with ``target_seed``).

    Test hooks: ``sleep`` seconds per trial; ``log`` file that gets one line ``trial attempt pid parent-pid`` per
    evaluation;
    ``crash`` trial ids whose worker process dies on the first attempt, ``crash_always`` on every attempt;
    ``fail`` trial ids that raise.
    """
    space = get_space(payload["space"])
    if options.get("log"):
        with open(options["log"], "a") as fh:
            fh.write(f"{trial} {payload.get('attempt', 1)} {os.getpid()} {os.getppid()}\n")
            fh.flush()
            os.fsync(fh.fileno())
    if trial in _id_list(options.get("crash_always")):
        os._exit(3)
    if trial in _id_list(options.get("crash")):
        marker = Path(payload["out"]) / f".crashed-{trial}"
        if not marker.exists():
            marker.touch()
            os._exit(3)
    if trial in _id_list(options.get("fail")):
        raise RuntimeError(f"trial {trial} failed on purpose (reward option fail=...)")
    if options.get("sleep"):
        time.sleep(float(options["sleep"]))
    target = synthetic_target(space, int(options.get("target_seed", 0)))
    reward = agreement(arch, target, space)
    macs = params = None
    if options.get("macs", True) not in (False, 0, "0", "false"):
        from .proxy import backbone_cost

        macs, params = backbone_cost(arch, 640)
    return {"reward": reward, "metrics": {"agreement": reward}, "macs": macs, "params": params}


# ---------------------------------------------------------------------------------------------- executors
class InlineExecutor:
    """Evaluate in the search process, one trial at a time."""

    capacity = 1

    def __init__(self) -> None:
        self.pending: list[tuple[int, dict[str, Any]]] = []

    def submit(self, trial_id: int, payload: dict[str, Any]) -> None:
        self.pending.append((trial_id, payload))

    def wait(self) -> tuple[int, dict[str, Any] | None, str | None]:
        trial_id, payload = self.pending.pop(0)
        try:
            return trial_id, evaluate_trial(payload), None
        except Exception as err:  # a failing trial never ends the search
            return trial_id, None, f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}"

    def close(self) -> None:
        pass


def local_ray_init_kwargs(workers: int) -> dict[str, Any]:
    """``ray.init`` arguments of the local instance: ``workers`` CPUs, no dashboard, every port on 127.0.0.1."""
    return {"num_cpus": workers, "include_dashboard": False, "_node_ip_address": "127.0.0.1",
            "log_to_driver": False, "configure_logging": False}


def start_ray(workers: int, address: str | None = None) -> None:
    """Start (or join, with ``address``) Ray.

    Ray replaces a loopback ``_node_ip_address`` by the machine's address unless its single-machine mode is on
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``); with it, the GCS, raylet, object manager, workers and the
    runtime-env agent all listen on 127.0.0.1 only (checked by ``tests/test_search_ray.py``).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError:
        raise ValueError("--workers >= 1 and --address run trials on Ray, which is not installed: "
                         "pip install 'spinenet-torch[search]', or use --workers 0") from None
    import ray._private.ray_constants as ray_constants

    if ray.is_initialized():
        return
    if address is None:
        ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time; the env var only at import
        start_reaper()
        ray.init(**local_ray_init_kwargs(workers))
    else:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError) as err:
            raise ValueError(
                f"--address {address}: could not join the Ray cluster ({str(err).strip().splitlines()[-1][:300]}). "
                "Check the head's GCS address (`ray status` on the head); a cluster with token authentication "
                "(Ray's default for `ray start`) needs RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN or "
                "RAY_AUTH_TOKEN_PATH") from err


def start_reaper() -> None:
    """Start :mod:`spinenet.search.reaper` for this process (its own session: Ctrl-C does not reach it)."""
    import subprocess
    import sys

    from . import reaper

    # every process Ray forks from here on inherits the marker, so the reaper finds it even once re-parented
    token = f"{os.getpid()}-{os.urandom(8).hex()}"
    os.environ[reaper.MARKER] = token
    subprocess.Popen([sys.executable, reaper.__file__, str(os.getpid()), token], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class RayExecutor:
    """Trials as Ray tasks (1 CPU each, and 1 GPU when trials train on CUDA: Ray hides GPUs from tasks that do
    not ask for one); a worker that dies is retried once by Ray, then the trial fails."""

    def __init__(self, workers: int, address: str | None = None, gpus_per_trial: float = 0) -> None:
        start_ray(workers, address)
        import ray

        self.ray = ray
        self.capacity = workers
        self.remote = ray.remote(num_cpus=1, num_gpus=gpus_per_trial, max_retries=1,
                                 retry_exceptions=False)(evaluate_trial)
        self.pending: dict[Any, int] = {}

    def submit(self, trial_id: int, payload: dict[str, Any]) -> None:
        self.pending[self.remote.remote(payload)] = trial_id

    def wait(self) -> tuple[int, dict[str, Any] | None, str | None]:
        ready, _ = self.ray.wait(list(self.pending), num_returns=1)
        trial_id = self.pending.pop(ready[0])
        try:
            return trial_id, self.ray.get(ready[0]), None
        except Exception as err:  # RayTaskError (the trial raised), WorkerCrashedError (died twice), ...
            return trial_id, None, f"{type(err).__name__}: {str(err)[-2000:]}"

    def close(self) -> None:
        self.ray.shutdown()


# ------------------------------------------------------------------------------------------------- search
class Search:
    """One search folder. ``run()`` continues until ``trials`` trials are finished (done or failed)."""

    def __init__(self, out: str | Path, config: SearchConfig | None = None, *, trials: int, workers: int = 0,
                 address: str | None = None, resume: bool = False, threads: int = 1) -> None:
        self.out = Path(out)
        journal_path = self.out / Journal.FILE
        if resume:
            if not journal_path.is_file():
                raise FileNotFoundError(f"--resume: no search journal at {journal_path}; start without --resume")
        elif self.out.exists() and any(self.out.iterdir()):
            raise ValueError(f"output folder {self.out} already exists and is not empty; pass --resume to continue "
                             f"that search, or choose another --out")
        if trials < 1:
            raise ValueError(f"--trials must be >= 1, got {trials}")
        if workers < 0:
            raise ValueError(f"--workers must be >= 0, got {workers}")
        if config is not None:
            config.check()  # before the folder is created
        self.out.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(journal_path)
        stored = self.journal.config()
        if resume and stored is not None:
            if config is not None:
                mine = asdict(config)
                diff = [k for k in ("space", "strategy", "reward", "seed") if mine[k] != stored[k]]
                if diff:
                    raise ValueError(f"--resume: {', '.join(f'{k}={mine[k]!r}' for k in diff)} differ from the "
                                     f"search in {self.out} ({', '.join(f'{k}={stored[k]!r}' for k in diff)})")
            config = SearchConfig(**stored)
        if config is None:
            raise ValueError("a new search needs a SearchConfig")
        config.check()
        if config.reward == "proxy":  # the journal names the reward set its trials are scored on
            from .proxy import resolve_options

            options = resolve_options(config.reward_options, recorded=stored is not None)
            config = replace(config, reward_options=options)
        if stored is None:
            self.journal.set_config(asdict(config))
        self.config = config
        self.space: SearchSpace = get_space(config.space)
        self.strategy: Strategy = make_strategy(config.strategy, self.space, seed=config.seed,
                                                **config.strategy_options)
        state = self.journal.strategy_state()
        if state is not None:
            self.strategy.load_state_dict(state)
        self.trials, self.workers, self.address, self.threads = trials, workers, address, threads

    def _payload(self, trial_id: int, arch: dict[str, Any], seed: int, attempt: int) -> dict[str, Any]:
        return {"trial": trial_id, "attempt": attempt, "seed": seed, "space": self.config.space, "arch": arch,
                "reward": self.config.reward, "options": self.config.reward_options, "out": str(self.out.resolve()),
                "threads": self.threads}

    def run(self, progress: bool = True) -> Trial | None:
        """Run to ``trials`` finished trials; returns the best trial. Interrupted trials are retried first."""
        from tqdm import tqdm

        journal = self.journal
        finished = len(journal.trials("done")) + len(journal.trials("failed"))
        interrupted = journal.trials("running")
        todo = self.trials - finished
        if todo <= 0 and not interrupted:
            self.write_outputs()
            return journal.best()
        on_gpu = str(self.config.reward_options.get("device", "cpu")).startswith("cuda")
        executor: InlineExecutor | RayExecutor = (InlineExecutor() if self.workers == 0 and self.address is None
                                                  else RayExecutor(max(self.workers, 1), self.address,
                                                                   1 if on_gpu else 0))
        bar = tqdm(total=max(self.trials, finished + len(interrupted)), initial=finished, disable=not progress,
                   desc=f"search {self.config.space}/{self.config.strategy}", dynamic_ncols=True)
        best = journal.best()
        in_flight = 0
        try:
            for t in interrupted:  # asked before the interruption: evaluate again, then tell
                journal.retry(t.id)
                executor.submit(t.id, self._payload(t.id, t.arch, t.seed, t.attempts + 1))
                in_flight += 1
            started = {t.id: (t.decisions, time.time()) for t in interrupted}
            while True:
                while in_flight < executor.capacity and journal.count() < self.trials:
                    decisions = self.strategy.ask()
                    number = journal.count() + 1
                    arch = self.space.decode(decisions, name=f"{self.config.space}-{self.config.strategy}-{number}")
                    seed = self.config.seed * 100_003 + number
                    trial_id = journal.add_trial(decisions, arch.to_dict(), seed, self.strategy.state_dict())
                    executor.submit(trial_id, self._payload(trial_id, arch.to_dict(), seed, 1))
                    started[trial_id] = (decisions, time.time())
                    in_flight += 1
                if in_flight == 0:
                    break
                trial_id, result, error = executor.wait()
                in_flight -= 1
                decisions, t0 = started.pop(trial_id)
                reward = None
                if result is not None:
                    reward = float(result["reward"])
                    if not math.isfinite(reward):
                        error, reward = f"non-finite reward {reward}", None
                self.strategy.tell(decisions, reward)
                journal.finish(trial_id, reward=reward, metrics=(result or {}).get("metrics"),
                               macs=(result or {}).get("macs"), params=(result or {}).get("params"),
                               wall_time=time.time() - t0, error=error, state=self.strategy.state_dict())
                bar.update(1)
                if reward is not None and (best is None or reward > (best.reward or -math.inf)):
                    best = journal.best()
                    self._write_best(best)
                if best is not None:
                    bar.set_postfix(best=f"{best.reward:.4f}", last="failed" if reward is None else f"{reward:.4f}")
        finally:
            bar.close()
            executor.close()
        self.write_outputs()
        return journal.best()

    def _write_best(self, best: Trial) -> None:
        arch = Architecture.from_dict(best.arch, source=f"trial {best.id}")
        arch.save(self.out / "best.json")

    def write_outputs(self) -> None:
        """``best.json``, ``rewards.png`` and ``trials.csv`` from the journal."""
        best = self.journal.best()
        if best is not None:
            self._write_best(best)
        trials = self.journal.trials()
        plot_rewards(trials, self.out / "rewards.png", title=f"{self.config.space} / {self.config.strategy} / "
                                                             f"{self.config.reward}")
        export_csv(trials, self.out / "trials.csv")


def export_csv(trials: list[Trial], path: Path) -> None:
    import csv

    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "status", "reward", "macs", "params", "seed", "wall_time", "attempts", "metrics"])
        for t in trials:
            w.writerow([t.id, t.status, t.reward, t.macs, t.params, t.seed, t.wall_time, t.attempts,
                        json.dumps(json_safe(t.metrics))])
    os.replace(tmp, path)


def plot_rewards(trials: list[Trial], path: Path, title: str = "") -> None:
    """Reward of each finished trial (dots), failed trials (x at the bottom) and the running best (line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if t.status == "done" and t.reward is not None]
    failed = [t for t in trials if t.status == "failed"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if done:
        xs = [t.id for t in done]
        ys = [t.reward for t in done]
        ax.scatter(xs, ys, s=12, alpha=0.6, label="trial reward")
        ax.step(xs, np.maximum.accumulate(ys), where="post", color="C3", label="running best")
    if failed:
        low = min([t.reward for t in done], default=0.0)
        ax.scatter([t.id for t in failed], [low] * len(failed), marker="x", color="k", label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if done or failed:
        ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
