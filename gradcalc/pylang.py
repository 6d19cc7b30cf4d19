"""What a program sees of Python: modules, Python's built-ins, strings, operators under limits.

``gradcalc run`` runs programs as ``python FILE`` would (PyTorch snippets:
``import torch``, ``print``, ``'{:.4f}'.format(x)``, ``a, b = 1, 2``,
``with torch.no_grad():``). The interpreter's program mode keeps Python's
values (ints, floats, strings, lists, tuples, None) and reaches nothing of
Python beyond what is named here:

* `Namespace`: a module as programs see it. ``torch``/``gradcalc`` are the
  public names of the Python API (``gradcalc.__all__``: the registry's
  functions, ``ops.API``, and the constructors and classes beside them),
  ``torch.nn.functional``/``F`` the registry's ``nn.functional`` entries
  (and the activations PyTorch also has there), ``torch.autograd`` its
  ``__all__``; ``math`` a few constants and functions; ``numpy`` nothing.
  A member is looked up in that table, never with ``getattr`` on a module.
* ``BUILTINS``: Python's built-ins a snippet uses (``print``, ``range``,
  ``len``, ``zip``, ``enumerate``, ``list``...), each bounded by the limits.
* `get_member`/`set_member`: the attributes of values, by whitelist: a
  tensor's public API, a grad_fn's ``next_functions``/``name``/``variable``,
  string and list methods; ``str.format`` and f-strings format only plain
  fields (``{}``, ``{0}``, ``{name}``, ``{:.4f}``, ``{!r}``), never ``{x.attr}``.
* `binary`: Python's operators, with the sizes of strings, lists and ints
  checked before they are made (``'a' * 10**9`` is a LimitError).
"""

from __future__ import annotations

import math
import operator
import re
import sys
from collections.abc import Callable, Iterable

from gradcalc.errors import FormulaTypeError, FormulaValueError, LimitError, UnknownNameError
from gradcalc.limits import Limits

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "BUILTINS",
    "Namespace",
    "PyBuiltin",
    "binary",
    "format_value",
    "get_member",
    "import_module",
    "set_member",
]


# ---------------------------------------------------------------------- modules


class Namespace:
    """A module as a program sees it: a fixed table of members, built on first use."""

    __slots__ = ("_members", "_table", "name")

    def __init__(self, name: str, table: Callable[[], dict[str, Any]]) -> None:
        self.name = name
        self._table = table
        self._members: dict[str, Any] | None = None

    @property
    def members(self) -> dict[str, Any]:
        if self._members is None:
            self._members = self._table()
        return self._members

    def member(self, attr: str) -> Any:
        members = self.members
        if attr in members:
            return members[attr]
        if self.name == "numpy":
            raise UnknownNameError(
                f"numpy is not available in gradcalc programs (np.{attr})",
                hint="use the torch function of the same name: torch.{attr}".replace(
                    "{attr}", attr
                ),
            )
        hint = did_you_mean(attr, members) or f"`gradcalc functions` lists what {self.name} has"
        raise UnknownNameError(f"module '{self.name}' has no attribute '{attr}'", hint=hint)

    def __repr__(self) -> str:
        return f"<module '{self.name}' (gradcalc)>"


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    import difflib  # only for errors

    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?" if close else None


def _torch() -> dict[str, Any]:
    import gradcalc

    names = vars(gradcalc)
    members = {name: names[name] for name in gradcalc.__all__ if name in names}
    members["__version__"] = gradcalc.__version__
    members["autograd"] = MODULES["torch.autograd"]
    members["nn"] = MODULES["torch.nn"]
    members.update(inf=math.inf, nan=math.nan, pi=math.pi, e=math.e)
    return members


_F_FROM_TORCH = ("relu", "sigmoid", "tanh", "softmax", "log_softmax", "softplus", "elu")
"""Functions PyTorch has in ``torch.nn.functional`` that the registry declares in ``gradcalc``."""


def _functional() -> dict[str, Any]:
    import gradcalc.nn.functional  # noqa: F401  (completes the registry)
    from gradcalc import ops

    members = {}
    for entry in ops.API.values():
        if entry.function and (entry.namespace == "nn.functional" or entry.name in _F_FROM_TORCH):
            for name in (entry.name, *entry.aliases):
                members[name] = entry.impl
    return members


