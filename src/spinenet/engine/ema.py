"""Exponential moving average of a model's weights (recipe field ``ema_decay``; 0 = off).

After every optimizer step each floating-point entry of the state dict (parameters and BN running statistics)
moves towards the trained model's: ``ema = d * ema + (1 - d) * live``, with ``d = min(decay, (1 + n) / (10 + n))``
after ``n`` updates (TF's ``ExponentialMovingAverage(num_updates=...)`` ramp, so the first steps' random weights
fade out quickly). Integer buffers (BN's ``num_batches_tracked``) are copied. Evaluation and the checkpoints'
``model`` entry then use the averaged copy; the trained weights travel as ``train_model`` for ``--resume``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightEMA:
    """An averaged copy of ``model`` (same device, dtype and memory format), kept in eval mode."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1) (0 turns the average off), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        live = model.state_dict()
        floats, targets = [], []
        for name, avg in self.module.state_dict().items():
            if avg.is_floating_point():
                floats.append(avg)
                targets.append(live[name].detach())
            else:
                avg.copy_(live[name])
        torch._foreach_lerp_(floats, targets, 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any], updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = int(updates)
