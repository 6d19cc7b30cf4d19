"""Symbolic derivatives: the derivative of a formula as a formula (``gradcalc diff``).

Nothing here knows a derivative rule. The formula runs once in the one
interpreter at a point (the user's ``NAME=VALUE``s, or generic points); the
engine records its graph as for any gradient. Each recorded node's saved
operands and output are then replaced by expression nodes (:class:`Sym`: the
forward as "op(args)", with its value at the point), and the engine's own
backward loop (``_tensor.run_backward``) runs the registry's VJPs on them:
the VJPs are written with Python operators, ``call1``/``call2``, ``_d`` and
``unbroadcast``, and ``ops.use_symbolic`` makes those build expression nodes
for a :class:`Sym` (the hook is documented in ``gradcalc/ops.py``). So every
differentiable elementwise built-in has a symbolic derivative the day it is
declared, and the printed derivative is what the engine computes.

Why the trace and not symbolic values in the interpreter: the interpreter and
every built-in work on Tensors (shapes, dtypes, broadcasting checks, method
sugar), and control flow needs values anyway. Running it as it is, at a point,
handles ``def``s (inlined by construction: the trace only has ops), loops and
branches; the branch taken is the one at the point. The derivative depends on
the point where the program has ``if``/``while``/comparisons, where a VJP made
a constant from values (relu's mask, maximum's share, ``%``'s quotient: counted
by ``Sym.apply``; ``abs`` is ``sign(x)``, symbolic), or where it differs at
three generic points (``const()``/``detach()`` values): without a point such
a formula is an error asking for one; with one, the derivative is that of the
branch taken there, and a note says so.

The raw result is a DAG of registry ops. :class:`Builder` lowers it to a
canonical algebra (sums of terms with numeric coefficients, products of bases
with numeric exponents, powers, functions; hash-consed, so shared
subexpressions exist once): constant folding, 0/1 identities, like terms and
powers collected, a canonical order, numeric factors distributed over sums.
Printing factors out common factors of sums, writes negative exponents as
division and ``-`` as subtraction, and names repeated subexpressions
(``t1 = exp(-a)``) when a derivative is long. Every walk is iterative.

Scalar formulas need no NumPy here (``gradcalc diff`` has the one-shot start-up
target of ``gradcalc eval``): where the engine ran the formula on its float
backend (the names and the output hold Python floats), expression nodes hold
Python floats too: their values come from the ops' ``scalar`` forwards, the
VJPs take their float paths, and the algebra folds with :mod:`math`. The float
paths decide on values with Python ``if``s where the NumPy ones make a mask or
number that ``Sym.apply`` counts, so the trace counts those itself
(:data:`_STEPS`). A value only NumPy gives (an op without a float forward, a
VJP that raises on floats) has the trace run again on NumPy values, as vectors
have it: the derivative is the same either way. (The engine still loads NumPy
where :mod:`math` has no answer, as at a generic point outside a function's
domain: see :func:`_depends_on_point`.)
"""

from __future__ import annotations

import math
import sys
import threading

from gradcalc import _numpy, _tensor, ops
from gradcalc import syntax as ast
from gradcalc.errors import FormulaError, FormulaValueError, UnknownNameError
from gradcalc.limits import DEFAULT_LIMITS, Limits

try:  # what hashlib.blake2b is, without hashlib's OpenSSL bindings (2 ms of every command)
    from _blake2 import blake2b as _blake2b
except ImportError:  # pragma: no cover (a Python built without it)
    from hashlib import blake2b as _blake2b

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

np = _numpy.bind(globals())

# ---------------------------------------------------------------- ops the backend handles

_IDENTITY = frozenset({"to", "clone"})
"""Ops whose output is their operand (a dtype change or a copy)."""
_SAME_SHAPE = frozenset({"view", "expand", "squeeze", "unsqueeze", "t", "transpose", "permute"})
"""Shape ops: the identity when they keep the shape (a 0-d view), else not elementwise."""
_OPERATORS = frozenset(
    {"add", "sub", "mul", "div", "neg", "pow", "pow_tensor", "rpow", "rsub", "reciprocal"}
)
_CALLS = {
    "remainder": "remainder",
    "clamp": "clamp",
    "softplus": "softplus",
    "maximum": "maximum",
    "minimum": "minimum",
    "where": "where",
    "round": "round",
}
"""Elementwise ops with consts or two operands, by the built-in that spells them."""


def _public_name(op: ops.Op) -> str | None:
    """The formula built-in an op is, when it is a public one-operand function."""
    entry = ops.API.get(op.name)
    if entry is not None and entry.op is op and entry.builtin:
        return entry.name
    return None


def is_elementwise(op: ops.Op) -> bool:
    """Whether the symbolic backend differentiates ``op`` (an elementwise or scalar op)."""
    known = _ELEMENTWISE.get(op)
    if known is None:
        known = _ELEMENTWISE[op] = _is_elementwise(op)
    return known


_ELEMENTWISE: dict[ops.Op, bool] = {}


def _is_elementwise(op: ops.Op) -> bool:
    if op.vjps is None:
        return False
    return (
        op.name in _OPERATORS
        or op.name in _CALLS
        or op.name in _IDENTITY
        or _public_name(op) is not None
        or (op.ufunc is not None and op.arity == "1")
    )


def _not_elementwise(op: ops.Op) -> FormulaError:
    return FormulaValueError(
        f"diff: {op.name}() is not elementwise; derivatives as formulas cover elementwise "
        "formulas for now (a vector with a scalar needs a sum, reductions, shapes, matrices)",
        hint="`gradcalc grad` gives its gradient at a point",
    )


# ---------------------------------------------------------------- raw expression nodes


class Sym:
    """An expression node of the raw derivative: a leaf (a name or a constant) or
    ``op(args, consts)`` of a registry op, with its value at the point (``_d``
    reads it; VJPs of kinks and masks need it)."""

    __slots__ = ("args", "consts", "name", "op", "shape", "value")
    __array_ufunc__ = None  # ndarray * Sym defers to Sym.__rmul__

    def __init__(self, op: Any, args: tuple, consts: tuple, value: Any, name: Any = None) -> None:
        self.op = op
        self.args = args
        self.consts = consts
        self.value = value
        self.name = name
        """A variable's name; for a constant, False when only its shape is known."""
        self.shape = _shape(value)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @classmethod
    def apply(cls, op: ops.Op, operands: tuple, consts: tuple) -> Sym:
        """``op(operands, consts)`` as a node (what ``call1``/``call2`` do for a Sym)."""
        if op is ops.WHERE or any(_is_numpy(o) for o in operands):
            _reads.count = getattr(_reads, "count", 0) + 1  # a mask or number made from values
        args = tuple(o if type(o) is Sym else constant(o) for o in operands)
        value = _forward_value(op, [a.value for a in args], consts)
        if op.name in _SAME_SHAPE and _shape(value) == args[0].shape:
            return args[0]
        if not is_elementwise(op):
            raise _not_elementwise(op)
        return cls(op, args, tuple(consts), value)

    def __add__(self, other: Any) -> Sym:
        return Sym.apply(ops.ADD, (self, other), ())

    def __radd__(self, other: Any) -> Sym:
        return Sym.apply(ops.ADD, (other, self), ())

    def __sub__(self, other: Any) -> Sym:
        return Sym.apply(ops.SUB, (self, other), ())

    def __rsub__(self, other: Any) -> Sym:
        return Sym.apply(ops.SUB, (other, self), ())

    def __mul__(self, other: Any) -> Sym:
        return Sym.apply(ops.MUL, (self, other), ())

    def __rmul__(self, other: Any) -> Sym:
        return Sym.apply(ops.MUL, (other, self), ())

    def __truediv__(self, other: Any) -> Sym:
        return Sym.apply(ops.DIV, (self, other), ())

    def __rtruediv__(self, other: Any) -> Sym:
        return Sym.apply(ops.DIV, (other, self), ())

    def __neg__(self) -> Sym:
        return Sym.apply(ops.NEG, (self,), ())

    def __pos__(self) -> Sym:
        return self

    def __pow__(self, other: Any) -> Sym:
        if type(other) is Sym:
            return Sym.apply(ops.POW_TENSOR, (self, other), ())
        return Sym.apply(ops.POW, (self,), (other,))

    def __rpow__(self, other: Any) -> Sym:
        return Sym.apply(ops.POW_TENSOR, (other, self), ())