def _autograd() -> dict[str, Any]:
    import gradcalc.autograd as autograd

    names = vars(autograd)
    members = {name: names[name] for name in autograd.__all__ if name != "functional"}
    members["functional"] = MODULES["torch.autograd.functional"]
    return members


def _autograd_functional() -> dict[str, Any]:
    import gradcalc.autograd.functional as functional

    names = getattr(functional, "__all__", None)
    if names is None:  # its public functions
        names = [
            name
            for name, value in vars(functional).items()
            if not name.startswith("_")
            and callable(value)
            and getattr(value, "__module__", "") == functional.__name__
        ]
    return {name: vars(functional)[name] for name in names}


def _math() -> dict[str, Any]:
    functions = (
        "sqrt", "exp", "log", "log2", "log10", "sin", "cos", "tan", "tanh", "atan", "atan2",
        "floor", "ceil", "fabs", "isnan", "isinf", "isfinite", "isclose", "hypot", "erf",
    )  # fmt: skip
    members: dict[str, Any] = {name: getattr(math, name) for name in functions}
    members.update(pi=math.pi, e=math.e, tau=math.tau, inf=math.inf, nan=math.nan)
    return members


MODULES: dict[str, Namespace] = {
    "torch": Namespace("torch", _torch),
    "torch.nn": Namespace("torch.nn", lambda: {"functional": MODULES["torch.nn.functional"]}),
    "torch.nn.functional": Namespace("torch.nn.functional", _functional),
    "torch.autograd": Namespace("torch.autograd", _autograd),
    "torch.autograd.functional": Namespace("torch.autograd.functional", _autograd_functional),
    "math": Namespace("math", _math),
    "numpy": Namespace("numpy", dict),
}
MODULES["gradcalc"] = MODULES["torch"]
for _name in ("nn", "nn.functional", "autograd", "autograd.functional"):
    MODULES[f"gradcalc.{_name}"] = MODULES[f"torch.{_name}"]


def import_module(name: str) -> Namespace:
    """The module ``import name`` binds (a `FormulaError` if programs have no such module)."""
    module = MODULES.get(name)
    if module is None:
        raise UnknownNameError(
            f"No module named '{name}'",
            hint="programs can import torch (torch.nn.functional, torch.autograd), "
            "gradcalc, math and numpy (whose names are not available)",
        )
    return module


# -------------------------------------------------------------------- built-ins


class PyBuiltin:
    """One of Python's built-in functions as programs have it: ``fn(ctx, *args, **kwargs)``,
    with ``ctx`` the `RunContext` (limits, where ``print`` writes)."""

    __slots__ = ("fn", "name")

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        self.name = name
        self.fn = fn

    def __repr__(self) -> str:
        return f"<built-in function {self.name}>"


class RunContext:
    """What the built-ins need from a run: its limits, its output, and the numbers its
    grad_fns print with (`show`)."""

    __slots__ = ("limits", "nodes", "write")

    def __init__(self, limits: Limits, write: Callable[[str], Any]) -> None:
        self.limits = limits
        self.write = write
        self.nodes: dict[int, tuple[Any, int]] = {}
        """id of a grad_fn shown -> (a weak reference to it, its number)."""

    def node_number(self, node: Any) -> int:
        """A grad_fn's number: 1, 2... in the order the session first showed them."""
        import weakref

        known = self.nodes.get(id(node))
        if known is not None and known[0]() is node:
            return known[1]
        number = len(self.nodes) + 1
        self.nodes[id(node)] = (weakref.ref(node), number)
        return number


def _node_text(node: Any, ctx: RunContext) -> str:
    """PyTorch's ``<SubBackward0 object at 0x7f...>`` with a stable number for the address:
    the same grad_fn prints the same, and a run prints the same every time."""
    return f"<{type(node).__name__} object at 0x{ctx.node_number(node):012x}>"


