"""The ``marl-kstep`` command line: run, plot, eval, benchmarks, demo, warmup, study.

    marl-kstep run SCENARIO [--k 1 2 3] [--method pgd mirror] [--iters N] [--step ETA]
                            [--seeds S ...] [--set key=value ...] [--out DIR] [--resume] [--quiet]
                            [--estimator exact|sampled] [--episodes N] [--escape [--escape-order M]]
    marl-kstep run --env MODULE:FACTORY --gamma G [--horizon H] [--episodes N] ...
    marl-kstep plot DIR
    marl-kstep eval DIR_OR_POLICY [--episodes N] [--k K] [--greedy] [--save-policies]
    marl-kstep benchmarks [--iters N] [--budget STEPS] [--cost-limit SECONDS] [--seeds S] [--files NAME ...]
    marl-kstep demo [--out DIR]
    marl-kstep study gap-vs-k --family F [--problems P] [--starts S] [--k ...] [--escape-order M ...] --out DIR

Results are written atomically after every finished run (temporary file + rename), so an
interrupted ``run`` leaves a readable ``results.json`` and ``--resume`` continues from it.
"""

from __future__ import annotations

import argparse
import ast
import csv
import importlib
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from . import policy_io
from ._version import __version__
from .demo import run_demo
from .experiments import (
    SCENARIOS,
    benchtable,
    format_aggregates,
    format_table,
    results_file,
    row_from_record,
    write_json_atomic,
    write_text_atomic,
)
from .experiments.records import results_from_records
from .experiments.run import check_sampled
from .experiments.runner import (
    EXECUTORS,
    FolderLockedError,
    RunSpec,
    RunStore,
    build_target,
    canonical_json,
    run_specs,
    shard_of,
)
from .experiments.scenarios import config_keys
from .figures import make_figures
from .interrupt import release_startup
from .optim import TrainOptions
from .policy import Policy
from .sampling.evaluate import evaluate as evaluate_policy
from .search import alternating_best_response, best_deterministic, count_deterministic
from .settings import current

__all__ = ["main", "SCENARIOS"]

SUMMARY_FIELDS = ["scenario", "k", "method", "seed", "estimator", "step", "iters", "final_J", "final_J_k", "J_star",
                  "gap", "iterations", "converged", "capped", "seconds", "spec_hash"]


class _Parser(argparse.ArgumentParser):
    """Errors exit with status 2 and one line naming the problem."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parse_sets(parser, scenario: str, pairs) -> dict:
    module = SCENARIOS[scenario][0]
    keys = config_keys(module)
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            parser.error(f"--set expects key=value, got {pair!r}; valid keys for {scenario}: {', '.join(keys)}")
        key, raw = pair.split("=", 1)
        if key not in keys:
            parser.error(f"unknown --set key {key!r} for {scenario}; valid keys: {', '.join(keys)}")
        if key in out:
            parser.error(f"--set {key} is given twice")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw.replace("\\n", "\n")
    return out


def _number(kind, minimum, strict: bool):
    """An argparse type: ``kind`` (int or float), finite, >= (or >) ``minimum``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if kind is float and not math.isfinite(value) or (value <= minimum if strict else value < minimum):
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a finite number'} "
                                             f"{'>' if strict else '>='} {minimum}, got {text!r}")
        return value
    return parse


_POS_INT, _NONNEG_INT = _number(int, 0, True), _number(int, 0, False)


def _level(text: str) -> float:
    value = _number(float, 0.0, True)(text)
    if not value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value
_POS_FLOAT, _NONNEG_FLOAT = _number(float, 0.0, True), _number(float, 0.0, False)


def _check_writable(parser, folder: Path, option: str = "--out") -> None:
    """Fail before any computation when ``folder`` cannot hold the results."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        parser.error(f"cannot write into {option} {str(folder)!r}: {getattr(exc, 'strerror', None) or exc}")


def _summary_csv(rows) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def _load_env(parser, spec: str, kwargs: dict | None = None):
    """``module:factory`` -> ``factory(**kwargs)``, a user's PettingZoo ParallelEnv."""
    if spec.count(":") != 1 or not all(spec.split(":")):
        parser.error(f"--env expects MODULE:FACTORY (e.g. mypkg.envs:make_env); got {spec!r}")
    mod_name, fn_name = spec.split(":")
    try:
        factory = getattr(importlib.import_module(mod_name), fn_name)
    except ImportError as exc:
        parser.error(f"--env: cannot import {mod_name!r} ({exc})")
    except AttributeError:
        parser.error(f"--env: module {mod_name!r} has no {fn_name!r}")
    except Exception as exc:  # the module itself fails on import (a syntax error, an exception at import time)
        parser.error(f"--env: importing {mod_name!r} raised {type(exc).__name__}: {exc}")
    try:
        env = factory(**(kwargs or {}))
    except Exception as exc:  # the user's factory failed: say so in one line
        parser.error(f"--env: {spec}() raised {type(exc).__name__}: {exc}")
    return env


