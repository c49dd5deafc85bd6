"""The experiment machinery on tiny settings: generated architectures, width matching, a 2-step run of every
experiment (CSV, PNG, summary), resume after an interruption, and the rank statistics."""

from __future__ import annotations

import csv
import json
import sqlite3
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from spinenet.experiments import (DAMAGES, ORDERINGS, create_experiment, damage, fixed_ordering, kendall_tau,
                                  ordering_levels, report_experiment, run_experiment, scale_decreased_fpn,
                                  spinenet49_architecture)
from spinenet.experiments.architectures import backbone_macs, block_multiset, matched_scale
from spinenet.experiments.stats import bootstrap_interval
from spinenet.graph import resolve
from spinenet.registry import get_model_def
from spinenet.search.journal import Journal as SearchJournal

SCALING_49S = get_model_def("spinenet49s").scaling
# Tiny trees settings: 64 px, 2 steps of 2 images, a checkpoint every step; held-out = OSBS, cross-site = SOAP.
TINY_TREES = ["lr_factors=1", "mac_tolerance=0.05", "val_data=trees:osbs", "cross_sites=trees:soap", "steps=2",
              "batch_size=2", "image_size=64", "eval_image_size=64", "tile_size=400", "tile_overlap=0",
              "warmup_steps=1", "checkpoint_every=1", "eval_every=0", "log_every=1", "model.filter_size_scale=0.1",
              "model.endpoints_num_filters=16", "model.head_width=16", "model.head_convs=1"]
TINY_PROXY = ["proxy.steps=2", "proxy.batch_size=2", "proxy.image_size=64", "proxy.tile_size=400",
              "proxy.warmup_steps=1", "proxy.eval_image_size=64", "proxy.model.head_width=8",
              "proxy.model.head_convs=1"]


def _rows(folder):
    with open(folder / "runs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _check_outputs(folder, n_rows):
    rows = _rows(folder)
    assert len(rows) == n_rows, [r["run"] for r in rows]
    assert all(r["status"] == "done" for r in rows), [(r["run"], r["error"]) for r in rows]
    assert (folder / "summary.png").stat().st_size > 1000
    assert json.loads((folder / "summary.json").read_text()) is not None
    report = (folder / "summary.md").read_text()
    for r in rows:
        if r["kind"] in ("train", "proxy"):
            assert f"| {r['model']} |" in report, (r["model"], report)
        if r["kind"] == "search":
            assert f"| {r['run']} |" in report, (r["run"], report)
        if r["kind"] == "train":
            assert int(r["params"]) > 0 and int(r["macs"]) > int(r["backbone_macs"]) > 0
            assert json.loads(r["recipe"])["schedule"]["steps"] == 2
            assert float(r["wall_time_s"]) > 0
        if r["kind"] in ("train", "proxy") and not r["reused_from"]:
            assert float(r["cpu_time_s"]) > 0
    return rows


# ------------------------------------------------------------------------------------------ architectures
def test_scale_decreased_fpn_is_resnet50_order_plus_fpn():
    arch = scale_decreased_fpn()
    graph = resolve(arch, SCALING_49S)
    inner = [b for b in arch.blocks if not b.is_output]
    levels = [s.level for s in arch.stem] + [b.level for b in inner]
    assert Counter(levels) == Counter({2: 3, 3: 4, 4: 6, 5: 3})
    assert levels == sorted(levels)  # scale-decreased
    first = len(arch.stem)
    assert all(b.input_offsets == (first + k - 1,) for k, b in enumerate(inner))  # a chain
    outputs = {b.level: (first + k, b) for k, b in enumerate(arch.blocks) if b.is_output}
    assert sorted(outputs) == [3, 4, 5, 6, 7] and sorted(graph.endpoints) == [3, 4, 5, 6, 7]
    assert outputs[4][1].input_offsets[1] == outputs[5][0]  # top-down: P4 reads P5
    assert outputs[3][1].input_offsets[1] == outputs[4][0]
    assert outputs[7][1].input_offsets == (outputs[6][0],)
    low = scale_decreased_fpn(min_level=2, max_level=5)
    assert sorted(resolve(low, SCALING_49S, min_level=2, max_level=5).endpoints) == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="level-2 count"):
        scale_decreased_fpn((1, 4, 6, 3))


