"""Records that say exactly what was run (issue 21): typed specs, resolved problems, verified records,
the writer's lock, shards, figures from records, Settings carried by the spec."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import marl_kstep as mk
from marl_kstep.cli import main
from marl_kstep.experiments import SCENARIOS, RunSpec, RunStore, Target, run_one, run_specs
from marl_kstep.experiments.records import results_from_records
from marl_kstep.experiments.run import build_target
from marl_kstep.experiments.runner import FolderLockedError, execute, shard_of
from marl_kstep.figures import problem_of

NM = {"scenario": "number_matching", "config": {}}
TWO = {"scenario": "two_state"}


# ---------------------------------------------------------------- typed, resolved specs
@pytest.mark.parametrize("kw, key", [
    (dict(estimator={"kind": "sampled", "episdoes": 10}), "episdoes"),
    (dict(estimator={"kind": "sampled", "episodes": "many"}), "episodes"),
    (dict(estimator={"kind": "exact", "episodes": 10}), "episodes"),
    (dict(target={"scenario": "no_such"}), "no_such"),
    (dict(target={"scenario": "number_matching", "config": {"gama": 0.5}}), "gama"),
    (dict(target={"scenario": "number_matching", "gamma": 0.1}), "'gamma' in target"),
    (dict(target={"dpomdp": "/no/such/file.dpomdp"}), "no such file"),
    (dict(target={"env": "m:f"}), "gamma"),
    (dict(options={"itres": 5}), "itres"),
    (dict(itres=5), "itres"),
    (dict(settings={"max_polices": 3}), "max_polices"),
])
def test_misspelt_or_unknown_keys_are_refused_by_name_before_any_run(kw, key):
    base = dict(target=NM, k=1)
    base.update(kw)
    with pytest.raises(ValueError, match=key):
        RunSpec(base.pop("target"), base.pop("k"), **base)


def test_numbers_are_normalised_and_float_fields_hash_alike():
    a = RunSpec(NM, np.int64(2), step=1, seed=np.int64(3), start="random")
    b = RunSpec(NM, 2, step=1.0, seed=3, start="random")
    assert a.to_dict()["k"] == 2 and isinstance(a.to_dict()["k"], int) and a.hash == b.hash
    c = RunSpec({"scenario": "number_matching", "config": {"move_cost": 1}}, 1)
    d = RunSpec({"scenario": "number_matching", "config": {"move_cost": np.float64(1.0)}}, 1)
    assert c.hash == d.hash and c.target["config"]["move_cost"] == 1.0
    assert RunSpec.from_dict(json.loads(json.dumps(a.to_dict()))).hash == a.hash


def test_a_target_holds_every_constructor_argument_after_the_registry_defaults():
    t = Target(NM)
    assert t["config"]["start"] == "far"  # the registry's default, not the constructor's "uniform"
    assert set(t["config"]) == {"n_agents", "n_numbers", "move_cost", "gamma", "observation", "start", "max_cycles"}
    assert Target(t.to_dict()) == t  # resolving a resolved target changes nothing
    mdp = build_target(t)[0]
    assert mk.best_deterministic(mdp)[0] == pytest.approx(6.477, abs=5e-4)  # not 7.152 (start: uniform)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_figures_rebuild_the_trained_problem_for_every_registry_scenario(name):
    rec = run_one(RunSpec({"scenario": name}, 1, iters=2))
    trained = build_target(rec["spec"]["target"])[0]
    (results,) = results_from_records([rec])
    plotted = problem_of(results)[0]
    assert plotted.n_states == trained.n_states
    assert [len(t) for t in results["rows"][0]["policy"]] == list(plotted.n_obs)
    if name == "grid_coordination":
        assert plotted.n_states == 49  # the trained corridor, not the module's default 3x3 room (81)


def test_a_dpomdp_target_is_pinned_by_its_content(tmp_path):
    src = mk.dpomdp_path("dectiger")  # the shipped copy
    path = tmp_path / "tiger.dpomdp"
    path.write_bytes(open(src, "rb").read())
    spec = RunSpec({"dpomdp": str(path), "gamma": 0.9}, 1)
    assert len(spec.target["sha256"]) == 64
    path.write_bytes(open(src, "rb").read().replace(b"discount: 1", b"discount: 0.95"))
    with pytest.raises(ValueError, match="changed since the spec was written"):
        RunSpec.from_dict(spec.to_dict())


# ---------------------------------------------------------------- Settings travel with the spec
def test_a_spec_runs_under_its_settings_on_every_executor():
    with mk.configure(lump=False):
        spec = RunSpec(NM, 2, iters=20)
    assert spec.settings == {"lump": False} and spec.to_dict()["settings"] == {"lump": False}
    serial = run_one(spec)
    (proc,) = list(execute([spec], "process", workers=1))
    for r in (serial, proc):
        r.result.pop("seconds")
    assert serial.result == proc.result and serial.spec == proc.spec
    with mk.configure(max_policies=0):
        strict = RunSpec(NM, 2, iters=20, escape=True)
    for executor in ("serial", "process"):
        with pytest.raises(ValueError, match="max_policies"):
            list(execute([strict], executor, **({} if executor == "serial" else {"workers": 1})))


# ---------------------------------------------------------------- verified records, lock, shards
def test_resume_refuses_an_edited_record_with_its_line_and_reports_duplicates(tmp_path):
    specs = [RunSpec(TWO, k, iters=20) for k in (1, 2)]
    run_specs(specs, tmp_path)
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    # a copied record: reported, never counted twice
    (tmp_path / "runs.jsonl").write_text("\n".join(lines + [lines[0]]) + "\n")
    scan = RunStore(tmp_path).scan()
    assert len(scan.records) == 2 and [n for n, _ in scan.duplicates] == [3]
    assert run_specs(specs, tmp_path, resume=True) == []
    # an edited record: its hash no longer matches its spec
    rec = json.loads(lines[1])
    rec["spec"]["k"] = 5  # claims a run that was never computed
    (tmp_path / "runs.jsonl").write_text("\n".join([lines[0], json.dumps(rec)]) + "\n")
    with pytest.raises(ValueError, match=r"runs.jsonl:2: spec_hash .* does not match"):
        run_specs([RunSpec(TWO, 5, iters=20)], tmp_path, resume=True)


def test_a_second_writer_is_refused_naming_the_folder(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    fd = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, b"4242\n", 0)
        with pytest.raises(FolderLockedError, match=rf"pid 4242.*{tmp_path.name}"):
            run_specs([RunSpec(TWO, 1, iters=5)], tmp_path)
        with pytest.raises(SystemExit) as exc:
            main(["run", "two_state", "--k", "1", "--iters", "5", "--out", str(tmp_path), "--quiet", "--optimum",
                  "none"])
        assert exc.value.code == 2
    finally:
        os.close(fd)
    assert len(run_specs([RunSpec(TWO, 1, iters=5)], tmp_path)) == 1  # free again


def test_shards_are_disjoint_and_cover_the_spec_list(tmp_path):
    specs = [RunSpec(TWO, k, iters=10, seed=s, start="random") for k in (1, 2) for s in range(3)]
    parts = [shard_of(specs, (i, 4)) for i in range(4)]
    assert sorted(s.hash for p in parts for s in p) == sorted(s.hash for s in specs)
    for i in range(4):
        run_specs(specs, tmp_path, resume=True, shard=(i, 4))
    assert {r.spec_hash for r in RunStore(tmp_path).records()} == {s.hash for s in specs}
    with pytest.raises(ValueError, match="shard index"):
        shard_of(specs, (4, 4))


def test_records_and_views_are_readable_by_everyone(tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["run", "two_state", "--k", "1", "--iters", "5", "--method", "pgd", "--out", str(tmp_path),
                     "--quiet", "--optimum", "none"]) == 0
    finally:
        os.umask(old)
    for name in ("runs.jsonl", "results.json", "summary.csv"):  # views go through a temporary file (0600)
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


# ---------------------------------------------------------------- judged values, figures from records
def test_sampled_runs_are_judged_by_their_greedy_policy(tmp_path):
    spec = RunSpec({"scenario": "number_matching"}, 1, iters=40, step=0.2, seed=0, start="near_uniform",
                   estimator={"kind": "sampled", "episodes": 100})
    rec = run_one(spec)
    mdp = build_target(spec.target)[0]
    greedy = mk.Policy.deterministic(mdp, rec.policy().greedy_tables())
    assert rec.result["judged"] == "greedy"
    assert rec.result["J_greedy"] == pytest.approx(mk.value(mdp, greedy), abs=1e-12)
    assert rec.result["J_judged"] == rec.result["J_greedy"] != rec.result["final_J"]  # the floored policy differs
    row = results_from_records([rec], optima={json.dumps(rec["spec"]["target"], sort_keys=True,
                                                         separators=(",", ":")): 6.477})[0]["rows"][0]
    assert row["gap"] == pytest.approx(6.477 - rec.result["J_greedy"])


def test_plot_works_from_a_python_sweep_alone(tmp_path):
    run_specs([RunSpec({"scenario": "grid_coordination"}, k, iters=3, method="pgd") for k in (1, 2)], tmp_path)
    assert not (tmp_path / "results.json").exists()
    assert main(["plot", str(tmp_path), "--no-gif"]) == 0
    assert (tmp_path / "figures" / "learning_curves.png").exists()
    assert (tmp_path / "figures" / "trajectory_k2_pgd.png").exists()


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d))
    return out


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG")
def test_workers_die_with_their_parent_after_sigkill(tmp_path):
    cmd = [sys.executable, "-m", "marl_kstep.cli", "run", "two_state", "--method", "pgd", "--out", str(tmp_path),
           "--quiet", "--optimum", "none", "--k", "1", "2", "--iters", "100000000", "--tol", "0",
           "--executor", "process", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        kids = []
        while time.time() < deadline and len(kids) < 3:  # two workers and the resource tracker
            time.sleep(0.5)
            kids = _children(proc.pid)
        assert len(kids) >= 2, kids
        time.sleep(2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.2)
        assert not [k for k in kids if _alive(k)]
    finally:
        for k in _children(proc.pid):
            os.kill(k, signal.SIGKILL)


def test_the_experiments_doc_sweep_runs_when_pasted_as_a_script(tmp_path):
    """docs/experiments.md's Python block, made small, run as a script: the process executor's workers
    import the script (spawn), so it needs its ``if __name__ == "__main__":`` guard."""
    doc = (os.path.dirname(__file__) + "/../docs/experiments.md")
    text = open(doc).read()
    block = "# sweep.py" + text.split("```python\n# sweep.py", 1)[1].split("```", 1)[0]
    small = (block.replace("for k in (1, 2, 3) for s in range(8)", "for k in (1, 2) for s in range(1)")
             .replace("iters=500", "iters=5").replace('"results/nm3"', repr(str(tmp_path / "nm3"))))
    assert small != block
    script = tmp_path / "sweep.py"
    script.write_text(small)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(doc))})
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(RunStore(tmp_path / "nm3").records()) == 2


def test_every_records_policy_loads_and_eval_rolls_it_out(tmp_path, capsys):
    specs = [RunSpec(NM, k, iters=60, method="pgd") for k in (1, 2)]
    recs = run_specs(specs, tmp_path)
    assert main(["eval", str(tmp_path), "--episodes", "200", "--save-policies"]) == 0
    out = capsys.readouterr().out
    for rec in recs:
        mdp = build_target(rec.spec["target"])[0]
        loaded = mk.Policy.load(tmp_path / "policies" / f"{rec.spec_hash}.json", mdp)
        assert all(np.array_equal(a, b) for a, b in zip(loaded.theta, rec.policy().theta, strict=True))
        line = next(ln for ln in out.splitlines() if ln.startswith(rec.spec_hash))
        J, lo, hi, exact = _eval_numbers(line)
        assert lo <= exact <= hi and exact == pytest.approx(mk.value(mdp, rec.policy()), abs=1e-6)
    # a policy file that names no problem is refused in one line
    mk.Policy.uniform(build_target(NM)[0]).save(tmp_path / "bare.json")
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(tmp_path / "bare.json")])
    assert exc.value.code == 2 and "names no problem" in capsys.readouterr().err


def _eval_numbers(line: str):
    """(J, low, high, exact) of one line of the eval table."""
    parts = line.replace("[", " ").replace("]", " ").replace(",", " ").split()
    return float(parts[4]), float(parts[5]), float(parts[6]), float(parts[8])
