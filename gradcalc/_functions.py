"""The PyTorch-named functions, as thin front ends to :mod:`gradcalc.ops`.

Each function normalises its arguments the way PyTorch does (``dim``,
``keepdim``, varargs shapes, Python numbers on either side, PyTorch's dtype
promotion where NumPy's differs) and runs one registry op, or a few for
composites. Each is declared once, with ``@O.deffunction`` (see "Public
functions" in :mod:`gradcalc.ops`); the elementwise functions of ops declared
public with ``defop(doc=...)`` are generated here (`_front_end`). Importing
this module derives from the registry the Tensor methods (so ``x.exp()`` and
``gradcalc.exp(x)`` are one code path) and the names ``gradcalc`` exports
(`exported`); ``gradcalc.nn.functional``, which imports it, declares the rest.

Parameter annotations are read by the formula language to convert its
arguments (``gradcalc/builtins.py``): ``int``, ``float``, ``bool``, and the
aliases `Dims`, `Indices`, `Tensors` below.
"""

from __future__ import annotations

import builtins
import math
from collections import namedtuple
from collections.abc import Callable, Sequence

from gradcalc import _numpy, _tensor
from gradcalc import ops as O
from gradcalc._tensor import (
    Size,
    Tensor,
    apply1,
    apply2,
    applyn,
    as_np_dtype,
    binary_method,
    default_float,
    dtype_of,
    unary_function,
)

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any, TypeAlias

np = _numpy.bind(globals())

_wrap = _tensor.wrap
_py_sum = builtins.sum
_py_max = builtins.max
_py_min = builtins.min
_py_abs = builtins.abs
_py_round = builtins.round
_py_any = builtins.any
_NUMBER = (int, float, bool)
_KIND_RANK = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}

Dims: TypeAlias = "int | Sequence[int] | None"
"""One dim or several (a reduction's ``dim``)."""
Indices: TypeAlias = "Any"
"""Whole-number indices: a tensor, array or list of them."""
Tensors: TypeAlias = "Sequence[Any]"
"""Tensors to join (``cat``, ``stack``); a tensor stands for the list of its rows."""

return_max = namedtuple("max", ["values", "indices"])
return_min = namedtuple("min", ["values", "indices"])


# ---------------------------------------------------------------- operands and dtypes


def _as_tensor(x: Any, like: Tensor | None = None) -> Tensor:
    """A Tensor for an operand given as a Tensor, array, list or number."""
    if type(x) is Tensor:
        return x
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (bool, int, float)) and like is not None:
        return _wrap(np.asarray(x, dtype=_scalar_dtype(x, like._data.dtype))[()])
    return _tensor.make_tensor(x)


def _scalar_dtype(x: Any, base: np.dtype) -> np.dtype:
    """The dtype a Python number takes next to a tensor of dtype ``base`` (PyTorch rules)."""
    if isinstance(x, bool):
        return base
    if isinstance(x, int):
        return base if base.kind != "b" else np.dtype(np.int64)
    return base if base.kind in "fc" else default_float()


def _operand(x: Any) -> Any:
    """Python numbers stay numbers (weak dtype); NumPy scalars become numbers; others Tensors."""
    if type(x) in (int, float, bool):
        return x
    if isinstance(x, np.generic):
        return x.item()
    return _as_tensor(x)


def _kind(x: Tensor) -> str:
    """NumPy's dtype kind of ``x``'s data ("f" for a float backend's float, "b" for its
    bool), without making a NumPy value of it (which imports NumPy)."""
    raw = x._raw
    if type(raw) is float:
        return "f"
    return "b" if type(raw) is bool else raw.dtype.kind


def _inexact(x: Tensor) -> bool:
    """Whether ``x`` holds floats (or complex numbers): a float backend's value does."""
    raw = x._raw
    return type(raw) is float or (type(raw) is not bool and raw.dtype.kind in "fc")


def _float_of(x: Tensor) -> Tensor:
    return _wrap(np.asarray(x._data).astype(default_float())[()])


