"""The registry: every operation and every public function declared once.

The vocabulary, once for all entries
------------------------------------
``defop(name, grad_fn, forward, vjps, sample=...)`` declares an op.

* ``forward(*operand_data, *consts)`` computes the output with NumPy from
  the operands' data (ndarrays, NumPy scalars or Python numbers) and the
  op's non-tensor arguments (``consts``: a dim, an exponent, an index).
* ``scalar(*operands, *consts)``: the same forward on Python floats (from
  :mod:`math`), for the float backend (``_tensor.on_floats``: a float64 0-d
  tensor made from a number holds a Python float, and all-scalar work then
  never imports NumPy); elementwise and arithmetic ops only.
  It agrees with ``forward`` on float64 bit for bit for ``+ - * /`` and
  ``sqrt`` and within 1 ulp otherwise (tests/test_engine_scalar.py walks
  the registry). Where NumPy answers inf or nan it may raise instead
  (``ArithmeticError``/``ValueError``: ``math.log(0)``, ``1 / 0``); the
  caller then runs ``forward``. It never returns a value ``forward`` would not.
* ``vjps`` has one entry per operand, in order. Entry ``i`` is called as
  ``vjp(g, ans, *operands, *consts)`` and returns the gradient for operand
  ``i`` with that operand's shape: ``g`` is the gradient of the output,
  ``ans`` the output (only when ``uses_ans=True``, else None), operands are
  what the op was called with (Python numbers stay numbers). An entry is
  called only when its operand requires grad.
* One VJP serves two backward passes. Without ``create_graph`` it runs on
  raw NumPy values (``g``, ``ans`` and operands are ndarrays or NumPy
  scalars: no Tensor, no graph, no wrapper per step); with
  ``create_graph=True`` on Tensors, so the backward pass is itself recorded
  and higher derivatives come for free. VJPs are therefore written only
  with what works on both: Python operators, :func:`call1`/:func:`call2`
  for registry ops, :func:`_d`/:func:`_shape` to read values and shapes,
  ``_const(array, g)`` for a constant array beside ``g``. Binary ops wrap
  each gradient in :func:`unbroadcast`, which sums it back to the
  operand's shape. They run a third way too: on the float backend's Python
  floats (see ``_tensor.on_floats``), where ``call1``/``call2`` run the ops'
  ``scalar`` forwards, so a VJP reads no NumPy attribute on a float. A fourth
  runs them on expression nodes (``gradcalc/symbolic.py``, ``gradcalc diff``:
  see :data:`_SYMBOLIC`), so derivatives as formulas need no rules of their own.
* ``reads[i]``: which operands' *values* VJP ``i`` reads (default: all,
  or none with ``saves=False``). A node keeps only those values (others
  keep a zero-memory stand-in with shape and dtype), and backward frees
  them; a node that kept no tensor values can be backpropagated twice
  without ``retain_graph``, as in PyTorch (``y = 2 * x``).
* ``negates=True``: the VJP is exactly ``-g`` (``neg``, ``rsub``). A raw
  backward then skips it for an array gradient and subtracts ``g`` where
  the operand's gradients are summed (same bits, one memory pass fewer).
* ``quiet=(lo, hi)``: where the forward raises no floating-point warning in
  float32 or float64 (no overflow, division by zero or invalid operation):
  for a one-operand op, inputs ``lo <= x < hi``; for a binary one, operands
  with ``|x|, |y| <= hi`` and ``|y| >= lo``. The C fast path for 0-d
  tensors (``_native.c``) runs an op only there; elsewhere Python runs it,
  where the engine silences NumPy's warnings (``_tensor.py``).
* ``grad_fn`` is PyTorch's node name (``MulBackward0``). ``nondiff(...)``
  declares an op without derivative (comparisons, argmax): its results never
  require grad. A derivative that is zero everywhere (``sign``, ``floor``)
  is declared as such, with PyTorch's node name.
* ``sample`` is a :class:`Sample`: the shapes, argument values and input
  domain the registry-wide gradient check (tests/test_engine_gradcheck.py)
  uses. It is required: an op cannot be registered without its check.

Public functions
----------------
Users reach a function through up to four surfaces, all derived from its
one :class:`ApiFunction` entry in :data:`API`: ``gradcalc.<name>`` (or
``gradcalc.nn.functional.<name>``), the method ``Tensor.<name>``, the
formula built-in ``name(x, ...)`` with its method sugar ``x.name(...)``
(``gradcalc/builtins.py``), and so ``gradcalc functions`` and the REPL's
completion. The entry holds the one-line ``doc`` every surface shows; the
signature is the implementation's, read when first shown.

* ``defop(..., doc="...")`` makes a one-operand elementwise op public under
  its own name: its PyTorch-named function is generated (ints become
  floats first, as in PyTorch, unless ``keeps_ints=True``; ``abs``, ``relu``).
  Adding an elementwise function (``erf``) is that one entry.
* ``@deffunction("doc", ...)`` declares a function written in Python over
  registry ops (dispatchers such as ``sum``, composites such as ``var``,
  ``std``, ``mse_loss``): ``gradcalc/_functions.py``, ``gradcalc/nn/functional.py``.
* Both take ``aliases=`` (``absolute`` for ``abs``), ``method=`` (False, or,
  for ``deffunction``, the method when it differs from the function: ``Tensor.where``),
  ``function=False`` for a method only (``expand``), ``builtin=False`` for
  what the formula language cannot express (dtypes, Python bools); and
  ``deffunction`` ``differentiable=False`` for results that never require grad.
* The formula language converts its arguments by the implementation's
  parameter annotations (``int``, ``float``, ``bool``, and ``Dims``,
  ``Indices``, ``Tensors`` of ``_functions``); ``str`` and ``dtype``
  parameters are not shown to it.

Conventions at kinks follow PyTorch: ``relu'(0) = 0``, ``abs'(0) = 0``,
``clamp`` passes the gradient at its bounds, ties of ``maximum``/``minimum``
and of a full ``max``/``min`` share it evenly.
"""

from __future__ import annotations

import builtins
import functools
import math
import operator
from collections import namedtuple
from collections.abc import Callable, Sequence

from gradcalc import _numpy, _recycle, _tensor
from gradcalc._tensor import (
    Tensor,
    apply1,
    apply2,
    applyn,
    node_class,
)

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

np = _numpy.bind(globals())
late = _numpy.late

_wrap = _tensor.wrap
_FLOATS = _tensor._FLOATS
_py_sum = builtins.sum
_py_max = builtins.max
_py_min = builtins.min
_py_abs = builtins.abs
_py_any = builtins.any

_BOUND = 2.0**60
"""Operands this large cannot overflow float32 when added, multiplied or divided
by one at least 1/_BOUND (float32 overflows above 2**128)."""
_FINITE = (-1e30, 1e30)
"""Finite in float32 and float64 alike, for ops that warn only on inf or nan."""


# ---------------------------------------------------------------- the registry


class Sample(
    namedtuple(
        "Sample",
        "shapes consts domain second_order paired",
        defaults=(((),), "real", True, False),
    )
):
    """How the generic gradient check exercises an op (``collections.namedtuple``:
    ``typing.NamedTuple`` compiles each string annotation at import).

    ``shapes``: cases, each a tuple with one shape per operand (``None`` for
    a Python-number operand). ``consts``: the non-tensor argument tuples to
    try with every case (``paired=True``: case ``i`` with consts ``i`` only).
    ``domain``: one name per operand (or one for all) from :data:`DOMAINS`.
    ``second_order``: whether the VJP is itself differentiable (checked
    through ``create_graph=True``).
    """

    __slots__ = ()

    shapes: tuple
    consts: tuple | Callable[[], tuple]
    domain: str | tuple[str, ...]
    second_order: bool
    paired: bool

    def cases(self) -> list[tuple[tuple, tuple]]:
        """(operand shapes, consts) pairs to check. ``consts`` may be a function
        returning them, for consts that are NumPy arrays (made when the check runs)."""
        every = self.consts() if callable(self.consts) else self.consts
        if self.paired:
            return list(zip(self.shapes, every, strict=True))
        return [(shapes, consts) for shapes in self.shapes for consts in every]


_OPERATOR_UFUNCS = {
    operator.add: "add",
    operator.sub: "subtract",
    operator.mul: "multiply",
    operator.truediv: "true_divide",
}


def _elementwise_ufunc(forward: Callable, arity: str) -> np.ufunc | None:
    """The NumPy ufunc ``forward`` is when its float results keep the operands'
    shape and dtype (so a pooled buffer can take them, see ``_recycle``), else None."""
    name = _OPERATOR_UFUNCS.get(forward)
    ufunc = forward if name is None else getattr(np, name)
    nin = {"1": 1, "2": 2}.get(arity)
    if not isinstance(ufunc, np.ufunc) or ufunc.nin != nin or ufunc.signature is not None:
        return None
    keeps_dtype = all(code * nin + "->" + code in ufunc.types for code in "fd")
    return ufunc if keeps_dtype else None


class Op:
    """One registry entry."""

    __slots__ = (
        "arity",
        "forward",
        "grad_fn",
        "keep2",
        "name",
        "negates",
        "node",
        "pooled",
        "quiet",
        "reads",
        "sample",
        "saves",
        "scalar",
        "ufunc",
        "uses_ans",
        "vjps",
    )

    def __init__(
        self,
        name: str,
        grad_fn: str | None,
        forward: Callable,
        vjps: tuple[Callable, ...] | None,
        *,
        sample: Sample,
        arity: str,
        saves: bool,
        uses_ans: bool,
        reads: tuple[tuple[int, ...], ...] | None = None,
        pooled: Callable | None = None,
        negates: bool = False,
        quiet: tuple[float, float] | None = None,
        scalar: Callable | None = None,
    ) -> None:
        if not isinstance(sample, Sample):
            raise TypeError(f"op {name!r} needs a Sample for the gradient check")
        self.name = name
        self.grad_fn = grad_fn
        self.forward = forward
        self.scalar = scalar
        """The forward on Python floats (see the module docstring), or None."""
        self.vjps = vjps
        self.sample = sample
        self.arity = arity
        self.saves = saves
        self.uses_ans = uses_ans
        self.negates = negates
        self.quiet = quiet
        if reads is None:
            reads = ((0, 1), (0, 1)) if saves else ((), ())
        self.reads = reads
        # keep2[rx + 2*ry]: which operands' values a binary node keeps when
        # operand 0 / 1 requires grad (the others keep only shape and dtype).
        self.keep2 = _keep2(reads)
        self.node = None if vjps is None else node_class(grad_fn or name, self)
        self.ufunc = None  # and pooled: set when NumPy loads (no array exists before)
        self.pooled = pooled
        _numpy.when_loaded(self._with_numpy)

    def _with_numpy(self, numpy: Any) -> None:
        """A forward named before NumPy loaded (``late.exp``) becomes NumPy's own; the
        ufunc it is, and its pooled form (forward into a buffer of ``_recycle`` for
        a large float array; None: not poolable)."""
        self.forward = _numpy.resolve(self.forward)
        self.ufunc = _elementwise_ufunc(self.forward, self.arity)
        if self.pooled is None and self.ufunc is not None and self.arity == "1":
            self.pooled = functools.partial(_recycle.unary, self.ufunc)

    def __repr__(self) -> str:
        return f"<op {self.name} ({self.grad_fn or 'not differentiable'})>"

    def __call__(self, *operands: Any) -> Tensor:
        """Apply the op to tensor operands then consts (as the gradient check does)."""
        return invoke(
            self, operands[: self.n_operands(operands)], operands[self.n_operands(operands) :]
        )

    def n_operands(self, args: tuple) -> int:
        if self.arity == "n":
            return 1
        return int(self.arity)


