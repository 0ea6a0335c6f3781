"""mpe2's simple_speaker_listener_v4 (discrete actions, Box observations) through encoders."""

from __future__ import annotations

import numpy as np
import pytest

import marl_kstep as mk

mpe2 = pytest.importorskip("mpe2")
from mpe2 import simple_speaker_listener_v4  # noqa: E402


def make(max_cycles=10):
    return simple_speaker_listener_v4.parallel_env(continuous_actions=False, max_cycles=max_cycles)


def encoders():
    # speaker: its goal colour, indexed as seen (3 colours); listener: the comm channel (dims 8..10, 2 bins
    # each) and the sign of its offset to landmark 0 (dims 2, 3; 3 bins each)
    return [mk.ObservationIndexer(3, decimals=3),
            mk.BoxDiscretiser([-0.1, -0.1, 0, 0, 0], [0.1, 0.1, 1, 1, 1], [3, 3, 2, 2, 2], dims=[2, 3, 8, 9, 10])]


def test_box_observations_need_an_encoder():
    with pytest.raises(ValueError, match="encoders"):
        mk.SampledKStep(make(), 1, gamma=0.9)


def test_sampled_estimate_on_speaker_listener_is_reproducible_and_centred():
    a = mk.SampledKStep(make(), 2, gamma=0.9, episodes=20, seed=3, encoders=encoders())
    b = mk.SampledKStep(make(), 2, gamma=0.9, episodes=20, seed=3, encoders=encoders())
    assert a.n_obs == (3, 72) and a.n_actions == (3, 5) and a.horizon == 10
    pol = mk.Policy.uniform(a)
    ea, eb = a.estimate(pol), b.estimate(pol)
    assert ea.J_k == eb.J_k and np.isfinite(ea.J_k) and ea.J_k < 0  # mpe2 rewards are negative distances
    for g, se in zip(ea.grad, ea.grad_se, strict=True):
        np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-9)  # rows are centred
        assert np.all(np.isfinite(se))
    # the returns of rollout with the same encoders agree in mean with J_k (same k-coupled execution)
    r = mk.rollout(make(), pol, 2, episodes=20, seed=5, gamma=0.9, encoders=encoders())
    assert abs(r.mean() - ea.J_k) < 4.5 * np.hypot(r.std() / np.sqrt(20), ea.J_k_se)