def _promote(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Cast one side so the pair computes in PyTorch's result dtype, not NumPy's."""
    dx, dy = x._data.dtype, y._data.dtype
    rx, ry = _KIND_RANK.get(dx.kind, 2), _KIND_RANK.get(dy.kind, 2)
    if rx != ry:
        if rx < ry:
            return to(x, dy), y
        return x, to(y, dx)
    nx, ny = x._data.ndim, y._data.ndim
    if nx == 0 and ny > 0:
        return to(x, dy), y
    if ny == 0 and nx > 0:
        return x, to(y, dx)
    return x, y


def _binary(op: O.Op, x: Any, y: Any) -> Tensor:
    """A binary op with PyTorch's dtype rules for Python numbers and mixed tensors."""
    ty = type(y)
    if ty is Tensor:
        if x.dtype is not y.dtype:
            x, y = _promote(x, y)
    elif ty is float:
        if not _inexact(x):
            x = _float_of(x)
    elif ty is not int and ty is not bool:
        if not isinstance(y, (Tensor, np.ndarray, np.generic, list, tuple)):
            return NotImplemented
        y = _operand(y)
        return _binary(op, x, y)
    return apply2(op, x, y)


def _swapped(op: O.Op, x: Tensor, y: Any) -> Tensor:
    """``y op x`` for a non-tensor ``y`` on the left."""
    y = _operand(y)
    if type(y) is Tensor:
        return _binary(op, y, x)
    if type(y) is float and not _inexact(x):
        x = _float_of(x)
    return apply2(op, y, x)


# ---------------------------------------------------------------- arithmetic


@O.deffunction("x + alpha * y, elementwise (x + y by default)", elementwise=True)
def add(input: Any, other: Any, *, alpha: float = 1) -> Tensor:
    x = _as_tensor(input)
    if alpha != 1:
        other = (
            mul(_as_tensor(other, x), alpha) if not isinstance(other, _NUMBER) else other * alpha
        )
    return _binary(O.ADD, x, other)


@O.deffunction("x - alpha * y, elementwise (x - y by default)", elementwise=True)
def sub(input: Any, other: Any, *, alpha: float = 1) -> Tensor:
    x = _as_tensor(input)
    if alpha != 1:
        other = (
            mul(_as_tensor(other, x), alpha) if not isinstance(other, _NUMBER) else other * alpha
        )
    return _binary(O.SUB, x, other)


@O.deffunction(
    "y - x, elementwise (PyTorch's reversed subtraction)", elementwise=True, method=False
)
def rsub(input: Any, other: Any) -> Tensor:
    """``other - input``."""
    return _rsub(_as_tensor(input), other)


def _rsub(x: Tensor, other: Any) -> Tensor:
    other = _operand(other)
    if type(other) is Tensor:
        return _binary(O.SUB, other, x)
    if type(other) is float and not _inexact(x):
        x = _float_of(x)
    return apply1(O.RSUB, x, other)


@O.deffunction("x * y, elementwise", elementwise=True)
def mul(input: Any, other: Any) -> Tensor:
    return _binary(O.MUL, _as_tensor(input), other)


@O.deffunction("x / y, elementwise", elementwise=True, aliases=("true_divide",))
def div(input: Any, other: Any, *, rounding_mode: str | None = None) -> Tensor:
    x = _as_tensor(input)
    if rounding_mode == "floor":
        return floor_divide(x, other)
    if rounding_mode == "trunc":
        return trunc(div(x, other))
    if _kind(x) in "biu":
        other_kind = _kind(other) if isinstance(other, Tensor) else "i"
        if not isinstance(other, float) and other_kind in "biu":
            x = _float_of(x)
    return _binary(O.DIV, x, other)


def _rdiv(x: Tensor, other: Any) -> Tensor:
    other = _operand(other)
    if type(other) is Tensor:
        return div(other, x)
    if _kind(x) in "biu":
        x = _float_of(x)
    return apply2(O.MUL, apply1(O.RECIPROCAL, x), other)


@O.deffunction("1 / x, elementwise", elementwise=True)
def reciprocal(input: Any) -> Tensor:
    x = _as_tensor(input)
    if _kind(x) in "biu":
        x = _float_of(x)
    return apply1(O.RECIPROCAL, x)


@O.deffunction("x to the power y, elementwise (same as x ** y)", elementwise=True)
def pow(input: Any, exponent: Any) -> Tensor:
    if not isinstance(input, Tensor):
        return _rpow(_as_tensor(exponent), input)
    x = input
    kind = type(exponent)
    if (
        kind is not int
        and kind is not float
        and _numpy.is_loaded()
        and isinstance(exponent, np.generic)
    ):
        exponent = exponent.item()
    if type(exponent) in (int, float):
        if type(exponent) is float and not _inexact(x):
            x = _float_of(x)
        return apply1(O.POW, x, exponent)
    exponent = _as_tensor(exponent)
    if exponent.dtype is not x.dtype:
        x, exponent = _promote(x, exponent)
    return apply2(O.POW_TENSOR, x, exponent)


def _rpow(x: Tensor, base: Any) -> Tensor:
    base = _operand(base)
    if type(base) is Tensor:
        return pow(base, x)
    if type(base) is float and not _inexact(x):
        x = _float_of(x)
    return apply1(O.RPOW, x, base)


@O.deffunction("x to the power y in float64, elementwise", elementwise=True)
def float_power(input: Any, exponent: Any) -> Tensor:
    return pow(to(_as_tensor(input), np.float64), exponent)


@O.deffunction("x ** 2, elementwise", elementwise=True)
def square(input: Any) -> Tensor:
    return pow(_as_tensor(input), 2)


@O.deffunction("x modulo y, with the sign of y, elementwise (x % y)", elementwise=True)
def remainder(input: Any, other: Any) -> Tensor:
    return _binary(O.REMAINDER, _as_tensor(input), other)


@O.deffunction(
    "floor(x / y), elementwise (x // y; no gradient)",
    elementwise=True,
    differentiable=False,
    builtin=False,
)
def floor_divide(input: Any, other: Any) -> Tensor:
    return _binary(O.FLOOR_DIVIDE, _as_tensor(input), other)


# ---------------------------------------------------------------- elementwise functions


def _floating(input: Any) -> Tensor:
    """``input`` as a Tensor, ints and bools as the default float (PyTorch's float ops)."""
    x = _as_tensor(input)
    return _float_of(x) if _kind(x) in "biu" else x


@O.deffunction(
    "x rounded to the nearest whole number (or to decimals places), elementwise", elementwise=True
)
def round(input: Any, decimals: int = 0) -> Tensor:
    x = _as_tensor(input)
    if decimals:
        scale = 10.0**decimals
        return apply1(O.ROUND, x * scale) / scale
    return apply1(O.ROUND, x)


@O.deffunction("x rounded toward 0, elementwise (derivative 0)", elementwise=True)
def trunc(input: Any) -> Tensor:
    x = _as_tensor(input)
    return where(x >= 0, apply1(O.FLOOR, x), apply1(O.CEIL, x))


@O.deffunction("base-2 logarithm, elementwise", elementwise=True)
def log2(input: Any) -> Tensor:
    return apply1(O.LOG, _floating(input)) / math.log(2.0)


@O.deffunction("base-10 logarithm, elementwise", elementwise=True)
def log10(input: Any) -> Tensor:
    return apply1(O.LOG, _floating(input)) / math.log(10.0)


@O.deffunction("2 to the power x, elementwise", elementwise=True)
def exp2(input: Any) -> Tensor:
    return _rpow(_as_tensor(input), 2.0)


@O.deffunction("1 / sqrt(x), elementwise", elementwise=True)
def rsqrt(input: Any) -> Tensor:
    return reciprocal(apply1(O.SQRT, _floating(input)))


@O.deffunction("log(1 + exp(beta*x)) / beta, a smooth relu", elementwise=True, method=False)
def softplus(input: Any, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    return apply1(O.SOFTPLUS, _as_tensor(input), beta, threshold)


@O.deffunction(
    "limit x to [min, max] elementwise; either bound may be left out",
    elementwise=True,
    aliases=("clip",),
)
def clamp(input: Any, min: Any = None, max: Any = None) -> Tensor:
    x = _as_tensor(input)
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        out = x
        if min is not None:
            out = maximum(out, _as_tensor(min, x))
        if max is not None:
            out = minimum(out, _as_tensor(max, x))
        return out
    if min is None and max is None:
        raise ValueError("At least one of 'min' or 'max' must not be None")
    if (type(min) is float or type(max) is float) and not _inexact(x):
        x = _float_of(x)
    return apply1(O.CLAMP, x, min, max)


@O.deffunction("elementwise larger of x and y (ties share the gradient)", elementwise=True)
def maximum(input: Any, other: Any) -> Tensor:
    x = _as_tensor(input)
    return _binary(O.MAXIMUM, x, _as_tensor(other, x))


@O.deffunction("elementwise smaller of x and y (ties share the gradient)", elementwise=True)
def minimum(input: Any, other: Any) -> Tensor:
    x = _as_tensor(input)
    return _binary(O.MINIMUM, x, _as_tensor(other, x))


def _where_method(self: Tensor, condition: Any, other: Any) -> Tensor:
    """``x.where(condition, y)``: ``x`` where ``condition`` holds, else ``y``."""
    return where(condition, self, other)


@O.deffunction(
    "elementwise choice: x where condition is true, else y",
    elementwise=True,
    method=_where_method,
)
def where(condition: Any, input: Any = None, other: Any = None) -> Any:
    """``input`` where ``condition`` holds, else ``other`` (either may be a number)."""
    cond = np.asarray(condition._data if isinstance(condition, Tensor) else condition, dtype=bool)
    if input is None and other is None:
        return tuple(_wrap(i) for i in np.nonzero(cond))
    x = _operand(input)
    y = _operand(other)
    if type(x) is not Tensor and type(y) is not Tensor:
        x = _as_tensor(input)
    if type(x) is Tensor and type(y) is Tensor and x.dtype is not y.dtype:
        x, y = _promote(x, y)
    elif type(y) is float and type(x) is Tensor and not _inexact(x):
        x = _float_of(x)
    elif type(x) is float and type(y) is Tensor and not _inexact(y):
        y = _float_of(y)
    return apply2(O.WHERE, x, y, cond)


# ---------------------------------------------------------------- reductions


def _dim_arg(dim: Any, axis: Any) -> Any:
    return axis if dim is None else dim


@O.deffunction("sum of the elements, over all axes or the given axis")
def sum(
    input: Any, dim: Dims = None, keepdim: bool = False, *, dtype: Any = None, axis: Dims = None
) -> Tensor:
    x = _as_tensor(input)
    if dtype is not None:
        x = to(x, dtype)
    elif _kind(x) == "b":
        x = to(x, np.int64)
    dim = _dim_arg(dim, axis)
    if dim is None and not keepdim:
        return apply1(O.SUM, x)
    return apply1(O.SUM_DIM, x, O._dims(dim, x._data.ndim), bool(keepdim))


@O.deffunction("mean of the elements, over all axes or the given axis")
def mean(
    input: Any, dim: Dims = None, keepdim: bool = False, *, dtype: Any = None, axis: Dims = None
) -> Tensor:
    x = _as_tensor(input)
    if dtype is not None:
        x = to(x, dtype)
    if not _inexact(x):
        raise RuntimeError(
            "mean(): could not infer output dtype. Input dtype must be either a floating point "
            f"or complex dtype. Got: {dtype_of(x._data.dtype).name.capitalize()}"
        )
    dim = _dim_arg(dim, axis)
    if dim is None and not keepdim:
        return apply1(O.MEAN, x)
    return apply1(O.MEAN_DIM, x, O._dims(dim, x._data.ndim), bool(keepdim))


@O.deffunction("product of the elements, over all axes or the given axis")
def prod(
    input: Any, dim: Dims = None, keepdim: bool = False, *, dtype: Any = None, axis: Dims = None
) -> Tensor:
    x = _as_tensor(input)
    if dtype is not None:
        x = to(x, dtype)
    dim = _dim_arg(dim, axis)
    if dim is None:
        return apply1(O.PROD, x)
    return apply1(O.PROD_DIM, x, O._dims(dim, x._data.ndim), bool(keepdim))


def _extreme(op_all: O.Op, op_dim: O.Op, pair: Any, arg: Any, result: Any) -> Any:
    def reduce(input: Any, dim: Any = None, keepdim: bool = False, *, axis: Any = None) -> Any:
        x = _as_tensor(input)
        if isinstance(dim, Tensor):
            return pair(x, dim)
        dim = _dim_arg(dim, axis)
        if dim is None:
            if x._data.size == 0:
                raise RuntimeError(
                    f"{op_all.name}(): Expected reduction dim to be specified for "
                    "input.numel() == 0."
                )
            return apply1(op_all, x)
        dims = O._dims(dim, x._data.ndim)
        if not dims:  # 0-d input
            return result(apply1(O.CLONE, x), _wrap(np.int64(0)))
        values = apply1(op_dim, x, dims[0], bool(keepdim))
        indices = _wrap(np.asarray(arg(x._data, axis=dims[0], keepdims=bool(keepdim)))[()])
        return result(values, indices)

    return reduce


max = O.deffunction(
    "largest element, over all axes or the given axis (ties share the gradient)", name="max"
)(_extreme(O.MAX, O.MAX_DIM, lambda x, y: maximum(x, y), O.late.argmax, return_max))
min = O.deffunction(
    "smallest element, over all axes or the given axis (ties share the gradient)", name="min"
)(_extreme(O.MIN, O.MIN_DIM, lambda x, y: minimum(x, y), O.late.argmin, return_min))
max.__name__ = max.__qualname__ = "max"
min.__name__ = min.__qualname__ = "min"


@O.deffunction("largest element over the given axes (all by default); ties share the gradient")
def amax(input: Any, dim: Dims = None, keepdim: bool = False) -> Tensor:
    """Largest value over ``dim`` (all dims by default); ties share the gradient evenly."""
    x = _as_tensor(input)
    dims = O._dims(None if dim == () else dim, x._data.ndim)  # () is PyTorch's default
    if len(dims) == x._data.ndim and not keepdim:
        return apply1(O.MAX, x)
    top = x.detach()._data.max(axis=dims, keepdims=True)
    hit = _wrap((x._data == top).astype(x._data.dtype))
    return sum(x * hit, dims, keepdim) / sum(hit, dims, keepdim)


@O.deffunction("smallest element over the given axes (all by default); ties share the gradient")
def amin(input: Any, dim: Dims = None, keepdim: bool = False) -> Tensor:
    return -amax(-_as_tensor(input), dim, keepdim)


@O.deffunction(
    "index of the largest element, over all axes or the given axis",
    differentiable=False,
    builtin=False,
)
def argmax(input: Any, dim: Any = None, keepdim: bool = False) -> Tensor:
    x = _as_tensor(input)
    if dim is not None:
        dims = O._dims(dim, x._data.ndim)
        dim = dims[0] if dims else None
    return apply1(O.ARGMAX, x, dim, bool(keepdim))


@O.deffunction(
    "index of the smallest element, over all axes or the given axis",
    differentiable=False,
    builtin=False,
)
def argmin(input: Any, dim: Any = None, keepdim: bool = False) -> Tensor:
    x = _as_tensor(input)
    if dim is not None:
        dims = O._dims(dim, x._data.ndim)
        dim = dims[0] if dims else None
    return apply1(O.ARGMIN, x, dim, bool(keepdim))


@O.deffunction("p-norm (default: Euclidean), over all axes or the given axis")
def norm(
    input: Any, p: Any = "fro", dim: Any = None, keepdim: bool = False, dtype: Any = None
) -> Tensor:
    """Vector p-norm (``p`` 2 by default; ``"fro"`` is 2; ``inf`` the largest magnitude)."""
    x = _as_tensor(input)
    if dtype is not None:
        x = to(x, dtype)
    if not _inexact(x):
        raise RuntimeError(
            "linalg.vector_norm: Expected a floating point or complex tensor as input. "
            f"Got {dtype_of(x._data.dtype).name.capitalize()}"
        )
    if p == "fro" or p is None:
        p = 2
    if isinstance(p, str):
        raise ValueError(f"norm: unsupported p={p!r}")
    p = float(p)
    if dim is None:
        if keepdim:
            return apply1(O.NORM_DIM, x, 2.0 if p == 2 else p, tuple(range(x._data.ndim)), True)
        return apply1(O.NORM, x, p, None, False)
    return apply1(O.NORM_DIM, x, p, O._dims(dim, x._data.ndim), bool(keepdim))


@O.deffunction("log(sum(exp(x))) computed stably, over all axes or the given axis")
def logsumexp(input: Any, dim: Dims = None, keepdim: bool = False) -> Tensor:
    x = _as_tensor(input)
    if not _inexact(x):
        x = _float_of(x)
    return apply1(O.LOGSUMEXP, x, O._dims(dim, x._data.ndim), bool(keepdim))


def _softmax_dim(x: Tensor, dim: Any) -> int:
    ndim = x._data.ndim
    if dim is None:
        dim = 0 if ndim in (0, 1, 3) else 1
    if ndim == 0:
        O._dims(dim, 0)
        return 0
    return O._dims(dim, ndim)[0]


@O.deffunction("exp(x) / sum(exp(x)) along an axis (default: the last)")
def softmax(input: Any, dim: int | None = None, dtype: Any = None) -> Tensor:
    x = _as_tensor(input)
    if dtype is not None:
        x = to(x, dtype)
    if x._data.ndim == 0:
        return apply1(O.SOFTMAX, apply1(O.VIEW, x, (1,)), 0).reshape(())
    return apply1(O.SOFTMAX, x, _softmax_dim(x, dim))


@O.deffunction("log(softmax(x)) computed stably, along an axis (default: the last)")
def log_softmax(input: Any, dim: int | None = None, dtype: Any = None) -> Tensor:
    x = _as_tensor(input)
    if dtype is not None:
        x = to(x, dtype)
    if x._data.ndim == 0:
        return apply1(O.LOG_SOFTMAX, apply1(O.VIEW, x, (1,)), 0).reshape(())
    return apply1(O.LOG_SOFTMAX, x, _softmax_dim(x, dim))


@O.deffunction("variance over all axes or the given axis (unbiased unless unbiased=False)")
def var(
    input: Any,
    dim: Dims = None,
    unbiased: bool = True,
    keepdim: bool = False,
    *,
    correction: float | None = None,
) -> Tensor:
    x = _as_tensor(input)
    dims = O._dims(dim, x._data.ndim)
    n = O._reduced_count(x._data.shape, dims)
    ddof = (1 if unbiased else 0) if correction is None else correction
    centred = x - mean(x, dims, keepdim=True)
    return sum(centred * centred, dims, keepdim) / _py_max(n - ddof, 0)


@O.deffunction("standard deviation over all axes or the given axis (unbiased by default)")
def std(
    input: Any,
    dim: Dims = None,
    unbiased: bool = True,
    keepdim: bool = False,
    *,
    correction: float | None = None,
) -> Tensor:
    return apply1(O.SQRT, var(input, dim, unbiased, keepdim, correction=correction))


# ---------------------------------------------------------------- linear algebra


@O.deffunction("matrix product x @ y (vectors and batches as NumPy)")
def matmul(input: Any, other: Any) -> Tensor:
    """NumPy's matmul with PyTorch's nodes: DotBackward0, MvBackward0, MmBackward0, BmmBackward0."""
    x, y = _as_tensor(input), _as_tensor(other)
    nx, ny = x._data.ndim, y._data.ndim
    if nx == 0 or ny == 0:
        raise RuntimeError(
            f"both arguments to matmul need to be at least 1D, but they are {nx}D and {ny}D"
        )
    _check_matmul(x._data.shape, y._data.shape)
    if x._data.dtype != y._data.dtype:
        x, y = _promote(x, y)
    if nx == 1 and ny == 1:
        return apply2(O.DOT, x, y)
    if nx == 2 and ny == 2:
        return apply2(O.MM, x, y)
    if nx == 2 and ny == 1:
        return apply2(O.MV, x, y)
    if nx == 1:
        out = apply2(O.MM if ny == 2 else O.BMM, apply1(O.VIEW, x, (1, -1)), y)
        return apply1(O.VIEW, out, out._data.shape[:-2] + out._data.shape[-1:])
    if ny == 1:
        out = apply2(O.BMM, x, apply1(O.VIEW, y, (-1, 1)))
        return apply1(O.VIEW, out, out._data.shape[:-1])
    return apply2(O.BMM, x, y)


def _check_matmul(a: tuple, b: tuple) -> None:
    """PyTorch's RuntimeError when the inner dimensions of a matmul differ."""
    inner_a, inner_b = a[-1], b[0] if len(b) == 1 else b[-2]
    if inner_a == inner_b:
        return
    if len(a) == 1 and len(b) == 1:
        message = (
            f"inconsistent tensor size, expected tensor [{a[0]}] and src [{b[0]}] to have the "
            f"same number of elements, but got {a[0]} and {b[0]} elements respectively"
        )
    elif len(b) == 1:
        rows = math.prod(a[:-1])
        message = f"size mismatch, got input ({rows}), mat ({rows}x{a[-1]}), vec ({b[0]})"
    else:
        rows = 1 if len(a) == 1 else a[-2]
        message = (
            f"mat1 and mat2 shapes cannot be multiplied ({rows}x{inner_a} and {inner_b}x{b[-1]})"
        )
    raise _tensor.ShapeMismatch(message)


@O.deffunction("matrix product of two matrices (PyTorch's x.mm(y))")
def mm(input: Any, mat2: Any) -> Tensor:
    x, y = _as_tensor(input), _as_tensor(mat2)
    if x._data.ndim != 2 or y._data.ndim != 2:
        raise RuntimeError("mm: both arguments must be matrices")
    return apply2(O.MM, x, y)


@O.deffunction("product of a matrix and a vector")
def mv(input: Any, vec: Any) -> Tensor:
    return apply2(O.MV, _as_tensor(input), _as_tensor(vec))


@O.deffunction("matrix product of two batches of matrices")
def bmm(input: Any, mat2: Any) -> Tensor:
    return apply2(O.BMM, _as_tensor(input), _as_tensor(mat2))


@O.deffunction("dot product of two vectors of the same length", aliases=("inner",))
def dot(input: Any, other: Any) -> Tensor:
    x, y = _as_tensor(input), _as_tensor(other)
    if x._data.ndim != 1 or y._data.ndim != 1:
        raise RuntimeError(
            f"1D tensors expected, but got {x._data.ndim}D and {y._data.ndim}D tensors"
        )
    return apply2(O.DOT, x, y)


@O.deffunction("outer product of two vectors: x[i] * y[j]", aliases=("ger",))
def outer(input: Any, vec2: Any) -> Tensor:
    x, y = _as_tensor(input), _as_tensor(vec2)
    return apply1(O.VIEW, x, (-1, 1)) * apply1(O.VIEW, y, (1, -1))


# ---------------------------------------------------------------- shapes


def _shape_args(shape: tuple) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, Size)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


@O.deffunction("the same elements in a new shape; one dimension may be -1")
def reshape(input: Any, *shape: int) -> Tensor:
    x = _as_tensor(input)
    shape = _shape_args(shape)
    if shape == x._data.shape:
        return apply1(O.VIEW, x, shape) if x._requires_grad else x
    return apply1(O.VIEW, x, shape)


@O.deffunction("reshape (PyTorch's x.view(2, 3))", function=False)
def view(input: Any, *shape: int) -> Tensor:
    x = _as_tensor(input)
    if len(shape) == 1 and not isinstance(shape[0], (int, tuple, list, Size, np.integer)):
        return to(x, shape[0])
    return apply1(O.VIEW, x, _shape_args(shape))


@O.deffunction("x reshaped to the shape of y", function=False)
def view_as(input: Any, other: Tensor) -> Tensor:
    return view(input, other._data.shape)


@O.deffunction("x reshaped to the shape of y", function=False)
def reshape_as(input: Any, other: Tensor) -> Tensor:
    return reshape(input, other._data.shape)


@O.deffunction("the axes from start_dim to end_dim merged into one (all: a vector)")
def flatten(input: Any, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    x = _as_tensor(input)
    shape = x._data.shape
    if not shape:
        return apply1(O.VIEW, x, (1,))
    start, end = start_dim % len(shape), end_dim % len(shape)
    if start >= end and shape:
        return x
    merged = 1
    for size in shape[start : end + 1]:
        merged *= size
    return apply1(O.VIEW, x, (*shape[:start], merged, *shape[end + 1 :]))


@O.deffunction("the elements as a vector")
def ravel(input: Any) -> Tensor:
    return flatten(input)


@O.deffunction("a matrix's transpose (at most 2 axes)")
def t(input: Any) -> Tensor:
    x = _as_tensor(input)
    if x._data.ndim > 2:
        raise RuntimeError(
            f"t() expects a tensor with <= 2 dimensions, but self is {x._data.ndim}D"
        )
    return apply1(O.T, x)


@O.deffunction(
    "reverse the axes (as NumPy); transpose(x, 0, 1) swaps two axes", aliases=("swapaxes",)
)
def transpose(input: Any, dim0: int | None = None, dim1: int | None = None) -> Tensor:
    """Swap ``dim0`` and ``dim1``; with no dims, reverse all axes (NumPy's transpose)."""
    x = _as_tensor(input)
    if dim0 is None and dim1 is None:
        if x._data.ndim <= 2:
            return apply1(O.T, x)
        return apply1(O.PERMUTE, x, tuple(reversed(range(x._data.ndim))))
    ndim = _py_max(x._data.ndim, 1)
    (first,), (second,) = O._dims(int(dim0), ndim), O._dims(int(dim1), ndim)
    return apply1(O.TRANSPOSE, x, first, second)


@O.deffunction("the axes in a new order: permute(x, 2, 0, 1)")
def permute(input: Any, *dims: int) -> Tensor:
    x = _as_tensor(input)
    dims = _shape_args(dims)
    ndim = x._data.ndim
    if len(dims) != ndim:
        raise _tensor.ShapeMismatch(
            "permute(sparse_coo): number of dimensions in the tensor input does not match the "
            "length of the desired ordering of dimensions i.e. input.dim() = "
            f"{ndim} is not equal to len(dims) = {len(dims)}"
        )
    order = tuple(O._dims(d, ndim)[0] for d in dims)  # each in range, in the given order
    if len(set(order)) != len(order):
        raise RuntimeError("permute(): duplicate dims are not allowed.")
    return apply1(O.PERMUTE, x, order)


def _T(x: Tensor) -> Tensor:
    if x._data.ndim < 2:
        return x
    return apply1(O.PERMUTE, x, tuple(reversed(range(x._data.ndim))))


@O.deffunction("drop the axes of size 1 (all, or the given axis)")
def squeeze(input: Any, dim: Dims = None) -> Tensor:
    x = _as_tensor(input)
    shape = x._data.shape
    dims = O._dims(dim, len(shape))
    dims = tuple(d for d in dims if shape[d] == 1)
    if not dims:
        return apply1(O.VIEW, x, shape) if x._requires_grad else x
    return apply1(O.SQUEEZE, x, dims)


@O.deffunction("insert an axis of size 1 at the given position")
def unsqueeze(input: Any, dim: int) -> Tensor:
    x = _as_tensor(input)
    ndim = x._data.ndim + 1
    if not -ndim <= dim < ndim:
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], "
            f"but got {dim})"
        )
    return apply1(O.UNSQUEEZE, x, dim % ndim)


