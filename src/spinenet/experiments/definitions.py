"""The experiments (docs/experiments/README.md): what each one trains and how it summarises the result.

* ``permuted-vs-decreased-trees``: RetinaNet on SpineNet-49S against RetinaNet on the scale-decreased R50-FPN of
  :func:`~.architectures.scale_decreased_fpn` at equal backbone MACs (paper Tables 2-3); held-out and cross-site
  AP50 / AP; every model gets the same learning-rate sweep.
* ``permuted-vs-decreased-fmnist``: the same on Fashion-MNIST, SpineNet-49 against ResNet-50 (paper Table 4).
* ``ablations``: SpineNet-49S's blocks at equal MACs: learned permutation against the hourglass and fish orderings
  (connections picked among ``budget`` draws of the search space's rule by the proxy reward), and learned
  connections against the three damages (paper Tables 8-9).
* ``proxy-rank``: Kendall tau between the proxy reward and the full recipe's held-out AP50 over the architectures
  of :meth:`ProxyRank.architectures`, with the seed-vs-seed tau of the full recipe as the ceiling.
* ``search-vs-random``: RL, evolution and random search with the proxy at the same trial budget; the best of each
  re-trained with the full recipe against the median random architecture, SpineNet-49's topology and R50-FPN.
"""

from __future__ import annotations

import csv
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..search.proxy import resolve_options
from ..specs import Architecture, default_architecture
from .architectures import (DAMAGES, ORDERINGS, RESNET50_BLOCKS, backbone_macs, damage, fixed_ordering,
                            matched_scale, scale_decreased_fpn, spinenet49_architecture)
from .journal import RunRecord
from .runner import Experiment, Run, Settings
from .stats import bootstrap_interval, kendall_tau
from .training import backbone_scaling, build_recipe, recipe_value

BACKBONE_KEYS = ("endpoints_num_filters", "filter_size_scale", "resample_alpha", "block_repeats", "min_level",
                 "max_level", "flavor")


def _fmt(value: float) -> str:
    return f"{value:.6g}"


