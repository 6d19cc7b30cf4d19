"""A pool of the large arrays the engine's elementwise ops write into.

A training step allocates and frees the same large arrays every iteration.
glibc's malloc gives freed blocks at the top of its heap back to the kernel
once they exceed its trim threshold (a few MB), and the next step then faults
every page in again: about 1,000 page faults per 4 MB array, which on these
machines can cost more than ``sin`` itself. So in a training step (ops
recorded for backward, and backward's own temporaries) large elementwise
results go into buffers this pool keeps a reference to; a buffer nobody else
references any more (its tensor died, backward let it go) is handed to the
next op of its shape and dtype instead of a fresh one. This is the idea of
PyTorch's caching allocator, limited to one step's working set: at the end
of every backward pass, free buffers that pass did not use are released, and
:func:`empty_cache` releases every free buffer at once.

The pool's reference is not an owner's: code that decides by reference count
whether a buffer is free to overwrite subtracts :func:`pooled` from it.
"""

from __future__ import annotations

import sys
import threading

from gradcalc import _numpy

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

np = _numpy.bind(globals())


class _NoArray:
    """``np.ndarray`` until NumPy is loaded: no value is one (a type check must not load it)."""


_ndarray: Any = _NoArray


def _with_numpy(numpy: Any) -> None:
    global _ndarray
    _ndarray = numpy.ndarray


_numpy.when_loaded(_with_numpy)

MIN_BYTES = 1 << 20
"""Smaller arrays are left to malloc, which recycles them without faulting."""
MAX_BYTES = 1 << 30
"""Pooled bytes (free or in use) beyond which new buffers are not pooled."""

_getrefcount = sys.getrefcount

_pool: dict[tuple, list[np.ndarray]] = {}
"""Pooled buffers by (shape, dtype), in use or free."""
_used_in: dict[int, int] = {}
"""id of each pooled buffer -> the backward pass during which it was last handed out."""
_state = {"pass": 0, "bytes": 0}
_lock = threading.Lock()
"""Held while the pool's lists and ids change: threads may train side by side."""


def pooled(array: Any) -> int:
    """1 if the pool holds a reference to ``array`` (to discount it), else 0."""
    return 1 if id(array) in _used_in else 0


def poolable(x: Any) -> bool:
    """Whether ``x`` is a float array large enough for its results to go to the pool."""
    return type(x) is _ndarray and x.dtype.kind == "f" and x.nbytes >= MIN_BYTES


def _free_refs() -> int:
    """What getrefcount reports, in the loops below, for a buffer only the pool holds."""
    arrays = [object()]  # any fresh object: reference counts do not depend on the type
    for array in arrays:
        return _getrefcount(array)
    return 0


_FREE = _free_refs()


def take(shape: tuple, dtype: Any) -> np.ndarray:
    """A C-contiguous buffer of ``shape`` and ``dtype`` that nothing else references."""
    with _lock:
        arrays = _pool.get((shape, dtype))
        if arrays:
            # Latest used first (likelier still in the CPU's caches); a hit moves last.
            for index in range(len(arrays) - 1, -1, -1):
                array = arrays[index]
                if _getrefcount(array) <= _FREE:
                    _used_in[id(array)] = _state["pass"]
                    if index != len(arrays) - 1:
                        arrays.append(arrays.pop(index))
                    return array
        array = np.empty(shape, dtype)
        if _state["bytes"] + array.nbytes <= MAX_BYTES:
            _pool.setdefault((shape, dtype), []).append(array)
            _used_in[id(array)] = _state["pass"]
            _state["bytes"] += array.nbytes
        return array


def unary(ufunc: np.ufunc, x: np.ndarray) -> np.ndarray:
    """``ufunc(x)`` for a large C-contiguous ``x``, written into a pooled buffer."""
    if not x.flags.c_contiguous:
        return ufunc(x)
    return ufunc(x, out=take(x.shape, x.dtype))


def binary(ufunc: np.ufunc, x: np.ndarray, y: Any) -> np.ndarray:
    """``ufunc(x, y)`` whose result has ``x``'s shape and dtype, into a pooled buffer."""
    if not x.flags.c_contiguous:
        return ufunc(x, y)
    return ufunc(x, y, out=take(x.shape, x.dtype))


def _release(keep_used_since: int | None) -> None:
    """Drop free buffers not handed out since pass ``keep_used_since`` (all if None)."""
    if not _pool:
        return
    with _lock:
        for key in list(_pool):
            arrays = _pool[key]
            kept = []
            for array in arrays:
                if _getrefcount(array) > _FREE or (
                    keep_used_since is not None and _used_in[id(array)] >= keep_used_since
                ):
                    kept.append(array)
                else:
                    del _used_in[id(array)]
                    _state["bytes"] -= array.nbytes
            if kept:
                _pool[key] = kept
            else:
                del _pool[key]


def end_of_pass() -> None:
    """Called after each backward pass: release free buffers it did not use."""
    _release(_state["pass"])
    _state["pass"] += 1


def empty_cache() -> None:
    """Release every free buffer the engine keeps for reuse (memory goes back to malloc)."""
    _release(None)


def held_bytes() -> int:
    """Bytes of free buffers the pool holds (what :func:`empty_cache` would release)."""
    total = 0
    for arrays in _pool.values():
        for array in arrays:
            if _getrefcount(array) <= _FREE:
                total += array.nbytes
    return total
