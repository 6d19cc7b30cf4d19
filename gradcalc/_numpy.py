"""NumPy, imported the first time the engine needs it.

All-scalar work runs on the engine's float backend (``_tensor.float_tensor``)
and never needs NumPy; importing it is ~60% of a one-shot command's time
(``python -c "import numpy"`` 75 ms against ``python -c pass`` 13 ms on a quiet
2-core machine). So the engine's modules bind ``np`` to :data:`numpy` here:

* before NumPy is loaded, ``np`` is a stand-in: reading an attribute of it
  loads NumPy, so code that needs NumPy simply gets it. Module bodies must not
  read ``np`` (tests/test_boundaries.py imports the engine and checks NumPy is
  not loaded); what they name at import, as ``defop(..., forward=late.exp)``
  does, comes from :data:`late`: a :class:`Late` that loads NumPy when first
  called and that the registry replaces by the real function at load;
* :func:`load` imports NumPy once, rebinds ``np`` in every module that called
  :func:`bind`, and runs the hooks of :func:`when_loaded` (the registry's
  forwards, dtype objects, the C extension's NumPy types). From then on every
  ``np.x`` is a plain module attribute read: no cost once loaded.

If NumPy was already imported when gradcalc is (a user's program), nothing is
deferred.
"""

from __future__ import annotations

import contextvars
import sys
import threading
import warnings
from collections.abc import Callable

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

_loaded: Any = None
_bound: list[dict[str, Any]] = []
_hooks: list[Callable[[Any], None]] = []
_importing = False


class Late:
    """``np.<name>`` read before NumPy loaded: calling it loads NumPy and calls the real one."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def resolve(self) -> Any:
        return getattr(load(), self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<numpy.{self.name}, loaded at first use>"


class _StandIn:
    """``np`` until NumPy is loaded (see the module docstring)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(load(), name)


class _LateNames:
    """``late.exp``: NumPy's ``exp`` as a :class:`Late` (itself, once NumPy is loaded)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return Late(name) if _loaded is None else getattr(_loaded, name)


numpy: Any = _StandIn()
"""What engine modules bind as ``np`` (see :func:`bind`)."""
late: Any = _LateNames()
"""NumPy functions named at import time (see the module docstring)."""


def bind(module_globals: dict[str, Any]) -> Any:
    """``np = _numpy.bind(globals())``: the stand-in now, NumPy itself once loaded."""
    if _loaded is not None:
        return _loaded
    _bound.append(module_globals)
    return numpy


def when_loaded(hook: Callable[[Any], None]) -> None:
    """Run ``hook(numpy)`` when NumPy is loaded (now, if it is)."""
    if _loaded is not None:
        hook(_loaded)
    else:
        _hooks.append(hook)


def resolve(value: Any) -> Any:
    """``value``, or the real NumPy function a :class:`Late` stands for (loaded by now)."""
    return value.resolve() if type(value) is Late else value


def is_loaded() -> bool:
    return _loaded is not None


def load() -> Any:
    """Import NumPy (once) and finish everything that waited for it. Another thread
    asking meanwhile waits for it (it would otherwise see a half-imported NumPy)."""
    global _loaded, _importing
    if _loaded is not None:
        return _loaded
    with _load_lock:
        if _loaded is not None:
            return _loaded
        if _importing:  # a hook of this thread reading ``np`` while the others run
            return sys.modules["numpy"]
        _importing = True
        try:
            import numpy as real

            for module_globals in _bound:
                module_globals["np"] = real
            for hook in _hooks:
                hook(real)
            _loaded = real
            _bound.clear()
            _hooks.clear()
        finally:
            _importing = False
        return real


_load_lock = threading.RLock()


def errstate() -> Any:
    """``np.errstate(all="ignore")`` when NumPy is loaded; nothing to silence otherwise
    (a NumPy loaded inside the block warns only from gradcalc's frames, which
    ``_tensor`` filters), nor inside another such block of this thread or task: a batch
    request silences NumPy once, not again in its interpreter and its backward pass
    (an ``np.errstate`` costs ~1 µs)."""
    if _loaded is None or _silenced.get():
        return NOTHING
    return _Silence()


class _Silence:
    """``np.errstate(all="ignore")``, marking the context as silenced while it lasts."""

    __slots__ = ("state", "token")

    def __enter__(self) -> None:
        self.state = _loaded.errstate(all="ignore")
        self.state.__enter__()
        self.token = _silenced.set(True)

    def __exit__(self, *exc: object) -> None:
        _silenced.reset(self.token)
        self.state.__exit__(*exc)


def quiet() -> bool:
    """Whether both `errstate` and `ignoring_warnings` are in force here (a batch block
    sets them once for its requests): a caller that would enter them may skip both."""
    return _ignoring.get() and (_loaded is None or _silenced.get())


def ignoring_warnings() -> Any:
    """``warnings.catch_warnings()`` with RuntimeWarning ignored: NumPy's own warnings
    (the mean of an empty slice) say what a non-finite value already shows, and must not
    reach a terminal. Nothing again inside such a block of this thread or task: a batch
    block sets the filter once for its requests, not once per request (~2 µs each)."""
    if _ignoring.get():
        return NOTHING
    return _IgnoreWarnings()


class _IgnoreWarnings:
    __slots__ = ("caught", "token")

    def __enter__(self) -> None:
        self.caught = warnings.catch_warnings()
        self.caught.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)
        self.token = _ignoring.set(True)

    def __exit__(self, *exc: object) -> None:
        _ignoring.reset(self.token)
        self.caught.__exit__(*exc)


class _Nothing:
    """A context manager that does nothing (``contextlib.nullcontext()``, without importing
    contextlib, ~1 ms of start-up): `NOTHING`, for any module of the engine."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


NOTHING = _Nothing()
_silenced: contextvars.ContextVar[bool] = contextvars.ContextVar("silenced", default=False)
"""Whether an `errstate` block of gradcalc's is running in this context (per thread and
task, as NumPy's own error state)."""
_ignoring: contextvars.ContextVar[bool] = contextvars.ContextVar("ignoring", default=False)
"""Whether an `ignoring_warnings` block is running in this context."""


if "numpy" in sys.modules:
    load()


class _Float64Dtype(str):
    """``Float64.dtype``: the name ``"float64"`` with NumPy's ``kind`` and ``itemsize``."""

    __slots__ = ()
    kind = "f"
    itemsize = 8

    @property
    def name(self) -> str:
        return str(self)


class Float64(float):
    """A float backend's 0-d result as code that also takes arrays reads it (``shape``,
    ``ndim``, ``size``, ``dtype``, ``item()``, ``tolist()``, as NumPy's float64
    scalar has them), without NumPy. ``np.asarray`` makes it a float64 array."""

    __slots__ = ()
    shape: tuple = ()
    ndim = 0
    size = 1
    dtype = _Float64Dtype("float64")

    def item(self) -> float:
        return float(self)

    def tolist(self) -> float:
        return float(self)