class _Base(Experiment):
    """Shared plumbing: the recipe, the backbone settings a model gets, width matching, one training run."""

    task = "detection"

    @property
    def model_name(self) -> str:
        return self.settings.detector if self.task == "detection" else self.settings.classifier

    @functools.cached_property
    def recipe(self):
        return build_recipe(self.settings.recipe, self.overrides)

    @functools.cached_property
    def backbone_kwargs(self) -> dict[str, Any]:
        """Backbone scaling of the registered model under the recipe's ``model.*`` overrides (what MACs match)."""
        kwargs = backbone_scaling(self.task, self.model_name)
        for key in BACKBONE_KEYS:
            value = recipe_value(self.recipe, f"model.{key}")
            if value is not None:
                kwargs[key] = value
        return kwargs

    @property
    def levels(self) -> tuple[int, int]:
        kw = self.backbone_kwargs
        return int(kw.get("min_level") or 3), int(kw.get("max_level") or 7)

    def reference_arch(self) -> Architecture:
        return default_architecture("resnet", self.backbone_kwargs["flavor"])

    @functools.cached_property
    def reference_macs(self) -> int:
        return backbone_macs(self.reference_arch(), self.recipe.data.image_size, **self.backbone_kwargs)

    @functools.lru_cache(maxsize=None)
    def matched(self, arch_json: str) -> float:
        """The width multiplier giving ``arch`` the reference's backbone MACs at the recipe's image size."""
        arch = Architecture.from_dict(json.loads(arch_json))
        kwargs = {k: v for k, v in self.backbone_kwargs.items() if k != "filter_size_scale"}
        return matched_scale(arch, self.reference_macs, self.recipe.data.image_size,
                             start=self.backbone_kwargs["filter_size_scale"], tolerance=self.settings.mac_tolerance,
                             **kwargs)

    def scale_for(self, arch: Architecture | None) -> float:
        if arch is None:
            return float(self.backbone_kwargs["filter_size_scale"])
        return self.matched(json.dumps(arch.to_dict(), sort_keys=True))

    def train_run(self, key: str, model_label: str, arch: Architecture | None, seed: int, lr_factor: float,
                  scale: float | None, data: str, val_data: str | None, extra_eval: dict[str, str],
                  **labels: Any) -> Run:
        lr = self.recipe.optim.lr * lr_factor
        overrides = [*self.overrides, f"seed={seed}", f"lr={_fmt(lr)}"]
        if scale is not None:
            overrides.append(f"model.filter_size_scale={_fmt(scale)}")
        payload = {"task": self.task, "model": self.model_name, "data": data, "val_data": val_data,
                   "recipe": self.settings.recipe, "overrides": overrides,
                   "arch": arch.to_dict() if arch is not None else None, "extra_eval": extra_eval}
        return Run(key, "train", {"model": model_label, "arch": arch.name if arch else "registered", "seed": seed,
                                  "lr": lr, **labels}, payload)

    def sweep(self, label: str, arch: Architecture | None, match: bool, data: str, val_data: str,
              extra_eval: dict[str, str], seeds: Sequence[int] | None = None, **labels: Any) -> list[Run]:
        """One run per seed and learning-rate factor; ``match`` scales ``arch`` to the reference's MACs."""
        scale = self.scale_for(arch) if match else None
        return [self.train_run(f"{label}-s{seed}-lr{k}", label, arch, seed, f, scale, data, val_data, extra_eval,
                               **labels)
                for seed in (self.seeds if seeds is None else seeds)
                for k, f in enumerate(self.settings.lr_factors)]

    def comparison(self, *sweeps: list[Run]) -> list[Run]:
        """The runs of equal-length sweeps (one per model) in an order whose every prefix is a usable comparison.

        The recipe's own learning rate (factor closest to 1) comes first, then the other factors; within one
        learning rate, seed by seed, every model of the comparison. A long experiment stopped early thus leaves
        paired runs (same seed, same learning rate) rather than all runs of one model and none of the other.
        """
        factors = self.settings.lr_factors
        first = min(range(len(factors)), key=lambda k: abs(factors[k] - 1.0))
        lr_order = [first, *(k for k in range(len(factors)) if k != first)]
        n_seeds = len(sweeps[0]) // len(factors)
        return [sweep[seed * len(factors) + k] for k in lr_order for seed in range(n_seeds) for sweep in sweeps]

    def summary_table(self, records: dict[str, RunRecord]) -> dict[str, Any]:
        """Per model and lr: mean and sample sd over seeds of every metric, and the runs' cost (wall and CPU time
        over the runs that did not resume from a checkpoint)."""
        groups: dict[str, dict[str, list[float]]] = {}
        for rec in records.values():
            if rec.kind != "train" or rec.status != "done" or not rec.result:
                continue
            labels = rec.spec["labels"]
            group = groups.setdefault(f"{labels['model']} lr={labels['lr']:.4g}", {})
            cost = {k: rec.result.get(k) for k in ("params", "backbone_macs", "macs")}
            # the journal times the last attempt only: a run resumed from a checkpoint would understate its cost
            resumed = bool(rec.result.get("resumed_from_step"))
            cost["wall_time_s"] = None if resumed else rec.wall_time
            cost["cpu_time_s"] = None if resumed else rec.result.get("cpu_time_s")
            for k, v in {**rec.result["metrics"], **cost}.items():
                if v is not None:
                    group.setdefault(k, []).append(float(v))
        return {g: {k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None,
                        "n": len(v)} for k, v in metrics.items()} for g, metrics in groups.items()}

    def analyse(self, records: dict[str, RunRecord], folder: Path | None = None) -> dict[str, Any]:
        return {"table": self.summary_table(records), "reference_macs": self.reference_macs}

    def metric_columns(self, table: dict[str, Any]) -> list[str]:
        """The primary metric, then every other split's AP50 / AP / top-1 that the runs report."""
        keys = {k for group in table.values() for k in group}
        split = self.primary_metric.split("/")[0]
        others = sorted((k for k in keys if k != self.primary_metric and k.split("/")[-1] in ("AP50", "AP", "top1")),
                        key=lambda k: (k.split("/")[0] != split, k.split("/")[0], k.split("/")[-1] != "AP50"))
        return [self.primary_metric, *others] if self.primary_metric in keys else others

    def report(self, records: dict[str, RunRecord], analysis: dict[str, Any]) -> str:
        table = analysis.get("table") or {}
        if not table:
            return ""
        metrics = self.metric_columns(table)

        def cell(stats: dict[str, Any] | None, scale: float = 1.0, digits: int = 3, spread: bool = True) -> str:
            if not stats:
                return ""
            mean = f"{stats['mean'] / scale:.{digits}f}"
            return mean if stats["sd"] is None or not spread else f"{mean} ± {stats['sd'] / scale:.{digits}f}"

        # runs journalled before CPU time was recorded have none: the column appears once any run has it
        cpu = any("cpu_time_s" in s for s in table.values())
        times = {"wall_time_s": "wall time (min)", **({"cpu_time_s": "CPU time (min)"} if cpu else {})}
        head = ["model", "lr", "n", *metrics, "params (M)", "backbone MACs (G)", "MACs (G)", *times.values()]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for group, stats in table.items():
            model, lr = group.rsplit(" lr=", 1)
            n = max(v["n"] for v in stats.values())
            row = [model, lr, str(n), *(cell(stats.get(m)) for m in metrics), cell(stats.get("params"), 1e6, 2, False),
                   cell(stats.get("backbone_macs"), 1e9, 2, False), cell(stats.get("macs"), 1e9, 2, False),
                   *(cell(stats.get(k), 60.0, 1) for k in times)]
            lines.append("| " + " | ".join(row) + " |")
        times_note = " and CPU time (the run's process, all its threads)" if cpu else ""
        return "\n".join(lines) + ("\n\nMean ± sample sd over seeds; MACs of the whole model at the recipe's image "
                                   f"size; wall time{times_note} of the runs that finished without an interruption.\n")


