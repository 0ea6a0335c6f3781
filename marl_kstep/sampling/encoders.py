r"""Observation encoders: raw PettingZoo observations to ids ``0..O_i-1`` (SPEC §8).

A restricted policy is a table over observation ids, so every agent needs a map from its raw
observation to ``0..O_i-1``. An encoder is any callable with an attribute ``n`` (:math:`O_i`):

* :func:`space_encoder` -- ``Discrete`` (with its ``start``) and ``MultiDiscrete`` spaces
  (mixed radix, first component most significant), exact;
* :class:`BoxDiscretiser` -- ``Box`` observations: equal-width bins per chosen dimension;
* :class:`ObservationIndexer` -- any hashable (or array) observation: ids in the order first
  seen, up to a fixed number (for envs whose observations take few distinct values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

from ..validation import check_int

__all__ = ["BoxDiscretiser", "ENCODER_SPEC_KEYS", "ObservationIndexer", "encoder_from_spec", "space_encoder"]


def _mixed_radix(digits, radix) -> int:
    """``((d_0 * r_1 + d_1) * r_2 + d_2) ...``: the first digit most significant."""
    code = 0
    for d, r in zip(digits, radix, strict=True):
        code = code * int(r) + int(d)
    return code


def _integral(x: float) -> bool:
    return math.isfinite(x) and x == math.floor(x)


class _SpaceEncoder:
    """The exact encoder of a Discrete / MultiDiscrete space. An observation must equal an
    integer exactly (``1.0`` is 1; ``1.5``, NaN, strings, None are refused) and lie in the space;
    a MultiDiscrete observation must have the space's shape (no broadcasting)."""

    def __init__(self, space):
        self.discrete = isinstance(space, spaces.Discrete)
        if self.discrete:
            self.start = np.array([int(space.start)])
            self.nvec = np.array([int(space.n)])
            self.shape = ()
        else:
            self.nvec = np.asarray(space.nvec, dtype=np.int64).ravel()
            self.start = np.asarray(getattr(space, "start", np.zeros_like(space.nvec)), dtype=np.int64).ravel()
            self.shape = tuple(np.shape(space.nvec))
        n = math.prod(int(x) for x in self.nvec)
        if n >= 2**62:
            raise ValueError(f"space {space} has {n} values, too many for an observation table")
        self.n = n
        self.lo = int(self.start[0])
        self.hi = self.lo + int(self.nvec[0])
        self.space = space

    def _refuse(self, obs, why=""):
        raise ValueError(f"observation {obs!r} is not in {self.space}{why}")

    def __call__(self, obs) -> int:
        if self.discrete:
            if type(obs) is int:
                x = obs
            elif isinstance(obs, int | np.integer | np.bool_):
                x = int(obs)
            elif isinstance(obs, float | np.floating) and _integral(float(obs)):
                x = int(obs)
            elif isinstance(obs, np.ndarray) and obs.shape == () and obs.dtype.kind in "biuf":
                return self(obs[()])
            else:
                self._refuse(obs, " (an integer observation is expected)")
            if self.lo <= x < self.hi:
                return x - self.lo
            self._refuse(obs)
        try:
            a = np.asarray(obs)
        except (ValueError, TypeError, OverflowError):
            self._refuse(obs)
        if a.shape != self.shape:
            self._refuse(obs, f" (its shape is {a.shape}; the space's is {self.shape})")
        a = a.ravel()
        if a.dtype.kind == "f":
            if not (np.all(np.isfinite(a)) and np.all(a == np.floor(a))):
                self._refuse(obs, " (an observation must hold integers)")
        elif a.dtype.kind not in "biu":
            self._refuse(obs, " (an observation must hold integers)")
        if np.any(a < self.start) or np.any(a >= self.start + self.nvec):
            self._refuse(obs)
        return _mixed_radix(a.astype(np.int64) - self.start, self.nvec)

    def __repr__(self) -> str:
        return f"space_encoder({self.space})"


