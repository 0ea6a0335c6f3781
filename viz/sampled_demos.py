"""The demonstrations of docs/sampled.md: sampled k-step gradients on the traps, beyond enumeration,
and on environments no one here wrote (OpenSpiel tiny Hanabi, mpe2 speaker-listener).

    python viz/sampled_demos.py traps beyond jstar hanabi mpe plot    # parts can run in separate processes

Every part saves its numbers in results/sampled/PART.json; ``plot`` draws docs/figures/sampled_*.png
from them. Seeds are shown as success rates or as bands (mean and min-max), never one line per seed.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from _common import FIGURES, RESULTS

import marl_kstep as mk
from marl_kstep.envs import grid_coordination, number_matching, two_state

OUT = RESULTS / "sampled"
SEEDS = range(8)


def greedy_value(mdp, policy):
    return mk.value(mdp, mk.Policy.deterministic(mdp, policy.greedy_tables()))


def save(name, data):
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=1))


# ------------------------------------------------------------------ the traps
def traps():
    cases = {
        "two_state": (two_state.build_mdp() if hasattr(two_state, "build_mdp")
                      else mk.compile_env(two_state.parallel_env()), two_state.trap_start),
        "number_matching": (number_matching.build_mdp(start="far"), number_matching.trap_start),
        "grid_trap": (mk.compile_env(grid_coordination.parallel_env(**grid_coordination.TRAP_CONFIG)),
                      grid_coordination.near_stay_start),
    }
    out = {}
    for name, (mdp, start_fn) in cases.items():
        j_star = mk.best_deterministic(mdp)[0]
        start = start_fn(mdp)
        rows = {}
        for k in (1, 2, 3):
            t = time.perf_counter()
            ex = mk.train(mdp, k=k, init=start, iters=2000)
            exact_ok = greedy_value(mdp, ex.policy) >= j_star - 1e-6 * max(1, abs(j_star))
            vals, secs = [], []
            for seed in SEEDS:
                t1 = time.perf_counter()
                res = mk.train(mk.SampledKStep(mdp, k, seed=seed), init=start, iters=300)
                secs.append(time.perf_counter() - t1)
                vals.append(greedy_value(mdp, res.policy))
            ok = int(sum(v >= j_star - 1e-6 * max(1, abs(j_star)) for v in vals))
            rows[k] = dict(exact_success=bool(exact_ok), exact_J=ex.final_J, sampled_success=ok,
                           sampled_greedy_J=vals, seconds_per_run=float(np.median(secs)))
            print(f"{name} k={k}: exact {'escapes' if exact_ok else 'stuck'} (J={ex.final_J:.3f}), "
                  f"sampled {ok}/8 (median {np.median(secs):.2f} s per run) [{time.perf_counter() - t:.0f} s]",
                  flush=True)
        out[name] = dict(J_star=j_star, n_states=mdp.n_states, by_k=rows)
    save("traps", out)


# ------------------------------------------------------------------ beyond enumeration
def _curves_batched(env, ks, seeds, iters, episodes):
    res = {}
    for k in ks:
        curves, ses, greedy, secs = [], [], [], []
        for seed in seeds:
            est = mk.SampledKStep(env, k, seed=seed, episodes=episodes)
            # number matching: its trap start (keep 0.97); grid: near_stay_start (stay 0.8)
            row = [0.97, 0.03] if est.n_actions[0] == 2 else [0.8] + [0.05] * 4
            start = mk.Policy.from_arrays(est, [np.tile(row, (o, 1)) for o in est.n_obs])
            t = time.perf_counter()
            r = mk.train(est, init=start, iters=iters, tol=0.0)
            secs.append(time.perf_counter() - t)
            curves.append(r.history_J_k.tolist())
            ses.append(r.history_J_k_se.tolist())
            greedy.append(float(mk.SampledKStep(env, 1, episodes=4000, seed=99).estimate(
                mk.Policy.deterministic(est, r.policy.greedy_tables())).J_k))
        res[k] = dict(curves=curves, se=ses, greedy_J=greedy, seconds=secs)
        print(f"  k={k}: final J_k {np.round([c[-1] for c in curves], 3)}, greedy {np.round(greedy, 3)}, "
              f"{np.median(secs):.1f} s per run", flush=True)
    return res


def beyond():
    out = {}
    for n in (6, 8):
        env = number_matching.parallel_env(n_agents=n, n_numbers=10, start="far")
        print(f"number matching {n} agents x 10 numbers: 10^{n} joint states, batched path (no enumeration)",
              flush=True)
        out[f"number_matching_{n}x10"] = dict(n_states=10**n, runs=_curves_batched(env, (1, 2, 3), range(4), 150,
                                                                                    500))
        save("beyond", out)
    layout = "\n".join(["#########"] + ["#0.....1#", "#.......#", "#...G...#", "#.......#", "#2......#"]
                       + ["#########"])
    env = grid_coordination.parallel_env(layout=layout, n_agents=3, observation="walls",
                                         decoys=[(1, 1), (1, 7), (5, 1)], decoy_reward=0.02)
    print("grid 3 agents, 5x7 open map, batched path", flush=True)
    out["grid_3_agents"] = dict(n_states=35**3, layout=layout, runs=_curves_batched(env, (1, 2, 3), range(4), 150, 500))
    save("beyond", out)


def number_matching_jstar(n, m=10):
    """J* of number matching (far start, match observations) by exhaustive search over the 4^n
    deterministic policies, each simulated from every start state (dynamics and policies are
    deterministic, so one trajectory per start is exact up to the truncation gamma^H <= 1e-4)."""
    import itertools

    from marl_kstep.sampling import horizon_for

    model = number_matching.parallel_env(n_agents=n, n_numbers=m, start="far").unwrapped.model
    H = horizon_for(model.gamma, 1e-4)
    starts, p = model.initial_codes()
    pols = np.array(list(itertools.product(range(2), repeat=n * 2)), dtype=np.int64).reshape(-1, n, 2)
    best, best_tables = -np.inf, None
    for chunk in np.array_split(np.arange(len(pols)), max(1, len(pols) * len(starts) // 200_000)):
        P = pols[chunk]
        codes = np.repeat(starts[None, :], len(chunk), axis=0).ravel()
        pidx = np.repeat(np.arange(len(chunk)), len(starts))
        G, disc = np.zeros(codes.size), 1.0
        for _ in range(H):
            obs = model.observe_arrays(codes)
            joint = np.zeros(codes.size, dtype=np.int64)
            for i in range(n):
                joint = joint * 2 + P[pidx, i, obs[i]]
            succ, _, rew = model.step_arrays(codes, joint)
            G += disc * rew
            disc *= model.gamma
            codes = succ[:, 0]
        J = (G.reshape(len(chunk), len(starts)) * p[None, :]).sum(axis=1)
        q = int(np.argmax(J))
        if J[q] > best:
            best, best_tables = float(J[q]), P[q].tolist()
    return best, best_tables, len(pols)


def jstar():
    out = {}
    for n in (2, 4, 6, 8):
        t = time.perf_counter()
        best, tables, count = number_matching_jstar(n)
        out[n] = dict(J_star=best, tables=tables, policies=count, seconds=time.perf_counter() - t)
        print(f"number matching {n} agents x 10 numbers: J* = {best:.4f} over {count:,} policies, {tables}", flush=True)
    save("jstar", out)


# ------------------------------------------------------------------ OpenSpiel tiny Hanabi
def hanabi():
    from marl_kstep.envs.openspiel import (
        TINY_HANABI_PAYOFFS,
        SpielParallelEnv,
        best_deterministic_spiel,
        spiel_value,
        tiny_hanabi_game,
    )

    gamma = 0.99  # the payoff is paid on the second move: J = gamma * E[payoff]
    out = {}
    for variant in sorted(TINY_HANABI_PAYOFFS):
        game = tiny_hanabi_game(variant)
        best, _, count = best_deterministic_spiel(game)
        env = SpielParallelEnv(game)
        rows = {}
        for k in (1, 2):
            vals, secs = [], []
            for seed in SEEDS:
                est = mk.SampledKStep(env, k, gamma=gamma, episodes=200, seed=seed)
                t = time.perf_counter()
                r = mk.train(est, init=mk.Policy.random(est, seed), iters=100, step=0.1, tol=0.0)
                secs.append(time.perf_counter() - t)
                tables = [np.argmax(th, axis=1) for th in r.policy.theta]
                vals.append(spiel_value(game, tables, env._ids))
            ok = int(sum(v >= best - 1e-9 for v in vals))
            rows[k] = dict(greedy_payoff=vals, success=ok, seconds=float(np.median(secs)))
            print(f"tiny hanabi {variant} k={k}: optimum {best:.3f} ({count} policies); greedy payoffs "
                  f"{np.round(vals, 3)}; {ok}/8 optimal", flush=True)
        out[variant] = dict(optimum=best, n_policies=count, by_k=rows)
    save("hanabi", out)


# ------------------------------------------------------------------ mpe2 speaker-listener
class ListenerEncoder:
    """Listener: the speaker's message (argmax of the comm channel; 3 = silent) and the signs
    (below -0.1, between, above 0.1) of the x and y offsets to the landmark the message names:
    4 x 3 x 3 = 36 ids. Observation layout: velocity (2), landmark offsets (3 x 2), comm (3)."""

    n = 36

    def __call__(self, obs):
        obs = np.asarray(obs, dtype=float)
        comm = obs[8:11]
        msg = int(np.argmax(comm)) if comm.max() > 0 else 3
        dx, dy = (obs[2 + 2 * msg], obs[3 + 2 * msg]) if msg < 3 else (0.0, 0.0)
        bx, by = (int(np.digitize(v, [-0.1, 0.1])) for v in (dx, dy))
        return (msg * 3 + bx) * 3 + by


def mpe():
    from mpe2 import simple_speaker_listener_v4

    env = simple_speaker_listener_v4.parallel_env(continuous_actions=False, max_cycles=25)
    out = {}
    for k in (1, 2, 4):
        curves, ses, secs = [], [], []
        for seed in range(4):
            encoders = [mk.ObservationIndexer(3, decimals=3), ListenerEncoder()]
            est = mk.SampledKStep(env, k, gamma=0.95, episodes=60, seed=seed, encoders=encoders)
            t = time.perf_counter()
            r = mk.train(est, method="mirror", step=0.05, iters=60, tol=0.0, init=mk.Policy.uniform(est))
            secs.append(time.perf_counter() - t)
            curves.append(r.history_J_k.tolist())
            ses.append(r.history_J_k_se.tolist())
        out[k] = dict(curves=curves, se=ses, seconds=secs)
        print(f"mpe2 speaker-listener k={k}: J_k start {np.round([c[0] for c in curves], 2)} -> final "
              f"{np.round([np.mean(c[-5:]) for c in curves], 2)} ({np.median(secs):.0f} s per run)", flush=True)
    save("mpe", out)


# ------------------------------------------------------------------ figures
def _band(ax, curves, label, color, se=None):
    """Mean and range over seeds; with the runs' recorded standard errors ``se``, also the 95% band of
    the mean's sampling error, mean +- 1.96 sqrt(sum se^2) / n (hatched)."""
    c = np.asarray(curves)
    x = np.arange(c.shape[1])
    ax.plot(x, c.mean(axis=0), color=color, label=label)
    ax.fill_between(x, c.min(axis=0), c.max(axis=0), color=color, alpha=0.2)
    if se is not None:
        half = 1.96 * np.sqrt((np.asarray(se) ** 2).sum(axis=0)) / len(se)
        ax.fill_between(x, c.mean(axis=0) - half, c.mean(axis=0) + half, color=color, alpha=0.35, hatch="//", lw=0)


