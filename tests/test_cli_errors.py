"""The command line's errors while runs execute (issue 22, cause 8): one line, exit 2, never a traceback;
options that do not apply are refused, not ignored."""

from __future__ import annotations

import json

import pytest

from marl_kstep import cli


@pytest.mark.parametrize("argv, msg", [
    (["run", "two_state", "--k", str(10**18), "--iters", "2"], "beyond exact enumeration"),
    (["run", "two_state", "--step", "1e308", "--k", "1", "--iters", "3", "--method", "pgd"], "is not finite"),
    (["run", "number_matching", "--estimator", "sampled", "--horizon", "99999999999999999999", "--k", "1"],
     "horizon"),
    (["run", "two_state", "--set", "gamma=b'x'"], "must be JSON data"),
    (["run", "two_state", "--set", "gamma=0.5", "gamma=0.6"], "--set gamma is given twice"),
    (["run", "two_state", "--k", "1", "--executor", "dask", "--scheduler", "garbage"], "Dask scheduler 'garbage'"),
    (["run", "two_state", "--workers", "2"], "--workers applies to --executor process or dask"),
    (["run", "two_state", "--episodes", "5"], "--episodes and --horizon apply to --estimator sampled"),
    (["run", "two_state", "--escape-order", "3"], "--escape-order applies with --escape"),
    (["run", "two_state", "--env-arg", "a=1"], "--env-arg is for --env"),
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
    assert len(err.strip().splitlines()) == 1, err


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
