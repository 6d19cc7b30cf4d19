"""The formula language's built-ins: one table from language names to engine operations.

``FUNCTIONS`` maps each function name to a `Builtin`: its signature, a
one-line description, and the adapter, a thin layer over the engine that
normalises arguments the way the language defines them (numbers are floats,
so shapes, axes and indices accept whole floats; ``axis=`` and PyTorch's
``dim=`` are one keyword). Every function of the engine's registry
(``gradcalc.ops.API``) that a formula can express is a built-in by
derivation (`_derive`): doc from the registry, signature and argument
conversion from the engine function's parameters and annotations (see
`_RegistryCall`), or a language adapter of its own (`_override`) where the
language differs from PyTorch. Constructors, ``grad``, ``range`` and the
like are the language's own (`_function`). ``METHODS`` and ``ATTRIBUTES``
are the whitelist of method sugar (``x.sum()``, ``a.grad.zero_()``) and
attributes (``x.T``, ``x.grad``); nothing else about a Python object is
reachable from a formula.

An adapter whose first parameter is ``ctx`` receives the interpreter's
`Context` (dtype, limits, random generator, live scopes).
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Callable, Iterator

import gradcalc as engine
from gradcalc import _numpy, _tensor, ops
from gradcalc.errors import (
    FormulaError,
    FormulaTypeError,
    FormulaValueError,
    GradError,
    ShapeError,
)
from gradcalc.limits import LARGE, Limits, limit_error
from gradcalc.limits import current as current_budget
from gradcalc.nn import functional as _nn_functional  # noqa: F401  (the registry, complete)

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    import inspect
    from typing import Any

np = _numpy.bind(globals())

Tensor = _tensor.Tensor
Size = _tensor.Size
"""``x.shape``: PyTorch's ``torch.Size``, a tuple of ints that prints as ``torch.Size([2, 3])``.
Wherever a tensor is needed it stands for the vector of its sizes (`unshape`)."""


# ------------------------------------------------------------------- the entries


class Builtin:
    """One function of the language.

    A plain slotted class, and the signature (derived from the adapter with
    ``inspect``) is computed on first use: building a hundred signatures and
    dataclasses at import cost several milliseconds of every start-up.
    """

    __slots__ = (
        "_direct_of",
        "_names",
        "_names_of",
        "_signature_of",
        "_visible",
        "context",
        "diagnose",
        "doc",
        "fast",
        "impl",
        "method",
        "name",
    )

    def __init__(
        self,
        name: str,
        doc: str,
        impl: Callable[..., Any],
        method: bool = True,
        diagnose: Callable[..., str | None] | None = None,
        fast: Callable[[Any], Any] | None = None,
        signature: Callable[[], inspect.Signature] | None = None,
        names: Callable[[], tuple[str, ...]] | None = None,
        direct: Callable[[], Callable[[Any], Any] | None] | None = None,
    ) -> None:
        self.name = name
        self.doc = doc
        self.impl = impl
        self.method = method
        """Callable as a method of its first (tensor) argument: ``x.sum()``."""
        self.diagnose = diagnose
        """Explains a failure as a shape mismatch, given the call's arguments."""
        self.fast = fast
        """The engine's method the interpreter may call directly when the only argument
        is a Tensor (``Tensor.sin`` for ``sin``): the adapter's result, one call less."""
        self._direct_of = direct
        """Finds `fast` at first need, when the adapter's signature tells (a registry
        function's, read on first use)."""
        code = getattr(impl, "__code__", None)
        if code is not None and not getattr(impl, "__wrapped__", None):
            self.context = code.co_argcount > 0 and code.co_varnames[0] == "ctx"
        else:
            import inspect

            self.context = next(iter(inspect.signature(impl).parameters), None) == "ctx"
        """The adapter's first parameter is ``ctx``: it receives the `Context`."""
        self._signature_of = signature
        """Makes the signature a user sees, when it is not the adapter's own (a registry
        function's, in the language's words)."""
        self._visible: inspect.Signature | None = None
        self._names_of = names
        """Makes the parameters' names alone, when `signature` is given."""
        self._names: tuple[str, ...] | None = None

    def direct(self) -> Callable[[Any], Any] | None:
        """`fast`, found on first use: what a call with one small tensor may run in place of
        the adapter (compiling ``sum(x)`` looks it up once, not each call)."""
        if self._direct_of is not None:
            self.fast, self._direct_of = self._direct_of(), None
        return self.fast

    def _parameter_names(self) -> tuple[str, ...]:
        """The parameters' names as a user spells them, without building a signature
        (``inspect``'s import cost a call with keywords ~5 ms of start-up)."""
        names = self._names
        if names is None:
            if self._names_of is not None:
                names = self._names_of()
            elif self._signature_of is not None:
                names = tuple(self._parameters.parameters)
            else:
                names = tuple(p[0] for p in _parameters_of(self.impl)[self.context :])
            self._names = names
        return names

    @property
    def _parameters(self) -> inspect.Signature:
        """The adapter's signature as a user sees it (without ``ctx``)."""
        visible = self._visible
        if visible is None:
            if self._signature_of is not None:
                visible = self._visible = self._signature_of()
            else:
                import inspect

                parameters = list(inspect.signature(self.impl).parameters.values())
                visible = self._visible = inspect.Signature(parameters[self.context :])
        return visible

    @property
    def signature(self) -> str:
        return f"{self.name}{_signature_text(self._parameters)}"

    def __repr__(self) -> str:
        return f"<built-in function {self.signature}>"

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(self._parameters.parameters)

    def _positional_labels(self, count: int) -> list[str]:
        """The parameter each of ``count`` positional arguments lands in (``*shape`` repeats)."""
        labels: list[str] = []
        for param in self._parameters.parameters.values():
            if param.kind is param.VAR_POSITIONAL:
                labels += [param.name] * (count - len(labels))
                break
            if param.kind is param.KEYWORD_ONLY or len(labels) == count:
                break
            labels.append(param.name)
        return labels

    def keywords(self, names: tuple[str, ...], values: list) -> dict[str, Any]:
        """Keyword arguments with PyTorch's spellings mapped to the language's (dim -> axis)."""
        return dict(zip(self.keyword_names(names), values, strict=True))

    def keyword_names(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """Each keyword's name in the language's spelling (dim -> axis): the same for every
        call of a call site, which keeps it (`_call_builtin`)."""
        params = self._parameter_names()
        out = []
        for name in names:
            if name not in params:
                alias = KEYWORD_ALIASES.get(name)
                if alias in params:
                    name = alias
            out.append(name)
        return tuple(out)

    def explain(
        self, exc: BaseException, argv: list, nargs: int, kwnames: tuple[str, ...]
    ) -> FormulaError | None:
        """Turn an exception from this built-in's call into the error a user should see
        (None: the generic conversion applies, as for the engine's GradErrors)."""
        if isinstance(exc, GradError | FormulaError):
            return None
        positional = argv[:nargs]
        keywords = self.keywords(kwnames, argv[nargs:])
        try:
            self._parameters.bind(*positional, **keywords)
        except TypeError as mismatch:
            hint = f"signature: {self.signature}"
            reason = str(mismatch)
            unknown = [k for k in keywords if k not in self._parameters.parameters]
            if unknown:
                reason = f"has no parameter '{unknown[0]}'"
                close = _close(unknown[0], self.parameters)
                if close:
                    hint = f"did you mean '{close}'? {hint}"
            return FormulaTypeError(f"{self.name}(): {reason}", hint=hint)
        labels = self._positional_labels(nargs) + list(kwnames)
        for label, value in zip(labels, argv, strict=True):
            if not isinstance(value, Tensor):
                return FormulaTypeError(
                    f"{self.name}(): argument '{label}' is {kind_of(value)}, not a tensor",
                    hint=f"signature: {self.signature}",
                )
        if self.diagnose is not None and isinstance(exc, ValueError | RuntimeError | IndexError):
            try:
                message = self.diagnose(*positional, **keywords)
            except Exception:
                message = None
            if message:
                return ShapeError(message)
        if isinstance(exc, ValueError | RuntimeError | IndexError) and _looks_like_shapes(exc):
            return ShapeError(f"{self.name}: {exc}")
        if isinstance(exc, TypeError):
            return FormulaTypeError(f"{self.name}(): {exc}", hint=f"signature: {self.signature}")
        return None


class Attribute:
    """One attribute of tensors in the language (``x.T``, ``x.grad``)."""

    __slots__ = ("doc", "get", "name")

    def __init__(self, name: str, doc: str, get: Callable[[Context, Any], Any]) -> None:
        self.name = name
        self.doc = doc
        self.get = get


class Constant:
    """A named constant of the language (``pi``, ``e``)."""

    __slots__ = ("doc", "name", "value")

    def __init__(self, name: str, doc: str, value: float) -> None:
        self.name = name
        self.doc = doc
        self.value = value


KEYWORD_ALIASES = {"dim": "axis", "input": "x", "other": "y", "exponent": "y"}

FUNCTIONS: dict[str, Builtin] = {}
METHODS: dict[str, Builtin] = {}
ATTRIBUTES: dict[str, Attribute] = {}
CONSTANTS: dict[str, Constant] = {
    "pi": Constant("pi", "π = 3.14159…", math.pi),
    "e": Constant("e", "Euler's number e = 2.71828…", math.e),
    "inf": Constant("inf", "positive infinity (-inf is negative infinity)", math.inf),
    "nan": Constant("nan", "not a number, as NaN results print", math.nan),
}


def _function(
    name: str, doc: str, *, method: bool = True, diagnose: Callable | None = None
) -> Callable:
    def register(impl: Callable) -> Callable:
        FUNCTIONS[name] = Builtin(name, doc, impl, method=method, diagnose=diagnose)
        return impl

    return register


def _method_only(name: str, doc: str) -> Callable:
    def register(impl: Callable) -> Callable:
        METHODS[name] = Builtin(name, doc, impl)
        return impl

    return register


def _attribute(name: str, doc: str) -> Callable:
    def register(get: Callable) -> Callable:
        ATTRIBUTES[name] = Attribute(name, doc, get)
        return get

    return register


# -------------------------------------------------------------------- the context


class RangeValue:
    """``range(...)``: only for ``for`` loops (and ``len``); its items are float scalars."""

    __slots__ = ("start", "step", "stop")

    def __init__(self, start: int, stop: int, step: int) -> None:
        self.start, self.stop, self.step = start, stop, step

    def __len__(self) -> int:
        return len(range(self.start, self.stop, self.step))

    def __repr__(self) -> str:
        return f"range({self.start}, {self.stop}, {self.step})"


_LITERALS: dict[int, weakref.ref] = {}
"""Every live literal tensor, by id: shared by all contexts, as compiled programs are."""


def literal(array: Any) -> Any:
    """A constant tensor over ``array`` (no copy). Compiled programs share their literal
    tensors between runs and interpreters, so in-place methods must never change them:
    they are remembered here and their arrays made read-only."""
    array = np.asarray(array)
    if array.ndim == 0:
        data = array[()]  # a NumPy scalar, as the engine's 0-d results are
    else:
        array.flags.writeable = False
        data = array
    return _remember_literal(_tensor.wrap(data))


def _remember_literal(tensor: Any) -> Any:
    key = id(tensor)
    # (the dict bound as a default: at interpreter exit, module globals may be gone)
    _LITERALS[key] = weakref.ref(tensor, lambda _, key=key, kept=_LITERALS: kept.pop(key, None))
    return tensor


def is_literal(value: Any) -> bool:
    """Whether ``value`` is a literal tensor (which in-place methods must leave alone)."""
    ref = _LITERALS.get(id(value))
    return ref is not None and ref() is value


GRAD_MODES = (_tensor._GradModeContext,)
"""What ``with`` accepts: ``no_grad()``, ``enable_grad()``, ``set_grad_enabled(mode)``."""


def __getattr__(name: str) -> Any:
    """``TRUE``/``FALSE``, the language's True and False: shared literals, as a
    comparison's result is a tensor (of NumPy bools: made when first read)."""
    if name in ("TRUE", "FALSE"):  # on the float backend: Python bools, no NumPy
        made = globals().setdefault("TRUE", _remember_literal(_tensor.wrap(True)))
        globals().setdefault("FALSE", _remember_literal(_tensor.wrap(False)))
        return made if name == "TRUE" else globals()["FALSE"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Context:
    """What adapters need from the interpreter: dtype, limits, random generator, scopes."""

    def __init__(self, dtype: str, limits: Limits, seed: int | None) -> None:
        self.dtype_name = dtype
        self.dtype = _tensor.float64 if dtype == "float64" else _tensor.float32
        self.limits = limits
        self.generator = None
        if seed is not None:
            self.generator = engine.Generator()
            self.generator.manual_seed(int(seed))
        self.scopes: list[dict] = []
        self.literals = _LITERALS

    @property
    def np_dtype(self) -> Any:
        """The language's dtype as NumPy's (loads NumPy: float64 scalars need none)."""
        return self.dtype.np

    # -- making tensors

    def literal(self, array: Any) -> Any:
        """A constant tensor over ``array`` (no copy); see `literal`."""
        return literal(array)

    def number_literal(self, number: float) -> Any:
        """A number of the program as a literal tensor of the language's dtype."""
        return _remember_literal(_tensor.wrap(self.zero_d(number)))

    def is_literal(self, value: Any) -> bool:
        return is_literal(value)

    def constant(self, array: Any) -> Any:
        """A fresh constant tensor of the language's dtype."""
        data = np.asarray(array, dtype=self.np_dtype)
        return _tensor.wrap(self.zero_d(data[()]) if data.ndim == 0 else data)

    def scalar(self, number: float) -> Any:
        return _tensor.wrap(self.zero_d(number))

    def zero_d(self, number: Any) -> Any:
        """A 0-d value's data in the language's dtype: float64 runs on the engine's float
        backend (a Python float, no NumPy), float32 on a NumPy scalar. The one place the
        language picks a backend (tests/test_float_backend.py switches it here)."""
        if self.dtype_name == "float64":
            return float(number)
        return self.np_dtype.type(number)

    def leaf(self, value: Any, requires_grad: bool, label: str) -> Any:
        """A new leaf from a number, nested list, array or tensor, in the language's dtype."""
        if (type(value) is float or (type(value) is int and abs(value) < 2**1023)) and (
            self.dtype_name == "float64"
        ):  # a number: no NumPy on the float backend
            return _tensor.leaf(self.zero_d(value), requires_grad=bool(requires_grad))
        if type(value) is list:  # (the common case, without two failed isinstance)
            array = nested_list_array(value, self, label)
        elif isinstance(value, Tensor) and type(value._raw) is float:
            return _tensor.leaf(self.zero_d(value._raw), requires_grad=bool(requires_grad))
        elif isinstance(value, Tensor):
            array = np.array(np.asarray(value._data), dtype=self.np_dtype)
        else:
            array = nested_list_array(value, self, label)
        size = array.size
        if size > self.limits.max_elements or size >= LARGE:  # (else `check_elements` passes)
            self.check_elements(size, f"the value of {label}")
        # 0-d: a NumPy scalar, as the engine's own 0-d tensors hold (arithmetic between
        # scalars skips NumPy's array machinery, several times faster in a scalar chain)
        if array.ndim == 0:
            return _tensor.leaf(self.zero_d(array[()]), requires_grad=bool(requires_grad))
        return _tensor.leaf(array, requires_grad=bool(requires_grad))

    def promote(self, value: Any) -> Any:
        """The differentiable leaf an assignment of a fresh constant binds (data shared;
        a float stays a float, so a scalar program never loads NumPy)."""
        raw = value._raw
        return _tensor.leaf(raw if type(raw) is float else value._data, requires_grad=True)

    # -- limits

    def check_elements(self, count: int, what: str) -> None:
        """Before a tensor of ``count`` elements is made: the limit on one tensor's size,
        and for a large one the run's budget (work, memory, time; `gradcalc.limits`)."""
        limit = self.limits.max_elements
        if count > limit:
            raise limit_error(
                "max_elements",
                f"{what} would have {count:,} elements, more than the limit of {limit:,}",
                "use a smaller size",
            )
        if count >= LARGE and (budget := current_budget()) is not None:
            budget.allocate(count, self.np_dtype.itemsize, what)

    def check_shape(self, shape: tuple[int, ...], what: str) -> None:
        self.check_elements(math.prod(shape), what)

    def check_broadcast(self, symbol: str, *tensors: Any) -> None:
        """Refuse an operation whose result would be too large, before it allocates."""
        shapes = [tuple(t.shape) for t in tensors]
        if not any(shapes):
            return  # all 0-d
        if symbol == "@":
            shape = _matmul_shape(shapes[0], shapes[1])
        else:
            try:
                shape = np.broadcast_shapes(*shapes)
            except ValueError:
                return  # the operation itself reports the mismatch
        if shape is not None:
            self.check_shape(shape, f"the result of '{symbol}'")

    # -- loops

    def iterate(self, value: Any) -> Iterator:
        if isinstance(value, RangeValue):
            return self._range_items(value)
        if isinstance(value, list | tuple | str | range | zip | enumerate | Size):
            return iter(value)  # Python's values (programs)
        if isinstance(value, Tensor):
            if value.ndim == 0:
                raise FormulaTypeError(
                    "cannot loop over a 0-d tensor (a single number)",
                    hint="use range(n) to count, or a vector to loop over its items",
                )
            return (value[index] for index in range(value.shape[0]))
        raise FormulaTypeError(
            f"a for loop needs range(...) or a tensor, not {kind_of(value)}",
            hint="for i in range(10): ...",
        )

    def loop_span(self, value: Any) -> range:
        """What ``iterate(value)`` would count through, as a Python range of numbers
        (a range's items, a tensor's first-axis indices), for loops whose variable the
        program never reads: `loop_item` then makes only the value the variable keeps."""
        if isinstance(value, RangeValue):
            return range(value.start, value.stop, value.step)
        self.iterate(value)  # the same errors
        return range(value.shape[0])

    def loop_item(self, value: Any, number: int) -> Any:
        """The item ``iterate(value)`` yields at ``number`` of `loop_span`."""
        if isinstance(value, RangeValue):
            return self.scalar(number)
        return value[number]

    def _range_items(self, span: RangeValue) -> Iterator:
        scalar = self.scalar
        for number in range(span.start, span.stop, span.step):
            yield scalar(number)


# --------------------------------------------------------- values and conversions


def unshape(ctx: Context, value: Any) -> Any:
    """A shape as the vector of its sizes (a fresh constant); any other value unchanged."""
    if type(value) is Size:
        return ctx.constant(np.array(value, dtype=ctx.np_dtype).reshape(len(value)))
    return value


def kind_of(value: Any) -> str:
    if value is None:
        return "None"
    if type(value) is Size:
        return "a shape"
    if isinstance(value, Tensor):
        return "a tensor"
    if isinstance(value, Builtin):
        return f"the built-in function {value.name}()"
    if isinstance(value, RangeValue):
        return "a range"
    name = getattr(value, "name", None)
    if isinstance(name, str) and hasattr(value, "params"):
        return f"the function {name}()"
    return f"a {type(value).__name__}"


def truth(value: Any) -> bool:
    """Python's truth of a value; a tensor's only when it has exactly one element."""
    if isinstance(value, Tensor):
        if type(value._raw) in _tensor.PYTHON_VALUES:  # the float backend
            return bool(value._raw)
        data = value._data
        if data.size == 1:
            return bool(data)
        raise FormulaValueError(
            f"the truth value of a tensor with {data.size} elements is ambiguous",
            hint="reduce it to one number first, e.g. sum(x > 0) > 0, or compare "
            "a single element x[0] > 0",
        )
    if type(value) is Size:
        return len(value) > 0  # as Python's: torch.Size([]) is false
    if value is None:
        return False
    if isinstance(value, int | float | str | list | tuple | range):
        return bool(value)  # Python's values (programs): 0, '', [] are false
    return True


def _as_number(value: Any, what: str) -> float:
    if isinstance(value, Tensor):
        if type(value._raw) in _tensor.PYTHON_VALUES:  # the float backend
            return float(value._raw)
        data = value._data
        if data.size != 1:
            raise FormulaValueError(
                f"{what} must be a single number, not a tensor of shape {tuple(np.shape(data))}"
            )
        return float(np.asarray(data).reshape(()))
    if isinstance(value, bool | int | float) or (
        _numpy.is_loaded() and isinstance(value, np.number)
    ):
        return float(value)
    raise FormulaTypeError(f"{what} must be a number, not {kind_of(value)}")


def as_int(value: Any, what: str) -> int:
    """A whole number from a language number (a float that happens to be whole)."""
    if type(value) is int and -_EXACT <= value <= _EXACT:  # an adapter's default (axis=-1)
        return value
    number = _as_number(value, what)
    if not math.isfinite(number) or not number.is_integer():
        raise FormulaValueError(f"{what} must be a whole number, not {number:g}")
    return int(number)


_EXACT = 2**53
"""The largest whole number a float holds exactly: an int up to it is its own `as_int`."""


def _axis_of(x: Any, axis: Any, what: str, hint: str | None = None) -> int:
    """One axis of ``x``, checked: -ndim <= axis < ndim (0-d tensors accept 0 and -1)."""
    index = as_int(axis, f"{what}: axis")
    ndim = max(x.ndim, 1)
    if not -ndim <= index < ndim:
        raise ShapeError(
            f"{what}: axis {index} is out of range for a tensor of shape {_shape(x)}",
            hint=hint or f"axes run from {-ndim} to {ndim - 1}",
        )
    return index


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else truth(value)


def _shape_from(args: tuple, what: str) -> tuple[int, ...]:
    """A shape from ``(2, 3)``, a single list/shape tensor ``([2, 3])``, or ``()``."""
    if len(args) == 1 and isinstance(args[0], Tensor) and np.ndim(args[0]._data) == 1:
        items = [float(v) for v in np.asarray(args[0]._data)]
    elif len(args) == 1 and isinstance(args[0], tuple | list):
        items = list(args[0])
    else:
        items = list(args)
    shape = tuple(as_int(v, f"a dimension of {what}") for v in items)
    for size in shape:
        if size < 0:
            raise FormulaValueError(f"a dimension of {what} cannot be negative ({size})")
    return shape


def _axes(axis: Any, what: str = "axis") -> int | tuple[int, ...] | None:
    if axis is None:
        return None
    if isinstance(axis, Tensor) and axis.ndim == 1:
        return tuple(as_int(float(v), what) for v in np.asarray(axis._data))
    return as_int(axis, what)


def nested_list_array(value: Any, ctx: Context, label: str = "the list") -> np.ndarray:
    """An array of the language's dtype from numbers or nested lists; ragged is a ShapeError."""
    try:
        array = np.array(value, dtype=ctx.np_dtype)
    except (ValueError, TypeError) as exc:
        if "maximum number of dimension" in str(exc):
            raise ShapeError(
                f"{label} nests more deeply than a tensor's 64 dimensions",
            ) from None
        if "inhomogeneous" in str(exc) or "sequence" in str(exc):
            raise ShapeError(
                f"{label} is ragged: its rows have different lengths",
                hint="every row of a matrix needs the same number of items",
            ) from None
        raise FormulaTypeError(f"{label} is not made of numbers") from None
    return array


# ------------------------------------------------------------------------ indexing


def index_key(key: Any) -> Any:
    """A language index (float scalars, float vectors, masks, slices, tuples) for NumPy."""
    if isinstance(key, tuple):
        return tuple(index_key(part) for part in key)
    if isinstance(key, slice):
        return key
    if isinstance(key, Tensor):
        data = np.asarray(key._data)
        if data.dtype.kind == "b":
            return data
        if data.ndim == 0:
            return as_int(key, "an index")
        if not np.all(np.isfinite(data)) or not np.all(np.mod(data, 1) == 0):
            raise FormulaValueError("indices must be whole numbers")
        return data.astype(np.intp)
    raise FormulaTypeError(f"an index must be a number, a slice or a tensor, not {kind_of(key)}")


def make_slice(lower: Any, upper: Any, step: Any) -> slice:
    bounds = [None if v is None else as_int(v, "a slice bound") for v in (lower, upper, step)]
    if bounds[2] == 0:
        raise FormulaValueError("a slice step cannot be zero")
    return slice(*bounds)


def get_item(value: Any, key: Any) -> Any:
    numpy_key = index_key(key)
    try:
        return value[numpy_key]
    except IndexError as exc:
        raise ShapeError(
            f"index out of range for a tensor of shape {_shape(value)}: {exc}"
        ) from None


def set_items(ctx: Context, name: str, base: Any, keys: list, value: Any) -> Any:
    """``name[k1][k2] = value`` without mutation: the new tensor for ``name``."""
    if not isinstance(base, Tensor):
        raise FormulaTypeError(f"'{name}' is {kind_of(base)}; only tensors have elements")
    if not isinstance(value, Tensor):
        raise FormulaTypeError(f"cannot store {kind_of(value)} into a tensor's elements")
    containers = [base]
    for key in keys[:-1]:
        containers.append(get_item(containers[-1], key))
    for container, key in zip(reversed(containers), reversed(keys), strict=True):
        value = index_put(ctx, name, container, index_key(key), value)
    return value


def index_put(ctx: Context, name: str, x: Any, key: Any, value: Any) -> Any:
    """x with x[key] replaced by value, differentiable in both, from engine ops:
    ``where(mask, value gathered to x's positions, x)``."""
    shape = tuple(x.shape)
    count = int(np.prod(shape, dtype=np.int64))
    try:
        positions = np.arange(count).reshape(shape)[key]
    except IndexError as exc:
        raise ShapeError(f"index out of range for '{name}' of shape {shape}: {exc}") from None
    target = np.shape(positions)
    source = tuple(value.shape)
    try:
        fits = np.broadcast_shapes(source, target) == target
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(
            f"cannot store a value of shape {source} into {name}[...], which has shape {target}"
        )
    flat = np.ravel(positions)
    if flat.size == 0:
        return x
    if source != target:
        value = value + ctx.literal(np.zeros(target, dtype=ctx.np_dtype))
    gather = np.zeros(count, dtype=np.intp)
    gather[flat] = np.arange(flat.size)
    mask = np.zeros(count, dtype=bool)
    mask[flat] = True
    scattered = value.reshape(-1)[gather].reshape(shape)
    return engine.where(ctx.literal(mask.reshape(shape)), scattered, x)


def build_list(ctx: Context, items: list) -> Any:
    """``[a, b, c]`` of tensors: stacked along a new first axis, differentiably."""
    if not items:
        return ctx.literal(np.zeros(0, dtype=ctx.np_dtype))
    for item in items:
        if not isinstance(item, Tensor):
            raise FormulaTypeError(f"a list item is {kind_of(item)}, not a number or tensor")
    first = np.shape(items[0]._data)
    for item in items[1:]:
        if tuple(item.shape) != first:
            raise ShapeError(
                f"list items have different shapes: {first} and {tuple(item.shape)}",
                hint="every item of a list needs the same shape",
            )
    ctx.check_elements(len(items) * math.prod(first), "the list")
    return engine.stack(items)


# ------------------------------------------------------------------ diagnostics


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape)


def _matmul_shape(a: tuple, b: tuple) -> tuple | None:
    if not a or not b:
        return None
    if len(a) == 1 and len(b) == 1:
        return ()
    try:
        batch = np.broadcast_shapes(a[:-2], b[:-2])
    except ValueError:
        return None
    rows = (a[-2],) if len(a) >= 2 else ()
    cols = (b[-1],) if len(b) >= 2 else ()
    return batch + rows + cols


def matmul_problem(x: Any, y: Any, name: str = "matmul") -> str | None:
    """Why ``x @ y`` cannot work, naming both shapes."""
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
        return None
    a, b = _shape(x), _shape(y)
    if not a or not b:
        return f"{name}: {a} @ {b} — both operands need at least one dimension (use * to scale)"
    inner_a = a[-1]
    inner_b = b[-2] if len(b) >= 2 else b[0]
    if inner_a != inner_b:
        return f"{name}: {a} @ {b} — inner dimensions {inner_a} and {inner_b} differ"
    try:
        np.broadcast_shapes(a[:-2], b[:-2])
    except ValueError:
        return f"{name}: {a} @ {b} — batch dimensions {a[:-2]} and {b[:-2]} do not broadcast"
    return None


def broadcast_problem(name: str, *values: Any) -> str | None:
    """Why elementwise ``name`` cannot combine these shapes, or None if it can."""
    shapes = [_shape(v) for v in values if isinstance(v, Tensor)]
    if not any(shapes):
        return None  # all 0-d (on the float backend: no NumPy to ask)
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        listed = " and ".join(str(s) for s in shapes)
        return f"{name}: shapes {listed} cannot be broadcast together"
    return None


def operator_problem(symbol: str, left: Any, right: Any) -> str | None:
    if symbol == "@":
        return matmul_problem(left, right, "matmul")
    return broadcast_problem(f"'{symbol}'", left, right)


def _looks_like_shapes(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("shape", "broadcast", "dimension", "size"))


def grad_error_hint(exc: BaseException) -> str | None:
    name = type(exc).__name__
    return {
        "NoGradFnError": "the output does not depend on a differentiable variable; bound "
        "variables are differentiable unless wrapped in const()/detach()",
        "ImplicitGradError": "pass a gradient of the output's shape, y.backward(ones(...)), "
        "or reduce it first: y.sum().backward()",
        "FreedGraphError": "compute the output again before a second backward, or call "
        "backward(y, retain_graph=True) the first time",
        "InplaceLeafError": "a variable that requires grad cannot be changed in place; "
        "assign a new value instead (w = w - 0.1*g)",
    }.get(name)


def _signature_text(signature: inspect.Signature) -> str:
    parts = []
    for param in signature.parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            parts.append(f"*{param.name}")
        elif param.kind is param.KEYWORD_ONLY and not any(
            p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()
        ):
            parts.append(f"{param.name}={param.default!r}")
        elif param.default is param.empty:
            parts.append(param.name)
        else:
            parts.append(f"{param.name}={param.default!r}")
    return f"({', '.join(parts)})"


def _close(name: str, candidates: Any) -> str | None:
    import difflib

    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


# ===================================================================== functions
# The registry's functions (gradcalc.ops.API) are built-ins by derivation (`_derive`): their
# doc is the registry's, their signature the engine function's in the language's words, and
# `_RegistryCall` converts the language's arguments by the engine's parameter annotations.
# The adapters below are for the functions whose language form differs from PyTorch's:
# NumPy habits (transpose reverses the axes, max takes an axis and returns the values),
# explained shape errors, limits checked before a large result is allocated.

_OVERRIDES: dict[str, tuple[Callable, Callable | None, bool]] = {}
"""Registry function name -> (language adapter, diagnose, method)."""


def _override(
    name: str, *, diagnose: Callable | None = None, method: bool = True
) -> Callable[[Callable], Callable]:
    def register(impl: Callable) -> Callable:
        _OVERRIDES[name] = (impl, diagnose, method)
        return impl

    return register


_LANGUAGE_NAMES = {
    "input": "x",
    "other": "y",
    "exponent": "y",
    "mat2": "y",
    "vec": "y",
    "vec2": "y",
    "dim": "axis",
}
"""The language's parameter names for PyTorch's (its numbers are x and y, axes are axis)."""
_HIDDEN = frozenset({"dtype", "memory_format"})
"""Parameters the language cannot express (it has no dtypes, and no strings)."""


def _rows(value: Any) -> list:
    """Tensors to join: a tensor stands for the list of its rows (``[a, b]`` is stacked)."""
    if isinstance(value, Tensor):
        if value.ndim == 0:
            raise FormulaTypeError("expected a list of tensors, not a single number")
        return [value[i] for i in range(value.shape[0])]
    return list(value)


def _converter(annotation: str, what: str) -> Callable[[Any], Any] | None:
    """How a language value becomes the engine's argument, by the engine's annotation
    (None: passed as it is, a tensor)."""
    if annotation in ("int", "int | None"):
        return lambda v: v if v is None else as_int(v, what)
    if annotation in ("float", "float | None"):
        return lambda v: v if v is None else _as_number(v, what)
    if annotation == "bool":
        return _flag
    if annotation == "Dims":
        return lambda v: _axes(v, what)
    if annotation == "Indices":
        return lambda v: v if v is None else index_key(v)
    if annotation == "Sequence[int]":
        return lambda v: _shape_from((v,), what)
    if annotation == "Tensors":
        return _rows
    return None


_CO_VARARGS, _CO_VARKEYWORDS = 0x04, 0x08


def _parameters_of(impl: Callable) -> list[tuple[str, str, str, Any]]:
    """(name, kind, annotation text, default) of each parameter of ``impl``, in
    ``inspect.signature``'s order; kind is "positional", "star" or "keyword" (only) and the
    default `_NO_DEFAULT` when there is none. Read from the code object of a plain function:
    importing ``inspect`` cost a formula calling ``maximum(a, b)`` ~5 ms of start-up."""
    code = getattr(impl, "__code__", None)
    if code is None or hasattr(impl, "__wrapped__") or code.co_flags & _CO_VARKEYWORDS:
        import inspect

        kinds = {
            inspect.Parameter.VAR_POSITIONAL: "star",
            inspect.Parameter.KEYWORD_ONLY: "keyword",
        }
        return [
            (
                param.name,
                kinds.get(param.kind, "positional"),
                param.annotation if isinstance(param.annotation, str) else "",
                _NO_DEFAULT if param.default is param.empty else param.default,
            )
            for param in inspect.signature(impl).parameters.values()
        ]
    names = code.co_varnames
    count, keyword_count = code.co_argcount, code.co_kwonlyargcount
    defaults = impl.__defaults__ or ()
    keyword_defaults = impl.__kwdefaults__ or {}
    annotations = getattr(impl, "__annotations__", {})

    def text(name: str) -> str:
        annotation = annotations.get(name, "")
        return annotation if isinstance(annotation, str) else ""

    first_default = count - len(defaults)
    found = [
        (
            name,
            "positional",
            text(name),
            defaults[index - first_default] if index >= first_default else _NO_DEFAULT,
        )
        for index, name in enumerate(names[:count])
    ]
    if code.co_flags & _CO_VARARGS:
        star = names[count + keyword_count]
        found.append((star, "star", text(star), _NO_DEFAULT))
    found += [
        (name, "keyword", text(name), keyword_defaults.get(name, _NO_DEFAULT))
        for name in names[count : count + keyword_count]
    ]
    return found


_NO_DEFAULT = object()
"""A parameter without a default (``inspect.Parameter.empty``)."""


class _RegistryCall:
    """A registry function's language signature and argument conversion, built on first use
    (reading signatures at import would cost every start-up several milliseconds)."""

    __slots__ = ("_shown", "keywords", "plain", "positional", "star")

    def __init__(self, name: str, impl: Callable) -> None:
        parameters = _parameters_of(impl)
        names = {parameter[0] for parameter in parameters}
        self._shown: list[tuple[str, str, Any]] = []
        self.positional: list[Callable | None] = []
        self.keywords: dict[str, tuple[str, Callable | None]] = {}
        self.star: Callable | None = None
        for python_name, kind, annotation, default in parameters:
            if (
                python_name in _HIDDEN
                or re.search(r"\bstr\b", annotation)
                or (python_name == "axis" and "dim" in names)  # PyTorch's alias of dim
            ):
                continue
            language = _LANGUAGE_NAMES.get(python_name, python_name)
            convert = _converter(annotation, f"{name}(): {language}")
            if kind == "star":
                self.star = self._sizes(f"a dimension of {name}()")
            else:
                if kind != "keyword":
                    self.positional.append(convert)
                self.keywords[language] = (python_name, convert)
            self._shown.append((language, kind, default))
        self.plain = 0
        """How many leading positional arguments go to the engine as they are (tensors):
        a call with no more than these and no keywords converts nothing."""
        while self.plain < len(self.positional) and self.positional[self.plain] is None:
            self.plain += 1

    @property
    def signature(self) -> inspect.Signature:
        """The signature a user sees, in the language's names (for messages and listings)."""
        import inspect

        kinds = {
            "positional": inspect.Parameter.POSITIONAL_OR_KEYWORD,
            "star": inspect.Parameter.VAR_POSITIONAL,
            "keyword": inspect.Parameter.KEYWORD_ONLY,
        }
        return inspect.Signature(
            [
                inspect.Parameter(
                    language,
                    kinds[kind],
                    default=inspect.Parameter.empty if default is _NO_DEFAULT else default,
                )
                for language, kind, default in self._shown
            ]
        )

    @staticmethod
    def _sizes(what: str) -> Callable[[tuple], list[int]]:
        return lambda values: [as_int(v, what) for v in _flat_shape_args(values)]

    def arguments(self, args: tuple, kwargs: dict) -> tuple[list, dict]:
        """The engine's positional and keyword arguments for the language's. Extra or
        unknown ones go on as they are: the engine's TypeError is then explained."""
        count = len(self.positional)
        out = [
            value if convert is None else convert(value)
            for convert, value in zip(self.positional, args[:count], strict=False)
        ]
        if len(args) > count:
            out += self.star(args[count:]) if self.star is not None else args[count:]
        named = {}
        for key, value in kwargs.items():
            python, convert = self.keywords.get(key, (key, None))
            named[python] = value if convert is None else convert(value)
        return out, named


def _generic(entry: Any, name: str, doc: str) -> Builtin:
    """The built-in of a registry function without a language adapter of its own."""
    impl = entry.impl
    calls: list[_RegistryCall] = []

    def call() -> _RegistryCall:
        if not calls:
            calls.append(_RegistryCall(name, impl))
        return calls[0]

    code = impl.__code__
    first = code.co_varnames[0] if code.co_argcount else ""
    diagnose = None
    broadcasts = entry.elementwise and code.co_argcount >= 2
    if broadcasts:
        # a result of the operands' broadcast shape: its size is checked before it exists

        def adapter(ctx: Context, *args: Any, **kwargs: Any) -> Any:
            if kwargs or len(args) > (calls[0] if calls else call()).plain:
                args, kwargs = call().arguments(args, kwargs)
            operands = [v for v in (*args, *kwargs.values()) if type(v) is Tensor]
            ctx.check_broadcast(name, *operands)
            return impl(*args, **kwargs)

        def diagnose(*args: Any, **kwargs: Any) -> str | None:
            return broadcast_problem(name, *args, *kwargs.values())

    else:

        def adapter(*args: Any, **kwargs: Any) -> Any:
            if kwargs or len(args) > (calls[0] if calls else call()).plain:
                args, kwargs = call().arguments(args, kwargs)
            return impl(*args, **kwargs)

    def direct() -> Callable[[Any], Any] | None:
        # one argument the adapter passes on as it is (a tensor): it only calls impl
        return impl if not broadcasts and call().plain >= 1 else None

    return Builtin(
        name,
        doc,
        adapter,
        method=first == "input",  # method sugar for any function of a tensor first
        diagnose=diagnose,
        fast=impl if entry.op is not None else None,  # an op's function of one tensor
        signature=lambda: call().signature,
        names=lambda: tuple(shown[0] for shown in call()._shown),
        direct=None if entry.op is not None else direct,
    )


def _derive() -> None:
    """Every function of the registry a formula can express becomes a built-in (under
    its aliases too); the table is then sorted by name, the language's own included."""
    overrides = dict(_OVERRIDES)
    for entry in ops.API.values():
        if not entry.builtin:
            continue
        override = overrides.pop(entry.name, None)
        for name in (entry.name, *entry.aliases):
            if name in FUNCTIONS:
                raise ValueError(f"built-in {name!r} is both the language's and the registry's")
            doc = entry.doc if name == entry.name else f"same as {entry.name}(): {entry.doc}"
            if override is None:
                FUNCTIONS[name] = _generic(entry, name, doc)
            else:
                impl, diagnose, method = override
                FUNCTIONS[name] = Builtin(name, doc, impl, method=method, diagnose=diagnose)
    if overrides:
        raise ValueError(f"language adapters for no registry function: {sorted(overrides)}")
    ordered = sorted(FUNCTIONS.items())
    FUNCTIONS.clear()
    FUNCTIONS.update(ordered)


# ---------------------------------------------------------------- elementwise


@_override("pow", diagnose=lambda x, y: broadcast_problem("pow", x, y))
def _pow(ctx: Context, x: Any, y: Any) -> Any:
    ctx.check_broadcast("pow", x, y)
    if not y.requires_grad and y.ndim == 0 and x.is_floating_point():
        return x ** float(y.item())  # a constant exponent: PyTorch's PowBackward0
    return x**y


@_override("clamp")
def _clamp(ctx: Context, x: Any, min: Any = None, max: Any = None) -> Any:
    if min is None and max is None:
        raise FormulaValueError("clamp() needs min=, max= or both")
    bounds = {}
    for key, bound in (("min", min), ("max", max)):
        if bound is not None:
            ctx.check_broadcast("clamp", x, bound)
            # a constant scalar bound goes as a number: PyTorch's ClampBackward1
            bounds[key] = (
                bound if bound.requires_grad or bound.numel() != 1 else _as_number(bound, key)
            )
    return x.clamp(**bounds)


@_override(
    "where",
    method=False,
    diagnose=lambda condition, x, y: broadcast_problem("where", condition, x, y),
)
def _where(ctx: Context, condition: Any, x: Any, y: Any) -> Any:
    ctx.check_broadcast("where", condition, x, y)
    if condition._data.dtype.kind != "b":
        condition = condition != ctx.scalar(0.0)
    return engine.where(condition, x, y)


# ------------------------------------------------------------------ reductions


_EXTREMES = {
    "max": "the second argument of max is an axis; the elementwise larger of two "
    "tensors is maximum(x, y)",
    "min": "the second argument of min is an axis; the elementwise smaller of two "
    "tensors is minimum(x, y)",
}


def _one_axis_reduction(method: str) -> Callable:
    def reduce(x: Any, axis: Any = None, keepdim: Any = False) -> Any:
        dim = _axes(axis)
        keep = _flag(keepdim)
        if dim is None:
            result = getattr(x, method)()
            return result.reshape((1,) * x.ndim) if keep else result
        dims = (dim,) if isinstance(dim, int) else dim
        ndim = x.ndim
        for one in dims:
            _axis_of(x, one, method, _EXTREMES.get(method))
        for one in sorted((d % ndim if ndim else d for d in dims), reverse=True):
            result = getattr(x, method)(dim=one, keepdim=keep)
            x = result[0] if isinstance(result, tuple) else result
        return x

    return reduce


_override("prod")(_one_axis_reduction("prod"))
_override("max")(_one_axis_reduction("max"))
_override("min")(_one_axis_reduction("min"))


@_override("norm")
def _norm(x: Any, p: Any = 2, axis: Any = None, keepdim: Any = False) -> Any:
    dim = _axes(axis)
    order = _as_number(p, "p")
    if dim is None:
        result = x.norm(p=order)
        return result.reshape((1,) * x.ndim) if _flag(keepdim) else result
    return x.norm(p=order, dim=dim, keepdim=_flag(keepdim))


@_override("logsumexp")
def _logsumexp(x: Any, axis: Any = None, keepdim: Any = False) -> Any:
    dim = _axes(axis)
    if dim is None:
        result = x.reshape(-1).logsumexp(dim=0)
        return result.reshape((1,) * x.ndim) if _flag(keepdim) else result
    return x.logsumexp(dim=dim, keepdim=_flag(keepdim))


def _along_axis(method: str) -> Callable:
    """softmax and log_softmax: along one axis, the last by default (PyTorch guesses)."""

    def normalise(x: Any, axis: Any = -1) -> Any:
        dim = _axis_of(x, axis, method)
        if x.ndim == 0:
            return getattr(x.reshape(1), method)(dim=0).reshape(())
        return getattr(x, method)(dim=dim)

    return normalise


_override("softmax")(_along_axis("softmax"))
_override("log_softmax")(_along_axis("log_softmax"))


# -------------------------------------------------------------- linear algebra


@_override("matmul", diagnose=matmul_problem)
def _matmul(ctx: Context, x: Any, y: Any) -> Any:
    ctx.check_broadcast("@", x, y)
    return x.matmul(y)


def _dot_problem(x: Any, y: Any) -> str | None:
    a, b = _shape(x), _shape(y)
    if len(a) != 1 or len(b) != 1:
        return f"dot: {a} · {b} — dot takes two vectors; use matmul or @ for matrices"
    if a != b:
        return f"dot: {a} · {b} — lengths {a[0]} and {b[0]} differ"
    return None


@_override("dot", diagnose=_dot_problem)
def _dot(x: Any, y: Any) -> Any:
    return x.dot(y)


@_override("transpose")
def _transpose(x: Any, *axes: Any) -> Any:
    ndim = x.ndim
    if not axes:
        if ndim < 2:
            return x
        return x.transpose(0, 1) if ndim == 2 else x.permute(*reversed(range(ndim)))
    if len(axes) == 2:  # PyTorch: swap two axes
        return x.transpose(_axis_of(x, axes[0], "transpose"), _axis_of(x, axes[1], "transpose"))
    # NumPy: a full permutation, as transpose(x, [2, 0, 1]) or transpose(x, 2, 0, 1)
    dims = _shape_from(axes, "transpose") if len(axes) == 1 else None
    if dims is None:
        dims = tuple(as_int(a, "an axis") for a in axes)
    if sorted(d % ndim if ndim else d for d in dims) != list(range(ndim)):
        raise ShapeError(
            f"transpose: axes {dims} are not a permutation of the {ndim} axes of {_shape(x)}"
        )
    return x.permute(*dims)


def _reshape_problem(x: Any, *shape: Any) -> str | None:
    try:
        target = tuple(as_int(v, "a dimension") for v in _flat_shape_args(shape))
    except FormulaError:
        return None
    return (
        f"reshape: cannot reshape a tensor of shape {_shape(x)} "
        f"({x.numel()} elements) into {target}"
    )


def _flat_shape_args(shape: tuple) -> list:
    if len(shape) == 1 and isinstance(shape[0], Tensor) and np.ndim(shape[0]._data) == 1:
        return [float(v) for v in np.asarray(shape[0]._data)]
    return list(shape)


@_override("reshape", diagnose=_reshape_problem)
def _reshape(x: Any, *shape: Any) -> Any:
    dims = tuple(as_int(v, "a dimension of reshape") for v in _flat_shape_args(shape))
    return x.reshape(dims)


# ------------------------------------------------------------- joining, sizes


@_override("cat", method=False)
def _cat(*tensors: Any, axis: Any = 0) -> Any:
    """cat(a, b, axis=0), or cat([a, b]) (a list of one shape, as the language builds it)."""
    items = _rows(tensors[0]) if len(tensors) == 1 else list(tensors)
    return engine.cat(items, dim=as_int(axis, "cat(): axis"))


_override("mm", diagnose=matmul_problem)(lambda ctx, x, y: _matmul(ctx, x, y))
_override("view", diagnose=lambda x, *shape: _reshape_problem(x, *shape))(
    lambda x, *shape: _reshape(x, *shape)
)
_override("numel")(lambda ctx, x: ctx.scalar(x.numel()))


# ---------------------------------------------------------------- constructors


@_function("tensor", "a new constant tensor with the values of data", method=False)
def _new_tensor(ctx: Context, data: Any, requires_grad: Any = False) -> Any:
    array = np.array(np.asarray(data._data), dtype=ctx.np_dtype)
    return engine.tensor(array, dtype=ctx.dtype, requires_grad=_flag(requires_grad))


@_function("arange", "start, start+step, ... below end (arange(n) is 0 … n-1)", method=False)
def _arange(
    ctx: Context, start: Any, end: Any = None, step: Any = 1, requires_grad: Any = False
) -> Any:
    first = _as_number(start, "start")
    if end is None:
        first, last = 0.0, first
    else:
        last = _as_number(end, "end")
    increment = _as_number(step, "step")
    if not all(math.isfinite(v) for v in (first, last, increment)):
        raise FormulaValueError("arange() needs finite start, end and step")
    if increment == 0:
        raise FormulaValueError("arange() step cannot be zero")
    count = max(0, math.ceil((last - first) / increment))
    ctx.check_elements(count, f"arange({first:g}, {last:g}, {increment:g})")
    return engine.arange(
        first, last, increment, dtype=ctx.dtype, requires_grad=_flag(requires_grad)
    )


@_function("linspace", "steps evenly spaced numbers from start to end inclusive", method=False)
def _linspace(ctx: Context, start: Any, end: Any, steps: Any, requires_grad: Any = False) -> Any:
    count = as_int(steps, "steps")
    if count < 0:
        raise FormulaValueError("linspace() steps cannot be negative")
    ctx.check_elements(count, "linspace()")
    return engine.linspace(
        _as_number(start, "start"),
        _as_number(end, "end"),
        count,
        dtype=ctx.dtype,
        requires_grad=_flag(requires_grad),
    )


def _sized(ctx: Context, name: str, shape: tuple, size: Any) -> tuple[int, ...]:
    if size is not None:
        if shape:
            raise FormulaTypeError(f"{name}(): give the shape as arguments or as size=, not both")
        shape = (size,)
    dims = _shape_from(shape, f"{name}()")
    ctx.check_shape(dims, f"{name}{dims}")
    return dims


def _filled(name: str, make: str) -> Callable:
    def construct(ctx: Context, *shape: Any, size: Any = None, requires_grad: Any = False) -> Any:
        dims = _sized(ctx, name, shape, size)
        maker = engine.zeros if make == "zeros" else engine.ones
        return maker(dims, dtype=ctx.dtype, requires_grad=_flag(requires_grad))

    return construct


_function("zeros", "a tensor of zeros: zeros(2, 3) or zeros(x.shape)", method=False)(
    _filled("zeros", "zeros")
)
_function("ones", "a tensor of ones: ones(3, 1) or ones(x.shape)", method=False)(
    _filled("ones", "ones")
)


@_function("full", "a tensor of the given shape filled with value", method=False)
def _full(ctx: Context, shape: Any, value: Any, requires_grad: Any = False) -> Any:
    dims = _sized(ctx, "full", (shape,), None)
    return engine.full(
        dims, _as_number(value, "value"), dtype=ctx.dtype, requires_grad=_flag(requires_grad)
    )


@_function("eye", "the n×n identity matrix (n×m if m is given)", method=False)
def _eye(ctx: Context, n: Any, m: Any = None, requires_grad: Any = False) -> Any:
    rows = as_int(n, "n")
    cols = rows if m is None else as_int(m, "m")
    if rows < 0 or cols < 0:
        raise FormulaValueError("eye() sizes cannot be negative")
    ctx.check_shape((rows, cols), f"eye({rows}, {cols})")
    return engine.eye(rows, cols, dtype=ctx.dtype, requires_grad=_flag(requires_grad))


def _random(name: str) -> Callable:
    def construct(ctx: Context, *shape: Any, size: Any = None, requires_grad: Any = False) -> Any:
        dims = _sized(ctx, name, shape, size)
        maker = engine.rand if name == "rand" else engine.randn
        return maker(
            dims, generator=ctx.generator, dtype=ctx.dtype, requires_grad=_flag(requires_grad)
        )

    return construct


_function("rand", "uniform random numbers in [0, 1) (seeded by --seed)", method=False)(
    _random("rand")
)
_function("randn", "standard normal random numbers (seeded by --seed)", method=False)(
    _random("randn")
)


# ------------------------------------------------------------------- autograd


_function("detach", "the same values, cut from the graph (no gradient flows through)")(
    lambda x: x.detach()
)
_function("const", "the same values as a constant: no gradient flows through")(lambda x: x.detach())


@_function("grad", "dy/dx as a differentiable tensor, so grad(grad(y, x), x) works", method=False)
def _grad(ctx: Context, y: Any, x: Any, grad_output: Any = None) -> Any:
    if not x.requires_grad:
        raise FormulaValueError(
            "grad(y, x): x is a constant, so there is nothing to differentiate against",
            hint="x must be a bound variable or a value computed from one, "
            "not wrapped in const()/detach()",
        )
    if not y.requires_grad:
        return ctx.constant(np.zeros(tuple(x.shape)))
    seed = grad_output
    if (seed is None and y.numel() != 1) or (seed is None and y.ndim != 0):
        seed = ctx.constant(np.ones(tuple(y.shape)))
    (result,) = engine.autograd.grad(
        [y],
        [x],
        grad_outputs=None if seed is None else [seed],
        create_graph=True,
        allow_unused=True,
    )
    if result is None:
        return ctx.constant(np.zeros(tuple(x.shape)))
    return result


@_function("backward", "accumulate dy/d(leaf) into every leaf's .grad, as PyTorch does")
def _backward(y: Any, gradient: Any = None, retain_graph: Any = False) -> None:
    if isinstance(gradient, Tensor) and _shape(gradient) != _shape(y):
        raise ShapeError(
            f"backward: the gradient has shape {_shape(gradient)} but the output has "
            f"shape {_shape(y)}",
            hint="the gradient is dL/d(output): one entry per element of the output",
        )
    y.backward(gradient=gradient, retain_graph=_flag(retain_graph))


@_function("zero_grad", "clear the .grad of every variable", method=False)
def _zero_grad(ctx: Context) -> None:
    for scope in ctx.scopes:
        for value in scope.values():
            if isinstance(value, Tensor) and value.grad is not None:
                value.grad = None


@_method_only("zero_", "set every element to 0 in place (for a.grad.zero_())")
def _zero_(ctx: Context, x: Any) -> Any:
    if ctx.is_literal(x):  # never change a shared literal: give the zeros instead
        return ctx.constant(np.zeros(tuple(x.shape)))
    return x.zero_()


@_method_only("requires_grad_", "make this tensor a differentiable leaf (or not)")
def _requires_grad_(ctx: Context, x: Any, requires_grad: Any = True) -> Any:
    flag = _flag(requires_grad)
    if ctx.is_literal(x):  # never change a shared literal: make a new leaf
        return _tensor.leaf(x._data, requires_grad=flag)
    return x.requires_grad_(flag)


@_method_only("retain_grad", "keep this intermediate's .grad after backward")
def _retain_grad(x: Any) -> None:
    x.retain_grad()


@_method_only("item", "the value of a one-element tensor, as a constant")
def _item(ctx: Context, x: Any) -> Any:
    return ctx.scalar(_as_number(x, "item()"))


# --------------------------------------------------------------------- misc


@_function("range", "whole numbers start, start+step, ... below stop, for loops", method=False)
def _range(start: Any, stop: Any = None, step: Any = 1) -> RangeValue:
    first = as_int(start, "range() start")
    if stop is None:
        first, last = 0, first
    else:
        last = as_int(stop, "range() stop")
    increment = as_int(step, "range() step")
    if increment == 0:
        raise FormulaValueError("range() step cannot be zero")
    return RangeValue(first, last, increment)


@_function("len", "the length of the first axis", method=False)
def _len(ctx: Context, x: Any) -> Any:
    if isinstance(x, RangeValue):
        return ctx.scalar(len(x))
    if not isinstance(x, Tensor) or x.ndim == 0:
        what = "a 0-d tensor" if isinstance(x, Tensor) else kind_of(x)
        raise FormulaTypeError(f"len() needs a vector or a range, not {what}")
    return ctx.scalar(x.shape[0])


@_function("shape", "the shape (same as x.shape)", method=False)
def _shape_of(ctx: Context, x: Any) -> Any:
    return Size(tuple(x.shape))


_derive()
METHODS.update({name: spec for name, spec in FUNCTIONS.items() if spec.method} | METHODS)


# ------------------------------------------------------------------ attributes


@_attribute("T", "the tensor with its axes reversed")
def _t(ctx: Context, x: Any) -> Any:
    return _transpose(x)


_attribute("shape", "the shape, torch.Size([2, 3]); a vector of sizes in arithmetic")(
    lambda ctx, x: Size(tuple(x.shape))
)
_attribute("grad", "the gradient accumulated by backward(), or None")(lambda ctx, x: x.grad)
_attribute("requires_grad", "whether gradients flow to this tensor")(
    lambda ctx, x: ctx.literal(np.array(bool(x.requires_grad)))
)
_attribute("is_leaf", "whether this tensor is a leaf of the graph")(
    lambda ctx, x: ctx.literal(np.array(bool(x.is_leaf)))
)
_attribute("grad_fn", "the graph node that made this tensor, or None")(lambda ctx, x: x.grad_fn)
_attribute("data", "the values without the graph (like detach())")(lambda ctx, x: x.detach())
_attribute("ndim", "the number of axes")(lambda ctx, x: ctx.scalar(x.ndim))
