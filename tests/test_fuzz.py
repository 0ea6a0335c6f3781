"""Property-based fuzzing of every public entry point (issue 11).

Each case starts from a valid call and replaces one argument with a malformed value drawn
by hypothesis (wrong types, NaN and infinities, negative and huge numbers, wrong shapes,
strings, complex numbers, ragged lists). The call must either succeed (the value happened to
be valid) or raise ``ValueError`` whose message names the parameter; any other exception,
a crash or a hang is a defect.

CI runs ``FUZZ_EXAMPLES`` examples per entry point (default 150); a long run:
``MARL_KSTEP_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz.py -q``.
"""

from __future__ import annotations

import functools
import os
import signal
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import marl_kstep as mk
from marl_kstep.envs import aggregated_chain, grid_coordination, number_matching, two_state

FUZZ_EXAMPLES = int(os.environ.get("MARL_KSTEP_FUZZ_EXAMPLES", "150"))
SECONDS_PER_CASE = 20
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=not os.environ.get("MARL_KSTEP_FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])

SCALARS = st.one_of(
    st.none(), st.booleans(), st.text(max_size=5), st.just(float("nan")), st.just(float("inf")),
    st.just(-float("inf")), st.integers(-10, 10), st.floats(-1e3, 1e3), st.just(10**30), st.just(-(10**30)),
    st.just(1e300), st.just(2.5), st.complex_numbers(max_magnitude=10, allow_nan=False), st.just(object()),
)
ARRAYS = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6),
    st.lists(st.lists(st.floats(-2, 2), min_size=0, max_size=3), max_size=3),  # ragged
    st.builds(lambda shape, v: np.full(shape, v), st.lists(st.integers(0, 3), max_size=4),
              st.sampled_from([0.5, -1.0, np.nan, np.inf, 1.0, 0.0, 2])),
    st.just(np.array(["a", "b"])), st.just(np.array([1 + 1j, 0])), st.just({}),
)
BAD = st.one_of(SCALARS, ARRAYS)


