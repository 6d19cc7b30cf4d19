"""All-scalar formulas on Python floats: value and gradients without NumPy or the engine.

A one-shot ``gradcalc '3*a**3 - b**2' a=2 b=6 --json`` spends most of its
time importing NumPy and the engine, not computing. When every variable is a
plain number and the formula is one expression built only from what this
module supports (numbers, bound names, ``+ - * / **`` with a literal exponent,
unary ``-``/``+``, ``sqrt``), :func:`run` computes the value and gradients
with floats and a small reverse-mode tape, and :func:`to_json` writes the
same object as ``api.result_to_json(api.evaluate(...))``, byte for byte.

Anything else returns ``None`` and the caller takes the full engine path,
which stays the source of truth for every error: a construct outside the
subset, an unknown name, a parse error, any exception (ZeroDivisionError,
OverflowError, a math domain error, a complex power), a non-finite value or
gradient.

Byte-for-byte agreement with the engine is by construction and is tested
(tests/test_api_scalar.py walks :data:`OPS` against the engine):

* ``+ - * /``, negation and ``sqrt`` are correctly rounded in IEEE 754, so
  NumPy and Python agree on every input. Transcendental functions are left
  out on purpose: NumPy's SIMD ``exp``/``log``/``tanh`` (used for scalars
  too) differ from the C library's in the last bit for a few percent of inputs.
* Each op's forward and VJPs are the formulas of ``gradcalc/ops.py``, in the
  same order of operations (``2/a`` is ``(1/a)*2`` as the engine computes it).
* :func:`_backward` is the engine's ``run_backward`` (dependency counts, a
  LIFO ready list), so gradients that meet are summed in the engine's order.
* ``x ** p`` (a literal exponent): a 0-d tensor holds a NumPy float64
  scalar, whose power is the C library's ``pow``, as ``math.pow`` is. (A 0-d
  *array* would not do: NumPy computes it with ``x*x``, ``sqrt``, ``1/x`` or
  its SIMD ``pow``, so the tests look for values where those differ.)
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gradcalc.limits import DEFAULT_LIMITS, Limits

SCHEMA_VERSION = 1
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
"""A VALUE that is a plain number (``a=2``, ``b=-1.5e3``): it skips the interpreter."""

_CACHE_SIZE = 256
_CACHE_TEXT = 10_000


class _Unsupported(Exception):
    """Raised inside the float path for anything it leaves to the engine."""


# ---------------------------------------------------------------- the ops, once


def _power(x: float, p: float) -> float:
    """``x ** p`` as the engine computes it: a 0-d tensor holds a NumPy float64 scalar
    (bound variables, literals and results alike), whose power is the C library's ``pow``."""
    return math.pow(x, p)


def _pow_vjp(g: float, a: float, x: float, p: float) -> float:
    # ops._pow_scalar_vjp
    if p == 0:
        return g * 0
    if p == 1:
        return g * 1
    if p == 2:
        return (g * x) * 2
    return g * p * _power(x, p - 1)


class Op:
    """One op of the float path: the engine's forward and VJPs (``ops.py``) on floats.

    ``vjps[i](g, ans, *inputs, *consts)`` as in the engine; ``inputs`` are
    floats, ``consts`` the op's non-tensor arguments.
    """

    __slots__ = ("forward", "grad_fn", "name", "vjps")

    def __init__(
        self, name: str, grad_fn: str, forward: Callable[..., float], vjps: tuple[Callable, ...]
    ) -> None:
        self.name = name
        self.grad_fn = grad_fn
        self.forward = forward
        self.vjps = vjps