ops.use_symbolic(Sym)
_reads = threading.local()
"""``count``: the constants the VJPs of the last trace in this thread made from the
point's values (see ``Sym.apply``): with any, the derivative holds only near the point."""


def constant(value: Any, known: bool = True) -> Sym:
    """A constant leaf (a number or an array); ``known=False``: its values were not kept.
    A Python number is a float64: a Python float in a trace on floats (see ``_trace``)."""
    if isinstance(value, bool | int | float) and not _is_numpy(value):
        value = float(value) if getattr(_reads, "floats", False) else np.float64(value)
    return Sym(None, (), (), value, None if known else False)


def variable(name: str, value: Any) -> Sym:
    return Sym(None, (), (), value, name)


_PYTHON = frozenset((float, int, bool))
"""Values that need no NumPy: the float backend's floats and bools, Python ints."""


def _is_numpy(value: Any) -> bool:
    """Whether ``value`` is a NumPy array or scalar (asked without loading NumPy)."""
    return _numpy.is_loaded() and isinstance(value, np.ndarray | np.generic)


def _is_array(value: Any) -> bool:
    return _numpy.is_loaded() and isinstance(value, np.ndarray)


def _shape(value: Any) -> tuple:
    return () if type(value) in _PYTHON else np.shape(value)


def _forward_value(op: ops.Op, values: list, consts: tuple) -> Any:
    """``op``'s value on the operands' values: its float forward on Python numbers, as the
    engine's float backend runs it; NumPy's where that declines and on arrays."""
    if op.arity != "n" and all(type(v) in _PYTHON for v in values):
        out = _tensor.on_floats(op, (*values, *consts))
        if out is not None:
            return out
        values = [v if type(v) is int else _tensor._to_numpy(v) for v in values]  # as the
        with np.errstate(all="ignore"):  # engine reads them then; NumPy may load just now
            return _numpy_forward(op, values, consts)
    return _numpy_forward(op, values, consts)  # (under _trace's errstate)


def _numpy_forward(op: ops.Op, values: list, consts: tuple) -> Any:
    if len(values) == 1:
        return op.forward(values[0], *consts)
    if op.arity == "n":
        return op.forward(values, *consts)
    return op.forward(values[0], values[1], *consts)


# ---------------------------------------------------------------- canonical algebra

NUM, VAR, ADD, MUL, POW, FN = range(6)
_RANK = {NUM: 0, VAR: 1, FN: 2, POW: 3, MUL: 4, ADD: 5}


class Expr:
    """A canonical expression, interned by :class:`Builder` (equal means identical).

    NUM ``a``: a float. VAR ``a``: a name. ADD ``a``: ((term, coefficient), ...),
    ``b``: the constant. MUL ``a``: ((base, exponent), ...), ``b``: the coefficient.
    POW: ``a ** b`` with ``b`` not a number. FN: ``a`` the op, ``b`` (args, consts).
    """

    __slots__ = ("a", "b", "digest", "key", "kind", "size")

    def children(self) -> tuple[Expr, ...]:
        kind = self.kind
        if kind in (ADD, MUL):
            return tuple(entry[0] for entry in self.a)
        if kind == POW:
            return (self.a, self.b)
        if kind == FN:
            return self.b[0]
        return ()


def _is_int(x: float) -> bool:
    return math.isfinite(x) and x == int(x)


class Builder:
    """Makes canonical :class:`Expr` nodes, each structure once (hash-consing)."""

    def __init__(self) -> None:
        self.table: dict[tuple, Expr] = {}

    def _make(self, kind: int, a: Any, b: Any) -> Expr:
        key = (kind, a, (b[0], _consts_text(b[1]))) if kind == FN else (kind, a, b)
        found = self.table.get(key)
        if found is not None:
            return found
        e = Expr()
        e.kind, e.a, e.b = kind, a, b
        kids = e.children()
        h = _blake2b(digest_size=8)
        h.update(repr((kind, a if kind in (NUM, VAR) else None)).encode())
        if kind in (ADD, MUL):
            h.update(repr((b, [x for _, x in a])).encode())
        if kind == FN:
            h.update(repr((a.name, _consts_text(b[1]))).encode())
        for kid in kids:
            h.update(kid.digest)
        e.digest = h.digest()
        e.size = 1 + sum(k.size for k in kids)
        e.key = (_RANK[kind], _sort_text(e), e.digest)
        self.table[key] = e
        return e

    # -- atoms

    def num(self, c: Any) -> Expr:
        c = float(c)
        return self._make(NUM, c + 0.0, None)  # -0.0 is 0

    def var(self, name: str) -> Expr:
        return self._make(VAR, name, None)

    # -- sums and products

    def add(self, *items: Expr) -> Expr:
        const = 0.0
        terms: dict[Expr, float] = {}
        for x in items:
            if x.kind == NUM:
                const += x.a
            elif x.kind == ADD:
                const += x.b
                for term, c in x.a:
                    terms[term] = terms.get(term, 0.0) + c
            else:
                term, c = self._split(x)
                terms[term] = terms.get(term, 0.0) + c
        const += self._pythagoras(terms)
        entries = tuple(sorted(((t, c) for t, c in terms.items() if c != 0), key=_entry_key))
        if not entries:
            return self.num(const)
        if len(entries) == 1 and const == 0:
            term, c = entries[0]
            return term if c == 1 else self.mul(self.num(c), term)
        return self._make(ADD, entries, const + 0.0)

    def _pythagoras(self, terms: dict[Expr, float]) -> float:
        """c*sin(x)**2 + c*cos(x)**2 is c; c*cos(x)**2 - c*sin(x)**2 is c*cos(2*x).
        Changes ``terms``; returns what goes to the constant."""
        const = 0.0
        for term, c in list(terms.items()):
            x = _trig_square(term, ops.SIN)
            if x is None or not c or term not in terms:
                continue
            cosine = self._make(MUL, ((self.fn(ops.COS, (x,)), 2.0),), 1.0)
            other = terms.get(cosine)
            if other == c:
                del terms[term], terms[cosine]
                const += c
            elif other == -c:
                del terms[term], terms[cosine]
                double = self.fn(ops.COS, (self.mul(self.num(2), x),))
                terms[double] = terms.get(double, 0.0) + other
        return const

    def _split(self, x: Expr) -> tuple[Expr, float]:
        """A term as (the term without its coefficient, the coefficient)."""
        if x.kind == MUL and x.b != 1:
            rest = x.a
            if len(rest) == 1 and rest[0][1] == 1:
                return rest[0][0], x.b
            return self._make(MUL, rest, 1.0), x.b
        return x, 1.0

    def mul(self, *items: Expr) -> Expr:
        coef = 1.0
        bases: dict[Expr, float] = {}
        for x in items:
            if x.kind == NUM:
                coef *= x.a
            elif x.kind == MUL:
                coef *= x.b
                for base, p in x.a:
                    bases[base] = bases.get(base, 0.0) + p
            else:
                bases[x] = bases.get(x, 0.0) + 1.0
        if coef == 0 or not bases:
            return self.num(coef)
        for base, p in list(bases.items()):  # sin(x)*cos(x) is sin(2*x)/2
            if base.kind == FN and base.a is ops.SIN and p == 1:
                cosine = self.fn(ops.COS, base.b[0])
                if bases.get(cosine) == 1:
                    del bases[base], bases[cosine]
                    double = self.fn(ops.SIN, (self.mul(self.num(2), base.b[0][0]),))
                    bases[double] = bases.get(double, 0.0) + 1.0
                    coef /= 2
        exps = [
            (base, p)
            for base, p in bases.items()
            if base.kind == FN and base.a is ops.EXP and p != 0 and _is_int(p)
        ]
        if len(exps) > 1 or (exps and exps[0][1] != 1):  # exp(x)**2*exp(y) is exp(2*x + y)
            for base, _ in exps:
                del bases[base]
            power = self.fn(
                ops.EXP, (self.add(*(self.mul(self.num(p), x.b[0][0]) for x, p in exps)),)
            )
            if power.kind == NUM:
                coef *= power.a
            else:
                bases[power] = bases.get(power, 0.0) + 1.0
        for base, p in list(bases.items()):  # x*sign(x) is abs(x), 0 at 0 too
            if base.kind == FN and base.a is ops.SIGN and p == 1 and bases.get(base.b[0][0]) == 1:
                x = base.b[0][0]
                del bases[base], bases[x]
                absolute = self.fn(ops.ABS, (x,))
                bases[absolute] = bases.get(absolute, 0.0) + 1.0
        entries = tuple(sorted(((b, p) for b, p in bases.items() if p != 0), key=_entry_key))
        if not entries:
            return self.num(coef)
        if len(entries) == 1 and entries[0][1] == 1:
            base = entries[0][0]
            if coef == 1:
                return base
            if base.kind == ADD:  # 2*(x + 1) is 2*x + 2, as SymPy has it
                return self.add(
                    self.num(base.b * coef),
                    *(self.mul(self.num(c * coef), t) for t, c in base.a),
                )
        return self._make(MUL, entries, coef + 0.0)

    def pow(self, base: Expr, exponent: Expr) -> Expr:
        if exponent.kind != NUM:
            if base.kind == NUM and base.a == 1:
                return base
            return self._make(POW, base, exponent)
        p = exponent.a
        if p == 0:
            return self.num(1)
        if p == 1:
            return base
        if base.kind == NUM:
            return self.num(_power(base.a, p))
        if base.kind == MUL and (
            _is_int(p) or (base.b >= 0 and all(_is_int(q * p) for _, q in base.a))
        ):
            coef = _power(base.b, p)
            return self.mul(
                self.num(coef), *(self._make(MUL, ((b, q * p),), 1.0) for b, q in base.a)
            )
        if base.kind == POW and _is_int(p):
            return self._make(POW, base.a, self.mul(base.b, exponent))
        return self._make(MUL, ((base, p),), 1.0)

    def fn(self, op: ops.Op, args: tuple[Expr, ...], consts: tuple = ()) -> Expr:
        if all(a.kind == NUM for a in args):
            value = _fold(op, [a.a for a in args], consts)
            if _is_int(value):
                return self.num(value)
        if op.name == "log" and args[0].kind == FN and args[0].a.name == "exp":
            return args[0].b[0][0]
        return self._make(FN, op, (tuple(args), tuple(consts)))


