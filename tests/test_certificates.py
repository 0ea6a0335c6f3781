"""Certificates (SPEC §9) against brute force over every deterministic policy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import marl_kstep as mk
from marl_kstep.certificates import certify
from marl_kstep.envs import number_matching


def all_tables(mdp):
    return [list(t) for t in itertools.product(*[itertools.product(range(a), repeat=o)
                                                 for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True)])]


@pytest.mark.parametrize("observation", ["match", "own"])
def test_certify_agrees_with_brute_force_on_two_agent_number_matching(observation):
    mdp = number_matching.build_mdp(n_agents=2, n_numbers=3 if observation == "own" else 6, start="far",
                                    observation=observation)
    tables = all_tables(mdp)
    value = {tuple(map(tuple, t)): mk.value(mdp, mk.Policy.deterministic(mdp, t)) for t in tables}
    for t in tables[:: max(1, len(tables) // 40)]:
        J0 = value[tuple(map(tuple, t))]
        singles, pairs = [], []
        for i in range(2):
            for o in range(mdp.n_obs[i]):
                for a in range(mdp.n_actions[i]):
                    if a != t[i][o]:
                        u = [list(x) for x in t]
                        u[i][o] = a
                        singles.append(value[tuple(map(tuple, u))])
        for (i1, o1), (i2, o2) in itertools.combinations([(i, o) for i in range(2) for o in range(mdp.n_obs[i])], 2):
            for a1 in range(mdp.n_actions[i1]):
                for a2 in range(mdp.n_actions[i2]):
                    if a1 != t[i1][o1] and a2 != t[i2][o2]:
                        u = [list(x) for x in t]
                        u[i1][o1], u[i2][o2] = a1, a2
                        pairs.append(value[tuple(map(tuple, u))])
        cert = certify(mdp, mk.Policy.deterministic(mdp, t), order=2, tol=1e-9)
        assert cert.J == pytest.approx(J0, abs=1e-10) and not cert.rounded
        assert cert.evaluated == len(singles) + len(pairs)
        assert cert.one_opt == (max(singles) <= J0 + 1e-9 * max(1, abs(J0)))
        assert cert.two_opt == (max(singles + pairs) <= J0 + 1e-9 * max(1, abs(J0)))
        gains = sorted((v for v in singles + pairs if v > J0 + 1e-9 * max(1, abs(J0))), reverse=True)
        np.testing.assert_allclose([d.J for d in cert.improving], gains, atol=1e-10)


def test_rounding_is_said_and_the_budget_refuses_before_work():
    mdp = number_matching.build_mdp(start="far")
    cert = certify(mdp, number_matching.trap_start(mdp), order=1)
    assert cert.rounded and cert.order == 1 and cert.two_opt is None
    assert cert.evaluated == sum(o * (a - 1) for o, a in zip(mdp.n_obs, mdp.n_actions, strict=True))
    with pytest.raises(ValueError, match="max_deviations"):
        certify(mdp, number_matching.trap_start(mdp), order=2, max_deviations=3)
    with pytest.raises(ValueError, match="order"):
        certify(mdp, number_matching.trap_start(mdp), order=3)
