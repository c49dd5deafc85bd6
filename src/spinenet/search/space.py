"""The scale-permuted search space (paper section 3.1, 3.3-3.4; spec section 6).

A space is a fixed, scale-decreasing stem plus a multiset of blocks to place: intermediate blocks (given by
their *base* levels) and five output blocks at levels 3..7. An architecture of the space is one flat sequence of
categorical **decisions**, made in this order (the permutation first, then the rest, as in the paper):

1. ``order``: for each intermediate position, the base level of the block placed there (drawn from the
   levels not yet placed), then the same for the output positions. Intermediate and output blocks are
   permuted separately, and every intermediate block is built before every output block.
2. then, for every block in build order:

   * ``adjust`` (intermediate blocks only, when the space searches block adjustments): the level shift in
     ``level_adjustments`` (the paper's {-1, 0, 1, 2}); shifts leaving levels 2..7 are masked out;
   * ``type`` (when the space searches block types): bottleneck or residual;
   * ``parent0`` then ``parent1``: two distinct parents, written in increasing entry order. Intermediate
     blocks choose among the last ``intermediate_window`` (5) built entries, stem blocks included; output
     blocks among every earlier entry (paper section 5.1, "NAS details").

Each decision has a fixed number of options and a mask that depends only on earlier decisions, so the same
sequence feeds the LSTM controller (one softmax per decision), evolution (mutate one decision, repair the rest)
and random search (uniform over the valid options). :meth:`SearchSpace.decode` turns a sequence into an
:class:`~spinenet.specs.Architecture` that :func:`spinenet.graph.resolve` accepts; :meth:`SearchSpace.encode`
does the reverse for any architecture of the space (SpineNet-49's own list is a point of ``spinenet49``).

Placing *levels* rather than numbered blocks removes the swaps of equal-level blocks that the paper's
(N-5)! * 5! count includes; :meth:`SearchSpace.count` reports both.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..specs import MAX_BLOCK_LEVEL, MIN_BLOCK_LEVEL, Architecture, BlockSpec, StemBlock

OUTPUT_LEVELS = (3, 4, 5, 6, 7)


@dataclass(frozen=True)
class Slot:
    """One decision: what it decides, for which block position, and how many options it has."""

    kind: str  # "order_int" | "order_out" | "adjust" | "type" | "parent0" | "parent1"
    position: int  # block position in build order (0 .. num_blocks-1)
    num_options: int


@dataclass(frozen=True)
class SearchSpace:
    """A stem, the base levels of the intermediate blocks, the output levels and what else is searched."""

    name: str
    stem: tuple[StemBlock, ...]
    intermediate_levels: tuple[int, ...]
    output_levels: tuple[int, ...] = OUTPUT_LEVELS
    level_adjustments: tuple[int, ...] = (0,)
    block_types: tuple[str, ...] = ("bottleneck",)
    intermediate_window: int = 5
    family: str = "resnet"
    description: str = ""
    _slots: tuple[Slot, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"search space {self.name!r}"
        if len(self.stem) < 2:
            raise ValueError(f"{where}: needs at least 2 stem blocks (the first block picks two distinct parents)")
        if not self.intermediate_levels:
            raise ValueError(f"{where}: needs at least one intermediate block")
        for lv in (*self.intermediate_levels, *self.output_levels):
            if not MIN_BLOCK_LEVEL <= lv <= MAX_BLOCK_LEVEL:
                raise ValueError(f"{where}: level {lv} outside {MIN_BLOCK_LEVEL}..{MAX_BLOCK_LEVEL}")
        if len(set(self.output_levels)) != len(self.output_levels):
            raise ValueError(f"{where}: output levels {self.output_levels} repeat a level")
        if 0 not in self.level_adjustments:
            raise ValueError(f"{where}: level_adjustments {self.level_adjustments} must contain 0")
        if sorted(self.level_adjustments) != list(range(min(self.level_adjustments), max(self.level_adjustments) + 1)):
            raise ValueError(f"{where}: level_adjustments {self.level_adjustments} must be consecutive integers")
        if self.intermediate_window < 2:
            raise ValueError(f"{where}: intermediate_window must be >= 2")
        object.__setattr__(self, "intermediate_levels", tuple(sorted(self.intermediate_levels)))
        object.__setattr__(self, "_slots", tuple(self._make_slots()))

    # ------------------------------------------------------------------------------------------ layout
    @property
    def num_stem(self) -> int:
        return len(self.stem)

    @property
    def num_intermediate(self) -> int:
        return len(self.intermediate_levels)

    @property
    def num_blocks(self) -> int:
        return self.num_intermediate + len(self.output_levels)

    @property
    def int_level_options(self) -> tuple[int, ...]:
        """The distinct base levels of the intermediate blocks: the options of an ``order_int`` decision."""
        return tuple(sorted(set(self.intermediate_levels)))

    @property
    def searches_adjustments(self) -> bool:
        return len(self.level_adjustments) > 1

    @property
    def searches_types(self) -> bool:
        return len(self.block_types) > 1

    def candidates(self, position: int) -> range:
        """Entries block ``position`` may take as parents (entry = stem blocks first, then built blocks)."""
        entry = self.num_stem + position
        if position < self.num_intermediate:
            return range(max(0, entry - self.intermediate_window), entry)
        return range(entry)

    def _make_slots(self) -> list[Slot]:
        slots = [Slot("order_int", i, len(self.int_level_options)) for i in range(self.num_intermediate)]
        slots += [Slot("order_out", self.num_intermediate + j, len(self.output_levels))
                  for j in range(len(self.output_levels))]
        for b in range(self.num_blocks):
            if b < self.num_intermediate and self.searches_adjustments:
                slots.append(Slot("adjust", b, len(self.level_adjustments)))
            if self.searches_types:
                slots.append(Slot("type", b, len(self.block_types)))
            n = len(self.candidates(b))
            slots += [Slot("parent0", b, n), Slot("parent1", b, n)]
        return slots

    @property
    def slots(self) -> tuple[Slot, ...]:
        """Every decision in order; a decision sequence has ``len(slots)`` integers."""
        return self._slots

    # ------------------------------------------------------------------------------------------ walking
    def cursor(self) -> "Cursor":
        """A walker over the decisions that knows the valid options of the next one."""
        return Cursor(self)

    def sample(self, rng: np.random.Generator) -> list[int]:
        """Uniform over the valid options of each decision in turn (random search)."""
        cur = self.cursor()
        while not cur.done:
            options = cur.options()
            cur.push(options[int(rng.integers(len(options)))])
        return cur.decisions

    def validate(self, decisions: Sequence[int]) -> list[int]:
        """Return the decisions as ints; raise ValueError naming the first invalid one."""
        if len(decisions) != len(self.slots):
            raise ValueError(f"search space {self.name!r}: expected {len(self.slots)} decisions, got {len(decisions)}")
        cur = self.cursor()
        for i, d in enumerate(decisions):
            mask = cur.mask()
            if not (isinstance(d, (int, np.integer)) and 0 <= d < len(mask) and mask[d]):
                slot = self.slots[i]
                raise ValueError(f"search space {self.name!r}: decision {i} ({slot.kind} of block {slot.position}) "
                                 f"= {d!r} is not a valid option (valid: {cur.options()})")
            cur.push(int(d))
        return cur.decisions

    # ------------------------------------------------------------------------------------ decode/encode
    def decode(self, decisions: Sequence[int], name: str | None = None) -> Architecture:
        """The architecture a (valid) decision sequence describes."""
        decisions = self.validate(decisions)
        n_int = self.num_intermediate
        base: list[int] = []
        adjust = [0] * n_int
        types = [self.block_types[0]] * self.num_blocks
        parents: list[list[int]] = [[] for _ in range(self.num_blocks)]
        for slot, d in zip(self.slots, decisions):
            if slot.kind == "order_int":
                base.append(self.int_level_options[d])
            elif slot.kind == "order_out":
                base.append(self.output_levels[d])
            elif slot.kind == "adjust":
                adjust[slot.position] = self.level_adjustments[d]
            elif slot.kind == "type":
                types[slot.position] = self.block_types[d]
            else:
                parents[slot.position].append(self.candidates(slot.position)[d])
        blocks = []
        for b in range(self.num_blocks):
            level = base[b] + (adjust[b] if b < n_int else 0)
            blocks.append(BlockSpec(level, types[b], tuple(parents[b]), b >= n_int))
        return Architecture(self.family, self.stem, tuple(blocks), name=name)

    def encode(self, arch: Architecture) -> list[int]:
        """The decision sequence of ``arch``; ValueError (naming the block) if ``arch`` is not in this space.

        Parents are read as a set (written in increasing order); an intermediate level reachable from several
        base levels is matched by sorting (the i-th lowest level takes the i-th lowest base level), which finds
        a valid assignment whenever one exists because the adjustments form an interval.
        """
        where = f"architecture {arch.name or ''} is not in search space {self.name!r}".replace("  ", " ")
        if arch.family != self.family or tuple(arch.stem) != tuple(self.stem):
            raise ValueError(f"{where}: its stem {[s.to_dict() for s in arch.stem]} differs from the space's "
                             f"{[s.to_dict() for s in self.stem]}")
        if len(arch.blocks) != self.num_blocks:
            raise ValueError(f"{where}: it has {len(arch.blocks)} blocks, the space {self.num_blocks}")
        n_int = self.num_intermediate
        for b, spec in enumerate(arch.blocks):
            if spec.is_output != (b >= n_int):
                raise ValueError(f"{where}: block {b} should {'' if b >= n_int else 'not '}be an output "
                                 f"(the space builds {n_int} intermediate blocks, then the outputs)")
        out_levels = [arch.blocks[b].level for b in range(n_int, self.num_blocks)]
        if sorted(out_levels) != sorted(self.output_levels):
            raise ValueError(f"{where}: output levels {out_levels} are not a permutation of {self.output_levels}")
        levels = [arch.blocks[b].level for b in range(n_int)]
        order = sorted(range(n_int), key=lambda b: levels[b])
        base = [0] * n_int
        for b, lv in zip(order, self.intermediate_levels):
            base[b] = lv
            if levels[b] - lv not in self.level_adjustments:
                raise ValueError(f"{where}: no assignment of base levels {list(self.intermediate_levels)} with "
                                 f"adjustments {self.level_adjustments} gives intermediate levels {levels} "
                                 f"(block {b} at level {levels[b]})")
        decisions = [self.int_level_options.index(lv) for lv in base]
        decisions += [self.output_levels.index(lv) for lv in out_levels]
        for b, spec in enumerate(arch.blocks):
            if b < n_int and self.searches_adjustments:
                decisions.append(self.level_adjustments.index(spec.level - base[b]))
            if spec.block_fn not in self.block_types:
                raise ValueError(f"{where}: block {b} has type {spec.block_fn!r}; the space allows {self.block_types}")
            if self.searches_types:
                decisions.append(self.block_types.index(spec.block_fn))
            cands = self.candidates(b)
            ps = sorted(spec.input_offsets)
            if len(ps) != 2 or ps[0] == ps[1] or any(p not in cands for p in ps):
                raise ValueError(f"{where}: block {b} has parents {list(spec.input_offsets)}; it needs two distinct "
                                 f"parents among entries {cands.start}..{cands.stop - 1}")
            decisions += [p - cands.start for p in ps]
        self.validate(decisions)
        return decisions

    # ------------------------------------------------------------------------------------------ counting
    def count(self) -> dict[str, int]:
        """Exact number of decision sequences, by factor, and the paper's (N-5)!*5! ordering count.

        ``total`` counts decision sequences (= distinct architectures, except that with block adjustments two
        base levels can reach the same level).
        """
        counts = Counter(self.intermediate_levels)
        orders_int = math.factorial(self.num_intermediate)
        for c in counts.values():
            orders_int //= math.factorial(c)
        orders_out = math.factorial(len(self.output_levels))
        adjust = 1
        for lv in self.intermediate_levels:
            adjust *= sum(MIN_BLOCK_LEVEL <= lv + a <= MAX_BLOCK_LEVEL for a in self.level_adjustments)
        types = len(self.block_types) ** self.num_blocks
        connections = 1
        for b in range(self.num_blocks):
            connections *= math.comb(len(self.candidates(b)), 2)
        total = orders_int * orders_out * adjust * types * connections
        return {"orderings": orders_int * orders_out, "adjustments": adjust, "block_types": types,
                "connections": connections, "total": total, "decisions": len(self.slots),
                "paper_orderings": math.factorial(self.num_intermediate) * orders_out}


class Cursor:
    """Incremental walk over a space's decisions: ``mask()`` of the next decision, then ``push(choice)``."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.decisions: list[int] = []
        self._remaining_int = Counter(space.intermediate_levels)
        self._remaining_out = set(space.output_levels)
        self._base: list[int] = []
        self._parent0: int | None = None

    @property
    def done(self) -> bool:
        return len(self.decisions) == len(self.space.slots)

    @property
    def slot(self) -> Slot:
        return self.space.slots[len(self.decisions)]

    def mask(self) -> list[bool]:
        """Which options of the next decision are valid."""
        s, sp = self.slot, self.space
        if s.kind == "order_int":
            return [self._remaining_int[lv] > 0 for lv in sp.int_level_options]
        if s.kind == "order_out":
            return [lv in self._remaining_out for lv in sp.output_levels]
        if s.kind == "adjust":
            lv = self._base[s.position]
            return [MIN_BLOCK_LEVEL <= lv + a <= MAX_BLOCK_LEVEL for a in sp.level_adjustments]
        if s.kind == "type":
            return [True] * s.num_options
        if s.kind == "parent0":
            return [True] * (s.num_options - 1) + [False]  # the second parent must come later
        return [i > self._parent0 for i in range(s.num_options)]

    def options(self) -> list[int]:
        """The valid options of the next decision."""
        return [i for i, ok in enumerate(self.mask()) if ok]

    def push(self, choice: int) -> None:
        s, sp = self.slot, self.space
        if s.kind == "order_int":
            lv = sp.int_level_options[choice]
            self._remaining_int[lv] -= 1
            self._base.append(lv)
        elif s.kind == "order_out":
            lv = sp.output_levels[choice]
            self._remaining_out.discard(lv)
            self._base.append(lv)
        elif s.kind == "parent0":
            self._parent0 = choice
        self.decisions.append(int(choice))