def space_encoder(space):
    """The exact encoder of a ``Discrete`` or ``MultiDiscrete`` space (``n`` = number of values)."""
    if not isinstance(space, spaces.Discrete | spaces.MultiDiscrete):
        raise ValueError(f"space must be Discrete or MultiDiscrete; got {space} "
                         "(use BoxDiscretiser or ObservationIndexer, or write an encoder)")
    return _SpaceEncoder(space)


class BoxDiscretiser:
    r"""Equal-width bins on chosen dimensions of a ``Box`` observation.

    Dimension ``dims[q]`` is clipped to ``[low[q], high[q]]`` and cut into ``bins[q]`` equal
    cells, :math:`c_q = \min(\lfloor b_q (v_q - l_q) / (h_q - l_q) \rfloor, b_q - 1)`
    (so ``-inf`` is in the first cell and ``+inf`` in the last; a range wider than the largest
    float, such as +-1e308, is computed on halved values, exactly the same cells); the id is the
    mixed-radix index of the cells (first dimension most significant), so
    :math:`O = \prod_q \text{bins}_q` (at most :math:`2^{62}`). NaN, None and non-numeric
    observations are refused.

    Parameters
    ----------
    low, high : sequence of float
        Range per chosen dimension (values outside are clipped into the end cells).
    bins : int or sequence of int
        Cells per chosen dimension (at least 1).
    dims : sequence of int, optional
        Which entries of the flattened observation to use (default all, in order).
    """

    def __init__(self, low: Sequence[float], high: Sequence[float], bins, dims: Sequence[int] | None = None):
        self.low = np.asarray(low, dtype=float).ravel()
        self.high = np.asarray(high, dtype=float).ravel()
        if self.low.shape != self.high.shape or self.low.size == 0:
            raise ValueError(f"low and high must be non-empty and of one length; got {self.low.size} and "
                             f"{self.high.size}")
        for q, (lo, hi) in enumerate(zip(self.low, self.high, strict=True)):
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"low[{q}] = {float(lo)!r} and high[{q}] = {float(hi)!r} must be finite with "
                                 "low < high")
        b = np.broadcast_to(np.asarray(bins), self.low.shape)
        self.bins = np.array([check_int(f"bins[{q}]", x.item(), minimum=1)
                              for q, x in enumerate(b)], dtype=np.int64)
        self.dims = (np.arange(self.low.size) if dims is None
                     else np.array([check_int(f"dims[{q}]", d, minimum=0) for q, d in enumerate(dims)]))
        if self.dims.size != self.low.size:
            raise ValueError(f"dims must name one dimension per low/high entry ({self.low.size}); got {self.dims.size}")
        n = math.prod(int(b) for b in self.bins)
        if n >= 2**62:
            raise ValueError(f"bins must multiply to fewer than 2**62 observation ids; bins={self.bins.tolist()} "
                             f"give {n}")
        self.n = n
        # a width beyond the largest float (e.g. +-1e308) is computed on halved values: the same cells
        with np.errstate(over="ignore"):
            self._scale = np.where(np.isfinite(self.high - self.low), 1.0, 0.5)
        self._low = self.low * self._scale
        self._width = self.high * self._scale - self._low

    def __call__(self, obs) -> int:
        try:
            a = np.asarray(obs)
        except (ValueError, TypeError, OverflowError) as err:
            raise ValueError(f"observation {obs!r} must be an array of real numbers ({err})") from None
        if a.dtype.kind not in "biuf":
            raise ValueError(f"observation {obs!r} must hold real numbers; got dtype {a.dtype}")
        x = a.astype(float).ravel()
        if x.size <= self.dims.max():
            raise ValueError(f"observation has {x.size} entries; dims asks for entry {int(self.dims.max())}")
        v = x[self.dims]
        if np.isnan(v).any():
            q = int(np.flatnonzero(np.isnan(v))[0])
            raise ValueError(f"observation entry {int(self.dims[q])} is NaN (observation {obs!r})")
        v = np.clip(v, self.low, self.high) * self._scale
        cell = np.floor((v - self._low) / self._width * self.bins)
        return _mixed_radix(np.minimum(cell.astype(np.int64), self.bins - 1), self.bins)

    def __repr__(self) -> str:
        return f"BoxDiscretiser(dims={self.dims.tolist()}, bins={self.bins.tolist()})"