# --------------------------------------------------------------------------------------------- comparisons
@dataclass
class TreesSettings(Settings):
    recipe: str = "trees-cpu"
    detector: str = "retinanet_spinenet49s"
    data: str = "trees:yell-train"
    val_data: str = "trees:yell-val"
    cross_sites: tuple[str, ...] = ("trees:osbs", "trees:soap")
    resnet_blocks: tuple[int, ...] = RESNET50_BLOCKS


class PermutedVsDecreasedTrees(_Base):
    """SpineNet-49S against R50-FPN at equal backbone MACs on the tree crowns (held-out and cross-site)."""

    name = "permuted-vs-decreased-trees"
    settings_class = TreesSettings

    def decreased(self) -> Architecture:
        lo, hi = self.levels
        return scale_decreased_fpn(self.settings.resnet_blocks, lo, max(hi, 5))

    def extra_eval(self) -> dict[str, str]:
        return {path.split(":")[-1]: path for path in self.settings.cross_sites}

    def plan(self, results: dict[str, Any]) -> list[Run]:
        s = self.settings
        return self.comparison(self.sweep("spinenet49s", None, False, s.data, s.val_data, self.extra_eval()),
                               self.sweep("r50-fpn", self.decreased(), True, s.data, s.val_data, self.extra_eval()))


@dataclass
class FashionSettings(Settings):
    recipe: str = "fashion-mnist-cpu"
    classifier: str = "classifier_spinenet49"
    train_limit: int = 0  # 0: all 60,000 training images
    test_limit: int = 0
    resnet_blocks: tuple[int, ...] = RESNET50_BLOCKS


class PermutedVsDecreasedFashion(_Base):
    """SpineNet-49 against ResNet-50 (+ FPN, aggregated by the same classification head) at equal MACs."""

    name = "permuted-vs-decreased-fmnist"
    settings_class = FashionSettings
    task = "classification"
    primary_metric = "val/top1"

    def plan(self, results: dict[str, Any]) -> list[Run]:
        s = self.settings
        data = "fashion-mnist:train" + (f":{s.train_limit}" if s.train_limit else "")
        val = "fashion-mnist:test" + (f":{s.test_limit}" if s.test_limit else "")
        lo, hi = self.levels
        decreased = scale_decreased_fpn(s.resnet_blocks, lo, max(hi, 5), name="r50-fpn")
        return self.comparison(self.sweep("spinenet49", None, False, data, val, {}),
                               self.sweep("r50", decreased, True, data, val, {}))