@functools.cache
def _keep2(reads: tuple[tuple[int, ...], ...]) -> tuple[tuple[bool, ...], ...]:
    """`Op.keep2` for ``reads`` (a handful of distinct ones: shared, computed once each)."""
    return tuple(
        tuple(any(j in reads[i] for i in (0, 1) if mask >> i & 1) for j in (0, 1))
        for mask in range(4)
    )


REGISTRY: dict[str, Op] = {}
"""Every op, by name: what backward, the gradient check and the backends walk."""


class ApiFunction:
    """One public function and the surfaces it reaches (see "Public functions" above)."""

    __slots__ = (
        "aliases",
        "builtin",
        "differentiable",
        "doc",
        "elementwise",
        "function",
        "impl",
        "keeps_ints",
        "method",
        "name",
        "namespace",
        "op",
    )

    def __init__(
        self,
        name: str,
        doc: str,
        impl: Callable | None,
        *,
        op: Op | None = None,
        aliases: tuple[str, ...] = (),
        method: bool | Callable = True,
        function: bool = True,
        builtin: bool = True,
        differentiable: bool = True,
        elementwise: bool = False,
        keeps_ints: bool = False,
        namespace: str = "gradcalc",
    ) -> None:
        if "\n" in doc or not doc:
            raise ValueError(f"{name}: the doc is one line")
        self.name = name
        self.doc = doc
        self.impl = impl
        """The PyTorch-named function; for an op's entry, generated by ``_functions``."""
        self.op = op
        self.aliases = aliases
        self.method = method
        self.function = function
        self.builtin = builtin
        self.differentiable = differentiable
        self.elementwise = elementwise
        """The result has the operands' broadcast shape (the language checks its size first)."""
        self.keeps_ints = keeps_ints
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"<api {self.namespace}.{self.name}>"


API: dict[str, ApiFunction] = {}
"""Every public function, by name; complete once ``gradcalc.nn.functional`` is imported
(it imports ``gradcalc._functions``, which declares the others)."""
_API_NAMES: set[str] = set()
"""Every name and alias in API."""


def _declare(entry: ApiFunction) -> None:
    names = (entry.name, *entry.aliases)
    for name in names:
        if name in _API_NAMES:
            raise ValueError(f"function {name!r} is declared twice")
    _API_NAMES.update(names)
    API[entry.name] = entry


def defop(
    name: str,
    grad_fn: str,
    forward: Callable,
    vjps: tuple[Callable, ...],
    *,
    sample: Sample,
    arity: str = "1",
    saves: bool = True,
    uses_ans: bool = False,
    reads: tuple[tuple[int, ...], ...] | None = None,
    pooled: Callable | None = None,
    negates: bool = False,
    quiet: tuple[float, float] | None = None,
    scalar: Callable | None = None,
    doc: str | None = None,
    aliases: tuple[str, ...] = (),
    keeps_ints: bool = False,
    method: bool = True,
    function: bool = True,
    builtin: bool = True,
) -> Op:
    """Declare a differentiable op (see the module docstring for the contract);
    with ``doc``, also the public elementwise function of the same name."""
    if name in REGISTRY:
        raise ValueError(f"op {name!r} is declared twice")
    op = Op(
        name, grad_fn, forward, vjps, sample=sample, arity=arity, saves=saves,
        uses_ans=uses_ans, reads=reads, pooled=pooled, negates=negates, quiet=quiet,
        scalar=scalar,
    )  # fmt: skip
    if doc is not None:
        if arity != "1" or _py_any(sample.consts):
            raise ValueError(f"op {name!r}: only a one-operand op without consts is made public")
        entry = ApiFunction(
            name, doc, None, op=op, aliases=aliases, method=method, function=function,
            builtin=builtin, elementwise=True, keeps_ints=keeps_ints,
        )  # fmt: skip
        _declare(entry)
    REGISTRY[name] = op
    return op


def deffunction(
    doc: str,
    *,
    name: str | None = None,
    aliases: tuple[str, ...] = (),
    method: bool | Callable = True,
    function: bool = True,
    builtin: bool = True,
    differentiable: bool = True,
    elementwise: bool = False,
    namespace: str = "gradcalc",
) -> Callable[[Callable], Callable]:
    """Declare the public function the decorated one implements (see the module docstring)."""

    def declare(impl: Callable) -> Callable:
        if impl.__doc__ is None:
            impl.__doc__ = doc
        entry = ApiFunction(
            name or impl.__name__, doc, impl, aliases=aliases, method=method,
            function=function, builtin=builtin, differentiable=differentiable,
            elementwise=elementwise, namespace=namespace,
        )  # fmt: skip
        _declare(entry)
        return impl

    return declare


def nondiff(
    name: str,
    forward: Callable,
    *,
    sample: Sample,
    arity: str = "1",
    scalar: Callable | None = None,
) -> Op:
    """Declare an op without a derivative: its results never require grad."""
    if name in REGISTRY:
        raise ValueError(f"op {name!r} is declared twice")
    op = Op(
        name, None, forward, None, sample=sample, arity=arity, saves=False, uses_ans=False,
        scalar=scalar,
    )  # fmt: skip
    REGISTRY[name] = op
    return op


def invoke(op: Op, operands: Sequence[Any], consts: Sequence[Any] = ()) -> Tensor:
    """Run a registry op on operands (Tensors or Python numbers) and consts."""
    if op.arity == "1":
        return apply1(op, operands[0], *consts)
    if op.arity == "2":
        return apply2(op, operands[0], operands[1], *consts)
    return applyn(op, operands[0], *consts)


# Input generators for the gradient check: name -> (rng, shape) -> float64 array.
DOMAINS: dict[str, Callable[[np.random.Generator, tuple], np.ndarray]] = {
    "real": lambda rng, shape: rng.uniform(-2.0, 2.0, shape) + 0.0,
    "positive": lambda rng, shape: rng.uniform(0.5, 2.0, shape),
    "unit": lambda rng, shape: rng.uniform(-0.8, 0.8, shape),
    # Away from the kinks at 0 and from ties, so finite differences are smooth there.
    "nonzero": lambda rng, shape: rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.0, shape),
    "distinct": lambda rng, shape: (
        rng.permutation(int(np.prod(shape, dtype=int))).reshape(shape) * 0.5
        + rng.uniform(-0.1, 0.1, shape)
    ),
}

UNARY = (((),), ((3,),), ((2, 3),))
BINARY = (
    ((), ()),
    ((3,), (3,)),
    ((2, 3), (2, 3)),
    ((2, 3), (3,)),
    ((3,), (2, 3)),
    ((2, 1), (1, 3)),
    ((2, 3), ()),
    ((), (2, 3)),
    ((2, 3), None),
    (None, (2, 3)),
)
TENSOR_PAIRS = tuple(case for case in BINARY if None not in case)


# ---------------------------------------------------------------- helpers for VJPs


_SCALARS = frozenset((float,))
"""A 0-d gradient: the float backend's Python float or a NumPy float scalar (added
when NumPy loads)."""


_ndarray: Any = _tensor._NotLoaded
"""``np.ndarray`` once NumPy is loaded (a type check must not load it)."""


def _with_numpy(numpy: Any) -> None:
    global _SCALARS, _ndarray
    _SCALARS = frozenset((float, numpy.float64, numpy.float32, numpy.float16))
    _ndarray = numpy.ndarray


_numpy.when_loaded(_with_numpy)
_on_floats = _tensor.on_floats


class _NoSymbols:
    """Stands for the symbolic backend's type until ``gradcalc.symbolic`` is imported."""


_SYMBOLIC: type = _NoSymbols
"""The symbolic backend's expression type (``gradcalc/symbolic.py``): a third kind
of operand VJPs run on, beside raw data and Tensors, so derivatives as formulas
come from these same VJPs (no second table of rules). :func:`call1`/:func:`call2`
hand an op on such an operand to ``_SYMBOLIC.apply(op, operands, consts)`` (which
builds the expression node), :func:`_d` reads its value at the point (``.value``);
``_shape`` and :func:`unbroadcast` need nothing (it has ``.shape``), nor do Python
operators. The checks come after the Tensor and ndarray ones, so those paths pay
one identity test at most."""


def use_symbolic(kind: type) -> None:
    """Register the symbolic backend's expression type (see :data:`_SYMBOLIC`)."""
    global _SYMBOLIC
    _SYMBOLIC = kind


def _d(v: Any) -> Any:
    """The data of an operand: a Tensor's NumPy value, or the raw value itself
    (an expression's value at the point, for the symbolic backend)."""
    if type(v) is Tensor:
        return v._data
    return v.value if type(v) is _SYMBOLIC else v


def _shape(v: Any) -> tuple:
    if type(v) is Tensor:
        v = v._raw
    if type(v) is _ndarray:
        return v.shape
    return () if type(v) in _SCALARS or type(v) is bool else np.shape(v)


