"""Compile only what is used, say so once when compiling, and `marl-kstep warmup`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import types as pytypes
from pathlib import Path

import numba
import pytest
from numba import njit, types

import marl_kstep.warmup as warmup_module
from marl_kstep import _jitcache, cli
from marl_kstep._jitcache import COMPILE_NOTICE

ROOT = Path(__file__).resolve().parents[1]


def run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                          env=dict(os.environ, **env))


K1_CALL = """
import marl_kstep as mk
from marl_kstep import _refine
from marl_kstep.estimators import _walk, _fused
from marl_kstep.envs import number_matching
mdp = number_matching.build_mdp()
est = mk.ExactKStep(mdp, 1)
assert est.plan.block is not None  # it lumps (36 states -> 6)
est.value_and_grad(mk.Policy.uniform(mdp))
print(len(_walk._k1_rows.signatures), len(_walk._k2_rows.signatures),
      len(_walk._k3_values.signatures) + len(_walk._k3_grad.signatures), len(_walk._general_walk.signatures),
      len(_refine._refine_kernel.signatures), len(_refine._check_kernel.signatures), len(_fused.fused_small.signatures))
"""


def test_a_cold_k1_call_compiles_only_k1_says_so_once_and_not_again(tmp_path):
    cold = run(K1_CALL, NUMBA_CACHE_DIR=str(tmp_path))  # an empty cache
    k1, k2, k3, general, refine, check, fused = map(int, cold.stdout.split())
    assert (k2, k3, general, refine, check) == (0, 0, 0, 0, 0)  # nothing of k >= 2, no refinement kernel
    assert k1 >= 1 and fused == 1  # the k = 1 rows, the one-call small path
    assert cold.stderr.count(COMPILE_NOTICE) == 1
    warm = run(K1_CALL, NUMBA_CACHE_DIR=str(tmp_path))  # the same cache: loaded, not compiled
    assert COMPILE_NOTICE not in warm.stderr
    assert warm.stdout.split()[-1] == "1"


def test_the_notice_rule(monkeypatch, capsys):
    notice = _jitcache._CompileNotice()

    def ev(fn, args):
        return pytypes.SimpleNamespace(data=dict(dispatcher=pytypes.SimpleNamespace(py_func=fn), args=args))

    def plain(x):
        return x

    def literal(kind):
        numba.literally(kind)
        return kind

    for f in (plain, literal):
        f.__module__ = "marl_kstep.somewhere"
    outside = njit(lambda x: x).py_func  # a user's function
    notice.on_start(ev(outside, (types.int64,)))
    notice.on_start(ev(literal, (types.int64,)))  # typed with a plain int: bounces, cached or not
    assert capsys.readouterr().err == ""
    notice.on_start(ev(literal, (types.IntegerLiteral(1),)))
    notice.on_start(ev(plain, (types.int64,)))
    assert capsys.readouterr().err.count(COMPILE_NOTICE) == 1


def test_the_warmup_command_runs_every_step(monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(warmup_module, "STEPS", (("one", lambda: ran.append(1)), ("two", lambda: ran.append(2))))
    assert cli.main(["warmup"]) == 0
    assert ran == [1, 2]
    captured = capsys.readouterr()
    assert "one:" in captured.err and "two:" in captured.err and "warm-up took" in captured.out


@pytest.mark.skipif(not os.environ.get("MARL_KSTEP_SLOW"), reason="slow (minutes with a cold cache): MARL_KSTEP_SLOW=1")
def test_the_warmup_steps_run():
    """Every step once (with a cold cache this compiles every kernel: minutes)."""
    buf = io.StringIO()
    done = warmup_module.warmup(file=buf)
    assert [name for name, _ in done] == [name for name, _ in warmup_module.STEPS]
    assert all(t >= 0 for _, t in done)
    from marl_kstep.estimators import _walk

    assert _walk._k1_rows.signatures and _walk._k2_rows.signatures and _walk._general_walk.signatures


@pytest.mark.parametrize("k", [1, 2, 3])
def test_walk_kind_routes(k):
    from marl_kstep.estimators._walk import _KIND_GENERAL, _KIND_TAG, _MODE_COUNT, walk_kind

    assert walk_kind(k) is _KIND_TAG[k]  # the dedicated loops of k = 1, 2, 3 (tags of distinct types)
    assert walk_kind(k, 1) is _KIND_TAG[k]  # pass 2 too
    assert walk_kind(k + 3) is _KIND_TAG[_KIND_GENERAL]
    assert walk_kind(k, _MODE_COUNT) is _KIND_TAG[1 if k == 1 else _KIND_GENERAL]
    assert len({type(t) for t in _KIND_TAG.values()}) == 4
