"""SpielParallelEnv.state() is PettingZoo's method (the OpenSpiel state object is ``spiel_state``)."""

import numpy as np
import pytest


def test_state_is_the_history_and_a_method():
    pyspiel = pytest.importorskip("pyspiel")
    from marl_kstep.envs.openspiel import SpielParallelEnv

    env = SpielParallelEnv(pyspiel.load_game("tiny_hanabi"))
    with pytest.raises(ValueError, match="reset"):
        env.state()
    env.reset(seed=3)
    before = env.state()
    assert before.dtype == np.int64 and before.tolist() == env.spiel_state.history()
    assert len(before) == 2  # the two chance deals of tiny Hanabi
    cur = f"player_{env.spiel_state.current_player()}"
    env.step({cur: env.spiel_state.legal_actions()[0]})
    after = env.state()
    assert after[:2].tolist() == before.tolist() and len(after) == 3