def call1(op: Op, x: Any, *consts: Any) -> Any:
    """Run ``op`` inside a VJP: recorded on a Tensor, plain NumPy on raw data, the
    float backend on a Python float."""
    if type(x) is Tensor:
        return apply1(op, x, *consts)
    if type(x) is float:
        out = _on_floats(op, (x, *consts))
        if out is not None:
            return out
        x = np.float64(x)
    if type(x) is _ndarray and op.ufunc is not None and not consts and _recycle.poolable(x):
        return _recycle.unary(op.ufunc, x)
    if type(x) is _SYMBOLIC:
        return _SYMBOLIC.apply(op, (x,), consts)
    return op.forward(x, *consts)


def call2(op: Op, x: Any, y: Any, *consts: Any) -> Any:
    """Two-operand :func:`call1`."""
    if type(x) is Tensor or type(y) is Tensor:
        return apply2(op, x, y, *consts)
    if type(x) is float or type(y) is float:
        if type(x) in _FLOATS and type(y) in _FLOATS:
            out = _on_floats(op, (x, y, *consts))
            if out is not None:
                return out
        x = np.float64(x) if type(x) is float else x
        y = np.float64(y) if type(y) is float else y
    if type(x) is _SYMBOLIC or type(y) is _SYMBOLIC:
        return _SYMBOLIC.apply(op, (x, y), consts)
    if op.pooled is not None and type(x) is _ndarray and x.dtype.kind == "f":
        data = op.pooled(x, y, *consts)
        if data is not None:
            return data
    return op.forward(x, y, *consts)


def unbroadcast(g: Any, x: Any) -> Any:
    """Sum ``g`` down to ``x``'s shape: undo NumPy broadcasting (incl. size-1 dims)."""
    if type(g) in _SCALARS:
        return g  # a 0-d output: every operand was 0-d too
    shape = () if type(x) in _tensor.PYTHON_VALUES else x.shape  # a float operand is 0-d
    if g.shape == shape:
        return g
    shape = tuple(shape)
    gshape = _shape(g)
    lead = len(gshape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, size in enumerate(shape) if size == 1 and gshape[lead + i] != 1
    )
    if axes:
        g = call1(SUM_DIM, g, axes, False)
    if _shape(g) != shape:
        g = call1(VIEW, g, shape)
    return g


def _broadcast_to(x: Any, shape: tuple) -> Any:
    """``np.broadcast_to(x, shape)``: a read-only view. A NumPy scalar or contiguous
    array (a reduction's gradient) is spread directly, without NumPy's ~2 µs of
    general checks; anything else (and every error) is NumPy's."""
    if type(x) is not _ndarray:
        if type(x) not in _SCALARS:
            return np.broadcast_to(x, shape)
        x = np.asarray(x)
    lead = len(shape) - x.ndim if type(shape) is tuple else -1
    if lead < 0 or not x.size or not x.flags.c_contiguous:
        return np.broadcast_to(x, shape)
    strides = [0] * lead
    for size, have, stride in zip(shape[lead:], x.shape, x.strides, strict=True):
        if have != size:
            if have != 1 or type(size) is not int or size < 0:
                return np.broadcast_to(x, shape)
            stride = 0
        strides.append(stride)
    for size in shape[:lead]:
        if type(size) is not int or size < 0:
            return np.broadcast_to(x, shape)
    out = np.ndarray(shape, x.dtype, x, 0, tuple(strides))
    out.flags.writeable = False
    return out


def _expand_back(g: Tensor, shape: tuple, dims: tuple, keepdim: bool) -> Tensor:
    """A reduction's gradient ``g`` broadcast back to the input's ``shape``."""
    if not keepdim and dims:
        kept = list(shape)
        for d in dims:
            kept[d] = 1
        g = call1(VIEW, g, tuple(kept))
    if _shape(g) != shape:
        g = call1(EXPAND, g, shape)
    return g


def _dims(dim: Any, ndim: int) -> tuple[int, ...]:
    """Normalised reduction dims (PyTorch accepts dim 0/-1 on a 0-d tensor)."""
    if dim is None:
        return tuple(range(ndim))
    if type(dim) is int and -ndim <= dim < ndim:
        return (dim % ndim,)  # the common case (PyTorch's 0-d exception needs the rest)
    if isinstance(dim, Tensor):
        dim = int(dim.item())
    items = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    if ndim == 0:
        for d in items:
            if int(d) not in (0, -1):
                raise IndexError(
                    f"Dimension out of range (expected to be in range of [-1, 0], but got {d})"
                )
        return ()
    out = []
    for d in items:
        d = int(d)
        if not -ndim <= d < ndim:
            raise IndexError(
                f"Dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], "
                f"but got {d})"
            )
        out.append(d % ndim)
    return tuple(sorted(set(out)))


def _reduced_count(shape: tuple, dims: tuple) -> int:
    n = 1
    for d in dims:
        n *= shape[d]
    return n


# Buffer donation: a raw backward passes a VJP that declares a keyword-only
# ``spare`` parameter the arguments it may overwrite (``_tensor._spare_buffers``:
# held by nothing else, read by no VJP still to run); ``_mul``/``_neg`` then
# write their result into one instead of a new array. Any other call (a
# recorded backward, the 0-d path, floats) passes none: plain ``a * b``.


def _spare_for(out: Any, a: Any, b: Any, spare: tuple) -> bool:
    """Whether ``out`` is one of the ``spare`` buffers and fits ``a op b``."""
    for buffer in spare:
        if out is buffer:
            if type(a) is _ndarray:
                if type(b) is _ndarray and a.shape == b.shape and a.dtype == b.dtype:
                    return True  # the common case, without NumPy's slower general rules
                if type(b) in _PY_NUMBERS and a.dtype.kind == "f":
                    return out is a  # a Python number keeps a float array's shape and dtype
            return (
                np.broadcast_shapes(np.shape(a), np.shape(b)) == out.shape
                and np.result_type(a, b) == out.dtype
            )
    return False


_PY_NUMBERS = frozenset((int, float, bool))


def _is_broadcast_one(a: Any, like: Any) -> bool:
    """Whether ``a`` is a reduction's gradient of 1 spread over ``like``'s shape and
    dtype: a read-only stride-0 view, the identity of ``*`` (``sum()``'s gradient)."""
    return (
        type(a) is _ndarray
        and a.base is not None
        and type(like) is _ndarray
        and not any(a.strides)
        and a.shape == like.shape
        and a.dtype == like.dtype
        and a.size > 0
        and a[(0,) * a.ndim] == 1
    )


def _mul(a: Any, b: Any, spare: tuple = ()) -> Any:
    """``a * b``, written into ``a`` or ``b`` when it is a ``spare`` buffer (no new
    array, no fresh pages to fault in).

    A gradient of ones spread by a reduction (see :func:`_is_broadcast_one`)
    returns the other factor itself: backward never writes into a buffer
    something else still holds, and ``.grad`` copies what it does not own.
    """
    if type(a) is _ndarray and a.base is not None and _is_broadcast_one(a, b):
        return b
    if spare:
        if _spare_for(a, a, b, spare):
            return np.multiply(a, b, out=a)
        if _spare_for(b, a, b, spare):
            return np.multiply(a, b, out=b)
    return a * b


def _neg(g: Any, spare: tuple = ()) -> Any:
    """``-g``, in place when ``g`` is a ``spare`` buffer (see :func:`_mul`)."""
    if spare and _spare_for(g, g, g, spare):
        return np.negative(g, out=g)
    return -g


def _one_plus_square(a: Any, sign: int) -> Any:
    """``1 + sign * a*a``; on a large raw array in one pooled buffer (no second temporary)."""
    if _recycle.poolable(a):
        square = _recycle.unary(np.square, a)
        return np.add(1, square, out=square) if sign > 0 else np.subtract(1, square, out=square)
    return 1 + a * a if sign > 0 else 1 - a * a


def _const(array: Any, like: Any) -> Any:
    """A constant beside ``like`` (a gradient): a Tensor when recording, else the array."""
    return _wrap(array) if type(like) is Tensor else array


def _is_number(x: Any) -> bool:
    return type(x) in (int, float, bool)


# ---------------------------------------------------------------- arithmetic

# Binary ops take Tensors or Python numbers on either side; unbroadcast keeps each
# gradient in its operand's shape.


def _add_vjp_x(g: Any, a: Any, x: Any, y: Any) -> Any:
    """``g`` passed on to operand ``x``, summed down to its shape."""
    return g if type(g) in _SCALARS else unbroadcast(g, x)


def _add_vjp_y(g: Any, a: Any, x: Any, y: Any) -> Any:
    return g if type(g) in _SCALARS else unbroadcast(g, y)


ADD = defop(
    "add", "AddBackward0", operator.add, (_add_vjp_x, _add_vjp_y),
    scalar=operator.add,
    arity="2", saves=False, quiet=(0.0, _BOUND), sample=Sample(BINARY),
)  # fmt: skip
SUB = defop(
    "sub", "SubBackward0", operator.sub,
    (lambda g, a, x, y: unbroadcast(g, x), lambda g, a, x, y: unbroadcast(-g, y)),
    arity="2", saves=False, quiet=(0.0, _BOUND), sample=Sample(BINARY),
    scalar=operator.sub,
)  # fmt: skip
RSUB = defop(
    "rsub", "RsubBackward1", lambda x, other: other - x,
    (lambda g, a, x, other: -g,),
    scalar=lambda x, other: other - x,
    saves=False, negates=True, sample=Sample(UNARY, consts=((2.5,),)),
)  # fmt: skip


def _mul_vjp_x(g: Any, a: Any, x: Any, y: Any, *, spare: tuple = ()) -> Any:
    if type(g) in _SCALARS:
        return g * y  # 0-d: nothing to unbroadcast, no buffer to spare
    return unbroadcast(_mul(g, y, spare), x)


def _mul_vjp_y(g: Any, a: Any, x: Any, y: Any, *, spare: tuple = ()) -> Any:
    if type(g) in _SCALARS:
        return g * x
    return unbroadcast(_mul(g, x, spare), y)


