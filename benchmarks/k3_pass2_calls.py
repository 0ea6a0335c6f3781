"""What made the first dedicated k = 3 pass 2 slow: a call per credit, not the stores.

    python benchmarks/k3_pass2_calls.py [--repeats 7] [--out results/k3_pass2_calls.json]

The library's ``_walk._k3_grad`` writes each credit out inline (``grad[idx[f]] += c * ...``
with leave-one-out products). This script builds, from that function's own source, the same
loops with every credit block replaced by a call to one small compiled helper
(``_credit(grad, idx, v, nf, c, pre, suf)``, arrays as arguments) -- once as an ordinary
call, once with numba's ``inline="always"`` (inlined in numba's IR) -- and the same loops
with the depth-2 credit removed (wrong gradient: only the price of the stores). It checks
the variants against the library (the first two equal to 1e-12), then times all of them and
the general walk on one thread, alternating, medians of the wall clock and of the thread's
CPU time.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import statistics
import sys
import textwrap
import time
from pathlib import Path

import _checkout  # noqa: F401  (this checkout's marl_kstep, not an installed copy)
import numba
import numpy as np
from numba import njit

import marl_kstep as mk
from marl_kstep.estimators import _walk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from walk_limit import models_k3  # noqa: E402

#: One inline credit block of ``_k3_grad``: ``c = <expr>`` then the branches on the number of
#: drawing agents, ending with the leave-one-out loop.
CREDIT = re.compile(
    r"^(?P<ind> *)c = (?P<expr>[^\n]+)\n(?P=ind)if (?P<nf>\w+) == 1:\n(?:(?P=ind)[^\n]*\n)*?"
    r"(?P=ind) +grad\[(?P<idx>\w+)\[f\]\] \+= c \* pre\[f\] \* suf\[f \+ 1\]\n", re.M)


def _credit_py(grad, idx, v, nf, c, pre, suf):
    """``grad[idx[f]] += c * prod_{g != f} v[g]`` for ``f < nf``."""
    if nf == 1:
        grad[idx[0]] += c
    elif nf == 2:
        grad[idx[0]] += c * v[1]
        grad[idx[1]] += c * v[0]
    elif nf > 2:
        pre[0] = 1.0
        for f in range(nf):
            pre[f + 1] = pre[f] * v[f]
        suf[nf] = 1.0
        for f in range(nf - 1, -1, -1):
            suf[f] = suf[f + 1] * v[f]
        for f in range(nf):
            grad[idx[f]] += c * pre[f] * suf[f + 1]


def variant(name, replace):
    """``_k3_grad`` recompiled with each credit block passed through ``replace(match)``."""
    src = textwrap.dedent(inspect.getsource(_walk._k3_grad.py_func))
    src = src[src.index("def "):].replace("def _k3_grad(", f"def {name}(", 1)
    new, count = CREDIT.subn(replace, src)
    assert count == 3, count  # depths 0, 1 and 2
    ns = dict(np=np, _credit=njit(_credit_py), _credit_inline=njit(inline="always")(_credit_py))
    exec(compile(new, f"<{name}>", "exec"), ns)
    return njit(ns[name])


def call(helper):
    def rep(m):
        v = m["idx"].replace("idx", "v")
        return f"{m['ind']}{helper}(grad, {m['idx']}, {v}, {m['nf']}, {m['expr']}, pre, suf)\n"
    return rep


def drop_depth2(m):
    return f"{m['ind']}pass\n" if m["idx"] == "idx2" else m.group(0)


def measure(name, mdp, fns, repeats):
    p = mk.ExactKStep(mdp, 3, lump=False).plan
    theta = mk.Policy.random(mdp, seed=1).flat(mdp)
    N = mdp.n_states
    Vk, nu = np.random.default_rng(2).random(N), np.random.default_rng(3).random(N)
    gen = _walk._KIND_TAG[_walk._KIND_GENERAL]

    def runner(f):
        def run():
            g = np.zeros(theta.size)
            f(0, N, p.sm, theta, p.toff, Vk, nu, g)
            return g
        return run

    def general():
        g = np.zeros(theta.size)
        _walk.grad_kind(gen, 0, N, 3, p.sm, theta, p.toff, Vk, nu, g)
        return g

    runs = dict(library=runner(_walk._k3_grad), general=general, **{k: runner(f) for k, f in fns.items()})
    ref = runs["library"]()
    scale = np.max(np.abs(ref))
    diff = {k: float(np.max(np.abs(fn() - ref)) / scale) for k, fn in runs.items()}
    assert max(diff["general"], diff["helper call"], diff["helper, inline='always'"]) < 1e-12, (name, diff)
    wall = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            t, c = time.perf_counter(), time.thread_time()
            fn()
            cpu[k].append(time.thread_time() - c)
            wall[k].append(time.perf_counter() - t)
    return dict(name=name, max_rel_diff=diff, wall=dict((k, statistics.median(v)) for k, v in wall.items()),
                cpu=dict((k, statistics.median(v)) for k, v in cpu.items()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "results" / "k3_pass2_calls.json"))
    args = ap.parse_args(argv)
    numba.set_num_threads(1)
    fns = {"helper call": variant("k3_call", call("_credit")),
           "helper, inline='always'": variant("k3_inline_always", call("_credit_inline")),
           "no depth-2 credit": variant("k3_no_depth2", drop_depth2)}
    load0 = os.getloadavg()
    rows = [measure(name, mdp, fns, args.repeats) for name, mdp in models_k3()]
    load1 = os.getloadavg()
    keys = ["general", "helper call", "helper, inline='always'", "no depth-2 credit"]
    print(f"load average {load0[0]:.2f} -> {load1[0]:.2f}; one thread; medians of {args.repeats}: "
          "time / the library's inline credits (wall clock [thread CPU time])")
    print("| model | library (inline credits) | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for r in rows:
        w, c = r["wall"], r["cpu"]
        cells = " | ".join(f"{w[k] / w['library']:.2f} [{c[k] / c['library']:.2f}]" for k in keys)
        print(f"| {r['name']} | {w['library'] * 1e3:.2f} ms [{c['library'] * 1e3:.2f} ms] | {cells} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(rows=rows, load=[load0, load1], repeats=args.repeats), indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