def show(value: Any, ctx: RunContext, as_str: bool = False) -> str:
    """``repr(value)`` (``str`` with ``as_str``) as programs print it: a grad_fn, also inside
    tuples and lists (``next_functions``), with its stable number. Iterative: a list
    nested a million deep prints without recursion."""
    from gradcalc._tensor import Node

    kind = type(value)
    if kind is not tuple and kind is not list:
        if isinstance(value, Node):
            return _node_text(value, ctx)
        return to_str(value, ctx.limits) if as_str else repr(value)
    out: list[str] = []
    work: list[Any] = [(False, value)]
    total = 0
    while work:
        literal, item = work.pop()
        if literal:
            out.append(item)
            continue
        kind = type(item)
        if kind is tuple or kind is list:
            opener, closer = ("(", ")") if kind is tuple else ("[", "]")
            if kind is tuple and len(item) == 1:
                closer = ",)"
            out.append(opener)
            work.append((True, closer))
            for index in range(len(item) - 1, -1, -1):
                work.append((False, item[index]))
                if index:
                    work.append((True, ", "))
            continue
        text = _node_text(item, ctx) if isinstance(item, Node) else repr(item)
        total += len(text)
        _check_length(total, ctx.limits, "the printed text")
        out.append(text)
    return "".join(out)


def _check_length(count: int, limits: Limits, what: str) -> None:
    if count > limits.max_elements:
        raise LimitError(
            f"{what} would have {count:,} items, more than the limit of {limits.max_elements:,}",
            hint="raise max_elements (CLI: --max-elements) if the machine can hold it",
        )


def items(value: Any, limits: Limits, what: str = "the sequence") -> list:
    """A list of ``value``'s items, refusing more than ``max_elements`` before making them."""
    try:
        size = len(value)
    except TypeError:
        size = None
    except OverflowError:  # range(10**20)
        raise LimitError(
            f"{what} would have more items than the limit of {limits.max_elements:,}",
            hint="raise max_elements (CLI: --max-elements) if the machine can hold it",
        ) from None
    if size is not None:
        _check_length(size, limits, what)
        return list(_iterate(value))
    out = []
    for item in _iterate(value):  # an iterator (zip, enumerate): counted as it goes
        out.append(item)
        if len(out) > limits.max_elements:
            _check_length(len(out), limits, what)
    return out


def _iterate(value: Any) -> Iterable:
    from gradcalc.builtins import Tensor

    if isinstance(value, Tensor) and value.ndim == 0:
        raise FormulaTypeError("iteration over a 0-d tensor")
    if isinstance(value, Namespace | PyBuiltin) or callable(value):
        raise FormulaTypeError(f"'{type_name(value)}' object is not iterable")
    return iter(value)


def type_name(value: Any) -> str:
    if isinstance(value, Namespace):
        return "module"
    if isinstance(value, PyBuiltin):
        return "builtin_function_or_method"
    return type(value).__name__


def _print(ctx: RunContext, *values: Any, sep: Any = " ", end: Any = "\n", flush: Any = False):
    if sep is None:
        sep = " "
    if end is None:
        end = "\n"
    if not isinstance(sep, str) or not isinstance(end, str):
        raise FormulaTypeError("print(): sep and end must be None or a string")
    text = sep.join(show(value, ctx, as_str=True) for value in values) + end
    ctx.write(text)


def to_str(value: Any, limits: Limits) -> str:
    """``str(value)``, with a big int's digits checked first."""
    if type(value) is int and value.bit_length() > 14_000:
        raise FormulaValueError(
            "Exceeds the limit (4300 digits) for integer string conversion",
            hint="print a float of it, or fewer digits",
        )
    return str(value)


def _range(ctx: RunContext, *args: Any) -> range:
    if not 1 <= len(args) <= 3:
        raise FormulaTypeError(f"range expected 1 to 3 arguments, got {len(args)}")
    return range(*(operator.index(_as_index(a)) for a in args))


def _as_index(value: Any) -> Any:
    from gradcalc.builtins import Tensor

    if isinstance(value, float):
        raise FormulaTypeError("'float' object cannot be interpreted as an integer")
    if isinstance(value, Tensor):
        return value.__index__()
    return value


def _len(ctx: RunContext, value: Any) -> int:
    if isinstance(value, Namespace | PyBuiltin) or not hasattr(value, "__len__"):
        raise FormulaTypeError(f"object of type '{type_name(value)}' has no len()")
    return len(value)


def _sequence(kind: type) -> Callable:
    def make(ctx: RunContext, value: Any = ()) -> Any:
        return kind(items(value, ctx.limits, f"{kind.__name__}()"))

    return make


def _zip(ctx: RunContext, *values: Any) -> zip:
    return zip(*(_iterate(value) for value in values), strict=False)


def _enumerate(ctx: RunContext, value: Any, start: int = 0) -> enumerate:
    return enumerate(_iterate(value), start)


