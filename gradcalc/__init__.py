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

import importlib
from typing import Any

from gradcalc.errors import GradError as GradError  # re-exported

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
    "gradcalc._functions": (
        "abs",
        "absolute",
        "add",
        "all",
        "allclose",
        "amax",
        "amin",
        "any",
        "argmax",
        "argmin",
        "bmm",
        "broadcast_to",
        "cat",
        "ceil",
        "clamp",
        "clip",
        "clone",
        "concat",
        "concatenate",
        "cos",
        "div",
        "dot",
        "eq",
        "equal",
        "exp",
        "exp2",
        "flatten",
        "float_power",
        "floor",
        "floor_divide",
        "ge",
        "gt",
        "index_select",
        "inner",
        "is_tensor",
        "isclose",
        "isfinite",
        "isnan",
        "le",
        "log",
        "log1p",
        "log2",
        "log10",
        "log_softmax",
        "logical_and",
        "logical_not",
        "logical_or",
        "logsumexp",
        "lt",
        "masked_fill",
        "matmul",
        "max",
        "maximum",
        "mean",
        "min",
        "minimum",
        "mm",
        "mul",
        "mv",
        "narrow",
        "ne",
        "neg",
        "negative",
        "norm",
        "numel",
        "outer",
        "permute",
        "pow",
        "prod",
        "reciprocal",
        "relu",
        "remainder",
        "reshape",
        "round",
        "rsqrt",
        "rsub",
        "select",
        "sigmoid",
        "sign",
        "sin",
        "softmax",
        "softplus",
        "sqrt",
        "square",
        "squeeze",
        "stack",
        "std",
        "sub",
        "sum",
        "swapaxes",
        "t",
        "tan",
        "tanh",
        "transpose",
        "true_divide",
        "trunc",
        "unsqueeze",
        "var",
        "where",
    ),
    "gradcalc._tensor": (
        "Size",
        "Tensor",
        "dtype",
        "enable_grad",
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "is_grad_enabled",
        "no_grad",
        "set_grad_enabled",
        "uint8",
    ),
    "gradcalc._format": ("set_printoptions",),
    "gradcalc._recycle": ("empty_cache",),
}
"""Where each public name lives; ``_load`` binds them all on first use."""
__all__ = sorted(
    {name for exported in _ENGINE_NAMES.values() for name in exported}
    | set(_ALIASES)
    | {"GradError", "__version__", "autograd", "bool", "nn"}
)
_SUBMODULES = frozenset(
    {
        "api",
        "builtins",
        "errors",
        "graph",
        "interpreter",
        "limits",
        "ops",
        "parser",
        "scalar",
        "syntax",
    }
)
_state = {"loading": False}


def _load() -> None:
    """Import the engine and bind every public name here, once (what an eager import did)."""
    _state["loading"] = True
    try:
        names: dict[str, Any] = {}
        importlib.import_module("gradcalc._functions")  # installs the Tensor methods
        for module_name, exported in _ENGINE_NAMES.items():
            module = importlib.import_module(module_name)
            names.update({name: getattr(module, name) for name in exported})
        names["autograd"] = importlib.import_module("gradcalc.autograd")
        names["nn"] = importlib.import_module("gradcalc.nn")
        names["bool"] = importlib.import_module("gradcalc._tensor").bool_
        names.update({alias: names[target] for alias, target in _ALIASES.items()})
        globals().update(names)
    finally:
        _state["loading"] = False


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"gradcalc.{name}")
    if name in _EXPORTS and not _state["loading"]:
        _load()
        return globals()[name]
    raise AttributeError(f"module 'gradcalc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


_EXPORTS = frozenset(__all__)
