"""The search space (spec section 6): validity of samples, encode/decode, counts, constraints."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from spinenet.graph import resolve
from spinenet.search.space import SPACES, SearchSpace, agreement, get_space
from spinenet.specs import (
    RESNET_STEM,
    SCALING_MAP,
    SPINENET_BLOCK_SPECS,
    TPU_NUM_SPECS,
    Architecture,
    BlockSpec,
    Scaling,
)

PROXY_SCALING = Scaling(64, 0.25, 0.25, 1)
SPINENET49 = Architecture("resnet", RESNET_STEM, SPINENET_BLOCK_SPECS[:TPU_NUM_SPECS])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SPACES))
def test_samples_are_valid_architectures(name):
    """Thousands of draws per space: the resolver accepts each one (official and proxy scaling), every block
    respects the space's rules, and encode(decode(d)) == d."""
    space = get_space(name)
    rng = np.random.default_rng(123)
    n_int = space.num_intermediate
    for i in range(2000):
        decisions = space.sample(rng)
        arch = space.decode(decisions)
        graph = resolve(arch, SCALING_MAP["49"])
        assert sorted(graph.endpoints) == [3, 4, 5, 6, 7]
        if i % 10 == 0:
            resolve(arch, PROXY_SCALING)
        assert arch.stem == space.stem
        for b, spec in enumerate(arch.blocks):
            entry = space.num_stem + b
            assert len(set(spec.input_offsets)) == 2 and max(spec.input_offsets) < entry
            if b < n_int:
                assert not spec.is_output
                assert min(spec.input_offsets) >= entry - 5  # the last 5 built blocks, stem included
            else:
                assert spec.is_output
            assert spec.block_fn in space.block_types
        assert sorted(s.level for s in arch.blocks[n_int:]) == [3, 4, 5, 6, 7]
        if not space.searches_adjustments:
            assert Counter(s.level for s in arch.blocks[:n_int]) == Counter(space.intermediate_levels)
        encoded = space.encode(arch)
        if space.searches_adjustments:  # two base levels may reach one level: the arch, not the path, is unique
            assert space.decode(encoded) == arch
        else:
            assert encoded == decisions


def test_spinenet49_is_a_point_of_its_space():
    space = get_space("spinenet49")
    decisions = space.encode(SPINENET49)
    assert space.decode(decisions) == SPINENET49
    # the all-zero adjustment point: SpineNet-49's intermediate levels are its allocation
    adjust = [d for d, s in zip(decisions, space.slots) if s.kind == "adjust"]
    assert [space.level_adjustments[a] for a in adjust] == [0] * space.num_intermediate
    assert agreement(SPINENET49, space.decode(decisions), space) == 1.0


def test_table1_allocations():
    """Stem and permuted block counts per level are the paper's Table 1 rows (spec 1.3)."""
    rows = {"r35-sp18": ((2, 3, 5, 1), (1, 1, 1, 1, 1, 1)), "r23-sp30": ((2, 2, 2, 1), (1, 2, 4, 1, 1, 1)),
            "r14-sp39": ((1, 1, 1, 1), (2, 3, 5, 1, 1, 1)), "r0-sp53": ((2, 0, 0, 0), (1, 4, 6, 2, 1, 1)),
            "spinenet49": ((2, 0, 0, 0), (1, 2, 4, 4, 2, 2))}
    for name, (stem, permuted) in rows.items():
        space = get_space(name)
        assert [sum(s.level == lv for s in space.stem) for lv in (2, 3, 4, 5)] == list(stem)
        levels = Counter(space.intermediate_levels) + Counter(space.output_levels)
        assert [levels[lv] for lv in range(2, 8)] == list(permuted)
        assert space.num_blocks == sum(permuted)
    # the permuted-ResNet family searches permutations and connections only (P 3.3), SpineNet-49 also
    # level adjustments and block types (P 3.4)
    assert not get_space("r0-sp53").searches_adjustments and not get_space("r0-sp53").searches_types
    assert get_space("spinenet49").level_adjustments == (-1, 0, 1, 2)
    assert get_space("spinenet49").block_types == ("bottleneck", "residual")


def test_counts_match_enumeration_on_a_tiny_space():
    """count()['total'] equals the number of decision sequences found by exhaustive enumeration, and the
    factors are the hand-derived ones."""
    space = SearchSpace("tiny", RESNET_STEM, (2, 4), output_levels=(3, 4), level_adjustments=(0, 1),
                        intermediate_window=3)

    def walk(prefix):
        cur = space.cursor()
        for d in prefix:
            cur.push(d)
        if cur.done:
            return 1
        return sum(walk(prefix + [o]) for o in cur.options())

    counts = space.count()
    assert counts["total"] == walk([])
    assert counts["orderings"] == 2 * 2
    assert counts["adjustments"] == 2 * 2
    # block 0 (entry 2) picks 2 of entries 0-1, block 1 (entry 3) 2 of 0-2 (window 3); outputs 2 of 0-3, 0-4
    assert counts["connections"] == 1 * 3 * 6 * 10
    assert counts["total"] == 4 * 4 * 180


def test_paper_ordering_count():
    """The paper's (N-5)! * 5! orderings for SpineNet-49's 15 blocks."""
    assert get_space("spinenet49").count()["paper_orderings"] == math.factorial(10) * math.factorial(5)


def test_encode_rejects_architectures_outside_the_space():
    space = get_space("spinenet49")
    blocks = list(SPINENET49.blocks)
    far = BlockSpec(blocks[9].level, blocks[9].block_fn, (2, 10), False)  # entry 11: parent 2 is 9 blocks back
    with pytest.raises(ValueError, match="block 9 has parents"):
        space.encode(Architecture("resnet", RESNET_STEM, tuple(blocks[:9] + [far] + blocks[10:])))
    with pytest.raises(ValueError, match="14 blocks, the space 15"):
        get_space("r0-sp53").encode(Architecture("resnet", RESNET_STEM, tuple(blocks[:14])))
    with pytest.raises(ValueError, match="stem"):
        get_space("r14-sp39").encode(SPINENET49)
    with pytest.raises(ValueError, match="not a valid option"):
        space.decode([0] * len(space.slots))
    with pytest.raises(ValueError, match="unknown search space"):
        get_space("r50")


def test_agreement_counts_shared_features():
    space = get_space("spinenet49")
    blocks = list(SPINENET49.blocks)
    changed = blocks[:]
    changed[0] = BlockSpec(blocks[0].level, "residual", (0, 1), False)  # one type of 60 features
    other = Architecture("resnet", RESNET_STEM, tuple(changed))
    assert agreement(other, SPINENET49, space) == pytest.approx(59 / 60)