MUL = defop(
    "mul", "MulBackward0", operator.mul, (_mul_vjp_x, _mul_vjp_y),
    scalar=operator.mul,
    arity="2", reads=((1,), (0,)), quiet=(0.0, _BOUND), sample=Sample(BINARY),
)  # fmt: skip
DIV = defop(
    "div", "DivBackward0", operator.truediv,
    (
        lambda g, a, x, y: unbroadcast(g / y, x),
        lambda g, a, x, y: unbroadcast(-g * x / (y * y), y),
    ),
    arity="2", reads=((1,), (0, 1)), quiet=(1 / _BOUND, _BOUND),
    scalar=operator.truediv,
    sample=Sample(BINARY, domain=("real", "nonzero")),
)  # fmt: skip
RECIPROCAL = defop(
    "reciprocal", "ReciprocalBackward0", lambda x: 1 / x,
    (lambda g, a, x: -g * a * a,),
    scalar=lambda x: 1.0 / x,
    uses_ans=True, saves=False, sample=Sample(UNARY, domain="nonzero"),
)  # fmt: skip
NEG = defop(
    "neg", "NegBackward0", late.negative, (lambda g, a, x, *, spare=(): _neg(g, spare),),
    scalar=operator.neg,
    saves=False, negates=True, sample=Sample(UNARY),
    doc="-x, elementwise", aliases=("negative",), keeps_ints=True,
)  # fmt: skip


def _pow_scalar_vjp(g: Tensor, a: Any, x: Tensor, p: Any, *, spare: tuple = ()) -> Tensor:
    if p == 0:
        return g * 0
    if p == 1:
        return g * 1
    if p == 2:
        return _mul(_mul(g, x, spare), 2, spare)  # no temporary for 2*x; doubling is exact
    return g * p * x ** (p - 1)


def _pow_pooled(x: np.ndarray, p: Any) -> np.ndarray | None:
    return _recycle.unary(np.square, x) if p == 2 else None  # what x**2 computes


POW = defop(
    "pow", "PowBackward0", lambda x, p: x**p, (_pow_scalar_vjp,), pooled=_pow_pooled,
    scalar=math.pow,
    sample=Sample(
        UNARY, consts=((2,), (3,), (-1.5,), (0.5,), (0,), (1,), (2.0,)), domain="positive"
    ),
)  # fmt: skip


def _pow_exponent_vjp(g: Tensor, a: Tensor, x: Any, y: Any) -> Tensor:
    base = _d(x)
    factor = a * call1(LOG, x) if not _is_number(x) else a * math.log(x) if x > 0 else a * math.nan
    if type(base) in _FLOATS and type(_d(y)) in _FLOATS:  # the float backend
        return g * (0.0 if base == 0 and _d(y) >= 0 else factor)
    mask = (np.asarray(base) == 0) & (np.asarray(_d(y)) >= 0)
    if mask.any():
        factor = call2(WHERE, 0.0, factor, mask)
    return unbroadcast(g * factor, y)


POW_TENSOR = defop(
    "pow_tensor", "PowBackward1", lambda x, y: x**y,
    (lambda g, a, x, y: unbroadcast(g * y * x ** (y - 1), x), _pow_exponent_vjp),
    arity="2", uses_ans=True, sample=Sample(TENSOR_PAIRS, domain=("positive", "real")),
    scalar=math.pow,
)  # fmt: skip
RPOW = defop(
    "rpow", "PowBackward2", lambda x, base: base**x,
    (lambda g, a, x, base: g * a * math.log(base) if base > 0 else g * 0,),
    scalar=lambda x, base: math.pow(base, x),
    uses_ans=True, sample=Sample(UNARY, consts=((2.0,), (0.5,))),
)  # fmt: skip