def _reducer(fn: Callable, name: str) -> Callable:
    def reduce(ctx: RunContext, *values: Any, **kwargs: Any) -> Any:
        if len(values) == 1:
            return fn(items(values[0], ctx.limits, f"{name}()"), **kwargs)
        if name in ("sum", "sorted", "any", "all") and len(values) != 1:
            if name == "sum" and len(values) == 2:
                return fn(items(values[0], ctx.limits, "sum()"), values[1])
            raise FormulaTypeError(f"{name}() takes one iterable, got {len(values)} arguments")
        return fn(*values, **kwargs)

    return reduce


def _minmax(fn: Callable, name: str) -> Callable:
    reduce = _reducer(fn, name)

    def minmax(ctx: RunContext, *values: Any, **kwargs: Any) -> Any:
        from gradcalc.builtins import Tensor

        if len(values) == 2 and isinstance(values[0], Tensor) and values[0].numel() > 1:
            other = "maximum" if name == "max" else "minimum"
            raise FormulaTypeError(
                f"{name}(x, {values[1]!r}) compares a tensor of {values[0].numel()} elements "
                "as one value (Python's built-in)",
                hint=f"elementwise: torch.{other}(x, torch.tensor({values[1]!r})) or "
                f"x.clamp({'min' if name == 'max' else 'max'}={values[1]!r}); "
                f"along an axis: x.{name}(dim=...)",
            )
        return reduce(ctx, *values, **kwargs)

    return minmax


_CLASSES: dict[str, Any] = {}


def _isinstance(ctx: RunContext, value: Any, classes: Any) -> bool:
    from gradcalc.builtins import Tensor

    allowed = (int, float, str, bool, list, tuple, range, type(None), Tensor)
    types = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "tuple": tuple}
    classes = tuple(
        types.get(c.name, c) if isinstance(c, PyBuiltin) else c
        for c in (classes if isinstance(classes, tuple) else (classes,))
    )
    for cls in classes:
        if cls is not Tensor and cls not in allowed:
            raise FormulaTypeError(
                "isinstance() arg 2 must be a type such as int, float, str, list, tuple "
                "or torch.Tensor"
            )
    return isinstance(value, classes)


def _convert_to(kind: type) -> Callable:
    def convert(ctx: RunContext, *args: Any) -> Any:
        if kind is str and args:
            return show(args[0], ctx, as_str=True)
        if kind is int and args and isinstance(args[0], str) and len(args[0]) > 4300:
            raise FormulaValueError("Exceeds the limit (4300 digits) for integer string conversion")
        return kind(*args)

    return convert


def _round(ctx: RunContext, value: Any, ndigits: Any = None) -> Any:
    return round(value) if ndigits is None else round(value, ndigits)


BUILTINS: dict[str, PyBuiltin] = {
    name: PyBuiltin(name, fn)
    for name, fn in {
        "print": _print,
        "range": _range,
        "len": _len,
        "list": _sequence(list),
        "tuple": _sequence(tuple),
        "sorted": _reducer(sorted, "sorted"),
        "sum": _reducer(sum, "sum"),
        "any": _reducer(any, "any"),
        "all": _reducer(all, "all"),
        "min": _minmax(min, "min"),
        "max": _minmax(max, "max"),
        "zip": _zip,
        "enumerate": _enumerate,
        "abs": lambda ctx, value: abs(value),
        "round": _round,
        "float": _convert_to(float),
        "int": _convert_to(int),
        "str": _convert_to(str),
        "bool": _convert_to(bool),
        "isinstance": _isinstance,
        "repr": lambda ctx, value: show(value, ctx),
    }.items()
}
"""Python's built-in functions that programs have."""


# ------------------------------------------------------------------ formatting

# The patterns are compiled on first use (``re``'s cache keeps them): compiling them at
# import cost every one-shot command ~0.5 ms, and most never format a string.
_SPEC = (
    r"(?s)(?:(?P<fill>.)?(?P<align>[<>=^]))?[-+ ]?z?#?0?(?P<width>\d*)[,_]?"
    r"(?:\.(?P<precision>\d+))?[bcdeEfFgGnosxX%]?"
)


def _check_spec(spec: str, limits: Limits) -> None:
    match = re.fullmatch(_SPEC, spec)
    if match is None:
        return  # Python's own error for a spec it does not know
    for part in ("width", "precision"):
        digits = match.group(part)
        if digits and (len(digits) > 9 or int(digits) > limits.max_elements):
            raise LimitError(
                f"a format {part} of {digits} is more than the limit of {limits.max_elements:,}",
                hint="raise max_elements (CLI: --max-elements) if that is intended",
            )


