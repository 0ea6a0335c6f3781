"""The measurements and figures of docs/when-k-helps.md: where k-step gradients escape, where they stop,
and what certified escapes (``train(..., escape=True)``, SPEC §9) change.

    python viz/when_k_helps.py families rates sampled timings mechanism claim orders plot   # separate processes ok

Every run goes through the experiments runner (one RunSpec per run, records in results/when_k/PART/runs.jsonl,
so an interrupted part resumes where it stopped); each part saves its table in results/when_k/PART.json, and
``plot`` draws docs/figures/when_k_*.png from those. Success means the final exact J is within 1e-6 (relative) of
J*, the best deterministic value (a stochastic policy can do slightly better, SPEC §5: such runs count as successes).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from _common import FIGURES, RESULTS

import marl_kstep as mk
from marl_kstep.experiments.runner import RunSpec, RunStore, build_target, run_specs

OUT = RESULTS / "when_k"
STEPS = {"pgd": 0.05, "mirror": 0.5}  # mirror's entries decay geometrically: a longer step to converge in the cap
ITERS = 2000


def save(name, data):
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=1))


def j_star(target):
    return mk.best_deterministic(build_target(target)[0])[0]


def success(J, js):
    return J is not None and J >= js - 1e-6 * max(1.0, abs(js))


def run(part, specs, executor="process"):
    """Records of ``specs`` (resumed from results/when_k/PART), keyed by spec hash."""
    folder = OUT / part

    def progress(rec, done, total, eta):
        if done % 100 == 0 or done == total:
            print(f"  [{part}: {done}/{total}, ETA {eta:.0f} s]", flush=True)

    run_specs(specs, folder, resume=True, executor=executor, workers=2 if executor != "serial" else None,
              progress=progress)
    return {r["spec_hash"]: r for r in RunStore(folder).records()}


def grid_target(half, decoy):
    width = 2 * half + 3
    layout = "\n".join(["#" * (width + 2), "#0" + "." * half + "G" + "." * half + "1#", "#" * (width + 2)])
    cfg = dict(layout=layout, n_agents=2, observation="walls", gamma=0.95, decoys=[[1, 1], [1, width]],
               decoy_reward=decoy, move_cost=0.0)
    return {"scenario": "grid_coordination", "config": cfg}


# ------------------------------------------------------------------ single-agent families and the grid corridor
def smallest_k(target, ks, method="pgd", escape=False):
    """Smallest k in ``ks`` whose run from the scenario's trap start reaches J* (None if none)."""
    js = j_star(target)
    specs = [RunSpec(target, k, method=method, step=STEPS[method], iters=ITERS, escape=escape) for k in ks]
    recs = run("families", specs, executor="serial")
    finals = [recs[s.hash]["result"]["final_J"] for s in specs]
    hit = [k for k, J in zip(ks, finals, strict=True) if success(J, js)]
    return (hit[0] if hit else None), js, dict(zip(ks, finals, strict=True))


def families():
    out = {"two_state": [], "chain": [], "grid": []}
    for c in (0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.88, 0.89):
        target = {"scenario": "two_state", "config": {"small_reward": c}}
        ks = list(range(1, 41))
        k_min, js, finals = smallest_k(target, ks)
        k_esc, _, _ = smallest_k(target, [1], escape=True)
        # larger k after the first success: does it stay escaped?
        stays = all(success(finals[k], js) for k in ks if k_min is not None and k >= k_min)
        out["two_state"].append(dict(small_reward=c, J_star=js, smallest_k=k_min, stays_escaped=stays,
                                     escape_k1=k_esc == 1))
        print("two_state", out["two_state"][-1], flush=True)
    for L in range(2, 9):
        target = {"scenario": "aggregated_chain", "config": {"length": L}}
        ks = list(range(1, 31))
        k_min, js, finals = smallest_k(target, ks)
        k_esc, _, _ = smallest_k(target, [1], escape=True)
        stays = all(success(finals[k], js) for k in ks if k_min is not None and k >= k_min)
        out["chain"].append(dict(length=L, J_star=js, smallest_k=k_min, stays_escaped=stays, escape_k1=k_esc == 1))
        print("chain", out["chain"][-1], flush=True)
    for half in (1, 2, 3):
        for decoy in (0.01, 0.02, 0.05, 0.1):
            target = grid_target(half, decoy)
            ks = list(range(1, 9))
            js = j_star(target)
            row = dict(half_length=half, decoy_reward=decoy, J_star=js)
            for method in ("pgd", "mirror"):
                for escape in (False, True):
                    specs = [RunSpec(target, k, method=method, step=STEPS[method], iters=ITERS, escape=escape)
                             for k in ks]
                    recs = run("families", specs, executor="serial")
                    row[f"{method}{'+escape' if escape else ''}"] = {
                        k: recs[s.hash]["result"]["final_J"] for k, s in zip(ks, specs, strict=True)}
            out["grid"].append(row)
            print("grid", half, decoy, js, row["pgd"], row["pgd+escape"], flush=True)
    save("families", out)


