"""Large arrays backward has finished with, reused by the next step's ufuncs.

A training step allocates and frees the same large arrays every iteration.
glibc's malloc gives freed blocks at the top of its heap back to the kernel
once they exceed its trim threshold (a few MB), and the next step then
faults every page in again: about 1,000 page faults per 4 MB array, which on
these machines costs more than ``sin`` itself. Backward knows when an array
it saved dies; keeping those for one step and writing the next step's
elementwise results into them removes the faults. This is the idea of
PyTorch's caching allocator, limited to one step's working set: whatever the
following step does not reuse is released at the end of its backward, and
:func:`empty_cache` releases everything at once.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

MIN_BYTES = 1 << 20
"""Smaller arrays are left to malloc, which recycles them without faulting."""

_getrefcount = sys.getrefcount
_ndarray = np.ndarray

_kept: dict[tuple, list[np.ndarray]] = {}
"""Arrays released during the running (or last) backward pass."""
_older: dict[tuple, list[np.ndarray]] = {}
"""Arrays released during the pass before it and not reused since."""


def _reusable(array: np.ndarray) -> bool:
    return (
        array.nbytes >= MIN_BYTES
        and array.base is None
        and array.flags.writeable
        and array.flags.c_contiguous
    )


def keep_all(values: tuple) -> None:
    """Keep each large array of ``values`` that only the tuple references."""
    for value in values:
        if type(value) is _ndarray:
            refs = _getrefcount(value)
            if refs <= _ALONE_IN_TUPLE and _reusable(value):
                _kept.setdefault((value.shape, value.dtype), []).append(value)


def keep(array: Any) -> None:
    """Keep ``array`` if it is large and only the caller's one variable holds it."""
    if type(array) is _ndarray:
        refs = _getrefcount(array)
        if refs <= _ALONE_IN_CALLER and _reusable(array):
            _kept.setdefault((array.shape, array.dtype), []).append(array)


def _count_in_tuple(values: tuple) -> int:
    for value in values:
        return _getrefcount(value)
    return 0


def _count_in_caller(array: Any) -> int:
    return _getrefcount(array)


def _measured() -> tuple[int, int]:
    """What ``getrefcount`` reports for an array nothing else holds, as
    :func:`keep_all` and :func:`keep` see it (interpreters count differently)."""
    in_tuple = _count_in_tuple((np.empty(0),))
    local = np.empty(0)
    return in_tuple, _count_in_caller(local)


_ALONE_IN_TUPLE, _ALONE_IN_CALLER = _measured()


def take(shape: tuple, dtype: Any) -> np.ndarray | None:
    """A kept array of ``shape`` and ``dtype`` (nobody else holds it), or None."""
    key = (shape, dtype)
    for pool in (_older, _kept):
        found = pool.get(key)
        if found:
            try:
                return found.pop()
            except IndexError:  # another thread took the last one
                return None
    return None


def unary(ufunc: np.ufunc, x: np.ndarray) -> np.ndarray:
    """``ufunc(x)`` written into a kept array when one fits (same shape and dtype)."""
    out = take(x.shape, x.dtype)
    return ufunc(x) if out is None else ufunc(x, out=out)


def binary(ufunc: np.ufunc, x: np.ndarray, y: Any) -> np.ndarray:
    """``ufunc(x, y)`` for a result of ``x``'s shape and dtype, into a kept array if any."""
    out = take(x.shape, x.dtype)
    return ufunc(x, y) if out is None else ufunc(x, y, out=out)


def end_of_pass() -> None:
    """Release what the previous pass kept and this one did not reuse."""
    global _kept, _older
    _older.clear()
    _older, _kept = _kept, _older
    for key in [key for key, arrays in _older.items() if not arrays]:
        del _older[key]


def empty_cache() -> None:
    """Release every array kept for reuse (memory goes back to malloc)."""
    _kept.clear()
    _older.clear()


def held_bytes() -> int:
    """Bytes currently kept for reuse."""
    return sum(a.nbytes for pool in (_kept, _older) for arrays in pool.values() for a in arrays)
