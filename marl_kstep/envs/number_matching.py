r"""Number matching (SPEC §7.1).

``n`` agents hold numbers :math:`x_i \in \{0..m-1\}`; each either keeps (action 0) or
increments modulo ``m`` (action 1). The reward of a step is paid on the state it starts
in: 1 if all numbers are equal, minus ``move_cost`` per increment in the joint action.

Observations:

* ``"match"``: 1 if :math:`x_i = x_{(i+1) \bmod n}`, else 0;
* ``"own"``: the agent's own number.

Start distributions: ``"uniform"`` over all :math:`m^n` joint states, or ``"far"``: uniform
over the states with :math:`(x_{i+1} - x_i) \bmod m = \lfloor m/2 \rfloor` for
:math:`i = 0..n-2`.

With ``match`` observations the ordinary gradient is trapped at "everyone keeps"
(J = 0) from a near-keep start, while the best deterministic policy (one agent
increments on mismatch, the others keep) is worth 6.477 for n = 2, m = 6, cost 0.3,
gamma 0.9 (SPEC §5).
"""

from __future__ import annotations

import itertools

import numpy as np
from pettingzoo.utils.conversions import parallel_to_aec

from ..model import JointMDP
from ..policy import Policy
from ..validation import check_choice, check_gamma, check_int, check_real
from .base import COLORS, ScenarioModel, agent_color, compile_model
from .pz import ModelParallelEnv
from .vectorised import VectorisedModel

__all__ = ["NumberMatchingModel", "parallel_env", "env", "raw_env", "build_mdp", "trap_start", "OBSERVATIONS", "STARTS"]

OBSERVATIONS = ("match", "own")
#: Most agents (joint actions are 2**n_agents, indexed in int64).
MAX_AGENTS = 62
STARTS = ("uniform", "far")


