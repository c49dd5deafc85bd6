"""Trials as Ray tasks on a local 2-worker instance: loopback only, crashed workers, kill -9, resume.

The first test: two Ray start-ups (Ray takes seconds to start), the search is killed mid-run, then resumed.
The second joins a cluster started beforehand with `ray start --head` (`--address`).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from search_helpers import alive, descendants, is_loopback, journal_rows, listening_addresses, search_cmd, wait_for

TRIALS = 8


@pytest.mark.slow
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


@pytest.mark.slow
def test_address_joins_an_existing_local_cluster(tmp_path):
    """``--address`` runs the trials on a cluster started beforehand (here ``ray start --head`` on 127.0.0.1):
    the workers that evaluate them belong to that cluster, not to the search, and the cluster outlives the search."""
    import socket

    probes = [socket.socket() for _ in range(2)]
    for probe in probes:
        probe.bind(("127.0.0.1", 0))
    port, client_port = (probe.getsockname()[1] for probe in probes)
    for probe in probes:
        probe.close()
    ray_bin = Path(sys.executable).with_name("ray")
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    # the cluster and the search share a fresh token (Ray's token authentication; never ~/.ray/auth_token)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                             "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
                             "--ray-client-server-port", str(client_port), "--disable-usage-stats",
                             "--temp-dir", temp_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    cluster: set[int] = set()
    try:
        wait_for(lambda: any(a.endswith(f":{port}") for a in listening_addresses(descendants(head.pid) | {head.pid})),
                 120, head, "the head node's GCS port")
        out, log = tmp_path / "search", tmp_path / "evaluations.txt"
        done = subprocess.run(search_cmd(out, "--space", "r35-sp18", "--strategy", "random", "--trials", "4",
                                         "--workers", "2", "--address", f"127.0.0.1:{port}", "--reward", "synthetic",
                                         "macs=0", f"log={log}"),
                              capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert [r[1] for r in journal_rows(out)] == ["done"] * 4
        cluster = descendants(head.pid)
        parents = {int(line.split()[3]) for line in log.read_text().splitlines()}  # the raylet that forked them
        assert parents and parents <= cluster, f"trials ran outside the cluster: {parents - cluster}"
        addresses = listening_addresses(cluster | {head.pid})
        assert addresses and all(is_loopback(a) for a in addresses), f"the cluster listens beyond loopback: {addresses}"
        assert head.poll() is None, "the search stopped the cluster it joined"
    finally:
        cluster |= descendants(head.pid)
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            try:  # `ray start --block` takes about 30 s to wind down after SIGTERM; the test needs nothing from it
                head.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait(timeout=30)
        deadline = time.time() + 60
        while time.time() < deadline and any(alive(p) for p in cluster):
            time.sleep(0.5)
        for pid in cluster:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
