"""Watchdog that removes a search's local Ray processes when the search process dies, even by ``kill -9``.

Ray's GCS, raylet and workers follow their parent down, but its dashboard and runtime-env agents first try to
report to the (dead) GCS and linger for about a minute, and a worker the raylet forks just before the kill can
outlive it. This watchdog -- started by the search in its own session, run as a plain script (no torch import) --
recognises the search's processes two ways: the process tree under the search (snapshotted twice a second) and
the marker ``SPINENET_SEARCH_REAPER=<token>`` that the search puts in its environment before Ray starts, which
every process Ray forks inherits and keeps even once it is re-parented to init. Once the search is gone it
SIGKILLs both sets, and keeps sweeping until two sweeps in a row find nothing (at most ``linger`` seconds).
Linux only (reads ``/proc``); elsewhere it exits at once.
"""

from __future__ import annotations

import os
import signal
import sys
import time

MARKER = "SPINENET_SEARCH_REAPER"


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), fields[19]


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _descendants(root: int) -> dict[int, str]:
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for pid in _pids():
        info = _stat(pid)
        if info is not None:
            children.setdefault(info[0], []).append(pid)
            starts[pid] = info[1]
    found: dict[int, str] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found and child in starts:
                found[child] = starts[child]
                stack.append(child)
    return found


def _marked(token: str) -> dict[int, str]:
    """Live processes whose environment carries ``MARKER=token`` (other users' processes are unreadable)."""
    needle = f"{MARKER}={token}".encode()
    found: dict[int, str] = {}
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            info = _stat(pid)
            if info is not None:
                found[pid] = info[1]
    return found


def _kill(targets: dict[int, str]) -> int:
    """SIGKILL each process that is still the one recorded (same start time: not a reused pid)."""
    killed = 0
    for pid, start in targets.items():
        info = _stat(pid)
        if info is not None and info[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def watch(driver: int, token: str | None = None, interval: float = 0.5, linger: float = 30.0) -> int:
    first = _stat(driver)
    if first is None or not os.path.isdir("/proc"):
        return 0
    me = os.getpid()
    snapshot: dict[int, str] = {}
    while True:
        info = _stat(driver)
        if info is None or info[1] != first[1]:
            break
        snapshot = {p: s for p, s in _descendants(driver).items() if p != me}
        time.sleep(interval)
    _kill(snapshot)
    if not token:
        return 0
    deadline, quiet = time.time() + linger, 0
    while time.time() < deadline and quiet < 2:
        found = {p: s for p, s in _marked(token).items() if p != me}
        quiet = 0 if _kill(found) else quiet + 1
        time.sleep(interval)
    return 0


if __name__ == "__main__":
    sys.exit(watch(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
