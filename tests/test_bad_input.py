"""Bad input gets a ValueError naming the culprit, checked before any large allocation or
enumeration: regression tests for the defects of the fuzz campaign (issue 11), by number."""

import time

import numpy as np
import pytest
from helpers import error_lines

import marl_kstep as mk
from marl_kstep.envs import grid_coordination, two_state


def test_1_from_dense_checks_R_against_P():
    P = np.full((2, 2, 2), 0.5)
    with pytest.raises(ValueError, match=r"R must have shape \(N, J\) = \(2, 2\) to match P of shape \(2, 2, 2\); "
                                         r"got shape \(4, 1\)"):
        mk.JointMDP.from_dense(P, np.zeros((4, 1)), [np.zeros(2, int)], [2], [1, 0], 0.9)


def test_2_joint_action_count_never_overflows():
    with pytest.raises(ValueError, match=r"R has 4 joint actions per state but n_actions=.* "
                                         r"gives 18446744073709551616"):
        mk.JointMDP.from_dense(np.full((2, 4, 2), 0.5), np.zeros((2, 4)), [np.zeros(2, int)] * 64, [2] * 64,
                               [1, 0], 0.9)


def test_3_the_budget_cannot_be_bypassed_through_a_cache():
    mdp = grid_coordination.build_mdp(slip=0.1, observation="position")
    pol = mk.Policy.uniform(mdp)
    for budget in (1000, 2000, 1000):
        with pytest.raises(ValueError, match=f"over the budget max_path_steps={budget:,}"):
            mk.value(mdp, pol, 4, max_path_steps=budget)


def test_4_huge_windows_are_bounded_or_refused_at_once():
    mdp = two_state.build_mdp()
    pol = mk.Policy.from_arrays(mdp, [np.array([[0.5, 0.5]])])
    # a window longer than any visit pattern: one draw for ever, J_k = (5 + 9) / 2
    assert mk.value(mdp, pol, 10**5) == pytest.approx(7.0, abs=1e-9)
    for k in (10**9, 10**12):
        t = time.perf_counter()
        with pytest.raises(ValueError, match=f"k={k} needs a .* MiB walk stack"):
            mk.value(mdp, pol, k)
        assert time.perf_counter() - t < 5  # refused from sizes alone (measured: under a millisecond)
    with pytest.raises(ValueError, match=r"needs more than 100 path steps per pass"):
        mk.value(mdp, pol, 10**4, max_path_steps=100)  # N k > budget: refused before walking


def test_6_simplex_projection_of_huge_entries():
    np.testing.assert_array_equal(mk.project_simplex([1e308, 1e308]), [0.5, 0.5])
    np.testing.assert_array_equal(mk.project_simplex([[1e16, 1e16 + 2], [3.0, -1e308], [-1e308, -1e308]]),
                                  [[0, 1], [1, 0], [0.5, 0.5]])
    rng = np.random.default_rng(0)
    v = rng.normal(size=(200, 5)) * 10.0 ** rng.integers(-3, 17, size=(200, 1))
    x = mk.project_simplex(v)
    assert np.all(x >= 0) and np.allclose(x.sum(axis=1), 1, atol=1e-12)
    # optimality (KKT): x = max(v - tau, 0) with one tau per row, up to the rounding of v
    for row, xr in zip(v, x, strict=True):
        on = xr > 0
        tau = row[on] - xr[on]
        assert np.ptp(tau) <= 1e-12 * max(1.0, np.abs(row).max())
        assert np.all(row[~on] <= tau.mean() + 1e-12 * max(1.0, np.abs(row).max()))
    with pytest.raises(ValueError, match=r"v\[1\] = inf is not finite"):
        mk.project_simplex([0.0, np.inf])


