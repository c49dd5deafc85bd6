"""Run an experiment into a folder: plan its runs, execute each as a checkpointed job, write CSV and PNG.

An experiment (:class:`Experiment`) plans its runs in stages: :meth:`Experiment.plan` gets the results finished so
far and returns every run whose inputs are known (e.g. the re-training of a search's best architecture appears
once the search has finished). :func:`run_experiment` executes the pending runs one at a time:

* ``train``: one engine training job in ``DIR/runs/<key>/train`` (:func:`spinenet.experiments.training.train`),
  checkpointed every ``checkpoint_every`` steps; an interrupted job continues from its last checkpoint;
* ``proxy``: one proxy-task trial (:func:`spinenet.search.proxy.train_proxy`, a few minutes; an interrupted trial
  starts again);
* ``search``: one architecture search (:class:`spinenet.search.runner.Search`, with its own SQLite journal:
  an interrupted search continues where its journal stands).

``DIR/experiment.sqlite`` (:mod:`.journal`) records each run as it starts and finishes. After ``kill -9`` the same
command with ``--resume`` continues: finished runs are not run again, the interrupted one resumes. Without
``--resume`` a non-empty ``DIR`` is refused (as ``spinenet train`` and ``spinenet search`` do), and ``--resume``
refuses a different experiment, seed list, settings or overrides. ``DIR/runs.csv``, ``DIR/runs.jsonl`` and
``DIR/summary.png`` are rewritten (atomically) after every finished run.

``DIR/runs.jsonl`` is the portable record of the runs: one JSON object per run (its job, result, cost, commit and
CPU), small enough to keep beside the result pages. ``reuse=`` takes such a file as it takes a folder, so an
experiment continues on another machine, or after its folder is gone, from the runs it had finished.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import subprocess
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

from ..specs import Architecture
from .journal import ExperimentJournal, RunRecord

KINDS = ("train", "proxy", "search")
# Jobs ``reuse`` may take from a finished run with the same payload. Training runs and proxy trials are
# deterministic for their payload on one processor, device and thread count (another CPU's kernels round
# differently: the record names its CPU). A search is not (its workers finish trials in the order the machine lets
# them), but a finished one is a complete draw of that search: taking it is resuming it.
REUSABLE = ("train", "proxy", "search")


@dataclass(frozen=True)
class Run:
    """One job of an experiment: ``key`` names its folder; ``labels`` (model, seed, lr, ...) go to the CSV."""

    key: str
    kind: str
    labels: dict[str, Any]
    payload: dict[str, Any]

    def spec(self) -> dict[str, Any]:
        return {"labels": self.labels, "payload": self.payload}


@dataclass
class Settings:
    """Settings every experiment reads; experiments add their own fields. ``key=value`` on the command line sets
    a field of the experiment's settings when the key names one, a proxy option when it starts with ``proxy.``,
    and a recipe override (``steps=2``, ``model.head_width=16``) otherwise."""

    lr_factors: tuple[float, ...] = (0.5, 1.0, 2.0)  # the learning-rate sweep, as factors of the recipe's lr
    reuse: tuple[str, ...] = ()  # experiment folders whose finished runs stand in for identical ones (same job)
    mac_tolerance: float = 0.01  # relative MACs tolerance of the width search (the comparison asks for 10%)
    proxy: dict[str, Any] = field(default_factory=dict)  # proxy-task options (``proxy.steps=2``)

    @classmethod
    def parse(cls, items: Sequence[str]) -> tuple["Settings", list[str]]:
        """Split ``key=value`` strings into settings and recipe overrides (the latter returned as strings)."""
        from .training import parse_value

        types = {f.name: str(f.type) for f in fields(cls)}
        values: dict[str, Any] = {}
        proxy: dict[str, Any] = {}
        overrides: list[str] = []
        for item in items:
            if "=" not in item:
                raise ValueError(f"{item!r} is not key=value")
            key, value = (s.strip() for s in item.split("=", 1))
            if key.startswith("proxy."):
                proxy[key[len("proxy."):]] = parse_value(value)
            elif key.replace("-", "_") in types and key != "proxy":
                name = key.replace("-", "_")
                values[name] = _parse_setting(name, value, types[name])
            else:
                overrides.append(item)
        return cls(**values, proxy=proxy), overrides

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse_setting(name: str, value: str, typ: str) -> Any:
    try:
        if typ.startswith("tuple"):
            conv = float if "float" in typ else (int if "int" in typ else str)
            return tuple(conv(v) for v in value.split(",") if v.strip())
        if typ.startswith("bool"):
            return value.lower() in ("1", "true", "yes")
        if typ.startswith("int"):
            return int(value)
        if typ.startswith("float"):
            return float(value)
        return value
    except ValueError:
        raise ValueError(f"setting {name}={value!r}: expected {typ}") from None


class Experiment:
    """Base class: a name, a settings class, the plan, and what the summary plot adds."""

    name: str = ""
    settings_class: type[Settings] = Settings
    default_seeds: tuple[int, ...] = (0, 1, 2)
    primary_metric: str = "val/AP50"

    def __init__(self, seeds: Sequence[int], settings: Settings, overrides: Sequence[str]) -> None:
        self.seeds, self.settings, self.overrides = tuple(seeds), settings, list(overrides)

    def plan(self, results: dict[str, dict[str, Any] | None]) -> list[Run]:
        raise NotImplementedError

    def analyse(self, records: dict[str, RunRecord], folder: Path | None = None) -> dict[str, Any]:
        """Experiment-level numbers from the finished runs (written to ``summary.json``); ``folder`` is the
        experiment's output folder, where each run keeps its files under ``runs/KEY``."""
        return {}

    def plot_extra(self, ax, records: dict[str, RunRecord], analysis: dict[str, Any]) -> None:
        """Draw the experiment's own panel beside the per-model one (experiments that have one override this)."""

    def report(self, records: dict[str, RunRecord], analysis: dict[str, Any]) -> str:
        """Markdown tables of the result (``summary.md``), ready for the experiment's page."""
        return ""


