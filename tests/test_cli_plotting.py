"""Figures (data read back from the Axes) and the command line end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import error_lines
from PIL import Image

import marl_kstep as mk
from marl_kstep import cli, plotting
from marl_kstep.envs import grid_coordination, two_state


@pytest.fixture(scope="module")
def two_state_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_state")
    assert cli.main(["run", "two_state", "--k", "1", "3", "--method", "pgd", "--iters", "100", "--out", str(out),
                     "--quiet"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_run_writes_results_and_summary(two_state_results):
    out, res = two_state_results
    assert res["scenario"] == "two_state" and res["J_star"] == pytest.approx(9.0)
    finals = {r["k"]: r["final_J"] for r in res["rows"]}
    assert finals == pytest.approx({1: 5.0, 3: 9.0})
    lines = (out / "summary.csv").read_text().splitlines()
    assert lines[0].startswith("scenario,k,method,seed,estimator,step,iters,final_J") and len(lines) == 3
    records = [json.loads(ln) for ln in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["spec"]["k"] for r in records] == [1, 3] and all(r["spec"]["options"]["iters"] == 100 for r in records)
    assert all(len(r["history_J"]) == r["iterations"] + 1 for r in res["rows"])
    assert "numpy" in res["versions"] and res["gamma"] == 0.9


def test_learning_curves_plot_the_histories(two_state_results):
    _, res = two_state_results
    fig = plotting.learning_curves(res)
    ax_k, ax_j = fig.axes[:2]
    for ax, field in ((ax_k, "history_J_k"), (ax_j, "history_J")):
        lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("k=")]
        assert [ln.get_label() for ln in lines] == ["k=1 pgd", "k=3 pgd"]
        for ln, r in zip(lines, res["rows"], strict=True):
            np.testing.assert_array_equal(ln.get_ydata(), r[field])
        star = [ln for ln in ax.get_lines() if ln.get_label().startswith("J*")]
        assert star and star[0].get_ydata()[0] == pytest.approx(9.0)


def test_learning_curves_draw_seeds_as_a_mean_and_a_band():
    rows = [dict(k=2, method="pgd", seed=s, history_J=h, history_J_k=h, final_J=h[-1], J_star=None)
            for s, h in enumerate([[0.0, 1.0, 2.0], [0.0, 3.0], [0.0, 2.0, 4.0]])]
    fig = plotting.learning_curves(rows)
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("k=")]
    assert line.get_label() == "k=2 pgd (3 seeds)"
    np.testing.assert_allclose(line.get_ydata(), [0.0, 2.0, 3.0])  # the short run is held at its last value
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].max() == pytest.approx(4.0) and band[:, 1].min() == pytest.approx(0.0)


def test_gap_vs_k_shows_success_rates(two_state_results):
    _, res = two_state_results
    fig = plotting.gap_vs_k(res)
    ax, ax_gap = fig.axes[:2]
    (rate,) = [ln for ln in ax.get_lines() if ln.get_label() == "pgd"]
    np.testing.assert_allclose(rate.get_ydata(), [0.0, 1.0])  # k = 1 stays at 5, k = 3 reaches J* = 9
    (gap,) = [ln for ln in ax_gap.get_lines() if ln.get_label() == "pgd"]
    np.testing.assert_allclose(gap.get_ydata(), [4.0, 0.0], atol=1e-9)
    assert ax_gap.get_yscale() == "linear" and [t.get_text() for t in ax.texts] == ["0/1", "1/1"]


def test_policy_heatmap_shows_probabilities():
    mdp = two_state.build_mdp()
    pol = mk.Policy.from_arrays(mdp, [np.array([[0.25, 0.75]])])
    fig = plotting.policy_heatmap(pol, mdp)
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), [[0.25, 0.75]])
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.25", "0.75"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["L", "R"]


def test_grid_trajectory_and_gif(tmp_path):
    env = grid_coordination.parallel_env(**grid_coordination.TRAP_CONFIG)
    mdp = mk.compile_env(env)
    _, best = mk.best_deterministic(mdp)
    fig = plotting.grid_trajectory(env, best, 2, seed=0, path=tmp_path / "t.png")
    W = env.model.W
    # both agents walk to the goal cell (1, 4) in three steps and stay
    assert fig.trajectory[3] == (W + 4, W + 4) and fig.trajectory[0] == (W + 1, W + 7)
    xs = fig.axes[0].get_lines()[0].get_xdata()
    assert xs[0] == pytest.approx(1 - 0.06) and xs[3] == pytest.approx(4 - 0.06)
    img = Image.open(tmp_path / "t.png")
    assert img.format == "PNG" and img.size[0] > 100
    plotting.animate_grid(env, best, 2, seed=0, path=tmp_path / "t.gif", horizon=6)
    gif = Image.open(tmp_path / "t.gif")
    assert gif.format == "GIF" and gif.n_frames == 7


def test_plot_command_writes_every_figure(two_state_results):
    out, res = two_state_results
    assert cli.main(["plot", str(out)]) == 0
    figs = sorted(p.name for p in (out / "figures").iterdir())
    assert figs == ["gap_vs_k.png", "learning_curves.png", "policy_k1_pgd.png", "policy_k3_pgd.png"]
    for name in figs:
        assert Image.open(out / "figures" / name).format == "PNG"


def test_grid_plot_command_writes_trajectories(tmp_path):
    assert cli.main(["run", "grid_coordination", "--k", "2", "--method", "pgd", "--iters", "50",
                     "--out", str(tmp_path), "--quiet"]) == 0
    assert cli.main(["plot", str(tmp_path)]) == 0
    names = {p.name for p in (tmp_path / "figures").iterdir()}
    assert {"trajectory_k2_pgd.png", "trajectory_k2_pgd.gif", "policy_k2_pgd.png"} <= names


def test_resume_skips_finished_runs(two_state_results, capsys):
    out, res = two_state_results
    before = (out / "results.json").read_text()
    assert cli.main(["run", "two_state", "--k", "1", "3", "4", "--method", "pgd", "--iters", "100",
                     "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "skipping k=1 pgd seed=None" in printed and "skipping k=3 pgd seed=None" in printed
    after = json.loads((out / "results.json").read_text())
    assert after["rows"][:2] == json.loads(before)["rows"][:2]
    assert [r["k"] for r in after["rows"]] == [1, 3, 4]


def test_resume_refuses_another_config(two_state_results):
    out, _ = two_state_results
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "two_state", "--set", "gamma=0.8", "--out", str(out), "--resume"])
    assert exc.value.code == 2


def test_interrupted_write_keeps_previous_results(two_state_results, monkeypatch):
    from marl_kstep.experiments import io as experiments

    out, _ = two_state_results
    path = out / "results.json"
    before = path.read_text()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments.json, "dumps", lambda *a, **k: "{\"partial\": ")  # a torn payload...
    monkeypatch.setattr(os, "replace", boom)  # ...interrupted before the rename
    with pytest.raises(KeyboardInterrupt):
        experiments.write_json_atomic(path, {"rows": []})
    assert path.read_text() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["run", "nope"], "invalid choice: 'nope' (choose from 'aggregated_chain', 'grid_coordination'"),
        (["run", "two_state", "--set", "foo=1"], "unknown --set key 'foo' for two_state; valid keys: small_reward"),
        (["run", "two_state", "--set", "gamma=1.5"], "bad --set value for two_state: gamma must lie in [0, 1)"),
        (["run", "two_state", "--set", "gamma"], "--set expects key=value"),
        (["plot", "/nonexistent/dir"], "runs.jsonl does not exist"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, msg, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(error_lines(err)) <= 3


def test_help_lists_options_with_defaults():
    out = subprocess.run([sys.executable, "-m", "marl_kstep.cli", "run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for opt in ("--k", "--method", "--iters", "--step", "--seeds", "--set", "--out", "--resume", "--quiet"):
        assert opt in out.stdout
    assert "(default: 1000)" in out.stdout and "(default: 0.05)" in out.stdout  # TrainOptions: one set of defaults


def test_console_script_and_demo(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, "-m", "marl_kstep.cli", "demo", "--out", str(tmp_path / "demo")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [ln.split() for ln in out.stdout.splitlines() if ln.startswith(("two_state", "number_matching"))]
    finals = {(r[0], int(r[1]), r[2]): float(r[4]) for r in lines}  # columns: scenario k method estimator J
    assert finals[("two_state", 1, "pgd")] == pytest.approx(5.0)
    assert finals[("two_state", 3, "pgd")] == pytest.approx(9.0)
    assert finals[("number_matching", 1, "pgd")] == pytest.approx(0.0, abs=1e-6)
    assert finals[("number_matching", 2, "mirror")] == pytest.approx(6.477, abs=1e-6)
    assert (tmp_path / "demo" / "figures" / "number_matching" / "learning_curves.png").exists()
    assert Path(tmp_path / "demo" / "two_state" / "results.json").exists()


@pytest.mark.parametrize("scenario", sorted(cli.SCENARIOS))
def test_figures_for_every_scenario(scenario, tmp_path):
    assert cli.main(["run", scenario, "--k", "1", "2", "--method", "pgd", "--iters", "20", "--out", str(tmp_path),
                     "--quiet"]) == 0
    assert cli.main(["plot", str(tmp_path), "--no-gif"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    figs = tmp_path / "figures"
    curves = Image.open(figs / "learning_curves.png")
    assert curves.format == "PNG" and curves.size == (1100, 420)  # 11 x 4.2 inches at 100 dpi
    if res["J_star"] is not None:
        assert Image.open(figs / "gap_vs_k.png").size == (1000, 400)
    for r in res["rows"]:
        assert Image.open(figs / f"policy_k{r['k']}_pgd.png").format == "PNG"


def test_plotting_leaves_the_users_backend_alone(tmp_path):
    """Importing marl_kstep and drawing keeps the backend the user chose (no matplotlib.use at import)."""
    code = ("import matplotlib; matplotlib.use('svg'); import marl_kstep, marl_kstep.plotting as p; "
            "from marl_kstep.envs import two_state; "
            "rows = [dict(k=1, method='pgd', history_J=[1.0, 2.0], final_J=2.0, J_star=3.0)]; "
            f"p.learning_curves(rows, r'{tmp_path / 'lc.png'}'); print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"
    assert (tmp_path / "lc.png").read_bytes()[:4] == b"\x89PNG"


USER_ENV_MODULE = '''
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class Coin(ParallelEnv):
    """Two agents see a coin (Discrete(2)); reward 1 when both name it, for 10 steps."""
    metadata = {"name": "coin_v0"}

    def __init__(self):
        self.possible_agents = ["a", "b"]
        self.max_cycles = 10

    def observation_space(self, agent):
        return spaces.Discrete(2)

    def action_space(self, agent):
        return spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        self.rng = np.random.default_rng(seed)
        self.agents, self.t = list(self.possible_agents), 0
        self.coin = int(self.rng.integers(2))
        return {a: self.coin for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        r = float(actions["a"] == self.coin and actions["b"] == self.coin)
        self.t += 1
        self.coin = int(self.rng.integers(2))
        done = self.t >= self.max_cycles
        agents = list(self.agents)
        if done:
            self.agents = []
        return ({a: self.coin for a in agents}, {a: r for a in agents}, {a: False for a in agents},
                {a: done for a in agents}, {a: {} for a in agents})


def make():
    return Coin()
'''


def test_run_trains_a_users_env_with_the_sampled_estimator(tmp_path, monkeypatch):
    (tmp_path / "user_coin_env.py").write_text(USER_ENV_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    assert cli.main(["run", "--env", "user_coin_env:make", "--estimator", "sampled", "--gamma", "0.9", "--k", "1",
                     "2", "--method", "mirror", "--iters", "40", "--step", "0.5", "--episodes", "100",
                     "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["scenario"] == "user_coin_env:make" and res["gamma"] == 0.9 and res["J_star"] is None
    for row in res["rows"]:
        assert row["estimator"] == "sampled" and row["episodes"] == 100 and len(row["history_J_k_se"]) == 41
        # naming the coin is learnt: J_k goes from 1/4 of the best (sum 0.9^t, t < 10) to most of it
        best = sum(0.9 ** t for t in range(10))
        assert row["history_J_k"][0] < 0.4 * best < 0.8 * best < row["final_J_k"]


def test_run_with_sampled_estimator_on_a_scenario_records_exact_values(tmp_path):
    out = tmp_path / "nm"
    assert cli.main(["run", "two_state", "--estimator", "sampled", "--k", "2", "--method", "pgd", "--iters", "30",
                     "--episodes", "300", "--out", str(out), "--quiet"]) == 0
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert row["estimator"] == "sampled"
    assert len(row["history_J_k_exact"]) == len(row["history_J_k"]) == row["iterations"] + 1
    assert abs(row["history_J_k"][0] - row["history_J_k_exact"][0]) < 4.5 * row["history_J_k_se"][0]


@pytest.mark.parametrize("argv,msg", [
    (["run", "--env", "nomodule_xyz:make", "--estimator", "sampled", "--gamma", "0.9"], "cannot import"),
    (["run", "--env", "os:getcwd", "--estimator", "sampled"], "--gamma"),
    (["run", "--env", "os:getcwd", "--gamma", "0.9"], "--estimator sampled"),
    (["run", "--env", "json", "--estimator", "sampled", "--gamma", "0.9"], "MODULE:FACTORY"),
    (["run", "two_state", "--gamma", "0.9"], "--set gamma"),
    (["run"], "SCENARIO"),
])
def test_env_option_errors_are_one_line(argv, msg, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(error_lines(err)) == 1
