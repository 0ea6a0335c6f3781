"""BLAS threads in the library's batched dense solves (threads.blas_threads): limited inside,
restored after, the user's own numpy untouched."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import marl_kstep as mk
from marl_kstep.envs import number_matching
from marl_kstep.threads import BLAS_THREADS, blas_threads


def blas_counts() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


pytestmark = pytest.mark.skipif(not blas_counts(), reason="no BLAS library that threadpoolctl can see")


def test_the_limit_holds_inside_and_the_previous_count_comes_back():
    with threadpool_limits(limits=3, user_api="blas"):  # the user's own setting
        assert set(blas_counts()) == {3}
        with blas_threads():
            assert set(blas_counts()) == {BLAS_THREADS}
        assert set(blas_counts()) == {3}


def test_search_and_certify_solve_with_one_blas_thread_and_restore(monkeypatch):
    seen = []
    solve = np.linalg.solve

    def spy(a, b):
        seen.append(tuple(blas_counts()))
        return solve(a, b)

    mdp = number_matching.build_mdp(n_agents=2, n_numbers=4)
    with threadpool_limits(limits=2, user_api="blas"):
        monkeypatch.setattr(np.linalg, "solve", spy)
        J, best = mk.best_deterministic(mdp)
        cert = mk.certify(mdp, best, order=2)
        monkeypatch.setattr(np.linalg, "solve", solve)
        assert set(blas_counts()) == {2}  # restored: the user's numpy keeps its threads
        np.linalg.solve(np.eye(3), np.ones(3))
    assert seen and all(set(c) == {BLAS_THREADS} for c in seen)
    assert cert.one_opt and J == pytest.approx(mk.value(mdp, best, 1), abs=1e-9)


def test_an_error_inside_restores_the_count():
    with threadpool_limits(limits=2, user_api="blas"):
        with pytest.raises(RuntimeError), blas_threads():
            raise RuntimeError("inside")
        assert set(blas_counts()) == {2}