def plot():
    from matplotlib.figure import Figure

    colors = {1: "tab:red", 2: "tab:blue", 3: "tab:green", 4: "tab:purple"}
    FIGURES.mkdir(parents=True, exist_ok=True)
    traps_data = json.loads((OUT / "traps.json").read_text())
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax = fig.subplots()
    names = list(traps_data)
    width = 0.13
    for q, k in enumerate(("1", "2", "3")):
        ex = [8 * traps_data[n]["by_k"][k]["exact_success"] for n in names]
        sa = [traps_data[n]["by_k"][k]["sampled_success"] for n in names]
        x = np.arange(len(names)) + (q - 1) * 2.2 * width
        ax.bar(x - width / 2, ex, width, color=colors[int(k)], alpha=0.45, label=f"k={k} exact (0 or 8)")
        ax.bar(x + width / 2, sa, width, color=colors[int(k)], label=f"k={k} sampled")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("runs reaching J* (of 8)")
    ax.set_ylim(0, 8.5)
    ax.set_title("Trap starts: exact against sampled gradients, 8 seeds")
    ax.legend(ncol=1, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.savefig(FIGURES / "sampled_traps.png", dpi=120)

    beyond_data = json.loads((OUT / "beyond.json").read_text())
    js = json.loads((OUT / "jstar.json").read_text()) if (OUT / "jstar.json").exists() else {}
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, len(beyond_data))
    for ax, (name, d) in zip(axes, beyond_data.items(), strict=True):
        for k, r in d["runs"].items():
            _band(ax, r["curves"], f"k={k}", colors[int(k)], r.get("se"))
        n = name.split("_")[-1].split("x")[0]
        if name.startswith("number_matching") and n in js:
            ax.axhline(js[n]["J_star"], color="k", ls="--", lw=1, label="J* (exhaustive)")
        hatched = "; hatched: mean +- 1.96 SE" if all("se" in r for r in d["runs"].values()) else ""
        ax.set_title(f"{name}: {d['n_states']:.0e} joint states\n(4 seeds, mean and range{hatched})", fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel("sampled J_k")
        ax.legend(fontsize=8)
    fig.savefig(FIGURES / "sampled_beyond.png", dpi=120)

    han = json.loads((OUT / "hanabi.json").read_text())
    mpe_data = json.loads((OUT / "mpe.json").read_text())
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    variants = sorted(han)
    for q, k in enumerate(("1", "2")):
        ratio = [np.mean(han[v]["by_k"][k]["greedy_payoff"]) / han[v]["optimum"] for v in variants]
        ax.bar(np.arange(len(variants)) + (q - 0.5) * 0.35, ratio, 0.35, color=colors[int(k)],
               label=f"k={k}: mean greedy payoff / optimum")
    for i, v in enumerate(variants):
        ax.text(i, 1.02, f"{han[v]['by_k']['1']['success']}/8", ha="center", fontsize=7)
    ax.set_xticks(np.arange(len(variants)), variants)
    ax.set_ylim(0, 1.12)
    ax.set_title("OpenSpiel tiny Hanabi (labels: runs at the optimum, k=1)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    for k, r in mpe_data.items():
        _band(ax2, r["curves"], f"k={k}", colors[int(k)], r.get("se"))
    ax2.set_title("mpe2 simple_speaker_listener_v4 (4 seeds, mean and range)", fontsize=9)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("sampled J_k")
    ax2.legend(fontsize=8)
    fig.savefig(FIGURES / "sampled_foreign.png", dpi=120)
    print("wrote", [p.name for p in FIGURES.glob("sampled_*.png")])


if __name__ == "__main__":
    parts = sys.argv[1:] or ["traps", "beyond", "jstar", "hanabi", "mpe", "plot"]
    for part in parts:
        globals()[part]()
