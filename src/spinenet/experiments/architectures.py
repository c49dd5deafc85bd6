"""The architectures the experiments compare, all written in ``spinenet-arch/1`` (paper sections 3.3, 5.3).

* :func:`scale_decreased_fpn`: the scale-decreased baseline. The paper's R50-FPN is the same kind of blocks in
  decreasing order plus an FPN (Table 1 lists ResNet-50 as the {3, 4, 6, 3} scale-decreased allocation), so it is
  written in our own block-spec format, not taken from torchvision: ResNet-50's bottleneck counts at levels 2-5
  chained one after the other (each block's single parent is the block before it), then an FPN made of output
  blocks: top-down from level 5 (``P5 <- C5``, ``P4 <- C4 + P5``, ...) and bottom-up above it (``P6 <- P5``,
  ``P7 <- P6``). Every block, chained or FPN, reaches its parents through the same resampling path as SpineNet's
  (spec 3.3) and uses SpineNet's filter map (level 5 at 256 base filters, where ResNet-50 has 512): the two
  networks differ only in the order and the connections of the blocks. The shared two-block level-2 stem counts
  towards ResNet-50's three level-2 blocks.
* :func:`fixed_ordering`: SpineNet-49's block multiset (levels and types) in a fixed order -- ``hourglass``
  (resolution down, then up) or ``fish`` (down, up, down) -- with connections drawn by the search space's rule.
* :func:`damage`: SpineNet-49's learned connections with each block's short-range input, long-range input or
  both replaced by the block just before it (paper Table 9).
* :func:`matched_scale`: the width multiplier (``filter_size_scale``) at which an architecture's backbone
  multiply-adds match a target (the paper compares at equal FLOPs), found by bisection with the project's MAC
  counter (:mod:`spinenet.profile`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from ..specs import RESNET_STEM, SPINENET_BLOCK_SPECS, TPU_NUM_SPECS, Architecture, BlockSpec
from ..search.space import OUTPUT_LEVELS, SearchSpace

RESNET50_BLOCKS = (3, 4, 6, 3)  # bottleneck blocks at levels 2, 3, 4, 5 (He et al., Table 1)
ORDERINGS: dict[str, tuple[str, ...]] = {
    # "up" = the level number rises (resolution goes down); "down" = it falls (resolution goes up)
    "hourglass": ("up", "down"),
    "fish": ("up", "down", "up"),
}
# How each fixed ordering places the five output blocks (levels 3..7) after the intermediate ones.
OUTPUT_DIRECTION = {"hourglass": "down", "fish": "up"}
DAMAGES = ("short", "long", "both")


def spinenet49_architecture() -> Architecture:
    """SpineNet-49's learned topology as the TF1 code builds it (15 blocks; spec 1.2)."""
    return Architecture("resnet", RESNET_STEM, SPINENET_BLOCK_SPECS[:TPU_NUM_SPECS], name="spinenet49")


def scale_decreased_fpn(counts: Sequence[int] = RESNET50_BLOCKS, min_level: int = 3, max_level: int = 7,
                        name: str = "r50-fpn") -> Architecture:
    """A scale-decreased network (``counts`` blocks at levels 2..5, stem included) plus an FPN from ``min_level``
    to ``max_level`` (module docstring). ``min_level=2`` adds a level-2 output (the Fashion-MNIST recipe reads it)."""
    if len(counts) != 4 or min(counts) < 1:
        raise ValueError(f"scale_decreased_fpn: counts {list(counts)} must give >= 1 block for each level 2..5")
    if not 2 <= min_level <= 5 <= max_level <= 7:
        raise ValueError(f"scale_decreased_fpn: need 2 <= min_level <= 5 <= max_level <= 7, got {min_level}..{max_level}")
    stem = RESNET_STEM
    if counts[0] < len(stem):
        raise ValueError(f"scale_decreased_fpn: the level-2 count {counts[0]} must cover the {len(stem)} stem blocks")
    levels = [lv for lv, n in zip((2, 3, 4, 5), counts) for _ in range(n)][len(stem):]
    blocks: list[BlockSpec] = []
    last_of: dict[int, int] = {2: len(stem) - 1}
    for lv in levels:
        entry = len(stem) + len(blocks)
        blocks.append(BlockSpec(lv, "bottleneck", (entry - 1,), False))
        last_of[lv] = entry
    out_entry: dict[int, int] = {}

    def add_output(level: int, parents: tuple[int, ...]) -> None:
        out_entry[level] = len(stem) + len(blocks)
        blocks.append(BlockSpec(level, "bottleneck", parents, True))

    add_output(5, (last_of[5],))
    for lv in range(4, min_level - 1, -1):  # top-down pathway with lateral inputs
        add_output(lv, (last_of[lv], out_entry[lv + 1]))
    for lv in range(6, max_level + 1):  # the extra coarse levels, as RetinaNet's P6-P7
        add_output(lv, (out_entry[lv - 1],))
    return Architecture("resnet", stem, tuple(blocks), name=name)


