"""The search folder: journal, kill -9 + --resume, refusal of an existing folder, outputs, spinenet scale."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter

import pytest
import torch
from search_helpers import journal_rows, search_cmd, wait_for

from spinenet.profile import count_params, on_meta
from spinenet.registry import create_model
from spinenet.search.journal import Journal
from spinenet.search.runner import Search, SearchConfig
from spinenet.specs import RESNET_STEM, SPINENET_BLOCK_SPECS, TPU_NUM_SPECS, Architecture


@pytest.mark.slow
def test_kill_9_then_resume_loses_and_repeats_nothing(tmp_path):
    """SIGKILL mid-trial, then the same command with --resume: every finished trial is kept as it was and never
    evaluated again, the interrupted one is evaluated again, and the search reaches its trial count."""
    out, log = tmp_path / "search", tmp_path / "evaluations.txt"
    args = ["--space", "r23-sp30", "--strategy", "rl", "--trials", "14", "--workers", "0", "--reward", "synthetic",
            "macs=0", "sleep=0.3", f"log={log}"]
    proc = subprocess.Popen(search_cmd(out, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len([r for r in journal_rows(out) if r[1] == "done"]) >= 5
                 and journal_rows(out)[-1][1] == "running", 120, proc, "five finished trials")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    rows = journal_rows(out)
    before = {r[0]: r for r in rows if r[1] == "done"}
    interrupted = [r[0] for r in rows if r[1] == "running"]
    assert len(before) >= 5 and interrupted

    refused = subprocess.run(search_cmd(out, *args), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "already exists" in refused.stderr and "--resume" in refused.stderr

    done = subprocess.run(search_cmd(out, *args, "--resume"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    after = {r[0]: r for r in journal_rows(out)}
    assert sorted(after) == list(range(1, 15)) and all(r[1] == "done" for r in after.values())
    for trial_id, row in before.items():
        assert after[trial_id] == row
    for trial_id in interrupted:
        assert after[trial_id][5] == 2
    evaluations = Counter(int(line.split()[0]) for line in log.read_text().splitlines())
    assert all(evaluations[i] == 1 for i in before)
    assert all(evaluations[i] == 2 for i in interrupted)
    assert all(evaluations[i] == 1 for i in after if i not in before and i not in interrupted)
    # the controller learnt from every finished trial: 14 tells at batch 10 = one update, 4 buffered
    state = Journal(out / "journal.sqlite").strategy_state()
    assert state["updates"] == 1 and len(state["buffer"]) == 4


def test_resume_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="no search journal"):
        Search(tmp_path / "nothing", None, trials=3, resume=True)
    config = SearchConfig("r35-sp18", "random", "synthetic", {"macs": 0})
    Search(tmp_path / "s", config, trials=3).run(progress=False)
    with pytest.raises(ValueError, match="space='r23-sp30'"):
        Search(tmp_path / "s", SearchConfig("r23-sp30", "random", "synthetic"), trials=3, resume=True)
    with pytest.raises(ValueError, match="unknown reward"):
        Search(tmp_path / "t", SearchConfig("r35-sp18", "random", "accuracy"), trials=3)


def test_a_proxy_search_journal_names_its_reward_set(tmp_path):
    """A new search records the default reward set; one whose journal has none (written before journals named it)
    goes on with the small image it started on, not with today's default."""
    search = Search(tmp_path / "s", SearchConfig("spinenet49", "random", "proxy", {"steps": 2}), trials=1)
    assert search.journal.config()["reward_options"] == {"steps": 2, "reward_set": "large-block"}
    search.journal.set_config({**search.journal.config(), "reward_options": {"steps": 2}})
    search.journal.close()
    resumed = Search(tmp_path / "s", SearchConfig("spinenet49", "random", "proxy"), trials=1, resume=True)
    assert resumed.config.reward_options == {"steps": 2, "reward_set": "small-image"}
    resumed.journal.close()


def test_in_process_trials_leave_the_thread_count_as_they_found_it(tmp_path):
    """Trials run with ``threads`` torch threads; in-process (inline) ones restore the caller's count afterwards,
    so a search run from Python does not leave the rest of the process on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        Search(tmp_path / "s", SearchConfig("r35-sp18", "random", "synthetic", {"macs": 0}), trials=2,
               threads=1).run(progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_outputs_build_draw_and_fail_gracefully(tmp_path):
    """best.json builds through create_model and spinenet draw; a failing trial is journalled, not fatal."""
    out = tmp_path / "s"
    best = Search(out, SearchConfig("spinenet49", "evolution", "synthetic", {"fail": "2"}, seed=1),
                  trials=4).run(progress=False)
    journal = Journal(out / "journal.sqlite")
    trials = journal.trials()
    assert [t.status for t in trials] == ["done", "failed", "done", "done"]
    assert "failed on purpose" in trials[1].error
    assert best is not None and best.reward == max(t.reward for t in trials if t.reward is not None)
    ok = trials[0]
    model = create_model("spinenet49", block_specs=Architecture.from_dict(ok.arch))
    assert count_params(model) == ok.params and ok.macs > 0  # the journal's cost is the built model's
    best_model = create_model("spinenet49", block_specs=str(out / "best.json"))
    with torch.no_grad():
        assert set(best_model.eval()(torch.randn(1, 3, 128, 128))) == {"3", "4", "5", "6", "7"}
    assert (out / "rewards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "trials.csv").read_text().count("\n") == 5
    drawn = subprocess.run([sys.executable, "-m", "spinenet", "draw", str(out / "best.json"), "-o",
                            str(tmp_path / "best.png")], capture_output=True, text=True, timeout=120)
    assert drawn.returncode == 0, drawn.stderr
    assert (tmp_path / "best.png").read_bytes()[:4] == b"\x89PNG"


def test_scale_gives_the_official_family(tmp_path):
    """spinenet scale of SpineNet-49's block list with the 96 / 190 scaling builds exactly those models."""
    src = tmp_path / "spinenet49.json"
    Architecture("resnet", RESNET_STEM, SPINENET_BLOCK_SPECS[:TPU_NUM_SPECS]).save(src)
    for name, flags in (("spinenet96", ["--block-repeats", "2"]),
                        ("spinenet190", ["--block-repeats", "4", "--filter-size-scale", "1.3", "--resample-alpha",
                                         "1.0", "--endpoints-num-filters", "512"])):
        dst = tmp_path / f"{name}.json"
        run = subprocess.run([sys.executable, "-m", "spinenet", "scale", str(src), *flags, "-o", str(dst)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert json.loads(dst.read_text())["scaling"]["block_repeats"] == int(flags[1])
        scaled = on_meta(lambda: create_model("spinenet49", block_specs=str(dst)))
        official = on_meta(lambda: create_model(name))
        assert count_params(scaled) == count_params(official)
    bad = subprocess.run([sys.executable, "-m", "spinenet", "scale", str(src), "--block-repeats", "0", "-o",
                          str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--block-repeats" in bad.stderr


def test_cli_strategy_options_reach_the_strategy(tmp_path):
    out = tmp_path / "s"
    run = subprocess.run(search_cmd(out, "--space", "r35-sp18", "--strategy", "rl", "--strategy-option",
                                    "algorithm=ppo", "--strategy-option", "batch_size=2", "--trials", "4",
                                    "--workers", "0", "--reward", "synthetic", "macs=0"),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    journal = Journal(out / "journal.sqlite")
    assert journal.config()["strategy_options"] == {"algorithm": "ppo", "batch_size": 2}
    assert journal.strategy_state()["updates"] == 2  # 4 rewards at batch 2
    assert "best: trial" in run.stdout
