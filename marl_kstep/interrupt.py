"""Clean Ctrl-C: interrupts take effect between steps, never inside compiled code.

Python delivers SIGINT by raising ``KeyboardInterrupt`` wherever the interpreter happens to be;
when that is the return from a numba-compiled function the process can end with
``SystemError: CPUDispatcher(...) returned a result with an exception set``. Inside
:func:`deferred_interrupts` a SIGINT only sets a flag; :func:`checkpoint` (called between
iterations, runs or files) raises ``KeyboardInterrupt`` there, and leaving the block raises
it if it is still pending. Off the main thread (where signal handlers cannot be installed)
the block does nothing.

A command (``marl-kstep ...`` or ``python -m marl_kstep.<module>``) spends its first second or
more importing numpy, scipy and numba; a Ctrl-C there would end in a traceback. On import this
module therefore installs, for those starts only, a handler that exits with status 130 and one
line on stderr; the command's own ``main`` hands SIGINT back with :func:`release_startup`.
Imported as a library (``import marl_kstep`` in a script, a notebook or pytest) nothing changes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

__all__ = ["deferred_interrupts", "checkpoint", "release_startup"]

_pending = threading.Event()
_depth = 0


def _interrupted_while_loading(signum, frame):
    # Nothing has started yet, so nothing is lost by leaving at once; an exception raised here
    # could land inside an extension module's import, which turns it into an ImportError.
    print("marl-kstep: interrupted while loading", file=sys.stderr, flush=True)
    os._exit(130)


def _command_start() -> bool:
    """True while the package is imported to run one of its commands: ``python -m
    marl_kstep.X`` (``sys.argv[0]`` is ``"-m"`` until the module is found) or the
    ``marl-kstep`` console script."""
    argv0 = sys.argv[0] if sys.argv else ""
    return argv0 == "-m" or Path(argv0).name == "marl-kstep"


_startup_guard = _command_start() and threading.current_thread() is threading.main_thread() \
    and signal.getsignal(signal.SIGINT) is signal.default_int_handler
if _startup_guard:
    signal.signal(signal.SIGINT, _interrupted_while_loading)


def release_startup() -> None:
    """Give SIGINT back to Python (``KeyboardInterrupt``) once a command has loaded."""
    global _startup_guard
    if _startup_guard and signal.getsignal(signal.SIGINT) is _interrupted_while_loading:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _startup_guard = False


def _handler(signum, frame):
    _pending.set()


@contextmanager
def deferred_interrupts():
    """Defer SIGINT to the next :func:`checkpoint` (or the end of the block)."""
    global _depth
    if _depth or threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield  # an outer block defers already, signals cannot be handled on this thread, or SIGINT is
        return  # ignored (``nohup cmd &``): a stray Ctrl-C to the process group must not stop the run
    previous = signal.signal(signal.SIGINT, _handler)
    _depth = 1
    _pending.clear()
    try:
        yield
    finally:
        _depth = 0
        signal.signal(signal.SIGINT, previous)
    if _pending.is_set():
        _pending.clear()
        raise KeyboardInterrupt


def checkpoint() -> None:
    """Raise ``KeyboardInterrupt`` here if a deferred SIGINT is pending."""
    if _pending.is_set():
        _pending.clear()
        raise KeyboardInterrupt