def test_9_silent_acceptances_are_refused():
    from marl_kstep.envs import number_matching

    with pytest.raises(ValueError, match=r"n_actions\[0\] must be an integer >= 1; got 2.5"):
        mk.JointMDP.from_dense(np.full((2, 2, 2), 0.5), np.zeros((2, 2)), [np.zeros(2, int)], [2.5], [1, 0], 0.9)
    with pytest.raises(ValueError, match=r"goal must be a \(row, col\) pair of integers; got \(1.5, 2\)"):
        grid_coordination.parallel_env(goal=(1.5, 2))
    with pytest.raises(ValueError, match="P must hold real numbers; got an array of dtype complex128"):
        mk.JointMDP.from_dense(np.full((2, 2, 2), 0.5 + 0j), np.zeros((2, 2)), [np.zeros(2, int)], [2], [1, 0], 0.9)
    with pytest.raises(ValueError, match="R must hold real numbers"):
        mk.JointMDP.from_dense(np.full((2, 2, 2), 0.5), np.zeros((2, 2)) + 1j, [np.zeros(2, int)], [2], [1, 0], 0.9)
    env = two_state.parallel_env()
    for theta, msg in (([[2.0, -1.0]], r"theta\[0\]\[0, 1\] = -1.0 is negative"),
                       ([[np.nan, 1.0]], r"theta\[0\]\[0, 0\] = nan is not finite")):
        with pytest.raises(ValueError, match=msg):
            mk.rollout(env, mk.Policy([np.array(theta)]), 1, episodes=2)
    with pytest.raises(ValueError, match="policy must be a marl_kstep.Policy"):
        mk.rollout(env, [np.array([[0.5, 0.5]])], 1, episodes=2)
    mdp = number_matching.build_mdp()
    with pytest.raises(ValueError, match="rounds must be an integer >= 1; got rounds=0"):
        mk.alternating_best_response(mdp, rounds=0)
    penv = number_matching.parallel_env()
    penv.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions names unknown agent\(s\) \['agent_7'\]"):
        penv.step({"agent_0": 0, "agent_1": 0, "agent_7": 1})


def test_5_scenario_environments_do_not_enumerate_start_states():
    from scipy import stats

    from marl_kstep.envs import number_matching

    t = time.perf_counter()
    env = number_matching.parallel_env(n_agents=12)  # 6**12 = 2.2e9 joint start states
    obs, _ = env.reset(seed=0)
    assert len(obs) == 12 and time.perf_counter() - t < 5
    with pytest.raises(ValueError, match=r"compiling this scenario \(2,176,782,336 joint states, 4,096 joint actions\) "
                                         r"would take about [\d,.]+ GiB, more than the limit"):
        mk.compile_env(env)
    # the direct samplers draw from the compiled initial distribution
    rng = np.random.default_rng(1)
    for model, n in ((number_matching.NumberMatchingModel(2, 3, start="uniform"), 9000),
                     (number_matching.NumberMatchingModel(3, 4, start="far"), 4000),
                     (grid_coordination.GridCoordinationModel("#####\n#...#\n#..G#\n#####", collisions="blocked"),
                      20000)):
        support = dict(model.initial_distribution())
        assert len(support) > 1
        draws = [model.sample_initial(rng) for _ in range(n)]
        assert set(draws) <= set(support)
        index = {s: i for i, s in enumerate(support)}
        counts = np.bincount([index[d] for d in draws], minlength=len(support))
        expected = n * np.array(list(support.values()))
        assert stats.chisquare(counts, expected).pvalue > 1e-4