def git_commit() -> str:
    """``git rev-parse HEAD`` of the source tree (``+dirty`` with uncommitted changes); '' outside a git clone."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere): run times are only
    comparable on the same CPU."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------------------- execution
def execute(run: Run, folder: Path, device: str | None) -> dict[str, Any]:
    """Run one job in ``folder`` (continuing an interrupted train or search job); returns its result."""
    if run.kind == "train":
        return _execute_train(run, folder, device)
    if run.kind == "proxy":
        from ..search.proxy import score_architecture

        p = run.payload
        arch = Architecture.from_dict(p["arch"], source=f"run {run.key}")
        options = dict(p.get("options") or {})
        if device:
            options["device"] = device
        scored = score_architecture(arch, options, folder, int(p["seed"]))
        return {"metrics": {f"proxy/{k}": float(v) for k, v in scored["metrics"].items()},
                "reward": float(scored["reward"])}
    if run.kind == "search":
        return _execute_search(run, folder, device)
    raise ValueError(f"run {run.key}: unknown kind {run.kind!r}; expected one of {KINDS}")


def _execute_train(run: Run, folder: Path, device: str | None) -> dict[str, Any]:
    from .training import build_recipe, recipe_dict, train

    p = run.payload
    folder.mkdir(parents=True, exist_ok=True)
    overrides = list(p["overrides"])
    if p.get("arch") is not None:
        arch_path = folder / "arch.json"
        Architecture.from_dict(p["arch"], source=f"run {run.key}").save(arch_path)
        overrides.append(f"model.block_specs={arch_path.resolve()}")
    recipe = build_recipe(p["recipe"], overrides)
    out = folder / "train"
    resume = (out / "checkpoints" / "last.pt").is_file()
    if out.exists() and not resume:  # started, but killed before its first checkpoint
        shutil.rmtree(out)
    result = train(p["task"], p["model"], p["data"], p.get("val_data"), recipe, out, dict(p.get("extra_eval") or {}),
                   device, resume)
    result["recipe"] = recipe_dict(recipe)
    return result


def _execute_search(run: Run, folder: Path, device: str | None) -> dict[str, Any]:
    from ..search.journal import Journal
    from ..search.runner import Search, SearchConfig

    p = run.payload
    options = dict(p.get("options") or {})
    if device:
        options["device"] = device
    config = SearchConfig(p["space"], p["strategy"], "proxy", options, dict(p.get("strategy_options") or {}),
                          seed=int(p["seed"]))
    resume = (folder / Journal.FILE).is_file()
    if folder.exists() and not resume:
        shutil.rmtree(folder)
    search = Search(folder, config, trials=int(p["trials"]), workers=int(p.get("workers", 0)), resume=resume)
    best = search.run(progress=False)
    trials = [{"id": t.id, "reward": t.reward, "arch": t.arch, "macs": t.macs} for t in search.journal.trials("done")]
    return {"metrics": {"search/best_reward": best.reward if best else None},
            "reward": best.reward if best else None, "best_arch": best.arch if best else None, "trials": trials}


def run_experiment(experiment: Experiment, out: str | Path, *, resume: bool = False, device: str | None = None,
                   stop_after: int | None = None, progress: bool = True) -> dict[str, RunRecord]:
    """Execute every run of ``experiment`` into ``out`` (module docstring); returns the journal's records.

    ``stop_after`` returns before executing more than that many runs in this call (time budgets, tests); runs
    taken from ``reuse`` do not count."""
    out = Path(out)
    path = out / ExperimentJournal.FILE
    if resume and not path.is_file():
        raise FileNotFoundError(f"--resume: no experiment journal at {path}; start without --resume")
    if not resume and out.exists() and any(out.iterdir()):
        raise ValueError(f"output folder {out} already exists and is not empty; pass --resume to continue that "
                         f"experiment, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    journal = ExperimentJournal(path)
    journal.set_config(_same_experiment(experiment, journal, out, "--resume"))
    donors = _finished_jobs(experiment.settings.reuse)
    commit = git_commit()
    executed = 0
    try:
        while True:
            records = journal.runs()
            finished = {k: r.result for k, r in records.items() if r.status in ("done", "failed")}
            pending = [r for r in experiment.plan(finished) if r.key not in finished]
            if not pending:
                break
            if stop_after is not None and executed >= stop_after:  # from here on, only what reuse holds
                pending = [r for r in pending if _donor(donors, r) is not None]
                if not pending:
                    break
            run = pending[0]
            if run.kind not in KINDS:
                raise ValueError(f"run {run.key}: unknown kind {run.kind!r}")
            donor = _donor(donors, run)
            if donor is not None:
                journal.start(run.key, run.kind, run.spec())
                journal.finish(run.key, result={**(donor[1].result or {}), "reused_from": donor[0]},
                               error=donor[1].error, wall_time=donor[1].wall_time or 0.0, commit=donor[1].commit)
                if progress:
                    print(f"[{experiment.name}] {run.key}: the same job finished in {donor[0]}", flush=True)
                write_outputs(experiment, journal.runs(), out)
                continue
            attempt = journal.start(run.key, run.kind, run.spec())
            if progress:
                print(f"[{experiment.name}] {run.key} ({run.kind}, attempt {attempt}; {len(pending)} pending)",
                      flush=True)
            t0, c0 = time.time(), time.process_time()
            result, error = None, None
            try:
                result = execute(run, out / "runs" / run.key, device)
            except FloatingPointError as err:  # a diverged run (non-finite loss) is a result of its lr, not a crash
                error = f"{type(err).__name__}: {err}"
                traceback.print_exc()
            if result is not None:
                result = {**result, "cpu": cpu_model()}
            if result is not None and run.kind != "search":
                # CPU time of this process over all its threads: the run's cost whatever else shared the machine
                # (wall time counts that too). A search's trials run in worker processes, so it has none.
                result = {**result, "cpu_time_s": round(time.process_time() - c0, 3)}
            journal.finish(run.key, result=result, error=error, wall_time=time.time() - t0, commit=commit)
            executed += 1
            write_outputs(experiment, journal.runs(), out)
        records = journal.runs()
        write_outputs(experiment, records, out)
        return records
    finally:
        journal.close()


def _finished_jobs(sources: Sequence[str]) -> dict[str, tuple[str, RunRecord]]:
    """The finished runs of other experiments (``reuse``: experiment folders or their ``runs.jsonl`` files), by
    their job (the run's payload: task, model, data, recipe and overrides, architecture, evaluation sets; for a
    proxy trial the architecture, seed and proxy options; for a search its space, strategy, seed, trials and proxy
    options): a run planned here with the same job takes that result instead of running again (:data:`REUSABLE`).
    The CSV names the run it came from (``reused_from``)."""
    jobs: dict[str, tuple[str, RunRecord]] = {}
    for source in sources:
        for rec in read_records(source).values():
            # a failed run is one whose loss diverged: a result of its job too (any other error stops the experiment)
            if rec.kind in REUSABLE and (rec.status == "done" and rec.result or rec.status == "failed"):
                jobs.setdefault(json.dumps(_job(rec), sort_keys=True), (f"{source}:{rec.key}", rec))
    return jobs


def _donor(donors: dict[str, tuple[str, RunRecord]], run: Run) -> tuple[str, RunRecord] | None:
    return donors.get(json.dumps(run.payload, sort_keys=True)) if run.kind in REUSABLE else None


def read_records(source: str | Path) -> dict[str, RunRecord]:
    """The runs of an experiment folder (its journal) or of a ``runs.jsonl`` file."""
    path = Path(source)
    if path.is_dir() or path.suffix != ".jsonl":
        journal_path = path / ExperimentJournal.FILE
        if not journal_path.is_file():
            raise FileNotFoundError(f"reuse={source}: no experiment journal at {journal_path}; give an experiment "
                                    f"folder or its runs.jsonl")
        journal = ExperimentJournal(journal_path)
        try:
            return journal.runs()
        finally:
            journal.close()
    if not path.is_file():
        raise FileNotFoundError(f"reuse={source}: no such file; give an experiment folder or its runs.jsonl")
    records = {}
    with open(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                rec = RunRecord(**{f.name: item[f.name] for f in fields(RunRecord)})
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"reuse={source}, line {number}: not a run record ({err}); the file is written by "
                                 f"`spinenet experiment` as DIR/runs.jsonl") from None
            records[rec.key] = rec
    return records


def write_records(records: dict[str, RunRecord], path: Path) -> None:
    """``runs.jsonl``: one JSON object per run, every field of its journal row (atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        for rec in records.values():
            fh.write(json.dumps(asdict(rec), sort_keys=True) + "\n")
    os.replace(tmp, path)


def _job(rec: RunRecord) -> dict[str, Any]:
    """A finished run's job as runs are planned now (a proxy trial's options with their reward set)."""
    payload = rec.spec["payload"]
    if rec.kind != "proxy":
        return payload
    from ..search.proxy import resolve_options

    return {**payload, "options": resolve_options(dict(payload.get("options") or {}), recorded=True)}


def _same_experiment(experiment: Experiment, journal: ExperimentJournal, out: Path, flag: str) -> dict[str, Any]:
    """The experiment's configuration, refused (journal closed) when ``out`` holds a different one."""
    config = {"experiment": experiment.name, "seeds": list(experiment.seeds),
              "settings": json.loads(json.dumps(experiment.settings.to_dict())), "overrides": experiment.overrides}
    stored = journal.config()
    if stored is not None:  # a setting added since the journal was written counts at its default value
        defaults = json.loads(json.dumps(type(experiment.settings)().to_dict()))
        stored = {**stored, "settings": {**{k: v for k, v in defaults.items() if k not in stored.get("settings", {})},
                                         **stored.get("settings", {})}}
    if stored is not None and stored != config:
        diff = [k for k in config if config[k] != stored.get(k)]
        journal.close()
        raise ValueError(f"{flag}: {', '.join(f'{k}={config[k]!r}' for k in diff)} differ from the experiment in "
                         f"{out} ({', '.join(f'{k}={stored.get(k)!r}' for k in diff)})")
    return config


def report_experiment(experiment: Experiment, out: str | Path) -> dict[str, RunRecord]:
    """Rewrite ``runs.csv`` and the summaries of the experiment in ``out`` from its journal, running nothing: the
    tables of an experiment still running elsewhere, or of one written by an older version. Without a journal in
    a new or empty ``out``, the experiment's ``reuse`` sources make one: every planned run they hold is taken, none
    is run (the tables of kept ``runs.jsonl`` files)."""
    out = Path(out)
    path = out / ExperimentJournal.FILE
    if not path.is_file() and experiment.settings.reuse and not (out.exists() and any(out.iterdir())):
        return run_experiment(experiment, out, stop_after=0, progress=False)
    if not path.is_file():
        raise FileNotFoundError(f"--report: no experiment journal at {path}; give the --out of an experiment, or "
                                f"reuse= the folders or runs.jsonl files whose runs it should report")
    journal = ExperimentJournal(path)
    _same_experiment(experiment, journal, out, "--report")
    try:
        records = journal.runs()
        write_outputs(experiment, records, out)
        return records
    finally:
        journal.close()


# ------------------------------------------------------------------------------------------------ outputs
CSV_COLUMNS = ("run", "kind", "status", "model", "arch", "seed", "lr", "params", "backbone_macs", "macs",
               "wall_time_s", "cpu_time_s", "attempts", "resumed_from_step", "reused_from", "commit", "cpu")


def csv_rows(records: dict[str, RunRecord]) -> list[dict[str, Any]]:
    """One row per run: labels, cost, wall time, every metric as its own column, the recipe as JSON."""
    rows = []
    for rec in records.values():
        res = rec.result or {}
        labels = rec.spec.get("labels", {})
        row: dict[str, Any] = {"run": rec.key, "kind": rec.kind, "status": rec.status,
                               "wall_time_s": round(rec.wall_time, 3) if rec.wall_time is not None else "",
                               "attempts": rec.attempts, "commit": rec.commit or "",
                               "resumed_from_step": res.get("resumed_from_step", ""),
                               "reused_from": res.get("reused_from", ""),
                               **{k: res.get(k, "") for k in ("params", "backbone_macs", "macs", "cpu_time_s", "cpu")}}
        row.update({k: v for k, v in labels.items()})
        row.update({k: v for k, v in (res.get("metrics") or {}).items()})
        row["error"] = rec.error or ""
        row["recipe"] = json.dumps(res["recipe"], sort_keys=True) if res.get("recipe") else ""
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    header = list(CSV_COLUMNS)
    for row in rows:
        header += [k for k in row if k not in header and k not in ("error", "recipe")]
    header += ["error", "recipe"]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in header} for row in rows)
    os.replace(tmp, path)


