"""repr/str of tensors, following PyTorch 2.x's ``torch/_tensor_str.py`` rule for rule.

Four decimals and one shared width per tensor; integer-valued floats print as
``2.``; scientific notation when the finite nonzero magnitudes span more than
1000x or leave [1e-4, 1e8]; more than 1000 elements are summarised with
``...`` keeping 3 items at each edge of every dimension. Values are formatted
as Python floats of the stored value (so a float32 prints as PyTorch prints it).
"""

from __future__ import annotations

import math

from gradcalc import _numpy

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

np = _numpy.bind(globals())


class PrintOptions:
    """PyTorch's print options, changed by `set_printoptions` (a plain class: importing
    ``dataclasses`` costs milliseconds of start-up)."""

    __slots__ = ("edgeitems", "linewidth", "precision", "sci_mode", "threshold")

    def __init__(
        self,
        precision: int = 4,
        threshold: float = 1000,
        edgeitems: int = 3,
        linewidth: int = 80,
        sci_mode: bool | None = None,
    ) -> None:
        self.precision = precision
        self.threshold = threshold
        self.edgeitems = edgeitems
        self.linewidth = linewidth
        self.sci_mode = sci_mode


PRINT_OPTS = PrintOptions()


def set_printoptions(
    precision: int | None = None,
    threshold: float | None = None,
    edgeitems: int | None = None,
    linewidth: int | None = None,
    profile: str | None = None,
    sci_mode: bool | None = None,
) -> None:
    """PyTorch's ``set_printoptions``."""
    if profile is not None:
        defaults = {
            "default": (4, 1000, 3, 80),
            "short": (2, 1000, 2, 80),
            "full": (4, math.inf, 3, 80),
        }[profile]
        (
            PRINT_OPTS.precision,
            PRINT_OPTS.threshold,
            PRINT_OPTS.edgeitems,
            PRINT_OPTS.linewidth,
        ) = defaults
    if precision is not None:
        PRINT_OPTS.precision = precision
    if threshold is not None:
        PRINT_OPTS.threshold = threshold
    if edgeitems is not None:
        PRINT_OPTS.edgeitems = edgeitems
    if linewidth is not None:
        PRINT_OPTS.linewidth = linewidth
    PRINT_OPTS.sci_mode = sci_mode


class _Formatter:
    """The shared width and mode for every element of one tensor."""

    def __init__(self, values: np.ndarray) -> None:
        self.floating = values.dtype.kind == "f"
        self.int_mode = True
        self.sci_mode = False
        self.max_width = 1
        flat = values.reshape(-1)
        if not self.floating:
            for value in flat.tolist():
                self.max_width = max(self.max_width, len(f"{value}"))
            return
        finite = flat[np.isfinite(flat) & (flat != 0)]
        if finite.size == 0:
            return
        magnitudes = np.abs(finite.astype(np.float64))
        low, high = float(magnitudes.min()), float(magnitudes.max())
        items = finite.astype(np.float64).tolist()
        self.int_mode = all(v == math.ceil(v) for v in items)
        precision = PRINT_OPTS.precision
        if PRINT_OPTS.sci_mode is None:
            self.sci_mode = high / low > 1000.0 or high > 1.0e8 or low < 1.0e-4
        else:
            self.sci_mode = PRINT_OPTS.sci_mode
        if self.sci_mode:
            width = max(len(f"{v:.{precision}e}") for v in items)
        elif self.int_mode:
            width = max(len(f"{v:.0f}") + 1 for v in items)
        else:
            width = max(len(f"{v:.{precision}f}") for v in items)
        self.max_width = max(self.max_width, width)

    def format(self, value: Any) -> str:
        if self.floating:
            precision = PRINT_OPTS.precision
            if self.sci_mode:
                text = f"{value:{self.max_width}.{precision}e}"
            elif self.int_mode:
                text = f"{value:.0f}"
                if not (math.isinf(value) or math.isnan(value)):
                    text += "."
            else:
                text = f"{value:.{precision}f}"
        elif isinstance(value, bool):
            text = str(value)
        else:
            text = f"{value}"
        return (self.max_width - len(text)) * " " + text