@O.deffunction(
    "x repeated along its size-1 axes to a larger shape (-1 keeps a size)", function=False
)
def expand(input: Any, *sizes: int) -> Tensor:
    x = _as_tensor(input)
    sizes = _shape_args(sizes)
    shape = x._data.shape
    lead = len(sizes) - len(shape)
    if lead < 0:
        kind = _TENSOR_TYPES.get(x._data.dtype.name, "")
        raise RuntimeError(
            f"expand(torch.{kind}Tensor{{{list(shape)}}}, size={list(sizes)}): the number of "
            f"sizes provided ({len(sizes)}) must be greater or equal to the number of "
            f"dimensions in the tensor ({len(shape)})"
        )
    for i in range(lead):
        if sizes[i] == -1:
            raise RuntimeError(
                f"The expanded size of the tensor (-1) isn't allowed in a leading, non-existing "
                f"dimension {i}"
            )
    target = tuple(shape[i - lead] if s == -1 else s for i, s in enumerate(sizes))
    for i in range(len(shape)):
        if shape[i] != 1 and shape[i] != target[lead + i]:
            raise _tensor.ShapeMismatch(
                f"The expanded size of the tensor ({target[lead + i]}) must match the existing "
                f"size ({shape[i]}) at non-singleton dimension {lead + i}.  Target sizes: "
                f"{list(sizes)}.  Tensor sizes: {list(shape)}"
            )
    return apply1(O.EXPAND, x, target)