@pytest.mark.parametrize("name", list(ORDERINGS))
def test_fixed_orderings_keep_the_blocks_and_follow_their_shape(name):
    base = spinenet49_architecture()
    inter, outs = ordering_levels(name)
    assert Counter(inter) == Counter(b.level for b in base.blocks if not b.is_output)
    diffs = np.sign(np.diff(inter))
    turns = int(np.count_nonzero(np.diff(diffs[diffs != 0])))
    assert turns == len(ORDERINGS[name]) - 1  # hourglass turns once, fish twice
    assert diffs[0] > 0  # both start by going down in resolution
    for seed in (0, 1):
        arch = fixed_ordering(name, seed=seed)
        resolve(arch, SCALING_49S)  # a valid graph
        assert block_multiset(arch) == block_multiset(base)
        assert [b.level for b in arch.blocks] == inter + outs
        for k, b in enumerate(arch.blocks):  # the search space's rule: intermediate parents among the last 5
            entry = len(arch.stem) + k
            assert len(set(b.input_offsets)) == 2 and max(b.input_offsets) < entry
            if not b.is_output:
                assert min(b.input_offsets) >= entry - 5
    assert fixed_ordering(name, seed=0) != fixed_ordering(name, seed=1)


def test_docs_page_prints_the_generated_orderings():
    page = (Path(__file__).resolve().parents[1] / "docs" / "experiments" / "README.md").read_text()
    for name in ORDERINGS:
        inter, outs = ordering_levels(name)
        row = f"| {name} | {', '.join(ORDERINGS[name])} | {', '.join(map(str, inter))} | {', '.join(map(str, outs))} |"
        assert row in page, row


def test_damages_replace_inputs_by_the_previous_block():
    base = spinenet49_architecture()
    for kind in DAMAGES:
        arch = damage(kind)
        resolve(arch, SCALING_49S)
        assert block_multiset(arch) == block_multiset(base)
        for k, (b, orig) in enumerate(zip(arch.blocks, base.blocks)):
            prev = len(arch.stem) + k - 1
            near, far = max(orig.input_offsets), min(orig.input_offsets)
            expected = {"short": {far, prev}, "long": {near, prev}, "both": {prev}}[kind]
            assert set(b.input_offsets) == expected, (kind, k)
    assert all(len(b.input_offsets) == 1 for b in damage("both").blocks)
    with pytest.raises(ValueError, match="unknown damage"):
        damage("middle")


def test_matched_width_is_within_ten_percent_of_the_reference_macs():
    kwargs = {"endpoints_num_filters": 16, "max_level": 5}
    target = backbone_macs(spinenet49_architecture(), 64, filter_size_scale=0.1, **kwargs)
    for arch in (scale_decreased_fpn(max_level=5), damage("both"), fixed_ordering("fish")):
        scale = matched_scale(arch, target, 64, start=0.1, tolerance=0.05, **kwargs)
        got = backbone_macs(arch, 64, filter_size_scale=scale, **kwargs)
        assert abs(got / target - 1) <= 0.10, (arch.name, got, target)
    with pytest.raises(ValueError, match="within 10%"):
        matched_scale(scale_decreased_fpn(max_level=5), 10, 64, **kwargs)


def test_kendall_tau_and_bootstrap():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # ties: 3 concordant, 1 discordant pair, 5 pairs untied in each variable -> 2 / 5 (tau-b)
    assert kendall_tau([1, 2, 2, 3], [1, 3, 2, 2]) == pytest.approx(0.4)
    assert np.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    lo, hi = bootstrap_interval(range(12), [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10], resamples=300)
    assert 0 < lo <= kendall_tau(range(12), [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10]) <= hi <= 1