class ObservationIndexer:
    """Ids in the order observations are first seen, at most ``n`` of them.

    Arrays (and lists, tuples of numbers) are keyed by their float values after rounding to
    ``decimals`` (if given, 0..300); other observations (tuples of strings too) must be hashable
    and are keyed by themselves. NaN
    is refused (it equals nothing, not even itself, so it has no id). Seeing more than ``n``
    distinct observations raises a ``ValueError`` (choose a coarser encoder). The ids are kept
    across episodes, so one indexer serves a whole training run.
    """

    def __init__(self, n: int, decimals: int | None = None):
        self.n = check_int("n", n, minimum=1)
        self.decimals = None if decimals is None else check_int("decimals", decimals, minimum=0, maximum=300)
        self.ids: dict = {}

    def _key(self, obs):
        if isinstance(obs, np.ndarray | list | tuple):
            try:
                a = np.asarray(obs)
            except (ValueError, TypeError, OverflowError) as err:
                raise ValueError(f"observation {obs!r} must be an array of real numbers ({err})") from None
            if a.dtype.kind not in "biuf":
                if isinstance(obs, tuple) and a.dtype.kind in "USO":
                    return self._hashable(obs)  # e.g. ("left", "open"): keyed by itself
                raise ValueError(f"observation {obs!r} must hold real numbers; got dtype {a.dtype}")
            a = a.astype(float)
            if np.isnan(a).any():
                raise ValueError(f"observation {obs!r} holds NaN, which has no id")
            if self.decimals is not None:
                with np.errstate(over="ignore", invalid="ignore"):
                    r = np.round(a, self.decimals)
                a = np.where(np.isfinite(r), r, a) + 0.0  # + 0.0 merges -0.0 with 0.0; beyond float: unrounded
            return a.shape, a.tobytes()
        if isinstance(obs, float | np.floating) and math.isnan(obs):
            raise ValueError(f"observation {obs!r} is NaN, which has no id")
        return self._hashable(obs)

    @staticmethod
    def _hashable(obs):
        try:
            hash(obs)
        except TypeError:
            raise ValueError(f"observation {obs!r} must be hashable or an array of real numbers") from None
        if isinstance(obs, tuple) and any(isinstance(x, float) and math.isnan(x) for x in obs):
            raise ValueError(f"observation {obs!r} holds NaN, which has no id")
        return obs

    def __call__(self, obs) -> int:
        key = self._key(obs)
        i = self.ids.get(key)
        if i is None:
            if len(self.ids) >= self.n:
                raise ValueError(f"ObservationIndexer(n={self.n}) has seen {self.n} distinct observations and got "
                                 f"another ({obs!r}); raise n or use a coarser encoder")
            i = self.ids[key] = len(self.ids)
        return i

    def __repr__(self) -> str:
        return f"ObservationIndexer(n={self.n}, seen={len(self.ids)})"


#: The keys of an encoder given as data (run targets, ``marl-kstep run --encoder``).
ENCODER_SPEC_KEYS = {"box": ("kind", "low", "high", "bins", "dims"), "index": ("kind", "n", "decimals")}


def encoder_from_spec(spec, where: str = "encoder"):
    """An encoder from plain data: ``{"kind": "box", "low": [...], "high": [...], "bins": ..., "dims": ...}``
    (:class:`BoxDiscretiser`) or ``{"kind": "index", "n": N, "decimals": d}`` (:class:`ObservationIndexer`).
    Unknown kinds and keys are refused naming ``where``."""
    if not isinstance(spec, dict) or spec.get("kind") not in ENCODER_SPEC_KEYS:
        raise ValueError(f"{where} must be a dict with 'kind' one of {sorted(ENCODER_SPEC_KEYS)}; got {spec!r}")
    allowed = ENCODER_SPEC_KEYS[spec["kind"]]
    unknown = [key for key in spec if key not in allowed]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in {where}; allowed keys: {', '.join(allowed)}")
    args = {key: v for key, v in spec.items() if key != "kind"}
    try:
        return BoxDiscretiser(**args) if spec["kind"] == "box" else ObservationIndexer(**args)
    except TypeError as exc:  # a missing argument
        raise ValueError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