_TENSOR_TYPES = {"float32": "Float", "float64": "Double", "int64": "Long", "bool": "Bool"}
"""PyTorch's legacy type names, as its expand() message spells them."""


@O.deffunction("x repeated along its size-1 axes to the given shape")
def broadcast_to(input: Any, size: Sequence[int]) -> Tensor:
    return expand(input, tuple(size))


@O.deffunction("x repeated along its size-1 axes to the shape of y", function=False)
def expand_as(input: Any, other: Tensor) -> Tensor:
    return expand(input, other._data.shape)


@O.deffunction(
    "tensors joined along an existing axis", method=False, aliases=("concat", "concatenate")
)
def cat(tensors: Tensors, dim: int = 0, *, axis: int | None = None) -> Tensor:
    items = [_as_tensor(t) for t in tensors]
    items = [t for t in items if not (t._data.ndim == 1 and t._data.shape[0] == 0)] or items
    if not items:
        raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
    dim = dim if axis is None else axis
    ndim = items[0]._data.ndim
    if ndim == 0:
        raise RuntimeError("zero-dimensional tensor (at position 0) cannot be concatenated")
    (axis,) = O._dims(dim, ndim)
    first = items[0]._data.shape
    for number, item in enumerate(items[1:], 1):
        shape = item._data.shape
        if len(shape) != ndim:
            raise _tensor.ShapeMismatch(
                f"Tensors must have same number of dimensions: got {ndim} and {len(shape)}"
            )
        for d in range(ndim):
            if d != axis and shape[d] != first[d]:
                raise _tensor.ShapeMismatch(
                    f"Sizes of tensors must match except in dimension {axis}. Expected size "
                    f"{first[d]} but got size {shape[d]} for tensor number {number} in the list."
                )
    items = _common_dtype(items)
    return applyn(O.CAT, items, axis)