def format_value(value: Any, conversion: str | None, spec: str | None, ctx: RunContext) -> str:
    """One ``{value!conversion:spec}`` field, as Python formats it."""
    limits = ctx.limits
    if conversion == "r":
        value = show(value, ctx)
    elif conversion == "a":
        value = ascii(show(value, ctx))
    elif conversion == "s" or (not spec and type(value) in (tuple, list)):
        value = show(value, ctx, as_str=True)
    spec = spec or ""
    _check_spec(spec, limits)
    from gradcalc._tensor import Node

    if isinstance(value, Node):
        value = show(value, ctx)
    if type(value) is int:
        to_str(value, limits)  # (its digits checked)
    return format(value, spec)  # a 0-d tensor formats its item(), as PyTorch's


_FIELD = r"\{\{|\}\}|\{([^{}!:]*)(?:!([rsa]))?(?::([^{}]*))?\}|[{}]"


def str_format(text: str, ctx: RunContext, *args: Any, **kwargs: Any) -> str:
    """``text.format(*args, **kwargs)`` for plain fields only: no ``{x.attr}`` or ``{x[0]}``
    (Python's would reach any attribute of an argument)."""
    out: list[str] = []
    position = 0
    automatic = 0
    total = 0
    for match in re.finditer(_FIELD, text):
        out.append(text[position : match.start()])
        position = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            out.append(token[0])
            continue
        if token in ("{", "}"):
            raise FormulaValueError(
                f"Single '{token}' encountered in format string",
                hint="write {{ or }} for a literal brace",
            )
        field, conversion, spec = match.groups()
        if field == "":
            index: Any = automatic
            automatic += 1
        elif field.isdigit():
            index = int(field)
        elif field.isidentifier():
            index = field
        else:
            raise FormulaValueError(
                f"format field '{{{field}}}' is not supported",
                hint="use {}, {0} or {name}; compute attributes and items before formatting",
            )
        if isinstance(index, int):
            if index >= len(args):
                raise FormulaValueError(
                    f"Replacement index {index} out of range for positional args tuple"
                )
            value = args[index]
        else:
            if index not in kwargs:
                raise FormulaValueError(f"format(): no keyword argument '{index}'")
            value = kwargs[index]
        piece = format_value(value, conversion, spec, ctx)
        total += len(piece)
        _check_length(total, ctx.limits, "the formatted string")
        out.append(piece)
    out.append(text[position:])
    return "".join(out)


_PERCENT = r"%(?:\([^)]*\))?[-+ #0]*(\*|\d*)(?:\.(\*|\d*))?[a-zA-Z%]"


def percent_format(text: str, values: Any, limits: Limits) -> str:
    """``text % values`` (printf style), with its widths checked."""
    for match in re.finditer(_PERCENT, text):
        for digits in match.groups():
            if digits == "*":
                raise FormulaValueError("'*' widths are not supported in % formatting")
            if digits and (len(digits) > 9 or int(digits) > limits.max_elements):
                _check_spec("." + digits, limits)
    return text % values


# ---------------------------------------------------------------------- members

_STRING_METHODS = frozenset(
    {
        "join", "split", "strip", "lstrip", "rstrip", "lower", "upper", "title", "capitalize",
        "startswith", "endswith", "replace", "find", "count", "isdigit", "isalpha",
        "ljust", "rjust", "center", "zfill", "splitlines",
    }
)  # fmt: skip
_LIST_METHODS = frozenset(
    {"append", "extend", "pop", "insert", "index", "count", "reverse", "copy", "clear", "remove"}
)
_NODE_MEMBERS = frozenset({"name", "next_functions", "variable", "metadata"})
_SETTABLE = frozenset({"grad", "data", "requires_grad"})
_TENSOR_MEMBERS: frozenset[str] | None = None
_HIDDEN_TENSOR_MEMBERS = frozenset({"creator", "previous_functions"})
"""Not modern PyTorch (``creator`` is pre-0.4, an AttributeError in PyTorch 2.x). (``numpy()``
is there: its array prints, and programs reach none of its attributes.)"""


