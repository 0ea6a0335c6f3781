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

from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

from ..validation import check_int

__all__ = ["BoxDiscretiser", "ObservationIndexer", "space_encoder"]


def _mixed_radix(digits, radix) -> int:
    """``((d_0 * r_1 + d_1) * r_2 + d_2) ...``: the first digit most significant."""
    code = 0
    for d, r in zip(digits, radix, strict=True):
        code = code * int(r) + int(d)
    return code


class _SpaceEncoder:
    def __init__(self, space):
        if isinstance(space, spaces.Discrete):
            self.start = np.array([int(space.start)])
            self.nvec = np.array([int(space.n)])
        else:
            self.nvec = np.asarray(space.nvec, dtype=np.int64).ravel()
            self.start = np.asarray(getattr(space, "start", np.zeros_like(space.nvec)), dtype=np.int64).ravel()
        self.n = int(np.prod(self.nvec))
        self.space = space

    def __call__(self, obs) -> int:
        x = np.asarray(obs, dtype=np.int64).ravel() - self.start
        if x.shape != self.nvec.shape or np.any(x < 0) or np.any(x >= self.nvec):
            raise ValueError(f"observation {obs!r} is not in {self.space}")
        return _mixed_radix(x, self.nvec)

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
    cells; the id is the mixed-radix index of the cells (first dimension most significant),
    so :math:`O = \prod_q \text{bins}_q`.

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
        self.n = int(np.prod(self.bins))

    def __call__(self, obs) -> int:
        x = np.asarray(obs, dtype=float).ravel()
        if x.size <= self.dims.max():
            raise ValueError(f"observation has {x.size} entries; dims asks for entry {int(self.dims.max())}")
        v = x[self.dims]
        cell = np.floor((v - self.low) / (self.high - self.low) * self.bins).astype(np.int64)
        return _mixed_radix(np.clip(cell, 0, self.bins - 1), self.bins)

    def __repr__(self) -> str:
        return f"BoxDiscretiser(dims={self.dims.tolist()}, bins={self.bins.tolist()})"


class ObservationIndexer:
    """Ids in the order observations are first seen, at most ``n`` of them.

    Arrays are keyed by their bytes after rounding to ``decimals`` (if given). Seeing more than
    ``n`` distinct observations raises a ``ValueError`` (choose a coarser encoder). The ids are
    kept across episodes, so one indexer serves a whole training run.
    """

    def __init__(self, n: int, decimals: int | None = None):
        self.n = check_int("n", n, minimum=1)
        self.decimals = None if decimals is None else check_int("decimals", decimals, minimum=0)
        self.ids: dict = {}

    def _key(self, obs):
        if isinstance(obs, np.ndarray | list | tuple):
            a = np.asarray(obs, dtype=float)
            if self.decimals is not None:
                a = np.round(a, self.decimals) + 0.0  # + 0.0 merges -0.0 with 0.0
            return a.shape, a.tobytes()
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