def _power(x: float, p: float) -> float:
    """``x ** p`` as NumPy's float64 has it (C's pow): :func:`math.pow`, which raises
    where C answers inf or nan (0 ** -1, overflow, (-8) ** (1/3)); NumPy then."""
    try:
        return math.pow(x, p)
    except (ArithmeticError, ValueError):
        with np.errstate(all="ignore"):
            return float(np.float64(x) ** p)


def _fold(op: ops.Op, numbers: list[float], consts: tuple) -> float:
    """``op`` on numbers, for folding: its float forward (the one the engine ran on the
    point's floats); NumPy's where that declines."""
    if op.arity != "n":
        out = _tensor.on_floats(op, (*numbers, *consts))
        if out is not None:
            return float(out)
    with np.errstate(all="ignore"):
        value = op.forward(*(np.float64(x) for x in numbers), *consts)
    return float(np.asarray(value).reshape(-1)[0]) if np.size(value) else math.nan


def _trig_square(term: Expr, op: ops.Op) -> Expr | None:
    """``x`` when ``term`` is ``op(x)**2``."""
    if term.kind == MUL and term.b == 1 and len(term.a) == 1 and term.a[0][1] == 2:
        base = term.a[0][0]
        if base.kind == FN and base.a is op:
            return base.b[0][0]
    return None


def _entry_key(entry: tuple[Expr, float]) -> tuple:
    return entry[0].key


def _consts_text(consts: tuple) -> str:
    return repr(tuple(c.tolist() if _is_array(c) else c for c in consts))


def _sort_text(e: Expr) -> str:
    """A short text that orders like terms by name: ``a`` before ``b``, ``a**2`` near ``a``."""
    kind = e.kind
    if kind == NUM:
        return ""
    if kind == VAR:
        return e.a
    if kind == FN:
        return e.b[0][0].key[1][:24] + "(" + e.a.name if e.b[0] else e.a.name
    if kind == POW:
        return e.a.key[1][:24] + "^"
    if kind == MUL:
        return "*".join(b.key[1][:16] for b, _ in e.a[:3])[:40]
    return "+".join(t.key[1][:16] for t, _ in e.a[:3])[:40]


# ---------------------------------------------------------------- lowering the raw DAG


def _children(s: Sym) -> tuple:
    return s.args


def lower(roots: list[Sym], builder: Builder) -> list[Expr]:
    """The canonical forms of raw expressions (iterative post-order, each node once)."""
    done: dict[int, Expr] = {}
    keep: list[Sym] = []  # ids stay valid while the nodes live
    for root in roots:
        stack = [(root, False)]
        while stack:
            s, ready = stack.pop()
            if id(s) in done:
                continue
            if not ready:
                stack.append((s, True))
                stack.extend((a, False) for a in s.args if id(a) not in done)
                continue
            keep.append(s)
            done[id(s)] = _lower_one(s, [done[id(a)] for a in s.args], builder)
    return [done[id(r)] for r in roots]


def _lower_one(s: Sym, args: list[Expr], b: Builder) -> Expr:
    op = s.op
    if op is None:
        if s.name:
            return b.var(s.name)
        return _lower_constant(s, b)
    name = op.name
    c = s.consts
    if name == "add":
        return b.add(args[0], args[1])
    if name == "sub":
        return b.add(args[0], b.mul(b.num(-1), args[1]))
    if name == "mul":
        return b.mul(args[0], args[1])
    if name == "div":
        return b.mul(args[0], b.pow(args[1], b.num(-1)))
    if name == "neg":
        return b.mul(b.num(-1), args[0])
    if name == "rsub":
        return b.add(b.num(c[0]), b.mul(b.num(-1), args[0]))
    if name == "reciprocal":
        return b.pow(args[0], b.num(-1))
    if name == "sqrt":
        return b.pow(args[0], b.num(0.5))
    if name == "pow":
        return b.pow(args[0], b.num(c[0]))
    if name == "pow_tensor":
        return b.pow(args[0], args[1])
    if name == "rpow":
        return b.pow(b.num(c[0]), args[0])
    if name in _IDENTITY:
        return args[0]
    if name == "where":
        condition = np.asarray(c[0], dtype=bool)
        if condition.all():
            return args[0]
        if not condition.any():
            return args[1]
    return b.fn(op, tuple(args), c)


def _lower_constant(s: Sym, b: Builder) -> Expr:
    value = s.value
    if type(value) in _PYTHON:  # (a float's NaN is no number either: an opaque atom)
        return b.num(value) if value == value else b.var(_number(float(value)))
    value = np.asarray(value)
    flat = value.reshape(-1)
    if flat.size and (flat == flat[0]).all() and s.name is not False:
        return b.num(flat[0])
    if s.name is False:
        raise FormulaValueError(
            "diff: a constant vector beside the variables is not supported yet "
            "(its values are not kept by the engine)",
            hint="bind it as a NAME=VALUE and leave it out of --wrt",
        )
    return b.var(_list_literal(value))  # an opaque atom, printed as itself


def _list_literal(value: np.ndarray) -> str:
    """A constant array as the language's nested list literal."""
    if value.ndim == 0:
        return _number(float(value))
    return "[" + ", ".join(_list_literal(row) for row in value) + "]"


