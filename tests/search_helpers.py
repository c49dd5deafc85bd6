"""Helpers for the search tests that run ``spinenet search`` as a subprocess and kill it."""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path


def search_cmd(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "spinenet", "search", "--out", str(out), "--quiet", *args]


def journal_rows(out: Path) -> list[tuple]:
    """(id, status, decisions, reward, finished, attempts) of every trial, read without locking the writer."""
    path = out / "journal.sqlite"
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            query = "SELECT id, status, decisions, reward, finished, attempts FROM trials ORDER BY id"
            return db.execute(query).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:  # the file exists but the schema is not committed yet
        return []


def wait_for(predicate, timeout: float, proc=None, what: str = "") -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"search exited with {proc.returncode} before {what}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _ppid_map() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            out[int(entry)] = int(fields[1])
    return out


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for child, parent in _ppid_map().items():
        children.setdefault(parent, []).append(child)
    found, stack = set(), [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            if c not in found:
                found.add(c)
                stack.append(c)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def listening_addresses(pids: set[int]) -> list[str]:
    """Local addresses of the TCP/UDP sockets in LISTEN (or unconnected UDP) state owned by ``pids``."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table, listen_state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == listen_state and cols[9] in inodes:
                found.append(_decode_address(cols[1], table.endswith("6")))
    return found


def _decode_address(hex_addr: str, v6: bool) -> str:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    if v6:
        words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]  # each 32-bit word is little-endian
        b = b"".join(words)
        if b[:12] == b"\0" * 10 + b"\xff\xff":
            return f"{'.'.join(str(x) for x in b[12:])}:{int(port, 16)}"  # IPv4-mapped
        return f"[{b.hex()}]:{int(port, 16)}"
    return f"{'.'.join(str(x) for x in raw[::-1])}:{int(port, 16)}"


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address.startswith("[" + "0" * 31 + "1]")