@contextmanager
def time_limit(seconds):
    """A hang is a defect: SIGALRM turns it into a failure."""
    def alarm(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def check(call, names):
    """Run ``call``: success, or a ValueError naming one of ``names``."""
    with time_limit(SECONDS_PER_CASE), warnings.catch_warnings():
        warnings.simplefilter("ignore", mk.LumpingSkippedWarning)
        try:
            call()
        except ValueError as exc:
            msg = str(exc)
            assert any(n in msg for n in names), f"ValueError does not name {names}: {msg!r}"


# ------------------------------------------------------------------ valid baselines
def dense_kwargs():
    P = np.zeros((3, 2, 3))
    P[:, 0, 0] = 1.0
    P[:, 1, :] = 1 / 3
    return dict(P=P, R=np.arange(6.0).reshape(3, 2), obs=[np.array([0, 1, 1])], n_actions=[2],
                mu=np.array([1.0, 0.0, 0.0]), gamma=0.9, n_obs=[2])


MDP = number_matching.build_mdp()
POLICY = mk.Policy.random(MDP, seed=0)


def mutate(kwargs, key, value):
    out = dict(kwargs)
    out[key] = value
    return out


# ------------------------------------------------------------------ entry points
@FUZZ
@given(key=st.sampled_from(["P", "R", "obs", "n_actions", "mu", "gamma", "n_obs"]), value=BAD)
def test_fuzz_from_dense(key, value):
    check(lambda: mk.JointMDP.from_dense(**mutate(dense_kwargs(), key, value)), [key])


@FUZZ
@given(key=st.sampled_from(["indptr", "indices", "probs", "R", "obs", "n_actions", "mu", "gamma"]), value=BAD)
def test_fuzz_from_sparse(key, value):
    m = mk.JointMDP.from_dense(**dense_kwargs())
    kw = dict(indptr=m.indptr, indices=m.indices, probs=m.probs, R=m.rewards, obs=m.obs, n_actions=m.n_actions,
              mu=m.mu, gamma=m.gamma)
    names = [key, "P[", "successor"] if key in ("indptr", "indices", "probs") else [key]
    check(lambda: mk.JointMDP.from_sparse(**mutate(kw, key, value)), names)


@FUZZ
@given(which=st.sampled_from(["from_arrays", "deterministic", "random"]), slot=st.integers(0, 1), value=BAD)
def test_fuzz_policy_constructors(which, slot, value):
    if which == "from_arrays":
        arrays = [t.copy() for t in POLICY.theta]
        arrays[slot] = value
        check(lambda: mk.Policy.from_arrays(MDP, arrays), ["arrays", "theta"])
    elif which == "deterministic":
        tables = [[0, 1], [1, 0]]
        tables[slot] = value
        check(lambda: mk.Policy.deterministic(MDP, tables), ["tables"])
    else:
        key = ["seed", "concentration"][slot]
        check(lambda: mk.Policy.random(MDP, **{key: value}), [key])


@FUZZ
@given(which=st.sampled_from(["certify", "slot_visitation", "near_uniform"]),
       key=st.sampled_from(["mdp", "policy", "order", "tol", "max_deviations", "batch", "seed", "scale"]), value=BAD)
def test_fuzz_certificates(which, key, value):
    if which == "near_uniform":
        key = key if key in ("seed", "scale") else "scale"
        check(lambda: mk.Policy.near_uniform(MDP, **{key: value}), [key])
        return
    if which == "slot_visitation":
        key = key if key in ("mdp", "policy") else "policy"
        kw = dict(mdp=MDP, policy=POLICY)
        kw[key] = value
        check(lambda: mk.slot_visitation(**kw), [key, "theta"])
        return
    key = key if key not in ("seed", "scale") else "order"
    kw = dict(mdp=MDP, policy=POLICY, order=2, tol=1e-9, max_deviations=10**4, batch=64)
    kw[key] = value
    check(lambda: mk.certify(**kw), [key, "theta"])


@FUZZ
@given(key=st.sampled_from(["mdp", "policy", "k", "max_path_steps", "lump"]),
       fn=st.sampled_from(["value", "value_and_grad", "value_vector", "ExactKStep"]), value=BAD)
def test_fuzz_exact_estimator(key, fn, value):
    kw = dict(mdp=MDP, policy=POLICY, k=2, max_path_steps=10**6, lump=True)
    kw[key] = value
    if fn == "ExactKStep":
        check(lambda: mk.ExactKStep(kw["mdp"], kw["k"], lump=kw["lump"], max_path_steps=kw["max_path_steps"]),
              [key])
    else:
        check(lambda: getattr(mk, fn)(**kw), [key])


@FUZZ
@given(key=st.sampled_from(["k", "method", "step", "iters", "tol", "init", "seed", "normalize_step", "escape",
                            "escape_order", "max_escapes"]), value=BAD)
def test_fuzz_train(key, value):
    kw = dict(k=2, method="pgd", step=0.05, iters=3, tol=1e-10, init=None, seed=None, normalize_step=False,
              escape=True, escape_order=2, max_escapes=5)
    if key == "iters" and isinstance(value, int) and not isinstance(value, bool) and value > 1000:
        value = 1000  # a large cap is a valid request, not a hang
    kw[key] = value
    check(lambda: mk.train(MDP, **kw), [key])


@FUZZ
@given(which=st.sampled_from(["best_deterministic", "best_response", "alternating_best_response"]),
       key=st.sampled_from(["mdp", "policy", "agent", "max_policies", "rounds", "init"]), value=BAD)
def test_fuzz_search(which, key, value):
    if which == "best_deterministic":
        key = key if key in ("mdp", "max_policies") else "max_policies"
        kw = dict(mdp=MDP, max_policies=10**6)
    elif which == "best_response":
        key = key if key in ("mdp", "policy", "agent", "max_policies") else "agent"
        kw = dict(mdp=MDP, policy=POLICY, agent=0, max_policies=10**6)
    else:
        key = key if key in ("mdp", "init", "rounds", "max_policies") else "rounds"
        kw = dict(mdp=MDP, init=None, rounds=3, max_policies=10**6)
    kw[key] = value
    check(lambda: getattr(mk, which)(**kw), [key])


@FUZZ
@given(which=st.sampled_from(["project_simplex", "pgd_step", "mirror_step"]),
       key=st.sampled_from(["v", "theta", "grad", "eta"]), value=BAD)
def test_fuzz_simplex_steps(which, key, value):
    if which == "project_simplex":
        check(lambda: mk.project_simplex(value), ["v"])
        return
    key = "theta" if key == "v" else key
    kw = dict(theta=np.array([[0.5, 0.5], [0.2, 0.8]]), grad=np.array([[1.0, -1.0], [0.0, 2.0]]), eta=0.1)
    kw[key] = value
    check(lambda: getattr(mk, which)(**kw), [key])


SCENARIO_KEYS = {
    number_matching: ["n_agents", "n_numbers", "move_cost", "gamma", "observation", "start", "max_cycles",
                      "render_mode"],
    grid_coordination: ["layout", "n_agents", "observation", "gamma", "goal", "decoys", "starts", "goal_reward",
                        "decoy_reward", "move_cost", "slip", "collisions", "max_cycles", "render_mode"],
    two_state: ["small_reward", "gamma", "max_cycles", "render_mode"],
    aggregated_chain: ["length", "small_reward", "gamma", "max_cycles", "render_mode"],
}


@FUZZ
@given(module=st.sampled_from(list(SCENARIO_KEYS)), data=st.data(), value=BAD)
def test_fuzz_scenarios(module, data, value):
    key = data.draw(st.sampled_from(SCENARIO_KEYS[module]))

    def build():
        env = module.parallel_env(**{key: value})
        env.reset(seed=0)
        env.step({a: 0 for a in env.possible_agents})
        env.render()

    check(build, [key])


@functools.cache
def warm_sampled():
    """Compile the sampled estimator's kernels once, outside the time limit (a cold compile takes ~25 s)."""
    for target in (MDP, two_state.parallel_env()):
        est = mk.SampledKStep(target, 2, episodes=2, horizon=5, seed=0)
        est.estimate(mk.Policy.uniform(est))
    return True


@FUZZ
@given(key=st.sampled_from(["target", "k", "gamma", "episodes", "horizon", "tail", "baseline", "seed", "encoders",
                            "team_reward", "path", "floor", "policy"]),
       on_env=st.booleans(), value=BAD)
def test_fuzz_sampled_estimator(key, on_env, value):
    """SampledKStep on a model (fast path) or on a scenario env (batched path), one argument malformed."""
    warm_sampled()
    if key in ("episodes", "horizon") and isinstance(value, int) and not isinstance(value, bool) and value > 200:
        value = 200  # many episodes or steps are a valid request, not a hang
    target = two_state.parallel_env() if on_env else MDP
    policy = mk.Policy.uniform(two_state.build_mdp() if on_env else MDP)
    kw = dict(k=2, gamma=None, episodes=5, horizon=10, tail=None, baseline="mean", seed=0, encoders=None,
              team_reward="mean", path="auto", floor=0.01)
    if key == "policy":
        check(lambda: mk.SampledKStep(target, **kw).estimate(value), ["policy"])
        return
    if key == "target":
        target = value
    else:
        kw[key] = value
    check(lambda: mk.SampledKStep(target, **kw).estimate(policy), [key])


@FUZZ
@given(key=st.sampled_from(["policy", "k", "episodes", "horizon", "seed", "gamma", "actions"]), value=BAD)
def test_fuzz_rollout_and_step(key, value):
    env = two_state.parallel_env()
    if key == "actions":
        env.reset(seed=0)
        check(lambda: env.step({"agent_0": value}), ["actions"])
        return
    if key == "episodes" and isinstance(value, int) and not isinstance(value, bool) and value > 100:
        value = 100  # a large number of episodes is a valid request
    kw = dict(policy=mk.Policy.uniform(two_state.build_mdp()), k=2, episodes=3, horizon=20, seed=0, gamma=None)
    kw[key] = value
    check(lambda: mk.rollout(env, **kw), [key])


@FUZZ
@given(key=st.sampled_from(["max_path_steps", "lump", "row_sum_tol", "simplex_tol", "max_model_bytes", "nope"]),
       value=BAD)
def test_fuzz_configure(key, value):
    def run():
        with mk.configure(**{key: value}):
            pass

    check(run, [key])


def test_the_harness_catches_a_wrong_exception():
    with pytest.raises(TypeError):
        check(lambda: 1 + "a", ["x"])
    with pytest.raises(AssertionError, match="does not name"):
        check(lambda: mk.value(MDP, POLICY, k=0), ["policy"])


def _shipped_texts():
    import gzip

    from marl_kstep.experiments.benchtable import DEFAULT_DATA_DIR

    out = []
    for name in ("dectiger.dpomdp", "GridSmall.dpomdp", "recycling.dpomdp", "broadcastChannel.dpomdp"):
        path = DEFAULT_DATA_DIR / name
        if path.exists():
            raw = path.read_bytes()
            out.append((name, (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()))
    from test_dpomdp import TINY

    return out + [("tiny", TINY)]


TEXTS = _shipped_texts()
TOKENS = st.one_of(st.sampled_from(["*", ":", "-1", "1e999", "nan", "uniform", "identity", "0.5", "999999999",
                                    "T:", "O:", "R:", "start:", "agents:", "states:", "", "\t", "x-y"]),
                   st.text(alphabet="abc019.:*-# \t", max_size=6))


@FUZZ
@given(which=st.integers(0, len(TEXTS) - 1), data=st.data())
def test_fuzz_dpomdp_loader(which, data):
    """Mutated copies of shipped files: a line deleted, duplicated, or a token replaced."""
    from marl_kstep.model.dpomdp import augment, parse_dpomdp

    name, text = TEXTS[which]
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(lines) - 1))
        how = data.draw(st.sampled_from(["delete", "duplicate", "token"]))
        if how == "delete":
            del lines[i]
        elif how == "duplicate":
            lines.insert(i, lines[i])
        else:
            toks = lines[i].split(" ")
            toks[data.draw(st.integers(0, len(toks) - 1))] = data.draw(TOKENS)
            lines[i] = " ".join(toks)
        if not lines:
            lines = [""]
    check(lambda: augment(parse_dpomdp("\n".join(lines), name), 0.9), [name])