# ---------------------------------------------------------------- printing

_ADD_PREC, _MUL_PREC, _POW_PREC, _ATOM = 1, 2, 4, 5


def _number(c: float) -> str:
    if math.isnan(c):
        return "(0/0)"
    if math.isinf(c):
        return "(1/0)" if c > 0 else "(-1/0)"
    if _is_int(c) and abs(c) < 1e16:
        return str(int(c))
    return repr(c)


def _fraction(c: float) -> tuple[int, int] | None:
    """``c`` as p/q with a small q, when that is exactly the float ``c``."""
    if not math.isfinite(c):
        return None
    p, q = _closest_fraction(c, 1000)
    return (p, q) if q > 1 and p / q == c else None


def _closest_fraction(c: float, most: int) -> tuple[int, int]:
    """``Fraction(c).limit_denominator(most)`` as (numerator, denominator), the same
    algorithm (convergents, then the closer bound; the simpler one on a tie) without
    importing :mod:`fractions`, which imports :mod:`decimal` (2 ms of every command)."""
    n0, d0 = c.as_integer_ratio()
    if d0 <= most:
        return n0, d0
    p0, q0, p1, q1 = 0, 1, 1, 0
    n, d = n0, d0
    while True:
        a = n // d
        q2 = q0 + a * q1
        if q2 > most:
            break
        p0, q0, p1, q1 = p1, q1, p0 + a * p1, q2
        n, d = d, n - a * d
    k = (most - q0) // q1
    p, q = p0 + k * p1, q0 + k * q1
    g = math.gcd(p, q)
    p, q = p // g, q // g
    # |p1/q1 - c| <= |p/q - c|, over the common denominator d0*q1*q
    if abs(p1 * d0 - n0 * q1) * q <= abs(p * d0 - n0 * q) * q1:
        return p1, q1
    return p, q


def _as_fraction(c: float) -> tuple[int, int] | None:
    """How a coefficient prints as p/q: 1/3 rather than 0.3333333333333333, x/2 rather
    than 0.5*x, but 0.3 and 0.25 as they are."""
    frac = _fraction(c)
    if frac is None or (frac[1] != 2 and len(repr(c)) <= 4):
        return None
    return frac


_NICE = [(f"log({k})", math.log(k)) for k in (2, 3, 5, 10)] + [
    *((f"{k}*pi", k * math.pi) for k in range(2, 9)),
    ("pi/2", math.pi / 2),
    ("pi", math.pi),
    ("e", math.e),
    ("sqrt(pi)", math.sqrt(math.pi)),
    ("2/sqrt(pi)", 2 / math.sqrt(math.pi)),
]
"""Numbers the registry's VJPs compute from constants (``2**x`` has ``log(2)``, erf
``2/sqrt(pi)``), printed as the language spells them."""


def _nice(c: float) -> str | None:
    for text, value in _NICE:
        if c == value:
            return text
        if c * value == 1 or 1 / value == c:
            return f"1/{text}" if "/" not in text else None
    return None


class Printer:
    """Language text of canonical expressions, with named shared subexpressions."""

    def __init__(self, names: dict[Expr, str] | None = None) -> None:
        self.names = names or {}
        self.memo: dict[Expr, tuple[str, int]] = {}

    def text(self, root: Expr) -> str:
        return self._walk(root, top=True)[0]

    def _walk(self, root: Expr, top: bool = False) -> tuple[str, int]:
        stack = [(root, False)]
        while stack:
            e, ready = stack.pop()
            if e in self.memo or (e in self.names and not (top and e is root)):
                continue
            if not ready:
                stack.append((e, True))
                stack.extend((k, False) for k in e.children())
                continue
            self.memo[e] = self._one(e)
        if root in self.names and not top:
            return self.names[root], _ATOM
        return self.memo[root]

    def _sub(self, e: Expr) -> tuple[str, int]:
        if e in self.names:
            return self.names[e], _ATOM
        return self.memo[e]

    def _wrap(self, e: Expr, prec: int) -> str:
        text, p = self._sub(e)
        return text if p >= prec else f"({text})"

    def _one(self, e: Expr) -> tuple[str, int]:
        kind = e.kind
        if kind == NUM:
            nice = _nice(abs(e.a))
            frac = _as_fraction(abs(e.a))
            text = nice or (f"{frac[0]}/{frac[1]}" if frac else _number(abs(e.a)))
            if e.a < 0:
                return "-" + (text if "/" not in text else f"({text})"), _MUL_PREC
            return text, _ATOM if ("/" not in text and "." not in text) else _MUL_PREC
        if kind == VAR:
            return e.a, _ATOM
        if kind == FN:
            return self._call(e), _ATOM
        if kind == POW:
            return f"{self._wrap(e.a, _ATOM)}**{self._wrap(e.b, _ATOM)}", _POW_PREC
        if kind == MUL:
            return self._product(e)
        return self._sum(e)

    def _call(self, e: Expr) -> str:
        op = e.a
        args, consts = e.b
        texts = [self._sub(a)[0] for a in args]
        name = op.name
        if name == "remainder":
            return f"remainder({texts[0]}, {texts[1]})"
        if name == "clamp":
            lo, hi = consts
            parts = [texts[0]]
            parts += [f"min={_number(lo)}"] if lo is not None else []
            parts += [f"max={_number(hi)}"] if hi is not None else []
            return f"clamp({', '.join(parts)})"
        if name == "softplus":
            beta, threshold = consts
            return f"softplus({texts[0]}, beta={_number(beta)}, threshold={_number(threshold)})"
        if name == "where":
            cond = f"{np.asarray(consts[0], dtype=bool).astype(int).tolist()} > 0"
            return f"where({cond}, {texts[0]}, {texts[1]})"
        public = _public_name(op) or _CALLS.get(name)
        if public is None:
            raise FormulaValueError(f"diff: {name}() has no spelling in the formula language")
        return f"{public}({', '.join(texts)})"

    def _product(self, e: Expr) -> tuple[str, int]:
        coef = e.b
        top: list[str] = []
        bottom: list[tuple[str, int]] = []
        frac = _as_fraction(abs(coef))
        nice = _nice(abs(coef))
        if nice is not None:
            if nice.startswith("1/"):
                bottom.append((nice[2:], _ATOM if "(" in nice else _MUL_PREC))
            else:
                top.append(nice)
        elif frac is not None:
            if frac[0] != 1:
                top.append(str(frac[0]))
            bottom.append((str(frac[1]), _ATOM))
        elif abs(coef) != 1:
            top.append(_number(abs(coef)))
        for base, p in e.a:
            if p < 0:
                bottom.append(self._power(base, -p))
            else:
                text, prec = self._power(base, p)
                top.append(text if prec >= _MUL_PREC else f"({text})")
        text = "*".join(top) if top else "1"
        if bottom:
            if len(bottom) == 1:
                den, prec = bottom[0]
                den = den if prec > _MUL_PREC else f"({den})"
            else:
                parts = [t if p >= _MUL_PREC else f"({t})" for t, p in bottom]
                den = "(" + "*".join(parts) + ")"
            text = f"{text}/{den}"
        if coef < 0:
            text = "-" + text
        return text, _MUL_PREC

    def _power(self, base: Expr, p: float) -> tuple[str, int]:
        if p == 1:
            return self._sub(base)
        if p == 0.5:
            return f"sqrt({self._sub(base)[0]})", _ATOM
        frac = _fraction(p)
        exponent = f"({frac[0]}/{frac[1]})" if frac is not None else _number(p)
        return f"{self._wrap(base, _ATOM)}**{exponent}", _POW_PREC

    def _sum(self, e: Expr) -> tuple[str, int]:
        parts: list[tuple[float, Expr | None]] = [(c, t) for t, c in e.a]
        if e.b != 0:
            parts.append((e.b, None))
        # a positive term first: a - b rather than -b + a
        first = next((i for i, (c, _) in enumerate(parts) if c > 0), 0)
        parts.insert(0, parts.pop(first))
        out = []
        for i, (c, term) in enumerate(parts):
            if term is None:
                text = self._one(_Constant(abs(c)))[0]
            else:
                text, prec = self._scaled(abs(c), term)
                if prec < _MUL_PREC:
                    text = f"({text})"
            sign = "-" if c < 0 else "+"
            out.append(text if i == 0 and c >= 0 else f"-{text}" if i == 0 else f" {sign} {text}")
        return "".join(out), _ADD_PREC

    def _scaled(self, c: float, term: Expr) -> tuple[str, int]:
        if c == 1:
            return self._sub(term)
        if term.kind == MUL and term not in self.names:
            return self._product(_Scaled(term, c))
        return self._product(_Scaled(_Single(term), c))


