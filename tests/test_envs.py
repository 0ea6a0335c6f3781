"""Scenario environments: PettingZoo API, exact compilation, simulation against the kernel."""

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test

import marl_kstep as mk
from marl_kstep.envs import aggregated_chain, compile_env, compile_model, grid_coordination, number_matching, two_state
from marl_kstep.sampling import rollout

SMALL_ROOM = """
####
#0.#
#1G#
####
"""

CONFIGS = [
    (number_matching, dict()),
    (number_matching, dict(n_agents=3, n_numbers=3, observation="own", start="far")),
    (two_state, dict()),
    (aggregated_chain, dict(length=5)),
    (grid_coordination, dict()),
    (grid_coordination, dict(observation="position", collisions="blocked", slip=0.2)),
    (grid_coordination, dict(grid_coordination.TRAP_CONFIG)),
    (grid_coordination, dict(layout=SMALL_ROOM, n_agents=3, starts=[(1, 1), (2, 1), None])),
]
IDS = [f"{m.__name__.rsplit('.', 1)[1]}-{i}" for i, (m, _) in enumerate(CONFIGS)]


@pytest.mark.parametrize("module,config", CONFIGS, ids=IDS)
@pytest.mark.filterwarnings("ignore:Observation numpy array is all zeros")  # observation id 0 is valid
def test_pettingzoo_api(module, config):
    parallel_api_test(module.parallel_env(**config), num_cycles=300)
    api_test(module.env(**config), num_cycles=100)


@pytest.mark.parametrize("module,config", CONFIGS, ids=IDS)
def test_env_observations_are_the_compiled_phi(module, config):
    env = module.parallel_env(**config, max_cycles=50)
    mdp = compile_env(env)
    index = {name: s for s, name in enumerate(mdp.state_names)}
    rng = np.random.default_rng(0)
    for ep in range(5):
        obs, _ = env.reset(seed=ep)
        while env.agents:
            s = index[env.model.state_name(env.model_state)]
            for i, a in enumerate(env.possible_agents):
                assert obs[a] == mdp.obs[i][s]
                assert env.observation_space(a).contains(obs[a])
            acts = {a: int(rng.integers(env.model.n_actions[i])) for i, a in enumerate(env.possible_agents)}
            j = mdp.joint_index([acts[a] for a in env.possible_agents])
            obs, rew, _, _, _ = env.step(acts)
            assert rew[env.possible_agents[0]] == mdp.rewards[s, j]
            succ = mdp.indices[mdp.indptr[s * mdp.n_joint_actions + j]:mdp.indptr[s * mdp.n_joint_actions + j + 1]]
            assert index[env.model.state_name(env.model_state)] in succ


@pytest.mark.parametrize("module,config", CONFIGS, ids=IDS)
def test_render_modes(module, config):
    env = module.parallel_env(**config, render_mode="rgb_array")
    env.reset(seed=1)
    img = env.render()
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape[0] % 24 == 0
    env = module.parallel_env(**config, render_mode="ansi")
    env.reset(seed=1)
    assert isinstance(env.render(), str) and env.render()


def test_grid_picture_shows_walls_goal_decoys_and_agents():
    env = grid_coordination.parallel_env(**grid_coordination.TRAP_CONFIG, render_mode="ansi")
    env.reset(seed=0)
    assert env.render() == "#########\n#0..G..1#\n#########"
    env.step({"agent_0": 4, "agent_1": 3})
    assert env.render() == "#########\n#D0.G.1D#\n#########"
    env = grid_coordination.parallel_env(**grid_coordination.TRAP_CONFIG, render_mode="rgb_array")
    env.reset(seed=0)
    img = env.render()
    from marl_kstep.envs.base import COLORS, agent_color

    assert tuple(img[12, 12]) == COLORS["wall"]
    assert tuple(img[24 + 12, 4 * 24 + 12]) == COLORS["goal"]
    assert tuple(img[24 + 12, 24 + 12]) == agent_color(0)
    assert tuple(img[24 + 12, 7 * 24 + 12]) == agent_color(1)


