"""Trials as Ray tasks on a local 2-worker instance: loopback only, crashed workers, kill -9, resume.

One test, two Ray start-ups (Ray takes seconds to start): the search is killed mid-run, then resumed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

import pytest
from search_helpers import alive, descendants, is_loopback, journal_rows, listening_addresses, search_cmd, wait_for

TRIALS = 8


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="known bug (issue 8 open): on a quiet machine 2 Ray processes outlived "
                   "kill -9 of the search by more than 60 s (observed once in a clean-clone run); the reaper misses them")
def test_two_local_workers_crash_kill_and_resume(tmp_path):
    out, log = tmp_path / "search", tmp_path / "evaluations.txt"
    args = ["--space", "r35-sp18", "--strategy", "evolution", "--trials", str(TRIALS), "--workers", "2",
            "--reward", "synthetic", "macs=0", "sleep=1.5", "crash=2", "crash_always=3", f"log={log}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(search_cmd(out, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        # trial 2's worker dies once (Ray retries it), trial 3's dies twice (the trial fails); both are over
        # once trial 5 has been started
        wait_for(lambda: len([r for r in journal_rows(out) if r[1] != "running"]) >= 4
                 and any(r[0] == 5 for r in journal_rows(out)), 240, proc, "four finished trials")
        family = descendants(proc.pid)
        addresses = listening_addresses(family | {proc.pid})
        assert addresses, "found no listening socket of the Ray processes"
        assert all(is_loopback(a) for a in addresses), f"Ray listens beyond loopback: {addresses}"
        assert any(r[1] == "running" for r in journal_rows(out))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.time() + 60
        while time.time() < deadline and any(alive(p) for p in family):
            time.sleep(0.5)
        orphans = [p for p in family if alive(p)]
        assert not orphans, f"processes left after kill -9 of the search: {orphans}"
    finally:
        if proc.poll() is None:
            proc.kill()

    before = {r[0]: r for r in journal_rows(out) if r[1] != "running"}
    interrupted = [r[0] for r in journal_rows(out) if r[1] == "running"]
    assert interrupted, "the kill should have caught at least one trial in flight"

    done = subprocess.run(search_cmd(out, *args, "--resume"), capture_output=True, text=True, timeout=400, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r[0]: r for r in journal_rows(out)}
    assert sorted(rows) == list(range(1, TRIALS + 1))
    for trial_id, row in before.items():
        assert rows[trial_id] == row, f"finished trial {trial_id} changed on resume"
    assert rows[2][1] == "done"  # its worker died once: Ray retried it
    assert rows[3][1] == "failed"  # died on every attempt: failed, the search went on
    assert all(rows[i][1] == "done" for i in rows if i != 3)
    for trial_id in interrupted:
        assert rows[trial_id][5] == 2  # a second attempt after the resume
    evaluations = Counter(int(line.split()[0]) for line in log.read_text().splitlines())
    for trial_id, row in before.items():
        expected = {2: 2, 3: 2}.get(trial_id, 1)  # crashed workers are re-run by Ray, nothing else is
        assert evaluations[trial_id] == expected, f"trial {trial_id} evaluated {evaluations[trial_id]} times"
    assert (out / "best.json").is_file() and (out / "rewards.png").is_file()
