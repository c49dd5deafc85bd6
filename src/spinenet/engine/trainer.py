"""One training engine for every task (detection, classification, segmentation).

A task supplies the model, the datasets, the loss of a batch and the evaluation; the engine owns everything else:
SGD with momentum (or AdamW) and weight decay on conv/linear weights only, linear warmup then step, cosine or
linear decay, gradient clipping, an optional moving average of the weights (``ema_decay``), autocast (bf16 on CPU,
fp16 with loss scaling or bf16 on CUDA), atomic checkpoints that resume exactly (step, optimizer, scheduler, RNG,
data position), tqdm progress, a metrics CSV, TensorBoard events and a PNG of the curves. Distributed runs
(torchrun) use DDP: NCCL on CUDA, gloo on CPU; only rank 0 writes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..files import write_json
from .checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state
from .ema import WeightEMA
from .config import Recipe
from .sampler import Augmented, ResumableBatchSampler


class Task(Protocol):
    """What a task plugs into the engine."""

    name: str
    primary_metric: str

    def build_datasets(self, recipe: Recipe) -> tuple[Dataset, Dataset | None]: ...

    def build_model(self, recipe: Recipe, train_set: Dataset) -> nn.Module: ...

    def train_transform(self, recipe: Recipe): ...

    def collate(self, batch: list) -> Any: ...

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]: ...

    def evaluate(self, model: nn.Module, dataset: Dataset, device: torch.device, recipe: Recipe) -> dict[str, float]: ...

    def checkpoint_extras(self, train_set: Dataset) -> dict[str, Any]: ...


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str | None) -> torch.device:
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA device is available; use --device cpu")
    if not (name == "cpu" or name.startswith("cuda")):
        raise ValueError(f"--device {name!r}: expected cpu or cuda[:N]")
    return torch.device(name)


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on CPU; fp16 or bf16 autocast on CUDA; nothing for fp32."""
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("precision=fp16 needs CUDA; use bf16 on CPU")
        return torch.autocast("cuda", dtype=torch.float16)
    raise ValueError(f"precision={precision!r}: expected fp32, bf16 or fp16")


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm in inference mode: it normalises with (and no longer updates) its running statistics,
    while its affine weights still train. The last ``bn_freeze`` fraction of a recipe's steps trains this way, so
    the network is fitted under the normalisation it is evaluated with: a batch-normalised network can come to rely
    on each batch normalising its own outliers (on the tree tiles, one seed's level-5 activations on meadow tiles
    reached 1,700-9,800 times the running variance in inference mode, while batch statistics hid it in training)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches, forward) -> int:
    """Precise BN: replace every BatchNorm's running statistics by their exact average over ``batches``.

    During training the running mean and variance are an exponential average over past steps, computed while the
    weights were still moving; after a short run with a small momentum (the official 0.01 / 0.003) they are
    still close to their initial values, and evaluation normalises with statistics that do not fit the trained
    weights (on two tree tiles: AP50 near 0 on the training images themselves after the loss converged). Here
    the weights are held fixed and each BatchNorm's statistics are the equal-weight average over the given
    training batches (momentum ``None``, PyTorch's cumulative average; Wu and Johnson, "Rethinking 'Batch' in
    BatchNorm", 2021, section 3; detectron2's PreciseBN). ``forward(model, batch)`` runs the model on a batch in
    training mode; gradients are off. Returns the number of batches used."""
    norms = _batchnorms(model)
    if not norms:
        return 0
    was_training = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    count = 0
    try:
        for batch in batches:
            forward(model, batch)
            count += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        for m, mode in was_training.items():
            m.train(mode)
    return count


def lr_factor(step: int, recipe: Recipe) -> float:
    """Linear warmup from ``warmup_factor`` to 1, then step decay (x0.1 per boundary), cosine to 0 or linear to 0
    (the recipe's ``schedule`` section)."""
    s = recipe.schedule
    if s.decay not in ("step", "cosine", "linear"):
        raise ValueError(f"schedule.decay={s.decay!r}: expected step, cosine or linear")
    if s.warmup_steps and step < s.warmup_steps:
        alpha = step / s.warmup_steps
        return s.warmup_factor * (1 - alpha) + alpha
    if s.decay == "step":
        return 0.1 ** sum(step >= b * s.steps for b in s.lr_steps)
    span = max(s.steps - s.warmup_steps, 1)
    done = min(step - s.warmup_steps, span) / span  # fraction of the decay behind us
    return 0.5 * (1 + math.cos(math.pi * done)) if s.decay == "cosine" else 1.0 - done


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only (the official ``.*(kernel|weight)`` rule, minus BN)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_weight = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
            (decay if is_weight else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with momentum, or AdamW with betas ``(momentum, 0.999)``; either way weight decay on conv/linear weights
    only (:func:`param_groups`). AdamW's decay is decoupled (``lr * weight_decay`` per step), so it takes much larger
    ``weight_decay`` values than SGD's L2 term (0.05 is usual)."""
    o = recipe.optim
    groups = param_groups(model, o.weight_decay)
    if o.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)
    if o.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=(o.momentum, 0.999))
    raise ValueError(f"recipe field optimizer={o.optimizer!r} is not known; use one of {', '.join(OPTIMIZERS)}")