def _optimum(parser, mdp, mode: str, folder: Path, target_hash: str, quiet: bool):
    """J* by ``mode`` (auto | exhaustive | abr | none), said before it starts, cached in the folder."""
    if mode == "none" or mdp is None:
        return None, "none"
    cache = folder / "optimum.json"
    try:
        cached = json.loads(cache.read_text()) if cache.exists() else {}
    except (OSError, ValueError):
        cached = {}
    key = f"{target_hash}:{mode}"
    entry = cached.get(key) if isinstance(cached, dict) else None
    if (isinstance(entry, dict) and isinstance(entry.get("J_star"), int | float) and math.isfinite(entry["J_star"])
            and entry.get("how") in ("exhaustive", "abr")):
        return float(entry["J_star"]), entry["how"]
    if not isinstance(cached, dict):
        cached = {}  # a damaged cache is rebuilt, never trusted
    count = count_deterministic(mdp)
    limit = current().max_policies
    if mode == "exhaustive" and count > limit:
        parser.error(f"--optimum exhaustive: {count:,} deterministic policies exceed Settings.max_policies="
                     f"{limit:,}; use --optimum abr or none")
    how = "exhaustive" if mode == "exhaustive" or (mode == "auto" and count <= limit) else "abr"
    if not quiet:
        what = (f"exhaustive search over {count:,} deterministic policies" if how == "exhaustive"
                else "alternating best response from the uniform policy (a lower bound on J*)")
        print(f"J*: {what} (--optimum none skips it) ...", flush=True)
    t = time.perf_counter()
    value = (best_deterministic(mdp)[0] if how == "exhaustive" else alternating_best_response(mdp)[0])
    cached[key] = {"J_star": value, "how": how, "policies": count, "seconds": time.perf_counter() - t}
    write_json_atomic(cache, cached)
    if not quiet:
        print(f"J* = {value:.6f} ({how}, {time.perf_counter() - t:.1f} s)", flush=True)
    return value, how


def _parse_shard(parser, text):
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
        shard_of([], (i, n))
    except ValueError:
        parser.error(f"--shard expects I/N with 0 <= I < N (e.g. $SLURM_ARRAY_TASK_ID/8); got {text!r}")
    return i, n


def _parse_env_args(parser, pairs) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            parser.error(f"--env-arg expects KEY=VALUE; got {pair!r}")
        key, raw = pair.split("=", 1)
        if key in out:
            parser.error(f"--env-arg {key} is given twice")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def _parse_encoders(parser, pairs) -> dict:
    """``--encoder AGENT=JSON``: one observation encoder per named agent, as data (see
    ``marl_kstep.sampling.encoders.encoder_from_spec``)."""
    out = {}
    for pair in pairs or []:
        agent, eq, raw = pair.partition("=")
        if not eq or not agent:
            parser.error(f"--encoder expects AGENT=SPEC, e.g. agent_0='{{\"kind\": \"box\", \"low\": [-1], "
                         f"\"high\": [1], \"bins\": [4]}}'; got {pair!r}")
        if agent in out:
            parser.error(f"--encoder {agent} is given twice")
        try:
            out[agent] = json.loads(raw)
        except ValueError as exc:
            parser.error(f"--encoder {agent}: the spec is not JSON ({exc})")
    return out


def _run_options(parser, args) -> dict:
    """Options that apply only with others are refused when given without them, never ignored."""
    if args.estimator == "exact" and (args.episodes is not None or args.horizon is not None):
        parser.error("--episodes and --horizon apply to --estimator sampled")
    if args.escape_order is not None and not args.escape:
        parser.error("--escape-order applies with --escape")
    if args.executor == "serial" and args.workers is not None:
        parser.error("--workers applies to --executor process or dask")
    if args.executor != "dask" and args.scheduler is not None:
        parser.error("--scheduler applies to --executor dask")
    opts = dict(iters=args.iters, step=args.step, tol=args.tol, escape=args.escape)
    if args.escape_order is not None:
        opts["escape_order"] = args.escape_order
    return opts


