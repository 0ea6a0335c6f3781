"""The demo's kernels compiled by two processes at once with a cold cache (demo.compile_kernels)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CODE = """
from marl_kstep import demo
from marl_kstep.estimators._fused import fused_small
cold = demo._cold_cache()
demo.compile_kernels({helper})
print(cold, demo._cold_cache(), len(fused_small.signatures), len(fused_small._cache._cache_file._load_index()))
"""


def run(code, cache):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                          env=dict(os.environ, NUMBA_CACHE_DIR=str(cache))).stdout.split()


@pytest.mark.slow
def test_a_cold_demo_compile_with_a_helper_process_leaves_all_four_kinds_cached(tmp_path):
    # cold: the helper compiles k = 2 and the general walk, this process k = 1 and k = 3; all four cached
    assert run(CODE.format(helper="helper=True"), tmp_path) == ["True", "False", "4", "4"]
    # warm: nothing compiled, no helper started (the cache holds the four kinds)
    assert run(CODE.format(helper="helper=True"), tmp_path) == ["False", "False", "4", "4"]


def test_a_warm_cache_starts_no_helper(monkeypatch):
    from marl_kstep import demo

    monkeypatch.setattr(demo, "_cold_cache", lambda: False)
    started = []
    monkeypatch.setattr(demo.subprocess, "Popen", lambda *a, **k: started.append(a))
    monkeypatch.setattr(demo, "_compile", lambda ks: None)
    demo.compile_kernels()
    assert started == []