class Trainer:
    def __init__(self, task: Task, recipe: Recipe, out_dir: str | os.PathLike, device: str | None = None,
                 resume: bool = False, dist: DistInfo | None = None, progress: bool = True) -> None:
        self.task, self.recipe = task, recipe
        self.out = Path(out_dir)
        self.dist = dist or DistInfo()
        self.device = resolve_device(device)
        self.progress = progress
        self.last = self.out / "checkpoints" / "last.pt"
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; give a folder for the run (it is created)")
        if self.out.exists() and any(self.out.iterdir()) and not resume:
            raise ValueError(f"output folder {self.out} already exists and is not empty; pass --resume to continue "
                             f"that run, or choose another --out")
        if resume and not self.last.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {self.last}; start without --resume")
        self.resume = resume
        # read once: checked here, before anything is written, and restored by _setup
        self._resume_state = self._check_resume(load_checkpoint(self.last, map_location="cpu")) if resume else None
        if self.dist.world_size > 1:  # every rank checks the folder before rank 0 writes into it
            torch.distributed.barrier()

    def _check_resume(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        """Refuse to resume with another task, model or recipe: only ``steps`` may change (to extend the run, or to
        finish it earlier than planned, but not before the step the checkpoint reached)."""
        where = f"--resume: {self.last}"
        if ckpt["task"] != self.task.name:
            raise ValueError(f"{where} holds a {ckpt['task']} run; resume it with --task {ckpt['task']}")
        trained = (ckpt.get("model_config") or {}).get("name")
        wanted = getattr(self.task, "model_name", None)
        from ..registry import canonical_name  # a model name of the previous release names the same model

        if trained and wanted and canonical_name(trained, ckpt["task"]) != canonical_name(wanted, ckpt["task"]):
            raise ValueError(f"{where} was trained with --model {trained}, not {wanted}; resume with --model "
                             f"{trained}, or start a new run with another --out")
        before = Recipe.from_dict(ckpt.get("recipe") or {}, source=str(self.last))
        changed = [(k, old, new) for k, old, new in before.diff(self.recipe) if k != "schedule.steps"]
        if changed:
            listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in changed)
            raise ValueError(f"{where} was trained with other settings ({listed}); resume with the run's settings "
                             f"(its recipe.json): only steps may change")
        if self.recipe.schedule.steps < ckpt["step"]:
            raise ValueError(f"{where} is at step {ckpt['step']}; steps={self.recipe.schedule.steps} is behind it")
        return ckpt

    # ------------------------------------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        r = self.recipe
        torch.manual_seed(r.seed)
        self.train_set, self.val_set = self.task.build_datasets(r)
        self.model = self.task.build_model(r, self.train_set).to(self.device)
        if r.model.zero_init_residual and not self.resume:  # --resume loads the weights anyway
            from ..backbone import zero_init_residual

            zero_init_residual(self.model)
        if r.optim.channels_last:  # convolutions then pick NHWC kernels for NCHW inputs too; state_dict is unchanged
            self.model = self.model.to(memory_format=torch.channels_last)
        from ..layers.fuse import channels_last_for_bf16, compile_dense

        self.model = channels_last_for_bf16(self.model, self.device, r.optim.precision)  # CPU bf16 kernels are NHWC
        if r.model.init_weights and not self.resume:  # fine-tuning: spinenet-weights/1 file (docs/weights.md)
            from ..weights import load_pretrained

            report = load_pretrained(self.model, r.model.init_weights)
            if self.dist.is_main:
                print(f"init_weights: {report.summary()}")
        if self.dist.world_size > 1 and self.device.type == "cuda":
            # the official SyncBN; torch has no CPU SyncBatchNorm, so CPU runs keep per-process BN statistics
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model_core = self.model
        self.ema = WeightEMA(self.model_core, r.optim.ema_decay) if r.optim.ema_decay else None
        if r.optim.compile:  # in place, after the EMA copy: state-dict keys are unchanged
            compile_dense(self.model_core)
        if self.dist.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = build_optimizer(self.model_core, r)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, r))
        self.scaler = torch.amp.GradScaler("cuda", enabled=r.optim.precision == "fp16" and self.device.type == "cuda")
        self.step = 0
        if self.resume:
            ckpt, self._resume_state = self._resume_state, None
            try:
                self.model_core.load_state_dict(ckpt.get("train_model", ckpt["model"]))
            except RuntimeError as err:  # the model's name and recipe matched, so the file itself differs
                raise ValueError(f"--resume: the weights in {self.last} do not fit the model built for this run "
                                 f"({str(err).splitlines()[0]})") from None
            if self.ema is not None:
                if "train_model" not in ckpt:
                    raise ValueError(f"--resume: {self.last} was written without ema_decay; resume with the same "
                                     "recipe (ema_decay=0)")
                self.ema.load_state_dict(ckpt["model"], ckpt["ema_updates"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.step = ckpt["step"]
            set_rng_state(ckpt["rng"])
            # follow the current recipe's schedule from here (it may extend the interrupted one)
            for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
                group["lr"] = base * lr_factor(self.step, r)

    def _loader(self) -> DataLoader:
        r = self.recipe
        sampler = ResumableBatchSampler(len(self.train_set), r.data.batch_size, r.seed, self.step, self.dist.rank,
                                        self.dist.world_size)
        return DataLoader(Augmented(self.train_set, self.task.train_transform(r)), batch_sampler=sampler,
                          collate_fn=self.task.collate, num_workers=r.data.num_workers,
                          generator=torch.Generator().manual_seed(r.seed),  # keeps the global RNG untouched
                          persistent_workers=False)

    def _bn_frozen(self) -> bool:
        r = self.recipe
        s = r.schedule
        return s.bn_freeze > 0 and self.step >= s.steps - round(s.bn_freeze * s.steps)

    def precise_bn(self) -> None:
        """Recalibrate the BatchNorm statistics of the weights evaluation and checkpoints use (the moving average
        with ``optim.ema_decay``) over ``eval.precise_bn_batches`` training batches (:func:`recalibrate_batchnorm`).

        The batches come from their own stream (the recipe's seed + 1, training augmentation), the same at every
        call, and the random state is restored afterwards, so the training run itself is unchanged and resumes
        exactly. Skipped once BatchNorm is frozen (``schedule.bn_freeze``): the weights were then fitted under the frozen
        statistics. Runs where evaluation and checkpoints happen (rank 0), on its own batches; skipped with
        SyncBatchNorm (multi-GPU), whose training-mode forward needs every rank."""
        r = self.recipe
        model = self.eval_model
        if r.eval.precise_bn_batches == 0 or self._bn_frozen() or not self.dist.is_main:
            return
        if any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
            return

        def forward(net: nn.Module, batch: Any) -> None:
            with autocast_context(self.device, r.optim.precision):
                self.task.loss(net, batch, self.device)

        state = rng_state()
        try:
            sampler = ResumableBatchSampler(len(self.train_set), r.data.batch_size, r.seed + 1)
            loader = DataLoader(Augmented(self.train_set, self.task.train_transform(r)), batch_sampler=sampler,
                                collate_fn=self.task.collate, num_workers=0)
            recalibrate_batchnorm(model, (batch for _, batch in zip(range(r.eval.precise_bn_batches), loader)), forward)
        finally:
            set_rng_state(state)

    # --------------------------------------------------------------------------------------------- checkpoints
    def save(self, path: Path | None = None) -> Path | None:
        if not self.dist.is_main:
            return None
        state = {
            "task": self.task.name,
            "step": self.step,
            "recipe": self.recipe.to_dict(),
            "model_config": getattr(self.model_core, "config", None),
            # "model" holds the weights to use (the average when ema_decay > 0), "train_model" the trained ones
            "model": self.eval_model.state_dict(),
            **({"train_model": self.model_core.state_dict(), "ema_updates": self.ema.updates} if self.ema is not None else {}),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            **self.task.checkpoint_extras(self.train_set),
        }
        return atomic_save(state, path or self.last)

    # ------------------------------------------------------------------------------------------------ logging
    def _log(self, row: dict[str, Any]) -> None:
        """Append a row to metrics.csv; the file is rewritten only when a new column appears (e.g. val_AP50)."""
        if not self.dist.is_main:
            return
        path = self.out / "metrics.csv"
        header: list[str] = []
        if path.exists():
            with open(path, newline="") as fh:
                header = next(csv.reader(fh), [])
        new = [k for k in ("step", "lr", "loss", "images_per_s", *sorted(row)) if k not in header]
        if not header or new:
            rows: list[dict[str, Any]] = []
            if header:
                with open(path, newline="") as fh:
                    rows = list(csv.DictReader(fh))
            header += list(dict.fromkeys(new))
            tmp = path.with_name(".metrics.csv.tmp")
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp, path)
        with open(path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=header).writerow({k: row.get(k, "") for k in header})
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def _truncate_log(self) -> None:
        """On resume, drop rows logged after the checkpoint (they will be logged again)."""
        path = self.out / "metrics.csv"
        if not self.dist.is_main or not path.exists():
            return
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            fieldnames = reader.fieldnames or []
            rows = [r for r in reader if int(float(r["step"])) <= self.step]
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)

    def _open_tensorboard(self):
        if not self.dist.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional at run time
            return None
        return SummaryWriter(log_dir=str(self.out / "tensorboard"), purge_step=self.step or None)

    # -------------------------------------------------------------------------------------------------- train
    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to ``schedule.steps``, evaluating every ``eval.every`` steps and at the end.

        ``stop_at`` ends the run early after that step with a checkpoint, as an interruption would (tests, time
        budgets); ``--resume`` then continues it exactly.
        """
        r = self.recipe
        self._setup()  # data, model and optimizer first: a run folder only once they could be built
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            tmp = self.out / ".recipe.json.tmp"
            tmp.write_text(json.dumps(r.to_dict(), indent=2) + "\n")
            os.replace(tmp, self.out / "recipe.json")
        self._truncate_log()
        self.tb = self._open_tensorboard()
        metrics: dict[str, float] = {}
        from tqdm import tqdm

        steps, sched = r.schedule.steps, r.schedule
        bar = tqdm(total=steps, initial=self.step, disable=not (self.progress and self.dist.is_main),
                   dynamic_ncols=True, desc=f"{self.task.name}")
        self.model.train()
        freeze_from = steps - round(sched.bn_freeze * steps)
        loader = iter(self._loader())
        tick, seen = time.perf_counter(), 0
        while self.step < steps:
            if stop_at is not None and self.step >= stop_at:
                self.save()
                bar.close()
                return {}
            if self.step >= freeze_from:
                freeze_batchnorm(self.model)  # again after every evaluation, which sets train mode
            batch = next(loader)
            with autocast_context(self.device, r.optim.precision):
                losses = self.task.loss(self.model, batch, self.device)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {self.step}; lower lr= or check the data")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if r.optim.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), r.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model_core)
            self.step += 1
            seen += r.data.batch_size * self.dist.world_size
            bar.update(1)
            if self.step % sched.log_every == 0 or self.step == steps:
                now = time.perf_counter()
                row = {"step": self.step, "lr": self.optimizer.param_groups[0]["lr"], "loss": float(loss.detach()),
                       "images_per_s": seen / max(now - tick, 1e-9)}
                row.update({k: float(v.detach()) for k, v in losses.items() if k != "loss"})
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.4g}", img_s=f"{row['images_per_s']:.1f}")
                self._log(row)
                tick, seen = now, 0
            if r.eval.every and self.step % r.eval.every == 0 and self.step < steps:
                metrics = self.evaluate()
            if self.step % sched.checkpoint_every == 0 or self.step == steps:
                self.save()
        bar.close()
        self.precise_bn()  # the final evaluation and checkpoint use statistics that fit the final weights
        metrics = self.evaluate(recalibrate=False)
        if self.dist.is_main:
            self.save(self.out / "checkpoints" / "final.pt")
            write_json(self.out / "final_metrics.json", metrics)  # a metric that cannot be computed is null
            from .plots import plot_curves

            plot_curves(self.out / "metrics.csv", self.out / "curves.png", self.task.primary_metric)
        if self.tb is not None:
            self.tb.close()
        return metrics

    @property
    def eval_model(self) -> nn.Module:
        """The weights evaluation and checkpoints use: the moving average when ``optim.ema_decay`` > 0."""
        return self.ema.module if self.ema is not None else self.model_core

    def evaluate(self, recalibrate: bool = True) -> dict[str, float]:
        """Metrics of :attr:`eval_model` on the validation set (rank 0), after :meth:`precise_bn` unless
        ``recalibrate`` is False."""
        if self.val_set is None or not self.dist.is_main:
            return {}
        if recalibrate:
            self.precise_bn()
        model = self.eval_model
        model.eval()
        with torch.no_grad(), autocast_context(self.device, self.recipe.optim.precision):
            metrics = self.task.evaluate(model, self.val_set, self.device, self.recipe)
        self.model_core.train()
        self._log({"step": self.step, **{f"val_{k}": v for k, v in metrics.items()}})
        return metrics