def _read_optima(folder: Path) -> dict:
    """J* cached in ``folder/optimum.json`` by target: ``{canonical target: J*}`` (exhaustive preferred)."""
    try:
        cached = json.loads((folder / "optimum.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    if isinstance(cached, dict):
        for key, entry in sorted(cached.items(), key=lambda kv: kv[0].endswith(":exhaustive")):
            target, _, _ = key.rpartition(":")
            if isinstance(entry, dict) and isinstance(entry.get("J_star"), int | float):
                out[target] = float(entry["J_star"])
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]


def cmd_run(parser, args) -> int:
    opts = _run_options(parser, args)
    if args.env is not None:
        if args.scenario is not None or args.set:
            parser.error("give either a SCENARIO (with --set) or --env MODULE:FACTORY, not both")
        if args.estimator == "exact":
            parser.error("--env runs on the sampled estimator (--estimator sampled); an environment has no model")
        kwargs = _parse_env_args(parser, args.env_arg)
        env = _load_env(parser, args.env, kwargs)  # fail early, in one line, on a bad module or factory
        model_gamma = getattr(getattr(getattr(env, "unwrapped", env), "model", None), "gamma", None)
        gamma = args.gamma if args.gamma is not None else model_gamma  # a scenario env carries its discount
        if gamma is None:
            parser.error("--env needs --gamma (the discount of the sampled objective)")
        if model_gamma is not None and gamma != model_gamma:
            parser.error(f"--gamma {gamma} differs from the discount of the env's own model ({model_gamma}); "
                         "leave --gamma out")
        name, target = args.env, {"env": args.env, "gamma": gamma, "kwargs": kwargs,
                                  "encoders": _parse_encoders(parser, args.encoder)}
    else:
        if args.scenario is None:
            parser.error("give a SCENARIO (one of " + ", ".join(sorted(SCENARIOS)) + ") or --env MODULE:FACTORY")
        if args.gamma is not None:
            parser.error("--gamma is for --env; set a scenario's discount with --set gamma=...")
        if args.env_arg or args.encoder:
            parser.error("--env-arg and --encoder are for --env; set a scenario's arguments with --set KEY=VALUE")
        name, target = args.scenario, {"scenario": args.scenario, "config": _parse_sets(parser, args.scenario,
                                                                                         args.set)}
    estimator = ({"kind": "exact"} if args.estimator == "exact" else
                 {"kind": "sampled", "episodes": 1000 if args.episodes is None else args.episodes,
                  "horizon": args.horizon})
    try:
        specs = [RunSpec(target, k, method=method, seed=seed, start="default" if seed is None else "random",
                         estimator=estimator, **opts)
                 for method in args.method for k in args.k for seed in (args.seeds or [None])]
    except (ValueError, TypeError) as exc:
        parser.error(f"{name}: {exc}")
    try:
        mdp, env, _ = build_target(specs[0].target)  # the model, built once and cached for this process
        for spec in {s.k: s for s in specs}.values():  # the sampled estimator's settings, checked before any run
            if spec.estimator.kind == "sampled":
                check_sampled(spec, mdp, env)
    except (ValueError, TypeError) as exc:
        parser.error(f"bad --set value for {name}: {exc}" if args.env is None else f"{name}: {exc}")
    shard = _parse_shard(parser, args.shard)
    out = Path(args.out)
    _check_writable(parser, out)
    store = RunStore(out)
    try:
        with store.writer():
            return _run_into(parser, args, name, specs, mdp, store, shard)
    except FolderLockedError as exc:
        parser.error(str(exc))


def _run_into(parser, args, name, specs, mdp, store, shard) -> int:
    out, results_path = store.folder, store.folder / "results.json"
    target = specs[0].target.to_dict()
    try:
        scan = store.scan()
    except ValueError as exc:
        parser.error(str(exc))
    if scan.records and not args.resume and shard is None:
        parser.error(f"{store.path} already holds runs; add --resume to continue them, or choose another --out")
    for note in scan.notes(store.path):
        print(note, file=sys.stderr)
    targets = {canonical_json(r["spec"]["target"]) for r in scan.records}
    if targets and targets != {canonical_json(target)}:
        parser.error(f"{out} holds runs of another problem or config; use another --out")
    quiet = args.quiet or not sys.stderr.isatty()
    j_star, how = _optimum(parser, mdp, args.optimum, out, canonical_json(target), args.quiet)
    done = {r.spec_hash for r in scan.records}
    todo = specs if shard is None else shard_of(specs, shard)
    if not args.quiet:
        for s in todo:
            if s.hash in done:
                print(f"skipping {s.label()}: already in {store.path}")
    bar = tqdm(total=sum(s.hash not in done for s in todo), disable=quiet, desc=name, leave=False)

    def write_views():
        rows = [row_from_record(r, name, j_star) for r in store.records()]
        extra = {} if mdp is not None else {"gamma": target.get("gamma")}
        write_json_atomic(results_path, results_file(name, target.get("config", target), mdp, j_star, rows,
                                                     J_star_how=how, target=target, **extra))
        write_text_atomic(out / "summary.csv", _summary_csv(rows))
        return rows

    def progress(rec, finished, total, eta):
        write_views()
        bar.update(1)
        bar.set_postfix(ETA=f"{eta:.0f}s", refresh=True)

    def run_progress(spec, it, iters, J_k, elapsed):  # a long single run: where it is
        eta = elapsed / max(it, 1) * (iters - it)
        bar.set_postfix_str(f"{spec.label()}: iteration {it}/{iters}, J_k {J_k:.6g}, ETA {eta:.0f}s", refresh=True)

    try:
        run_specs(specs, out, resume=True, executor=args.executor, workers=args.workers, scheduler=args.scheduler,
                  shard=shard, progress=progress, run_progress=None if quiet else run_progress)
    except KeyboardInterrupt:
        bar.close()
        rows = write_views() if store.exists() else []
        print(f"\ninterrupted: {len(rows)} finished runs are saved in {store.path}", file=sys.stderr)
        return 130
    except Exception as exc:  # e.g. an unreachable scheduler, a model over a budget, a user env's step() failing
        bar.close()
        if os.environ.get("MARL_KSTEP_DEBUG"):
            raise
        n = len(store.records())
        parser.error(f"{name}: a run failed with {type(exc).__name__}: {exc} ({n} finished runs are kept in "
                     f"{store.path}; MARL_KSTEP_DEBUG=1 shows the traceback)")
    bar.close()
    rows = write_views()
    print(format_table(rows))
    if args.seeds and len(args.seeds) > 1:
        print(format_aggregates(rows))
    print(f"wrote {store.path}, {results_path} and {out / 'summary.csv'}")
    return 0


def _scan_folder(parser, folder: Path, hint: str):
    """The verified records of ``folder/runs.jsonl`` (a damaged record is one line naming its file and
    line), with the notes on duplicates and torn lines on stderr."""
    store = RunStore(folder)
    if not store.exists():
        parser.error(f"{store.path} does not exist; {hint}")
    try:
        scan = store.scan()
    except ValueError as exc:
        parser.error(str(exc))
    for note in scan.notes(store.path):
        print(note, file=sys.stderr)
    return scan


def cmd_plot(parser, args) -> int:
    folder = Path(args.dir)
    scan = _scan_folder(parser, folder, f"run 'marl-kstep run SCENARIO --out {args.dir}' (or run_specs into "
                                        "that folder) first")
    cached = _read_optima(folder)
    groups = results_from_records(scan.records, optima=cached)
    written = []
    for results in groups:
        fig_dir = folder / "figures" if len(groups) == 1 else folder / "figures" / _slug(results["scenario"])
        written += make_figures(results, fig_dir, grid_gif=not args.no_gif)
    print(f"wrote {len(written)} figures into {folder / 'figures'}")
    return 0


def _eval_items(parser, path: Path, greedy: bool):
    """``(label, spec dict, policy)`` of a results folder's records, or of one policy file."""
    if path.is_dir():
        scan = _scan_folder(parser, path, "give a results folder or a policy file")
        return [(rec.spec_hash, rec.spec, rec.policy(greedy=greedy)) for rec in scan.records]
    try:
        doc = policy_io.read_document(path)
        spec = (doc.get("metadata") or {}).get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("target"), dict):
            raise ValueError("it names no problem (no run spec in its metadata): evaluate it in Python with "
                             "mk.evaluate_policy(env_or_model, mk.Policy.load(path, model))")
        mdp, env, _ = build_target(spec["target"])
        policy = Policy.from_dict(doc, mdp if mdp is not None else None, source=str(path))
    except (OSError, ValueError) as exc:
        parser.error(f"{path}: {exc}")
    if greedy:
        policy = policy.greedy()
    return [(path.name, spec, policy)]


