"""The Dec-POMDP benchmark table: every ``.dpomdp`` problem against every method.

For each problem (at gamma = 0.9, or the file's discount when it is below 1) the table
reports the augmented reachable states, observations and actions per agent, the number
of deterministic memoryless joint policies, J* by exhaustive search (when that count is
at most ``max_policies``), the uniform policy's value, alternating best response from the
uniform policy, and for k = 1..4 the final ordinary J of projected and mirror ascent from
the uniform policy and from seeded random starts (min / median / max), with wall time.
Runs whose k-step enumeration is over the path budget are marked as such.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from ..estimators import estimate_path_steps, value
from ..model import dpomdp_names, dpomdp_path, load_dpomdp, parse_dpomdp
from ..policy import Policy
from ..search import alternating_best_response, best_deterministic, count_deterministic, mdp_optimum
from .io import versions, write_json_atomic, write_text_atomic
from .runner import RunSpec, RunStore, commit, run_one, run_specs

__all__ = ["DEFAULT_DATA_DIR", "problem_facts", "problem_rows", "run_table", "table_specs", "markdown", "findings",
           "commit_id"]

def _find_data_dir() -> Path:
    """``$MARL_KSTEP_DPOMDP_DIR``, else the problems shipped in the package (``marl_kstep/data/dpomdp``)."""
    if os.environ.get("MARL_KSTEP_DPOMDP_DIR"):
        return Path(os.environ["MARL_KSTEP_DPOMDP_DIR"])
    return Path(__file__).resolve().parents[1] / "data" / "dpomdp"


#: Where the Dec-POMDP problems are read from (the shipped copies unless the environment says otherwise).
DEFAULT_DATA_DIR = _find_data_dir()


def _gamma_for(path: Path) -> float:
    import gzip

    raw = path.read_bytes()
    text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()
    d = parse_dpomdp(text, path.name).discount
    return d if 0 <= d < 1 else 0.9


def problem_facts(path: Path, *, ks=(1, 2, 3, 4), max_path_steps: int = 3_000_000,
                  max_policies: int = 10**6) -> dict:
    """The numbers of one problem that do not depend on a training run: sizes, J* (exhaustive, when the
    count of deterministic policies is at most ``max_policies``), the uniform policy's value, alternating
    best response, the fully observable MDP optimum (an upper bound on every decentralized value), and
    the path steps of every k (over the budget: no runs)."""
    gamma = _gamma_for(path)
    mdp = load_dpomdp(path, gamma=gamma)
    count = count_deterministic(mdp)
    row = dict(problem=path.name, path=str(path), gamma=gamma, states=mdp.n_states, obs=list(mdp.n_obs),
               actions=list(mdp.n_actions), policies=count)
    t0 = time.perf_counter()
    row["J_star"] = best_deterministic(mdp, max_policies)[0] if count <= max_policies else None
    row["J_star_seconds"] = time.perf_counter() - t0
    uniform = Policy.uniform(mdp)
    row["uniform"] = value(mdp, uniform)
    t0 = time.perf_counter()
    try:
        row["abr"], _, row["abr_rounds"] = alternating_best_response(mdp, uniform, rounds=20,
                                                                     max_policies=max_policies)
    except ValueError:
        row["abr"], row["abr_rounds"] = None, None
    row["abr_seconds"] = time.perf_counter() - t0
    row["mdp_optimum"] = mdp_optimum(mdp)
    row["steps"] = {str(k): estimate_path_steps(mdp, k, max_path_steps=max_path_steps) for k in ks}
    return row


def spec_target(path, gamma: float) -> dict:
    """The run target of one problem: a shipped problem by its name (``{"dpomdp": "dectiger"}``), so
    that the run records, whose hashes cover the target, are found again from any checkout (the spec
    also carries the file's SHA-256); any other file by its path."""
    file = Path(path).resolve()
    name = next((n for n in dpomdp_names() if dpomdp_path(n).resolve() == file), None)
    return {"dpomdp": name if name is not None else str(path), "gamma": gamma}


def table_specs(facts: dict, *, ks=(1, 2, 3, 4), methods=("pgd", "mirror"), seeds=(0, 1, 2, 3, 4),
                step: float = 0.05, iters: int = 1000, max_path_steps: int = 3_000_000) -> list[RunSpec]:
    """The run specs of one problem's cells: every (method, k) within the budget, from the uniform
    policy and from each seeded Dirichlet(1) start (tol 1e-8)."""
    target = spec_target(facts["path"], facts["gamma"])
    specs = []
    for method in methods:
        for k in ks:
            if facts["steps"][str(k)] > max_path_steps:
                continue
            opts = dict(method=method, step=step, iters=iters, tol=1e-8)
            specs.append(RunSpec(target, k, start="uniform", **opts))
            specs += [RunSpec(target, k, seed=s, start="random", **opts) for s in seeds]
    return specs


def problem_rows_from(facts: dict, records: dict, *, ks=(1, 2, 3, 4), methods=("pgd", "mirror"),
                      seeds=(0, 1, 2, 3, 4), step: float = 0.05, iters: int = 1000,
                      max_path_steps: int = 3_000_000) -> dict:
    """One row of the table from the problem's facts and the run records (by spec hash)."""
    row = {k: v for k, v in facts.items() if k != "steps"}
    cells = {}
    target = spec_target(facts["path"], facts["gamma"])
    for method in methods:
        for k in ks:
            key = f"{method}_k{k}"
            steps = facts["steps"][str(k)]
            if steps > max_path_steps:
                cells[key] = dict(over_budget=True, steps=steps)
                continue
            opts = dict(method=method, step=step, iters=iters, tol=1e-8)
            u = records.get(RunSpec(target, k, start="uniform", **opts).hash)
            rs = [records.get(RunSpec(target, k, seed=s, start="random", **opts).hash) for s in seeds]
            if u is None or any(r is None for r in rs):
                continue  # not run yet (an interrupted or partial table)
            finals = [r["result"]["final_J"] for r in rs]
            cells[key] = dict(over_budget=False, steps=steps, uniform=u["result"]["final_J"],
                              uniform_iterations=u["result"]["iterations"], uniform_capped=u["result"]["capped"],
                              random=finals, random_capped=sum(r["result"]["capped"] for r in rs),
                              min=float(np.min(finals)), median=float(np.median(finals)), max=float(np.max(finals)),
                              seconds=u["result"]["seconds"] + sum(r["result"]["seconds"] for r in rs),
                              spec_hashes=[u["spec_hash"], *(r["spec_hash"] for r in rs)])
    row["cells"] = cells
    return row


def problem_rows(path: Path, *, ks=(1, 2, 3, 4), methods=("pgd", "mirror"), seeds=(0, 1, 2, 3, 4),
                 step: float = 0.05, iters: int = 1000, max_path_steps: int = 3_000_000,
                 max_policies: int = 10**6, progress=None) -> dict:
    """All numbers of one problem, its runs made in this process (see :func:`run_table` for folders)."""
    facts = problem_facts(path, ks=ks, max_path_steps=max_path_steps, max_policies=max_policies)
    specs = table_specs(facts, ks=ks, methods=methods, seeds=seeds, step=step, iters=iters,
                        max_path_steps=max_path_steps)
    records = {}
    for spec in specs:
        rec = run_one(spec)
        records[rec["spec_hash"]] = rec
    row = problem_rows_from(facts, records, ks=ks, methods=methods, seeds=seeds, step=step, iters=iters,
                            max_path_steps=max_path_steps)
    if progress is not None:
        for key, cell in row["cells"].items():
            if not cell["over_budget"]:
                progress(path.name, key, cell)
    return row


def run_table(data_dir=DEFAULT_DATA_DIR, *, files=None, progress=None, folder=None, resume: bool = False,
              executor: str = "serial", workers: int | None = None, ks=(1, 2, 3, 4), methods=("pgd", "mirror"),
              seeds=(0, 1, 2, 3, 4), step: float = 0.05, iters: int = 1000, max_path_steps: int = 3_000_000,
              max_policies: int = 10**6) -> list[dict]:
    """Every ``.dpomdp`` file of ``data_dir`` (the syntax example ``example.dpomdp`` is skipped).

    With ``folder``, the runs go through :func:`~marl_kstep.experiments.runner.run_specs`: one record per
    run in ``folder/runs.jsonl`` (``resume`` continues an interrupted table), on any executor; the
    problems' facts are cached in ``folder/problems.json``. ``progress(done, total, eta_seconds, record)``.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"benchmark folder {data_dir} does not exist")
    paths = sorted(p for p in data_dir.glob("*.dpomdp*") if not p.name.startswith("example"))
    if files:
        paths = [p for p in paths if p.name in set(files)]
    kw = dict(ks=ks, methods=methods, seeds=seeds, step=step, iters=iters, max_path_steps=max_path_steps)
    if folder is None:
        return [problem_rows(p, progress=progress, max_policies=max_policies, **kw) for p in paths]
    folder = Path(folder)
    store = RunStore(folder)
    if store.exists() and not resume:
        raise ValueError(f"{store.path} already holds runs; resume to continue them, or choose another folder")
    cache_path = folder / "problems.json"
    cache = json.loads(cache_path.read_text()) if resume and cache_path.exists() else {}
    facts = []
    for p in paths:
        key = f"{p.name}:{max_path_steps}:{max_policies}:{list(ks)}"
        if key not in cache:
            cache[key] = problem_facts(p, ks=ks, max_path_steps=max_path_steps, max_policies=max_policies)
            write_json_atomic(cache_path, cache)
        facts.append(cache[key])
    specs = [s for f in facts for s in table_specs(f, **kw)]

    def tick(rec, done, total, eta):
        if progress is not None:
            progress(done, total, eta, rec)

    run_specs(specs, folder, resume=True, executor=executor, workers=workers, progress=tick)
    records = {r["spec_hash"]: r for r in store.records()}
    return [problem_rows_from(f, records, **kw) for f in facts]


def _fmt(x, digits=3):
    return "—" if x is None else f"{x:.{digits}f}"


def commit_id(repo: Path | None = None) -> str:
    """Short commit of ``repo`` (default: the package's checkout, as in the run records), or "unknown"."""
    if repo is None:
        full = commit()
        return full[:7] if full else "unknown"
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=repo, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown(rows: list[dict], *, ks=(1, 2, 3, 4), methods=("pgd", "mirror"), settings: dict | None = None) -> str:
    """The tables as Markdown: one summary table, then one table per method."""
    out = ["| problem | gamma | states | obs / agent | actions / agent | det. policies | J* | uniform J | ABR J | "
           "MDP optimum |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['problem']} | {r['gamma']:g} | {r['states']} | {r['obs']} | {r['actions']} | "
                   f"{r['policies']:.3g} | {_fmt(r['J_star'])} | {_fmt(r['uniform'])} | {_fmt(r['abr'])} | "
                   f"{_fmt(r.get('mdp_optimum'))} |")
    for method in methods:
        out += ["", f"**{method}** — final J from the uniform policy (its iterations; `*`: stopped by the "
                f"iteration cap, not converged); below it min / median / max over the random starts (and how "
                f"many of them the cap stopped); wall time for all starts", "",
                "| problem | " + " | ".join(f"k = {k}" for k in ks) + " |",
                "|---|" + "---|" * len(ks)]
        for r in rows:
            cells = []
            for k in ks:
                c = r["cells"].get(f"{method}_k{k}")
                if c is None:
                    cells.append("not run")
                elif c["over_budget"]:
                    cells.append(f"over budget (> {c['steps']:.2g} path steps/pass)")
                else:
                    it = c.get("uniform_iterations")
                    its = "" if it is None else f" ({it}{'*' if c.get('uniform_capped') else ''} it.)"
                    capped = c.get("random_capped", 0)
                    note = f" ({capped} capped)" if capped else ""
                    cells.append(f"{c['uniform']:.3f}{its}<br>{c['min']:.3f} / {c['median']:.3f} / {c['max']:.3f}"
                                 f"{note}<br>{c['seconds']:.1f} s")
            out.append(f"| {r['problem']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def findings(rows: list[dict], *, ks=(1, 2, 3, 4), methods=("pgd", "mirror"), tol: float = 1e-2) -> str:
    """A paragraph of facts read off the table: where larger k helps, where every method
    stops short of J*, and where stochastic policies beat J*."""
    helps, short, above = [], [], []
    for r in rows:
        for method in methods:
            meds = [(k, r["cells"][f"{method}_k{k}"]["median"]) for k in ks
                    if not r["cells"].get(f"{method}_k{k}", {"over_budget": True})["over_budget"]]
            if len(meds) >= 2 and max(m for _, m in meds[1:]) > meds[0][1] + tol:
                best_k, best = max(meds[1:], key=lambda x: x[1])
                helps.append(f"{r['problem']} ({method}: median {meds[0][1]:.3f} at k = 1, {best:.3f} at k = {best_k})")
        if r["J_star"] is not None:
            finals = [c[x] for c in r["cells"].values() if not c["over_budget"] for x in ("uniform", "max")]
            if finals and max(finals) < r["J_star"] - tol:
                short.append(f"{r['problem']} (best {max(finals):.3f} vs J* {r['J_star']:.3f})")
            if finals and max(finals) > r["J_star"] + tol:
                above.append(f"{r['problem']} ({max(finals):.3f} > J* {r['J_star']:.3f})")
    def listing(items):
        return "; ".join(items) if items else "no problem"

    parts = [f"Larger k raises the median final J over k = 1 (by more than {tol:g}) on: {listing(helps)}.",
             f"Every method and start stops short of J* (by more than {tol:g}) on: {listing(short)}."]
    parts.append("A stochastic memoryless policy beats the best deterministic one (J* is not an upper bound, "
                 "SPEC §5) on: " + listing(above) + ".")
    return " ".join(parts)


#: The closing pointer of docs/benchmarks.md to the controller table (kept when the table is regenerated).
MEMORY_SECTION = """
## Agents with memory

The same problems with finite-state controllers (`mk.with_memory`, 1 to 4 nodes per agent), beside the
published controllers (Dibangoye, Buffet & Charpillet 2014, as reported) and with two upper bounds (the
fully observable MDP optimum and the fast informed bound): [docs/memory-table.md](memory-table.md),
produced by `marl-kstep benchmarks --memory 1 2 3 4` (command and settings in that file).
"""


def write_report(data_dir=DEFAULT_DATA_DIR, out="results/benchmarks/benchmarks.md", *,
                 json_path="results/benchmarks/dpomdp_table.json", iters: int = 1000, step: float = 0.05,
                 budget: int = 3_000_000, seeds: int = 5, files=None, repo: Path | None = None, progress=None,
                 folder=None, resume: bool = False, executor: str = "serial", workers: int | None = None) -> Path:
    """Run the whole table (through run records in ``folder``, when given) and write the Markdown report
    (and the raw numbers as JSON)."""
    t0 = time.perf_counter()
    commit = commit_id(repo)  # the code the table is produced from
    rows = run_table(data_dir, files=files, progress=progress, iters=iters, step=step, max_path_steps=budget,
                     seeds=tuple(range(seeds)), folder=folder, resume=resume, executor=executor, workers=workers)
    settings = dict(iters=iters, step=step, max_path_steps=budget, seeds=list(range(seeds)),
                    folder=None if folder is None else str(folder))
    if json_path is not None:
        write_json_atomic(json_path, dict(rows=rows, settings=settings, commit=commit, versions=versions()))
    text = f"""# Dec-POMDP benchmarks

Produced by `python benchmarks/dpomdp_table.py` (or `marl-kstep benchmarks`) at commit `{commit}` in
{time.perf_counter() - t0:.0f} s ({versions()}). Memoryless decentralized policies on the observation-augmented
joint MDP (SPEC §6), gamma 0.9 or the file's discount when it is below 1. Projected (pgd) and mirror ascent with
step {step}, at most {iters} iterations (stop when no entry moves by 1e-8), from the uniform policy and from
{seeds} Dirichlet(1) random starts (seeds 0..{seeds - 1}); J is the ordinary value of the final policy. J* is
the best deterministic policy by exhaustive search (— when there are more than 10^6); ABR is alternating best
response from the uniform policy; the MDP optimum is the value of the fully observable joint MDP (a centralised
controller that sees the state: an upper bound on every value here). Every run is a record in `runs.jsonl` beside
the raw numbers (its full spec and hash), so each cell can be rerun on its own. A k whose path enumeration needs
more than {budget:,} steps per pass is marked "over budget".

## What it shows

{findings(rows)}

## Table

{markdown(rows)}
{MEMORY_SECTION}"""
    return write_text_atomic(out, text)
