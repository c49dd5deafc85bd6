"""Strategies on a synthetic reward (agreement with a hidden target), state round-trips, the controller."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spinenet.search.journal import _dump_state, _load_state
from spinenet.search.runner import synthetic_target
from spinenet.search.space import agreement, get_space
from spinenet.search.strategies import Controller, make_strategy, mutate, run_search

# Calibrated on the spinenet49 space (70 decisions): with these defaults RL first reached 0.9 after 571-1202
# evaluations and evolution after 750-1692 over seeds 0-4, while random search's best after 2000 was 0.53-0.62.
BUDGET = 2000
SEEDS = range(5)


def _best_rewards(strategy_name: str, seed: int) -> float:
    space = get_space("spinenet49")
    target = synthetic_target(space, 100 + seed)
    strategy = make_strategy(strategy_name, space, seed=seed)
    rewards = run_search(strategy, lambda d: agreement(space.decode(d), target, space), BUDGET)
    return max(rewards)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["rl", "evolution"])
def test_learning_strategies_find_the_hidden_architecture(strategy, one_thread):
    best = [_best_rewards(strategy, seed) for seed in SEEDS]
    assert sum(b >= 0.9 for b in best) >= 4, f"{strategy}: best agreement per seed {best}"


@pytest.mark.slow
def test_random_search_does_not(one_thread):
    best = [_best_rewards("random", seed) for seed in SEEDS]
    assert float(np.median(best)) < 0.6, f"random: best agreement per seed {best}"


@pytest.mark.parametrize("name", ["rl", "evolution", "random"])
def test_state_round_trip_continues_identically(name, one_thread):
    """A strategy rebuilt from its serialised state (as the journal stores it) asks exactly what the original
    would have asked, after learning from the same rewards."""
    space = get_space("r23-sp30")
    target = synthetic_target(space, 7)
    reward = lambda d: agreement(space.decode(d), target, space)  # noqa: E731
    options = {"batch_size": 5} if name == "rl" else {"population_size": 8, "sample_size": 3} if name == "evolution" \
        else {}
    original = make_strategy(name, space, seed=3, **options)
    pending = []
    for i in range(23):  # interleaved asks and tells, with asks in flight when the state is taken
        pending.append(original.ask())
        if i % 3 != 2:
            d = pending.pop(0)
            original.tell(d, reward(d))
    restored = make_strategy(name, space, seed=99, **options)  # a different seed: everything must come from state
    restored.load_state_dict(_load_state(_dump_state(original.state_dict())))
    for strategy in (original, restored):
        for d in pending:
            strategy.tell(d, reward(d))
    a = [original.ask() for _ in range(12)]
    b = [restored.ask() for _ in range(12)]
    assert a == b
    if name == "rl":
        assert original.updates == restored.updates > 0


def test_controller_sampling_matches_its_log_prob(one_thread):
    space = get_space("spinenet49")
    torch.manual_seed(0)
    controller = Controller(space)
    torch.nn.init.normal_(controller.head_weight, std=0.5)  # a non-uniform policy
    decisions, logp = controller.sample(6, torch.Generator().manual_seed(1))
    recomputed, entropy = controller.log_prob(decisions)
    assert torch.allclose(logp, recomputed, atol=1e-4)
    for d in decisions:
        space.validate(d)
    assert (entropy > 0).all()


@pytest.mark.parametrize("algorithm", ["reinforce", "ppo"])
def test_controller_learns_towards_reward(algorithm, one_thread):
    """One update with a positive advantage raises the log-probability of that sample."""
    space = get_space("r35-sp18")
    strategy = make_strategy("rl", space, seed=0, batch_size=4, lr=0.05, algorithm=algorithm)
    batch = [strategy.ask() for _ in range(4)]
    before, _ = strategy.controller.log_prob(batch)
    strategy.baseline = 0.5
    for i, d in enumerate(batch):
        strategy.tell(d, 1.0 if i == 0 else 0.0)
    after, _ = strategy.controller.log_prob(batch)
    assert after[0] > before[0]
    assert (after[1:] < before[1:]).all()


def test_mutation_changes_one_decision_and_stays_valid():
    space = get_space("spinenet49")
    rng = np.random.default_rng(0)
    for _ in range(300):
        parent = space.sample(rng)
        child = mutate(space, parent, rng)
        space.validate(child)
        assert child != parent
        first = next(i for i, (a, b) in enumerate(zip(parent, child)) if a != b)
        if space.slots[first].kind.startswith("parent") or space.slots[first].kind in ("adjust", "type"):
            # outside the permutation, later decisions stay valid, so exactly one changes (or two when the first
            # parent moves past the second)
            assert sum(a != b for a, b in zip(parent, child)) <= 2


def test_unknown_strategy_and_bad_options():
    space = get_space("r35-sp18")
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("ppo2", space)
    with pytest.raises(ValueError, match="population_size"):
        make_strategy("evolution", space, population_size=1)
    with pytest.raises(ValueError, match="algorithm"):
        make_strategy("rl", space, algorithm="a2c")
    with pytest.raises(ValueError, match="strategy 'random'"):
        make_strategy("random", space, population_size=10)