def block_multiset(arch: Architecture) -> Counter:
    """``(level, block_fn, is_output)`` counts of the scale-permuted blocks (what the orderings rearrange)."""
    return Counter((b.level, b.block_fn, b.is_output) for b in arch.blocks)


def monotone_runs(levels: Sequence[int], directions: Sequence[str]) -> list[int]:
    """Arrange ``levels`` in monotone runs: every run but the last takes one block of each distinct level left, in
    its direction ("up": ascending levels, "down": descending); the last run takes every block left."""
    left = Counter(levels)
    out: list[int] = []
    for i, direction in enumerate(directions):
        if direction not in ("up", "down"):
            raise ValueError(f"direction {direction!r}: expected up or down")
        if i == len(directions) - 1:
            run = sorted(left.elements())
        else:
            run = sorted(lv for lv in left if left[lv] > 0)
        if direction == "down":
            run = run[::-1]
        left.subtract(run)
        out += run
    return out


def ordering_levels(name: str, base: Architecture | None = None) -> tuple[list[int], list[int]]:
    """The level sequences of a fixed ordering: (intermediate blocks, output blocks), from ``base``'s multiset
    (default SpineNet-49). For docs pages: ``ordering_levels("fish")``."""
    if name not in ORDERINGS:
        raise ValueError(f"unknown ordering {name!r}; choose one of {', '.join(ORDERINGS)}")
    base = base or spinenet49_architecture()
    inter = [b.level for b in base.blocks if not b.is_output]
    outs = sorted(b.level for b in base.blocks if b.is_output)
    if OUTPUT_DIRECTION[name] == "down":
        outs = outs[::-1]
    return monotone_runs(inter, ORDERINGS[name]), outs


def connection_space(base: Architecture | None = None) -> SearchSpace:
    """The search space of ``base``'s stem and intermediate levels without adjustments or type choices: its parent
    decisions are the search space's connection rule (intermediate blocks among the last 5 entries, output blocks
    among all earlier ones)."""
    base = base or spinenet49_architecture()
    outs = tuple(sorted(b.level for b in base.blocks if b.is_output))
    if outs != OUTPUT_LEVELS:
        raise ValueError(f"connection_space: output levels {outs} differ from {OUTPUT_LEVELS}")
    return SearchSpace("fixed-order-connections", base.stem, tuple(b.level for b in base.blocks if not b.is_output))


def fixed_ordering(name: str, seed: int = 0, base: Architecture | None = None) -> Architecture:
    """``base``'s blocks (default SpineNet-49) in the ``name`` ordering, connections drawn uniformly by the search
    space's rule with ``seed``; block types follow ``base``: the k-th placed block of a level takes the type of the
    k-th block of that level in ``base``."""
    base = base or spinenet49_architecture()
    inter, outs = ordering_levels(name, base)
    space = connection_space(base)
    cur = space.cursor()
    rng = np.random.default_rng([seed, 49])
    for lv in inter:
        cur.push(space.int_level_options.index(lv))
    for lv in outs:
        cur.push(space.output_levels.index(lv))
    while not cur.done:
        options = cur.options()
        cur.push(options[int(rng.integers(len(options)))])
    arch = space.decode(cur.decisions, name=f"{name}-{seed}")
    types: dict[tuple[int, bool], list[str]] = {}
    for b in base.blocks:
        types.setdefault((b.level, b.is_output), []).append(b.block_fn)
    blocks = tuple(replace(b, block_fn=types[(b.level, b.is_output)].pop(0)) for b in arch.blocks)
    return replace(arch, blocks=blocks)