class _Constant:
    """A number to print (a sum's constant term), never interned."""

    __slots__ = ("a", "kind")

    def __init__(self, c: float) -> None:
        self.kind = NUM
        self.a = c


class _Single:
    """A base as a one-factor product (for printing ``c*term``)."""

    __slots__ = ("a", "b")

    def __init__(self, term: Expr) -> None:
        self.a = ((term, 1.0),)
        self.b = 1.0


class _Scaled:
    """A product with another coefficient (for printing, never interned)."""

    __slots__ = ("a", "b")

    def __init__(self, term: Any, c: float) -> None:
        self.a = term.a
        self.b = term.b * c


def factor_common(roots: list[Expr], b: Builder) -> list[Expr]:
    """Sums whose terms share a factor written as a product: ``t - a*t`` is ``(1 - a)*t``
    (iterative, each node once)."""
    done: dict[Expr, Expr] = {}
    for root in roots:
        stack = [(root, False)]
        while stack:
            e, ready = stack.pop()
            if e in done:
                continue
            if not ready:
                stack.append((e, True))
                stack.extend((k, False) for k in e.children() if k not in done)
                continue
            done[e] = _rebuild(e, [done[k] for k in e.children()], b)
    return [done[r] for r in roots]


def _rebuild(e: Expr, kids: list[Expr], b: Builder) -> Expr:
    kind = e.kind
    if kind == ADD:
        terms = [b.mul(b.num(c), k) for k, (_, c) in zip(kids, e.a, strict=True)]
        if e.b != 0:
            terms.append(b.num(e.b))
        candidates = [_factored(terms, b)]
        together = _together(terms, b)
        if together is not None:
            candidates.append(together)
        return min(candidates, key=lambda x: x.size)  # the first of the shortest
    if kind == MUL:
        if all(k is t for k, (t, _) in zip(kids, e.a, strict=True)):
            return e
        return b.mul(b.num(e.b), *(b.pow(k, b.num(p)) for k, (_, p) in zip(kids, e.a, strict=True)))
    if kind == POW:
        return b.pow(kids[0], kids[1])
    if kind == FN:
        return b.fn(e.a, tuple(kids), e.b[1])
    return e


_EXPAND_TERMS = 64
"""Products of sums are multiplied out only up to this many terms."""


def _expand(x: Expr, b: Builder) -> Expr | None:
    """A product with sums among its factors (whole powers up to 4) multiplied out,
    or None when that would pass :data:`_EXPAND_TERMS` terms."""
    if x.kind != MUL:
        return x
    partial = [b.num(x.b)]
    for base, p in x.a:
        if base.kind == ADD and _is_int(p) and 0 < p <= 4:
            items = [t if c == 1 else b.mul(b.num(c), t) for t, c in base.a]
            items += [b.num(base.b)] if base.b else []
            for _ in range(int(p)):
                if len(partial) * len(items) > _EXPAND_TERMS:
                    return None
                partial = [b.mul(u, v) for u in partial for v in items]
        else:
            factor = b.pow(base, b.num(p))
            partial = [b.mul(u, factor) for u in partial]
    return b.add(*partial)


def _together(terms: list[Expr], b: Builder) -> Expr | None:
    """A sum with denominators over one denominator, the numerator multiplied out:
    ``(1 - a)/(a + 1) + 1`` is ``2/(a + 1)``. None when no term has a denominator."""
    denominators: dict[Expr, float] = {}
    for term in terms:
        for base, p in _factors(term).items():
            if p < 0:
                denominators[base] = min(denominators.get(base, 0.0), p)
    if not denominators:
        return None
    inverse = b.mul(*(b.pow(base, b.num(p)) for base, p in denominators.items()))
    numerators = []
    for term in terms:
        expanded = _expand(b.mul(term, b.pow(inverse, b.num(-1))), b)
        if expanded is None:
            return None
        numerators.append(expanded)
    numerator = b.add(*numerators)
    if numerator.kind == ADD and numerator.b == 0:
        numerator = _factored([b.mul(b.num(c), t) for t, c in numerator.a], b)
    return b.mul(numerator, inverse)


def _factors(e: Expr) -> dict[Expr, float]:
    if e.kind == MUL:
        return dict(e.a)
    if e.kind == NUM:
        return {}
    return {e: 1.0}


def _factored(terms: list[Expr], b: Builder) -> Expr:
    maps = [_factors(t) for t in terms]
    common: dict[Expr, float] = {}
    for base in maps[0]:
        exps = [m.get(base) for m in maps]
        if any(q is None for q in exps):
            continue
        if all(q > 0 for q in exps):
            common[base] = min(exps)
        elif all(q < 0 for q in exps):
            common[base] = max(exps)
        else:
            continue
        if not all(_is_int(q - common[base]) or _fraction(q - common[base]) for q in exps):
            del common[base]  # a**(-2/3) over a**(-1/2) would leave a**-0.16666666666666674
    total = b.add(*terms)
    if not common or len(terms) < 2:
        return total
    factor = b.mul(*(b.pow(base, b.num(p)) for base, p in common.items()))
    inverse = b.pow(factor, b.num(-1))
    rest = b.add(*(b.mul(t, inverse) for t in terms))
    if rest.kind != ADD:
        return total
    coef = factor.b if factor.kind == MUL else 1.0
    numbers = [c for _, c in rest.a] + ([rest.b] if rest.b else [])
    if all(_is_int(c) for c in numbers):  # 2*a*(2*a**2 - 2) is 4*a*(a**2 - 1)
        g = math.gcd(*(int(c) for c in numbers))
        if g > 1:
            rest = b.add(*(b.mul(b.num(c / g), t) for t, c in rest.a), b.num(rest.b / g))
            coef *= g
    entries = sorted([*_factors(factor).items(), (rest, 1.0)], key=_entry_key)
    return b._make(MUL, tuple(entries), coef)


def _name_shared(roots: list[Expr], taken: set[str]) -> dict[Expr, str]:
    """Names (t1, t2, ...) for subexpressions used more than once in long derivatives."""
    refs: dict[Expr, int] = {}
    order: list[Expr] = []
    seen: set[Expr] = set()
    for root in roots:
        refs[root] = refs.get(root, 0) + 1
        stack = [(root, False)]
        while stack:
            e, ready = stack.pop()
            if ready:
                order.append(e)
                continue
            if e in seen:
                continue
            seen.add(e)
            stack.append((e, True))
            for k in e.children():
                refs[k] = refs.get(k, 0) + 1
                stack.append((k, False))
    effective: dict[Expr, int] = {}
    named: dict[Expr, str] = {}
    counter = 0
    for e in order:  # children before parents
        size = 1 + sum(1 if k in named else effective[k] for k in e.children())
        effective[e] = size
        if refs.get(e, 0) >= 2 and size >= _SHARED_SIZE and e.kind in (ADD, MUL, POW, FN):
            counter += 1
            while f"t{counter}" in taken:
                counter += 1
            named[e] = f"t{counter}"
    if max((effective[r] for r in roots), default=0) < _LONG:
        return {}
    return named


_INLINE_NODES = 20_000
"""Derivatives are also written out in full (``Derivatives.inline``) up to this many nodes."""
_SHARED_SIZE = 4
"""A repeated subexpression of at least this many nodes gets a name..."""
_LONG = 24
"""...when some derivative has at least this many nodes once named parts count as one."""


