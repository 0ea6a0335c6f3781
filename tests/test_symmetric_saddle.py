"""docs/when-k-helps.md, the uniform start: with the two agents' symmetry kept exactly, k >= 3 stops at a
symmetric saddle (train from the same start can leave it only through floating-point asymmetry: at k = 4 the
agents' gradients differ by about 2e-16, and that is how it reaches J*)."""

import sys
from pathlib import Path

import numpy as np
import pytest

import marl_kstep as mk
from marl_kstep.experiments.runner import build_target

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "viz"))
from when_k_helps import symmetric_ascent  # noqa: E402


@pytest.fixture(scope="module")
def mdp():
    return build_target({"scenario": "number_matching", "config": {"start": "far"}})[0]


@pytest.mark.parametrize(("k", "J"), [(3, 0.8895), (4, 0.8994), (5, 0.9076)])
def test_exact_symmetry_stops_at_a_symmetric_saddle(mdp, k, J):
    value, table, iters, asym = symmetric_ascent(mdp, k)
    assert value == pytest.approx(J, abs=5e-5)  # far below J* = 6.477
    assert iters < 2000 and asym < 1e-13  # converged; the agents' gradients agree to rounding
    assert 0.3 < table[0, 1] < 0.5 and table[1, 0] == 1.0  # stochastic in "mismatch", keep on "match"
    # a saddle: moving the agents apart (one increments more, the other less) raises J_k
    d = np.array([[-1e-3, 1e-3], [0.0, 0.0]])
    apart = mk.Policy([table + d, table - d])
    assert mk.value(mdp, apart, k) > mk.value(mdp, mk.Policy([table, table.copy()]), k) + 1e-9

