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
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["check_cache"]

_PACKAGE = Path(__file__).resolve().parent
_STAMP = _PACKAGE / "__pycache__" / "marl_kstep_sources.sha256"


def _sources_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        h.update(str(path.relative_to(_PACKAGE)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def check_cache() -> bool:
    """Delete stale numba cache files of the package; True when it did."""
    try:
        digest = _sources_hash()
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


check_cache()