def _remainder_divisor_vjp(g: Tensor, a: Any, x: Any, y: Any) -> Tensor:
    xd, yd = _d(x), _d(y)
    if type(xd) in _FLOATS and type(yd) in _FLOATS:
        return -g * (xd // yd)  # Python's float floor division is NumPy's algorithm
    return unbroadcast(-g * _const(np.floor_divide(xd, yd), g), y)


REMAINDER = defop(
    "remainder", "RemainderBackward0", late.remainder,
    (lambda g, a, x, y: unbroadcast(g, x), _remainder_divisor_vjp),
    arity="2", reads=((), (0, 1)), scalar=operator.mod,
    sample=Sample(TENSOR_PAIRS, domain=("positive", "positive"), second_order=True),
)  # fmt: skip

# ---------------------------------------------------------------- elementwise functions

_INVALID = math.inf - math.inf
"""The NaN an invalid operation makes on this machine (x86: sign bit set), which NumPy's
``sqrt(-1)`` and ``log(-1)`` return too."""


def _log(x: float) -> float:
    """``math.log`` with NumPy's answers where it raises: -inf at 0, NaN below."""
    if x > 0.0 or x != x:
        return math.log(x)
    return -math.inf if x == 0.0 else _INVALID


def _log1p(x: float) -> float:
    """``math.log1p`` with NumPy's answers where it raises: -inf at -1, NaN below."""
    if x > -1.0 or x != x:
        return math.log1p(x)
    return -math.inf if x == -1.0 else _INVALID


def _sqrt(x: float) -> float:
    """``math.sqrt`` with NumPy's NaN below 0 (a derivative sampled at a negative point
    stays on the float backend instead of loading NumPy for one NaN)."""
    return math.sqrt(x) if x >= 0.0 or x != x else _INVALID


EXP = defop(
    "exp", "ExpBackward0", late.exp, (lambda g, a, x, *, spare=(): _mul(g, a, spare),),
    scalar=math.exp,
    uses_ans=True, saves=False, quiet=(-_BOUND, 88.0), sample=Sample(UNARY),
    doc="e to the power x, elementwise",
)  # fmt: skip
LOG = defop(
    "log", "LogBackward0", late.log, (lambda g, a, x: g / x,),
    scalar=_log,
    quiet=(5e-324, _BOUND), sample=Sample(UNARY, domain="positive"),
    doc="natural logarithm, elementwise (log(-1) is NaN)",
)  # fmt: skip
LOG1P = defop(
    "log1p", "Log1PBackward0", late.log1p, (lambda g, a, x: g / (x + 1),),
    scalar=_log1p,
    quiet=(-0.99, _BOUND), sample=Sample(UNARY, domain="positive"),
    doc="log(1 + x), accurate for small x",
)  # fmt: skip
SQRT = defop(
    "sqrt", "SqrtBackward0", late.sqrt, (lambda g, a, x: g / (2 * a),),
    scalar=_sqrt,
    uses_ans=True, saves=False, quiet=(0.0, _BOUND), sample=Sample(UNARY, domain="positive"),
    doc="square root, elementwise",
)  # fmt: skip
ABS = defop(
    "abs", "AbsBackward0", late.abs,
    (lambda g, a, x, *, spare=(): _mul(g, call1(SIGN, x), spare),),
    scalar=_py_abs,
    sample=Sample(UNARY, domain="nonzero"),
    doc="absolute value (its derivative at 0 is 0)", aliases=("absolute",), keeps_ints=True,
)  # fmt: skip


def _sin_vjp(g: Any, a: Any, x: Any, *, spare: tuple = ()) -> Any:
    if type(g) in _SCALARS:
        # 0-d (scalar chains): no buffers to reuse, no recording
        return g * (call1(COS, x) if type(x) is float else np.cos(x))
    return _mul(g, call1(COS, x), spare)


def _cos_vjp(g: Any, a: Any, x: Any) -> Any:
    if type(g) in _SCALARS:
        return g * -(call1(SIN, x) if type(x) is float else np.sin(x))
    return g * -call1(SIN, x)


SIN = defop(
    "sin", "SinBackward0", late.sin, (_sin_vjp,),
    scalar=math.sin,
    quiet=_FINITE, sample=Sample(UNARY), doc="sine, elementwise (radians)",
)  # fmt: skip
COS = defop(
    "cos", "CosBackward0", late.cos, (_cos_vjp,),
    scalar=math.cos,
    quiet=_FINITE, sample=Sample(UNARY), doc="cosine, elementwise (radians)",
)  # fmt: skip
TAN = defop(
    "tan", "TanBackward0", late.tan,
    (lambda g, a, x, *, spare=(): _mul(g, _one_plus_square(a, 1), spare),),
    scalar=math.tan, uses_ans=True, saves=False, quiet=_FINITE,
    sample=Sample(UNARY, domain="unit"), doc="tangent, elementwise (radians)",
)  # fmt: skip
TANH = defop(
    "tanh", "TanhBackward0", late.tanh,
    (lambda g, a, x, *, spare=(): _mul(g, _one_plus_square(a, -1), spare),),
    scalar=math.tanh, uses_ans=True, saves=False, quiet=_FINITE, sample=Sample(UNARY),
    doc="hyperbolic tangent, elementwise",
)  # fmt: skip


def _sigmoid(x: Any) -> Any:
    # exp of -|x| only, so neither branch overflows.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(_result_type(x), copy=False)[()]


def _sigmoid_scalar(x: float) -> float:
    e = math.exp(-_py_abs(x))
    return 1 / (1 + e) if x >= 0 else e / (1 + e)


SIGMOID = defop(
    "sigmoid", "SigmoidBackward0", _sigmoid, (lambda g, a, x: g * a * (1 - a),),
    scalar=_sigmoid_scalar, uses_ans=True, saves=False, quiet=_FINITE, sample=Sample(UNARY),
    doc="logistic function 1 / (1 + exp(-x))",
)  # fmt: skip
RELU = defop(
    "relu", "ReluBackward0", lambda x: np.maximum(x, 0).astype(_result_type(x), copy=False)[()],
    (lambda g, a, x: g * _const(_d(a) > 0, g),),
    scalar=lambda x: 0.0 if x <= 0 else x,  # NaN stays NaN, as np.maximum keeps it
    uses_ans=True, saves=False, sample=Sample(UNARY, domain="nonzero"),
    doc="max(x, 0) elementwise (its derivative at 0 is 0)", keeps_ints=True,
)  # fmt: skip

_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
_ERF_STEPS = 64
"""erf is expanded about the points k/64: |x - k/64| <= 1/128."""
_ERF_TOP = 6.0
"""erf(6) rounds to 1 in float64 (1 - erf(6) is 2e-17), and so does erf of anything larger."""
_ERF_TERMS = 8


@functools.cache
def _erf_table() -> np.ndarray:
    """Row ``j``, column ``k``: the Taylor coefficient of ``d**j`` of erf about ``k/64``.
    erf itself from ``math.erf``; the j-th derivative is
    ``2/sqrt(pi) * (-1)**(j-1) * H_{j-1}(x) * exp(-x*x)`` (Hermite polynomials)."""
    count = int(_ERF_TOP * _ERF_STEPS) + 1
    table = np.empty((_ERF_TERMS + 1, count))
    for k in range(count):
        x0 = k / _ERF_STEPS
        table[0, k] = math.erf(x0)
        scale = _TWO_OVER_SQRT_PI * math.exp(-x0 * x0)
        h_before, h = 0.0, 1.0  # H_{j-2}, H_{j-1}
        factorial = 1.0
        for j in range(1, _ERF_TERMS + 1):
            factorial *= j
            table[j, k] = (scale if j % 2 else -scale) * h / factorial
            h_before, h = h, 2 * x0 * h - 2 * (j - 1) * h_before
    table[1] -= 1  # d is added on its own: near 0, erf(d) = d + d*(2/sqrt(pi) - 1 + ...)
    return table


def _erf(x: Any) -> Any:
    """erf without SciPy: ``math.erf`` for a number; for an array, a short Taylor
    series about the nearest k/64, whose coefficients come from ``math.erf`` and
    the Hermite polynomials, so both agree to about an ulp."""
    if isinstance(x, np.floating):
        return type(x)(math.erf(x))
    array = np.asarray(x)
    dtype = array.dtype if array.dtype.kind == "f" else np.dtype(np.float64)
    values = array.astype(np.float64, copy=False)
    ax = np.fmin(np.abs(values), _ERF_TOP)  # NaN becomes 6 here and NaN again below
    k = np.rint(ax * _ERF_STEPS).astype(np.intp)
    d = ax - k / _ERF_STEPS  # exact: k/64 is within a factor 2 of ax
    table = _erf_table()
    out = table[_ERF_TERMS][k]
    for j in range(_ERF_TERMS - 1, 0, -1):
        out *= d
        out += table[j][k]
    out *= d
    out += d
    out += table[0][k]
    out = np.copysign(out, values)
    nan = np.isnan(values)
    if nan.any():
        out[nan] = np.nan
    return out.astype(dtype, copy=False)[()]


ERF = defop(
    "erf", "ErfBackward0", _erf,
    (lambda g, a, x: g * (_TWO_OVER_SQRT_PI * call1(EXP, -(x * x))),),
    scalar=math.erf, quiet=_FINITE, sample=Sample(UNARY),
    doc="error function 2/sqrt(pi) * integral of exp(-t**2) from 0 to x, elementwise",
)  # fmt: skip


def _logaddexp0(s: float) -> float:
    """``np.logaddexp(0, s)`` on a float, in NumPy's order of operations."""
    if s == 0:
        return math.log(2.0)
    if s > 0:
        return s + math.log1p(math.exp(-s))
    if s < 0:
        return math.log1p(math.exp(s))
    return s  # NaN


def _softplus(x: Any, beta: float, threshold: float) -> Any:
    scaled = x * beta
    soft = np.logaddexp(0, scaled) / beta
    return np.where(scaled > threshold, x, soft).astype(_result_type(x), copy=False)[()]


def _softplus_vjp(g: Any, x: Any, beta: float, threshold: float) -> Any:
    linear = _d(x) * beta > threshold
    if type(linear) is bool:  # the float backend
        return g if linear else g * call1(SIGMOID, x * beta)
    return call2(WHERE, g, g * call1(SIGMOID, x * beta), linear)


def _softplus_scalar(x: float, beta: float, threshold: float) -> float:
    scaled = x * beta
    return x if scaled > threshold else _logaddexp0(scaled) / beta


SOFTPLUS = defop(
    "softplus", "SoftplusBackward0", _softplus,
    (
        lambda g, a, x, beta, threshold: _softplus_vjp(g, x, beta, threshold),
    ),
    scalar=_softplus_scalar, sample=Sample(UNARY, consts=((1.0, 20.0), (2.0, 1.0))),
)  # fmt: skip


def _clamp(x: Any, lo: Any, hi: Any) -> Any:
    out = x
    if lo is not None:
        out = np.maximum(out, lo)
    if hi is not None:
        out = np.minimum(out, hi)
    return out.astype(_result_type(x), copy=False)[()] if isinstance(out, np.ndarray) else out


def _clamp_scalar(x: float, lo: float | None, hi: float | None) -> float:
    """np.maximum/np.minimum on floats: a NaN operand wins, as in NumPy."""
    if lo is not None and not (x >= lo or x != x):
        x = lo
    if hi is not None and not (x <= hi or x != x):
        x = hi
    return x


def _clamp_vjp(g: Tensor, a: Any, x: Tensor, lo: Any, hi: Any) -> Tensor:
    data = _d(x)
    if type(data) is float:  # the float backend
        inside = (lo is None or data >= lo) and (hi is None or data <= hi)
        return g if inside else g * 0.0
    inside = np.ones(np.shape(data), dtype=bool)
    if lo is not None:
        inside &= data >= lo
    if hi is not None:
        inside &= data <= hi
    return g * _const(inside, g)


CLAMP = defop(
    "clamp", "ClampBackward1", _clamp, (_clamp_vjp,),
    scalar=_clamp_scalar,
    sample=Sample(UNARY, consts=((-0.5, 0.7), (None, 0.3), (0.2, None))),
)  # fmt: skip


def _tie_vjp(pick: Callable, mine: int) -> Callable:
    """maximum/minimum: the gradient goes to the winning side; ties split it evenly."""

    def vjp(g: Tensor, a: Any, x: Any, y: Any) -> Tensor:
        xd, yd = _d(x), _d(y)
        win = pick(xd, yd) if mine == 0 else pick(yd, xd)
        if type(xd) is float and type(yd) is float:  # the float backend
            return g * (1.0 if win else 0.5 if xd == yd else 0.0)
        share = np.where(win, 1.0, np.where(xd == yd, 0.5, 0.0)).astype(_result_type(_d(g)))
        return unbroadcast(g * _const(share, g), x if mine == 0 else y)

    return vjp


MAXIMUM = defop(
    "maximum", "MaximumBackward0", late.maximum,
    (_tie_vjp(operator.gt, 0), _tie_vjp(operator.gt, 1)),
    scalar=lambda x, y: x if x > y or x != x else y,  # NumPy's: NaN wins; a tie gives y
    arity="2", sample=Sample(TENSOR_PAIRS, domain="distinct"),
)  # fmt: skip
MINIMUM = defop(
    "minimum", "MinimumBackward0", late.minimum,
    (_tie_vjp(operator.lt, 0), _tie_vjp(operator.lt, 1)),
    scalar=lambda x, y: x if x < y or x != x else y,
    arity="2", sample=Sample(TENSOR_PAIRS, domain="distinct"),
)  # fmt: skip


def _where_forward(x: Any, y: Any, condition: Any) -> Any:
    out = np.where(condition, x, y)
    return out[()] if out.ndim == 0 else out


WHERE = defop(
    "where", "WhereBackward0", _where_forward,
    (
        lambda g, a, x, y, c: unbroadcast(g * _const(np.asarray(c, dtype=bool), g), x),
        lambda g, a, x, y, c: unbroadcast(g * _const(~np.asarray(c, dtype=bool), g), y),
    ),
    arity="2", saves=False,
    sample=Sample(
        (((2, 3), (2, 3)), ((3,), (2, 3)), ((2, 3), None)),
        consts=lambda: ((np.array([[True, False, True], [False, False, True]]),),),
    ),
)  # fmt: skip

# Zero derivative everywhere, but differentiable as PyTorch declares them.
# (math.floor/ceil/round answer ints: float() of them, which raises for inf and NaN.)
_ZERO = (lambda g, a, x: g * 0,)
SIGN = defop(
    "sign", "SignBackward0", late.sign, _ZERO, saves=False, sample=Sample(UNARY),
    scalar=lambda x: 1.0 if x > 0 else -1.0 if x < 0 else 0.0 if x == 0 else x,
    doc="-1, 0 or 1 by the sign of x, elementwise (derivative 0)", keeps_ints=True,
)  # fmt: skip
FLOOR = defop(
    "floor", "FloorBackward0", late.floor, _ZERO, saves=False, sample=Sample(UNARY),
    scalar=lambda x: math.copysign(math.floor(x), x),  # floor(-0.0) is -0.0
    doc="largest whole number <= x, elementwise (derivative 0)", keeps_ints=True,
)  # fmt: skip
CEIL = defop(
    "ceil", "CeilBackward0", late.ceil, _ZERO, saves=False, sample=Sample(UNARY),
    scalar=lambda x: math.copysign(math.ceil(x), x),  # ceil(-0.5) is -0.0
    doc="smallest whole number >= x, elementwise (derivative 0)", keeps_ints=True,
)  # fmt: skip
ROUND = defop(
    "round", "RoundBackward0", late.round, _ZERO, saves=False, sample=Sample(UNARY),
    scalar=lambda x: math.copysign(round(x), x),  # round(-0.4) is -0.0
)  # fmt: skip

# ---------------------------------------------------------------- reductions


# Reductions call the ufunc's ``reduce`` as ``np.sum``/``np.max`` do for an ndarray or a
# scalar (the same result, bit for bit), without their Python dispatch: ~1 µs of every
# reduction, the whole cost of one over a small tensor.


def _numel(v: Any) -> int:
    """Elements of an operand (1 for a float backend's value, without NumPy)."""
    if type(v) is Tensor:
        v = v._raw
    elif type(v) is _SYMBOLIC:
        v = v.value
    if type(v) is _ndarray:
        return v.size
    return 1 if type(v) in _tensor.PYTHON_VALUES else int(np.size(v))


def _sum_all(x: Any) -> Any:
    return np.add.reduce(x, axis=None)


def _sum_vjp(g: Any, a: Any, x: Any) -> Any:
    if type(x) is _ndarray and x.ndim and type(g) in _SCALARS:  # (a raw pass, at once)
        return _broadcast_to(g, x.shape)
    return _expand_back(g, _shape(x), (), True)


def _mean_vjp(g: Any, a: Any, x: Any) -> Any:
    if type(x) is _ndarray and x.ndim and type(g) in _SCALARS:  # (as `_sum_vjp`)
        return _broadcast_to(g / max(x.size, 1), x.shape)
    return _expand_back(g / max(_numel(x), 1), _shape(x), (), True)


SUM = defop(
    "sum", "SumBackward0", _sum_all,
    (_sum_vjp,),
    scalar=lambda x: x + 0.0,  # a 0-d sum is its element (NumPy's: -0.0 + 0.0 is 0.0)
    saves=False, sample=Sample(UNARY),
)  # fmt: skip
SUM_DIM = defop(
    "sum_dim", "SumBackward1",
    lambda x, dims, keepdim: np.add.reduce(x, axis=dims, keepdims=keepdim),
    (lambda g, a, x, dims, keepdim: _expand_back(g, _shape(x), dims, keepdim),),
    saves=False,
    sample=Sample((((2, 3),),), consts=(((0,), False), ((1,), True), ((0, 1), False))),
)  # fmt: skip


def _mean_all(x: Any) -> Any:
    """``np.mean(x)``: for a float32/float64 array, its own steps (the sum, then its
    float64 quotient by the count as an intp, in the sum's type) without its dispatch."""
    if type(x) is _ndarray and x.dtype.char in "fd" and x.size:
        total = np.add.reduce(x, axis=None)
        return total.dtype.type(total / np.intp(x.size))
    return np.mean(x)


MEAN = defop(
    "mean", "MeanBackward0", _mean_all,
    (_mean_vjp,),
    scalar=lambda x: (x + 0.0) / 1.0,  # a 0-d mean is its element (-0.0's is 0.0)
    saves=False, sample=Sample(UNARY),
)  # fmt: skip
MEAN_DIM = defop(
    "mean_dim", "MeanBackward1", lambda x, dims, keepdim: np.mean(x, axis=dims, keepdims=keepdim),
    (
        lambda g, a, x, dims, keepdim: _expand_back(
            g / _reduced_count(_shape(x), dims), _shape(x), dims, keepdim
        ),
    ),
    saves=False,
    sample=Sample((((2, 3),),), consts=(((0,), False), ((1,), True), ((0, 1), False))),
)  # fmt: skip


def _prod_vjp(g: Tensor, a: Tensor, x: Tensor, dims: tuple | None, keepdim: bool) -> Tensor:
    shape = _shape(x)
    all_dims = tuple(range(len(shape))) if dims is None else dims
    g = _expand_back(g, shape, all_dims, keepdim or dims is None)
    data = _d(x)
    if np.all(data != 0):
        return g * _expand_back(a, shape, all_dims, keepdim or dims is None) / x
    if type(x) is Tensor:
        return g * _others_product_recorded(x, all_dims, shape)
    # With zeros, the product of the *other* elements, from exclusive cumulative products.
    moved = np.moveaxis(np.asarray(data), all_dims, range(len(all_dims)))
    flat = moved.reshape((-1, *moved.shape[len(all_dims) :]))
    ones = np.ones_like(flat[:1])
    left = np.cumprod(np.concatenate([ones, flat[:-1]]), axis=0)
    right = np.flip(np.cumprod(np.concatenate([ones, np.flip(flat, 0)[:-1]]), axis=0), 0)
    others = np.moveaxis((left * right).reshape(moved.shape), range(len(all_dims)), all_dims)
    return g * _const(others, g)


def _others_product_recorded(x: Tensor, dims: tuple, shape: tuple) -> Tensor:
    """For each element, the product of the others in its slice, as recorded ops, so
    a second derivative through zeros is right. With Q the product of a slice's
    non-zero elements and S the sum of its zeros (0, but not in its derivative):
    no zero gives Q/x; one zero gives Q at the zero and Q*S/x elsewhere; two
    zeros give Q*(S - x) at each zero (the other zero times Q) and 0 elsewhere;
    with more, every such product keeps a zero factor in all first derivatives."""
    zero = np.asarray(_d(x)) == 0
    count = np.broadcast_to(np.sum(zero, axis=dims, keepdims=True), shape)
    safe = call2(WHERE, 1.0, x, zero)
    nonzero_product = call1(PROD_DIM, safe, dims, True)
    zeros_sum = call1(SUM_DIM, call2(WHERE, x, 0.0, zero), dims, True)
    one_zero = call2(WHERE, nonzero_product, nonzero_product * zeros_sum / safe, zero)
    two_zeros = call2(WHERE, nonzero_product * (zeros_sum - x), 0.0, zero)
    rest = call2(WHERE, one_zero, call2(WHERE, two_zeros, 0.0, count == 2), count == 1)
    return call2(WHERE, nonzero_product / safe, rest, count == 0)


PROD = defop(
    "prod", "ProdBackward0", lambda x: np.prod(x),
    (lambda g, a, x: _prod_vjp(g, a, x, None, False),),
    uses_ans=True, sample=Sample(UNARY, domain="nonzero"),
)  # fmt: skip
PROD_DIM = defop(
    "prod_dim", "ProdBackward1", lambda x, dims, keepdim: np.prod(x, axis=dims, keepdims=keepdim),
    (_prod_vjp,),
    uses_ans=True,
    sample=Sample((((2, 3),),), consts=(((0,), False), ((1,), True)), domain="nonzero"),
)  # fmt: skip


def _extreme_all_vjp(g: Tensor, a: Tensor, x: Tensor) -> Tensor:
    hit = np.asarray(_d(x) == _d(a))
    share = hit / max(int(np.count_nonzero(hit)), 1)  # (hit.sum() without its dispatch)
    return g * _const(share.astype(_result_type(_d(x))), g)


MAX = defop(
    "max", "MaxBackward1", lambda x: np.maximum.reduce(x, axis=None), (_extreme_all_vjp,),
    uses_ans=True, sample=Sample(UNARY, domain="distinct"),
)  # fmt: skip
MIN = defop(
    "min", "MinBackward1", lambda x: np.minimum.reduce(x, axis=None), (_extreme_all_vjp,),
    uses_ans=True, sample=Sample(UNARY, domain="distinct"),
)  # fmt: skip


def _select_along(x: Any, dim: int, keepdim: bool, arg: Callable) -> Any:
    index = np.expand_dims(arg(x, axis=dim), dim)
    out = np.take_along_axis(x, index, axis=dim)
    return out if keepdim else np.squeeze(out, axis=dim)[()]


def _extreme_dim_vjp(arg: Callable) -> Callable:
    def vjp(g: Tensor, a: Any, x: Tensor, dim: int, keepdim: bool) -> Tensor:
        data = np.asarray(_d(x))
        index = np.expand_dims(arg(data, axis=dim), dim)
        onehot = np.zeros(data.shape, dtype=bool)
        np.put_along_axis(onehot, index, True, axis=dim)
        return _expand_back(g, data.shape, (dim,), keepdim) * _const(onehot, g)

    return vjp


MAX_DIM = defop(
    "max_dim", "MaxBackward0", lambda x, dim, keepdim: _select_along(x, dim, keepdim, np.argmax),
    (_extreme_dim_vjp(late.argmax),), saves=True,
    sample=Sample((((2, 3),),), consts=((0, False), (1, True)), domain="distinct"),
)  # fmt: skip
MIN_DIM = defop(
    "min_dim", "MinBackward0", lambda x, dim, keepdim: _select_along(x, dim, keepdim, np.argmin),
    (_extreme_dim_vjp(late.argmin),), saves=True,
    sample=Sample((((2, 3),),), consts=((0, False), (1, True)), domain="distinct"),
)  # fmt: skip


def _norm_forward(x: Any, p: float, dims: tuple | None, keepdim: bool) -> Any:
    ax = np.abs(x)
    if p == 2:
        out = np.sqrt(np.sum(ax * ax, axis=dims, keepdims=keepdim))
    elif p == 1:
        out = np.sum(ax, axis=dims, keepdims=keepdim)
    elif p == math.inf:
        out = np.max(ax, axis=dims, keepdims=keepdim)
    elif p == -math.inf:
        out = np.min(ax, axis=dims, keepdims=keepdim)
    elif p == 0:
        out = np.sum(ax != 0, axis=dims, keepdims=keepdim).astype(_result_type(x))
    else:
        out = np.sum(ax**p, axis=dims, keepdims=keepdim) ** (1.0 / p)
    return out.astype(_result_type(x), copy=False)[()] if isinstance(out, np.ndarray) else out


def _norm_vjp(
    g: Tensor, a: Tensor, x: Tensor, p: float, dims: tuple | None, keepdim: bool
) -> Tensor:
    shape = _shape(x)
    all_dims = tuple(range(len(shape))) if dims is None else dims
    keep = keepdim or dims is None
    g = _expand_back(g, shape, all_dims, keep)
    norm_b = _expand_back(a, shape, all_dims, keep)
    if p == 0:
        return g * 0
    if p == 1:
        return g * call1(SIGN, x)
    if p in (math.inf, -math.inf):
        hit = np.asarray(np.abs(_d(x)) == _d(norm_b))
        count = np.sum(hit, axis=all_dims, keepdims=True)
        return (
            g * call1(SIGN, x) * _const((hit / np.maximum(count, 1)).astype(_result_type(_d(x))), g)
        )
    zero = np.asarray(_d(norm_b) == 0)
    if p == 2:  # noqa: SIM108 (two formulas, kept apart for reading)
        scaled = x / norm_b
    else:
        scaled = call1(SIGN, x) * call1(ABS, x) ** (p - 1) / norm_b ** (p - 1)
    if zero.any():
        scaled = call2(WHERE, 0.0, scaled, zero)
    return g * scaled


NORM = defop(
    "norm", "LinalgVectorNormBackward0", _norm_forward, (_norm_vjp,),
    uses_ans=True,
    sample=Sample(
        UNARY,
        consts=((2, None, False), (1, None, False), (3, None, False), (math.inf, None, False)),
        domain="distinct",
    ),
)  # fmt: skip
NORM_DIM = defop(
    "norm_dim", "LinalgVectorNormBackward0", _norm_forward, (_norm_vjp,),
    uses_ans=True,
    sample=Sample((((2, 3),),), consts=((2, (1,), False), (2, (0,), True), (1, (1,), False))),
)  # fmt: skip


def _logsumexp(x: Any, dims: tuple, keepdim: bool) -> Any:
    top = np.maximum.reduce(x, axis=dims, keepdims=True)  # (np.max's and np.sum's steps)
    top = np.where(np.isfinite(top), top, 0)
    out = np.log(np.add.reduce(np.exp(x - top), axis=dims, keepdims=True)) + top
    if not keepdim:
        out = out.squeeze(axis=dims)
    return out.astype(_result_type(x), copy=False)[()]


LOGSUMEXP = defop(
    "logsumexp", "LogsumexpBackward0", _logsumexp,
    (
        lambda g, a, x, dims, keepdim: _expand_back(g, _shape(x), dims, keepdim)
        * call1(EXP, x - _expand_back(a, _shape(x), dims, keepdim)),
    ),
    uses_ans=True,
    sample=Sample(
        (((3,),), ((2, 3),)), consts=(((0,), False), ((0,), True))
    ),
)  # fmt: skip


def _result_type(x: Any) -> Any:
    """``np.result_type(x)``: an array's own dtype without NumPy's ~0.4 µs of rules."""
    return x.dtype if type(x) is _ndarray else np.result_type(x)


def _softmax(x: Any, dim: int) -> Any:
    shifted = np.exp(x - np.maximum.reduce(x, axis=dim, keepdims=True))
    out = shifted / np.add.reduce(shifted, axis=dim, keepdims=True)
    return out.astype(_result_type(x), copy=False)  # (``out`` is new: no copy of it)


def _softmax_vjp(g: Any, a: Any, x: Any, dim: int) -> Any:
    if type(a) is _ndarray and type(g) is _ndarray:  # (a raw pass: SUM_DIM's forward at once)
        return a * (g - np.add.reduce(g * a, axis=(dim,), keepdims=True))
    return a * (g - call1(SUM_DIM, g * a, (dim,), True))


SOFTMAX = defop(
    "softmax", "SoftmaxBackward0", _softmax,
    (_softmax_vjp,),
    uses_ans=True, saves=False, sample=Sample((((3,),), ((2, 3),)), consts=((0,), (-1,))),
)  # fmt: skip


def _log_softmax(x: Any, dim: int) -> Any:
    shifted = x - np.maximum.reduce(x, axis=dim, keepdims=True)
    out = shifted - np.log(np.add.reduce(np.exp(shifted), axis=dim, keepdims=True))
    return out.astype(_result_type(x), copy=False)


LOG_SOFTMAX = defop(
    "log_softmax", "LogSoftmaxBackward0", _log_softmax,
    (lambda g, a, x, dim: g - call1(EXP, a) * call1(SUM_DIM, g, (dim,), True),),
    uses_ans=True, saves=False, sample=Sample((((3,),), ((2, 3),)), consts=((0,), (-1,))),
)  # fmt: skip

# ---------------------------------------------------------------- linear algebra


def _matmul_vjp_x(g: Tensor, a: Any, x: Tensor, y: Tensor) -> Tensor:
    return unbroadcast(call2(BMM, g, call1(TRANSPOSE, y, -1, -2)), x)


def _matmul_vjp_y(g: Tensor, a: Any, x: Tensor, y: Tensor) -> Tensor:
    return unbroadcast(call2(BMM, call1(TRANSPOSE, x, -1, -2), g), y)


def _mm_pooled(x: np.ndarray, y: Any) -> np.ndarray | None:
    """``x @ y`` of two float matrices into a pooled buffer when the result is large."""
    if type(y) is not _ndarray or x.ndim != 2 or y.ndim != 2:
        return None
    shape = (x.shape[0], y.shape[1])
    if shape[0] * shape[1] * x.itemsize < _recycle.MIN_BYTES or y.dtype != x.dtype:
        return None
    return np.matmul(x, y, out=_recycle.take(shape, x.dtype))


def _mm_raw(x: Any, y: Any) -> Any:
    """``call2(MM, x, y)`` of two raw float matrices, without its dispatch."""
    out = _mm_pooled(x, y)
    return np.matmul(x, y) if out is None else out


def _mm_vjp_x(g: Any, a: Any, x: Any, y: Any) -> Any:
    if type(g) is _ndarray and type(y) is _ndarray and g.dtype.kind == "f":
        return _mm_raw(g, y.T)  # (``call1(T, y)`` is ``y.T``)
    return call2(MM, g, call1(T, y))


def _mm_vjp_y(g: Any, a: Any, x: Any, y: Any) -> Any:
    if type(g) is _ndarray and type(x) is _ndarray and x.dtype.kind == "f":
        return _mm_raw(x.T, g)
    return call2(MM, call1(T, x), g)


MM = defop(
    "mm", "MmBackward0", late.matmul,
    (_mm_vjp_x, _mm_vjp_y),
    arity="2", reads=((1,), (0,)), sample=Sample((((2, 3), (3, 4)), ((1, 3), (3, 1)))),
    pooled=_mm_pooled,
)  # fmt: skip
MV = defop(
    "mv", "MvBackward0", late.matmul,
    (
        lambda g, a, x, y: call2(MUL, call1(VIEW, g, (-1, 1)), call1(VIEW, y, (1, -1))),
        lambda g, a, x, y: call2(MV, call1(T, x), g),
    ),
    arity="2", reads=((1,), (0,)), sample=Sample((((2, 3), (3,)),)),
)  # fmt: skip
DOT = defop(
    "dot", "DotBackward0", late.dot,
    (lambda g, a, x, y: g * y, lambda g, a, x, y: g * x),
    arity="2", reads=((1,), (0,)), sample=Sample((((3,), (3,)),)),
)  # fmt: skip
BMM = defop(
    "bmm", "BmmBackward0", late.matmul, (_matmul_vjp_x, _matmul_vjp_y),
    arity="2", reads=((1,), (0,)),
    sample=Sample((((2, 2, 3), (2, 3, 4)), ((2, 2, 3), (3, 4)), ((2, 3), (2, 3, 2)))),
)  # fmt: skip

# ---------------------------------------------------------------- shapes and indexing


def _reshape_forward(x: Any, shape: tuple) -> Any:
    try:
        return x.reshape(shape) if type(x) is _ndarray else np.reshape(x, shape)
    except ValueError:
        raise _tensor.ShapeMismatch(
            f"shape '{list(shape)}' is invalid for input of size {np.size(x)}"
        ) from None


VIEW = defop(
    "view", "ViewBackward0", _reshape_forward,
    (lambda g, a, x, shape: call1(VIEW, g, _shape(x)),),
    saves=False, sample=Sample((((2, 3),), ((6,),)), consts=(((3, 2),), ((-1,),))),
)  # fmt: skip
EXPAND = defop(
    "expand", "ExpandBackward0", _broadcast_to,
    (lambda g, a, x, shape: unbroadcast(g, x),),
    saves=False, sample=Sample((((3,),), ((1, 3),)), consts=(((2, 3),),)),
)  # fmt: skip
TRANSPOSE = defop(
    "transpose", "TransposeBackward0", lambda x, d0, d1: np.swapaxes(x, d0, d1),
    (lambda g, a, x, d0, d1: call1(TRANSPOSE, g, d0, d1),),
    saves=False, sample=Sample((((2, 3),), ((2, 3, 4),)), consts=((0, 1), (-1, -2))),
)  # fmt: skip
T = defop(
    "t", "TBackward0", lambda x: x.T if type(x) is _ndarray else np.transpose(x),
    (lambda g, a, x: call1(T, g),),
    saves=False, sample=Sample(UNARY),
)  # fmt: skip
PERMUTE = defop(
    "permute", "PermuteBackward0", late.transpose,
    (lambda g, a, x, dims: call1(PERMUTE, g, None if dims is None else _inverse(dims)),),
    saves=False,
    sample=Sample(
        (((2, 3),), ((2, 3, 4),), ((2, 3, 4),)),
        consts=((None,), (None,), ((1, 2, 0),)),
        paired=True,
    ),
)  # fmt: skip
SQUEEZE = defop(
    "squeeze", "SqueezeBackward0", lambda x, dims: np.squeeze(x, axis=dims),
    (lambda g, a, x, dims: call1(VIEW, g, _shape(x)),),
    saves=False, sample=Sample((((1, 3),), ((2, 1),)), consts=((None,),)),
)  # fmt: skip
UNSQUEEZE = defop(
    "unsqueeze", "UnsqueezeBackward0", lambda x, dim: np.expand_dims(x, dim),
    (lambda g, a, x, dim: call1(VIEW, g, _shape(x)),),
    saves=False, sample=Sample((((),), ((3,),), ((2, 3),)), consts=((0,), (-1,))),
)  # fmt: skip
TO = defop(
    "to", "ToCopyBackward0", lambda x, dtype: np.asarray(x).astype(dtype)[()],
    (lambda g, a, x, dtype: call1(TO, g, _d(x).dtype),),
    saves=False, sample=Sample(UNARY, consts=lambda: ((np.dtype(np.float64),),)),
)  # fmt: skip
CLONE = defop(
    "clone", "CloneBackward0", lambda x: np.array(x, copy=True)[()], (lambda g, a, x: g,),
    saves=False, sample=Sample(UNARY),
)  # fmt: skip


def _inverse(dims: tuple) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(dims))


