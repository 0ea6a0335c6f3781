"""The command line's errors while runs execute (issue 22, cause 8): one line, exit 2, never a traceback;
options that do not apply are refused, not ignored."""

from __future__ import annotations

import json

import pytest
from helpers import error_lines

from marl_kstep import cli


@pytest.mark.parametrize("argv, msg", [
    (["run", "two_state", "--k", str(10**18), "--iters", "2"], "beyond exact enumeration"),
    (["run", "two_state", "--step", "1e308", "--k", "1", "--iters", "3", "--method", "pgd"], "eta=1e+308 is too large"),
    (["run", "number_matching", "--estimator", "sampled", "--horizon", "99999999999999999999", "--k", "1"],
     "horizon"),
    (["run", "two_state", "--set", "gamma=b'x'"], "must be JSON data"),
    (["run", "two_state", "--set", "gamma=0.5", "gamma=0.6"], "--set gamma is given twice"),
    (["run", "two_state", "--k", "1", "--executor", "dask", "--scheduler", "garbage"], "Dask scheduler 'garbage'"),
    (["run", "two_state", "--workers", "2"], "--workers applies to --executor process or dask"),
    (["run", "two_state", "--episodes", "5"], "--episodes and --horizon apply to --estimator sampled"),
    (["run", "two_state", "--escape-order", "3"], "--escape-order applies with --escape"),
    (["run", "two_state", "--env-arg", "a=1"], "--env-arg and --encoder are for --env"),
    (["run", "two_state", "--encoder", "agent_0={}"], "--env-arg and --encoder are for --env"),
    (["run", "--env", "no_such_module_xyz:make", "--estimator", "sampled", "--gamma", "0.9"], "cannot import"),
    (["run", "--env", "marl_kstep.envs.two_state:parallel_env", "--estimator", "sampled", "--gamma", "0.5"],
     "differs from the discount of the env's own model"),
    (["run", "two_state", "--shard", "3/3"], "--shard expects I/N"),
    (["eval", "/no/such/folder"], "does not exist"),
])
def test_run_errors_are_one_line(argv, msg, tmp_path, capsys, monkeypatch):
    if argv[0] == "run" and "--out" not in argv:
        argv = argv + ["--out", str(tmp_path / "out"), "--quiet"]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and msg in err and "Traceback" not in err, err
    assert len(error_lines(err)) == 1, err


def test_a_scenario_env_runs_without_gamma(tmp_path):
    assert cli.main(["run", "--env", "marl_kstep.envs.two_state:parallel_env", "--estimator", "sampled", "--k", "1",
                     "--iters", "3", "--episodes", "50", "--method", "pgd", "--out", str(tmp_path), "--quiet"]) == 0
    (rec,) = [json.loads(ln) for ln in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert rec["spec"]["target"]["gamma"] == 0.9  # the model's own discount


def test_a_damaged_or_foreign_optimum_cache_is_rebuilt(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", "two_state", "--k", "1", "--iters", "2", "--method", "pgd", "--out", str(out),
                     "--quiet"]) == 0
    cache = json.loads((out / "optimum.json").read_text())
    (key,) = cache
    for bad in ("{", json.dumps({key: {"J_star": "nine", "how": "exhaustive"}}),
                json.dumps({key: {"J_star": 1e300, "how": "oracle"}}), "[]"):
        (out / "optimum.json").write_text(bad)
        assert cli.main(["run", "two_state", "--k", "1", "2", "--iters", "2", "--method", "pgd", "--out", str(out),
                         "--quiet", "--resume"]) == 0
        rows = json.loads((out / "results.json").read_text())["rows"]
        assert all(r["J_star"] == pytest.approx(9.0) for r in rows), bad
    capsys.readouterr()


def test_benchmarks_check_the_json_path_before_the_table(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exc:
        cli.main(["benchmarks", "--out", str(tmp_path / "b" / "t.md"), "--json", str(blocker / "t.json"),
                  "--files", "dectiger.dpomdp"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert ("cannot write into --json" in err or "benchmark folder" in err) and "Traceback" not in err


BOX_COIN = '''
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class BoxCoin(ParallelEnv):
    """Two agents see a coin as a Box value (-0.5 or +0.5); reward 1 when both name it, for 10 steps."""
    metadata = {"name": "box_coin_v0"}

    def __init__(self, steps=10):
        self.possible_agents = ["a", "b"]
        self.steps = self.max_cycles = steps
        self._obs = spaces.Box(-1.0, 1.0, (1,), dtype=np.float64)
        self._act = spaces.Discrete(2)

    def observation_space(self, agent):
        return self._obs

    def action_space(self, agent):
        return self._act

    def _see(self):
        return {a: np.array([self.coin - 0.5]) for a in self.agents}

    def reset(self, seed=None, options=None):
        self.rng = np.random.default_rng(seed)
        self.agents, self.t = list(self.possible_agents), 0
        self.coin = int(self.rng.integers(2))
        return self._see(), {a: {} for a in self.agents}

    def step(self, actions):
        r = float(actions["a"] == self.coin and actions["b"] == self.coin)
        self.t += 1
        self.coin = int(self.rng.integers(2))
        done = self.t >= self.steps
        agents = list(self.agents)
        obs = self._see()
        if done:
            self.agents = []
        return obs, {a: r for a in agents}, {a: False for a in agents}, {a: done for a in agents}, \\
            {a: {} for a in agents}


def make(steps=10):
    return BoxCoin(steps)
'''


def test_env_encoders_and_factory_arguments_from_the_command_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "box_coin_env.py").write_text(BOX_COIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    box = json.dumps({"kind": "box", "low": [-1], "high": [1], "bins": [2]})
    out = tmp_path / "out"
    assert cli.main(["run", "--env", "box_coin_env:make", "--env-arg", "steps=8", "--encoder", f"a={box}",
                     f"b={box}", "--estimator", "sampled", "--gamma", "0.9", "--k", "1", "--method", "mirror",
                     "--iters", "30", "--step", "0.5", "--episodes", "100", "--out", str(out), "--quiet"]) == 0
    (rec,) = [json.loads(ln) for ln in (out / "runs.jsonl").read_text().splitlines()]
    target = rec["spec"]["target"]
    assert target["kwargs"] == {"steps": 8} and target["encoders"]["a"]["kind"] == "box"
    # naming the coin is learnt through the Box encoder: two cells, and J_k rises well above 1/4 of the best
    best = sum(0.9 ** t for t in range(8))
    assert rec["result"]["history_J_k"][0] < 0.4 * best < 0.75 * best < rec["result"]["final_J_k"]
    assert [len(t) for t in rec["result"]["policy"]] == [2, 2]
    for bad, msg in ([f"a={box}", f"a={box}"], "given twice"), (["a=[1"], "not JSON"), \
            (['a={"kind": "grid"}'], "'kind' one of"), (['a={"kind": "box", "low": [-1], "high": [1], "bins": 2, '
                                                         '"edges": 3}'], "unknown key 'edges'"), \
            ([f"ghost={box}"], "not an agent"):
        with pytest.raises(SystemExit) as exc:
            cli.main(["run", "--env", "box_coin_env:make", "--encoder", *bad, "--estimator", "sampled", "--gamma",
                      "0.9", "--k", "1", "--iters", "2", "--episodes", "10", "--out", str(tmp_path / "bad"),
                      "--quiet"])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and msg in err and "Traceback" not in err, (bad, err)