def test_cli_help_names_every_experiment():
    from spinenet.cli import build_parser
    from spinenet.experiments import EXPERIMENTS

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["experiment"]
    text = next(a.help for a in sub._actions if a.dest == "name")
    assert all(name in text for name in EXPERIMENTS), text


def test_cli_errors_exit_2(tmp_path, capsys):
    from spinenet.cli import main

    assert main(["experiment", "nope", "--out", str(tmp_path / "a")]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    assert main(["experiment", "ablations", "budget=x", "--out", str(tmp_path / "b")]) == 2
    assert main(["experiment", "ablations", "--out", str(tmp_path / "c"), "--resume"]) == 2
    assert "no experiment journal" in capsys.readouterr().err


def test_settings_and_overrides_are_split_and_checked():
    exp = create_experiment("ablations", [0], ["budget=3", "orderings=fish", "steps=7", "proxy.steps=2",
                                               "model.head_width=8"])
    assert exp.settings.budget == 3 and exp.settings.orderings == ("fish",) and exp.settings.proxy == {"steps": 2}
    assert exp.overrides == ["steps=7", "model.head_width=8"] and exp.recipe.schedule.steps == 7
    with pytest.raises(ValueError, match="unknown experiment"):
        create_experiment("nope")
    with pytest.raises(ValueError, match="budget"):
        create_experiment("ablations", [0], ["budget=many"])


def test_comparisons_plan_paired_runs_first():
    """Every prefix of a comparison's plan pairs the models: the recipe's lr first, then seed by seed."""
    exp = create_experiment("permuted-vs-decreased-trees", [0, 1, 2])
    keys = [run.key for run in exp.plan({})]
    assert keys[:6] == [f"{m}-s{s}-lr1" for s in range(3) for m in ("spinenet49s", "r50-fpn")]
    assert sorted(keys) == sorted(f"{m}-s{s}-lr{k}" for m in ("spinenet49s", "r50-fpn") for s in range(3)
                                  for k in range(3))
    fm = create_experiment("permuted-vs-decreased-fmnist", [0, 1], ["lr_factors=1,3"])
    assert [run.key for run in fm.plan({})] == ["spinenet49-s0-lr0", "r50-s0-lr0", "spinenet49-s1-lr0",
                                                "r50-s1-lr0", "spinenet49-s0-lr1", "r50-s0-lr1",
                                                "spinenet49-s1-lr1", "r50-s1-lr1"]


# -------------------------------------------------------------------------------------------- tiny runs
class _Killed(BaseException):
    """Stands for kill -9: nothing in the runner catches it."""


def test_trees_comparison_runs_and_resumes_after_an_interruption(tmp_path, monkeypatch, one_thread):
    from spinenet.engine.trainer import Trainer

    save = Trainer.save
    killed = []

    def save_then_die(self, path=None):
        out = save(self, path)
        if "r50-fpn" in str(self.out) and self.step == 1 and not killed:
            killed.append(self.step)
            raise _Killed()
        return out

    monkeypatch.setattr(Trainer, "save", save_then_die)
    exp = create_experiment("permuted-vs-decreased-trees", [0], TINY_TREES)
    with pytest.raises(_Killed):
        run_experiment(exp, tmp_path, progress=False)
    first = tmp_path / "runs" / "spinenet49s-s0-lr0" / "train" / "checkpoints" / "final.pt"
    stamp = first.stat().st_mtime_ns
    assert (tmp_path / "runs" / "r50-fpn-s0-lr0" / "train" / "checkpoints" / "last.pt").is_file()
    with pytest.raises(ValueError, match="--resume"):
        run_experiment(create_experiment("permuted-vs-decreased-trees", [0], TINY_TREES), tmp_path, progress=False)
    # --report rewrites the outputs of the interrupted experiment from its journal and runs nothing
    report = report_experiment(create_experiment("permuted-vs-decreased-trees", [0], TINY_TREES), tmp_path)
    assert [r.status for r in report.values()] == ["done", "running"]
    assert "| spinenet49s | " in (tmp_path / "summary.md").read_text() and len(_rows(tmp_path)) == 2
    with pytest.raises(ValueError, match="--report: seeds"):
        report_experiment(create_experiment("permuted-vs-decreased-trees", [1], TINY_TREES), tmp_path)
    with pytest.raises(FileNotFoundError, match="--report"):
        report_experiment(create_experiment("permuted-vs-decreased-trees", [0], TINY_TREES), tmp_path / "none")
    with pytest.raises(ValueError, match="differ"):
        run_experiment(create_experiment("permuted-vs-decreased-trees", [1], TINY_TREES), tmp_path, resume=True,
                       progress=False)
    records = run_experiment(create_experiment("permuted-vs-decreased-trees", [0], TINY_TREES), tmp_path,
                             resume=True, progress=False)
    assert first.stat().st_mtime_ns == stamp  # the finished run was not run again
    assert records["spinenet49s-s0-lr0"].attempts == 1
    assert records["r50-fpn-s0-lr0"].attempts == 2
    assert records["r50-fpn-s0-lr0"].result["resumed_from_step"] == 1
    # a journal written before a setting existed resumes when the setting is at its default
    from spinenet.experiments.journal import ExperimentJournal

    journal = ExperimentJournal(tmp_path / ExperimentJournal.FILE)
    stored = journal.config()
    del stored["settings"]["reuse"]
    journal.set_config(stored)
    journal.close()
    # the command line on the finished folder: nothing left to run, outputs rewritten, exit 0
    from spinenet.cli import main

    (tmp_path / "runs.csv").unlink()
    assert main(["experiment", "permuted-vs-decreased-trees", *TINY_TREES, "--seeds", "0", "--out", str(tmp_path),
                 "--resume", "--quiet"]) == 0
    assert first.stat().st_mtime_ns == stamp
    rows = {r["run"]: r for r in _check_outputs(tmp_path, 2)}
    assert {r["attempts"] for r in rows.values()} == {"1", "2"}
    assert "| wall time (min) | CPU time (min) |" in (tmp_path / "summary.md").read_text()
    for row in rows.values():
        assert {"val/AP50", "val/AP", "soap/AP50", "soap/AP"} <= set(row)
    a, b = (int(rows[k]["backbone_macs"]) for k in ("spinenet49s-s0-lr0", "r50-fpn-s0-lr0"))
    assert abs(b / a - 1) <= 0.10
    assert json.loads(rows["r50-fpn-s0-lr0"]["recipe"])["model"]["filter_size_scale"] != 0.1
    # another experiment that plans the same job (the ablations' "learned" is SpineNet-49S at the recipe's lr)
    # takes its result instead of training again; its other runs train
    other = tmp_path / "ablations"
    ablations = run_experiment(create_experiment("ablations", [0], TINY_TREES + ["orderings=", "damages=both",
                                                                               f"reuse={tmp_path}"]),
                               other, progress=False)
    assert set(ablations) == {"learned-s0-lr0", "no-both-s0-lr0"}
    learned = ablations["learned-s0-lr0"].result
    assert learned["reused_from"] == f"{tmp_path}:spinenet49s-s0-lr0"
    assert learned["metrics"] == records["spinenet49s-s0-lr0"].result["metrics"]
    assert not (other / "runs" / "learned-s0-lr0").exists() and (other / "runs" / "no-both-s0-lr0").is_dir()
    reused = {r["run"]: r for r in _rows(other)}
    assert reused["learned-s0-lr0"]["reused_from"].endswith(":spinenet49s-s0-lr0")
    assert reused["no-both-s0-lr0"]["reused_from"] == ""
    assert reused["no-both-s0-lr0"]["cpu"]  # the processor it ran on, beside its times
    # the folder gone, its runs.jsonl stands in for it: the same experiment elsewhere trains nothing
    archive = tmp_path / "ablations.jsonl"
    os.replace(other / "runs.jsonl", archive)
    again = run_experiment(create_experiment("ablations", [0], TINY_TREES + ["orderings=", "damages=both",
                                                                            f"reuse={archive}"]),
                           tmp_path / "again", progress=False)
    assert {k: r.result["reused_from"] for k, r in again.items()} == {
        "learned-s0-lr0": f"{archive}:learned-s0-lr0", "no-both-s0-lr0": f"{archive}:no-both-s0-lr0"}
    assert again["no-both-s0-lr0"].result["metrics"] == ablations["no-both-s0-lr0"].result["metrics"]
    assert not (tmp_path / "again" / "runs").exists()
    # --report on a new folder: the tables of the kept runs alone, nothing trained (no-short was never run)
    report = tmp_path / "report"
    kept = report_experiment(create_experiment("ablations", [0], TINY_TREES + ["orderings=", "damages=short,both",
                                                                              f"reuse={archive}"]), report)
    assert set(kept) == {"learned-s0-lr0", "no-both-s0-lr0"} and not (report / "runs").exists()
    assert "| no-both |" in (report / "summary.md").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 1: not a run record"):
        run_experiment(create_experiment("ablations", [0], TINY_TREES + [f"reuse={bad}"]), tmp_path / "bad",
                       progress=False)


def test_fashion_comparison_tiny(tmp_path, one_thread):
    from spinenet.data.classification import fashion_mnist_dir

    if not (fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz").is_file():
        message = f"Fashion-MNIST is not in {fashion_mnist_dir()} (apt-get install dataset-fashion-mnist)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; under CI=true this is a failure, not a skip")
        pytest.skip(message)
    exp = create_experiment("permuted-vs-decreased-fmnist", [0], [
        "lr_factors=1", "mac_tolerance=0.05", "train_limit=32", "test_limit=32", "steps=2", "batch_size=8",
        "image_size=32", "warmup_steps=1", "checkpoint_every=1", "num_workers=0", "model.filter_size_scale=0.1",
        "model.endpoints_num_filters=16"])
    run_experiment(exp, tmp_path, progress=False)
    rows = _check_outputs(tmp_path, 2)
    assert {r["model"] for r in rows} == {"spinenet49", "r50"}
    assert all(0.0 <= float(r["val/top1"]) <= 1.0 for r in rows)


def test_ablations_tiny(tmp_path, one_thread):
    items = TINY_TREES + TINY_PROXY + ["orderings=fish", "damages=both", "budget=2"]
    first = run_experiment(create_experiment("ablations", [0], items), tmp_path, progress=False, stop_after=2)
    assert [r.status for r in first.values()] == ["done", "done"] and len(_rows(tmp_path)) == 2
    run_experiment(create_experiment("ablations", [0], items), tmp_path, resume=True, progress=False)
    rows = {r["run"]: r for r in _check_outputs(tmp_path, 5)}
    assert {"learned-s0-lr0", "no-both-s0-lr0", "fish-s0-lr0", "proxy-fish-0", "proxy-fish-1"} == set(rows)
    rewards = [float(rows[f"proxy-fish-{i}"]["proxy/AP50"]) for i in range(2)]
    picked = json.loads((tmp_path / "runs" / "fish-s0-lr0" / "arch.json").read_text())["name"]
    assert picked == f"fish-{int(np.argmax(rewards))}"


def test_proxy_rank_tiny(tmp_path, one_thread):
    exp = create_experiment("proxy-rank", [0, 1], TINY_TREES + TINY_PROXY + ["random_archs=1",
                                                                            "fixed_archs=spinenet49"])
    run_experiment(exp, tmp_path, progress=False)
    _check_outputs(tmp_path, 6)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n"] == 2 and {p["arch"] for p in summary["pairs"]} == {"spinenet49-random-0", "spinenet49"}
    assert "tau_proxy_vs_full" in summary and "tau_seed_vs_seed" in summary
    assert summary["n_seed0"] == 2 and "tau_proxy_vs_seed0" in summary
    assert summary["proxy_cpu_time_s"]["n"] == 2 and summary["proxy_cpu_time_s"]["mean"] > 0
    assert list(summary["tau_full_at_step"]) == ["2"]  # TINY_TREES evaluates at its last step only

    # a second proxy seed against the same full runs: only the two new proxy trials run
    other = tmp_path / "two-proxy-seeds"
    run_experiment(create_experiment("proxy-rank", [0, 1], TINY_TREES + TINY_PROXY + [
        "random_archs=1", "fixed_archs=spinenet49", "proxy_seeds=0,1", f"reuse={tmp_path}"]), other, progress=False)
    rows = {r["run"]: r for r in _check_outputs(other, 8)}
    trained = {k for k, r in rows.items() if not r["reused_from"]}
    assert trained == {"proxy-spinenet49-random-0-s1", "proxy-spinenet49-s1"}
    assert rows["proxy-spinenet49"]["reused_from"] == f"{tmp_path}:proxy-spinenet49"
    second = json.loads((other / "summary.json").read_text())
    assert "tau_proxy_seed_vs_seed" in second and second["n"] == 2
    assert second["tau_full_at_step"] == summary["tau_full_at_step"]  # read from the reused runs' own folders
    means = {p["arch"]: p["proxy"] for p in second["pairs"]}
    for arch in means:
        rewards = [float(rows[k]["proxy/AP50"]) for k in (f"proxy-{arch}", f"proxy-{arch}-s1")]
        assert means[arch] == pytest.approx(np.mean(rewards))
    assert "| proxy seed 0 | proxy seed 1 | proxy mean |" in (other / "summary.md").read_text()

    # trials recorded before jobs named their reward set were scored on the small image: reused only as that
    with sqlite3.connect(tmp_path / "experiment.sqlite") as db:
        for key, spec in db.execute("SELECT key, spec FROM runs WHERE kind='proxy'").fetchall():
            spec = json.loads(spec)
            assert spec["payload"]["options"].pop("reward_set") == "large-block"
            db.execute("UPDATE runs SET spec=? WHERE key=?", (json.dumps(spec), key))
    items = TINY_TREES + TINY_PROXY + ["random_archs=1", "fixed_archs=spinenet49", f"reuse={tmp_path}"]
    small, block = tmp_path / "small", tmp_path / "block"
    run_experiment(create_experiment("proxy-rank", [0, 1], items + ["proxy.reward_set=small-image"]), small,
                   progress=False)
    assert all(r["reused_from"] for r in _rows(small))
    run_experiment(create_experiment("proxy-rank", [0, 1], items), block, progress=False)
    assert {r["run"] for r in _rows(block) if not r["reused_from"]} == {"proxy-spinenet49-random-0",
                                                                        "proxy-spinenet49"}


def test_proxy_rank_plans_proxies_then_seed_by_seed():
    exp = create_experiment("proxy-rank", [0, 1], ["random_archs=2", "fixed_archs=spinenet49"])
    keys = [r.key for r in exp.plan({})]
    archs = ["spinenet49-random-0", "spinenet49-random-1", "spinenet49"]
    assert keys == ([f"proxy-{a}" for a in archs] + [f"{a}-s0-lr0" for a in archs] + [f"{a}-s1-lr0" for a in archs])
    two = create_experiment("proxy-rank", [0], ["random_archs=2", "fixed_archs=spinenet49", "proxy_seeds=0,1"])
    runs = two.plan({})
    assert [r.key for r in runs] == ([f"proxy-{a}" for a in archs] + [f"proxy-{a}-s1" for a in archs]
                                     + [f"{a}-s0-lr0" for a in archs])
    assert [r.payload["seed"] for r in runs[:6]] == [0, 0, 0, 1, 1, 1]
    # a trial's job names the reward set it is scored on, the default included (what ``reuse`` matches)
    assert {r.payload["options"]["reward_set"] for r in runs[:6]} == {"large-block"}
    small = create_experiment("proxy-rank", [0], ["random_archs=2", "proxy.reward_set=small-image"]).plan({})
    assert small[0].payload["options"] == {"reward_set": "small-image"}
    with pytest.raises(ValueError, match="reward_set='nope'"):
        create_experiment("proxy-rank", [0], ["proxy.reward_set=nope"]).plan({})


def test_search_vs_random_sizes_the_strategies_to_the_budget():
    payloads = {r.key: r.payload for r in create_experiment("search-vs-random", [0], []).searches()}
    assert set(payloads) == {"search-random-0", "search-random-1", "search-rl-0", "search-rl-1",
                             "search-evolution-0"}
    # 30 trials: evolution mutates after its first 10 random draws; the controller learns every 5 trials
    assert payloads["search-evolution-0"]["strategy_options"] == {"population_size": 10, "sample_size": 3}
    assert payloads["search-rl-1"]["strategy_options"] == {"batch_size": 5}
    assert payloads["search-random-0"]["strategy_options"] == {}
    with pytest.raises(ValueError, match="evolution_population=30"):  # all 30 trials would be random draws
        create_experiment("search-vs-random", [0], ["evolution_population=30"]).searches()
    with pytest.raises(ValueError, match="rl_batch=4"):
        create_experiment("search-vs-random", [0], ["trials=4", "rl_batch=4"]).searches()


def test_search_demo_settings_are_valid():
    """``make search-demo``'s settings parse, and its searches and first runs plan (a typo fails here, not after
    the searches of a 30-minute demo)."""
    text = (Path(__file__).resolve().parents[1] / "Makefile").read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if "experiment search-vs-random" in ln)
    words = line.split("search-vs-random", 1)[1].split()
    items = [w for w in words[:words.index("--seeds")] if "=" in w]
    exp = create_experiment("search-vs-random", [0], items)
    assert exp.settings.trials == 4 and exp.settings.evolution_population < exp.settings.trials
    assert [r.key for r in exp.plan({})] == ["search-random-0", "search-rl-0", "search-evolution-0"]