def cmd_eval(parser, args) -> int:
    path = Path(args.path)
    if not path.exists():
        parser.error(f"{path} does not exist: give a results folder (runs.jsonl) or a policy file")
    items = _eval_items(parser, path, args.greedy)
    if args.save_policies and not path.is_dir():
        parser.error("--save-policies applies to a results folder")
    head = (f"{'run':<22} {'k':>2} {'method':<7} {'seed':>5} {'J (rollouts)':>13} {f'{args.level:.0%} interval':>25} "
            f"{'n':>7} {'exact J':>11}")
    print(head + "\n" + "-" * len(head))
    for label, spec, policy in items:
        mdp, env, _ = build_target(spec["target"])
        try:
            ev = evaluate_policy(mdp if mdp is not None else env, policy, k=args.k, episodes=args.episodes,
                                 seed=args.seed, level=args.level,
                                 gamma=None if mdp is not None else spec["target"].get("gamma"))
        except ValueError as exc:
            parser.error(f"{label}: {exc}")
        exact = "—" if ev.exact is None else f"{ev.exact:.6f}"
        seed = "—" if spec.get("seed") is None else spec["seed"]
        print(f"{label:<22} {spec['k']:>2} {spec['options']['method']:<7} {seed:>5} {ev.J:>13.6f} "
              f"{f'[{ev.ci[0]:.6f}, {ev.ci[1]:.6f}]':>25} {ev.n:>7} {exact:>11}", flush=True)
    if args.save_policies:
        folder = path / "policies"
        for rec in RunStore(path).records():
            rec.save_policy(folder / f"{rec.spec_hash}.json", greedy=args.greedy)
        print(f"wrote {len(items)} policy files into {folder} (mk.Policy.load, or marl-kstep eval FILE)")
    what = "greedy rounding of each policy" if args.greedy else "policy as returned"
    print(f"(J of the {what}: {args.episodes} k-coupled episodes with k = {args.k}, seed {args.seed}; the interval "
          "adds the truncation bound where the model gives one)")
    return 0