OPS: dict[str, Op] = {
    op.name: op
    for op in (
        Op("add", "AddBackward0", lambda x, y: x + y, (lambda g, a, x, y: g,) * 2),
        Op(
            "sub",
            "SubBackward0",
            lambda x, y: x - y,
            (lambda g, a, x, y: g, lambda g, a, x, y: -g),
        ),
        Op("rsub", "RsubBackward1", lambda x, other: other - x, (lambda g, a, x, other: -g,)),
        Op(
            "mul",
            "MulBackward0",
            lambda x, y: x * y,
            (lambda g, a, x, y: g * y, lambda g, a, x, y: g * x),
        ),
        Op(
            "div",
            "DivBackward0",
            lambda x, y: x / y,
            (lambda g, a, x, y: g / y, lambda g, a, x, y: -g * x / (y * y)),
        ),
        Op("reciprocal", "ReciprocalBackward0", lambda x: 1 / x, (lambda g, a, x: -g * a * a,)),
        Op("neg", "NegBackward0", lambda x: -x, (lambda g, a, x: -g,)),
        Op("pow", "PowBackward0", _power, (_pow_vjp,)),
        Op("sqrt", "SqrtBackward0", math.sqrt, (lambda g, a, x: g / (a * 2),)),
    )
}
"""Every op the float path records; tests/test_scalar.py checks each against the engine."""

FUNCTIONS = {"sqrt": "sqrt"}
"""Built-in functions of the language the float path computes: name -> op."""

# How the interpreter applies each operator (interpreter._compile: a literal
# operand goes to the engine as a Python number; 2 - x is rsub, 2 / x is
# reciprocal then mul; x ** literal is pow; 2 ** x and x ** y are left out).
_TENSOR_OPS = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
_NUMBER_RIGHT_OPS = {"+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow"}


# ---------------------------------------------------------------- compiling


# Instructions: (opcode, argument).
_CONST, _LOAD, _UNARY_NEG, _TENSOR, _NUMBER_RIGHT, _NUMBER_LEFT, _CALL = range(7)


def _literal(node: Any, ast: Any) -> float | None:
    """As interpreter._literal_number: ``2`` and ``-2`` are literals."""
    if type(node) is ast.Num:
        return float(node.value)
    if type(node) is ast.UnaryOp and node.op == "-" and type(node.operand) is ast.Num:
        return -float(node.operand.value)
    return None


def _compile(program: Any) -> list[tuple[int, Any]] | None:
    """Postfix code for a one-expression program inside the subset, else None (iterative)."""
    from gradcalc import syntax as ast

    body = program.body
    if len(body) != 1 or type(body[0]) is not ast.ExprStmt:
        return None
    code: list[tuple[int, Any]] = []
    todo: list[tuple[bool, Any]] = [(False, body[0].value)]
    while todo:
        emit, item = todo.pop()
        if emit:
            code.append(item)
            continue
        node = item
        kind = type(node)
        if kind is ast.Num:
            code.append((_CONST, float(node.value)))
        elif kind is ast.Name:
            code.append((_LOAD, node.id))
        elif kind is ast.UnaryOp:
            number = _literal(node, ast)
            if number is not None:
                code.append((_CONST, number))
            elif node.op == "-":
                todo += [(True, (_UNARY_NEG, None)), (False, node.operand)]
            elif node.op == "+":  # Tensor.__pos__ returns the tensor itself
                todo.append((False, node.operand))
            else:
                return None
        elif kind is ast.BinOp:
            op = node.op
            left = _literal(node.left, ast)
            right = _literal(node.right, ast)
            if left is not None and right is None:
                if op not in _TENSOR_OPS:
                    return None
                todo += [(True, (_NUMBER_LEFT, (op, left))), (False, node.right)]
            elif right is not None:
                if op not in _NUMBER_RIGHT_OPS:
                    return None
                todo += [(True, (_NUMBER_RIGHT, (op, right))), (False, node.left)]
            else:
                if op not in _TENSOR_OPS:
                    return None
                todo += [(True, (_TENSOR, op)), (False, node.right), (False, node.left)]
        elif kind is ast.Call:
            func = node.func
            if (
                type(func) is not ast.Name
                or func.id not in FUNCTIONS
                or len(node.args) != 1
                or node.keywords
            ):
                return None
            todo += [(True, (_CALL, func.id)), (False, node.args[0])]
        else:
            return None
    return code


_PROGRAMS: dict[tuple[str, int], list | None] = {}