def _is_basic(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items)


def _index_forward(x: Any, index: Any) -> Any:
    out = np.asarray(x)[index]
    return out


def _index_vjp(g: Tensor, a: Any, x: Tensor, index: Any) -> Tensor:
    return call1(INDEX_ADD, g, np.shape(_d(x)), index)


def _scatter_forward(g: Any, shape: tuple, index: Any) -> Any:
    data = np.asarray(g)
    out = np.zeros(shape, dtype=data.dtype)
    if _is_basic(index):
        out[index] = data
    else:
        np.add.at(out, index, data)
    return out[()] if out.ndim == 0 else out


INDEX_ADD = defop(
    "index_add", "IndexPutBackward0", _scatter_forward,
    (lambda g, a, src, shape, index: call1(INDEX, g, index),),
    saves=False,
    sample=Sample(
        (((2,),), ((2, 3),)),
        consts=lambda: (((3,), (np.array([0, 2]),)), ((4, 3), (np.array([1, 1]),))),
        paired=True,
    ),
)  # fmt: skip
SELECT = defop(
    "select", "SelectBackward0", _index_forward, (_index_vjp,),
    saves=False, sample=Sample((((3,),), ((2, 3),)), consts=((0,), (-1,))),
)  # fmt: skip
SLICE = defop(
    "slice", "SliceBackward0", _index_forward, (_index_vjp,),
    saves=False,
    sample=Sample(
        (((3,),), ((4, 3),)), consts=((slice(1, 3),), ((slice(None), slice(0, 2)),)), paired=True
    ),
)  # fmt: skip
INDEX = defop(
    "index", "IndexBackward0", _index_forward, (_index_vjp,),
    saves=False,
    sample=Sample(
        (((3,),), ((3, 2),)),
        consts=lambda: ((np.array([0, 2, 2, 0]),), (np.array([True, False, True]),)),
    ),
)  # fmt: skip