# ---------------------------------------------------------------- the trace


class Derivatives:
    """What ``gradcalc diff`` prints: each name's derivative as a formula.

    (A plain class: :mod:`dataclasses` imports :mod:`inspect`, 6 ms of every command.)
    """

    _FIELDS = ("derivatives", "intermediates", "programs", "notes", "point", "inline")

    def __init__(
        self,
        derivatives: dict[str, str],
        intermediates: list[tuple[str, str]] | None = None,
        programs: dict[str, str] | None = None,
        notes: list[str] | None = None,
        point: dict[str, Any] | None = None,
        inline: dict[str, str] | None = None,
    ) -> None:
        self.derivatives = derivatives
        self.intermediates = [] if intermediates is None else intermediates
        self.programs = {} if programs is None else programs
        """Each derivative as a program that runs alone (its intermediates first)."""
        self.notes = [] if notes is None else notes
        self.point = point
        self.inline = {} if inline is None else inline
        """Each derivative written out in full (no named intermediates); empty when that
        would pass ``_INLINE_NODES`` nodes."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"Derivatives({fields})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not Derivatives:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def lines(self) -> list[str]:
        """The text ``gradcalc diff`` prints: intermediates, ``d/da = ...``, notes."""
        out = [f"{name} = {text}" for name, text in self.intermediates]
        out += [f"d/d{name} = {text}" for name, text in self.derivatives.items()]
        out += [f"note: {note}" for note in self.notes]
        return out


def _has_branches(program: ast.Program) -> bool:
    """Whether the program decides anything on values (if, while, comparisons, and/or)."""
    stack: list[Any] = [program]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If | ast.While | ast.IfExp | ast.Compare | ast.BoolOp):
            return True
        if isinstance(node, ast.UnaryOp) and node.op == "not":
            return True
        if isinstance(node, ast.Node):
            stack.extend(getattr(node, name) for name in type(node).__match_args__)
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return False


_GENERIC = (0.7390851332151607, -1.3247179572447460, 1.6180339887498949)


def _generic_value(k: int, i: int, like: Any = None) -> Any:
    base = _GENERIC[k] + 0.1 * i if k != 2 else (_GENERIC[2] if i % 2 == 0 else -0.5772156649)
    if like is None or not _shape(like):
        return base
    return (
        np.full(np.shape(like), base) + 0.01 * np.arange(np.size(like)).reshape(np.shape(like))
    ).tolist()


def _name_at(error: FormulaError) -> str | None:
    """The unknown variable an UnknownNameError names (``'b' is not defined``; its caret
    may point at the enclosing expression). A function's name is not one."""
    import re

    found = re.match(r"'([A-Za-z_]\w*)' is not defined", error.message)
    return found.group(1) if found else None


def _fresh_run(
    code: list, source: str, point: dict[str, Any], dtype: str, limits: Limits
) -> tuple[Any, dict]:
    """Run the program with ``point`` bound as differentiable leaves; names it reads but
    nobody bound are found on the way (each bound to a generic value). ``code`` holds
    the program, compiled at its first run for all the others (``[program]`` at first)."""
    from gradcalc.interpreter import Compiled, Interpreter

    point = dict(point)
    for _ in range(256):
        interp = Interpreter(dtype=dtype, limits=limits)
        for name, value in point.items():
            interp.bind(name, value)
        try:
            if type(code[0]) is not Compiled:
                code[0] = interp.compile(code[0])
            outcome = interp.execute(code[0])
        except UnknownNameError as exc:
            name = _name_at(exc)
            if name is None or name in point:
                if exc.source is None:
                    exc.source = source
                raise
            point[name] = _generic_value(0, len(point))
            continue
        except FormulaError as exc:
            if exc.source is None:
                exc.source = source
            raise
        return outcome, {name: interp.env[name] for name in point}
    raise FormulaValueError("diff: too many free names (256 at most)")


def _free_names(program: ast.Program) -> list[str]:
    """Names the program reads and never assigns (nor defines, nor takes as a parameter)
    and that are no built-in, in the order they first appear."""
    from gradcalc import builtins

    reads: dict[str, None] = {}
    assigned: set[str] = set()
    stack: list[Any] = [program]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            reads.setdefault(node.id)
        elif isinstance(node, ast.Assign | ast.AugAssign) and isinstance(node.target, ast.Name):
            assigned.add(node.target.id)
        elif isinstance(node, ast.For):
            assigned.add(node.target)
        elif isinstance(node, ast.FunctionDef | ast.Param):
            assigned.add(node.name)
        if isinstance(node, ast.Node):
            stack.extend(reversed([getattr(node, f) for f in type(node).__match_args__]))
        elif isinstance(node, list | tuple):
            stack.extend(reversed(node))
    known = assigned | set(builtins.FUNCTIONS) | set(builtins.CONSTANTS)
    return [name for name in reads if name not in known]


def _forward(
    output: Any, leaves: dict[str, Any], saved_fields: list[tuple], floats: bool
) -> dict[str, Any]:
    """Expression nodes for the recorded graph of ``output``; saved operands and outputs of
    its nodes replaced by them (so the engine's backward runs the VJPs on them). With
    ``floats``, leaves are their Python floats, and :data:`_STEPS` are counted."""
    by_id = {id(t): name for name, t in leaves.items()}
    syms: dict[Any, Sym] = {}
    reaching: set[Any] = set()  # nodes with a path to a name: backward runs their VJPs
    targets: dict[str, Any] = {}
    root = output.grad_fn
    stack = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if node in syms:
            continue
        parents = node.parents if node.kind >= 0 else ()
        if node.kind == 0:
            raise _not_elementwise(node.op)
        if not ready:
            stack.append((node, True))
            stack.extend((p, False) for p in parents if p is not None and p not in syms)
            continue
        if node.kind < 0:
            syms[node] = _leaf(node.variable, by_id, floats)
            if syms[node].name:
                targets[syms[node].name] = node
                reaching.add(node)
            continue
        if floats and node.op.scalar is None:
            raise _NeedsNumPy  # a value NumPy computed: a VJP may read it as NumPy's
        saved = node.saved
        saved_fields.append((node, node.s0, node.s1, node.ans))
        args = []
        for parent, value in zip(parents, saved, strict=True):
            if parent is not None:
                args.append(syms[parent])
            else:
                args.append(constant(value, known=not _is_stand_in(value)))
        sym = Sym.apply(node.op, tuple(args), node.consts)
        syms[node] = sym
        if any(p in reaching for p in parents):
            reaching.add(node)
            if floats and _steps_read(node.op, parents, args):
                _reads.count += 1
        if node.kind == 1:
            node.s0 = args[0]
        else:
            node.s0, node.s1 = args
        if node.ans is not None:
            node.ans = sym
    return targets


def _leaf(tensor: Any, by_id: dict[int, str], floats: bool) -> Sym:
    """A leaf of the graph: a variable when it is one of the names, else a constant."""
    name = by_id.get(id(tensor))
    raw = tensor._raw
    if name is None:
        return constant(raw if floats and type(raw) in _PYTHON else np.asarray(tensor._data))
    return variable(name, raw if floats else tensor._data)


class _NeedsNumPy(Exception):
    """A trace on floats met a value only NumPy gives (see ``_trace``)."""


_STEPS = {
    "relu": (0,),
    "clamp": (0,),
    "softplus": (0,),
    "maximum": (0, 1),
    "minimum": (0, 1),
    "remainder": (1,),
}
"""Ops whose VJPs, on floats, decide on the point's values with Python ``if``s (or make
a number of them: %'s quotient), where on NumPy values they make a mask or number that
``Sym.apply`` counts; by the operands whose VJP does. ``pow_tensor``'s exponent VJP
does at a zero base only (:func:`_steps_read`). tests/test_symbolic.py runs every
elementwise op both ways, so an op this misses fails there."""


