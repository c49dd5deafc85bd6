"""Experiments that measure the paper's claims (docs/experiments/README.md): ``spinenet experiment NAME``.

Each experiment is a list of training runs (and proxy trials or searches where it needs them), each a checkpointed
job in its own folder, recorded in an SQLite journal so that ``--resume`` continues after ``kill -9``; every run
lands in ``runs.csv`` (model, seed, lr, params, MACs, wall time, metrics, commit, the resolved recipe) and the
experiment in ``summary.png`` / ``summary.json`` / ``summary.md``.
"""

from .architectures import (DAMAGES, ORDERINGS, damage, fixed_ordering, matched_scale, ordering_levels,
                            scale_decreased_fpn, spinenet49_architecture)
from .definitions import EXPERIMENTS, create_experiment
from .runner import Experiment, Run, Settings, report_experiment, run_experiment
from .stats import bootstrap_interval, kendall_tau

__all__ = ["DAMAGES", "EXPERIMENTS", "ORDERINGS", "Experiment", "Run", "Settings", "bootstrap_interval",
           "create_experiment", "damage", "fixed_ordering", "kendall_tau", "matched_scale", "ordering_levels",
           "report_experiment", "run_experiment", "scale_decreased_fpn", "spinenet49_architecture"]
