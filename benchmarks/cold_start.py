"""Cold start: what a new user waits for before the first number, and what gets compiled.

    python benchmarks/cold_start.py [--repeats 2] [--no-demo] [--out results/cold_start.json]

Each measurement runs in a fresh Python process started from the checkout root (so the
checkout's package is the one imported), after deleting the package's numba cache files
(``marl_kstep/**/__pycache__/*.nbi``, ``*.nbc``) -- the checkout's own cache only, nothing
else. Measured:

* ``first_vg``: import, then the first k = 1 ``value_and_grad`` on number matching
  (2 agents, 6 numbers, 36 states); also the same call again (warm, same process);
* ``first_train``: import, then ``train(mdp, k=1, iters=200)`` on the same model;
* ``demo``: ``python -m marl_kstep.cli demo --out TMP`` (wall time of the whole process);
* each with a warm cache afterwards (same files, fresh process).

In the in-process stages the script counts the compiled specialisations: every numba
dispatcher in the loaded ``marl_kstep`` modules and its ``signatures``; the peak RSS is the
process's ``ru_maxrss``. The machine load (``os.getloadavg``) is recorded with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
import marl_kstep as mk
from marl_kstep.envs import number_matching
t_import = time.perf_counter() - t0
stage = sys.argv[1]
mdp = number_matching.build_mdp()
pol = mk.Policy.uniform(mdp)
t1 = time.perf_counter()
if stage == "first_vg":
    J, g = mk.value_and_grad(mdp, pol, k=1)
elif stage == "first_train":
    res = mk.train(mdp, k=1, iters=200, init=pol)
t_first = time.perf_counter() - t1
t2 = time.perf_counter()
if stage == "first_vg":
    mk.value_and_grad(mdp, pol, k=1)
else:
    mk.train(mdp, k=1, iters=200, init=pol)
t_again = time.perf_counter() - t2

from numba.core.registry import CPUDispatcher
funcs, sigs, names = 0, 0, []
for name, mod in list(sys.modules.items()):
    if not name.startswith("marl_kstep"):
        continue
    for attr, obj in vars(mod).items():
        if isinstance(obj, CPUDispatcher) and obj.__module__ == name and obj.signatures:
            funcs += 1
            sigs += len(obj.signatures)
            names.append(f"{name.split('.')[-1]}.{attr}:{len(obj.signatures)}")
print(json.dumps(dict(import_s=t_import, first_s=t_first, again_s=t_again, functions=funcs,
                      specialisations=sigs, compiled=sorted(names),
                      peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def clear_cache() -> int:
    """Delete the checkout's numba cache files; returns how many."""
    n = 0
    for pattern in ("*.nbi", "*.nbc"):
        for path in (ROOT / "marl_kstep").rglob(pattern):
            path.unlink()
            n += 1
    return n


def run_child(stage: str) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, stage], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    rec["process_s"] = time.perf_counter() - t0
    rec["stderr"] = out.stderr.strip()
    return rec


def run_demo() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "marl_kstep.cli", "demo", "--out", tmp], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        return dict(process_s=time.perf_counter() - t0, stdout_tail=out.stdout[-2000:], stderr=out.stderr.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-demo", action="store_true")
    ap.add_argument("--stages", nargs="*", default=["first_vg", "first_train"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    results: dict[str, list] = {}
    for r in range(args.repeats):
        for stage in args.stages:
            for cache in ("cold", "warm"):
                if cache == "cold":
                    clear_cache()
                load = os.getloadavg()[0]
                rec = run_child(stage)
                rec["load1"] = load
                results.setdefault(f"{stage}/{cache}", []).append(rec)
                print(f"[{r}] {stage:12s} {cache}: first {rec['first_s']:6.2f} s, again {rec['again_s']:.4f} s, "
                      f"import {rec['import_s']:.2f} s, process {rec['process_s']:6.2f} s, "
                      f"{rec['specialisations']} specialisations of {rec['functions']} functions, "
                      f"peak RSS {rec['peak_rss_mib']:.0f} MiB, load {load:.2f}", flush=True)
                if cache == "cold" and r == 0:
                    print("   compiled:", " ".join(rec["compiled"]))
                    if rec["stderr"]:
                        print("   stderr:", rec["stderr"])
        if not args.no_demo:
            for cache in ("cold", "warm"):
                if cache == "cold":
                    clear_cache()
                load = os.getloadavg()[0]
                rec = run_demo()
                rec["load1"] = load
                results.setdefault(f"demo/{cache}", []).append(rec)
                print(f"[{r}] demo         {cache}: process {rec['process_s']:6.2f} s, load {load:.2f}", flush=True)
    print("\nmedians:")
    for key, recs in results.items():
        first = [x.get("first_s", x["process_s"]) for x in recs]
        print(f"  {key:20s} first {statistics.median(first):6.2f} s, process "
              f"{statistics.median(x['process_s'] for x in recs):6.2f} s (n={len(recs)}, "
              f"load {min(x['load1'] for x in recs):.2f}-{max(x['load1'] for x in recs):.2f})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