class _PerOperand(tuple):
    """VJPs of an n-ary op: entry ``i`` is ``vjp(i, g, ans, *operands, *consts)``."""

    __slots__ = ()

    def __getitem__(self, index: Any) -> Any:
        rule = tuple.__getitem__(self, 0)
        return lambda g, a, *rest: rule(index, g, a, *rest)


def _cat_forward(datas: list, dim: int) -> Any:
    return np.concatenate(datas, axis=dim)


def _cat_rule(i: int, g: Tensor, a: Any, *rest: Any) -> Tensor:
    operands, dim = rest[:-1], rest[-1]
    start = _py_sum(_shape(o)[dim] if not _is_number(o) else 1 for o in operands[:i])
    size = _shape(operands[i])[dim]
    index = (slice(None),) * (dim % g.ndim) + (slice(start, start + size),)
    return call1(SLICE, g, index)


def _stack_forward(datas: list, dim: int) -> Any:
    return np.stack(datas, axis=dim)


def _stack_rule(i: int, g: Tensor, a: Any, *rest: Any) -> Tensor:
    dim = rest[-1]
    index = (slice(None),) * (dim % g.ndim) + (i,)
    return call1(SELECT, g, index)


CAT = defop(
    "cat", "CatBackward0", _cat_forward, _PerOperand((_cat_rule,)),
    arity="n", saves=False,
    sample=Sample((((2, 3), (1, 3)), ((3,), (2,))), consts=((0,),)),
)  # fmt: skip
STACK = defop(
    "stack", "StackBackward0", _stack_forward, _PerOperand((_stack_rule,)),
    arity="n", saves=False,
    sample=Sample((((2, 3), (2, 3)), ((3,), (3,)), ((), ())), consts=((0,), (-1,))),
)  # fmt: skip

