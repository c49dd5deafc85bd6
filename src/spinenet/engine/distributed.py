"""Distributed data-parallel training set-up: torchrun's environment, or N local processes (``--nproc N``).

The paper's detectors were trained with batch 256 on TPU pods with synchronised BatchNorm (spec 7.1-7.2); here
the same recipes run as PyTorch DDP, one process per device:

* ``torchrun --nproc_per_node N [--nnodes M --node_rank K --master_addr HOST --master_port P] -m spinenet train
  ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
  :func:`init_distributed` reads them. ``spinenet train --nproc N`` does the same on one machine by starting N
  copies of the command itself (:func:`launch_local`) with a free port on 127.0.0.1.
* Backend: NCCL on CUDA (process ``LOCAL_RANK`` drives ``cuda:LOCAL_RANK``), gloo on CPU.
* BatchNorm: ``SyncBatchNorm`` on CUDA, as the official SyncBN. torch's SyncBatchNorm has no CPU kernel, so CPU
  runs keep **per-process** BatchNorm statistics (each process normalises with its own batch; DDP broadcasts
  rank 0's running statistics at every forward).
* Data: each process reads every ``WORLD_SIZE``-th sample of each global batch
  (:class:`~spinenet.engine.sampler.ResumableBatchSampler`); ``batch_size`` is per process, so the global batch
  is ``batch_size * WORLD_SIZE`` and the learning rate should follow it (linear scaling rule, docs/distributed.md).
* Only rank 0 writes checkpoints, metrics, TensorBoard events and evaluates; every rank resumes from the same
  ``checkpoints/last.pt`` (a shared file system when training on several machines).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from typing import Sequence

import torch

from .trainer import DistInfo

# Rank 0 evaluates while the others wait in the next all-reduce: the default 10-minute timeout would abort
# a long COCO evaluation.
TIMEOUT = timedelta(hours=2)


def dist_info_from_env() -> DistInfo:
    """``DistInfo`` from torchrun's variables (single process when they are absent)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise ValueError(f"distributed environment: RANK / WORLD_SIZE / LOCAL_RANK must be integers ({err})") \
            from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"distributed environment: RANK={rank} is not in [0, WORLD_SIZE={world})")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_distributed(device: str | None = None) -> tuple[DistInfo, str | None]:
    """Join the process group described by the environment; returns ``(DistInfo, device name)``.

    Single-process runs (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) change nothing. Otherwise NCCL on CUDA (the
    device becomes ``cuda:LOCAL_RANK``) and gloo on CPU. ``MASTER_ADDR`` defaults to 127.0.0.1.
    """
    info = dist_info_from_env()
    if info.world_size == 1:
        return info, device
    import torch.distributed as dist

    wants_cuda = device.startswith("cuda") if device else torch.cuda.is_available()
    if wants_cuda:
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but no CUDA device is available; use --device cpu")
        if info.local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={info.local_rank} but only {torch.cuda.device_count()} CUDA device(s) are "
                             "visible; start at most that many processes per machine")
        device = f"cuda:{info.local_rank}"
        torch.cuda.set_device(info.local_rank)
    else:
        device = "cpu"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        raise ValueError("distributed run without MASTER_PORT: start it with torchrun or `spinenet train --nproc N`")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if wants_cuda else "gloo", rank=info.rank, world_size=info.world_size,
                                timeout=TIMEOUT)
    return info, device


def cleanup_distributed() -> None:
    """Leave the process group (if any) so the processes exit cleanly."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def launch_local(nproc: int, command: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run ``command`` as ``nproc`` processes of one DDP job on this machine (ranks 0..nproc-1, 127.0.0.1).

    Returns 0 when every process succeeds, else the first non-zero exit code; when one process fails the others
    are stopped (they would wait for it forever in the next collective). Unless ``OMP_NUM_THREADS`` is set, each
    process gets ``cpu_count // nproc`` threads (as torchrun does): N processes with a thread per core each
    oversubscribe the CPU, and OpenMP's barriers then stall for whole time slices.
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    base = dict(os.environ if env is None else env)
    base.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(nproc)})
    base.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    procs = []
    for rank in range(nproc):
        procs.append(subprocess.Popen(list(command), env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank),
                                                          "LOCAL_WORLD_SIZE": str(nproc)}))
    code = 0
    try:
        while procs:
            for p in list(procs):
                rc = p.poll()
                if rc is None:
                    continue
                procs.remove(p)
                if rc != 0 and code == 0:
                    code = rc
                    for other in procs:
                        other.send_signal(signal.SIGTERM)
            time.sleep(0.05)
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    return code


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (what each launched process runs)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        out.append(arg)
    return out


def python_module_command(argv: Sequence[str]) -> list[str]:
    """``[python, -m, spinenet, *argv]`` with the running interpreter."""
    return [sys.executable, "-m", "spinenet", *argv]