def test_7_dpomdp_loader_names_file_and_line_before_building_anything(tmp_path):
    import gzip

    from test_dpomdp import TINY

    from marl_kstep.model import load_dpomdp, parse_dpomdp

    good = gzip.compress(TINY.encode())
    broken = tmp_path / "broken.dpomdp.gz"
    broken.write_bytes(good[:20] + bytes(b ^ 0x5A for b in good[20:40]) + good[40:])
    with pytest.raises(ValueError, match=r"broken.dpomdp.gz: cannot read the file"):
        load_dpomdp(broken)
    # rows given to 7 digits (within 1e-6 of 1) load, and are rescaled to sum to exactly 1
    text = TINY.replace("T: go * : left :\n0.25 0.75", "T: go * : left :\n0.3333333 0.6666666")
    mdp = load_dpomdp(_write(tmp_path, "digits.dpomdp", text), gamma=0.5)
    sums = np.bincount(np.repeat(np.arange(mdp.indptr.size - 1), np.diff(mdp.indptr)), weights=mdp.probs)
    np.testing.assert_allclose(sums, 1.0, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match=r"tiny:15: T row for joint action 2, start state .left. sums to 0.99999"):
        parse_dpomdp(TINY.replace("T: go * : left :\n0.25 0.75", "T: go * : left :\n0.25 0.74999"), "tiny")
    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"tiny:5: 100,000,000 states are more than this loader handles"):
        parse_dpomdp(TINY.replace("states: left right", "states: 100000000"), "tiny")
    with pytest.raises(ValueError, match=r"tiny:2: 64 agents are more than this loader handles \(32;"):
        parse_dpomdp(TINY.replace("agents: alice bob", "agents: 64"), "tiny")
    assert time.perf_counter() - t < 5


def _write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("argv,msg", [
    (["run", "two_state", "--k", "0"], "argument --k: expected an integer > 0, got '0'"),
    (["run", "two_state", "--step", "0"], "argument --step: expected a finite number > 0.0, got '0'"),
    (["run", "two_state", "--step", "nan"], "argument --step: expected a finite number > 0.0, got 'nan'"),
    (["run", "two_state", "--tol", "-1"], "argument --tol: expected a finite number >= 0.0, got '-1'"),
    (["run", "two_state", "--iters", "-1"], "argument --iters: expected an integer >= 0, got '-1'"),
    (["run", "two_state", "--seeds", "-1"], "argument --seeds: expected an integer >= 0, got '-1'"),
    (["run", "two_state", "--k", "x"], "argument --k: expected an integer, got 'x'"),
    (["benchmarks", "--files", "nope.dpomdp"], "--files: no such file(s) in"),
])
def test_8_cli_arguments_are_refused_in_one_line(argv, msg, capsys):
    from marl_kstep import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(error_lines(err)) == 1