def test_search_vs_random_tiny(tmp_path, one_thread):
    exp = create_experiment("search-vs-random", [0], TINY_TREES + TINY_PROXY + [
        "strategies=random,evolution", "trials=3", "search_seeds=0", "evolution_population=2",
        "evolution_sample=2"])
    run_experiment(exp, tmp_path, progress=False)
    rows = {r["run"]: r for r in _check_outputs(tmp_path, 7)}
    assert set(rows) == {"search-random-0", "search-evolution-0", "best-random-s0-lr0", "best-evolution-s0-lr0",
                         "median-random-s0-lr0", "spinenet49s-s0-lr0", "r50-fpn-s0-lr0"}
    curve = json.loads((tmp_path / "summary.json").read_text())["best_so_far"]["search-random-0"]
    assert len(curve) == 3 and curve[2] >= curve[1] >= curve[0]
    # the evolution search ran with the budget-sized population: its two random draws, then one mutation
    journal = SearchJournal(tmp_path / "runs" / "search-evolution-0" / SearchJournal.FILE)
    try:
        assert journal.config()["strategy_options"] == {"population_size": 2, "sample_size": 2}
        assert len(journal.trials("done")) == 3
    finally:
        journal.close()
    # its runs.jsonl stands in for every job, the searches included: the same experiment elsewhere runs nothing
    again = run_experiment(create_experiment("search-vs-random", [0], TINY_TREES + TINY_PROXY + [
        "strategies=random,evolution", "trials=3", "search_seeds=0", "evolution_population=2",
        "evolution_sample=2", f"reuse={tmp_path / 'runs.jsonl'}"]), tmp_path / "again", progress=False)
    assert all(r.result["reused_from"].endswith(f":{k}") for k, r in again.items()) and len(again) == 7
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["best_so_far"]["search-random-0"] == curve