@O.deffunction("tensors of one shape joined along a new axis", method=False)
def stack(tensors: Tensors, dim: int = 0) -> Tensor:
    items = _common_dtype([_as_tensor(t) for t in tensors])
    if not items:
        raise RuntimeError("stack expects a non-empty TensorList")
    for number, item in enumerate(items[1:], 1):
        if item._data.shape != items[0]._data.shape:
            raise _tensor.ShapeMismatch(
                f"stack expects each tensor to be equal size, but got {list(items[0].shape)} at "
                f"entry 0 and {list(item.shape)} at entry {number}"
            )
    ndim = items[0]._data.ndim + 1
    if not -ndim <= dim < ndim:
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], "
            f"but got {dim})"
        )
    return applyn(O.STACK, items, dim % ndim)


def _common_dtype(items: list[Tensor]) -> list[Tensor]:
    dtypes = {t._data.dtype for t in items}
    if len(dtypes) <= 1:
        return items
    target = np.result_type(*dtypes)
    return [t if t._data.dtype == target else to(t, target) for t in items]


def _index_key(index: Any) -> Any:
    """A NumPy index for a Tensor index (tensors and lists become arrays)."""
    items = index if isinstance(index, tuple) else (index,)
    out = []
    for item in items:
        if isinstance(item, Tensor):
            data = np.asarray(item._data)
            out.append(int(data) if data.ndim == 0 and data.dtype.kind in "iu" else data)
        elif isinstance(item, list):
            out.append(
                np.asarray(
                    _tensor._untensor(item) if item else item, dtype=None if item else np.int64
                )
            )
        elif (
            isinstance(item, np.ndarray)
            or item is None
            or item is Ellipsis
            or isinstance(item, slice)
        ):
            out.append(item)
        elif isinstance(item, (bool, np.bool_)):
            out.append(bool(item))
        else:
            out.append(int(item))
    return tuple(out) if isinstance(index, tuple) else out[0]