def tensor_members() -> frozenset[str]:
    """A tensor's attributes and methods in programs: the Python API's public ones
    (the registry's methods, and ``backward``, ``grad``, ``item``...)."""
    global _TENSOR_MEMBERS
    if _TENSOR_MEMBERS is None:
        from gradcalc.builtins import Tensor

        names = {name for name in dir(Tensor) if not name.startswith("_")}
        _TENSOR_MEMBERS = frozenset(names - _HIDDEN_TENSOR_MEMBERS)
    return _TENSOR_MEMBERS


def _no_attribute(value: Any, name: str) -> FormulaTypeError:
    if isinstance(value, Namespace):
        return value.member(name)  # raises
    return FormulaTypeError(f"'{type_name(value)}' object has no attribute '{name}'")


def get_member(value: Any, name: str, limits: Limits) -> Any:
    """``value.name`` for the values and names programs may reach."""
    from gradcalc.builtins import Tensor

    if isinstance(value, Namespace):
        return value.member(name)
    if isinstance(value, Tensor):
        if name in tensor_members():
            return getattr(value, name)
        raise _no_attribute(value, name)
    if isinstance(value, str):
        if name == "format":
            return PyBuiltin("format", lambda ctx, *a, **k: str_format(value, ctx, *a, **k))
        if name in _STRING_METHODS:
            return _bounded(getattr(value, name), name, len(value), limits)
        raise _no_attribute(value, name)
    if isinstance(value, list):
        if name in _LIST_METHODS:
            return _list_method(value, name)
        raise _no_attribute(value, name)
    if isinstance(value, tuple) and name in ("index", "count"):
        return getattr(value, name)
    if type(value).__name__ == "Size" and name == "numel":
        return value.numel
    from gradcalc._tensor import Node

    if isinstance(value, Node) and name in _NODE_MEMBERS and hasattr(value, name):
        return getattr(value, name)
    if isinstance(value, float) and name == "is_integer":
        return value.is_integer
    raise _no_attribute(value, name)


def _bounded(method: Callable, name: str, size: int, limits: Limits) -> PyBuiltin:
    """A string method whose result's size is checked first where it can grow."""

    def call(ctx: RunContext, *args: Any) -> Any:
        if name in ("ljust", "rjust", "center", "zfill") and args:
            _check_length(operator.index(args[0]), limits, f"str.{name}()")
        elif name == "replace" and len(args) >= 2:
            old, new = args[0], args[1]
            if isinstance(old, str) and isinstance(new, str):
                count = method.__self__.count(old) if old else size + 1
                _check_length(size + count * len(new), limits, "str.replace()")
        elif name == "join" and args:
            parts = items(args[0], limits, "str.join()")
            total = sum(len(p) for p in parts if isinstance(p, str)) + size * len(parts)
            _check_length(total, limits, "str.join()")
            return method(parts)
        return method(*args)

    return PyBuiltin(name, call)


def _list_method(target: list, name: str) -> PyBuiltin:
    method = getattr(target, name)

    def call(ctx: RunContext, *args: Any) -> Any:
        if name in ("append", "insert"):
            _check_length(len(target) + 1, ctx.limits, "the list")
        elif name == "extend" and args:
            extra = items(args[0], ctx.limits, "list.extend()")
            _check_length(len(target) + len(extra), ctx.limits, "the list")
            return method(extra)
        return method(*args)

    return PyBuiltin(name, call)


def set_member(value: Any, name: str, new: Any) -> None:
    """``value.name = new``: a tensor's ``grad``, ``data`` or ``requires_grad``."""
    from gradcalc.builtins import Tensor

    if isinstance(value, Tensor) and name in _SETTABLE:
        setattr(value, name, new)
        return
    if isinstance(value, Tensor) and name in tensor_members():
        raise FormulaTypeError(
            f"attribute '{name}' of 'Tensor' objects is not writable",
            hint="tensors' writable attributes: grad, data, requires_grad",
        )
    raise FormulaTypeError(f"cannot set attribute '{name}' of a '{type_name(value)}'")


# -------------------------------------------------------------------- operators

_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
    "@": operator.matmul,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "is": operator.is_,
    "is not": operator.is_not,
    "in": lambda left, right: operator.contains(right, left),
    "not in": lambda left, right: not operator.contains(right, left),
}
_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.iadd,
    "-": operator.isub,
    "*": operator.imul,
    "/": operator.itruediv,
    "//": operator.ifloordiv,
    "%": operator.imod,
    "**": operator.ipow,
    "@": operator.imatmul,
}
_SEQUENCES = (str, list, tuple)


