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

import os
import subprocess
import time
from pathlib import Path

import numpy as np

from ..estimators import estimate_path_steps, value
from ..model import load_dpomdp, parse_dpomdp
from ..optim import train
from ..policy import Policy
from ..search import alternating_best_response, best_deterministic, count_deterministic
from .io import versions, write_json_atomic, write_text_atomic

__all__ = ["DEFAULT_DATA_DIR", "problem_rows", "run_table", "markdown", "findings", "commit_id"]

def _find_data_dir() -> Path:
    """``$MARL_KSTEP_DPOMDP_DIR``, else the first ``shared/benchmarks/dpomdp`` found beside the
    repository or beside one of its parent folders (``../shared/benchmarks/dpomdp`` normally)."""
    if os.environ.get("MARL_KSTEP_DPOMDP_DIR"):
        return Path(os.environ["MARL_KSTEP_DPOMDP_DIR"])
    repo = Path(__file__).resolve().parents[2]
    for parent in repo.parents:
        candidate = parent / "shared" / "benchmarks" / "dpomdp"
        if candidate.is_dir():
            return candidate
    return repo.parent / "shared" / "benchmarks" / "dpomdp"


#: Where the Dec-POMDP problems are read from (never copied into the repository).
DEFAULT_DATA_DIR = _find_data_dir()


def _gamma_for(path: Path) -> float:
    import gzip

    raw = path.read_bytes()
    text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()
    d = parse_dpomdp(text, path.name).discount
    return d if 0 <= d < 1 else 0.9


def problem_rows(path: Path, *, ks=(1, 2, 3, 4), methods=("pgd", "mirror"), seeds=(0, 1, 2, 3, 4),
                 step: float = 0.05, iters: int = 1000, max_path_steps: int = 3_000_000,
                 max_policies: int = 10**6, progress=None) -> dict:
    """All numbers of one problem (see the module docstring)."""
    gamma = _gamma_for(path)
    mdp = load_dpomdp(path, gamma=gamma)
    count = count_deterministic(mdp)
    row = dict(problem=path.name, gamma=gamma, states=mdp.n_states, obs=list(mdp.n_obs),
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
    cells = {}
    for method in methods:
        for k in ks:
            steps = estimate_path_steps(mdp, k, max_path_steps=max_path_steps)
            key = f"{method}_k{k}"
            if steps > max_path_steps:
                cells[key] = dict(over_budget=True, steps=steps)
                continue
            t0 = time.perf_counter()
            res_u = train(mdp, k=k, method=method, step=step, iters=iters, tol=1e-8, init=uniform,
                          max_path_steps=max_path_steps)
            finals = [train(mdp, k=k, method=method, step=step, iters=iters, tol=1e-8,
                            init=Policy.random(mdp, seed=s), max_path_steps=max_path_steps).final_J
                      for s in seeds]
            cells[key] = dict(over_budget=False, steps=steps, uniform=res_u.final_J,
                              random=finals, min=float(np.min(finals)), median=float(np.median(finals)),
                              max=float(np.max(finals)), seconds=time.perf_counter() - t0)
            if progress is not None:
                progress(path.name, key, cells[key])
    row["cells"] = cells
    return row


def run_table(data_dir=DEFAULT_DATA_DIR, *, files=None, progress=None, **kw) -> list[dict]:
    """:func:`problem_rows` for every ``.dpomdp`` file of ``data_dir`` (the syntax
    example ``example.dpomdp`` is not a valid model and is skipped)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"benchmark folder {data_dir} does not exist")
    paths = sorted(p for p in data_dir.glob("*.dpomdp*") if not p.name.startswith("example"))
    if files:
        paths = [p for p in paths if p.name in set(files)]
    return [problem_rows(p, progress=progress, **kw) for p in paths]


def _fmt(x, digits=3):
    return "—" if x is None else f"{x:.{digits}f}"


def commit_id(repo: Path | None = None) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=repo or Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown(rows: list[dict], *, ks=(1, 2, 3, 4), methods=("pgd", "mirror"), settings: dict | None = None) -> str:
    """The tables as Markdown: one summary table, then one table per method."""
    out = ["| problem | gamma | states | obs / agent | actions / agent | det. policies | J* | uniform J | ABR J |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['problem']} | {r['gamma']:g} | {r['states']} | {r['obs']} | {r['actions']} | "
                   f"{r['policies']:.3g} | {_fmt(r['J_star'])} | {_fmt(r['uniform'])} | {_fmt(r['abr'])} |")
    for method in methods:
        out += ["", f"**{method}** — final J from the uniform policy; below it min / median / max over the "
                f"random starts; wall time for all starts", "",
                "| problem | " + " | ".join(f"k = {k}" for k in ks) + " |",
                "|---|" + "---|" * len(ks)]
        for r in rows:
            cells = []
            for k in ks:
                c = r["cells"].get(f"{method}_k{k}")
                if c is None:
                    cells.append("")
                elif c["over_budget"]:
                    cells.append(f"over budget (> {c['steps']:.2g} path steps/pass)")
                else:
                    cells.append(f"{c['uniform']:.3f}<br>{c['min']:.3f} / {c['median']:.3f} / {c['max']:.3f}"
                                 f"<br>{c['seconds']:.1f} s")
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


def write_report(data_dir=DEFAULT_DATA_DIR, out="docs/benchmarks.md", *, json_path="results/dpomdp_table.json",
                 iters: int = 1000, step: float = 0.05, budget: int = 3_000_000, seeds: int = 5, files=None,
                 repo: Path | None = None, progress=None) -> Path:
    """Run the whole table and write the Markdown report (and the raw numbers as JSON)."""
    t0 = time.perf_counter()
    commit = commit_id(repo)  # the code the table is produced from
    rows = run_table(data_dir, files=files, progress=progress, iters=iters, step=step, max_path_steps=budget,
                     seeds=tuple(range(seeds)))
    settings = dict(iters=iters, step=step, max_path_steps=budget, seeds=list(range(seeds)))
    if json_path is not None:
        write_json_atomic(json_path, dict(rows=rows, settings=settings, commit=commit, versions=versions()))
    text = f"""# Dec-POMDP benchmarks

Produced by `python benchmarks/dpomdp_table.py` (or `marl-kstep benchmarks`) at commit `{commit}` in
{time.perf_counter() - t0:.0f} s ({versions()}). Memoryless decentralized policies on the observation-augmented
joint MDP (SPEC §6), gamma 0.9 or the file's discount when it is below 1. Projected (pgd) and mirror ascent with
step {step}, at most {iters} iterations (stop when no entry moves by 1e-8), from the uniform policy and from
{seeds} Dirichlet(1) random starts (seeds 0..{seeds - 1}); J is the ordinary value of the final policy. J* is
the best deterministic policy by exhaustive search (— when there are more than 10^6); ABR is alternating best
response from the uniform policy. A k whose path enumeration needs more than {budget:,} steps per pass is
marked "over budget".

## What it shows

{findings(rows)}

## Table

{markdown(rows)}
"""
    return write_text_atomic(out, text)
