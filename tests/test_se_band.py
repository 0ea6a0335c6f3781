"""Learning curves of sampled runs show the recorded standard errors as a band (issue 25)."""

from __future__ import annotations

import numpy as np

from marl_kstep import plotting
from marl_kstep.experiments import RunSpec
from marl_kstep.experiments.records import row_from_record
from marl_kstep.experiments.run import run_one


def _band(ax):
    return [c for c in ax.collections if c.get_gid() == "se_band"]


def _edges(band, x):
    """The band's lower and upper y at each of ``x`` (fill_between's polygon)."""
    v = band.get_paths()[0].vertices
    return (np.array([v[np.isclose(v[:, 0], xi), 1].min() for xi in x]),
            np.array([v[np.isclose(v[:, 0], xi), 1].max() for xi in x]))


def test_the_band_is_the_recorded_standard_error_of_a_sampled_run():
    spec = RunSpec({"scenario": "two_state"}, 2, iters=6, seed=1, start="random",
                   estimator={"kind": "sampled", "episodes": 300, "horizon": None})
    row = row_from_record(run_one(spec), "two_state", None)
    se = np.asarray(row["history_J_k_se"])
    assert se.shape == (7,) and np.all(se > 0)
    fig = plotting.learning_curves([row])
    ax_k, ax_j = fig.axes[:2]
    (band,) = _band(ax_k)
    assert not _band(ax_j)  # J is exact alongside: no band there
    lo, hi = _edges(band, np.arange(7))
    J_k = np.asarray(row["history_J_k"])
    np.testing.assert_allclose(lo, J_k - 1.96 * se, rtol=1e-12)
    np.testing.assert_allclose(hi, J_k + 1.96 * se, rtol=1e-12)


def test_several_seeds_band_the_mean_and_exact_runs_have_none():
    rows = [dict(k=1, method="pgd", seed=s, estimator="sampled", history_J=h, history_J_k=h, final_J=h[-1],
                 J_star=None, history_J_k_se=se)
            for s, (h, se) in enumerate([([1.0, 2.0, 3.0], [0.3, 0.2, 0.1]), ([3.0, 4.0], [0.4, 0.2])])]
    fig = plotting.learning_curves(rows)
    (band,) = _band(fig.axes[0])
    lo, hi = _edges(band, [0, 1, 2])
    mean = np.array([2.0, 3.0, 3.5])  # the short run held at its last value (and its last se)
    se_mean = np.sqrt(np.array([0.3**2 + 0.4**2, 0.2**2 + 0.2**2, 0.1**2 + 0.2**2])) / 2
    np.testing.assert_allclose(hi, mean + 1.96 * se_mean, rtol=1e-12)
    np.testing.assert_allclose(lo, mean - 1.96 * se_mean, rtol=1e-12)
    assert "1.96 standard errors" in fig._suptitle.get_text()
    exact = [dict(r, estimator="exact", history_J_k_se=None) for r in rows]
    fig = plotting.learning_curves(exact)
    assert not _band(fig.axes[0]) and "standard errors" not in fig._suptitle.get_text()
    assert len(fig.axes[0].collections) == 1  # the range over seeds only