# ------------------------------------------------------------------------------------------------ spaces
def _stem(counts: Iterable[int]) -> tuple[StemBlock, ...]:
    """Stem from Table 1's {L2, L3, L4, L5} block counts (bottleneck blocks in series)."""
    return tuple(StemBlock(level, "bottleneck") for level, n in zip((2, 3, 4, 5), counts) for _ in range(n))


def _intermediate(permuted: Sequence[int]) -> tuple[int, ...]:
    """Intermediate base levels from Table 1's permuted {L2..L7} counts minus one output block per L3..L7."""
    counts = dict(zip(range(2, 8), permuted))
    for lv in OUTPUT_LEVELS:
        counts[lv] -= 1
    if min(counts.values()) < 0:
        raise ValueError(f"allocation {list(permuted)} has no block for some output level 3..7")
    return tuple(lv for lv, n in counts.items() for _ in range(n))


def table1_space(name: str, stem: Sequence[int], permuted: Sequence[int], *, adjustments: bool = False,
                 description: str = "") -> SearchSpace:
    """A space from a Table 1 row (spec 1.3). ``adjustments=True`` adds the paper's block adjustments
    (level shift {-1, 0, 1, 2} for intermediate blocks, type {bottleneck, residual} for every block, P 3.4);
    without, only permutations and connections are searched (the permuted-ResNet experiment, P 3.3)."""
    return SearchSpace(
        name=name,
        stem=_stem(stem),
        intermediate_levels=_intermediate(permuted),
        level_adjustments=(-1, 0, 1, 2) if adjustments else (0,),
        block_types=("bottleneck", "residual") if adjustments else ("bottleneck",),
        description=description,
    )