def damage(kind: str, base: Architecture | None = None) -> Architecture:
    """``base`` (default SpineNet-49) with each block's short-range input (the parent built last), long-range input
    (the parent built first) or both replaced by the entry just before the block (paper Table 9). A block whose
    replacement equals its other parent keeps that one input; ``both`` is a sequential chain."""
    if kind not in DAMAGES:
        raise ValueError(f"unknown damage {kind!r}; choose one of {', '.join(DAMAGES)}")
    base = base or spinenet49_architecture()
    blocks = []
    for k, b in enumerate(base.blocks):
        previous = len(base.stem) + k - 1
        near, far = max(b.input_offsets), min(b.input_offsets)
        if kind == "both":
            parents = (previous,)
        else:
            kept = far if kind == "short" else near
            parents = tuple(sorted({kept, previous}))
        blocks.append(replace(b, input_offsets=parents))
    return replace(base, blocks=tuple(blocks), name=f"{base.name or 'spinenet'}-no-{kind}")


def backbone_macs(arch: Architecture, size: int, **overrides: Any) -> int:
    """Backbone multiply-adds (the FPN of :func:`scale_decreased_fpn` included) of ``arch`` with the SpineNet
    ResNet-family defaults under ``overrides`` (``filter_size_scale``, ``min_level``, ...), on the meta device."""
    from ..profile import count_macs
    from .training import backbone_on_meta

    return count_macs(backbone_on_meta(arch, **overrides), size)


def matched_scale(arch: Architecture, target_macs: int, size: int, start: float = 1.0, lo: float = 0.05,
                  hi: float = 4.0, tolerance: float = 0.01, iterations: int = 12, **overrides: Any) -> float:
    """The ``filter_size_scale`` at which ``arch``'s backbone MACs (:func:`backbone_macs`) are within
    ``tolerance`` (relative) of ``target_macs``.

    MACs grow roughly as a power of the width, so each step fits ``MACs ~ scale ** p`` through the last two counts
    (secant steps in log-log space, ``p`` starting at 2) and jumps to the target; each count runs the model on the
    meta device, so a match takes a few counts instead of a bisection's dozen. Widths are rounded down per level,
    so an exact match may not exist: after ``iterations`` counts the closest scale is returned, and ``ValueError``
    is raised when even that one is more than 10% off (the comparison's bound)."""
    seen: dict[float, int] = {}

    def macs(scale: float) -> int:
        if scale not in seen:
            seen[scale] = backbone_macs(arch, size, filter_size_scale=scale, **overrides)
        return seen[scale]

    if target_macs <= 0:
        raise ValueError(f"matched_scale: target_macs must be > 0, got {target_macs}")
    scale, power = min(max(start, lo), hi), 2.0
    for _ in range(iterations):
        current = macs(scale)
        if abs(current / target_macs - 1) <= tolerance:
            return scale
        step = min(max(scale * (target_macs / current) ** (1 / power), lo), hi)
        if step == scale:
            break
        if macs(step) != current:
            power = min(max(math.log(macs(step) / current) / math.log(step / scale), 0.5), 3.0)
        scale = step
    best = min(seen, key=lambda s: abs(seen[s] - target_macs))
    if abs(seen[best] / target_macs - 1) > 0.10:
        raise ValueError(f"matched_scale: no width multiplier in [{lo}, {hi}] gives {arch.name or 'the architecture'} "
                         f"{target_macs} MACs within 10% (closest: {seen[best]} at {best:.4g})")
    return best