def getitem(x: Tensor, index: Any) -> Tensor:
    """``x[index]``: SelectBackward0, SliceBackward0 or IndexBackward0 as PyTorch names them."""
    key = _index_key(index)
    items = key if isinstance(key, tuple) else (key,)
    if _py_any(isinstance(i, (np.ndarray, bool)) for i in items):
        op = O.INDEX
    else:
        last = None
        for item in items:
            if isinstance(item, int) or (isinstance(item, slice) and item != slice(None)):
                last = item
        op = O.SELECT if isinstance(last, int) else O.SLICE
        # Bounds as PyTorch reports them (NumPy's IndexError text differs).
        shape = x._data.shape
        axis = 0
        for item in items:
            if item is None:
                continue
            if item is Ellipsis:
                axis = (
                    len(shape)
                    - _py_sum(1 for i in items if i is not None and i is not Ellipsis)
                    + axis
                )
                continue
            if isinstance(item, int):
                if axis >= len(shape):
                    raise IndexError(f"too many indices for tensor of dimension {len(shape)}")
                size = shape[axis]
                if not -size <= item < size:
                    raise IndexError(
                        f"index {item} is out of bounds for dimension {axis} with size {size}"
                    )
            axis += 1
    return apply1(op, x, key)


@O.deffunction("the entries at the given indices along an axis")
def index_select(input: Any, dim: int, index: Indices) -> Tensor:
    x = _as_tensor(input)
    dim = O._dims(dim, x._data.ndim)[0] if x._data.ndim else 0
    key = (slice(None),) * dim + (np.asarray(_as_tensor(index)._data),)
    return apply1(O.INDEX, x, key)