def _steps_read(op: ops.Op, parents: tuple, args: list[Sym]) -> bool:
    """Whether ``op``'s VJPs, run on floats, read the point where NumPy's count it."""
    if op is ops.POW_TENSOR:  # 0**y: the NumPy VJP masks log(0) out, the float one picks 0
        return parents[1] is not None and args[0].value == 0 and args[1].value >= 0
    return any(parents[i] is not None for i in _STEPS.get(op.name, ()))


def _is_stand_in(value: Any) -> bool:
    return (
        _is_array(value)
        and type(value) is np.ndarray
        and value.ndim > 0
        and not any(value.strides)
        and _tensor._stand_in(value) is value
    )


def _trace(run: Callable[[], tuple[Any, dict[str, Any]]]) -> tuple[dict[str, Sym | None], dict]:
    """Each free name's derivative as a raw expression (None: the output does not use it),
    and the point: ``run()`` executes the formula once and returns (outcome, leaves).

    On Python floats where the engine ran the formula on its float backend (the names
    and the output hold floats), so a scalar formula needs no NumPy; on NumPy values
    otherwise, and when the floats meet a value only NumPy gives."""
    outcome, leaves = run()
    output = _output(outcome)
    _reads.graph = _graph_fingerprint(output, leaves)
    if type(output._raw) in _tensor.PYTHON_VALUES and all(
        type(t._raw) is float for t in leaves.values()
    ):
        try:
            return _backward(output, leaves, floats=True)
        except (_NeedsNumPy, ArithmeticError):  # 1/0 in a VJP on floats: inf on NumPy's
            pass
    return _backward(output, leaves, floats=False)


def _backward(
    output: Any, leaves: dict[str, Any], floats: bool
) -> tuple[dict[str, Sym | None], dict]:
    """:func:`_trace` on Python floats or on NumPy values (``floats``)."""
    values = {name: leaf._raw if floats else leaf._data for name, leaf in leaves.items()}
    _reads.count = 0
    result: dict[str, Sym | None] = dict.fromkeys(leaves)
    if not output.requires_grad:
        return result, values
    _reads.floats = floats
    ones = 1.0 if floats else np.ones_like(np.asarray(output._data))
    saved: list[tuple] = []
    try:
        if output.grad_fn is None:  # the output is one of the names
            for name, leaf in leaves.items():
                if leaf is output:
                    result[name] = constant(ones)
            return result, values
        with _numpy.errstate():
            targets = _forward(output, leaves, saved, floats)
            found = _tensor.run_backward(
                [output.grad_fn],
                [_tensor._wrap(constant(ones))],
                retain_graph=True,
                create_graph=False,
                targets=list(targets.values()),
                accumulate=False,
            )
    finally:  # nodes an earlier REPL entry recorded may be backpropagated again later
        _reads.floats = False
        for node, s0, s1, ans in saved:
            node.s0, node.s1, node.ans = s0, s1, ans
    for name, node in targets.items():
        g = found.get(node)
        result[name] = None if g is None else g._raw
    return result, values


def _canonical(raw: dict[str, Sym | None], wrt: list[str]) -> tuple[Builder, dict[str, Expr]]:
    builder = Builder()
    names = [n for n in wrt if raw.get(n) is not None]
    lowered = lower([raw[n] for n in names], builder)
    exprs = {n: builder.num(0) for n in wrt}
    exprs.update(zip(names, lowered, strict=True))
    return builder, exprs


def differentiate(
    formula: str,
    point: dict[str, Any] | None = None,
    wrt: list[str] | None = None,
    dtype: str = "float64",
    limits: Limits | None = None,
) -> Derivatives:
    """The derivatives of ``formula`` as formulas, at ``point`` (needed only where the
    derivative depends on it) with respect to ``wrt`` (default: every free name)."""
    from gradcalc.parser import parse

    limits = limits or DEFAULT_LIMITS
    program = parse(formula, limits=limits)
    given = dict(point or {})
    first = dict(given)
    for name in _free_names(program):  # found at once: one run rather than one per name
        if name not in first:
            first[name] = _generic_value(0, len(first))

    code: list = [program]

    def at(values: dict[str, Any]) -> Callable[[], tuple[Any, dict]]:
        return lambda: _fresh_run(code, formula, values, dtype, limits)

    return _derivatives(program, at(first), at, wrt, set(given))


def differentiate_in(interp: Any, source: str, wrt: list[str] | None = None) -> Derivatives:
    """:func:`differentiate` against a session's names (the REPL's ``:diff``): with respect
    to its variables (leaf tensors that require grad), at their values. Binds nothing."""
    from gradcalc.interpreter import Interpreter
    from gradcalc.parser import parse

    program = parse(source, limits=interp.limits)
    env = interp.env
    leaves = {
        n: t
        for n, t in env.items()
        if isinstance(t, _tensor.Tensor) and t.requires_grad and t.grad_fn is None
    }

    def here() -> tuple[Any, dict]:
        saved = dict(env)
        try:
            return interp.execute(source), leaves
        finally:
            env.clear()
            env.update(saved)

    def at(values: dict[str, Any]) -> Callable[[], tuple[Any, dict]]:
        def run() -> tuple[Any, dict]:
            scratch = Interpreter(dtype=interp.dtype, limits=interp.limits)
            scratch.env.update(env)
            for name, value in values.items():
                scratch.bind(name, value)
            return scratch.execute(source), {n: scratch.env[n] for n in values}

        return run

    recorded = sorted(
        name
        for name in _names_read(program)
        if isinstance(env.get(name), _tensor.Tensor) and env[name].grad_fn is not None
    )
    return _derivatives(program, here, at, wrt, set(leaves), recorded)


def _names_read(program: ast.Program) -> set[str]:
    names: set[str] = set()
    stack: list[Any] = [program]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            names.add(node.id)
        if isinstance(node, ast.Node):
            stack.extend(getattr(node, name) for name in type(node).__match_args__)
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return names


def _derivatives(
    program: ast.Program,
    run: Callable[[], tuple[Any, dict]],
    at: Callable[[dict[str, Any]], Callable[[], tuple[Any, dict]]],
    wrt: list[str] | None,
    given: set[str],
    recorded: list[str] | None = None,
) -> Derivatives:
    """``recorded``: session tensors the formula reads that earlier entries computed (their
    graphs cannot be re-run elsewhere, so no generic point is tried through them)."""
    branches = _has_branches(program)
    raw, values = _trace(run)
    reads = _reads.count
    names = list(raw)
    if wrt:
        for name in wrt:
            if name not in raw:
                raise UnknownNameError(
                    f"diff: '{name}' is not a variable of the formula",
                    hint=f"its variables: {', '.join(names) or 'none'}",
                )
        names = list(dict.fromkeys(wrt))
    builder, exprs = _canonical(raw, names)
    notes = []
    if recorded:
        depends = branches or reads > 0
        notes.append(
            f"{', '.join(recorded)} came from earlier entries: the derivative through "
            f"{'them' if len(recorded) > 1 else 'it'} is the one recorded there, at the "
            "session's values."
        )
    else:
        depends = branches or reads > 0 or _depends_on_point(at, values)
    missing = [n for n in raw if n not in given]
    if depends and missing:
        why = (
            "if/while/comparisons on values"
            if branches
            else "values of the point enter it: kinks and steps of relu, maximum, clamp, %, "
            "or const()/detach()"
        )
        raise FormulaValueError(
            f"diff: this formula's derivative depends on where it is taken ({why})",
            hint=("give a point, e.g. " if not given else "give a value to every name, e.g. ")
            + " ".join(f"{n}=1" for n in missing)
            + ": the derivative is then that of the branch taken there",
        )
    if depends:
        point = ", ".join(f"{n}={_short(v)}" for n, v in values.items())
        notes.append(
            "The derivative depends on the point (branches, kinks or steps): "
            f"this is the derivative of the branch taken at {point}."
        )
    return _printed(builder, exprs, notes, values if given else None)


def _short(value: Any) -> str:
    if type(value) in _PYTHON:
        return _number(float(value))
    array = np.asarray(value)
    if array.ndim == 0:
        return _number(float(array))
    return (
        "["
        + ", ".join(_number(float(v)) for v in array.reshape(-1)[:4])
        + (", ...]" if array.size > 4 else "]")
    )


