"""Safe result files (atomic writes) and the versions recorded in them."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

from .._version import __version__

__all__ = ["write_text_atomic", "write_json_atomic", "versions"]


def versions() -> dict:
    """Versions of Python and the numerical stack, for result files."""
    import numba
    import scipy

    return dict(marl_kstep=__version__, python=platform.python_version(), numpy=np.__version__,
                scipy=scipy.__version__, numba=numba.__version__)


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename, so an
    interruption leaves either the old file or the new one, never a partial file. The file is
    readable by everyone (mode 0644 less the umask), like any other result file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o644 & ~umask)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path, obj) -> Path:
    """:func:`write_text_atomic` of ``obj`` as JSON."""
    return write_text_atomic(path, json.dumps(obj, indent=1))