@O.deffunction("length entries from start along an axis")
def narrow(input: Any, dim: int, start: int, length: int) -> Tensor:
    x = _as_tensor(input)
    dim = O._dims(dim, x._data.ndim)[0]
    return apply1(O.SLICE, x, (slice(None),) * dim + (slice(start, start + length),))


@O.deffunction("the slice at index along an axis (that axis removed)")
def select(input: Any, dim: int, index: int) -> Tensor:
    x = _as_tensor(input)
    dim = O._dims(dim, x._data.ndim)[0]
    return apply1(O.SELECT, x, (slice(None),) * dim + (int(index),))


@O.deffunction("x with value wherever mask is true", elementwise=True)
def masked_fill(input: Any, mask: Any, value: Any) -> Tensor:
    x = _as_tensor(input)
    return where(mask, value, x)


# ---------------------------------------------------------------- comparisons and tests


def _compare(op: O.Op, symbol: str, aliases: tuple[str, ...] = ()) -> Callable:
    def compare(input: Any, other: Any) -> Tensor:
        x = _as_tensor(input)
        return _binary(op, x, other)

    compare.__name__ = compare.__qualname__ = op.name
    doc = f"x {symbol} y, elementwise (booleans, no gradient)"
    declare = O.deffunction(
        doc, aliases=aliases, elementwise=True, differentiable=False, builtin=False
    )
    return declare(compare)


eq = _compare(O.EQ, "==")
ne = _compare(O.NE, "!=", ("not_equal",))
lt = _compare(O.LT, "<", ("less",))
le = _compare(O.LE, "<=", ("less_equal",))
gt = _compare(O.GT, ">", ("greater",))
ge = _compare(O.GE, ">=", ("greater_equal",))


@O.deffunction(
    "x and y, elementwise (booleans)", elementwise=True, differentiable=False, builtin=False
)
def logical_and(input: Any, other: Any) -> Tensor:
    return _binary(O.LOGICAL_AND, _as_tensor(input), other)


@O.deffunction(
    "x or y, elementwise (booleans)", elementwise=True, differentiable=False, builtin=False
)
def logical_or(input: Any, other: Any) -> Tensor:
    return _binary(O.LOGICAL_OR, _as_tensor(input), other)


@O.deffunction(
    "not x, elementwise (booleans)", elementwise=True, differentiable=False, builtin=False
)
def logical_not(input: Any) -> Tensor:
    return apply1(O.LOGICAL_NOT, _as_tensor(input))


@O.deffunction(
    "whether x is NaN, elementwise", elementwise=True, differentiable=False, builtin=False
)
def isnan(input: Any) -> Tensor:
    return apply1(O.ISNAN, _as_tensor(input))


@O.deffunction(
    "whether x is finite, elementwise", elementwise=True, differentiable=False, builtin=False
)
def isfinite(input: Any) -> Tensor:
    return apply1(O.ISFINITE, _as_tensor(input))


@O.deffunction(
    "whether x and y have the same shape and elements (a Python bool)",
    differentiable=False,
    builtin=False,
)
def equal(input: Any, other: Any) -> bool:
    a, b = _as_tensor(input), _as_tensor(other)
    return a._data.shape == b._data.shape and bool(np.all(a._data == b._data))


@O.deffunction(
    "whether x and y are elementwise close (a Python bool)", differentiable=False, builtin=False
)
def allclose(
    input: Any, other: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False
) -> bool:
    return bool(
        np.allclose(_as_tensor(input)._data, _as_tensor(other)._data, rtol, atol, equal_nan)
    )


@O.deffunction(
    "whether x and y are close, elementwise", elementwise=True, differentiable=False, builtin=False
)
def isclose(
    input: Any, other: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False
) -> Tensor:
    return _wrap(
        np.isclose(_as_tensor(input)._data, _as_tensor(other)._data, rtol, atol, equal_nan)
    )


@O.deffunction(
    "whether every element is true, over all axes or the given axis",
    differentiable=False,
    builtin=False,
)
def all(input: Any, dim: Any = None, keepdim: bool = False) -> Tensor:
    x = _as_tensor(input)
    return _wrap(
        np.all(x._data, axis=None if dim is None else O._dims(dim, x._data.ndim), keepdims=keepdim)
    )


@O.deffunction(
    "whether some element is true, over all axes or the given axis",
    differentiable=False,
    builtin=False,
)
def any(input: Any, dim: Any = None, keepdim: bool = False) -> Tensor:
    x = _as_tensor(input)
    return _wrap(
        np.any(x._data, axis=None if dim is None else O._dims(dim, x._data.ndim), keepdims=keepdim)
    )