# ---------------------------------------------------------------- losses

# PyTorch's fused loss nodes (MseLossBackward0, NllLossBackward0, ...), one node per
# loss as users see them in grad_fn; the VJPs use registry ops, so they differentiate
# again. ``reduction`` is "mean", "sum" or "none"; the gradient reaching each element
# is ``g`` ("none": one per element; "sum": ``g`` broadcast; "mean": ``g / count``).


def _reduced(loss: Any, reduction: str, count: Any = None) -> Any:
    if reduction == "none":
        return loss
    total = np.sum(loss)
    if reduction == "sum":
        return total
    return total / (np.size(loss) if count is None else count)


def _seed(g: Any, reduction: str, count: Any) -> Any:
    return g / count if reduction == "mean" else g


def _broadcast_size(*operands: Any) -> int:
    return int(np.prod(np.broadcast_shapes(*(_shape(x) for x in operands)), dtype=np.int64))


def _mse_forward(x: Any, t: Any, reduction: str) -> Any:
    diff = x - t
    return _reduced(diff * diff, reduction)


MSE_LOSS = defop(
    "mse_loss", "MseLossBackward0", _mse_forward,
    (
        lambda g, a, x, t, red: unbroadcast(_seed(g, red, _broadcast_size(x, t)) * 2 * (x - t), x),
        lambda g, a, x, t, red: unbroadcast(_seed(g, red, _broadcast_size(x, t)) * 2 * (t - x), t),
    ),
    arity="2",
    sample=Sample(
        (((2, 3), (2, 3)), ((3,), (3,)), ((), ()), ((2, 3), (3,)), ((2, 3), None)),
        consts=(("mean",), ("sum",), ("none",)),
    ),
)  # fmt: skip


def _bce_logits_forward(x: Any, t: Any, weight: Any, pos_weight: Any, reduction: str) -> Any:
    """``(1 - t) x + (1 + (pos_weight - 1) t) log(1 + exp(-x))`` (times ``weight``),
    stable for any ``x``: ``logaddexp(0, -x)``."""
    softplus = np.logaddexp(0, -x)
    if pos_weight is not None:
        softplus = (1 + (pos_weight - 1) * t) * softplus
    loss = (1 - t) * x + softplus
    if weight is not None:
        loss = loss * weight
    return _reduced(loss, reduction)[()]


def _bce_logits_x(g: Any, a: Any, x: Any, t: Any, w: Any, pw: Any, red: str) -> Any:
    """d/dx = (1 - t) - (1 + (pw - 1) t) sigmoid(-x)."""
    below = call1(SIGMOID, -x)
    if pw is not None:
        below = (1 + (pw - 1) * t) * below
    local = (1 - t) - below
    if w is not None:
        local = local * w
    return unbroadcast(_seed(g, red, _broadcast_size(x, t)) * local, x)


def _bce_logits_t(g: Any, a: Any, x: Any, t: Any, w: Any, pw: Any, red: str) -> Any:
    """d/dt = -x + (pw - 1) log(1 + exp(-x))."""
    local = -x
    if pw is not None:
        local = local + (pw - 1) * call1(SOFTPLUS, -x, 1.0, math.inf)
    if w is not None:
        local = local * w
    return unbroadcast(_seed(g, red, _broadcast_size(x, t)) * local, t)


_LOSS_WEIGHTS = [0.5, 2.0, 1.5]
BCE_WITH_LOGITS = defop(
    "binary_cross_entropy_with_logits", "BinaryCrossEntropyWithLogitsBackward0",
    _bce_logits_forward, (_bce_logits_x, _bce_logits_t),
    arity="2",
    sample=Sample(
        (((2, 3), (2, 3)), ((3,), (3,)), ((), ()), ((2, 3), (2, 3)), ((2, 3), (2, 3))),
        consts=lambda: (
            (None, None, "mean"), (np.array(_LOSS_WEIGHTS), None, "sum"), (None, None, "none"),
            (None, np.array(_LOSS_WEIGHTS), "mean"),
            (np.array(_LOSS_WEIGHTS), np.array(_LOSS_WEIGHTS), "none"),
        ),
        paired=True, domain=("real", "unit"),
    ),
)  # fmt: skip


def _nll_forward(logp: Any, negated: Any, class_dim: int, reduction: str, total: Any) -> Any:
    """``negated`` holds -weight at each target's class and 0 elsewhere (0 everywhere for
    an ignored target); ``total`` is the weight of the kept targets, what "mean" divides by."""
    losses = np.sum(logp * negated, axis=class_dim)
    return np.asarray(_reduced(losses, reduction, total), dtype=np.result_type(logp))[()]


def _nll_vjp(g: Any, a: Any, logp: Any, negated: Any, class_dim: int, red: str, total: Any) -> Any:
    if red == "none":
        shape = list(_shape(logp))
        shape[class_dim] = 1
        g = call1(VIEW, g, tuple(shape))
    return _seed(g, red, total) * _const(negated, g)


def _nll_sample_mask(shape: tuple, class_dim: int, labels: list[int]) -> np.ndarray:
    """A sample's ``negated``: the given class per target, weights 1, 2, 0.5, ..."""
    mask = np.zeros(shape)
    for index, label in zip(np.ndindex(*np.delete(shape, class_dim)), labels, strict=True):
        where = list(index)
        where.insert(class_dim, label)
        mask[tuple(where)] = -(0.5 + 0.5 * label)
    return mask


def _nll_sample_consts() -> tuple:
    mask_2x3 = _nll_sample_mask((2, 3), 1, [2, 0])
    mask_2x3x2 = _nll_sample_mask((2, 3, 2), 1, [0, 2, 1, 1])
    return (
        (mask_2x3, 1, "mean", -np.sum(mask_2x3)),
        (mask_2x3, 1, "none", None),
        (_nll_sample_mask((3,), 0, [1]), 0, "sum", None),
        (mask_2x3x2, 1, "mean", -np.sum(mask_2x3x2)),
    )


NLL_LOSS = defop(
    "nll_loss", "NllLossBackward0", _nll_forward, (_nll_vjp,),
    saves=False,
    sample=Sample(
        (((2, 3),), ((2, 3),), ((3,),), ((2, 3, 2),)),
        consts=_nll_sample_consts,
        paired=True,
    ),
)  # fmt: skip


# ---------------------------------------------------------------- not differentiable

_CMP = Sample(TENSOR_PAIRS)
EQ = nondiff("eq", late.equal, arity="2", sample=_CMP, scalar=operator.eq)
NE = nondiff("ne", late.not_equal, arity="2", sample=_CMP, scalar=operator.ne)
LT = nondiff("lt", late.less, arity="2", sample=_CMP, scalar=operator.lt)
LE = nondiff("le", late.less_equal, arity="2", sample=_CMP, scalar=operator.le)
GT = nondiff("gt", late.greater, arity="2", sample=_CMP, scalar=operator.gt)
GE = nondiff("ge", late.greater_equal, arity="2", sample=_CMP, scalar=operator.ge)
FLOOR_DIVIDE = nondiff(
    "floor_divide", late.floor_divide, arity="2", sample=_CMP,
    scalar=operator.floordiv,  # Python's float floor division is NumPy's algorithm
)  # fmt: skip
LOGICAL_AND = nondiff(
    "logical_and", late.logical_and, arity="2", sample=_CMP,
    scalar=lambda x, y: bool(x) and bool(y),
)  # fmt: skip
LOGICAL_OR = nondiff(
    "logical_or", late.logical_or, arity="2", sample=_CMP, scalar=lambda x, y: bool(x) or bool(y)
)
LOGICAL_NOT = nondiff("logical_not", late.logical_not, sample=Sample(UNARY), scalar=operator.not_)
ISNAN = nondiff("isnan", late.isnan, sample=Sample(UNARY), scalar=math.isnan)
ISFINITE = nondiff("isfinite", late.isfinite, sample=Sample(UNARY), scalar=math.isfinite)
ARGMAX = nondiff(
    "argmax", lambda x, dim, keepdim: _arg(np.argmax, x, dim, keepdim),
    sample=Sample(UNARY, consts=((None, False),)),
)  # fmt: skip
ARGMIN = nondiff(
    "argmin", lambda x, dim, keepdim: _arg(np.argmin, x, dim, keepdim),
    sample=Sample(UNARY, consts=((None, False),)),
)  # fmt: skip


def _arg(fn: Callable, x: Any, dim: Any, keepdim: bool) -> Any:
    if dim is None:
        return np.int64(fn(x))
    return np.asarray(fn(x, axis=dim, keepdims=keepdim), dtype=np.int64)[()]
