"""The main job: the two traps of SPEC §5, trained for several window lengths k.

``python -m marl_kstep.demo`` (or ``marl-kstep demo``) prints two tables and writes figures:

* the two-state aggregation trap (c = 0.5, gamma = 0.9) trained with projected ascent
  (eta = 0.05) from ``theta[R] = 0.05`` for k = 1..6: k = 1, 2 stay at always-L (5.0),
  k >= 3 reach always-R (9.0);
* number matching (2 agents, 6 numbers, move cost 0.3, gamma 0.9, ``match``
  observations, ``far`` start) from (keep 0.97, inc 0.03) for k = 1..4 with projected and
  mirror ascent: k = 1 stays at 0.0, k >= 2 reach 6.477.

Results go to ``results/demo/<scenario>/results.json`` (the format of ``marl-kstep run``)
and figures to ``results/demo/figures/<scenario>/``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from .envs import number_matching, two_state
from .estimators import ExactKStep
from .experiments import format_table, run_scenario, write_json_atomic
from .figures import make_figures
from .interrupt import release_startup
from .policy import Policy

TWO_STATE = dict(small_reward=0.5, gamma=0.9)
NUMBER_MATCHING = dict(n_agents=2, n_numbers=6, move_cost=0.3, gamma=0.9, observation="match", start="far")


def _scenario(name, config, ks, methods, iters, out: Path | None) -> dict:
    """Run specs of ``name`` from its default (trap) start, through the experiments runner."""
    results = run_scenario(name, config, ks, methods, step=0.05, iters=iters)
    if out is not None:
        write_json_atomic(out / name / "results.json", results)
    return results


def run(k_max: int = 6, out: Path | None = None) -> dict:
    """The two-state trap for k = 1..k_max (projected ascent)."""
    return _scenario("two_state", TWO_STATE, range(1, k_max + 1), ("pgd",), 2000, out)


def _compile(ks) -> None:
    """Compile (or load) the one-call small path for the windows ``ks`` (the demo's models)."""
    for mdp, model_ks in ((two_state.build_mdp(**TWO_STATE), range(1, 7)),
                          (number_matching.build_mdp(**NUMBER_MATCHING), range(1, 5))):
        for k in ks:
            if k in model_ks:
                ExactKStep(mdp, k).value_and_grad(Policy.uniform(mdp))


def _cold_cache() -> bool:
    """True when numba's cache holds fewer than the four kinds of walk of the small path
    (``k = 1``, ``2``, ``3``, general) for these sources; False when it cannot tell."""
    from .estimators._fused import fused_small

    try:  # numba's own reading of the index (empty when stale): private, so only a hint
        return len(fused_small._cache._cache_file._load_index()) < 4
    except (AttributeError, OSError, EOFError, ValueError):
        return False


def compile_kernels(k_max: int = 6, helper: bool = True) -> float:
    """Compile (first run on a machine) or load from the cache the kernels the demo's runs use;
    returns the seconds, which the demo reports apart from the runs' own seconds.

    numba compiles one function at a time per process. With ``helper`` and a cold cache, a
    second Python process compiles the ``k = 2`` and general walks (into numba's on-disk
    cache) while this one compiles ``k = 1`` and ``k = 3``; this process then loads them (or
    compiles whatever the helper did not leave in the cache). On two idle cores that halves
    the wait; on a busy machine it costs one import more."""
    t0 = time.perf_counter()
    ks = list(range(1, k_max + 1))
    child = None
    if helper and k_max >= 2 and _cold_cache():
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1])]
                                            + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        child = subprocess.Popen([sys.executable, "-c", "from marl_kstep.demo import _compile; _compile([2, 4])"],
                                 env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        _compile([1, 3] if child is not None else ks)  # k >= 4 share the general walk with the helper's k = 4
        if child is not None:
            child.wait()
        _compile(ks)  # loads what the helper compiled; compiles anything it did not leave
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
    return time.perf_counter() - t0


def run_demo(out: Path | None = Path("results/demo"), figures: bool = True, k_max: int = 6) -> list[dict]:
    """Both traps: print the tables, save results and (optionally) figures under ``out``."""
    print(f"kernels compiled or loaded from numba's cache: {compile_kernels(k_max):.1f} s "
          "(compiled once per machine; not in the tables' seconds)")
    print("Two-state aggregation trap (SPEC §5): c = 0.5, gamma = 0.9, start theta[R] = 0.05, pgd, eta = 0.05")
    a = run(k_max, out)
    print(format_table(a["rows"]))
    print()
    print("Number matching (SPEC §5): 2 agents, 6 numbers, move cost 0.3, gamma 0.9, 'match' observations, "
          "'far' start; start rows (keep 0.97, inc 0.03), agent 1 moved 1e-6 toward keep")
    b = _scenario("number_matching", NUMBER_MATCHING, range(1, 5), ("pgd", "mirror"), {"pgd": 200, "mirror": 2000},
                  out)
    print(format_table(b["rows"]))
    if figures and out is not None:
        for res in (a, b):
            written = make_figures(res, out / "figures" / res["scenario"])
            print(f"wrote {len(written)} figures into {out / 'figures' / res['scenario']}")
    return [a, b]


def main(argv=None) -> None:
    release_startup()
    ap = argparse.ArgumentParser(prog="python -m marl_kstep.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    ap.add_argument("--no-figures", action="store_true", help="print the tables only")
    ap.add_argument("--k-max", type=int, default=6, help="largest k for the two-state trap (default 6)")
    args = ap.parse_args(argv)
    run_demo(Path(args.out), figures=not args.no_figures, k_max=args.k_max)


if __name__ == "__main__":
    main()