def int_bits(limits: Limits) -> int:
    """The largest int a program may make, in bits (a hundredth of max_elements)."""
    return max(limits.max_elements // 100, 64)


def _check_sizes(symbol: str, left: Any, right: Any, limits: Limits) -> None:
    """Refuse an operation on strings, lists or ints whose result would be too large."""
    kinds = (type(left), type(right))
    sequences = isinstance(left, _SEQUENCES) or isinstance(right, _SEQUENCES)
    if sequences and symbol == "+":
        if type(left) is type(right):
            _check_length(len(left) + len(right), limits, "the result of '+'")
        return
    if sequences and symbol == "*":
        count = right if isinstance(left, _SEQUENCES) else left
        sequence = left if isinstance(left, _SEQUENCES) else right
        if type(count) in (int, bool):
            _check_length(len(sequence) * max(count, 0), limits, "the result of '*'")
        return
    if kinds == (int, int):
        bits = int_bits(limits)
        if symbol == "**" and right > 0 and left not in (0, 1, -1):
            size = left.bit_length() * right
        elif symbol == "*":
            size = left.bit_length() + right.bit_length()
        else:
            return
        if size > bits:
            raise LimitError(
                f"the result of '{symbol}' would be an integer of about {size:,} bits, "
                f"more than the limit of {bits:,}",
                hint="use floats (2.0 ** 1000), or raise max_elements (CLI: --max-elements)",
            )


def binary(symbol: str, left: Any, right: Any, limits: Limits, inplace: bool = False) -> Any:
    """``left symbol right`` with Python's meaning, sizes checked first."""
    _check_sizes(symbol, left, right, limits)
    if symbol == "%" and isinstance(left, str):
        return percent_format(left, right, limits)
    if inplace:
        return _INPLACE[symbol](left, right)
    return _OPERATORS[symbol](left, right)


_SIZED = frozenset(
    {"zeros", "ones", "empty", "rand", "randn", "full", "randint", "normal", "Tensor"}
)


def check_creation(callee: Any, args: list, kwargs: dict, limits: Limits) -> None:
    """Refuse a constructor call (``torch.zeros(10**10)``) whose tensor would be over
    ``max_elements``, before it allocates."""
    name = getattr(callee, "__name__", "")
    if name in ("arange", "linspace"):
        numbers = [a for a in args if isinstance(a, int | float)]
        if name == "linspace":
            count = numbers[2] if len(numbers) > 2 else kwargs.get("steps", 0)
        else:
            start, end, step = 0, 0, 1
            if len(numbers) == 1:
                end = numbers[0]
            elif len(numbers) >= 2:
                start, end = numbers[0], numbers[1]
                step = numbers[2] if len(numbers) > 2 else kwargs.get("step", 1)
            count = (end - start) / step if isinstance(step, int | float) and step else 0
        if isinstance(count, int | float) and math.isfinite(count):
            _check_length(int(max(count, 0)), limits, f"torch.{name}()")
        return
    if name not in _SIZED:
        return
    sizes = [*args, kwargs.get("size", ())]
    if name == "full":
        sizes = sizes[:1]
    elif name == "randint":
        sizes = [a for a in sizes if isinstance(a, tuple | list)]
    elif name == "normal":
        sizes = [kwargs.get("size", ())]
    count = 1
    for value in sizes:
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            count *= max(value, 0)
        elif isinstance(value, tuple | list) and all(type(v) is int for v in value):
            for v in value:
                count *= max(v, 0)
        elif name == "Tensor" and isinstance(value, list | tuple):
            return  # data, not sizes
    _check_length(count, limits, f"torch.{name}()")


def python_error(exc: BaseException) -> str:
    """An exception's message for a program's error report: PyTorch's and Python's own words,
    after the name of the Python exception (``ZeroDivisionError: division by zero``) where
    the report's kind (ValueError, TypeError, ShapeError) does not already say it."""
    base = next(c for c in type(exc).__mro__ if c.__module__ == "builtins")
    if base in (RuntimeError, ValueError, TypeError, IndexError) and str(exc):
        return str(exc)
    return f"{base.__name__}: {exc}" if str(exc) else base.__name__


def stdout_write(text: str) -> None:
    sys.stdout.write(text)
