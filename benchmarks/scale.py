"""Exact at scale: build seconds, peak memory, lumping and k = 1, 2 seconds up to 10^6 states.

    python benchmarks/scale.py [--quick] [--per-state] [--out results/scale.json]

Every case runs in a fresh process, so its peak resident memory (``ru_maxrss``) is its own:
the peak after the build, and after the k = 1 and k = 2 calls (``value_and_grad`` at the
uniform policy, first call: lumping, planning, both passes and both solves). ``--per-state``
also builds the two mid-sized cases through the per-state protocol, for the side-by-side
ratio (about 30 s and 10 s). k = 2 runs with the path budget raised to 10^9 where the
default 3 * 10^8 would refuse it (said in the table). The machine's load average is
recorded before and after each case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, sys, time, warnings
import marl_kstep as mk
from marl_kstep.envs import compile_model, grid_coordination, number_matching

def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def open_grid(side):
    rows = ["#" * (side + 2)] + ["#" + "." * side + "#" for _ in range(side)] + ["#" * (side + 2)]
    rows[1] = "#" + "." * (side - 1) + "G#"
    return "\n".join(rows)

spec = json.loads(sys.argv[1])
kind, cfg = spec["kind"], dict(spec["config"])
if kind == "grid":
    cfg["layout"] = open_grid(cfg.pop("side"))
    model = grid_coordination.GridCoordinationModel(**cfg)
else:
    model = number_matching.NumberMatchingModel(**cfg)
out = dict(load0=os.getloadavg())
t = time.perf_counter()
mdp = compile_model(model, vectorised=spec["vectorised"])[0]
out.update(build_s=time.perf_counter() - t, states=mdp.n_states, transitions=int(mdp.probs.size),
           joint_actions=mdp.n_joint_actions, rss_build=rss())
if spec["ks"]:
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # lumping must not be skipped
        L = mk.lump(mdp)
    out.update(lump_s=time.perf_counter() - t, blocks=L.n_blocks)
    pol = mk.Policy.uniform(mdp)
    for k in spec["ks"]:
        budget = None
        try:
            steps = mk.estimate_path_steps(L.quotient, k, max_path_steps=10**10)
        except ValueError:
            steps = None
        if steps is not None and steps > mk.Settings().max_path_steps:
            budget = 10**9
        t = time.perf_counter()
        try:
            with mk.configure(max_path_steps=budget or mk.Settings().max_path_steps):
                J, _ = mk.value_and_grad(mdp, pol, k=k)
            out[f"k{k}"] = dict(seconds=time.perf_counter() - t, J=J, path_steps=steps, budget=budget, rss=rss())
        except ValueError as e:
            out[f"k{k}"] = dict(refused=str(e)[:200], path_steps=steps)
out["load1"] = os.getloadavg()
out["rss_peak"] = rss()
print(json.dumps(out))
"""

CASES = [
    ("number matching n=4, m=10", "nm", dict(n_agents=4, n_numbers=10), [1, 2]),
    ("number matching n=5, m=10", "nm", dict(n_agents=5, n_numbers=10), [1, 2]),
    ("number matching n=6, m=8", "nm", dict(n_agents=6, n_numbers=8), [1, 2]),
    ("number matching n=6, m=10", "nm", dict(n_agents=6, n_numbers=10), [1, 2]),
    ("grid 3 agents, open 6x6, walls", "grid", dict(side=6, n_agents=3, observation="walls", starts=[None] * 3),
     [1, 2]),
    ("grid 2 agents, open 20x20, position", "grid", dict(side=20, n_agents=2, observation="position",
                                                         starts=[None] * 2), [1, 2]),
    ("grid 2 agents, open 32x32, position", "grid", dict(side=32, n_agents=2, observation="position",
                                                         starts=[None] * 2), [1]),
]
PER_STATE = ["number matching n=5, m=10", "grid 3 agents, open 6x6, walls"]


def run_case(kind, config, ks, vectorised):
    spec = dict(kind=kind, config=config, ks=ks, vectorised=vectorised)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, env=env)
    if res.returncode:
        return dict(error=res.stderr[-1500:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def gib(x):
    return f"{x / 2**30:.2f} GiB"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the cases up to 10^5 states")
    ap.add_argument("--per-state", action="store_true", help="also build two cases through the per-state protocol")
    ap.add_argument("--out", default=str(ROOT / "results" / "scale.json"))
    args = ap.parse_args(argv)
    cases = CASES[:2] if args.quick else CASES
    rows = []
    for name, kind, config, ks in cases:
        t = time.perf_counter()
        r = run_case(kind, config, ks, True)
        r.update(name=name)
        if args.per_state and name in PER_STATE:
            p = run_case(kind, config, [], False)
            r["per_state"] = p
        rows.append(r)
        print(f"{name}: {time.perf_counter() - t:.0f} s", json.dumps({k: v for k, v in r.items() if k != 'per_state'}),
              flush=True)
    print()
    print("| model | states (lumped) | joint actions | build | peak after build | lumping | k = 1 | k = 2 "
          "| peak | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['name']} | error: {r['error'][-200:]} |")
            continue
        cells = []
        for k in (1, 2):
            c = r.get(f"k{k}")
            if c is None:
                cells.append("-")
            elif "refused" in c:
                cells.append("refused")
            else:
                cells.append(f"{c['seconds']:.2f} s" + (" (budget 10^9)" if c["budget"] else ""))
        build = f"{r['build_s']:.2f} s"
        if "per_state" in r and "build_s" in r["per_state"]:
            p = r["per_state"]
            build += f" (per-state {p['build_s']:.1f} s, {gib(p['rss_build'])}: {p['build_s'] / r['build_s']:.0f}x)"
        print(f"| {r['name']} | {r['states']:,} ({r.get('blocks', 0):,}) | {r['joint_actions']} | {build} | "
              f"{gib(r['rss_build'])} | {r.get('lump_s', 0):.2f} s | {cells[0]} | {cells[1]} | {gib(r['rss_peak'])} | "
              f"{r['load0'][0]:.2f} -> {r['load1'][0]:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(rows=rows, cpus=os.cpu_count()), indent=1))
    tmp.replace(out)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