def _cmd_memory_table(parser, args, data: Path) -> int:
    """``benchmarks --memory Q ...``: the finite-state controller table (docs/memory-table.md)."""
    from .experiments import memtable

    folder = Path(args.out).parent
    if (folder / "runs.jsonl").exists() and not (args.resume or args.no_run):
        parser.error(f"{folder / 'runs.jsonl'} already holds runs; add --resume to continue the table, "
                     "or choose another --out")
    json_path = Path(args.out).with_suffix(".json") if args.json == _BENCH_JSON else Path(args.json)
    _check_writable(parser, folder)
    _check_writable(parser, json_path.parent, "--json")

    def progress(done, total, eta, rec):
        if not args.quiet:
            spec = rec["spec"]
            t = spec["target"]
            esc = " esc" if spec["options"].get("escape") else ""
            print(f"[{done}/{total}, ETA {eta:.0f} s] {Path(t['dpomdp']).name:<28} Q={t.get('memory', [1])[0]} "
                  f"k={spec['k']}{esc:<4} {spec['start'] if spec['seed'] is None else 'seed ' + str(spec['seed']):<8} "
                  f"J = {rec['result']['final_J']:.4f}  {rec['result']['seconds']:.1f} s", flush=True)

    try:
        out = memtable.write_memory_report(data, args.out, folder=folder, json_path=json_path,
                                           resume=args.resume or args.no_run,
                                           progress=progress, files=args.files, nodes=args.memory,
                                           seeds=tuple(range(args.seeds)), iters=args.iters, step=args.step,
                                           max_path_steps=args.budget, executor=args.executor, workers=args.workers,
                                           run=not args.no_run)
    except KeyboardInterrupt:
        n = len(RunStore(folder).records())
        print(f"\ninterrupted: {n} finished runs are saved in {folder / 'runs.jsonl'}; --resume continues",
              file=sys.stderr)
        return 130
    except ValueError as exc:
        if os.environ.get("MARL_KSTEP_DEBUG"):
            raise
        parser.error(f"benchmarks --memory: {exc}")
    print(f"wrote {out}")
    if args.write_docs:
        docs = Path(__file__).resolve().parents[1] / "docs" / "memory-table.md"
        write_text_atomic(docs, Path(out).read_text())
        print(f"wrote {docs}")
    return 0


_BENCH_JSON = "results/benchmarks/dpomdp_table.json"


def cmd_benchmarks(parser, args) -> int:
    data = Path(args.data)
    if not data.is_dir():
        parser.error(f"benchmark folder {data} is absent (set --data or MARL_KSTEP_DPOMDP_DIR)")
    if args.memory is not None:
        return _cmd_memory_table(parser, args, data)
    if args.files:
        known = {p.name for p in data.glob("*.dpomdp*")}
        unknown = [f for f in args.files if f not in known]
        if unknown:
            parser.error(f"--files: no such file(s) in {data}: {', '.join(unknown)}; "
                         f"available: {', '.join(sorted(known))}")

    folder = Path(args.out).parent
    if (folder / "runs.jsonl").exists() and not (args.resume or args.no_run):
        parser.error(f"{folder / 'runs.jsonl'} already holds runs; add --resume to continue the table, "
                     "or choose another --out")

    def progress(done, total, eta, rec):
        if not args.quiet:
            spec = rec["spec"]
            name = Path(spec["target"]["dpomdp"]).name
            start = spec["start"] if spec["seed"] is None else f"seed {spec['seed']}"
            method = spec["options"]["method"]
            print(f"[{done}/{total}, ETA {eta:.0f} s] {name:<32} {method:<6} k={spec['k']} {start:<8} "
                  f"J = {rec['result']['final_J']:.4f}  {rec['result']['seconds']:.1f} s", flush=True)

    docs = None
    if args.write_docs:
        docs = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
        if not docs.parent.is_dir():
            parser.error(f"--write-docs: no docs/ folder beside the package ({docs.parent}); "
                         "it regenerates the checkout's docs/benchmarks.md")
    _check_writable(parser, Path(args.out).parent)
    _check_writable(parser, Path(args.json).parent, "--json")  # checked before the table, not after it
    try:
        out = benchtable.write_report(data, args.out, json_path=args.json, iters=args.iters, step=args.step,
                                      budget=args.budget, seeds=args.seeds, files=args.files, progress=progress,
                                      folder=folder, resume=args.resume or args.no_run, executor=args.executor,
                                      workers=args.workers, run=not args.no_run, cost_limit=args.cost_limit)
    except KeyboardInterrupt:
        n = len(RunStore(folder).records())
        print(f"\ninterrupted: {n} finished runs are saved in {folder / 'runs.jsonl'}; --resume continues",
              file=sys.stderr)
        return 130
    except ValueError as exc:  # a damaged .dpomdp file, a damaged record, a problem over a budget
        if os.environ.get("MARL_KSTEP_DEBUG"):
            raise
        parser.error(f"benchmarks: {exc}")
    print(f"wrote {out}")
    if docs is not None:
        write_text_atomic(docs, Path(out).read_text())
        print(f"wrote {docs}")
    return 0