@O.deffunction("whether obj is a Tensor", method=False, differentiable=False, builtin=False)
def is_tensor(obj: Any) -> bool:
    return isinstance(obj, Tensor)


@O.deffunction("the number of elements", differentiable=False)
def numel(input: Tensor) -> int:
    raw = input._raw
    return 1 if type(raw) in _tensor.PYTHON_VALUES else int(raw.size)


# ---------------------------------------------------------------- dtype conversion


@O.deffunction(
    "a copy in another dtype (differentiable), or x itself when nothing changes",
    function=False,
    builtin=False,
)
def to(input: Any, *args: Any, dtype: Any = None, device: Any = None, **kwargs: Any) -> Tensor:
    """A copy in another dtype (differentiable); the tensor itself when nothing changes.
    A device must be the CPU (``x.to("cpu")``, ``x.to(torch.device("cpu"), torch.float64)``)."""
    x = _as_tensor(input)
    _tensor.check_device(device)
    for arg in args:
        if isinstance(arg, Tensor):
            dtype = arg._data.dtype
        elif isinstance(arg, _tensor.device) or (
            isinstance(arg, str) and arg.partition(":")[0] in _tensor._DEVICE_TYPES
        ):
            _tensor.check_device(arg)
        else:
            dtype = arg
    target = as_np_dtype(dtype)
    if target is None or target == x._data.dtype:
        return x
    if x._requires_grad and target.kind not in "fc":
        return _wrap(np.asarray(x._data).astype(target)[()])
    return apply1(O.TO, x, target)


@O.deffunction("a copy that stays in the graph")
def clone(input: Any, *, memory_format: Any = None) -> Tensor:
    return apply1(O.CLONE, _as_tensor(input))


def _method_to_dtype(name: str, target: Any) -> Any:
    def convert(self: Tensor, memory_format: Any = None) -> Tensor:
        return to(self, target)

    convert.__name__ = convert.__qualname__ = name
    declare = O.deffunction(f"a copy as {target.name} (x.{name}())", function=False, builtin=False)
    return declare(convert)


for _name, _target in (
    ("float", _tensor.float32),
    ("double", _tensor.float64),
    ("half", _tensor.float16),
    ("long", _tensor.int64),
    ("int", _tensor.int32),
    ("bool", _tensor.bool_),
):
    _method_to_dtype(_name, _target)


@O.deffunction("x in the dtype of y", function=False)
def type_as(input: Tensor, other: Tensor) -> Tensor:
    return to(input, other._data.dtype)


# ---------------------------------------------------------------- derived from the registry


def _front_end(entry: O.ApiFunction) -> Callable:
    """The PyTorch-named function of an op declared public with ``defop(doc=...)``:
    the common case (a float Tensor) inlined by ``unary_function``."""
    op = entry.op
    keeps_ints = entry.keeps_ints

    def slow(input: Any) -> Tensor:
        return apply1(op, _as_tensor(input) if keeps_ints else _floating(input))

    function = unary_function(op, slow)
    function.__doc__ = f"{entry.doc} (grad_fn {op.grad_fn})"
    return function


def _complete() -> None:
    """Generate the op-backed functions (also bound here: ``F.exp``) and install every
    entry that is a method on Tensor, under its name and aliases."""
    for entry in O.API.values():
        if entry.impl is None:
            entry.impl = _front_end(entry)
            for name in (entry.name, *entry.aliases):
                globals()[name] = entry.impl
        if entry.method is not False:
            method = entry.impl if entry.method is True else entry.method
            for name in (entry.name, *entry.aliases):
                setattr(Tensor, name, method)
    _install_operators()


def exported() -> dict[str, Callable]:
    """``gradcalc.<name>`` for every public function of the registry (aliases included)."""
    return {
        name: entry.impl
        for entry in O.API.values()
        if entry.function and entry.namespace == "gradcalc"
        for name in (entry.name, *entry.aliases)
    }


def _install_operators() -> None:
    """The operators and properties of Tensor, which are not functions of the registry."""
    Tensor.T = property(_T)
    Tensor.mT = property(lambda self: transpose(self, -2, -1))
    Tensor.__getitem__ = getitem
    Tensor.__add__ = Tensor.__radd__ = binary_method(O.ADD, lambda x, y: _binary(O.ADD, x, y))
    Tensor.__sub__ = binary_method(O.SUB, lambda x, y: _binary(O.SUB, x, y))
    Tensor.__rsub__ = _rsub
    Tensor.__mul__ = Tensor.__rmul__ = binary_method(O.MUL, lambda x, y: _binary(O.MUL, x, y))
    Tensor.__truediv__ = binary_method(O.DIV, div, float_only=True)
    Tensor.__rtruediv__ = _rdiv
    Tensor.__floordiv__ = floor_divide
    Tensor.__rfloordiv__ = lambda self, other: _swapped(O.FLOOR_DIVIDE, self, other)
    Tensor.__mod__ = remainder
    Tensor.__rmod__ = lambda self, other: _swapped(O.REMAINDER, self, other)
    Tensor.__pow__ = pow
    Tensor.__rpow__ = _rpow
    Tensor.__matmul__ = matmul
    Tensor.__rmatmul__ = lambda self, other: matmul(other, self)
    Tensor.__neg__ = lambda self: apply1(O.NEG, self)
    Tensor.__pos__ = lambda self: self
    Tensor.__abs__ = lambda self: apply1(O.ABS, self)
    Tensor.__eq__ = lambda self, other: _binary(O.EQ, self, other)
    Tensor.__ne__ = lambda self, other: _binary(O.NE, self, other)
    Tensor.__lt__ = lambda self, other: _binary(O.LT, self, other)
    Tensor.__le__ = lambda self, other: _binary(O.LE, self, other)
    Tensor.__gt__ = lambda self, other: _binary(O.GT, self, other)
    Tensor.__ge__ = lambda self, other: _binary(O.GE, self, other)
    Tensor.__and__ = Tensor.__rand__ = logical_and
    Tensor.__or__ = Tensor.__ror__ = logical_or
    Tensor.__invert__ = logical_not


_complete()