# ------------------------------------------------------------------ success rates from random starts
RATE_CASES = {
    "number matching, 2 agents, m = 6": {"scenario": "number_matching", "config": {"start": "far"}},
    "number matching, 2 agents, m = 4": {"scenario": "number_matching", "config": {"start": "far", "n_numbers": 4}},
    "number matching, 3 agents, m = 4": {"scenario": "number_matching",
                                         "config": {"start": "far", "n_agents": 3, "n_numbers": 4}},
    "number matching, 3 agents, m = 5": {"scenario": "number_matching",
                                         "config": {"start": "far", "n_agents": 3, "n_numbers": 5}},
    "grid corridor trap": grid_target(2, 0.02),
}
RATE_KS = (1, 2, 3, 4, 6, 8)
RATE_SEEDS = range(20)


def rates():
    out = {}
    for name, target in RATE_CASES.items():
        js = j_star(target)
        seeds = RATE_SEEDS if "grid" not in name else range(10)
        specs = {(m, esc, k, s): RunSpec(target, k, method=m, step=STEPS[m], iters=ITERS, seed=s, start="random",
                                         escape=esc)
                 for m in ("pgd", "mirror") for esc in (False, True) for k in RATE_KS for s in seeds}
        t = time.perf_counter()
        recs = run("rates", list(specs.values()))
        table = {}
        for (m, esc, k, _s), spec in specs.items():
            res = recs[spec.hash]["result"]
            cell = table.setdefault(f"{m}{'+escape' if esc else ''}", {}).setdefault(
                str(k), dict(success=0, runs=0, capped=0, mean_J=0.0, escapes=0))
            cell["success"] += success(res["final_J"], js)
            cell["runs"] += 1
            cell["capped"] += bool(res["capped"])
            cell["mean_J"] += res["final_J"] / len(seeds)
            cell["escapes"] += len(res.get("escapes", []))
        out[name] = dict(J_star=js, table=table, seconds=time.perf_counter() - t, seeds=len(seeds))
        print(name, js, {m: {k: c["success"] for k, c in v.items()} for m, v in table.items()}, flush=True)
    save("rates", out)


# ------------------------------------------------------------------ the sampled estimator, with and without escapes
def sampled():
    out = {}
    for name in ("number matching, 2 agents, m = 6", "number matching, 3 agents, m = 5"):
        target = RATE_CASES[name]
        js = j_star(target)
        est = {"kind": "sampled", "episodes": 500, "horizon": None}
        specs = {(esc, k, s): RunSpec(target, k, method="pgd", step=0.05, iters=300, seed=s, start="random",
                                      estimator=est, escape=esc)
                 for esc in (False, True) for k in (1, 2, 3) for s in range(12)}
        recs = run("sampled", list(specs.values()))
        mdp = build_target(target)[0]
        table = {}
        for (esc, k, _s), spec in specs.items():
            pol = mk.Policy([np.asarray(t) for t in recs[spec.hash]["result"]["policy"]])
            greedy = mk.value(mdp, mk.Policy.deterministic(mdp, pol.greedy_tables()))
            cell = table.setdefault("escape" if esc else "plain", {}).setdefault(str(k), dict(success=0, runs=0))
            cell["success"] += success(greedy, js)
            cell["runs"] += 1
        out[name] = dict(J_star=js, table=table)
        print(name, table, flush=True)
    save("sampled", out)


