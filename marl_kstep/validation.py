"""Argument checks shared by every public entry point.

Each check returns the value converted to its canonical type or raises :class:`ValueError`
naming the parameter (and the index and value where there is one). Nothing here allocates
in proportion to a problem's size before the size itself has been checked.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from .settings import current, model_bytes_limit

__all__ = ["check_keys", "json_data", "real_array", "check_probability", "check_real", "check_choice", "check_bool",
           "check_seed",
           "check_sequence", "check_int", "check_k", "check_gamma", "check_positive", "check_counts",
           "check_distribution", "check_model_bytes", "check_table_bytes"]


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (Python or NumPy, not bool) within ``[minimum, maximum]``."""
    what = ("a non-negative integer" if minimum == 0 else "an integer" if minimum is None
            else f"an integer >= {minimum}")
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be {what}; got {name}={value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be {what}; got {name}={v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}; got {name}={v}")
    return v


def check_k(k) -> int:
    """The window length: an integer >= 1."""
    if isinstance(k, bool | np.bool_) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k must be an integer >= 1; got k={k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1; got k={k}")
    return int(k)


def check_gamma(gamma) -> float:
    """A discount factor in ``[0, 1)``."""
    if isinstance(gamma, bool | np.bool_) or not isinstance(gamma, numbers.Real):
        raise ValueError(f"gamma must be a number in [0, 1); got gamma={gamma!r}")
    g = float(gamma)
    if not (0.0 <= g < 1.0):
        raise ValueError(f"gamma must lie in [0, 1); got gamma={g!r}")
    return g


def check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or >= 0)."""
    what = "finite non-negative number" if allow_zero else "positive number"
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a {what}; got {name}={value!r}")
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {what}; got {name}={value!r}")
    return v


def check_counts(name: str, values) -> tuple[int, ...]:
    """A non-empty sequence of integers >= 1 (one per agent)."""
    try:
        items = list(values)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive integers; got {values!r}") from None
    if len(items) == 0:
        raise ValueError(f"{name} must name at least one agent; got {values!r}")
    counts = []
    for i, c in enumerate(items):
        if isinstance(c, bool | np.bool_) or not isinstance(c, numbers.Integral):
            raise ValueError(f"{name}[{i}] must be an integer >= 1; got {c!r}")
        if c < 1:
            raise ValueError(f"{name}[{i}] must be >= 1; got {int(c)}")
        counts.append(int(c))
    return tuple(counts)


def real_array(name: str, x, dtype=np.float64) -> np.ndarray:
    """``x`` as a new array of ``dtype``, refusing complex numbers, strings, None and other objects
    (numpy would drop an imaginary part with a warning, or fail with its own message)."""
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested sequences
        raise ValueError(f"{name} must be an array of real numbers; {exc}") from None
    if a.dtype.kind not in "biuf":  # bool, integers, floats
        raise ValueError(f"{name} must hold real numbers; got an array of dtype {a.dtype}")
    return np.array(a, dtype=dtype)  # dtype None: keep the array's own (integer or float)


def check_distribution(name: str, x, n: int, tol: float) -> np.ndarray:
    """A probability vector of shape ``(n,)`` summing to one within ``tol`` (a new array)."""
    x = real_array(name, x)
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},); got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x) | (x < 0))
    if bad.size:
        s = int(bad[0])
        raise ValueError(f"{name}[{s}] = {float(x[s])!r} is not a probability (negative or NaN)")
    total = float(x.sum())
    if abs(total - 1.0) > tol:
        raise ValueError(f"{name} must sum to 1 (within {tol:g}); it sums to {total!r}")
    return x


def check_real(name: str, value, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite real number (not bool) within ``[minimum, maximum]``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number; got {name}={value!r}")
    v = float(value)
    if not np.isfinite(v) or (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        lo = "" if minimum is None else f" >= {minimum:g}"
        hi = "" if maximum is None else f"{' and' if lo else ''} <= {maximum:g}"
        raise ValueError(f"{name} must be a finite number{lo}{hi}; got {name}={value!r}")
    return v


def check_choice(name: str, value, choices) -> str:
    """One of a few strings."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {name}={value!r}")
    return value