def write_outputs(experiment: Experiment, records: dict[str, RunRecord], out: Path) -> None:
    """``runs.csv``, ``runs.jsonl`` (:func:`write_records`), ``summary.json`` (the experiment's analysis),
    ``summary.png`` and ``summary.md`` (its tables), each written atomically."""
    write_csv(csv_rows(records), out / "runs.csv")
    write_records(records, out / "runs.jsonl")
    analysis = experiment.analyse(records, out)
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(analysis, indent=2, sort_keys=True, default=float) + "\n")
    os.replace(tmp, out / "summary.json")
    plot_summary(experiment, records, analysis, out / "summary.png")
    tmp = out / "summary.md.tmp"
    tmp.write_text(experiment.report(records, analysis))
    os.replace(tmp, out / "summary.md")


def plot_summary(experiment: Experiment, records: dict[str, RunRecord], analysis: dict[str, Any],
                 path: Path) -> None:
    """Left: the primary metric of every training run by model (one dot per seed, one colour per lr); right: the
    experiment's own panel (proxy-vs-full scatter, best-so-far curves) when it has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_extra = type(experiment).plot_extra is not Experiment.plot_extra
    fig, axes = plt.subplots(1, 1 + has_extra, figsize=(6 + 6 * has_extra, 4.5), squeeze=False)
    ax = axes[0][0]
    train = [r for r in records.values() if r.kind == "train" and r.status == "done" and r.result]
    models = list(dict.fromkeys(r.spec["labels"].get("model", "?") for r in train))
    lrs = sorted({r.spec["labels"].get("lr") for r in train if r.spec["labels"].get("lr") is not None})
    for r in train:
        labels = r.spec["labels"]
        value = (r.result.get("metrics") or {}).get(experiment.primary_metric)
        if value is None:
            continue
        x = models.index(labels.get("model", "?"))
        k = lrs.index(labels["lr"]) if labels.get("lr") in lrs else 0
        ax.scatter(x + 0.1 * (k - (len(lrs) - 1) / 2), value, color=f"C{k}", s=25,
                   label=f"lr {labels.get('lr'):.4g}" if labels.get("lr") is not None else None)
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(experiment.primary_metric)
    ax.set_title(f"{experiment.name}: {len(train)} training runs")
    ax.grid(alpha=0.3)
    if has_extra:
        experiment.plot_extra(axes[0][1], records, analysis)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