# ------------------------------------------------------------------ certificate cost
def timings():
    from marl_kstep.envs import grid_coordination, number_matching

    cases = {}
    grid = build_target(grid_target(2, 0.02))[0]
    stuck = mk.train(grid, k=4, init=grid_coordination.near_stay_start(grid), iters=ITERS).policy
    cases["grid corridor trap, k = 4 stuck point"] = (grid, stuck)
    nm3 = number_matching.build_mdp(n_agents=3, n_numbers=5, start="far")
    cases["number matching, 3 agents, m = 5 (everyone keeps but one)"] = (
        nm3, mk.Policy.deterministic(nm3, [[0, 0], [0, 0], [0, 1]]))
    nm2 = number_matching.build_mdp(start="far")
    cases["number matching, 2 agents, m = 6 (the J = 2.103 trap)"] = (nm2, mk.Policy.deterministic(nm2, [[0, 1],
                                                                                                     [1, 1]]))
    pos = build_target({"scenario": "grid_coordination",
                        "config": {**grid_target(2, 0.02)["config"], "observation": "position"}})[0]
    cases["grid corridor, position observations, 'stay everywhere'"] = (
        pos, mk.Policy.deterministic(pos, [np.zeros(o, dtype=int) for o in pos.n_obs]))
    nm4 = number_matching.build_mdp(n_agents=4, n_numbers=6, start="far", observation="own")
    cases["number matching, 4 agents, m = 6, own numbers, 'everyone keeps'"] = (
        nm4, mk.Policy.deterministic(nm4, [np.zeros(o, dtype=int) for o in nm4.n_obs]))
    out = {}
    for name, (mdp, pol) in cases.items():
        mk.certify(mdp, pol, order=2)  # warm
        secs = []
        for _ in range(7):
            t = time.perf_counter()
            cert = mk.certify(mdp, pol, order=2)
            secs.append(time.perf_counter() - t)
        out[name] = dict(states=mdp.n_states, deviations=cert.evaluated, median_seconds=float(np.median(secs)),
                         J=cert.J, one_opt=cert.one_opt, two_opt=cert.two_opt,
                         best=None if cert.best is None else dict(slots=cert.best.slots, J=cert.best.J))
        print(name, out[name], flush=True)
    save("timings", out)


# ------------------------------------------------------------------ escapes of higher order
def orders():
    """Success from random starts against escape_order (pgd), and the cost of one certificate per order."""
    cases = {"number matching, 3 agents, m = 5": ((1, 3), range(20)), "grid corridor trap": ((1, 3, 4, 8), range(10))}
    out = {}
    for name, (ks, seeds) in cases.items():
        target = RATE_CASES[name]
        js = j_star(target)
        specs = {(o, k, s): RunSpec(target, k, method="pgd", step=STEPS["pgd"], iters=ITERS, seed=s, start="random",
                                    escape=True, escape_order=o) for o in (2, 3, 4) for k in ks for s in seeds}
        recs = run("orders", list(specs.values()))
        table = {}
        for (o, k, _s), spec in specs.items():
            cell = table.setdefault(str(o), {}).setdefault(str(k), dict(success=0, runs=0, seconds=0.0))
            res = recs[spec.hash]["result"]
            cell["success"] += success(res["final_J"], js)
            cell["runs"] += 1
            cell["seconds"] += res["seconds"]
        mdp = build_target(target)[0]
        pol = mk.Policy.deterministic(mdp, [np.zeros(o, dtype=int) for o in mdp.n_obs])
        cost = {}
        for o in (2, 3, 4):
            t = time.perf_counter()
            cert = mk.certify(mdp, pol, order=o)
            cost[str(o)] = dict(deviations=cert.evaluated, seconds=time.perf_counter() - t)
        out[name] = dict(J_star=js, table=table, certificate_cost=cost)
        print(name, {o: {k: c["success"] for k, c in v.items()} for o, v in table.items()}, cost, flush=True)
    save("orders", out)


