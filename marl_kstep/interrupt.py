"""Clean Ctrl-C: interrupts take effect between steps, never inside compiled code.

Python delivers SIGINT by raising ``KeyboardInterrupt`` wherever the interpreter happens to be;
when that is the return from a numba-compiled function the process can end with
``SystemError: CPUDispatcher(...) returned a result with an exception set``. Inside
:func:`deferred_interrupts` a SIGINT only sets a flag; :func:`checkpoint` (called between
iterations, runs or files) raises ``KeyboardInterrupt`` there, and leaving the block raises
it if it is still pending. Off the main thread (where signal handlers cannot be installed)
the block does nothing.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

__all__ = ["deferred_interrupts", "checkpoint"]

_pending = threading.Event()
_depth = 0


def _handler(signum, frame):
    _pending.set()


@contextmanager
def deferred_interrupts():
    """Defer SIGINT to the next :func:`checkpoint` (or the end of the block)."""
    global _depth
    if _depth or threading.current_thread() is not threading.main_thread():
        yield  # an outer block defers already, or signals cannot be handled on this thread
        return
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
