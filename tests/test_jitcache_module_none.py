"""The compile notice's listener with a user's function whose ``__module__`` is ``None``
(compiled from ``exec`` without ``__name__``): numba's compilation must go on, silently."""

from __future__ import annotations

import types as pytypes

from numba import njit

from marl_kstep import _jitcache


def test_a_function_without_a_module_compiles_and_says_nothing(capsys):
    ns = {}
    exec("def plus_one(x):\n    return x + 1\n", ns)
    assert ns["plus_one"].__module__ is None
    notice = _jitcache._CompileNotice()
    ev = pytypes.SimpleNamespace(data=dict(dispatcher=pytypes.SimpleNamespace(py_func=ns["plus_one"]), args=()))
    notice.on_start(ev)  # raised AttributeError ('NoneType' object has no attribute 'startswith')
    assert not notice.said and capsys.readouterr().err == ""
    assert njit(ns["plus_one"])(41) == 42  # through the registered listener too