# ------------------------------------------------------------------ the grid trap's mechanism
def mechanism():
    """Why k = 4, 5 fall back on the grid corridor: the "go" partial at the decoy rows, "go" after two
    pgd iterations, and which observations the final policy ever visits."""
    from marl_kstep.envs import grid_coordination

    mdp = build_target(grid_target(2, 0.02))[0]
    start = grid_coordination.near_stay_start(mdp)
    s0 = int(np.flatnonzero(mdp.mu)[0])
    decoy = [int(mdp.obs[i][s0]) for i in range(2)]  # each agent's observation on its decoy cell
    go = [grid_coordination.ACTIONS.index("right"), grid_coordination.ACTIONS.index("left")]
    out = []
    for k in range(1, 7):
        _, grad = mk.value_and_grad(mdp, start, k)
        row = start.theta[0][decoy[0]]
        centred = grad[0][decoy[0]] - grad[0][decoy[0]] @ row
        early = mk.train(mdp, k=k, init=start, iters=2).policy
        final = mk.train(mdp, k=k, init=start, iters=ITERS).policy
        seen = mk.slot_visitation(mdp, final)
        out.append(dict(k=k, go_partial=float(centred[go[0]]), go_after_2=float(early.theta[0][decoy[0], go[0]]),
                        final_J=mk.value(mdp, final), visited_observations=[int(o) for o in np.flatnonzero(seen[0])],
                        decoy_observation=decoy[0]))
        print(out[-1], flush=True)
    save("mechanism", out)


# ------------------------------------------------------------------ "exponentially close in k", as measured
def claim():
    """The 2-agent J = 2.103 trap for k = 1..16: the gap to J*, whether the point is a strict stationary
    point (every non-chosen action's centred partial < 0, so pgd stays), and what a bound
    gamma^k max|r| / (1 - gamma) would allow."""
    target = RATE_CASES["number matching, 2 agents, m = 6"]
    mdp = build_target(target)[0]
    js = j_star(target)
    trap = mk.Policy.deterministic(mdp, [[0, 1], [1, 1]])
    r_max = float(np.abs(np.asarray(mdp.rewards)).max())
    out = []
    for k in range(1, 17):
        J, grad = mk.value_and_grad(mdp, trap, k)
        worst = max(float((g - (g * t).sum(axis=1, keepdims=True))[t == 0].max()) for g, t in
                    zip(grad, trap.theta, strict=True))
        stays = mk.train(mdp, k=k, init=trap, iters=200).final_J
        out.append(dict(k=k, J=J, gap=js - J, largest_other_partial=worst, strict=worst < 0, J_after_ascent=stays,
                        gamma_k_bound=mdp.gamma ** k * r_max / (1 - mdp.gamma)))
        print(out[-1], flush=True)
    save("claim", out)


# ------------------------------------------------------------------ a 20-start row against 100 starts
def rates100():
    """3-agent number matching, m = 5, pgd k = 1, 2, 3 from Dirichlet starts 0..99: successes with Wilson
    intervals, and how many of them fall in the first 20 seeds (the table above)."""
    from marl_kstep.experiments.study import wilson_interval

    target = RATE_CASES["number matching, 3 agents, m = 5"]
    js = j_star(target)
    specs = {(k, s): RunSpec(target, k, "pgd", STEPS["pgd"], ITERS, seed=s, start="random")
             for k in (1, 2, 3) for s in range(100)}
    recs = run("rates100", list(specs.values()))
    out = {}
    for k in (1, 2, 3):
        ok = [success(recs[specs[(k, s)].hash]["result"]["final_J"], js) for s in range(100)]
        out[k] = dict(first20=sum(ok[:20]), success=sum(ok), n=100, wilson=wilson_interval(sum(ok), 100))
        print(k, out[k], flush=True)
    save("rates100", out)