def _code(formula: str, limits: Limits) -> list[tuple[int, Any]] | None:
    key = (formula, limits.max_nesting)
    try:
        return _PROGRAMS[key]
    except KeyError:
        pass
    from gradcalc.parser import parse

    try:
        program = parse(formula, limits=limits)
    except Exception:  # the engine path reports it
        code = None
    else:
        code = _compile(program)
    if len(formula) <= _CACHE_TEXT:
        if len(_PROGRAMS) >= _CACHE_SIZE:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
        _PROGRAMS[key] = code
    return code


# ---------------------------------------------------------------- running


class _Node:
    """A recorded op (or a bound variable's AccumulateGrad, with ``op`` None)."""

    __slots__ = ("ans", "consts", "inputs", "op", "parents")

    def __init__(
        self, op: Op | None, parents: tuple, inputs: tuple, consts: tuple, ans: float
    ) -> None:
        self.op = op
        self.parents = parents
        self.inputs = inputs
        self.consts = consts
        self.ans = ans


class ScalarResult:
    """What :func:`run` computed: the fields of ``api.Result`` that a scalar run fills."""

    __slots__ = ("gradients", "notes", "unused", "value")

    def __init__(
        self, value: float, gradients: dict[str, float], unused: list[str], notes: list[str]
    ) -> None:
        self.value = value
        self.gradients = gradients
        self.unused = unused
        self.notes = notes


def number_bindings(bindings: Mapping[str, Any] | None) -> dict[str, float] | None:
    """Every binding as a float when each is a plain number (text or int/float), else None."""
    values: dict[str, float] = {}
    for name, value in (bindings or {}).items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            return None
        if name in ("True", "False"):
            return None
        kind = type(value)
        if kind is float:
            values[name] = value
        elif kind is str:
            text = value.strip()
            if not NUMBER.fullmatch(text):
                return None
            values[name] = float(text)
        elif kind is int and -(2**53) <= value <= 2**53:
            values[name] = float(value)
        else:
            return None
    return values


def run(
    formula: str,
    bindings: Mapping[str, Any] | None = None,
    wrt: Sequence[str] | None = None,
    limits: Limits | None = None,
) -> ScalarResult | None:
    """Value and gradients of an all-scalar formula on floats, or None for the engine path.

    The arguments mean what they mean to ``api.evaluate`` (float64, no
    ``of``, ``grad_output``, ``check`` or ``graph``).
    """
    limits = limits or DEFAULT_LIMITS
    values = number_bindings(bindings)
    if values is None or not isinstance(formula, str):
        return None
    code = _code(formula, limits)
    if code is None or len(code) >= limits.max_graph_nodes:
        return None
    if wrt is None:
        targets = list(values)
    else:
        targets = list(dict.fromkeys(wrt))
        if any(name not in values for name in targets):
            return None
    try:
        return _evaluate(code, values, targets)
    except (_Unsupported, ArithmeticError, ValueError):
        return None