# ------------------------------------------------------------------------------------------------ ablations
@dataclass
class AblationSettings(TreesSettings):
    lr_factors: tuple[float, ...] = (1.0,)
    orderings: tuple[str, ...] = tuple(ORDERINGS)
    damages: tuple[str, ...] = DAMAGES
    budget: int = 4  # connection draws per fixed ordering, scored by the proxy; 1 = take the first draw


class Ablations(PermutedVsDecreasedTrees):
    """Learned permutation vs fixed orderings, learned connections vs damaged ones, all at equal MACs."""

    name = "ablations"
    settings_class = AblationSettings

    def plan(self, results: dict[str, Any]) -> list[Run]:
        s = self.settings
        for o in s.orderings:
            if o not in ORDERINGS:
                raise ValueError(f"orderings: unknown ordering {o!r}; choose from {', '.join(ORDERINGS)}")
        if s.budget < 1:
            raise ValueError(f"budget={s.budget}: give at least 1 connection draw per ordering")
        args = (s.data, s.val_data, self.extra_eval())
        runs = self.sweep("learned", None, False, *args)
        for kind in s.damages:
            runs += self.sweep(f"no-{kind}", damage(kind), True, *args)
        for o in s.orderings:
            candidates = [fixed_ordering(o, seed=i) for i in range(s.budget)]
            if s.budget == 1:
                runs += self.sweep(o, candidates[0], True, *args)
                continue
            proxies = [Run(f"proxy-{o}-{i}", "proxy", {"model": o, "arch": a.name, "seed": 0},
                           {"arch": a.to_dict(), "seed": 0, "options": resolve_options(s.proxy)})
                       for i, a in enumerate(candidates)]
            runs += proxies
            rewards = [(results[p.key] or {}).get("reward") if p.key in results else None for p in proxies]
            if all(p.key in results for p in proxies):
                scored = [(r, i) for i, r in enumerate(rewards) if r is not None]
                if scored:
                    runs += self.sweep(o, candidates[max(scored, key=lambda t: (t[0], -t[1]))[1]], True, *args)
        return runs


# ----------------------------------------------------------------------------------------------- proxy rank
@dataclass
class ProxyRankSettings(TreesSettings):
    lr_factors: tuple[float, ...] = (1.0,)
    random_archs: int = 8  # draws of the search space, besides the fixed architectures below
    fixed_archs: tuple[str, ...] = ("spinenet49", "r50-fpn", "hourglass", "fish")
    space: str = "spinenet49"
    arch_seed: int = 0
    proxy_seeds: tuple[int, ...] = (0,)  # proxy trials per architecture; the reward is their mean
    resamples: int = 2000  # bootstrap resamples of the tau intervals


