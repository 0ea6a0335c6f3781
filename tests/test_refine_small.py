"""The numpy signature refinement for small models (``model._refine_small``) against the
brute-force refinement and the compiled splitter refinement of ``tests/test_refine.py``, and
``lump`` through it against the compiled route."""

from __future__ import annotations

import numpy as np
from test_refine import chain, dense_to_csr, naive_refinement, number_matching, random_model

import marl_kstep as mk
from marl_kstep._refine import check_stable, refine_lumping
from marl_kstep.envs import number_matching as nm
from marl_kstep.model import _refine_small
from marl_kstep.model._refine_small import refine_small


def test_equals_the_naive_and_the_compiled_refinement_on_random_models():
    rng = np.random.default_rng(2024)
    n_lumped = 0
    for _ in range(300):
        P, init = random_model(rng)
        model = dense_to_csr(P)
        got, done = refine_small(*model, init)
        assert done
        np.testing.assert_array_equal(got, naive_refinement(P, init))  # same first-occurrence numbering
        np.testing.assert_array_equal(got, refine_lumping(*model, init))
        assert check_stable(*model, got) == 0.0
        n_lumped += got.max() + 1 < P.shape[0]
    assert n_lumped > 80


def test_number_matching_lumps_to_the_differences():
    model, init = number_matching(2, 6)
    got, done = refine_small(*model, init)
    assert done and got.max() + 1 == 6  # 36 states, 6 differences x_1 - x_0 mod 6
    np.testing.assert_array_equal(got, refine_lumping(*model, init))


def test_unfinished_rounds_hand_over_a_partition_the_kernel_completes():
    model, init = chain(40)  # one state splits off per round from each end: about 20 rounds
    partial, done = refine_small(*model, init, max_rounds=3)
    assert not done
    full, done_full = refine_small(*model, init)
    assert done_full and full.max() + 1 == 40
    assert partial.max() + 1 < 40  # not finished after 3 rounds
    np.testing.assert_array_equal(refine_lumping(*model, partial), full)


def test_lump_gives_the_same_quotient_through_either_route(monkeypatch):
    mdp = nm.build_mdp(n_agents=3, n_numbers=4)
    small = mk.lump(mdp)
    monkeypatch.setattr("marl_kstep.model.lumping.SMALL_MAX_TRANSITIONS", -1)  # force the compiled route
    compiled = mk.lump(mdp)
    assert small.n_blocks == compiled.n_blocks < mdp.n_states
    np.testing.assert_array_equal(small.block, compiled.block)
    for name in ("indptr", "indices", "probs", "rewards", "mu"):
        np.testing.assert_array_equal(getattr(small.quotient, name), getattr(compiled.quotient, name))
    assert _refine_small.SMALL_MAX_TRANSITIONS >= mdp.probs.size