def check_bool(name: str, value) -> bool:
    """True or False (NumPy booleans too)."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False; got {name}={value!r}")
    return bool(value)


def check_seed(name: str, seed):
    """``None``, an integer >= 0, a ``SeedSequence`` or a ``Generator`` (what ``default_rng`` takes)."""
    if seed is None or isinstance(seed, np.random.SeedSequence | np.random.Generator | np.random.BitGenerator):
        return seed
    return check_int(name, seed, minimum=0)


def check_sequence(name: str, value, length: int | None = None) -> list:
    """A list or tuple (or 1-d-or-more array), optionally of a given length."""
    if (isinstance(value, str | bytes | dict) or not isinstance(value, list | tuple | np.ndarray)
            or (isinstance(value, np.ndarray) and value.ndim == 0)):
        raise ValueError(f"{name} must be a list with one entry per agent; got {type(value).__name__}")
    items = list(value)
    if length is not None and len(items) != length:
        raise ValueError(f"{name} must hold one entry per agent ({length}); got {len(items)}")
    return items


def check_probability(name: str, value) -> float:
    """A number in ``[0, 1]``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1]; got {name}={value!r}")
    return float(value)


def check_keys(name: str, mapping, allowed) -> dict:
    """A mapping with string keys, every one of them in ``allowed`` (a misspelt key is named with the
    allowed ones, never ignored). Returns a plain ``dict`` copy."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{name} must be a dict; got {name}={mapping!r}")
    allowed = tuple(allowed)
    for key in mapping:
        if key not in allowed:
            raise ValueError(f"unknown key {key!r} in {name}; allowed keys: {', '.join(allowed)}")
    return dict(mapping)


def check_model_bytes(need: int, what: str, hint: str) -> None:
    """Refuse with a ``ValueError`` giving the estimate when ``need`` passes the memory limit."""
    limit = model_bytes_limit()
    if need > limit:
        source = ("Settings.max_model_bytes" if current().max_model_bytes
                  else "half of this machine's memory; Settings.max_model_bytes")
        raise ValueError(f"{what} would take about {need / 2**30:,.2f} GiB, more than the limit of "
                         f"{limit / 2**30:,.2f} GiB ({source}); {hint}, or raise the limit with "
                         f"mk.configure(max_model_bytes=...)")


def check_table_bytes(n_obs: Sequence[int], n_actions: Sequence[int], what: str) -> None:
    r"""Refuse sizes whose policy tables (:math:`8 \sum_i O_i A_i` bytes) pass the memory limit."""
    entries = sum(o * a for o, a in zip(n_obs, n_actions, strict=True))
    check_model_bytes(8 * entries, f"the policy tables of {what} (n_obs={tuple(n_obs)}, "
                      f"n_actions={tuple(n_actions)}: {entries:,} entries)", "use fewer observations or actions")


def json_data(value, where: str):
    """``value`` as plain JSON data: NumPy scalars and arrays become Python numbers and lists, tuples become
    lists; a non-finite number, a non-string key or anything JSON cannot hold is a ``ValueError`` naming
    ``where`` (run specs and policy files both store through it)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        x = float(value)
        if not math.isfinite(x):
            raise ValueError(f"{where} = {x!r} is not finite (JSON has no NaN or infinity)")
        return x
    if isinstance(value, np.ndarray):
        return json_data(value.tolist(), where)
    if isinstance(value, list | tuple):
        return [json_data(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has the key {key!r}; JSON object keys must be strings")
            out[key] = json_data(v, f"{where}[{key!r}]")
        return out
    raise ValueError(f"{where} must be JSON data (numbers, strings, lists, dicts); got a {type(value).__name__} "
                     f"({value!r})")