def _output(outcome: Any) -> Any:
    output = outcome.value
    if not isinstance(output, _tensor.Tensor):
        raise FormulaValueError(
            "diff: the formula produced no tensor value",
            hint="end it with an expression, such as 3*a**3 - b**2",
        )
    return output


def _depends_on_point(
    at: Callable[[dict[str, Any]], Callable[[], tuple[Any, dict]]], values: dict[str, Any]
) -> bool:
    """Whether the recorded graph at generic points differs from the last trace's (in its
    ops or its constants: a value of the point that entered the formula). VJPs that read
    values are counted by the trace itself, so comparing forward graphs is enough."""
    mine = _reads.graph
    for k in range(3):
        point = {n: _generic_value(k, i, v) for i, (n, v) in enumerate(values.items())}
        loaded = _numpy.is_loaded()
        differs = _differs(at(point), mine)
        if not loaded and _numpy.is_loaded():
            # NumPy loaded in the middle of that run (log(-1.3) is NaN on NumPy's float64):
            # the interpreter then records a**-2 as pow_tensor, where a run that starts
            # with NumPy loaded records pow, as on floats (it picks its fast path for
            # numbers as it starts), so the run again
            differs = _differs(at(point), mine)
        if differs:
            return True
    return False


def _differs(run: Callable[[], tuple[Any, dict]], mine: list) -> bool:
    try:
        outcome, leaves = run()
        return _graph_fingerprint(_output(outcome), leaves) != mine
    except FormulaError:
        return True


def _graph_fingerprint(output: Any, leaves: dict[str, Any]) -> list:
    """A recorded graph as comparable data: ops, consts, the leaves' names, the values of
    constant operands and of leaves that are not variables (each node once)."""
    by_id = {id(t): name for name, t in leaves.items()}
    root = output.grad_fn
    if root is None:
        return [by_id.get(id(output), "constant"), _dtype_name(output._raw)]
    out: list = []
    index: dict[Any, int] = {}
    stack = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if node in index:
            continue
        parents = node.parents if node.kind >= 0 else ()
        if not ready:
            stack.append((node, True))
            stack.extend((p, False) for p in parents if p is not None and p not in index)
            continue
        index[node] = len(index)
        if node.kind < 0:
            name = by_id.get(id(node.variable))
            out.append(name or _value_key(node.variable._raw))
            continue
        saved = node.saved or ()
        entry = [node.op.name, _consts_text(node.consts) if node.consts else ""]
        for parent, value in zip(parents, saved, strict=False):
            entry.append(index[parent] if parent is not None else _value_key(value))
        out.append(tuple(entry))
    return out


def _value_key(value: Any) -> tuple:
    """A value as comparable data, the same for a Python float and NumPy's float64 of it
    (a run at another point may have computed it on NumPy)."""
    if isinstance(value, float):  # (NumPy's float64 is a float)
        return ("float64", (), value.hex())  # (not struct.pack: struct's import ~0.4 ms)
    if type(value) is bool:
        return ("bool", (), bytes((value,)))
    if type(value) is int and -(2**63) <= value < 2**63:
        return ("int64", (), value.to_bytes(8, sys.byteorder, signed=True))
    array = np.asarray(value)
    return (str(array.dtype), array.shape, array.tobytes())


def _dtype_name(value: Any) -> str:
    if isinstance(value, float):
        return "float64"
    return "bool" if type(value) is bool else str(np.asarray(value).dtype)


def _printed(
    builder: Builder, exprs: dict[str, Expr], notes: list[str], point: dict | None
) -> Derivatives:
    names = list(exprs)
    roots = factor_common([exprs[n] for n in names], builder)
    taken = set(names)
    shared = _name_shared(roots, taken)
    printer = Printer(shared)
    texts = {n: printer.text(r) for n, r in zip(names, roots, strict=True)}
    intermediates = []
    order = _shared_order(shared, roots)
    for e in order:
        intermediates.append((shared[e], printer.text(e)))
    programs = {}
    for n, r in zip(names, roots, strict=True):
        used = _used_names(r, shared)
        lines = [f"{name} = {text}" for name, text in intermediates if name in used]
        programs[n] = "; ".join([*lines, texts[n]])
    inline = {}
    if sum(r.size for r in roots) <= _INLINE_NODES:  # written out, a DAG can be exponential
        plain = Printer()
        inline = {n: plain.text(r) for n, r in zip(names, roots, strict=True)}
    return Derivatives(texts, intermediates, programs, notes, point, inline)


def _shared_order(shared: dict[Expr, str], roots: list[Expr]) -> list[Expr]:
    """Named subexpressions, each after those it uses."""
    order: list[Expr] = []
    seen: set[Expr] = set()
    for root in roots:
        stack = [(root, False)]
        while stack:
            e, ready = stack.pop()
            if ready:
                if e in shared:
                    order.append(e)
                continue
            if e in seen:
                continue
            seen.add(e)
            stack.append((e, True))
            stack.extend((k, False) for k in e.children())
    return order


def _used_names(root: Expr, shared: dict[Expr, str]) -> set[str]:
    used: set[str] = set()
    stack = [root]
    seen: set[Expr] = set()
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.add(e)
        if e in shared and e is not root:
            used.add(shared[e])
        stack.extend(e.children())
    return used


# ---------------------------------------------------------------- SymPy (optional)

_TO_SYMPY = {
    "sigmoid": lambda sp: lambda x: 1 / (1 + sp.exp(-x)),
    "relu": lambda sp: lambda x: sp.Max(x, 0),
    "log1p": lambda sp: lambda x: sp.log(1 + x),
    "abs": lambda sp: sp.Abs,
    "ceil": lambda sp: sp.ceiling,
    "e": lambda sp: sp.E,
}
_FROM_SYMPY = (("Abs(", "abs("), ("ceiling(", "ceil("), ("Max(", "maximum("), ("Min(", "minimum("))


def sympy_simplify(found: Derivatives) -> Derivatives:
    """``found`` with each derivative simplified by SymPy (``--simplify sympy``); a
    derivative SymPy answers outside the formula language keeps gradcalc's form."""
    import re

    import sympy
    from sympy.parsing.sympy_parser import parse_expr

    from gradcalc import builtins
    from gradcalc.parser import parse

    texts: dict[str, str] = {}
    notes = list(found.notes)
    if not found.inline:
        notes.append("The derivatives are too long to hand to SymPy; gradcalc's are shown.")
        return Derivatives(
            found.derivatives, found.intermediates, found.programs, notes, found.point
        )
    for name, text in found.inline.items():
        identifiers = set(re.findall(r"[A-Za-z_]\w*", text))
        local: dict[str, Any] = {}
        for word in identifiers:
            if word in _TO_SYMPY:
                local[word] = _TO_SYMPY[word](sympy)
            elif word == "pi":
                local[word] = sympy.pi
            elif hasattr(sympy, word) and word in builtins.FUNCTIONS:
                local[word] = getattr(sympy, word)
            else:
                local[word] = sympy.Symbol(word, real=True)
        try:
            result = sympy.sstr(sympy.simplify(parse_expr(text, local_dict=local)))
        except Exception:
            result = None
        if result is not None:
            for theirs, ours in _FROM_SYMPY:
                result = result.replace(theirs, ours)
            result = re.sub(r"\bE\b", "e", result)
            allowed = set(found.inline) | set(builtins.FUNCTIONS) | set(builtins.CONSTANTS)
            if set(re.findall(r"[A-Za-z_]\w*", result)) - allowed:
                result = None
            else:
                try:
                    parse(result)
                except FormulaError:
                    result = None
        if result is None:
            notes.append(
                f"SymPy's form of d/d{name} is not a gradcalc formula; gradcalc's is shown."
            )
            result = text
        texts[name] = result
    return Derivatives(texts, [], dict(texts), notes, found.point, dict(texts))