def _evaluate(
    code: list[tuple[int, Any]], values: dict[str, float], targets: list[str]
) -> ScalarResult | None:
    # Each stack entry: (value, node or None).
    stack: list[tuple[float, _Node | None]] = []
    push = stack.append
    leaves: dict[str, _Node] = {}
    for opcode, arg in code:
        if opcode == _CONST:
            push((arg, None))
        elif opcode == _LOAD:
            value = values.get(arg)
            if value is None:
                raise _Unsupported(arg)  # a constant, a function, an unknown name
            node = leaves.get(arg)
            if node is None:
                node = leaves[arg] = _Node(None, (), (), (), value)
            push((value, node))
        elif opcode == _UNARY_NEG:
            x, nx = stack.pop()
            push(_apply(OPS["neg"], (x,), (nx,), ()))
        elif opcode == _TENSOR:
            y, ny = stack.pop()
            x, nx = stack.pop()
            push(_apply(OPS[_TENSOR_OPS[arg]], (x, y), (nx, ny), ()))
        elif opcode == _NUMBER_RIGHT:
            symbol, number = arg
            x, nx = stack.pop()
            if symbol == "**":
                push(_apply(OPS["pow"], (x,), (nx,), (number,)))
            else:
                push(_apply(OPS[_NUMBER_RIGHT_OPS[symbol]], (x, number), (nx, None), ()))
        elif opcode == _NUMBER_LEFT:
            symbol, number = arg
            x, nx = stack.pop()
            if symbol == "-":
                push(_apply(OPS["rsub"], (x,), (nx,), (number,)))
            elif symbol == "/":
                r, nr = _apply(OPS["reciprocal"], (x,), (nx,), ())
                push(_apply(OPS["mul"], (r, number), (nr, None), ()))
            else:  # + and * : Tensor.__radd__/__rmul__ put the tensor first
                push(_apply(OPS[_TENSOR_OPS[symbol]], (x, number), (nx, None), ()))
        else:  # _CALL
            if arg in values:
                raise _Unsupported(arg)  # a variable shadows the function: engine error
            x, nx = stack.pop()
            push(_apply(OPS[FUNCTIONS[arg]], (x,), (nx,), ()))
    value, root = stack.pop()
    captured = _backward(root) if root is not None and targets else {}
    gradients: dict[str, float] = {}
    unused: list[str] = []
    for name in targets:
        node = leaves.get(name)
        g = captured.get(node) if node is not None else None
        if g is None:
            unused.append(name)
            g = 0.0
        gradients[name] = g
    if not math.isfinite(value) or not all(map(math.isfinite, gradients.values())):
        return None  # the engine writes the notes about non-finite numbers
    notes = [f"Not used by the output (gradient 0): {', '.join(unused)}."] if unused else []
    return ScalarResult(value, gradients, unused, notes)


def _apply(op: Op, inputs: tuple, nodes: tuple, consts: tuple) -> tuple[float, _Node | None, bool]:
    """Run ``op``; record a node when an operand requires grad (as ``_tensor.apply*``)."""
    ans = op.forward(*inputs, *consts)
    if type(ans) is not float:
        raise _Unsupported(op.name)  # e.g. a complex power
    if any(n is not None for n in nodes):
        return ans, _Node(op, nodes, inputs, consts, ans)
    return ans, None


def _backward(root: _Node) -> dict[_Node, float]:
    """The engine's ``run_backward`` from ``root`` with a seed of 1: each leaf's total gradient."""
    deps: dict[_Node, int] = {root: 0}
    stack = [root]
    while stack:
        for parent in stack.pop().parents:
            if parent is not None:
                count = deps.get(parent)
                if count is None:
                    deps[parent] = 1
                    stack.append(parent)
                else:
                    deps[parent] = count + 1
    captured: dict[_Node, float] = {}
    pending: dict[_Node, float] = {root: 1.0}
    ready = [root]
    while ready:
        node = ready.pop()
        g = pending.pop(node, None)
        op = node.op
        if op is None:
            if g is not None:
                captured[node] = g
            continue
        parents = node.parents
        if g is not None:
            vjps = op.vjps
            for index, parent in enumerate(parents):
                if parent is None:
                    continue
                gi = vjps[index](g, node.ans, *node.inputs, *node.consts)
                old = pending.get(parent)
                pending[parent] = gi if old is None else old + gi
                count = deps[parent] - 1
                deps[parent] = count
                if count == 0:
                    ready.append(parent)
        else:
            for parent in parents:
                if parent is not None:
                    count = deps[parent] - 1
                    deps[parent] = count
                    if count == 0:
                        ready.append(parent)
    return captured


# ---------------------------------------------------------------- output


def to_json(result: ScalarResult) -> dict:
    """``api.result_to_json`` of the same run (schema_version 1), key for key."""
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "value": result.value,
        "shape": [],
        "dtype": "float64",
        "gradients": dict(result.gradients),
    }
    if result.unused:
        out["unused"] = list(result.unused)
    if result.notes:
        out["note"] = " ".join(result.notes)
    return out


def run_json(
    formula: str,
    bindings: Mapping[str, Any] | None = None,
    wrt: Sequence[str] | None = None,
    limits: Limits | None = None,
) -> dict | None:
    """:func:`run` then :func:`to_json`, or None for the engine path."""
    result = run(formula, bindings, wrt, limits)
    return None if result is None else to_json(result)
