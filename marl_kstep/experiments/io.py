"""Safe result files (atomic writes) and the versions recorded in them."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from .._version import __version__
from ..policy_io import write_text_atomic

__all__ = ["write_text_atomic", "write_json_atomic", "versions"]


def versions() -> dict:
    """Versions of Python and the numerical stack, for result files."""
    import numba
    import scipy

    return dict(marl_kstep=__version__, python=platform.python_version(), numpy=np.__version__,
                scipy=scipy.__version__, numba=numba.__version__)


def write_json_atomic(path, obj) -> Path:
    """:func:`write_text_atomic` of ``obj`` as JSON."""
    return write_text_atomic(path, json.dumps(obj, indent=1))