def test_8_cli_unwritable_out_and_damaged_results(tmp_path, capsys):
    import json

    from marl_kstep import cli

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit):
        cli.main(["run", "two_state", "--k", "1", "--iters", "1", "--out", str(blocker / "out")])
    assert "cannot write into --out" in capsys.readouterr().err
    out = tmp_path / "res"
    assert cli.main(["run", "two_state", "--k", "1", "--method", "pgd", "--iters", "2", "--out", str(out),
                     "--quiet"]) == 0
    # plot reads runs.jsonl (results.json is only a view): a damaged view does not matter...
    (out / "results.json").write_text("\x00\x01")
    assert cli.main(["plot", str(out), "--no-gif"]) == 0
    # ...and a damaged record is named by file and line, in one line
    good = (out / "runs.jsonl").read_text().splitlines()[0]
    rec = json.loads(good)
    for bad in ([1, 2], dict(rec, schema=1), dict(rec, spec_hash="0" * 16), dict(rec, spec=dict(rec["spec"], k=9)),
                {"spec": {}, "result": {}}):
        (out / "runs.jsonl").write_text(good + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(SystemExit) as exc:
            cli.main(["plot", str(out)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "runs.jsonl:2" in err and "Traceback" not in err, (bad, err)
        assert len(error_lines(err)) == 1, err
    (out / "runs.jsonl").write_text(good + "\n")
    # results.json is a view: run --resume rebuilds it from runs.jsonl, whose torn or foreign lines are skipped
    with open(out / "runs.jsonl", "a") as fh:
        fh.write('\x00\x01{"spec": [1, 2')
    assert cli.main(["run", "two_state", "--k", "1", "2", "--method", "pgd", "--iters", "2", "--out", str(out),
                     "--resume", "--quiet"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["k"] for r in rows] == [1, 2]


@pytest.mark.parametrize("delay", [2.5, 4.0, 6.0])
def test_11_ctrl_c_stops_cleanly_and_keeps_finished_runs(tmp_path, delay):
    """SIGINT at an arbitrary moment of a long run (import, planning, compiled passes, saving):
    exit 130, one line on stderr, no traceback (no CPUDispatcher SystemError), finished runs kept."""
    import json
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    base = [sys.executable, "-m", "marl_kstep.cli", "run", "two_state", "--method", "pgd", "--out", str(out),
            "--quiet"]
    subprocess.run(base + ["--k", "1", "--iters", "5"], check=True, capture_output=True)
    proc = subprocess.Popen(base + ["--k", "1", "2", "--iters", "10000000", "--tol", "0", "--resume"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()  # never leave a 10^7-iteration run behind (a suite started with SIGINT ignored)
    assert proc.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr and "SystemError" not in stderr, stderr
    assert "interrupted" in stderr and len(error_lines(stderr)) == 1, stderr
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["k"], r["iterations"] <= 5) for r in rows] == [(1, True)]  # the quick run, and only it


@pytest.mark.parametrize("call,msg", [
    (lambda: mk.JointMDP.from_dense(None, np.zeros((2, 2)), [np.zeros(2, int)], [2], [1, 0], 0.9),
     "P must hold real numbers"),
    (lambda: mk.JointMDP.from_dense(np.full((2, 2, 2), 0.5), np.zeros((2, 2)), [np.zeros(2, int)], [2], [1, 0],
                                    "abc"), "gamma must be a number in"),
    (lambda: mk.JointMDP.from_dense(np.full((2, 2, 2), 0.5), [["abc", 0], [0, 0]], [np.zeros(2, int)], [2], [1, 0],
                                    0.9), "R must hold real numbers"),
    (lambda: mk.JointMDP.from_dense(np.full((2, 2, 2), 0.5), np.zeros((2, 2)), None, [2], [1, 0], 0.9),
     "obs must be a list"),
    (lambda: mk.value(number_matching_mdp(), None, 1), "policy must be a marl_kstep.Policy"),
    (lambda: mk.value(number_matching_mdp(), mk.Policy.uniform(number_matching_mdp()), float("inf")),
     "k must be an integer"),
    (lambda: mk.train(number_matching_mdp(), k=1, step=float("inf")), "step must be a positive number"),
    (lambda: mk.train(number_matching_mdp(), k=1, iters="10"), "iters must be a non-negative integer"),
    (lambda: mk.Policy.random(number_matching_mdp(), seed="abc"), "seed must be a non-negative integer"),
    (lambda: mk.Policy.uniform(None), "mdp must be a JointMDP or an estimator"),
    (lambda: mk.best_response(number_matching_mdp(), mk.Policy.uniform(number_matching_mdp()), None),
     "agent must be a non-negative integer"),
    (lambda: mk.project_simplex("abc"), "v must hold real numbers"),
    (lambda: mk.pgd_step(np.ones((1, 2)) / 2, np.ones((1, 2)), None), "eta must be a finite number"),
    (lambda: grid_coordination.parallel_env(n_agents=None), "n_agents must be an integer"),
    (lambda: grid_coordination.parallel_env(move_cost=float("inf")), "move_cost must be a finite number"),
    (lambda: two_state.parallel_env(small_reward="abc"), "small_reward must be a finite number"),
    (lambda: two_state.parallel_env(max_cycles=10**30 * 1.0), "max_cycles must be an integer"),
])
def test_10_wrong_types_get_value_errors_naming_the_parameter(call, msg):
    with pytest.raises(ValueError, match=msg) as exc:
        call()
    assert "could not convert" not in str(exc.value)


def number_matching_mdp():
    from marl_kstep.envs import number_matching

    return number_matching.build_mdp()


def test_10_number_matching_move_cost_inf_is_named():
    from marl_kstep.envs import number_matching

    with pytest.raises(ValueError, match=r"move_cost must be a finite number >= 0; got move_cost=inf"):
        number_matching.parallel_env(move_cost=float("inf"))
