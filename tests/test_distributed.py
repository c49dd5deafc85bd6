"""DDP on CPU: 2 gloo processes on 127.0.0.1 stay in lockstep, learn, write once, and resume as one process."""

from __future__ import annotations

import csv
import os
import sys

import pytest
import torch

from spinenet.cli import main
from spinenet.engine.checkpoint import load_checkpoint
from spinenet.engine.distributed import dist_info_from_env, free_port, launch_local, strip_nproc

TINY = ["model.filter_size_scale=0.125", "model.endpoints_num_filters=16", "model.head_width=16"]
# 21 real 128-px nucleus tiles (so the two ranks read different samples), a tiny RetinaNet
FLAGS = ["--model", "retinanet_spinenet49s", "--data", "nuclei:left", "--recipe", "smoke", "--device", "cpu"]
OVERRIDES = ["batch_size=2", "image_size=128", "tile_size=128", "lr=0.01", "warmup_steps=2", "precision=fp32",
             "hflip=0.0", "bn_momentum=0.1", *TINY]

# One rank: join the group from the environment launch_local sets, train, and save this rank's parameters.
WORKER = """
import sys, torch
torch.set_num_threads(1)
from spinenet.engine import Trainer, get_recipe, parse_overrides
from spinenet.engine.distributed import cleanup_distributed, init_distributed
from spinenet.tasks import get_task
out, overrides = sys.argv[1], sys.argv[2:]
info, device = init_distributed("cpu")
task = get_task("detection", model="retinanet_spinenet49s", data="nuclei:left")
recipe = parse_overrides(get_recipe("smoke"), overrides)
trainer = Trainer(task, recipe, out, device=device, dist=info, progress=False)
trainer.fit()
torch.save(trainer.model_core.state_dict(), f"{out}.rank{info.rank}.pt")
cleanup_distributed()
"""


def _losses(path) -> list[float]:
    with open(path, newline="") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh) if r["loss"]]


@pytest.mark.slow
def test_two_gloo_processes_lockstep_learn_and_resume_single(tmp_path, capsys):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = launch_local(2, [sys.executable, "-c", WORKER, str(out), *OVERRIDES, "steps=8", "log_every=1",
                            "checkpoint_every=4"], env=env)
    assert code == 0
    states = [torch.load(f"{out}.rank{r}.pt") for r in range(2)]
    # parameters only: on CPU each process keeps its own BN statistics (no SyncBatchNorm kernel)
    names = [k for k in states[0] if "running" not in k and "num_batches" not in k]
    assert names and all(torch.equal(states[0][k], states[1][k]) for k in names), \
        [k for k in names if not torch.equal(states[0][k], states[1][k])][:5]
    # the ranks saw different samples: the gradient all-reduce, not identical data, kept them equal
    losses = _losses(out / "metrics.csv")
    assert len(losses) == 8  # rank 0 alone logged (one row per step, no duplicates from rank 1)
    assert sum(losses[-3:]) / 3 < sum(losses[:2]) / 2, losses
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == 8
    assert all(torch.equal(ckpt["model"][k], states[0][k]) for k in names)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["final.pt", "last.pt"]

    # rank 0's checkpoint continues as a single-process run
    args = ["train", *FLAGS, "--out", str(out), "--resume", *OVERRIDES, "steps=10", "log_every=1",
            "checkpoint_every=4"]
    assert main(args) == 0
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 10
    assert len(_losses(out / "metrics.csv")) == 10


@pytest.mark.slow
def test_cli_nproc_launches_refuses_existing_folder_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--nproc", "2", *FLAGS, "--out", str(out), *OVERRIDES, "steps=2", "log_every=1"]
    env_before = dict(os.environ)
    assert main(args) == 0
    assert dict(os.environ) == env_before  # the launcher leaves the caller's environment alone
    ckpt = load_checkpoint(out / "checkpoints" / "final.pt")
    assert ckpt["step"] == 2
    assert ckpt["recipe"]["data"]["batch_size"] == 2
    # a second launch into the same folder fails in every rank and returns the error code
    assert main(args) == 2
    # a distributed run resumes as a distributed run
    assert main(["train", "--nproc", "2", *FLAGS, "--out", str(out), "--resume", *OVERRIDES, "steps=4",
                 "log_every=1"]) == 0
    assert load_checkpoint(out / "checkpoints" / "final.pt")["step"] == 4
    assert [int(r["step"]) for r in csv.DictReader(open(out / "metrics.csv")) if r["loss"]] == [1, 2, 3, 4]


def test_environment_parsing_and_helpers(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    info = dist_info_from_env()
    assert (info.rank, info.world_size, info.is_main) == (0, 1, True)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = dist_info_from_env()
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (3, 4, 1, False)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4"):
        dist_info_from_env()
    assert strip_nproc(["train", "--nproc", "2", "--out", "x", "--nproc=3", "steps=1"]) == \
        ["train", "--out", "x", "steps=1"]
    assert 0 < free_port() < 65536
    with pytest.raises(ValueError, match="--nproc"):
        launch_local(0, ["true"])
