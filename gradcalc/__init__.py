"""gradcalc: a reverse-mode autograd engine on NumPy with PyTorch's names.

``import gradcalc as torch`` runs PyTorch's autograd tutorials: tensors,
operations recording ``grad_fn`` graphs, ``backward``, ``autograd.grad``,
``no_grad``, constructors with ``manual_seed``. Defaults are PyTorch's
(float32 from Python floats, int64 from ints, ``requires_grad=False``).

The engine (and NumPy) is imported on first use of any of its names (PEP 562
``__getattr__``), not by ``import gradcalc``: the command line imports this
package for every run, and a one-shot scalar formula or ``--help`` must not pay
NumPy's start-up.
"""

from __future__ import annotations

import sys

from gradcalc.errors import GradError as GradError  # re-exported

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"


_ALIASES = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "long": "int64",
    "int": "int32",
}
"""PyTorch's dtype synonyms (``torch.float`` is float32, ``torch.int`` int32)."""
_ENGINE_NAMES = {
    "gradcalc._creation": (
        "Generator",
        "arange",
        "as_tensor",
        "default_generator",
        "empty",
        "empty_like",
        "eye",
        "from_numpy",
        "full",
        "full_like",
        "initial_seed",
        "linspace",
        "manual_seed",
        "normal",
        "ones",
        "ones_like",
        "rand",
        "rand_like",
        "randint",
        "randn",
        "randn_like",
        "seed",
        "tensor",
        "zeros",
        "zeros_like",
    ),
    "gradcalc._tensor": (
        "Size",
        "Tensor",
        "device",
        "dtype",
        "enable_grad",
        "float16",
        "float32",
        "float64",
        "get_default_device",
        "get_default_dtype",
        "int8",
        "int16",
        "int32",
        "int64",
        "is_grad_enabled",
        "no_grad",
        "set_default_device",
        "set_default_dtype",
        "set_grad_enabled",
        "uint8",
    ),
    "gradcalc._format": ("set_printoptions",),
    "gradcalc._recycle": ("empty_cache",),
}
"""Where each public name outside the registry lives (constructors, classes, grad
mode); the registry's functions (``gradcalc.ops.API``) come from ``_functions.exported()``."""
_HOME = {name: module for module, names in _ENGINE_NAMES.items() for name in names}
"""A name outside the registry is served from its own module (``from gradcalc import Tensor``
in the engine imports ``_tensor`` only, not every module ``_load`` binds)."""
_SUBMODULES = frozenset(
    {
        "api",
        "autograd",
        "builtins",
        "cli",
        "cuda",
        "distributed",
        "errors",
        "explain",
        "grammar",
        "graph",
        "interpreter",
        "jsonio",
        "limits",
        "lines",
        "nn",
        "ops",
        "parser",
        "pylang",
        "symbolic",
        "syntax",
    }
)
"""Public submodules: ``from gradcalc import pylang`` imports that module alone, never the
whole engine (``tests/test_boundaries.py`` checks the list against the package)."""
_state = {"loading": False, "loaded": False}


def _module(name: str) -> Any:
    """The module ``name``, imported: ``importlib.import_module`` without importing
    ``importlib`` (~0.3 ms of every command's start-up)."""
    __import__(name)
    return sys.modules[name]


def _load() -> None:
    """Import the engine and bind every public name here, once (what an eager import did),
    and ``__all__``: the registry's functions are known only once it is imported."""
    _state["loading"] = True
    try:
        names: dict[str, Any] = {}
        functions = _module("gradcalc._functions")  # completes the registry
        names.update(functions.exported())
        for module_name, exported in _ENGINE_NAMES.items():
            module = _module(module_name)
            names.update({name: getattr(module, name) for name in exported})
        names["autograd"] = _module("gradcalc.autograd")
        names["nn"] = _module("gradcalc.nn")
        names["bool"] = _module("gradcalc._tensor").bool_
        names.update({alias: names[target] for alias, target in _ALIASES.items()})
        names["__all__"] = sorted({*names, "GradError", "__version__"})
        globals().update(names)
        _state["loaded"] = True
    finally:
        _state["loading"] = False


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return _module(f"gradcalc.{name}")
    # Any other public name may be one of the engine's: load it once, then look again.
    # (Private names never load it: ``from gradcalc import _tensor`` imports a module.)
    public = name == "__all__" or not name.startswith("_")
    home = _HOME.get(name)
    if home is not None and not _state["loaded"]:
        _module("gradcalc.nn.functional")  # the registry, complete: methods
        value = getattr(_module(home), name)
        globals()[name] = value
        return value
    if public and not _state["loaded"] and not _state["loading"]:
        _load()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module 'gradcalc' has no attribute {name!r}")


def __dir__() -> list[str]:
    if not _state["loaded"]:
        _load()
    return sorted(globals())