def cmd_demo(parser, args) -> int:
    run_demo(Path(args.out))
    return 0


def cmd_warmup(parser, args) -> int:
    from .warmup import warmup

    t0 = time.perf_counter()
    warmup()
    print(f"compiled kernels are cached; warm-up took {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_study(parser, args) -> int:
    """``study gap-vs-k``: the gap to J* against k on a family of random problems (experiments/study.py)."""
    from .experiments import study
    from .model.random_models import FAMILIES

    model_args = {}
    for pair in args.set or []:
        key, eq, raw = pair.partition("=")
        if not eq or key not in FAMILIES[args.family] or key == "family":
            parser.error(f"--set expects KEY=VALUE with KEY one of {', '.join(FAMILIES[args.family])}; got {pair!r}")
        try:
            model_args[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            parser.error(f"--set {key}: {raw!r} is not a number")
    out = Path(args.out)
    _check_writable(parser, out)
    if RunStore(out).exists() and not args.resume:
        parser.error(f"{RunStore(out).path} already holds runs; add --resume to continue them, or choose another --out")
    try:
        specs = study.study_specs(args.family, args.problems, args.starts, args.k, escape_orders=args.escape_order,
                                  model_args=model_args, method=args.method, step=args.step, iters=args.iters)
    except ValueError as exc:
        parser.error(str(exc))
    done = RunStore(out).hashes()
    bar = tqdm(total=sum(s.hash not in done for s in specs), disable=args.quiet or not sys.stderr.isatty(),
               desc=f"study {args.family}", leave=False)
    try:
        summary = study.gap_vs_k(args.family, problems=args.problems, starts=args.starts, ks=args.k,
                                 escape_orders=args.escape_order, out=out, model_args=model_args, method=args.method,
                                 step=args.step, iters=args.iters, resume=True, executor=args.executor,
                                 workers=args.workers, scheduler=args.scheduler, success_tol=args.success_tol,
                                 progress=lambda *_: bar.update(1))
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted: {len(RunStore(out).records())} finished runs are saved in {RunStore(out).path}; "
              "--resume continues", file=sys.stderr)
        return 130
    bar.close()
    table = study.format_summary(summary, f"# gap vs k: {args.family} {canonical_json(summary['model_args'])}")
    write_text_atomic(out / "study.md", table + "\n")
    print(table)
    print(f"wrote {out / 'runs.jsonl'}, {out / 'study.json'} and {out / 'study.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:

    p = _Parser(prog="marl-kstep", description="Exact k-step policy gradients for cooperative multi-agent MDPs.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--version", action="version", version=f"marl-kstep {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="train every (k, method, seed) on a scenario and save the results",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("scenario", nargs="?", choices=sorted(SCENARIOS), default=None,
                   help="scenario to train on (or --env)")
    r.add_argument("--estimator", choices=["exact", "sampled"], default="exact",
                   help="exact k-step gradients (scenarios) or sampled ones from k-coupled episodes (SPEC §8)")
    r.add_argument("--episodes", type=_POS_INT, default=None, help="episodes per sampled estimate (default 1000)")
    r.add_argument("--horizon", type=_POS_INT, default=None,
                   help="steps per sampled episode (default: from gamma for a scenario, max_cycles for --env)")
    r.add_argument("--env", default=None, metavar="MODULE:FACTORY",
                   help="your own PettingZoo ParallelEnv: FACTORY() from MODULE (sampled estimator; needs --gamma)")
    r.add_argument("--gamma", type=_NONNEG_FLOAT, default=None, help="discount for --env")
    r.add_argument("--env-arg", nargs="*", metavar="KEY=VALUE", default=None,
                   help="keyword arguments of the --env factory (Python literals, else strings)")
    r.add_argument("--encoder", nargs="*", metavar="AGENT=SPEC", default=None,
                   help='observation encoder of an --env agent as JSON: {"kind": "box", "low": [...], "high": [...], '
                        '"bins": [...]} or {"kind": "index", "n": N} (other agents: their Discrete spaces)')
    r.add_argument("--k", type=_POS_INT, nargs="+", default=[1, 2, 3], help="window lengths")
    r.add_argument("--method", nargs="+", choices=["pgd", "mirror"], default=["pgd", "mirror"], help="update rules")
    defaults = TrainOptions()  # the library's one set of defaults
    r.add_argument("--iters", type=_NONNEG_INT, default=defaults.iters, help="iteration cap per run")
    r.add_argument("--step", type=_POS_FLOAT, default=defaults.step, help="step size eta")
    r.add_argument("--tol", type=_NONNEG_FLOAT, default=defaults.tol,
                   help="stop when no entry moves by more than this")
    r.add_argument("--seeds", type=_NONNEG_INT, nargs="*", default=None,
                   help="random Dirichlet starts; without seeds, the scenario's trap start")
    r.add_argument("--escape", action="store_true",
                   help="certify where ascent stops and jump to the best improving change of up to "
                        "--escape-order slots (SPEC §9; needs a model)")
    r.add_argument("--escape-order", type=_POS_INT, default=None, metavar="M",
                   help=f"largest number of slots an --escape jump changes together (default {defaults.escape_order})")
    r.add_argument("--set", nargs="*", metavar="KEY=VALUE", default=None,
                   help="scenario config (see each scenario's parallel_env), e.g. --set gamma=0.95")
    r.add_argument("--out", default="results/run", help="output folder")
    r.add_argument("--resume", action="store_true",
                   help="add to OUT/runs.jsonl, skipping runs whose full spec is already there")
    r.add_argument("--executor", choices=EXECUTORS, default="serial",
                   help="serial, local worker processes, or Dask (a local cluster, or --scheduler)")
    r.add_argument("--workers", type=_POS_INT, default=None, help="processes for --executor process/dask "
                   "(default: the number of cores)")
    r.add_argument("--scheduler", default=None, metavar="ADDRESS", help="an existing Dask scheduler (--executor dask)")
    r.add_argument("--shard", default=None, metavar="I/N",
                   help="run only the I-th of N slices of the runs (0 <= I < N; e.g. a SLURM array job: "
                        "--shard $SLURM_ARRAY_TASK_ID/N); shards append to the same --out")
    r.add_argument("--optimum", choices=["auto", "exhaustive", "abr", "none"], default="auto",
                   help="J*: exhaustive search (auto: when the count fits Settings.max_policies), alternating best "
                        "response (a lower bound), or none")
    r.add_argument("--quiet", action="store_true", help="no progress bars or skip messages")
    r.set_defaults(func=cmd_run)

    pl = sub.add_parser("plot", help="write the figures of a results folder into DIR/figures",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pl.add_argument("dir", help="folder holding runs.jsonl (from marl-kstep run or run_specs)")
    pl.add_argument("--no-gif", action="store_true", help="skip the animated grid GIFs")
    pl.set_defaults(func=cmd_plot)

    b = sub.add_parser("benchmarks", help="the Dec-POMDP benchmark table (docs/benchmarks.md)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--data", default=str(benchtable.DEFAULT_DATA_DIR), help="folder of .dpomdp files")
    b.add_argument("--iters", type=_NONNEG_INT, default=1000, help="iteration cap per run")
    b.add_argument("--step", type=_POS_FLOAT, default=0.05, help="step size for pgd and mirror")
    b.add_argument("--budget", type=_POS_INT, default=benchtable.DEFAULT_BUDGET,
                   help="path steps per pass up to which a cell is computed without measuring its cost")
    b.add_argument("--cost-limit", type=_NONNEG_FLOAT, default=benchtable.COST_LIMIT, metavar="SECONDS",
                   help="a cell over the path budget is computed when its measured cost is under this many seconds "
                        "per run (seconds per exact call times the mean iterations at the largest computed k)")
    b.add_argument("--seeds", type=_POS_INT, default=5, help="number of random starts")
    b.add_argument("--files", nargs="*", default=None, help="only these file names")
    b.add_argument("--out", default="results/benchmarks/benchmarks.md", help="Markdown report")
    b.add_argument("--json", default=_BENCH_JSON, help="raw numbers")
    b.add_argument("--resume", action="store_true", help="continue the table in OUT's folder (runs.jsonl)")
    b.add_argument("--executor", choices=EXECUTORS, default="serial", help="serial, process or dask")
    b.add_argument("--workers", type=_POS_INT, default=None, help="processes for --executor process/dask")
    b.add_argument("--write-docs", action="store_true",
                   help="also regenerate the checkout's docs/benchmarks.md (next to the package)")
    b.add_argument("--quiet", action="store_true", help="no per-cell progress lines")
    b.add_argument("--no-run", action="store_true",
                   help="make no run: rebuild the report from the records in OUT's folder (a cell without them "
                        "is 'not run')")
    b.add_argument("--memory", type=_POS_INT, nargs="+", default=None, metavar="Q",
                   help="the finite-state controller table instead (docs/memory-table.md): these node counts per "
                        "agent on the six problems of issue 24; raw numbers in OUT.json unless --json is given; "
                        "--write-docs writes docs/memory-table.md")
    b.set_defaults(func=cmd_benchmarks)

    e = sub.add_parser("eval", help="roll stored policies out: J with a confidence interval",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("path", help="a results folder (every record's policy) or a policy file saved from a record")
    e.add_argument("--episodes", type=_POS_INT, default=1000, help="episodes per policy")
    e.add_argument("--k", type=_POS_INT, default=1, help="window of the k-coupled execution (1: ordinary)")
    e.add_argument("--seed", type=_NONNEG_INT, default=0, help="seed of the rollouts")
    e.add_argument("--level", type=_level, default=0.95, help="coverage of the interval")
    e.add_argument("--greedy", action="store_true", help="evaluate the greedy rounding of each policy")
    e.add_argument("--save-policies", action="store_true",
                   help="also write every record's policy as DIR/policies/SPEC_HASH.json")
    e.set_defaults(func=cmd_eval)

    st = sub.add_parser("study", help="measured claims over families of random problems (docs/paper-claim.md)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    st_sub = st.add_subparsers(dest="study", required=True, parser_class=_Parser)
    g = st_sub.add_parser("gap-vs-k", help="the gap to the best deterministic policy against k, with intervals",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g.add_argument("--family", required=True, choices=["aggregation", "decentralized", "dec-pomdp"],
                   help="family of mk.random_model")
    g.add_argument("--problems", type=_POS_INT, default=30, help="random problems (model seeds 0..P-1)")
    g.add_argument("--starts", type=_POS_INT, default=10, help="random starts per problem (seeds 0..S-1)")
    g.add_argument("--k", type=_POS_INT, nargs="+", default=[1, 2, 3, 4, 6, 8], help="window lengths")
    g.add_argument("--escape-order", type=_POS_INT, nargs="*", default=[], metavar="M",
                   help="also runs with certified escapes of these orders")
    g.add_argument("--set", nargs="*", metavar="KEY=VALUE", default=None,
                   help="random_model arguments, e.g. --set n_states=10 n_obs=4")
    g.add_argument("--method", choices=["pgd", "mirror"], default="pgd", help="update rule")
    g.add_argument("--step", type=_POS_FLOAT, default=0.05, help="step size eta")
    g.add_argument("--iters", type=_NONNEG_INT, default=1000, help="iteration cap per run")
    g.add_argument("--success-tol", type=_NONNEG_FLOAT, default=1e-3, help="success: normalised gap <= this")
    g.add_argument("--out", required=True, help="results folder (runs.jsonl, optimum.json, study.json, study.md)")
    g.add_argument("--resume", action="store_true", help="add to OUT/runs.jsonl, skipping finished runs")
    g.add_argument("--executor", choices=EXECUTORS, default="serial", help="serial, process or dask")
    g.add_argument("--workers", type=_POS_INT, default=None, help="processes for --executor process/dask")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS", help="an existing Dask scheduler (--executor dask)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_study)

    d = sub.add_parser("demo", help="the main job: two-state trap and number matching, tables and figures",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("--out", default="results/demo", help="output folder (figures in OUT/figures)")
    d.set_defaults(func=cmd_demo)

    w = sub.add_parser("warmup", help="compile every kernel ahead, once per machine (CI, clusters)")
    w.set_defaults(func=cmd_warmup)
    return p


def main(argv=None) -> int:
    release_startup()  # loaded: Ctrl-C is a KeyboardInterrupt again, handled per command
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = {a.dest: a for a in parser._actions if isinstance(a, argparse._SubParsersAction)}["command"]
    try:
        return args.func(sub.choices[args.command], args)
    except KeyboardInterrupt:
        print(f"\nmarl-kstep {args.command}: interrupted (finished results are saved)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