SPACES: dict[str, SearchSpace] = {
    s.name: s
    for s in (
        table1_space("spinenet49", (2, 0, 0, 0), (1, 2, 4, 4, 2, 2), adjustments=True,
                     description="SpineNet-49's allocation (Table 1) with permutations, connections, level "
                                 "adjustments {-1,0,1,2} and block types; SpineNet-49 is the all-zero-adjustment "
                                 "point"),
        table1_space("r0-sp53", (2, 0, 0, 0), (1, 4, 6, 2, 1, 1), description="R0-SP53: permutations + connections"),
        table1_space("r14-sp39", (1, 1, 1, 1), (2, 3, 5, 1, 1, 1), description="R14-SP39: permutations + connections"),
        table1_space("r23-sp30", (2, 2, 2, 1), (1, 2, 4, 1, 1, 1), description="R23-SP30: permutations + connections"),
        table1_space("r35-sp18", (2, 3, 5, 1), (1, 1, 1, 1, 1, 1), description="R35-SP18: permutations + connections"),
    )
}


def get_space(name: str) -> SearchSpace:
    try:
        return SPACES[name]
    except KeyError:
        raise ValueError(f"unknown search space {name!r}; choose one of {', '.join(SPACES)}") from None


def agreement(arch: Architecture, target: Architecture, space: SearchSpace | None = None) -> float:
    """Fraction of per-block features two architectures share (the synthetic reward of the tests).

    Per block position: its level (1 point), its type (1 point, only if the space searches types) and its
    parents as a set (1 point per shared parent, 2 in all). 1.0 means the same architecture up to parent order.
    """
    if len(arch.blocks) != len(target.blocks):
        raise ValueError(f"agreement: {len(arch.blocks)} blocks vs {len(target.blocks)} in the target")
    with_types = space is None or space.searches_types
    got = total = 0
    for a, t in zip(arch.blocks, target.blocks):
        got += (a.level == t.level) + len(set(a.input_offsets) & set(t.input_offsets))
        total += 1 + len(set(t.input_offsets))
        if with_types:
            got += a.block_fn == t.block_fn
            total += 1
    return got / total
