"""Numba's on-disk cache, kept consistent with the package's source.

numba (``cache=True``) invalidates a cached function only when *its own* file changes. A
compiled function that calls functions of another file keeps their old machine code after
that file changes: e.g. ``estimators/_fused.py`` calling the walk of ``estimators/_walk.py``
ran the previous walk after ``_walk.py`` was edited (measured: 2.9 ms instead of 1.1 ms on
GridSmall k = 2, and with different code it could compute different numbers). So on import
this module hashes every source file of the package and, when the hash differs from the one
recorded with the cache, deletes the package's cached machine code (``*.nbi``, ``*.nbc``) so
numba recompiles everything once. Nothing else is touched; a read-only install is left as
it is (numba then cannot write a cache there either).

It also says when a call is about to compile: on the first compilation of one of the
package's kernels in a process (not a load from the cache), a single line on stderr,
``marl_kstep: compiling kernels, a few seconds per window length, once per machine ...`` (:func:`notice_compiling`,
a listener on numba's ``numba:compile`` event, which fires only for real compilations).
``marl-kstep warmup`` (:mod:`marl_kstep.warmup`) compiles everything ahead.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path

from numba.core import caching, event, types

__all__ = ["check_cache", "COMPILE_NOTICE"]

#: The line printed before the first compilation in a process (benchmarks/cold_start.py, 2
#: quiet cores: a cold first ``value_and_grad`` at k = 1 on number matching takes 3.7 s, each
#: further kind of walk -- k = 2, k = 3, k >= 4 -- a few seconds more).
COMPILE_NOTICE = ("marl_kstep: compiling kernels, a few seconds per window length, once per machine "
                  "(cached afterwards; `marl-kstep warmup` compiles them all ahead)")

_PACKAGE = Path(__file__).resolve().parent
_STAMP = _PACKAGE / "__pycache__" / "marl_kstep_sources.sha256"


def _sources_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        h.update(str(path.relative_to(_PACKAGE)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


class _PackageStamp:
    """Stamps the cache index of a package kernel with the hash of *all* the package's sources.

    numba keys a cache index by its own file's modification time and size, so a kernel that
    calls into another file keeps stale machine code after that file changes, and a process
    still running old sources can write such code *after* :func:`check_cache` has cleared the
    cache (one segfault seen in a session that edited ``_walk.py`` while tests ran). With
    this stamp an index written by any other version of the package's sources is ignored
    (numba treats it as empty and recompiles), whoever wrote it and whenever."""

    @classmethod
    def from_function(cls, py_func, py_file):
        try:
            inside = Path(py_file).resolve().is_relative_to(_PACKAGE)
        except (OSError, ValueError):
            inside = False
        return super().from_function(py_func, py_file) if inside else None

    def get_source_stamp(self):
        return ("marl_kstep sources", _DIGEST)


def _stamped(base):
    return type(f"MarlKstep{base.__name__}", (_PackageStamp, base), {})


def _install_locators() -> None:
    """Put the stamped locators first, in numba's own order (a ``NUMBA_CACHE_DIR``, the
    package's ``__pycache__``, the user-wide cache); other packages' kernels are untouched."""
    classes = caching.CacheImpl._locator_classes
    if any(issubclass(c, _PackageStamp) for c in classes):
        return
    ours = [_stamped(base) for base in (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator,
                                        caching.UserWideCacheLocator)]
    classes[:0] = ours


def check_cache() -> bool:
    """Delete stale numba cache files of the package; True when it did."""
    try:
        digest = _DIGEST
        if _STAMP.exists() and _STAMP.read_text().strip() == digest:
            return False
        for pattern in ("*.nbi", "*.nbc"):
            for path in _PACKAGE.rglob(pattern):
                path.unlink(missing_ok=True)
        _STAMP.parent.mkdir(exist_ok=True)
        _STAMP.write_text(digest)
        return True
    except OSError:
        return False


class _CompileNotice(event.Listener):
    """Prints :data:`COMPILE_NOTICE` once, when a kernel of the package starts compiling.

    numba fires ``numba:compile`` only for compilations, never for cache loads. A function
    that asks for literal arguments (``numba.literally``) is first typed with plain ones and
    bounces back, on every first call, cached or not: those attempts are not counted."""

    def __init__(self):
        self.said = False
        self._lock = threading.Lock()

    def on_start(self, ev):
        if self.said:
            return
        py_func = getattr(ev.data.get("dispatcher"), "py_func", None)
        if py_func is None or not (getattr(py_func, "__module__", None) or "").startswith("marl_kstep"):
            return
        args = ev.data.get("args") or ()
        if "literally" in py_func.__code__.co_names and not any(isinstance(a, types.Literal) for a in args):
            return
        with self._lock:
            if self.said:
                return
            self.said = True
        print(COMPILE_NOTICE, file=sys.stderr, flush=True)

    def on_end(self, ev):
        pass


notice_compiling = _CompileNotice()
_DIGEST = _sources_hash()
_install_locators()
check_cache()
event.register("numba:compile", notice_compiling)
