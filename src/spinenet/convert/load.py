"""Load official TensorFlow weights into our modules, all or nothing, with a match report."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .mapping import TensorMap, iter_unmapped
from .tf_checkpoint import TFCheckpoint

TRANSFORMS = {
    "conv": lambda a: a.transpose(3, 2, 0, 1),  # HWIO -> OIHW
    "depthwise": lambda a: a.transpose(2, 3, 0, 1),  # HWI1 -> I1HW
    "dense": lambda a: a.T,  # [in, out] -> [out, in]
    "copy": lambda a: a,
}
# Checkpoint entries that are bookkeeping, never weights.
IGNORED_KEYS = ("_CHECKPOINTABLE_OBJECT_GRAPH", "global_step", "save_counter")


@dataclass
class MatchReport:
    """What a conversion used: ``mapped`` (ours <- theirs), checkpoint keys left ``unused``, ``missing`` ones."""

    mapped: list[tuple[str, str]] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"mapped {len(self.mapped)} tensors; {len(self.unused)} checkpoint entries unused; "
                 f"{len(self.missing)} missing; {len(self.mismatched)} shape mismatches"]
        lines += [f"  missing: {k}" for k in self.missing[:20]]
        lines += [f"  mismatch: {k}" for k in self.mismatched[:20]]
        return "\n".join(lines)


def apply_tf_weights(module: nn.Module, ckpt: TFCheckpoint | str | os.PathLike, maps: list[TensorMap],
                     strict_unused: bool = False) -> MatchReport:
    """Copy every mapped tensor into ``module``; raise ``ValueError`` (and change nothing) on any gap.

    ``strict_unused`` also refuses checkpoints with weight tensors the map does not use (optimizer slots and
    ``IGNORED_KEYS`` never count).
    """
    if not isinstance(ckpt, TFCheckpoint):
        ckpt = TFCheckpoint(ckpt)
    state = module.state_dict()
    report = MatchReport()
    new_state: dict[str, torch.Tensor] = {}
    for m in maps:
        if m.tf_key not in ckpt:
            report.missing.append(f"{m.tf_key} (for {m.torch_key})")
            continue
        array = TRANSFORMS[m.transform](np.asarray(ckpt.read(m.tf_key)))
        if m.channel_order is not None:
            if len(m.channel_order) != array.shape[0]:
                report.mismatched.append(f"{m.tf_key} {tuple(array.shape)}: {len(m.channel_order)} channels expected "
                                         f"by the anchor order (for {m.torch_key})")
                continue
            array = array[list(m.channel_order)]
        if m.in_order is not None:
            if array.ndim < 2 or len(m.in_order) != array.shape[1]:
                report.mismatched.append(f"{m.tf_key} {tuple(array.shape)}: {len(m.in_order)} inputs expected "
                                         f"(for {m.torch_key})")
                continue
            array = array[:, list(m.in_order)]
        target = state[m.torch_key]
        if tuple(array.shape) != tuple(target.shape):
            report.mismatched.append(f"{m.tf_key} {tuple(array.shape)} -> {m.torch_key} {tuple(target.shape)}")
            continue
        new_state[m.torch_key] = torch.from_numpy(np.ascontiguousarray(array)).to(target.dtype)
        report.mapped.append((m.torch_key, m.tf_key))
    used = {m.tf_key for m in maps}
    report.unused = [k for k in ckpt.keys() if k not in used and not k.startswith(IGNORED_KEYS)
                     and "OPTIMIZER_SLOT" not in k]
    uncovered = [k for k in iter_unmapped(module, maps) if k not in new_state] if isinstance(module, nn.Module) else []
    problems = []
    if report.missing or report.mismatched:
        problems.append(report.summary())
    if uncovered:
        problems.append(f"{len(uncovered)} model tensors have no source, e.g. {uncovered[:5]}")
    if strict_unused and report.unused:
        problems.append(f"{len(report.unused)} checkpoint tensors unused, e.g. {report.unused[:5]}")
    if problems:
        raise ValueError(f"cannot load {getattr(ckpt, 'prefix', ckpt)}: " + "; ".join(problems)
                         + ". Check --source/flavor, the model name and its overrides.")
    state.update(new_state)
    module.load_state_dict(state)
    return report


def load_tf_backbone(model: nn.Module, ckpt: TFCheckpoint | str | os.PathLike, source: str | None = None,
                     prefix: str | None = None, strict_unused: bool = False) -> MatchReport:
    """Load a SpineNet backbone from an official checkpoint: ``source`` "tpu" or "model_garden"
    (default: the model's flavour). ``prefix`` is the scope (default ``spinenet``, or ``spinenet_mbconv`` for a
    mobile backbone) or object path (``backbone``)."""
    from .mapping import mg_backbone_map, tpu_backbone_map

    source = source or model.graph.flavor
    if source == "tpu":
        maps = tpu_backbone_map(model, prefix)  # spinenet/ or spinenet_mbconv/ by family
    elif source == "model_garden":
        maps = mg_backbone_map(model, prefix or "backbone")
    else:
        raise ValueError(f"source={source!r}: expected 'tpu' or 'model_garden'")
    return apply_tf_weights(model, ckpt, maps, strict_unused)