class NumberMatchingModel(ScenarioModel, VectorisedModel):
    r"""Model of number matching; states are tuples ``(x_0, ..., x_{n-1})``.

    State code (array protocol): :math:`\sum_i x_i m^{n-1-i}` (agent 0 most significant)."""

    def __init__(self, n_agents: int = 2, n_numbers: int = 6, move_cost: float = 0.3,
                 gamma: float = 0.9, observation: str = "match", start: str = "uniform"):
        self.n = check_int("n_agents", n_agents, minimum=1, maximum=MAX_AGENTS)
        self.m = check_int("n_numbers", n_numbers, minimum=2, maximum=2**31)
        self.move_cost = check_real("move_cost", move_cost, minimum=0.0)
        self.gamma = check_gamma(gamma)
        check_choice("observation", observation, OBSERVATIONS)
        check_choice("start", start, STARTS)
        self.observation = observation
        self.start = start
        self.n_actions = (2,) * self.n
        self.n_obs = (2 if observation == "match" else self.m,) * self.n

    def initial_distribution(self):
        if self.start == "uniform":
            states = list(itertools.product(range(self.m), repeat=self.n))
        else:
            h = self.m // 2
            states = [tuple((x0 + i * h) % self.m for i in range(self.n)) for x0 in range(self.m)]
        p = 1.0 / len(states)
        return [(s, p) for s in states]

    def sample_initial(self, rng):
        """Uniform over the start set, without enumerating it (``m**n`` states for ``uniform``)."""
        if self.start == "uniform":
            return tuple(int(x) for x in rng.integers(0, self.m, size=self.n))
        x0 = int(rng.integers(0, self.m))
        return tuple((x0 + i * (self.m // 2)) % self.m for i in range(self.n))

    def transitions(self, state, actions):
        return [(tuple((x + a) % self.m for x, a in zip(state, actions, strict=True)), 1.0)]

    def reward(self, state, actions):
        return float(all(x == state[0] for x in state)) - self.move_cost * sum(actions)

    def observe(self, state, agent):
        if self.observation == "own":
            return state[agent]
        return int(state[agent] == state[(agent + 1) % self.n])

    def estimate_states(self):
        return self.m**self.n

    # ------------------------------------------------------------ array protocol
    def code_space(self):
        return self.m**self.n

    def outcomes(self):
        return 1

    def _radix(self):
        return self.m ** np.arange(self.n - 1, -1, -1, dtype=np.int64)

    def encode(self, state):
        return int(np.dot(np.asarray(state, np.int64), self._radix()))

    def decode(self, code):
        return tuple(int(x) for x in (int(code) // self._radix()) % self.m)

    def _digits(self, codes):
        return (np.asarray(codes, np.int64)[None, :] // self._radix()[:, None]) % self.m

    def initial_codes(self):
        if self.start == "uniform":
            codes = np.arange(self.m**self.n, dtype=np.int64)
        else:
            x0 = np.arange(self.m, dtype=np.int64)
            codes = ((x0[None, :] + np.arange(self.n)[:, None] * (self.m // 2)) % self.m).T @ self._radix()
        return codes, np.full(codes.size, 1.0 / codes.size)

    def step_arrays(self, codes, joint):
        codes = np.asarray(codes, np.int64)
        joint = np.asarray(joint, np.int64)
        succ = codes.copy()
        moves = np.zeros(codes.size, np.int64)
        same = np.ones(codes.size, bool)
        x0 = None
        for i, r in enumerate(self._radix().tolist()):  # one agent at a time: 1-d integer work only
            x = (codes // r) % self.m
            a = (joint >> (self.n - 1 - i)) & 1
            succ += a * r - (x + a == self.m) * (self.m * r)  # x + a, wrapped modulo m
            moves += a
            if x0 is None:
                x0 = x
            else:
                same &= x == x0
        rewards = same.astype(np.float64) - self.move_cost * moves
        return succ[:, None], np.ones((succ.size, 1)), rewards

    def observe_arrays(self, codes):
        x = self._digits(codes)
        if self.observation == "own":
            return x
        return (x == np.roll(x, -1, axis=0)).astype(np.int64)

    def action_names(self):
        return (("keep", "inc"),) * self.n

    def obs_names(self):
        if self.observation == "match":
            return (("mismatch", "match"),) * self.n
        return (tuple(str(x) for x in range(self.m)),) * self.n


    def render_text(self, state):
        return " ".join(f"{x}" for x in state) + ("  (match)" if len(set(state)) == 1 else "")

    def render_cells(self, state):
        cells = np.tile(np.array(COLORS["floor"], np.uint8), (self.n, self.m, 1))
        done = len(set(state)) == 1
        for i, x in enumerate(state):
            cells[i, x] = COLORS["good"] if done else agent_color(i)
        return cells


def parallel_env(n_agents: int = 2, n_numbers: int = 6, move_cost: float = 0.3, gamma: float = 0.9,
                 observation: str = "match", start: str = "uniform", max_cycles: int = 200,
                 render_mode: str | None = None) -> ModelParallelEnv:
    """Number matching as a PettingZoo ParallelEnv (see the module docstring)."""
    model = NumberMatchingModel(n_agents, n_numbers, move_cost, gamma, observation, start)
    return ModelParallelEnv(model, "number_matching_v0", max_cycles, render_mode)


def raw_env(**config):
    """AEC version, through PettingZoo's ``parallel_to_aec``."""
    return parallel_to_aec(parallel_env(**config))


env = raw_env


def trap_start(mdp: JointMDP, asymmetry: float = 1e-6) -> Policy:
    """The SPEC §5 start, every row (keep 0.97, inc 0.03), with agent ``i``'s rows moved by
    ``i * asymmetry`` toward "keep". From the exactly symmetric start (``asymmetry=0``)
    projected ascent with k = 3, 4 stays on the symmetric subspace and stops at a saddle."""
    return Policy.from_arrays(mdp, [np.tile([0.97 + i * asymmetry, 0.03 - i * asymmetry], (o, 1))
                                    for i, o in enumerate(mdp.n_obs)])


def build_mdp(**config) -> JointMDP:
    """The compiled number-matching MDP for ``NumberMatchingModel(**config)``."""
    return compile_model(NumberMatchingModel(**config))[0]
