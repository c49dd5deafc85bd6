"""Search strategies behind one ask/tell interface (paper section 3, spec section 6).

* :class:`ControllerSearch` (``rl``): the paper's controller, an LSTM that emits the space's decisions one by one
  (Zoph & Le), each from a masked softmax, trained by REINFORCE with a moving-average baseline and an entropy
  bonus. The paper does not name its RL algorithm (spec 6); NAS-FPN used PPO. REINFORCE with a baseline is the
  textbook form of the same policy gradient and needs no extra hyper-parameters.
* :class:`RegularizedEvolution` (``evolution``): Real et al. 2019 -- tournament selection of a parent, one
  mutation, and the *oldest* member leaves the population.
* :class:`RandomSearch` (``random``): every decision uniform over its valid options.

Every strategy works on decision sequences (:mod:`spinenet.search.space`): ``ask()`` returns one, ``tell(decisions,
reward)`` reports its reward (``None`` for a failed trial, which is ignored). Asks and tells may interleave in any
order, so several trials can run at once. ``state_dict()`` / ``load_state_dict()`` hold everything needed to
continue exactly (controller weights, optimizer, baseline, RNG, population), as plain Python and tensors.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from .space import SearchSpace


class Strategy(Protocol):
    name: str

    def ask(self) -> list[int]: ...

    def tell(self, decisions: Sequence[int], reward: float | None) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def _set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state


# ------------------------------------------------------------------------------------------------ random
class RandomSearch:
    """Uniform over the valid options of each decision in turn."""

    name = "random"

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.rng = np.random.default_rng(seed)

    def ask(self) -> list[int]:
        return self.space.sample(self.rng)

    def tell(self, decisions: Sequence[int], reward: float | None) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_state(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _set_rng_state(self.rng, state["rng"])


# ---------------------------------------------------------------------------------------------- evolution
def mutate(space: SearchSpace, decisions: Sequence[int], rng: np.random.Generator) -> list[int]:
    """Change one decision to another valid option; later decisions keep their value when still valid,
    otherwise they are redrawn uniformly (e.g. after a change of the permutation)."""
    decisions = list(decisions)
    n = len(space.slots)
    for _ in range(100):
        i = int(rng.integers(n))
        cur = space.cursor()
        for d in decisions[:i]:
            cur.push(d)
        options = [o for o in cur.options() if o != decisions[i]]
        if not options:
            continue  # this decision has no alternative here (e.g. the last block to place)
        cur.push(int(rng.choice(options)))
        for d in decisions[i + 1:]:
            options = cur.options()
            cur.push(d if d in options else options[int(rng.integers(len(options)))])
        return cur.decisions
    raise ValueError(f"search space {space.name!r} has no decision with an alternative option")


class RegularizedEvolution:
    """Aging evolution (Real et al., AAAI 2019): the first ``population_size`` asks are random; then each ask
    mutates the best of ``sample_size`` random members; each tell adds the child and retires the oldest."""

    name = "evolution"

    def __init__(self, space: SearchSpace, seed: int = 0, population_size: int = 50, sample_size: int = 10) -> None:
        if population_size < 2 or not 1 <= sample_size <= population_size:
            raise ValueError(f"evolution: need population_size >= 2 and 1 <= sample_size <= population_size, got "
                             f"{population_size}, {sample_size}")
        self.space = space
        self.population_size, self.sample_size = population_size, sample_size
        self.rng = np.random.default_rng(seed)
        self.population: list[tuple[list[int], float]] = []  # oldest first
        self.num_asked = 0

    def ask(self) -> list[int]:
        self.num_asked += 1
        if self.num_asked <= self.population_size or not self.population:
            return self.space.sample(self.rng)
        k = min(self.sample_size, len(self.population))
        picks = self.rng.choice(len(self.population), size=k, replace=False)
        parent = max((self.population[int(i)] for i in picks), key=lambda m: m[1])
        return mutate(self.space, parent[0], self.rng)

    def tell(self, decisions: Sequence[int], reward: float | None) -> None:
        if reward is None or not math.isfinite(reward):
            return
        self.population.append((list(decisions), float(reward)))
        if len(self.population) > self.population_size:
            self.population.pop(0)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_state(self.rng), "population": [[d, r] for d, r in self.population],
                "num_asked": self.num_asked}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _set_rng_state(self.rng, state["rng"])
        self.population = [(list(d), float(r)) for d, r in state["population"]]
        self.num_asked = int(state["num_asked"])


# --------------------------------------------------------------------------------------------- controller
class Controller(nn.Module):
    """LSTM policy over a space's decisions: step t reads the embedding of decision t-1 and emits a masked
    softmax over the options of decision t (one output head and one input embedding per decision)."""

    def __init__(self, space: SearchSpace, hidden: int = 64, tanh_constant: float = 2.5) -> None:
        super().__init__()
        self.space = space
        sizes = [s.num_options for s in space.slots]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.max_options = max(sizes)
        self.hidden, self.tanh_constant = hidden, tanh_constant
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.start = nn.Parameter(torch.zeros(1, 1, hidden))
        self.embed = nn.Embedding(self.offsets[-1], hidden)
        self.head_weight = nn.Parameter(torch.empty(self.offsets[-1], hidden))
        self.head_bias = nn.Parameter(torch.zeros(self.offsets[-1]))
        nn.init.uniform_(self.head_weight, -0.1, 0.1)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        # [T, max_options] index of each (decision, option) in the head rows; padding points at row 0
        index = torch.zeros(len(sizes), self.max_options, dtype=torch.long)
        padded = torch.ones(len(sizes), self.max_options, dtype=torch.bool)
        for t, n in enumerate(sizes):
            index[t, :n] = torch.arange(self.offsets[t], self.offsets[t] + n)
            padded[t, :n] = False
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("padded", padded, persistent=False)

    def _squash(self, logits: torch.Tensor) -> torch.Tensor:
        if self.tanh_constant:
            return self.tanh_constant * torch.tanh(logits / self.tanh_constant)
        return logits

    def _cell(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of ``self.lstm`` (PyTorch's gate order i, f, g, o), cheaper than calling it per step."""
        gates = (x @ self.lstm.weight_ih_l0.T + self.lstm.bias_ih_l0 + h @ self.lstm.weight_hh_l0.T
                 + self.lstm.bias_hh_l0)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> tuple[list[list[int]], torch.Tensor]:
        """``n`` decision sequences from the policy and their log-probabilities."""
        cursors = [self.space.cursor() for _ in range(n)]
        h = c = torch.zeros(n, self.hidden)
        x = self.start[0].expand(n, -1)
        logp = torch.zeros(n)
        for t in range(len(self.space.slots)):
            h, c = self._cell(x, h, c)
            a, b = self.offsets[t], self.offsets[t + 1]
            logits = self._squash(h @ self.head_weight[a:b].T + self.head_bias[a:b])
            mask = torch.tensor([cur.mask() for cur in cursors])
            log_probs = torch.log_softmax(logits.masked_fill(~mask, -math.inf), dim=-1)
            choice = torch.multinomial(log_probs.exp(), 1, generator=generator)
            logp += log_probs.gather(1, choice).squeeze(1)
            choice = choice.squeeze(1)
            for cur, ch in zip(cursors, choice.tolist()):
                cur.push(ch)
            x = self.embed(choice + self.offsets[t])
        return [cur.decisions for cur in cursors], logp

    def log_prob(self, batch: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of each decision sequence and the mean per-decision entropy, shape [B] each.

        The inputs are the known decisions (teacher forcing), so the LSTM runs over the whole sequence at once.
        """
        n, steps = len(batch), len(self.space.slots)
        choices = torch.tensor([list(d) for d in batch], dtype=torch.long)  # [B, T]
        valid = np.zeros((n, steps, self.max_options), dtype=bool)
        for i, d in enumerate(batch):
            cur = self.space.cursor()
            for t, ch in enumerate(d):
                mk = cur.mask()
                valid[i, t, :len(mk)] = mk
                cur.push(ch)
        inputs = self.embed(choices[:, :-1] + torch.tensor(self.offsets[:steps - 1]))
        out, _ = self.lstm(torch.cat([self.start.expand(n, 1, -1), inputs], dim=1))  # [B, T, H]
        rows = self.head_weight[self.index]  # [T, max_options, H]
        logits = self._squash(torch.einsum("bth,toh->bto", out, rows) + self.head_bias[self.index])
        logits = logits.masked_fill(~torch.from_numpy(valid), -math.inf)
        log_probs = torch.log_softmax(logits, dim=-1)
        logp = log_probs.gather(2, choices.unsqueeze(2)).squeeze(2).sum(1)
        entropy = -(log_probs.exp() * log_probs.nan_to_num(neginf=0.0)).sum(-1).mean(1)
        return logp, entropy


class ControllerSearch:
    """The paper's RNN controller trained by REINFORCE with a moving-average baseline (spec 6).

    Architectures are sampled ``batch_size`` at a time from the current policy; every ``batch_size`` tells make
    one Adam step on ``-(reward - baseline) * log p(decisions) - entropy_weight * entropy``; the baseline is an
    exponential moving average of rewards (``baseline_decay``).
    """

    name = "rl"

    def __init__(self, space: SearchSpace, seed: int = 0, hidden: int = 64, lr: float | None = None,
                 batch_size: int = 10, baseline_decay: float = 0.9, entropy_weight: float = 1e-3,
                 tanh_constant: float = 2.5, algorithm: str = "reinforce", ppo_epochs: int = 4,
                 ppo_clip: float = 0.2) -> None:
        if algorithm not in ("reinforce", "ppo"):
            raise ValueError(f"rl: algorithm={algorithm!r}; expected 'reinforce' or 'ppo'")
        if batch_size < 1 or ppo_epochs < 1 or not 0 < ppo_clip < 1:
            raise ValueError(f"rl: need batch_size >= 1, ppo_epochs >= 1, 0 < ppo_clip < 1 (got {batch_size}, "
                             f"{ppo_epochs}, {ppo_clip})")
        self.algorithm, self.ppo_epochs, self.ppo_clip = algorithm, ppo_epochs, ppo_clip
        if lr is None:  # calibrated on the synthetic reward (docs/search.md)
            lr = 0.005 if algorithm == "reinforce" else 0.002
        self.space = space
        self.batch_size, self.baseline_decay, self.entropy_weight = batch_size, baseline_decay, entropy_weight
        self.generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.controller = Controller(space, hidden, tanh_constant)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=lr)
        self.baseline: float | None = None
        self.queue: list[list[int]] = []  # sampled, not yet asked
        self.buffer: list[tuple[list[int], float]] = []  # told, not yet learnt from
        self.updates = 0

    def ask(self) -> list[int]:
        if not self.queue:
            self.queue = self.controller.sample(self.batch_size, self.generator)[0]
        return self.queue.pop(0)

    def tell(self, decisions: Sequence[int], reward: float | None) -> None:
        if reward is None or not math.isfinite(reward):
            return
        self.buffer.append((list(decisions), float(reward)))
        if len(self.buffer) >= self.batch_size:
            self._update()

    def _update(self) -> None:
        batch, self.buffer = self.buffer, []
        rewards = torch.tensor([r for _, r in batch])
        mean = float(rewards.mean())
        if self.baseline is None:
            self.baseline = mean
        advantage = rewards - self.baseline
        decisions = [d for d, _ in batch]
        if self.algorithm == "reinforce":
            logp, entropy = self.controller.log_prob(decisions)
            self._step(-(advantage * logp).mean() - self.entropy_weight * entropy.mean())
        else:
            with torch.no_grad():
                old = self.controller.log_prob(decisions)[0]
            for _ in range(self.ppo_epochs):
                logp, entropy = self.controller.log_prob(decisions)
                ratio = torch.exp(logp - old)
                clipped = torch.clamp(ratio, 1 - self.ppo_clip, 1 + self.ppo_clip)
                surrogate = torch.minimum(ratio * advantage, clipped * advantage)
                self._step(-surrogate.mean() - self.entropy_weight * entropy.mean())
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * mean
        self.updates += 1
        self.queue = []  # later asks come from the updated policy

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "baseline": self.baseline, "queue": self.queue,
                "buffer": [[d, r] for d, r in self.buffer], "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.baseline = state["baseline"]
        self.queue = [list(d) for d in state["queue"]]
        self.buffer = [(list(d), float(r)) for d, r in state["buffer"]]
        self.updates = int(state["updates"])


STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "rl": ControllerSearch,
    "evolution": RegularizedEvolution,
    "random": RandomSearch,
}


def make_strategy(name: str, space: SearchSpace, seed: int = 0, **options: Any) -> Strategy:
    """``rl`` | ``evolution`` | ``random`` with keyword options of the class (e.g. ``population_size=50``)."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None
    try:
        return cls(space, seed=seed, **options)
    except TypeError as err:
        raise ValueError(f"strategy {name!r}: {err}") from None


def run_search(strategy: Strategy, evaluate: Callable[[list[int]], float], budget: int) -> list[float]:
    """Sequential ask/evaluate/tell for ``budget`` evaluations; returns the rewards in order (tests, notebooks)."""
    rewards = []
    for _ in range(budget):
        d = strategy.ask()
        r = evaluate(d)
        strategy.tell(d, r)
        rewards.append(r)
    return rewards