def _summarized(values: np.ndarray) -> np.ndarray:
    """Only the elements that will be shown (the edges of each dimension)."""
    edge = PRINT_OPTS.edgeitems
    out = values
    for axis in range(values.ndim):
        if out.shape[axis] > 2 * edge:
            index = list(range(edge)) + list(range(out.shape[axis] - edge, out.shape[axis]))
            out = np.take(out, index, axis=axis)
    return out


def _body(values: np.ndarray, indent: int, summarize: bool, fmt: _Formatter) -> str:
    """The bracketed text of ``values``; nesting depth is the tensor's rank (small)."""
    edge = PRINT_OPTS.edgeitems
    if values.ndim == 0:
        return fmt.format(values.item())
    if values.ndim == 1:
        element_length = fmt.max_width + 2
        per_line = max(1, math.floor((PRINT_OPTS.linewidth - indent) / element_length))
        if summarize and values.shape[0] > 2 * edge:
            data = (
                [fmt.format(v) for v in values[:edge].tolist()]
                + [" ..."]
                + [fmt.format(v) for v in values[-edge:].tolist()]
            )
        else:
            data = [fmt.format(v) for v in values.tolist()]
        lines = [", ".join(data[i : i + per_line]) for i in range(0, len(data), per_line)]
        return "[" + ("," + "\n" + " " * (indent + 1)).join(lines) + "]"
    count = values.shape[0]
    if summarize and count > 2 * edge:
        rows = [_body(values[i], indent + 1, summarize, fmt) for i in range(edge)]
        rows.append("...")
        rows += [_body(values[i], indent + 1, summarize, fmt) for i in range(count - edge, count)]
    else:
        rows = [_body(values[i], indent + 1, summarize, fmt) for i in range(count)]
    return "[" + ("," + "\n" * (values.ndim - 1) + " " * (indent + 1)).join(rows) + "]"


def tensor_body(values: Any, indent: int) -> str:
    """The tensor's contents as PyTorch prints them inside ``tensor(...)``."""
    values = np.asarray(values)
    if values.size == 0:
        return "[]"
    summarize = values.size > PRINT_OPTS.threshold
    fmt = _Formatter(_summarized(values) if summarize else values)
    return _body(values, indent, summarize, fmt)


def _add_suffixes(text: str, suffixes: list[str], indent: int) -> str:
    parts = [text]
    last_line_len = len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        if last_line_len + len(suffix) + 2 > PRINT_OPTS.linewidth:
            parts.append(",\n" + " " * indent + suffix)
            last_line_len = indent + len(suffix)
        else:
            parts.append(", " + suffix)
            last_line_len += len(suffix) + 2
    parts.append(")")
    return "".join(parts)


_DEFAULT_DTYPES = ("int64", "bool")
"""Dtypes a tensor prints without ``dtype=``, besides the default float dtype
(``set_default_dtype``) and its complex counterpart, as PyTorch prints them."""


def _is_default(name: str, default: str) -> bool:
    return name in _DEFAULT_DTYPES or name == default or name == _COMPLEX.get(default)


_COMPLEX = {"float32": "complex64", "float64": "complex128"}


def tensor_repr(t: Any, default_float: str = "float32") -> str:
    """``tensor([-12.,  65.], grad_fn=<SubBackward0>)`` for a gradcalc Tensor; the
    default float dtype (``set_default_dtype``) prints no ``dtype=``."""
    prefix = "tensor("
    indent = len(prefix)
    values = np.asarray(t._data)
    suffixes = []
    if values.size == 0:
        if values.ndim != 1:
            suffixes.append(f"size={tuple(values.shape)}")
        if values.dtype.name != default_float:
            suffixes.append(f"dtype=torch.{values.dtype.name}")
        body = "[]"
    else:
        if not _is_default(values.dtype.name, default_float):
            suffixes.append(f"dtype=torch.{values.dtype.name}")
        body = tensor_body(values, indent)
    fn = t._grad_fn
    if fn is not None:
        suffixes.append(f"grad_fn=<{fn.name()}>")
    elif t._requires_grad:
        suffixes.append("requires_grad=True")
    return _add_suffixes(prefix + body, suffixes, indent)
