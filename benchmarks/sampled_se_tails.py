r"""Are the sampled estimator's standard errors right? Repeated runs against the exact kernel, by policy kind.

For every small built-in scenario of tests/test_sampled.py, k = 1, 2, 3 and two kinds of policy,

* ``interior``: rows from Dirichlet(3) (the tests' policies: entries away from 0);
* ``near_det``: a random deterministic table with every other entry at 0.02 (rows near a vertex,
  where the ``1/theta`` weights are heavy-tailed),

the fast path is run ``--replicates`` times (seeds 0, 1, ...) with ``--episodes`` episodes each, and
every estimate (``J_k`` and every entry of the row-centred gradient) is compared with the exact one:

* z = (estimate - exact) / reported standard error; the share of |z| > 2 and |z| > 3 against the
  normal's 4.55% and 0.27%, with Wilson 95% intervals over the z-scores of the cell (the z-scores
  of one replicate share its episodes, so read those intervals as somewhat too narrow), and max |z|;
* the **SE ratio** of an entry: the standard deviation of its estimates over the replicates divided
  by the root mean square of its reported standard errors (1 when the standard errors are right;
  with R replicates its own sampling spread is about 1/sqrt(2R), 3.5% for R = 400).

Entries whose reported standard error is 0 in some replicate (never drawn) are counted apart.
One JSON line per cell goes to ``OUT/se_tails.jsonl``; rerunning skips the cells already there.

    python benchmarks/sampled_se_tails.py --out /work/results27/25c --replicates 400 --episodes 2000
    python benchmarks/sampled_se_tails.py --out /work/results27/25c --summary
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _checkout  # noqa: E402, F401  (this checkout's marl_kstep, not an installed copy)
from test_sampled import SCENARIOS  # noqa: E402

import marl_kstep as mk  # noqa: E402
from marl_kstep.experiments.study import wilson_interval  # noqa: E402

NEAR_DET_ENTRY = 0.02
#: Entries at most this are *rare* (drawn in few episodes); their z-scores are also summarised apart.
RARE = 0.05
KINDS = ("interior", "near_det")


def policy_of(kind: str, mdp, seed: int) -> mk.Policy:
    """The policy of one cell: Dirichlet(3) rows, or a random vertex with its other entries at 0.02."""
    if kind == "interior":
        return mk.Policy.random(mdp, seed, concentration=3.0)
    rng = np.random.default_rng(seed)
    theta = []
    for n_obs, A in zip(mdp.n_obs, mdp.n_actions, strict=True):
        t = np.full((n_obs, A), NEAR_DET_ENTRY)
        t[np.arange(n_obs), rng.integers(A, size=n_obs)] = 1.0 - (A - 1) * NEAR_DET_ENTRY
        theta.append(t)
    return mk.Policy(theta)


def cell(name, factory, config, k, kind, replicates, episodes) -> dict:
    """Every replicate of one (scenario, k, policy kind): the z-scores and SE ratios, summarised."""
    mdp = mk.compile_env(factory(**config))
    pol = policy_of(kind, mdp, 10 + k)
    exact = mk.ExactKStep(mdp, k).estimate(pol)
    exact_vec = np.concatenate([[exact.J_k], *[(g - g.mean(axis=1, keepdims=True)).ravel() for g in exact.grad]])
    est_rows, se_rows = [], []
    for r in range(replicates):
        e = mk.SampledKStep(mdp, k, episodes=episodes, seed=r, floor=0.0).estimate(pol)
        est_rows.append(np.concatenate([[e.J_k], *[g.ravel() for g in e.grad]]))
        se_rows.append(np.concatenate([[e.J_k_se], *[s.ravel() for s in e.grad_se]]))
    est, se = np.asarray(est_rows), np.asarray(se_rows)
    diff = est - exact_vec
    drawn = se > 0
    # never drawn: estimate 0 and se 0 -- counted apart (a nonzero exact entry there is a miss, not a z)
    undrawn_misses = int(np.sum(~drawn & (np.abs(diff) > 1e-9)))
    z = diff[drawn] / se[drawn]
    # which estimates belong to rare entries (theta <= RARE): J_k is never rare
    rare_entry = np.concatenate([[False], *[(t <= RARE).ravel() for t in pol.theta]])
    rare = np.broadcast_to(rare_entry, drawn.shape)[drawn]
    z_rare, z_common = z[rare], z[~rare]
    always = drawn.all(axis=0)
    ratio = est[:, always].std(axis=0, ddof=1) / np.sqrt((se[:, always] ** 2).mean(axis=0))
    n = int(z.size)
    over2, over3 = int(np.sum(np.abs(z) > 2)), int(np.sum(np.abs(z) > 3))
    split = {}
    for part, zz in (("rare", z_rare), ("common", z_common)):
        split[f"{part}_n_z"] = int(zz.size)
        split[f"{part}_over3"] = int(np.sum(np.abs(zz) > 3))
        split[f"{part}_max_abs_z"] = float(np.abs(zz).max(initial=0.0))
    return dict(scenario=name, k=k, kind=kind, replicates=replicates, episodes=episodes, entries=int(exact_vec.size),
                n_z=n, mean_z=float(z.mean()), sd_z=float(z.std()), max_abs_z=float(np.abs(z).max()),
                over2=over2, over2_wilson=wilson_interval(over2, n),
                over3=over3, over3_wilson=wilson_interval(over3, n), **split,
                ratio_median=float(np.median(ratio)), ratio_min=float(ratio.min()), ratio_max=float(ratio.max()),
                ratio_entries=int(ratio.size), undrawn=int(np.sum(~drawn)), undrawn_misses=undrawn_misses,
                zJ_over3=int(np.sum(np.abs(diff[:, 0] / se[:, 0]) > 3)))


def summary(rows: list[dict]) -> str:
    """The table of the cells, and the pooled tail rates per policy kind with Wilson 95% intervals."""
    out = [f"{'scenario':<22} {'k':>1} {'kind':<9} {'n_z':>7} {'sd z':>5} {'SE ratio med [min, max]':>24} "
           f"{'|z|>3 per mille [95%]':>22} {'x normal':>8} {'max|z|':>6}"]
    p3 = 0.0027
    for r in rows:
        lo, hi = r["over3_wilson"]
        out.append(f"{r['scenario']:<22} {r['k']:>1} {r['kind']:<9} {r['n_z']:>7} {r['sd_z']:>5.2f} "
                   f"{r['ratio_median']:>8.2f} [{r['ratio_min']:.2f}, {r['ratio_max']:.2f}]   "
                   f"{1000 * r['over3'] / r['n_z']:>5.1f} [{1000 * lo:.1f}, {1000 * hi:.1f}] "
                   f"{r['over3'] / r['n_z'] / p3:>8.1f} {r['max_abs_z']:>6.2f}")
    for kind in KINDS:
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        n = sum(r["n_z"] for r in sel)
        o2, o3 = sum(r["over2"] for r in sel), sum(r["over3"] for r in sel)
        w2, w3 = wilson_interval(o2, n), wilson_interval(o3, n)
        sd = np.sqrt(sum(r["n_z"] * (r["sd_z"] ** 2 + r["mean_z"] ** 2) for r in sel) / n)
        ratios = [r["ratio_median"] for r in sel]
        undrawn, misses = sum(r["undrawn"] for r in sel), sum(r["undrawn_misses"] for r in sel)
        out.append(f"{kind}: {n} z-scores in {len(sel)} cells, root mean square z {sd:.3f}; "
                   f"|z| > 2: {o2} ({100 * o2 / n:.2f}%, Wilson 95% {100 * w2[0]:.2f}-{100 * w2[1]:.2f}%; "
                   f"normal 4.55%); |z| > 3: {o3} ({100 * o3 / n:.3f}%, {100 * w3[0]:.3f}-{100 * w3[1]:.3f}%; "
                   f"normal 0.270%); max |z| {max(r['max_abs_z'] for r in sel):.2f}; cell median SE ratios "
                   f"{min(ratios):.2f}-{max(ratios):.2f}; undrawn entries {undrawn} ({misses} with exact != 0)")
        for part in ("rare", "common"):
            if f"{part}_n_z" not in sel[0]:
                continue
            n_p = sum(r[f"{part}_n_z"] for r in sel)
            o_p = sum(r[f"{part}_over3"] for r in sel)
            if n_p:
                w = wilson_interval(o_p, n_p)
                out.append(f"  {part} entries (theta {'<=' if part == 'rare' else '>'} {RARE}): {n_p} z-scores, "
                           f"|z| > 3: {o_p} ({100 * o_p / n_p:.3f}%, Wilson 95% {100 * w[0]:.3f}-{100 * w[1]:.3f}%), "
                           f"max |z| {max(r[f'{part}_max_abs_z'] for r in sel):.2f}")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--replicates", type=int, default=400)
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--summary", action="store_true", help="only print the summary of the cells already run")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "se_tails.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    if not args.summary:
        done = {(r["scenario"], r["k"], r["kind"]) for r in rows}
        print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
        for name, factory, config in SCENARIOS:
            for k in (1, 2, 3):
                for kind in KINDS:
                    if (name, k, kind) in done:
                        continue
                    t0 = time.perf_counter()
                    row = cell(name, factory, config, k, kind, args.replicates, args.episodes)
                    row["seconds"] = time.perf_counter() - t0
                    rows.append(row)
                    with path.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(name, k, kind, f"{row['seconds']:.1f} s, sd z {row['sd_z']:.3f}, "
                          f"max|z| {row['max_abs_z']:.2f}", flush=True)
        print(f"load average at end: {os.getloadavg()[0]:.2f}", flush=True)
    print(summary(rows))


if __name__ == "__main__":
    main()