def test_grid_dynamics_slip_collisions_and_rewards():
    model = grid_coordination.GridCoordinationModel(
        layout="#####\n#0.G#\n#1..#\n#####", collisions="blocked", slip=0.5, move_cost=0.1, decoys=[(2, 2)])
    W = model.W
    a0, a1 = 1 * W + 1, 2 * W + 1
    # agent 0 moves right into (1, 2) while agent 1 moves up into it: conflict, neither moves
    assert model._resolve((a0, 2 * W + 2), (4, 1)) == (a0, 2 * W + 2)
    assert model._resolve((a0, a1), (2, 1)) == (a0, a1)  # swap is blocked
    assert model._resolve((1 * W + 2, 2 * W + 3), (4, 1)) == (1 * W + 3, 1 * W + 3)  # meeting on the goal
    succ = dict(model.transitions((a0, a1), (4, 0)))
    assert sum(succ.values()) == pytest.approx(1.0)
    # agent 0 plays right w.p. 0.5 + 0.5/5; agent 1 stays in (2, 1) unless its slip picks up
    # (into the cell agent 0 leaves) or right: 1 - 2 * 0.1
    assert succ[(1 * W + 2, a1)] == pytest.approx(0.6 * 0.8)
    assert model.reward((1 * W + 3, 1 * W + 3), (0, 0)) == 1.0
    assert model.reward((a0, 2 * W + 2), (4, 0)) == pytest.approx(0.2 - 0.1)


def test_walls_observation_aliases_corridor_cells():
    model = grid_coordination.GridCoordinationModel(**grid_coordination.TRAP_CONFIG)
    W = model.W
    obs = [model.observe((W + c, W + 1), 0) for c in range(1, 8)]
    assert obs == [1 | 2 | 4, 3, 3, 3 | 16, 3, 3, 1 | 2 | 8]


def test_compilation_refuses_large_state_spaces():
    big = "\n".join(["#" * 12] + ["#" + "." * 10 + "#"] * 9 + ["#" * 12])
    big = big[:14] + "G" + big[15:]
    env = grid_coordination.parallel_env(layout=big, n_agents=3)
    # the array build of 729,000 states x 125 joint actions: about 8.3 GiB by the estimate
    with mk.configure(max_model_bytes=2**30), pytest.raises(
            ValueError, match=r"compiling this scenario \(729,000 joint states, 125 joint actions\) would take about "
                              r"8\.\d\d GiB, more than the limit of 1\.00 GiB \(Settings\.max_model_bytes\)"):
        compile_env(env)
    # the per-state build of the same model: about 304 bytes per pair, 26 GiB
    with mk.configure(max_model_bytes=8 * 2**30), pytest.raises(ValueError,
                                                                 match=r"state by state .* about 2\d\.\d\d GiB"):
        compile_model(env.model, vectorised=False)
    with pytest.raises(ValueError, match=r"up to 729,000 joint states, more than max_states=1,000"):
        compile_env(env, max_states=1000)
    with pytest.raises(ValueError, match="compile_env needs a marl_kstep scenario environment"):
        compile_env(object())


def test_aec_env_compiles_too():
    assert compile_env(two_state.env()).n_states == 2


MC_CASES = [
    (number_matching, dict(gamma=0.9, max_cycles=70)),
    (two_state, dict(gamma=0.9, max_cycles=70)),
    (aggregated_chain, dict(length=4, gamma=0.9, max_cycles=70)),
    (grid_coordination, dict(layout=SMALL_ROOM, gamma=0.9, slip=0.1, collisions="blocked", max_cycles=70)),
]


@pytest.mark.parametrize("module,config", MC_CASES, ids=[m.__name__.rsplit(".", 1)[1] for m, _ in MC_CASES])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_coupled_simulation_agrees_with_exact_value(module, config, k):
    env = module.parallel_env(**config)
    mdp = compile_env(env)
    policy = mk.Policy.random(mdp, seed=11 + k)
    policy = mk.Policy([0.7 * t + 0.3 / t.shape[1] for t in policy.theta])  # interior
    horizon = 66  # 0.9**66 < 1e-3
    returns = rollout(env, policy, k, episodes=800, horizon=horizon, seed=k)
    exact = mk.value(mdp, policy, k)
    se = returns.std(ddof=1) / np.sqrt(returns.size)
    bias = 0.9**horizon * np.abs(mdp.rewards).max() / (1 - 0.9)
    assert abs(returns.mean() - exact) < 4 * se + bias, (returns.mean(), exact, se)


def test_rollout_tells_windows_apart():
    """On the two-state trap at p = 0.5, J_1 and J_3 differ by far more than the noise."""
    env = two_state.parallel_env(max_cycles=100)
    mdp = compile_env(env)
    pol = mk.Policy.uniform(mdp)
    r1 = rollout(env, pol, 1, episodes=800, horizon=100, seed=0).mean()
    r3 = rollout(env, pol, 3, episodes=800, horizon=100, seed=0).mean()
    assert abs(r1 - mk.value(mdp, pol, 1)) < 0.3 and abs(r3 - mk.value(mdp, pol, 3)) < 0.3
    assert mk.value(mdp, pol, 3) - mk.value(mdp, pol, 1) > 0.9


