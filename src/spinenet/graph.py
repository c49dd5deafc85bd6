"""Resolve an architecture into a validated, pruned block graph (pure Python, no torch).

The graph is the single description that the PyTorch modules, the multiply-add counter, the diagram and the
checkpoint mapping all read. It follows the official construction (spec section 3):

* every block takes its parents through a resampling path (1x1 alpha conv, spatial change, 1x1 conv),
* an output block also absorbs, unresampled, every earlier block that nothing has consumed yet and that has
  its level and channel count (spec 3.6, NAS-FPN's rule),
* stochastic-depth rates are ``rate * (i + 1) / len(blocks)`` for spec ``i`` (spec 3.9; the official block lists
  have 16 specs in Model Garden and 15 in the TF1 code, hence the two denominators),
* blocks that reach no requested endpoint are dropped *after* this bookkeeping, without renumbering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .specs import (
    BLOCK_TYPES,
    FILTER_SIZE_MAP,
    FLAVORS,
    MAX_BLOCK_LEVEL,
    MIN_BLOCK_LEVEL,
    MOBILE_FILTER_SIZE_MAP,
    STEM_FILTERS,
    Architecture,
    Scaling,
)

FAMILY_BLOCK_TYPES = {"resnet": ("bottleneck", "residual"), "mobile": ("mbconv",)}
# Level of the stem's output before the first stem block: after conv+maxpool (ResNet) or the 3x3/s2 conv (mobile).
STEM_BASE_LEVEL = {"resnet": 2, "mobile": 1}


@dataclass(frozen=True)
class Edge:
    """A parent of a block together with how it is resampled to the block (spec 3.3)."""

    source: int
    source_level: int
    source_channels: int
    mid_channels: int  # width of the alpha conv (ResNet family) or of the depthwise path (mobile)
    target_channels: int

    def level_delta(self, target_level: int) -> int:
        """> 0: downsample by 2**delta, < 0: upsample, 0: same resolution."""
        return target_level - self.source_level


@dataclass(frozen=True)
class Node:
    """One block group: a stem block (``spec_index is None``) or a scale-permuted block."""

    index: int
    spec_index: int | None
    level: int
    block_fn: str
    filters: int
    in_channels: int
    out_channels: int
    stride: int
    repeats: int
    parents: tuple[Edge, ...]
    extras: tuple[int, ...]
    is_output: bool
    drop_rate: float

    @property
    def is_stem(self) -> bool:
        return self.spec_index is None


@dataclass(frozen=True)
class Graph:
    family: str
    flavor: str
    nodes: tuple[Node, ...]
    endpoints: dict[int, int]  # level -> node index
    endpoints_num_filters: int
    stem_channels: int
    min_level: int
    max_level: int
    scaling: Scaling
    num_specs: int

    def node(self, index: int) -> Node:
        for n in self.nodes:
            if n.index == index:
                return n
        raise KeyError(f"block {index} is not in the graph (pruned or out of range)")

    @property
    def levels(self) -> list[int]:
        return list(range(self.min_level, self.max_level + 1))


def round_filters(filters: float, divisor: int = 8) -> int:
    """TF1 mobile channel rule (spec 2.2): round to a multiple of 8, at least 8, never more than 10% down."""
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


def channel_rule(family: str, flavor: str, scale: float) -> Callable[[int], int]:
    """Per-level base width C(level) for a family and implementation flavour."""
    if family == "mobile":
        if flavor == "tpu":
            return lambda level: round_filters(MOBILE_FILTER_SIZE_MAP[level] * scale)
        return lambda level: int(MOBILE_FILTER_SIZE_MAP[level] * scale)
    return lambda level: int(FILTER_SIZE_MAP[level] * scale)


def block_out_channels(block_fn: str, filters: int) -> int:
    return 4 * filters if block_fn == "bottleneck" else filters


def resolve(
    arch: Architecture,
    scaling: Scaling,
    flavor: str = "tpu",
    min_level: int = 3,
    max_level: int = 7,
    stochastic_depth_rate: float = 0.0,
) -> Graph:
    """Validate ``arch`` and return its graph; every fault raises ``ValueError`` naming the block (and the file,
    for an architecture read from one)."""
    try:
        return _resolve(arch, scaling, flavor, min_level, max_level, stochastic_depth_rate)
    except ValueError as err:
        if arch.source is None:
            raise
        raise ValueError(f"{arch.source}: {err}") from None


def _resolve(arch: Architecture, scaling: Scaling, flavor: str, min_level: int, max_level: int,
             stochastic_depth_rate: float) -> Graph:
    family = arch.family
    if family not in FAMILY_BLOCK_TYPES:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILY_BLOCK_TYPES)}")
    if flavor not in FLAVORS:
        raise ValueError(f"unknown flavor {flavor!r}; expected one of {FLAVORS}")
    if not (MIN_BLOCK_LEVEL <= min_level <= max_level <= MAX_BLOCK_LEVEL):
        raise ValueError(
            f"min_level={min_level}, max_level={max_level}: need {MIN_BLOCK_LEVEL} <= min_level <= max_level <= {MAX_BLOCK_LEVEL}")
    if not arch.blocks:
        raise ValueError("the architecture has no blocks")
    if not arch.stem:
        raise ValueError("the architecture has no stem blocks")
    if scaling.filter_size_scale <= 0 or scaling.endpoints_num_filters <= 0 or scaling.block_repeats < 1:
        raise ValueError(f"invalid scaling {scaling}: scale and endpoint filters must be > 0, block_repeats >= 1")
    if not 0.0 <= stochastic_depth_rate < 1.0:
        raise ValueError(f"stochastic_depth_rate={stochastic_depth_rate} must be in [0, 1)")

    allowed = FAMILY_BLOCK_TYPES[family]
    width = channel_rule(family, flavor, scaling.filter_size_scale)
    base_level = STEM_BASE_LEVEL[family]
    if family == "mobile":
        stem_channels = width(0)
    else:
        stem_channels = STEM_FILTERS

    nodes: list[Node] = []
    # ---- stem: block groups in series, each at a level >= the previous one
    prev_level, prev_channels = base_level, stem_channels
    for i, sb in enumerate(arch.stem):
        where = f"stem block {i}"
        if sb.block_fn not in allowed:
            raise ValueError(f"{where}: unknown block type {sb.block_fn!r} for family {family!r}; expected one of {allowed}")
        if not (base_level <= sb.level <= MAX_BLOCK_LEVEL) or sb.level < prev_level:
            raise ValueError(f"{where}: level {sb.level} out of range (stem levels go from {base_level} up, never down)")
        filters = width(sb.level)
        out = block_out_channels(sb.block_fn, filters)
        nodes.append(Node(i, None, sb.level, sb.block_fn, filters, prev_channels, out, 2 ** (sb.level - prev_level),
                          scaling.block_repeats if family == "resnet" else 1, (), (), False, 0.0))
        prev_level, prev_channels = sb.level, out

    # ---- scale-permuted blocks
    num_stem = len(nodes)
    out_degree = [0] * num_stem
    outputs: dict[int, int] = {}
    n_specs = len(arch.blocks)
    for k, spec in enumerate(arch.blocks):
        index = num_stem + k
        where = f"block {k} (entry {index})"
        if spec.block_fn not in BLOCK_TYPES or spec.block_fn not in allowed:
            raise ValueError(f"{where}: unknown block type {spec.block_fn!r} for family {family!r}; expected one of {allowed}")
        if not (MIN_BLOCK_LEVEL <= spec.level <= MAX_BLOCK_LEVEL):
            raise ValueError(f"{where}: level {spec.level} out of range [{MIN_BLOCK_LEVEL}, {MAX_BLOCK_LEVEL}]")
        if len(spec.input_offsets) < 1:
            raise ValueError(f"{where}: needs at least one input offset")
        filters = width(spec.level)
        out = block_out_channels(spec.block_fn, filters)
        parents = []
        for p in spec.input_offsets:
            if p < 0:
                raise ValueError(f"{where}: input offset {p} is out of range (offsets count from 0)")
            if p == index:
                raise ValueError(f"{where}: input offset {p} refers to the block itself")
            if p > index:
                raise ValueError(f"{where}: input offset {p} is a forward reference (only entries 0..{index - 1} exist)")
            src = nodes[p]
            if family == "mobile":
                mid = src.out_channels  # no alpha reduction in the mobile resampling (spec 3.14)
            else:
                src_base = src.out_channels // 4 if src.block_fn == "bottleneck" else src.out_channels
                mid = int(src_base * scaling.resample_alpha)
                if mid < 1:
                    raise ValueError(f"{where}: resample_alpha={scaling.resample_alpha} leaves no channels for parent {p}")
            parents.append(Edge(p, src.level, src.out_channels, mid, out))
            out_degree[p] += 1
        extras: list[int] = []
        if spec.is_output:
            for j, prev in enumerate(nodes):
                if out_degree[j] == 0 and prev.level == spec.level and prev.out_channels == out:
                    extras.append(j)
                    out_degree[j] += 1
            if spec.level in outputs:
                raise ValueError(f"{where}: a second output block at level {spec.level} (block {outputs[spec.level] - num_stem} is one)")
            outputs[spec.level] = index
        drop = stochastic_depth_rate * (k + 1) / n_specs if stochastic_depth_rate else 0.0
        nodes.append(Node(index, k, spec.level, spec.block_fn, filters, out, out, 1, scaling.block_repeats,
                          tuple(parents), tuple(extras), spec.is_output, drop))
        out_degree.append(0)

    endpoints: dict[int, int] = {}
    for level in range(min_level, max_level + 1):
        if level not in outputs:
            have = sorted(outputs)
            raise ValueError(f"no output block at requested level {level} (output levels: {have}); "
                             f"add one or change min_level/max_level")
        endpoints[level] = outputs[level]

    # ---- prune what reaches no requested endpoint (e.g. Model Garden's level-2 block when min_level=3)
    live: set[int] = set()
    stack = list(endpoints.values())
    by_index = {n.index: n for n in nodes}
    while stack:
        i = stack.pop()
        if i in live:
            continue
        live.add(i)
        n = by_index[i]
        stack.extend(e.source for e in n.parents)
        stack.extend(n.extras)
        if n.is_stem and i > 0:
            stack.append(i - 1)  # stem blocks are chained
    kept = tuple(n for n in nodes if n.index in live)
    return Graph(family, flavor, kept, endpoints, scaling.endpoints_num_filters, stem_channels, min_level,
                 max_level, scaling, n_specs)