# ------------------------------------------------------------------ the uniform start with symmetry kept exactly
def symmetric_ascent(mdp, k, iters=ITERS, step=STEPS["pgd"]):
    """pgd from the exact uniform policy of a model whose two agents are exchangeable, each step
    using the average of the agents' gradients, so the tables stay equal exactly (no floating-point
    asymmetry can break the tie). Returns (J, table, iterations, largest |g_0 - g_1| seen)."""
    theta = mk.Policy.uniform(mdp).theta[0].copy()
    asym, it = 0.0, 0
    while it < iters:
        it += 1
        _, g = mk.value_and_grad(mdp, mk.Policy([theta, theta.copy()]), k)
        asym = max(asym, float(np.abs(g[0] - g[1]).max()))
        new = mk.pgd_step(theta, 0.5 * (g[0] + g[1]), step)
        done = float(np.abs(new - theta).max()) < 1e-10
        theta = new
        if done:
            break
    return mk.value(mdp, mk.Policy([theta, theta.copy()]), 1), theta, it, asym


def saddle():
    """2-agent number matching (far start) from Policy.uniform: exactly symmetric ascent against train, and
    train (plain and escape=True) from two starts 1e-15 off the uniform policy (independent per agent)."""
    import warnings

    mdp = build_target(RATE_CASES["number matching, 2 agents, m = 6"])[0]
    uniform = mk.Policy.uniform(mdp)
    starts = {"uniform": uniform}
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        d = [rng.uniform(-1e-15, 1e-15, t.shape) for t in uniform.theta]
        starts[f"uniform + 1e-15 (seed {seed})"] = mk.Policy([t + x - x.mean(axis=1, keepdims=True)
                                                               for t, x in zip(uniform.theta, d, strict=True)])
    out = []
    for k in range(1, 7):
        J_sym, table, iters, asym = symmetric_ascent(mdp, k)
        row = dict(k=k, symmetric_J=J_sym, symmetric_table=table.tolist(), symmetric_iterations=iters,
                   largest_gradient_asymmetry=asym, train={})
        for name, init in starts.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", mk.SaddleWarning)
                res = mk.train(mdp, k=k, init=init, iters=ITERS)
            esc = mk.train(mdp, k=k, init=init, iters=ITERS, escape=True)
            row["train"][name] = dict(J=res.final_J, stationary=res.stationary, iterations=res.iterations,
                                      escape_J=esc.final_J, escape_kinds=[e["kind"] for e in esc.escapes],
                                      escape_iterations=esc.iterations)
        row["train_J"], row["train_stationary"] = row["train"]["uniform"]["J"], row["train"]["uniform"]["stationary"]
        out.append(row)
        print(row["k"], row["symmetric_J"], row["train"], flush=True)
    # how large an asymmetry of the start still stops at the saddle: 5 seeded perturbations per size, k = 3..6
    sweep = {}
    for eps in (1e-15, 1e-14, 1e-13, 1e-12, 1e-11, 1e-10, 1e-9):
        stops = 0
        for k in range(3, 7):
            for seed in range(5):
                rng = np.random.default_rng(seed)
                d = [rng.uniform(-eps, eps, t.shape) for t in uniform.theta]
                init = mk.Policy([t + x - x.mean(axis=1, keepdims=True) for t, x in zip(uniform.theta, d, strict=True)])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", mk.SaddleWarning)
                    stops += mk.train(mdp, k=k, init=init, iters=ITERS).stationary == "saddle"
        sweep[f"{eps:g}"] = dict(saddle_stops=stops, runs=20)
        print(f"perturbation {eps:g}: {stops} of 20 stop at the saddle", flush=True)
    save("saddle", dict(by_k=out, perturbation_sweep=sweep))