CLI_OPTIONS = {
    "--k": ["0", "-1", "x", "1.5", "2"], "--step": ["0", "-1", "nan", "inf", "x", "0.1"],
    "--tol": ["-1", "nan", "x", "0"], "--iters": ["-1", "x", "2.5", "3"], "--seeds": ["-1", "x", "1"],
    "--method": ["adam", "pgd"], "--estimator": ["exact", "sampled", "mc"],
    "--episodes": ["0", "-3", "x", "20"], "--gamma": ["0.9", "2", "nan"], "--env": ["x", "os:getcwd", "a:b:c"],
    "--set": ["gamma=2", "n_agents=0", "nope=1", "x", "gamma=0.5", "move_cost=inf", "n_numbers=None"],
}


@FUZZ
@given(option=st.sampled_from(list(CLI_OPTIONS)), data=st.data())
def test_fuzz_cli_run(option, data, tmp_path_factory):
    """``marl-kstep run`` with one malformed option: exit 0, or exit 2 with one line naming it."""
    warm_sampled()
    import contextlib
    import io

    from marl_kstep import cli

    value = data.draw(st.sampled_from(CLI_OPTIONS[option]))
    out = tmp_path_factory.mktemp("cli")
    argv = ["run", "number_matching", "--k", "1", "--method", "pgd", "--iters", "3", "--out", str(out), "--quiet",
            option, value]
    err = io.StringIO()
    with time_limit(SECONDS_PER_CASE), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    assert code in (0, 2), (argv, err.getvalue())
    if code == 2:
        assert len(lines) == 1 and (option.lstrip("-") in lines[0] or "--set" in lines[0]), (argv, lines)