class ProxyRank(PermutedVsDecreasedTrees):
    """Does the proxy reward rank architectures as the full recipe does? (every model at SpineNet-49S's scaling)"""

    name = "proxy-rank"
    settings_class = ProxyRankSettings
    default_seeds = (0, 1)

    def architectures(self) -> list[Architecture]:
        from ..search.space import get_space

        s = self.settings
        space = get_space(s.space)
        rng = np.random.default_rng(s.arch_seed)
        archs = [space.decode(space.sample(rng), name=f"{s.space}-random-{i}") for i in range(s.random_archs)]
        lo, hi = self.levels
        fixed = {"spinenet49": spinenet49_architecture,
                 "r50-fpn": lambda: scale_decreased_fpn(min_level=lo, max_level=max(hi, 7)),
                 **{o: functools.partial(fixed_ordering, o, 0) for o in ORDERINGS}}
        unknown = set(s.fixed_archs) - set(fixed)
        if unknown:
            raise ValueError(f"fixed_archs: unknown {sorted(unknown)}; choose from {', '.join(fixed)}")
        return archs + [fixed[name]() for name in s.fixed_archs]

    def plan(self, results: dict[str, Any]) -> list[Run]:
        """Every proxy trial first (minutes each), then the full recipe seed by seed over all architectures, so
        that a stopped experiment already ranks every architecture on its first seed."""
        s = self.settings
        archs = self.architectures()
        runs = [Run(self.proxy_key(arch.name, seed), "proxy", {"model": arch.name, "arch": arch.name, "seed": seed},
                    {"arch": arch.to_dict(), "seed": seed, "options": resolve_options(s.proxy)})
                for seed in s.proxy_seeds for arch in archs]
        for seed in self.seeds:
            for arch in archs:
                runs += self.sweep(arch.name, arch, False, s.data, s.val_data, {}, seeds=[seed])
        return runs

    @staticmethod
    def proxy_key(arch: str, seed: int) -> str:
        return f"proxy-{arch}" if seed == 0 else f"proxy-{arch}-s{seed}"

    def proxy_rewards(self, records: dict[str, RunRecord]) -> dict[str, dict[int, float]]:
        """Per architecture with every proxy seed finished: the reward of each proxy seed."""
        out = {}
        for arch in self.architectures():
            recs = {seed: records.get(self.proxy_key(arch.name, seed)) for seed in self.settings.proxy_seeds}
            if all(r is not None and r.status == "done" and r.result for r in recs.values()):
                out[arch.name] = {seed: float(r.result["reward"]) for seed, r in recs.items()}
        return out

    def proxy_means(self, records: dict[str, RunRecord]) -> dict[str, float]:
        """Per architecture with every proxy seed finished: the reward, their mean."""
        return {a: float(np.mean(list(r.values()))) for a, r in self.proxy_rewards(records).items()}

    def pairs(self, records: dict[str, RunRecord]) -> list[dict[str, Any]]:
        """Per architecture: proxy reward (mean over proxy seeds) and the full recipe's held-out AP50 per seed
        (finished runs only)."""
        out = []
        rewards = self.proxy_means(records)
        for arch in self.architectures():
            full = {}
            for seed in self.seeds:
                rec = records.get(f"{arch.name}-s{seed}-lr0")
                if rec is not None and rec.status == "done" and rec.result:
                    full[seed] = rec.result["metrics"].get(self.primary_metric)
            if arch.name not in rewards or len(full) < len(self.seeds):
                continue
            out.append({"arch": arch.name, "proxy": rewards[arch.name], "full": full,
                        "full_mean": float(np.mean(list(full.values())))})
        return out

    def _first_seed(self, records: dict[str, RunRecord]) -> dict[str, tuple[float, float]]:
        out = {}
        rewards = self.proxy_means(records)
        for arch in self.architectures():
            full = records.get(f"{arch.name}-s{self.seeds[0]}-lr0")
            if arch.name in rewards and full is not None and full.status == "done" and full.result:
                out[arch.name] = (rewards[arch.name], full.result["metrics"].get(self.primary_metric))
        return out

    def eval_curves(self, records: dict[str, RunRecord], folder: Path | None) -> dict[str, dict[int, float]]:
        """Per architecture: the first seed's held-out metric at each evaluation step of its full-recipe run (from
        the run's ``metrics.csv``; empty without the experiment folder)."""
        out: dict[str, dict[int, float]] = {}
        if folder is None:
            return out
        column = self.primary_metric.replace("/", "_")
        for arch in self.architectures():
            key = f"{arch.name}-s{self.seeds[0]}-lr0"
            rec = records.get(key)
            if rec is None or rec.status != "done":
                continue
            source = (rec.result or {}).get("reused_from", "")  # "FOLDER:KEY" of a run taken from elsewhere
            home, run_key = source.rsplit(":", 1) if source else (str(folder), key)
            path = Path(home) / "runs" / run_key / "train" / "metrics.csv"
            if path.is_file():
                with open(path, newline="") as fh:
                    curve = {int(r["step"]): float(r[column]) for r in csv.DictReader(fh) if r.get(column)}
                if curve:
                    out[arch.name] = curve
        return out

    def analyse(self, records: dict[str, RunRecord], folder: Path | None = None) -> dict[str, Any]:
        pairs = self.pairs(records)
        out: dict[str, Any] = {"pairs": pairs, "n": len(pairs)}
        first = self._first_seed(records)
        if len(first) >= 2:  # every architecture with a proxy reward and the first seed's run
            x, y = zip(*first.values())
            out[f"tau_proxy_vs_seed{self.seeds[0]}"] = kendall_tau(x, y)
            out[f"n_seed{self.seeds[0]}"] = len(first)
        rewards = self.proxy_rewards(records)
        if len(self.settings.proxy_seeds) >= 2 and len(rewards) >= 2:  # the proxy's own repeatability
            a, b = ([r[s] for r in rewards.values()] for s in self.settings.proxy_seeds[:2])
            out["tau_proxy_seed_vs_seed"] = kendall_tau(a, b)
            out["tau_proxy_seed_vs_seed_ci95"] = bootstrap_interval(a, b, resamples=self.settings.resamples)
        curves = self.eval_curves(records, folder)
        # the seeds' mean once it covers every architecture the first seed does, the first seed until then
        target = ({p["arch"]: p["full_mean"] for p in pairs} if len(pairs) >= max(2, len(first))
                  else {a: v[1] for a, v in first.items()})
        curves = {a: c for a, c in curves.items() if a in target}
        if len(curves) >= 2:  # how early the full recipe itself ranks: its own evaluations during training
            steps = sorted(set.intersection(*(set(c) for c in curves.values())))
            out["tau_full_at_step"] = {step: kendall_tau([c[step] for c in curves.values()],
                                                         [target[a] for a in curves]) for step in steps}
        cpu = [r.result["cpu_time_s"] for r in records.values()
               if r.kind == "proxy" and r.status == "done" and r.result and r.result.get("cpu_time_s")]
        if cpu:  # the cost of one trial, whatever shared the machine
            out["proxy_cpu_time_s"] = {"mean": float(np.mean(cpu)), "max": float(np.max(cpu)), "n": len(cpu)}
        if len(pairs) >= 2:
            x, y = [p["proxy"] for p in pairs], [p["full_mean"] for p in pairs]
            out["tau_proxy_vs_full"] = kendall_tau(x, y)
            out["tau_proxy_vs_full_ci95"] = bootstrap_interval(x, y, resamples=self.settings.resamples)
            if len(self.seeds) >= 2:
                a, b = ([p["full"][s] for p in pairs] for s in self.seeds[:2])
                out["tau_seed_vs_seed"] = kendall_tau(a, b)
                out["tau_seed_vs_seed_ci95"] = bootstrap_interval(a, b, resamples=self.settings.resamples)
        return out

    def report(self, records: dict[str, RunRecord], analysis: dict[str, Any]) -> str:
        seed0 = self._first_seed(records)
        pairs = {p["arch"]: p for p in analysis.get("pairs") or []}
        rewards = self.proxy_rewards(records)
        proxy_seeds = self.settings.proxy_seeds
        proxy_head = ("proxy reward" if len(proxy_seeds) == 1 else
                      " | ".join(f"proxy seed {s}" for s in proxy_seeds) + " | proxy mean")
        lines = [f"| architecture | {proxy_head} | "
                 + " | ".join(f"{self.primary_metric} seed {s}" for s in self.seeds) + " | mean |",
                 "|" + "---|" * (2 + len(proxy_seeds) + (len(proxy_seeds) > 1) + len(self.seeds))]
        for arch in self.architectures():
            if arch.name not in rewards:
                continue
            reward = rewards[arch.name]
            proxy_cells = " | ".join(f"{reward[s]:.3f}" for s in proxy_seeds)
            if len(proxy_seeds) > 1:
                proxy_cells += f" | {np.mean(list(reward.values())):.3f}"
            full = []
            for seed in self.seeds:
                rec = records.get(f"{arch.name}-s{seed}-lr0")
                ok = rec is not None and rec.status == "done" and rec.result
                full.append(f"{rec.result['metrics'][self.primary_metric]:.3f}" if ok else "")
            mean = f"{pairs[arch.name]['full_mean']:.3f}" if arch.name in pairs else ""
            lines.append(f"| {arch.name} | {proxy_cells} | " + " | ".join(full) + f" | {mean} |")
        out = "\n".join(lines) + "\n"

        def tau(key: str) -> str:
            value, ci = analysis.get(key), analysis.get(f"{key}_ci95")
            if value is None:
                return "n/a"
            return f"{value:.2f}" + (f" (95% bootstrap {ci[0]:.2f} to {ci[1]:.2f})" if ci else "")

        several = len(self.seeds) > 1
        target = f"mean of {len(self.seeds)} seeds" if several else f"seed {self.seeds[0]}"
        out += (f"\nKendall tau, proxy vs full recipe ({target}, {analysis.get('n', 0)} architectures): "
                f"{tau('tau_proxy_vs_full')}" + (f"; seed vs seed: {tau('tau_seed_vs_seed')}" if several else "") + ".\n")
        if seed0 and several:
            out += (f"Proxy vs the first seed alone ({len(seed0)} architectures): "
                    f"{tau(f'tau_proxy_vs_seed{self.seeds[0]}')}.\n")
        if "tau_proxy_seed_vs_seed" in analysis:
            out += (f"Proxy seed vs proxy seed ({len(rewards)} architectures): "
                    f"{tau('tau_proxy_seed_vs_seed')}.\n")
        along = analysis.get("tau_full_at_step")
        if along:
            out += ("The full recipe's own first-seed evaluations during training against the same target, tau at "
                    "step: "
                    + ", ".join(f"{step}: {t:.2f}" for step, t in along.items()) + ".\n")
        cpu = analysis.get("proxy_cpu_time_s")
        if cpu:
            out += (f"CPU time of one proxy trial: {cpu['mean'] / 60:.1f} min on average, {cpu['max'] / 60:.1f} min "
                    f"at most ({cpu['n']} trials).\n")
        return out

    def plot_extra(self, ax, records, analysis) -> None:
        pairs = analysis.get("pairs") or []
        ax.scatter([p["proxy"] for p in pairs], [p["full_mean"] for p in pairs], s=25)
        for p in pairs:
            ax.annotate(p["arch"], (p["proxy"], p["full_mean"]), fontsize=6)
        tau = analysis.get("tau_proxy_vs_full")
        ceiling = analysis.get("tau_seed_vs_seed")
        ax.set_title(f"proxy vs full: tau {tau:.2f}" if tau is not None and tau == tau else "proxy vs full")
        if ceiling is not None:
            ax.set_title(ax.get_title() + f" (seed vs seed {ceiling:.2f})")
        ax.set_xlabel("proxy reward")
        ax.set_ylabel(f"full recipe {self.primary_metric} (mean over seeds)")
        ax.grid(alpha=0.3)