def _load_scenario(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scenarios" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scenario_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_number_matching_demonstration(tmp_path):
    res = _load_scenario("number_matching").main(["--out", str(tmp_path)])
    finals = {(r["k"], r["method"]): r["final_J"] for r in res["rows"]}
    for method, tol in (("pgd", 1e-9), ("mirror", 1e-6)):
        assert finals[(1, method)] == pytest.approx(0.0, abs=tol)
        for k in (2, 3, 4):
            assert finals[(k, method)] == pytest.approx(6.477, abs=tol)
    assert (tmp_path / "number_matching.json").exists()


def test_grid_coordination_demonstration(tmp_path):
    res = _load_scenario("grid_coordination").main(["--out", str(tmp_path), "--k-max", "3"])
    pgd = {r["k"]: r for r in res["rows"] if r["method"] == "pgd"}
    j_star = res["J_star"]
    assert j_star == pytest.approx(17.1875, abs=1e-9)
    assert pgd[1]["final_J"] <= 0.9 * j_star
    assert res["smallest_escaping_k"] == 2
    assert abs(pgd[2]["final_J"] - j_star) <= 1e-6


def test_aggregated_chain_escaping_k_grows_with_length(tmp_path):
    res = _load_scenario("aggregated_chain").main(["--out", str(tmp_path), "--lengths", "2", "3", "4", "5"])
    ks = [r["smallest_k"] for r in res["rows"]]
    assert ks == [2, 4, 6, 7]


@pytest.mark.parametrize(
    "factory,config,msg",
    [
        (number_matching.parallel_env, dict(n_agents=0), r"n_agents must be an integer >= 1; got n_agents=0"),
        (number_matching.parallel_env, dict(n_numbers=1), r"n_numbers must be an integer >= 2; got n_numbers=1"),
        (number_matching.parallel_env, dict(observation="all"), r"observation must be one of"),
        (number_matching.parallel_env, dict(start="near"), r"start must be one of"),
        (grid_coordination.parallel_env, dict(goal=(0, 0)), r"goal = \(0, 0\) is inside a wall"),
        (grid_coordination.parallel_env, dict(layout="#####\n#0#G#\n#####"), r"the goal \(1, 3\) is unreachable"),
        (grid_coordination.parallel_env, dict(observation="x"), r"observation must be one of \('walls', 'position'\)"),
        (grid_coordination.parallel_env, dict(starts=[(0, 1), None]), r"starts\[0\] = \(0, 1\) is inside a wall"),
        (grid_coordination.parallel_env, dict(slip=1.5), r"slip must be a probability in \[0, 1\]; got slip=1.5"),
        (grid_coordination.parallel_env, dict(collisions="bounce"), r"collisions must be one of"),
        (grid_coordination.parallel_env, dict(layout="###\n#G\n###"), r"layout line 1 has 2 characters"),
        (grid_coordination.parallel_env, dict(layout="####\n#Gx#\n####"), r"unknown character 'x'"),
        (grid_coordination.parallel_env, dict(n_agents=1), r"layout marks a start for agent 1 but n_agents=1"),
        (aggregated_chain.parallel_env, dict(length=1), r"length must be an integer >= 2; got length=1"),
        (two_state.parallel_env, dict(gamma=1.0), r"gamma must lie in \[0, 1\); got gamma=1.0"),
        (two_state.parallel_env, dict(render_mode="human"), r"render_mode must be None or one of"),
    ],
)
def test_invalid_configs(factory, config, msg):
    with pytest.raises(ValueError, match=msg):
        factory(**config)


def test_illegal_actions_raise():
    env = number_matching.parallel_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions\['agent_0'\] = 2 is not an action of agent_0 \(0..1\)"):
        env.step({"agent_0": 2, "agent_1": 0})
    with pytest.raises(ValueError, match=r"actions is missing an action for 'agent_1'"):
        env.step({"agent_0": 0})
    with pytest.raises(ValueError, match=r"= 0.5 is not an action"):
        env.step({"agent_0": 0.5, "agent_1": 0})


def test_seeded_reset_is_reproducible():
    env = grid_coordination.parallel_env(starts=[None, None], layout=SMALL_ROOM.replace("0", ".").replace("1", "."))
    a = [env.reset(seed=5)[0] for _ in range(2)]
    assert a[0] == a[1]
    starts = {int(env.reset(seed=s)[0]["agent_0"]) for s in range(30)}
    assert len(starts) > 1
