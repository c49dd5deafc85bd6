"""Watchdog that removes a search's local Ray processes when the search process dies, even by ``kill -9``.

Ray's GCS, raylet and workers follow their parent down at once, but its dashboard and runtime-env agents first
try to report to the (dead) GCS and linger for about a minute. This watchdog -- started by the search in its own
session, run as a plain script (no torch import) -- snapshots the search's process tree twice a second and, once
the search is gone, SIGKILLs what the last snapshot held. Linux only (reads ``/proc``); elsewhere it exits.
"""

from __future__ import annotations

import os
import signal
import sys
import time


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


def _descendants(root: int) -> dict[int, str]:
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                children.setdefault(info[0], []).append(int(entry))
                starts[int(entry)] = info[1]
    found: dict[int, str] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found and child in starts:
                found[child] = starts[child]
                stack.append(child)
    return found


def watch(driver: int, interval: float = 0.5) -> int:
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
    for pid, start in snapshot.items():
        info = _stat(pid)
        if info is not None and info[1] == start:  # the same process, not a reused pid
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(watch(int(sys.argv[1])))
