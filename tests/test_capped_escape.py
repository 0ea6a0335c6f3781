"""Escape runs stopped by the iteration cap are flagged, never certified (issue 25).

An audit found 31 of 42 capped escape runs ending where a change of at most 2 slots is better, with
nothing in the result saying that the cap, not a certified vertex, ended them. ``TrainResult``
now carries ``capped``, ``stop_reason`` and ``certified``, and the run records carry them too.
"""

from __future__ import annotations

import json

import pytest

import marl_kstep as mk
from marl_kstep.envs import number_matching
from marl_kstep.experiments import RunSpec
from marl_kstep.experiments.run import RunRecord, run_one
from marl_kstep.experiments.spec import canonical_json
from marl_kstep.experiments.study import summarise

TARGET = {"scenario": "number_matching", "config": {"start": "far"}}  # 2 agents, m = 6: J* = 6.477


@pytest.fixture(scope="module")
def mdp():
    return number_matching.build_mdp(start="far")


def test_a_capped_escape_run_is_flagged_and_not_certified(mdp):
    j_star = mk.best_deterministic(mdp)[0]
    res = mk.train(mdp, k=1, iters=2, escape=True, seed=3)
    assert res.capped and res.stop_reason == "iteration cap" and res.iterations == 2
    assert not res.converged and res.stationary is None and not res.certified
    # the certificate of its greedy tables lists improving changes: exactly why it must not pass as a result
    cert = res.certificate
    assert cert is not None and cert.rounded and len(cert.improving) == 7 and not cert.two_opt
    best = cert.improving[0]
    tables = [t.copy() for t in cert.policy.greedy_tables()]
    for i, o, a in best.slots:
        tables[i][o] = a
    assert best.J == pytest.approx(mk.value(mdp, mk.Policy.deterministic(mdp, tables), 1), abs=1e-12)
    assert best.J > cert.J
    # capped with a 2-opt greedy rounding is still not certified: the cap, not the certificate, decides
    res5 = mk.train(mdp, k=1, iters=5, escape=True, seed=3)
    assert res5.capped and res5.certificate.two_opt and not res5.certified
    # the same run uncapped ends on a certified vertex: J* by brute force
    full = mk.train(mdp, k=1, iters=2000, escape=True, seed=3)
    assert not full.capped and full.stop_reason == "vertex" and full.certified
    assert full.final_J == pytest.approx(j_star, abs=1e-12)


def test_stop_reasons_of_plain_runs(mdp):
    full = mk.train(mdp, k=1, iters=2000, seed=3)
    assert full.stop_reason == "tol" and not full.capped and not full.certified  # no certificate without escapes
    n = full.iterations
    last = mk.train(mdp, k=1, iters=n, seed=3)  # converging on the last allowed update is not the cap
    assert last.iterations == n and last.converged and not last.capped and last.stop_reason == "tol"
    short = mk.train(mdp, k=1, iters=n - 1, seed=3)
    assert short.capped and short.stop_reason == "iteration cap" and not short.converged
    cb = mk.train(mdp, k=1, iters=2000, seed=3, callback=lambda it, *a: it < 3)
    assert cb.stop_reason == "callback" and cb.iterations == 3 and not cb.capped


def test_records_carry_the_flag_and_old_records_still_load():
    capped = run_one(RunSpec(TARGET, 1, iters=2, seed=3, start="random", escape=True))
    done = run_one(RunSpec(TARGET, 1, iters=2000, seed=4, start="random", escape=True))
    rc, rd = capped["result"], done["result"]
    assert rc["capped"] and rc["stop_reason"] == "iteration cap" and rc["certified"] is False
    assert rc["certificate"]["improving"] > 0 and rc["two_opt"] is False
    assert not rd["capped"] and rd["stop_reason"] == "vertex" and rd["certified"] is True
    # a record written before these keys existed (same schema) still loads and summarises
    old = json.loads(json.dumps(capped.to_dict()))
    for key in ("stop_reason", "certified"):
        old["result"].pop(key)
    back = RunRecord.from_dict(old)
    assert back["result"].get("certified") is None
    recs = [back, done]
    opt = {canonical_json(recs[0]["spec"]["target"]): (6.477, -1.0)}
    cell = summarise(recs, opt)["variants"]
    (variant,) = cell.values()
    (c,) = variant["cells"]
    assert c["n"] == 2 and c["capped"] == 1 and c["capped_not_two_opt"] == 1 and c["failure_stops"] == {"capped": 1}
