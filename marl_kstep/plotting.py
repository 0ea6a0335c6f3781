"""Figures: learning curves, gap against k, policy heatmaps, grid trajectories and GIFs.

Every function returns the matplotlib ``Figure`` (and saves it when given ``path``);
none calls ``plt.show()``. Figures are made with matplotlib's object API on their own Agg
canvas: the module neither switches the user's backend nor registers figures with pyplot.
Results are the run records of :mod:`marl_kstep.experiments` (keys ``k``, ``method``,
``history_J``, ``final_J``, ``J_star``, optionally ``seed``) or a results dictionary holding
them under ``"rows"``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .envs.base import COLORS, agent_color
from .sampling import KCoupledAgent, k_coupled_episode

__all__ = ["learning_curves", "gap_vs_k", "policy_heatmap", "grid_trajectory", "animate_grid", "episode"]

_METHOD_STYLE = {"pgd": "-", "mirror": "--"}
#: Half-width of the standard-error band of sampled learning curves, in standard errors (95%).
Z_BAND = 1.96


def _figure(figsize) -> Figure:
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _rows(results) -> list[dict]:
    return list(results["rows"] if isinstance(results, dict) else results)


def _save(fig, path):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig


def _groups(rows) -> dict:
    """Runs grouped by (k, method, estimator, start): the seeds of one setting."""
    by = defaultdict(list)
    for r in rows:
        by[(r["k"], r["method"], r.get("estimator", "exact"), r.get("start", "default"))].append(r)
    return dict(sorted(by.items()))


def _label(key, n: int) -> str:
    k, method, est, start = key
    extra = "" if est == "exact" else f" {est}"
    extra += "" if start == "default" else f" {start}"
    return f"k={k} {method}{extra}" + ("" if n == 1 else f" ({n} seeds)")


def _padded(histories) -> np.ndarray:
    """Histories of unequal length (runs that converged early) held at their last value."""
    n = max(len(h) for h in histories)
    return np.array([np.concatenate([h, np.full(n - len(h), h[-1])]) for h in map(np.asarray, histories)])


def learning_curves(results, path=None, title: str | None = None):
    r"""The optimised :math:`J_k` (left) and the ordinary value :math:`J` (right) per iteration.

    One line per setting (k, method, estimator, start); with several seeds, the mean over seeds
    as the line and the range (min to max) as a band. For sampled runs (rows with
    ``history_J_k_se``, the recorded standard errors of the estimates) the left panel also shows
    the 95% band of the sampling error of that line, :math:`\bar J_k \pm 1.96\,
    \sqrt{\textstyle\sum_i \mathrm{se}_i^2} / n` over the n seeds (hatched, gid ``"se_band"``).
    J* dashed where known. (J_k is what the ascent increases; J can fall while J_k rises, so both
    are shown.)
    """
    rows = _rows(results)
    fig = _figure((11, 4.2))
    ax_k, ax_j = fig.subplots(1, 2)
    groups = _groups(rows)
    ks = sorted({key[0] for key in groups})
    cmap = matplotlib.colormaps["viridis"].resampled(max(len(ks), 2))
    for key, rs in groups.items():
        color = cmap(ks.index(key[0]))
        for ax, field in ((ax_k, "history_J_k"), (ax_j, "history_J")):
            if any(r.get(field) is None for r in rs):
                continue  # an older record without this history
            h = _padded([r[field] for r in rs])
            x = np.arange(h.shape[1])
            ax.plot(x, h.mean(axis=0), _METHOD_STYLE.get(key[1], "-"), color=color, label=_label(key, len(rs)),
                    lw=1.6)
            if len(rs) > 1:
                ax.fill_between(x, h.min(axis=0), h.max(axis=0), color=color, alpha=0.18, lw=0)
            if field == "history_J_k" and all(r.get("history_J_k_se") is not None for r in rs):
                # sampled runs: the standard error of the mean J_k, sqrt(sum_i se_i^2) / n, as +- Z_BAND se
                se = np.sqrt((_padded([[np.nan if v is None else v for v in r["history_J_k_se"]] for r in rs]) ** 2)
                             .sum(axis=0)) / len(rs)
                m = h.mean(axis=0)
                band = ax.fill_between(x, m - Z_BAND * se, m + Z_BAND * se, color=color, alpha=0.35, lw=0,
                                       hatch="//", label="_se")
                band.set_gid("se_band")
    j_star = next((r["J_star"] for r in rows if r.get("J_star") is not None), None)
    for ax, what in ((ax_k, "J_k (optimised, k-step value)"), (ax_j, "J (ordinary value)")):
        if j_star is not None:
            ax.axhline(j_star, color="k", ls=":", lw=1.2, label=f"J* = {j_star:.4g}")
        ax.set_xlabel("iteration")
        ax.set_ylabel(what)
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
    ax_k.set_title("J_k, which the ascent increases", fontsize=10)
    ax_j.set_title("J, the ordinary value", fontsize=10)
    sampled = any(r.get("history_J_k_se") is not None for r in rows)
    fig.suptitle(title or ("learning curves (bands: range over seeds" +
                           ("; hatched: J_k +- 1.96 standard errors of the sampled estimate)" if sampled else ")")))
    ax_j.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), borderaxespad=0)
    fig.tight_layout()
    return _save(fig, path)


def gap_vs_k(results, path=None, gamma: float | None = None, title: str | None = None, tol: float = 1e-6):
    r"""Success rate against k: the share of runs per (k, method) whose final J is within ``tol``
    (relative, at least absolute) of J*, with the counts written on the points; and, beside it, the
    mean final gap :math:`J^* - J` on a linear axis (no floor: a zero gap is drawn at zero)."""
    rows = [r for r in _rows(results) if r.get("J_star") is not None]
    fig = _figure((10, 4))
    ax, ax_gap = fig.subplots(1, 2)
    by = defaultdict(list)
    for r in rows:
        by[(r["method"], r["k"])].append(r)
    methods = sorted({m for m, _ in by})
    for mi, method in enumerate(methods):
        ks = sorted(k for m, k in by if m == method)
        color = f"C{mi}"
        rates, gaps = [], []
        for k in ks:
            rs = by[(method, k)]
            js = rs[0]["J_star"]
            ok = sum(r["final_J"] >= js - tol * max(1.0, abs(js)) for r in rs)
            rates.append(ok / len(rs))
            gaps.append(np.mean([js - r["final_J"] for r in rs]))
            ax.annotate(f"{ok}/{len(rs)}", (k, ok / len(rs)), textcoords="offset points", xytext=(0, 6 + 8 * mi),
                        ha="center", fontsize=7, color=color)
        ax.plot(ks, rates, "-o", color=color, label=f"{method}")
        ax_gap.plot(ks, gaps, "-o", color=color, label=f"{method}")
    all_k = sorted({k for _, k in by})
    for a in (ax, ax_gap):
        a.set_xticks(all_k)
        a.set_xlabel("k (window length)")
        a.legend(fontsize=8)
    ax.set_ylim(-0.05, 1.15)
    ax.set_ylabel("runs reaching J*")
    ax.set_title("success rate", fontsize=10)
    ax_gap.set_ylabel("mean J* - J (final)")
    ax_gap.set_title("mean gap to J*", fontsize=10)
    fig.suptitle(title or "reaching the best deterministic policy")
    fig.tight_layout()
    return _save(fig, path)


def policy_heatmap(policy, mdp=None, path=None, title: str | None = None, only_seen: bool = True):
    """One panel per agent: observations x actions, probabilities annotated; names from ``mdp``.

    With ``mdp`` and ``only_seen`` the rows are the observations the agent sees in some state
    (a walls bitmask has 32 ids, most of which never occur)."""
    thetas = [np.asarray(t) for t in (policy.theta if hasattr(policy, "theta") else policy)]
    n = len(thetas)
    rows_of = [np.arange(t.shape[0]) for t in thetas]
    if mdp is not None and only_seen:
        rows_of = [np.unique(o) for o in mdp.obs]
    thetas = [t[r] for t, r in zip(thetas, rows_of, strict=True)]
    fig = _figure((2.2 + 1.2 * max(t.shape[1] for t in thetas) * n, 1.2 + 0.35 * max(t.shape[0] for t in thetas)))
    axes = fig.subplots(1, n, squeeze=False)
    for i, (ax, t) in enumerate(zip(axes[0], thetas, strict=True)):
        ax.imshow(t, vmin=0, vmax=1, cmap="Blues", aspect="auto")
        all_names = mdp.obs_names[i] if mdp is not None and mdp.obs_names else None
        obs_names = [all_names[o] if all_names else str(o) for o in rows_of[i]]
        act_names = mdp.action_names[i] if mdp is not None and mdp.action_names else [str(a) for a in range(t.shape[1])]
        ax.set_xticks(range(t.shape[1]), act_names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(t.shape[0]), obs_names, fontsize=7)
        for o in range(t.shape[0]):
            for a in range(t.shape[1]):
                ax.text(a, o, f"{t[o, a]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if t[o, a] > 0.6 else "black")
        name = mdp.agent_names[i] if mdp is not None and mdp.agent_names else f"agent {i}"
        ax.set_title(name, fontsize=9)
    fig.suptitle(title or "policy", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def episode(env, policy, k: int, seed=None, horizon: int | None = None) -> list:
    """States of one k-coupled episode in ``env`` (the start state included), through
    :func:`marl_kstep.sampling.k_coupled_episode`."""
    base = getattr(env, "unwrapped", env)
    horizon = base.max_cycles if horizon is None else min(horizon, base.max_cycles)
    rng = np.random.default_rng(seed)
    agents = [KCoupledAgent(t, k, r) for t, r in zip(policy.theta, rng.spawn(len(policy.theta)), strict=True)]
    return k_coupled_episode(base, agents, horizon=horizon, reset_seed=seed, record_states=True).states


def _draw_grid(ax, model):
    img = np.empty((model.H, model.W, 3))
    img[:] = np.array(COLORS["floor"]) / 255
    img[model.wall] = np.array(COLORS["wall"]) / 255
    for d in model.decoys:
        img[divmod(d, model.W)] = np.array(COLORS["decoy"]) / 255
    img[divmod(model.goal, model.W)] = np.array(COLORS["goal"]) / 255
    ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _grid_model(env):
    model = getattr(getattr(env, "unwrapped", env), "model", None)
    if model is None or not hasattr(model, "goal"):
        raise ValueError("grid plots need a grid_coordination environment")
    return model


def grid_trajectory(env, policy, k: int, seed=None, path=None, horizon: int = 30, title: str | None = None):
    """The grid (walls, goal, decoys) and each agent's path over one k-coupled episode:
    one colour per agent, arrows along the moves, and step numbers where agents meet."""
    model = _grid_model(env)
    states = episode(env, policy, k, seed, horizon)
    fig = _figure((1 + 0.6 * model.W, 1 + 0.6 * model.H))
    ax = fig.subplots()
    _draw_grid(ax, model)
    n = len(states[0])
    for i in range(n):
        rc = np.array([divmod(s[i], model.W) for s in states], dtype=float)
        off = 0.12 * (i - (n - 1) / 2)
        ys, xs = rc[:, 0] + off, rc[:, 1] + off
        color = np.array(agent_color(i)) / 255
        ax.plot(xs, ys, "-", color=color, lw=2, alpha=0.8, label=f"agent {i}")
        ax.plot(xs[0], ys[0], "o", color=color, ms=9)
        for t in range(len(xs) - 1):
            if (xs[t], ys[t]) != (xs[t + 1], ys[t + 1]):
                ax.annotate("", xy=(xs[t + 1], ys[t + 1]), xytext=(xs[t], ys[t]),
                            arrowprops=dict(arrowstyle="->", color=color, lw=1.5))
    met = [t for t, s in enumerate(states) if len(set(s)) == 1 and n > 1]
    if met:
        r, c = divmod(states[met[0]][0], model.W)
        ax.text(c, r, f"met\nt={met[0]}", ha="center", va="center", fontsize=8, weight="bold")
    ax.set_title(title or f"one episode, k = {k}")
    ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.0, -0.02), ncol=n)
    fig.tight_layout()
    fig.trajectory = states
    return _save(fig, path)


def animate_grid(env, policy, k: int, seed=None, path=None, horizon: int = 30, fps: int = 3):
    """The episode of :func:`grid_trajectory` as an animated GIF (pillow writer)."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    model = _grid_model(env)
    states = episode(env, policy, k, seed, horizon)
    fig = _figure((1 + 0.6 * model.W, 1 + 0.6 * model.H))
    ax = fig.subplots()
    _draw_grid(ax, model)
    n = len(states[0])
    dots = [ax.plot([], [], "o", ms=14, color=np.array(agent_color(i)) / 255)[0] for i in range(n)]
    label = ax.set_title("")

    def frame(t):
        for i, d in enumerate(dots):
            r, c = divmod(states[t][i], model.W)
            off = 0.12 * (i - (n - 1) / 2)
            d.set_data([c + off], [r + off])
        label.set_text(f"k = {k}, t = {t}")
        return [*dots, label]

    anim = FuncAnimation(fig, frame, frames=len(states), blit=False)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        anim.save(path, writer=PillowWriter(fps=fps))
    fig.trajectory = states
    return fig