# ------------------------------------------------------------------ figures
def plot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fam = json.loads((OUT / "families.json").read_text())
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    rows = fam["two_state"]
    ax.plot([r["small_reward"] for r in rows], [r["smallest_k"] or np.nan for r in rows], "o-")
    ax.set(xlabel="small reward c (two-state trap, gamma 0.9)", ylabel="smallest escaping k (pgd)",
           title="Two-state trap: a step in k")
    ax = axes[1]
    rows = fam["chain"]
    ax.plot([r["length"] for r in rows], [r["smallest_k"] or np.nan for r in rows], "o-", label="measured")
    Ls = np.array([r["length"] for r in rows])
    ax.plot(Ls, 2 * Ls - 3, "--", color="gray", label="2L - 3")
    ax.set(xlabel="chain length L (c 0.3, gamma 0.95)", ylabel="smallest escaping k (pgd)",
           title="Aggregated chains")
    ax.legend()
    ax = axes[2]
    rows = fam["grid"]
    ks = sorted(int(k) for k in rows[0]["pgd"])
    ok = np.array([[success(r["pgd"][str(k)], r["J_star"]) + success(r["mirror"][str(k)], r["J_star"]) for k in ks]
                   for r in rows])
    ax.imshow(ok, cmap="Greens", vmin=0, vmax=2, aspect="auto")
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_yticks(range(len(rows)), [f"half {r['half_length']}, decoy {r['decoy_reward']:g}" for r in rows], fontsize=7)
    ax.set(xlabel="k", title="Grid corridor: reaches J* (pgd, mirror)\nlight: one of them, dark: both")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "when_k_families.png", dpi=110)
    plt.close(fig)

    claim_ = json.loads((OUT / "claim.json").read_text())
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ks = [r["k"] for r in claim_]
    ax.plot(ks, [r["gap"] for r in claim_], "o-", label="number matching, the J = 2.103 point (every k)")
    grid = next(r for r in fam["grid"] if r["half_length"] == 2 and r["decoy_reward"] == 0.02)
    gk = sorted(int(k) for k in grid["pgd"])
    ax.plot(gk, [grid["J_star"] - grid["pgd"][str(k)] for k in gk], "s-",
            label="grid corridor trap, pgd from its start")
    ax.plot(ks, [r["gamma_k_bound"] for r in claim_], "--", color="gray",
            label="gamma^k max|r| / (1 - gamma), number matching")
    ax.set(xlabel="k", ylabel="J* - J", title="The gap does not shrink like gamma^k")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(FIGURES / "when_k_gap.png", dpi=110)
    plt.close(fig)

    rates_ = json.loads((OUT / "rates.json").read_text())
    _success_panels(plt, {f"{name}\n({d['seeds']} random starts)": d["table"] for name, d in rates_.items()},
                    [("pgd", "C0", "-", "pgd"), ("pgd+escape", "C0", "--", "pgd + escape"),
                     ("mirror", "C1", "-", "mirror"), ("mirror+escape", "C1", "--", "mirror + escape")],
                    "share of runs reaching J*", "when_k_rates.png", 4)
    samp = json.loads((OUT / "sampled.json").read_text())
    _success_panels(plt, {name: d["table"] for name, d in samp.items()},
                    [("plain", "C0", "-", "sampled pgd"), ("escape", "C2", "-", "sampled pgd + escape")],
                    "greedy policy at J* (12 starts)", "when_k_sampled.png", 5)


def _success_panels(plt, panels, series, ylabel, filename, width):
    """One panel per problem: the share of successful runs against k for each series (key, color, style, label)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 3.8), sharey=True)
    for ax, (title, table) in zip(axes, panels.items(), strict=True):
        for key, color, style, label in series:
            ks = sorted(int(k) for k in table[key])
            ax.plot(ks, [table[key][str(k)]["success"] / table[key][str(k)]["runs"] for k in ks], style, marker="o",
                    color=color, label=label)
        ax.set(title=title, xlabel="k", ylim=(-0.05, 1.05), xticks=ks)
        ax.title.set_fontsize(9)
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(FIGURES / filename, dpi=110)
    plt.close(fig)

PARTS = dict(families=families, rates=rates, sampled=sampled, timings=timings, mechanism=mechanism, claim=claim,
             orders=orders, saddle=saddle, rates100=rates100, plot=plot)

if __name__ == "__main__":
    for part in sys.argv[1:] or list(PARTS):
        if part not in PARTS:
            raise SystemExit(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
        PARTS[part]()
