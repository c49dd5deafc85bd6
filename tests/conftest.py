"""Shared test helpers: where the official parity fixtures live, and the 1e-4 parity rule."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPINENET_SHARED", REPO.parent / "shared"))
PARITY = SHARED / "fixtures" / "parity"


def require_shared(path: Path = SHARED) -> Path:
    """Return ``path``; skip when it is absent outside CI, fail when CI=true (CI always has ../shared)."""
    if path.exists():
        return path
    message = f"{path} is missing (the official fixtures live in ../shared beside the clone)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; under CI=true this is a failure, not a skip")
    pytest.skip(message)


@pytest.fixture
def parity_dir():
    """``parity_dir(name)`` -> the folder of one fixture under ../shared/fixtures/parity."""

    def get(name: str) -> Path:
        return require_shared(PARITY / name)

    return get


def assert_parity(out: np.ndarray, ref: np.ndarray, name: str, tol: float = 1e-4) -> float:
    """The project's definition of "matches to 1e-4": ``max|out - ref| <= tol * max|ref|`` per tensor."""
    assert out.shape == ref.shape, f"{name}: shape {out.shape} != reference {ref.shape}"
    scale = float(np.abs(ref).max())
    err = float(np.abs(out.astype(np.float64) - ref.astype(np.float64)).max())
    assert err <= tol * scale, f"{name}: max|out-ref| = {err:.3g} > {tol} * max|ref| = {tol * scale:.3g}"
    return err / scale


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist each worker has one core of its own: one torch thread per worker, and the same for the
    # processes a test starts, so that two workers never share a core between their OpenMP pools.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

DEFAULT_THREADS = torch.get_num_threads()


@pytest.fixture
def all_threads():
    """Torch's default thread count for one test, inside a module that runs on one thread: run serially, the larger
    training runs use both cores; under xdist the default is the worker's single thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(DEFAULT_THREADS)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convolutions run far faster on one thread when the 2 cores are shared (no OpenMP barrier waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