# -------------------------------------------------------------------------------------------- search vs random
@dataclass
class SearchSettings(TreesSettings):
    lr_factors: tuple[float, ...] = (1.0,)
    space: str = "spinenet49"
    trials: int = 30
    workers: int = 0  # Ray workers per search (2 on this machine's budget); 0 = in-process
    strategies: tuple[str, ...] = ("random", "rl", "evolution")
    search_seeds: tuple[int, ...] = (0, 1)  # random and RL; evolution runs the first seed only
    # sized to a budget of tens of trials: aging evolution's first population_size trials are random draws (the
    # library's 50 would leave a 30-trial search all random), and REINFORCE updates once per batch
    evolution_population: int = 10
    evolution_sample: int = 3  # tournament size
    rl_batch: int = 5


class SearchVsRandom(PermutedVsDecreasedTrees):
    """Searches with the proxy, then the full recipe on their best architectures and the references."""

    name = "search-vs-random"
    settings_class = SearchSettings

    def strategy_options(self, strategy: str) -> dict[str, Any]:
        """The strategy's options from the settings, checked before any search runs: its warm-up (evolution's
        random population, RL's first batch) must leave trials to learn from, and the strategy's own checks."""
        from ..search.space import get_space
        from ..search.strategies import make_strategy

        s = self.settings
        options, field_name = {
            "evolution": ({"population_size": s.evolution_population, "sample_size": s.evolution_sample},
                          "evolution_population"),
            "rl": ({"batch_size": s.rl_batch}, "rl_batch")}.get(strategy, ({}, ""))
        if field_name and getattr(s, field_name) >= s.trials:
            raise ValueError(f"{field_name}={getattr(s, field_name)}: choose fewer than trials={s.trials}; the "
                             f"strategy learns only from the trials after its first {field_name}")
        make_strategy(strategy, get_space(s.space), **options)
        return options

    def searches(self) -> list[Run]:
        s = self.settings
        runs = []
        for strategy in s.strategies:
            options = self.strategy_options(strategy)
            for seed in (s.search_seeds[:1] if strategy == "evolution" else s.search_seeds):
                runs.append(Run(f"search-{strategy}-{seed}", "search", {"model": strategy, "seed": seed},
                                {"space": s.space, "strategy": strategy, "seed": seed, "trials": s.trials,
                                 "workers": s.workers, "options": resolve_options(s.proxy),
                                 "strategy_options": options}))
        return runs

    def plan(self, results: dict[str, Any]) -> list[Run]:
        s = self.settings
        searches = self.searches()
        runs = list(searches)
        if not all(r.key in results for r in searches):
            return runs
        args = (s.data, s.val_data, self.extra_eval())
        for strategy in s.strategies:
            done = [results[r.key] for r in searches if r.labels["model"] == strategy and results[r.key]]
            best = max((d for d in done if d.get("reward") is not None), key=lambda d: d["reward"], default=None)
            if best is not None:
                arch = Architecture.from_dict(best["best_arch"])
                runs += self.sweep(f"best-{strategy}", arch, False, *args, reward=best["reward"])
        random_trials = sorted((t for r in searches if r.labels["model"] == "random" and results[r.key]
                                for t in results[r.key]["trials"] if t["reward"] is not None),
                               key=lambda t: t["reward"])
        if random_trials:
            median = random_trials[(len(random_trials) - 1) // 2]
            runs += self.sweep("median-random", Architecture.from_dict(median["arch"]), False, *args,
                               reward=median["reward"])
        runs += self.sweep("spinenet49s", None, False, *args)
        runs += self.sweep("r50-fpn", self.decreased(), True, *args)
        return runs

    def analyse(self, records: dict[str, RunRecord], folder: Path | None = None) -> dict[str, Any]:
        out = super().analyse(records, folder)
        curves = {}
        for key, rec in records.items():
            if rec.kind == "search" and rec.result:
                rewards = [t["reward"] for t in sorted(rec.result["trials"], key=lambda t: t["id"])]
                curves[key] = np.maximum.accumulate(rewards).tolist() if rewards else []
        out["best_so_far"] = curves
        return out

    def report(self, records: dict[str, RunRecord], analysis: dict[str, Any]) -> str:
        lines = ["| search | trials | best proxy reward | found at trial |", "|---|---|---|---|"]
        for key, curve in sorted((analysis.get("best_so_far") or {}).items()):
            if curve:
                best = curve[-1]
                lines.append(f"| {key} | {len(curve)} | {best:.3f} | {curve.index(best) + 1} |")
        searches = "\n".join(lines) + "\n" if len(lines) > 2 else ""
        trained = super().report(records, analysis)
        return searches + ("\n" + trained if searches and trained else trained)

    def plot_extra(self, ax, records, analysis) -> None:
        for k, (key, curve) in enumerate(sorted((analysis.get("best_so_far") or {}).items())):
            ax.step(range(1, len(curve) + 1), curve, where="post", label=key, color=f"C{k}")
        ax.set_xlabel("trial")
        ax.set_ylabel("best proxy reward so far")
        ax.set_title("search vs random")
        ax.grid(alpha=0.3)
        if analysis.get("best_so_far"):
            ax.legend(fontsize=8)


EXPERIMENTS: dict[str, type[Experiment]] = {cls.name: cls for cls in (
    PermutedVsDecreasedTrees, PermutedVsDecreasedFashion, Ablations, ProxyRank, SearchVsRandom)}


def create_experiment(name: str, seeds: Sequence[int] | None = None, items: Sequence[str] = ()) -> Experiment:
    """An experiment by name with ``key=value`` items (settings, ``proxy.*`` options, recipe overrides)."""
    try:
        cls = EXPERIMENTS[name]
    except KeyError:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}") from None
    settings, overrides = cls.settings_class.parse(items)
    build_recipe(settings.recipe, overrides)  # bad recipe overrides fail here, before anything runs
    return cls(cls.default_seeds if seeds is None else seeds, settings, overrides)
