"""Run formula-language programs on the engine, define-by-run.

A program is compiled once into flat code (a list of instructions with jumps)
and run by a small stack machine, so statements execute in order on the
engine and Python-style control flow builds a dynamic graph, as PyTorch
does. Nothing here recurses on anything a user controls: the compiler walks
the AST with an explicit stack of generators, the machine evaluates
expressions with a value stack and user-function calls with a frame stack.
A flat sum of 100,000 terms and a recursion 200 calls deep run under
Python's default recursion limit.

Names resolve only through the program's scopes and `gradcalc.builtins`;
no formula ever reaches Python's namespace or attributes.

Speed: the machine's own work per operation is kept small beside the engine's.
Code is compiled once per Program object, dtype and limits (`Interpreter.compile`
makes that explicit: a `Compiled` runs in any interpreter with that dtype and
limits). The compiler specialises what the whole program shows to be safe, with
a generic twin for runs where it is not (a built-in called directly unless the
run's ``env`` shadows it; a loop variable nothing reads is bound once, when its
loop ends), fuses a name load with the operator after it, and the operators call
the engine's Tensor methods directly. Operations are counted one by one; the
graph-size limit is compared at loop back-edges, calls and the end.
"""

from __future__ import annotations

import gc
import keyword
import operator
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from gradcalc import builtins as lang
from gradcalc import syntax as ast
from gradcalc._recycle import empty_cache
from gradcalc.errors import (
    FormulaError,
    FormulaTypeError,
    FormulaValueError,
    GradError,
    LimitError,
    ParseError,
    ShapeError,
    UnknownNameError,
)
from gradcalc.limits import DEFAULT_LIMITS, Limits

__all__ = ["Compiled", "Interpreter", "Outcome"]


class Outcome:
    """What a program produced: the last value a statement computed, and its name if assigned."""

    __slots__ = ("name", "value")

    def __init__(self, value: Any, name: str | None = None) -> None:
        self.value = value
        self.name = name

    def __eq__(self, other: object) -> bool:
        if type(other) is not Outcome:
            return NotImplemented
        return self.name == other.name and self.value is other.value

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Outcome(value={self.value!r}, name={self.name!r})"


# ------------------------------------------------------------------ instructions
# Each instruction is an opcode in `_Code.ops` and its argument at the same
# index of `_Code.args`; `_Code.nodes` holds the AST node for error positions.
# `_Code.generic_ops` is the same program without the specialisations that
# assume a built-in name is not shadowed and a loop variable is never read
# (CALL_BUILTIN, LOAD_BUILTIN, *_SPAN): it runs when a run cannot assume them.

LOAD_CONST = 0  # push arg
LOAD_NAME = 1  # push the value of name arg
BINARY = 2  # pop r, l; push fn(l, r); arg = (fn, symbol)
STORE = 3  # pop into name arg; it becomes the program's output
CALL_NAME = 4  # call the function named site.name; arg = _CallSite
CALL_METHOD = 5  # call a whitelisted method on the first argument; arg = _CallSite
EXPR_STMT = 6  # pop; a non-None value becomes the program's output
JUMP_IF_FALSE = 7  # pop; jump to arg if false
JUMP = 8
FOR_ITER = 9  # next item of the iterator on top into name arg[1], or pop it and jump to arg[0]
LOOP_BACK = 10  # count a while-loop iteration, jump to arg
UNARY = 11  # arg = (fn, symbol)
COMPARE = 12  # arg = (fn, symbol)
COMPARE_CHAIN = 13  # arg = [fn, symbol, end]: if false push result, jump to end; else keep right
JUMP_IF_FALSE_OR_POP = 14
JUMP_IF_TRUE_OR_POP = 15
NOT = 16
SUBSCRIPT = 17
BUILD_LIST = 18  # arg = item count
BUILD_INDEX = 19  # arg = item count; a tuple index such as x[:, 0]
BUILD_SLICE = 20  # arg = (has_lower, has_upper, has_step)
ATTRIBUTE = 21  # arg = attribute name (whitelisted at compile time)
STORE_FRESH = 22  # like STORE, but a fresh constant becomes a leaf; arg = (name, names)
STORE_QUIET = 23  # store without becoming the output (def, for targets)
MAKE_FUNCTION = 24  # arg = _FunctionTemplate; pops its defaults
RETURN = 25
GET_ITER = 26
POP_TOP = 27
STORE_ITEM = 28  # functional x[i][j] = v; arg = (name, depth)
RAISE = 29  # arg = a FormulaError, raised when reached
CALL_VALUE = 30  # call the value below the arguments; arg = _CallSite
HALT = 31
BINARY_NUMBER_RIGHT = 32  # x op 2: the literal goes to the engine as a Python number
BINARY_NUMBER_LEFT = 33  # 2 op x; arg = (fn, symbol, number, literal tensor, Tensor method)
# Specialised forms (see `_Compiler._specialise`); each has a generic twin in generic_ops.
CALL_BUILTIN = 34  # CALL_NAME of a built-in function no name of the run can shadow
CALL_BUILTIN1 = 35  # CALL_BUILTIN with one positional argument and no context
LOAD_BUILTIN = 36  # LOAD_NAME of a built-in no name of the run can shadow
GET_SPAN = 37  # GET_ITER of a loop whose variable nothing reads: push (iterable, span), iterator
FOR_SPAN = 38  # FOR_ITER that counts without making the items; arg = [end, name]
END_SPAN = 39  # POP_TOP after a break out of such a loop; arg = name
# A for loop's back-edge: FOR_ITER / FOR_SPAN that goes on to the body (arg[2]) itself,
# one dispatch less per iteration than JUMP to the loop head; arg is the head's list.
FOR_ITER_BACK = 40
FOR_SPAN_BACK = 41
# Superinstructions made by `_fuse` from LOAD_NAME and the instruction after it, which
# no jump enters: they do both and step over the second (which stays in place, so an
# error in its part is reported exactly as the second instruction's own).
NAME_NUMBER_RIGHT = 42  # LOAD_NAME n; BINARY_NUMBER_RIGHT   (y * 0.5)
NAME_BINARY = 43  # LOAD_NAME n; BINARY   (... + x)

_MISSING = object()
_OPERATOR_OPS = frozenset({BINARY, BINARY_NUMBER_RIGHT, BINARY_NUMBER_LEFT, COMPARE, COMPARE_CHAIN})
_CALL_OPS = frozenset({CALL_NAME, CALL_METHOD, CALL_BUILTIN, CALL_VALUE})
_EXPLAINED_CALLS = frozenset({CALL_NAME, CALL_METHOD, CALL_BUILTIN, CALL_BUILTIN1})


class _Code:
    """Flat code for the program or one function body."""

    __slots__ = ("args", "generic_ops", "name", "nodes", "ops", "reads", "unit")

    def __init__(self, name: str) -> None:
        self.name = name
        self.ops: list[int] = []
        self.args: list[Any] = []
        self.nodes: list[ast.Node | None] = []
        self.generic_ops: list[int] = self.ops
        self.reads: frozenset[str] = frozenset()
        """The names this code and the functions it defines read (for `FOR_SPAN`)."""
        self.unit: _Code | None = None
        """The program's top-level code: the run its specialisations were made for."""


class _CallSite:
    __slots__ = ("builtin", "fast", "kwnames", "name", "nargs")

    def __init__(self, name: str, nargs: int, kwnames: tuple[str, ...]) -> None:
        self.name = name
        self.nargs = nargs
        self.kwnames = kwnames
        self.builtin: Any = None  # the Builtin of a CALL_BUILTIN site
        self.fast: Any = None  # its Tensor method, for CALL_BUILTIN1


class _FunctionTemplate:
    __slots__ = ("code", "name", "ndefaults", "params")

    def __init__(self, name: str, params: tuple[str, ...], ndefaults: int, code: _Code) -> None:
        self.name = name
        self.params = params
        self.ndefaults = ndefaults
        self.code = code


class Compiled:
    """A program compiled for one dtype and one set of limits, ready to run any number
    of times, by any `Interpreter` with that dtype and those limits.

    Made by `Interpreter.compile`; `Interpreter.execute` accepts it in place of the
    program. It holds no values of a run: each run binds names in its interpreter's
    ``env``. Its literal tensors are shared, read-only constants.
    """

    __slots__ = ("builtin_names", "code", "dtype", "lazy_names", "limits", "program", "source")

    def __init__(
        self,
        code: _Code,
        program: ast.Program,
        dtype: str,
        limits: Limits,
        builtin_names: frozenset[str],
        lazy_names: frozenset[str],
    ) -> None:
        self.code = code
        self.program = program
        self.dtype = dtype
        self.limits = limits
        self.builtin_names = builtin_names
        """Built-in names the specialised code assumes nothing in ``env`` shadows."""
        self.lazy_names = lazy_names
        """Loop variables the specialised code leaves unset until their loop ends."""
        self.source: str | None = None
        """The text it was compiled from, if any, for the caret of a run's errors."""


class Function:
    """A function the program defined with ``def``; a value like any other."""

    __slots__ = ("code", "defaults", "name", "params", "scopes")

    def __init__(
        self, template: _FunctionTemplate, defaults: tuple, scopes: tuple[dict, ...]
    ) -> None:
        self.name = template.name
        self.params = template.params
        self.code = template.code
        self.defaults = defaults
        self.scopes = scopes  # enclosing function scopes, innermost first

    @property
    def signature(self) -> str:
        required = len(self.params) - len(self.defaults)
        parts = list(self.params[:required])
        parts += [
            f"{p}={_short(d)}" for p, d in zip(self.params[required:], self.defaults, strict=True)
        ]
        return f"{self.name}({', '.join(parts)})"

    def __repr__(self) -> str:
        return f"<function {self.signature}>"

    def bind_arguments(self, argv: list, nargs: int, kwnames: tuple[str, ...]) -> dict:
        """Python's argument binding: positional, then keywords, then defaults."""
        params = self.params
        if nargs > len(params):
            raise FormulaTypeError(
                f"{self.name}() takes {len(params)} argument{'s' * (len(params) != 1)} "
                f"but {nargs} were given",
                hint=f"signature: {self.signature}",
            )
        scope = dict(zip(params, argv[:nargs], strict=False))
        for name, value in zip(kwnames, argv[nargs:], strict=True):
            if name not in params:
                raise FormulaTypeError(
                    f"{self.name}() has no parameter '{name}'",
                    hint=_did_you_mean(name, params) or f"signature: {self.signature}",
                )
            if name in scope:
                raise FormulaTypeError(
                    f"{self.name}() got two values for '{name}'",
                    hint=f"signature: {self.signature}",
                )
            scope[name] = value
        if len(scope) < len(params):
            first_default = len(params) - len(self.defaults)
            for index, name in enumerate(params):
                if name not in scope:
                    if index < first_default:
                        raise FormulaTypeError(
                            f"{self.name}() is missing the argument '{name}'",
                            hint=f"signature: {self.signature}",
                        )
                    scope[name] = self.defaults[index - first_default]
        return scope


class _Loop:
    __slots__ = ("breaks", "continues", "is_for")

    def __init__(self, is_for: bool) -> None:
        self.is_for = is_for
        self.breaks: list[int] = []
        self.continues: list[int] = []


_BINARY = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
    "**": operator.pow,
    "@": operator.matmul,
}
_COMPARE = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_UNARY = {"-": operator.neg, "+": operator.pos}
_DUNDER = {
    "+": "add",
    "-": "sub",
    "*": "mul",
    "/": "truediv",
    "%": "mod",
    "**": "pow",
    "@": "matmul",
}
_TENSOR_METHODS: dict[str, Any] = {}


def _tensor_method(symbol: str, reflected: bool = False) -> Any:
    """The engine's Tensor method behind an operator (``Tensor.__rsub__`` for ``2 - x``),
    called directly when the operands are known to be tensors (or a number beside one);
    None if the engine has no such method (the operator function is used instead)."""
    key = f"__{'r' * reflected}{_DUNDER[symbol]}__"
    method = _TENSOR_METHODS.get(key, _MISSING)
    if method is _MISSING:
        method = _TENSOR_METHODS[key] = getattr(lang.Tensor, key, None)
    return method


# Assigning the value of one of these is never a fresh constant.
_NOT_FRESH_CALLS = frozenset(
    {"const", "detach", "grad", "backward", "zero_grad", "requires_grad_", "retain_grad", "zero_"}
)
_NOT_FRESH_ATTRIBUTES = frozenset({"grad", "data", "grad_fn", "requires_grad", "is_leaf"})
_KEYWORDS = frozenset(keyword.kwlist) | {"True", "False"}
_MODULE_NAMES = frozenset({"torch", "np", "numpy", "math", "F", "nn"})


def _fresh_names(expr: ast.Node) -> tuple[str, ...] | None:
    """The built-in names an expression reads if it only builds a new constant (``2``,
    ``arange(4)``, ``ones(3, 1) * pi``), else None. At run time the assignment checks
    that the user has not rebound those names.
    """
    names: list[str] = []
    todo: list[Any] = [expr]
    while todo:
        node = todo.pop()
        kind = type(node)
        if kind is ast.Num or kind is ast.Bool or node is None:
            continue
        if kind is ast.Name:
            if node.id not in lang.CONSTANTS and node.id not in lang.FUNCTIONS:
                return None  # the user's name (or an unknown one): never fresh
            names.append(node.id)
        elif kind is ast.Call:
            func = node.func
            if any(k.name == "requires_grad" for k in node.keywords):
                return None
            if type(func) is ast.Name:
                if func.id in _NOT_FRESH_CALLS or func.id not in lang.FUNCTIONS:
                    return None
                names.append(func.id)
            elif type(func) is ast.Attribute:
                if func.attr in _NOT_FRESH_CALLS:
                    return None
                todo.append(func.value)
            else:
                return None
            todo.extend(node.args)
            todo.extend(k.value for k in node.keywords)
        elif kind is ast.Attribute:
            if node.attr in _NOT_FRESH_ATTRIBUTES:
                return None
            todo.append(node.value)
        elif kind is ast.BinOp:
            todo.append(node.left)
            todo.append(node.right)
        elif kind is ast.UnaryOp:
            todo.append(node.operand)
        elif kind is ast.ListExpr or kind is ast.TupleExpr:
            todo.extend(node.items)
        elif kind is ast.BoolOp:
            todo.extend(node.values)
        elif kind is ast.Compare:
            todo.append(node.left)
            todo.extend(node.comparators)
        elif kind is ast.IfExp:
            todo.extend((node.test, node.body, node.orelse))
        elif kind is ast.Subscript:
            todo.append(node.value)
            todo.append(node.index)
        elif kind is ast.Slice:
            todo.extend((node.lower, node.upper, node.step))
        else:
            return None
    return tuple(dict.fromkeys(names))


def _literal_number(node: Any) -> float | None:
    """The value of a number literal (``2``, ``-2``), else None."""
    if type(node) is ast.Num:
        return float(node.value)
    if type(node) is ast.UnaryOp and node.op == "-" and type(node.operand) is ast.Num:
        return -float(node.operand.value)
    return None


def _constant_list(node: ast.ListExpr | ast.TupleExpr) -> list | None:
    """A list literal of numbers (nested to any depth) as Python lists, else None; iterative."""
    root: list = []
    todo: list[tuple[Any, list]] = [(node, root)]
    while todo:
        current, out = todo.pop()
        for item in current.items:
            if type(item) is ast.Num or type(item) is ast.Bool:
                out.append(float(item.value))
            elif type(item) is ast.UnaryOp and item.op == "-" and type(item.operand) is ast.Num:
                out.append(-float(item.operand.value))
            elif type(item) is ast.ListExpr or type(item) is ast.TupleExpr:
                inner: list = []
                out.append(inner)
                todo.append((item, inner))
            else:
                return None
    return root


# ---------------------------------------------------------------------- compiler


class _Compiler:
    """AST -> flat code. Visitors are generators that yield the child nodes they need
    compiled in place; `_drive` runs them with an explicit stack, never recursing.
    """

    def __init__(self, interp: Interpreter, source: str | None) -> None:
        self.interp = interp
        self.source = source
        self.code = _Code("<program>")
        self.loops: list[_Loop] = []
        self.in_function = False
        self.constants: dict[str, Any] = {}
        self.codes: list[_Code] = [self.code]
        self.fors: list[tuple[_Code, int, int, int, int | None, str]] = []

    # -- plumbing

    def compile(self, program: ast.Program) -> Compiled:
        self._drive(iter(program.body))
        self.emit(HALT, None, None)
        builtin_names, lazy_names = self._specialise()
        interp = self.interp
        compiled = Compiled(
            self.code, program, interp.dtype, interp.limits, builtin_names, lazy_names
        )
        compiled.source = self.source
        return compiled

    def _specialise(self) -> tuple[frozenset[str], frozenset[str]]:
        """Rewrite what the whole program shows to be safe, keeping the generic twin:
        a call or load of a built-in name the program never assigns goes straight to the
        built-in (unless, at run time, ``env`` holds that name), and a ``for`` loop whose
        variable the program never reads counts without making its items (unless a
        function defined by an earlier run could read it).
        """
        assigned: set[str] = set()
        for code in self.codes:
            for op, arg in zip(code.ops, code.args, strict=True):
                if op == STORE or op == STORE_QUIET:  # noqa: SIM109
                    assigned.add(arg)
                elif op == STORE_FRESH or op == STORE_ITEM:  # noqa: SIM109
                    assigned.add(arg[0])
                elif op == FOR_ITER:
                    assigned.add(arg[1])
                elif op == MAKE_FUNCTION:
                    assigned.update(arg.params)
        builtin_names: set[str] = set()
        read_by: dict[int, set[str]] = {}
        for code in reversed(self.codes):  # a function's code follows its definer's
            reads: set[str] = set()
            ops = code.ops
            generic = list(ops)
            for index, (op, arg) in enumerate(zip(generic, code.args, strict=True)):
                if op == LOAD_NAME:
                    reads.add(arg)
                    if arg not in assigned and (arg in lang.FUNCTIONS or arg in lang.CONSTANTS):
                        ops[index] = LOAD_BUILTIN
                        builtin_names.add(arg)
                elif op == CALL_NAME:
                    reads.add(arg.name)
                    builtin = lang.FUNCTIONS.get(arg.name)
                    if builtin is not None and arg.name not in assigned:
                        arg.builtin = builtin
                        builtin_names.add(arg.name)
                        if arg.nargs == 1 and not arg.kwnames and not builtin.context:
                            arg.fast = builtin.fast
                            ops[index] = CALL_BUILTIN1
                        else:
                            ops[index] = CALL_BUILTIN
                elif op == STORE_ITEM:
                    reads.add(arg[0])
                elif op == MAKE_FUNCTION:
                    reads |= read_by[id(arg.code)]
            code.reads = frozenset(reads)
            code.unit = self.code
            read_by[id(code)] = reads
            if ops != generic:
                code.generic_ops = generic
        lazy_names: set[str] = set()
        everything_read = set().union(*read_by.values())
        for code, get_iter, start, back, pad, target in self.fors:
            if target in everything_read:
                continue
            if code.generic_ops is code.ops:
                code.generic_ops = list(code.ops)
            code.ops[get_iter] = GET_SPAN
            code.ops[start] = FOR_SPAN
            code.ops[back] = FOR_SPAN_BACK
            if pad is not None:
                code.ops[pad] = END_SPAN
            lazy_names.add(target)
        for code in self.codes:
            _fuse(code.ops, code.args)
            if code.generic_ops is not code.ops:
                _fuse(code.generic_ops, code.args)
        return frozenset(builtin_names), frozenset(lazy_names)

    def _drive(self, root: Iterator) -> None:
        stack = [root]
        visitors = _VISITORS
        while stack:
            child = next(stack[-1], _MISSING)
            if child is _MISSING:
                stack.pop()
                continue
            kind = type(child)
            # Leaves are emitted inline: a 100,000-term sum is mostly leaves.
            if kind is ast.Name:
                self.emit(LOAD_NAME, child.id, child)
            elif kind is ast.Num:
                self.emit(LOAD_CONST, self._number(child.value), child)
            else:
                visitor = visitors.get(kind)
                if visitor is None:
                    raise self.error(
                        FormulaTypeError, f"unsupported syntax: {kind.__name__}", child
                    )
                stack.append(visitor(self, child))

    def emit(self, op: int, arg: Any, node: ast.Node | None) -> int:
        code = self.code
        code.ops.append(op)
        code.args.append(arg)
        code.nodes.append(node)
        return len(code.ops) - 1

    def here(self) -> int:
        return len(self.code.ops)

    def patch(self, index: int, target: int | None = None) -> None:
        self.code.args[index] = self.here() if target is None else target

    def error(self, kind: type[FormulaError], message: str, node: Any, hint: str | None = None):
        line = getattr(node, "line", None) or None
        column = getattr(node, "column", None) or None
        return kind(message, hint=hint, line=line, column=column, source=self.source)

    def _number(self, value: float) -> Any:
        key = float(value).hex()
        constant = self.constants.get(key)
        if constant is None:
            constant = self.constants[key] = self.interp._literal(float(value))
        return constant

    # -- expressions

    def _num(self, node: ast.Num) -> Iterator:
        self.emit(LOAD_CONST, self._number(node.value), node)
        yield from ()

    def _bool(self, node: ast.Bool) -> Iterator:
        self.emit(LOAD_CONST, self.interp._true if node.value else self.interp._false, node)
        yield from ()

    def _name(self, node: ast.Name) -> Iterator:
        self.emit(LOAD_NAME, node.id, node)
        yield from ()

    def _list(self, node: ast.ListExpr | ast.TupleExpr) -> Iterator:
        numbers = _constant_list(node)
        if numbers is not None:
            try:
                self.emit(LOAD_CONST, self.interp._literal_array(numbers), node)
            except FormulaError as exc:
                self.emit(RAISE, exc, node)
            return
        yield from node.items
        self.emit(BUILD_LIST, len(node.items), node)

    def _tuple(self, node: ast.TupleExpr) -> Iterator:
        # Outside an index a tuple is a vector, so PyTorch's rand((5, 5)) works.
        yield from self._list(node)

    def _slice_outside(self, node: ast.Slice) -> Iterator:
        raise self.error(ParseError, "a slice a:b is only allowed inside [ ]", node)
        yield  # pragma: no cover

    def _unary(self, node: ast.UnaryOp) -> Iterator:
        operand = node.operand
        if node.op == "-" and type(operand) is ast.Num:
            self.emit(LOAD_CONST, self._number(-float(operand.value)), node)
            return
        yield operand
        if node.op == "not":
            self.emit(NOT, None, node)
        else:
            self.emit(UNARY, (_UNARY[node.op], node.op), node)

    def _binop(self, node: ast.BinOp) -> Iterator:
        # A left-deep chain (a + b + c + ...) is walked down its left spine in a loop,
        # one generator for the whole chain. A literal operand reaches the engine as a
        # Python number, as in PyTorch, so x**2 records PowBackward0, 1 - x RsubBackward1.
        spine = []
        current: Any = node
        while type(current) is ast.BinOp:
            spine.append(current)
            current = current.left
        spine.reverse()
        first = spine[0]
        left = _literal_number(first.left)
        if left is not None and _literal_number(first.right) is None:
            yield first.right
            self._emit_number_op(BINARY_NUMBER_LEFT, first.op, left, first)
        else:
            yield first.left
            yield from self._right_operand(first)
        for binop in spine[1:]:
            yield from self._right_operand(binop)

    def _right_operand(self, node: ast.BinOp) -> Iterator:
        number = _literal_number(node.right)
        if number is None:
            yield node.right
            self._emit_binary(node.op, node)
        else:
            self._emit_number_op(BINARY_NUMBER_RIGHT, node.op, number, node)

    def _emit_binary(self, symbol: str, node: ast.Node) -> None:
        fn = _BINARY[symbol]
        self.emit(BINARY, (fn, symbol, _tensor_method(symbol) or fn), node)

    def _emit_number_op(self, op: int, symbol: str, number: float, node: ast.Node) -> None:
        fn = _BINARY[symbol]
        if op == BINARY_NUMBER_RIGHT:
            method = _tensor_method(symbol) or fn
        else:
            reflected = _tensor_method(symbol, reflected=True)
            method = (lambda x, n: fn(n, x)) if reflected is None else reflected
        self.emit(op, (fn, symbol, number, self._number(number), method), node)

    def _boolop(self, node: ast.BoolOp) -> Iterator:
        jump = JUMP_IF_FALSE_OR_POP if node.op == "and" else JUMP_IF_TRUE_OR_POP
        exits = []
        values = node.values
        for index, value in enumerate(values):
            yield value
            if index < len(values) - 1:
                exits.append(self.emit(jump, None, node))
        for index in exits:
            self.patch(index)

    def _compare(self, node: ast.Compare) -> Iterator:
        yield node.left
        chain = []
        last = len(node.ops) - 1
        for index, (symbol, right) in enumerate(zip(node.ops, node.comparators, strict=True)):
            yield right
            if index < last:
                chain.append(self.emit(COMPARE_CHAIN, [_COMPARE[symbol], symbol, None], node))
            else:
                self.emit(COMPARE, (_COMPARE[symbol], symbol), node)
        for index in chain:
            self.code.args[index][2] = self.here()

    def _ifexp(self, node: ast.IfExp) -> Iterator:
        yield node.test
        to_else = self.emit(JUMP_IF_FALSE, None, node)
        yield node.body
        to_end = self.emit(JUMP, None, node)
        self.patch(to_else)
        yield node.orelse
        self.patch(to_end)

    def _call(self, node: ast.Call) -> Iterator:
        func = node.func
        kwnames = tuple(k.name for k in node.keywords)
        if len(set(kwnames)) != len(kwnames):
            raise self.error(ParseError, "a keyword argument is repeated", node)
        if type(func) is ast.Attribute:
            spec = lang.METHODS.get(func.attr)
            if spec is None:
                raise self._unknown_member(func, method=True)
            yield func.value
            yield from node.args
            yield from (k.value for k in node.keywords)
            site = _CallSite(func.attr, len(node.args) + 1, kwnames)
            self.emit(CALL_METHOD, site, func)
        elif type(func) is ast.Name:
            yield from node.args
            yield from (k.value for k in node.keywords)
            self.emit(CALL_NAME, _CallSite(func.id, len(node.args), kwnames), node)
        else:
            yield func
            yield from node.args
            yield from (k.value for k in node.keywords)
            self.emit(CALL_VALUE, _CallSite("", len(node.args), kwnames), node)

    def _attribute(self, node: ast.Attribute) -> Iterator:
        if node.attr not in lang.ATTRIBUTES:
            raise self._unknown_member(node, method=False)
        yield node.value
        self.emit(ATTRIBUTE, node.attr, node)

    def _unknown_member(self, node: ast.Attribute, method: bool) -> FormulaError:
        name = node.attr
        if type(node.value) is ast.Name and node.value.id in _MODULE_NAMES:
            return self.error(
                UnknownNameError,
                f"write {name}(...) rather than {node.value.id}.{name}(...): "
                "functions need no module prefix",
                node,
                hint="`gradcalc functions` lists the built-in functions",
            )
        if not method and name in lang.METHODS:
            return self.error(
                FormulaTypeError,
                f"'{name}' is a method: call it, as in x.{name}()",
                node,
                hint=f"signature: {lang.METHODS[name].signature}",
            )
        if method and name == "where":
            return self.error(
                FormulaTypeError,
                "where is a function, not a method: write where(condition, x, y)",
                node,
            )
        if method and name in lang.ATTRIBUTES:
            return self.error(
                FormulaTypeError,
                f"'{name}' is an attribute, not a method: write x.{name} without ( )",
                node,
            )
        known = sorted(set(lang.METHODS) | set(lang.ATTRIBUTES))
        hint = _did_you_mean(name, known) or (
            "methods and attributes: " + ", ".join(known)
            if len(known) < 12
            else "see `gradcalc functions` for the methods a tensor has"
        )
        return self.error(
            UnknownNameError,
            f"tensors have no {'method' if method else 'attribute'} '{name}'",
            node,
            hint=hint,
        )

    def _subscript(self, node: ast.Subscript) -> Iterator:
        yield node.value
        yield from self._index(node.index)
        self.emit(SUBSCRIPT, None, node)

    def _index(self, index: Any) -> Iterator:
        if type(index) is ast.TupleExpr:
            for item in index.items:
                yield from self._index_part(item)
            self.emit(BUILD_INDEX, len(index.items), index)
        else:
            yield from self._index_part(index)

    def _index_part(self, item: Any) -> Iterator:
        if type(item) is ast.Slice:
            parts = (item.lower, item.upper, item.step)
            for part in parts:
                if part is not None:
                    yield part
            self.emit(BUILD_SLICE, tuple(p is not None for p in parts), item)
        else:
            yield item

    # -- statements

    def _expr_stmt(self, node: ast.ExprStmt) -> Iterator:
        yield node.value
        self.emit(EXPR_STMT, None, node)

    def _assign(self, node: ast.Assign) -> Iterator:
        target = node.target
        if type(target) is ast.Name:
            self._check_target_name(target.id, target)
            yield node.value
            fresh = _fresh_names(node.value)
            if fresh is None:
                self.emit(STORE, target.id, node)
            else:
                self.emit(STORE_FRESH, (target.id, fresh), node)
        elif type(target) is ast.Subscript:
            keys = []
            base: Any = target
            while type(base) is ast.Subscript:
                keys.append(base.index)
                base = base.value
            if type(base) is not ast.Name:
                raise self.error(
                    FormulaTypeError,
                    "only a variable's elements can be assigned, as in x[0] = 5",
                    target,
                )
            yield node.value
            self.emit(LOAD_NAME, base.id, base)
            for key in reversed(keys):
                yield from self._index(key)
            self.emit(STORE_ITEM, (base.id, len(keys)), node)
        else:
            raise self.error(
                ParseError,
                "cannot assign to this: the left of = must be a name or x[index]",
                target,
            )

    def _check_target_name(self, name: str, node: ast.Node) -> None:
        if name in _KEYWORDS:
            raise self.error(ParseError, f"'{name}' is a keyword and cannot be assigned", node)

    def _augassign(self, node: ast.AugAssign) -> Iterator:
        target = node.target
        if type(target) is ast.Name:
            self._check_target_name(target.id, target)
            self.emit(LOAD_NAME, target.id, target)
            number = _literal_number(node.value)
            if number is None:
                yield node.value
                self._emit_binary(node.op, node)
            else:
                self._emit_number_op(BINARY_NUMBER_RIGHT, node.op, number, node)
            self.emit(STORE, target.id, node)
        else:
            # x[i] op= v  runs as  x[i] = x[i] op v  (the index is evaluated twice)
            value = ast.BinOp(node.op, target, node.value, line=node.line, column=node.column)
            yield from self._assign(ast.Assign(target, value, line=node.line, column=node.column))

    def _if(self, node: ast.If) -> Iterator:
        yield node.test
        to_else = self.emit(JUMP_IF_FALSE, None, node)
        yield from node.body
        if node.orelse:
            to_end = self.emit(JUMP, None, node)
            self.patch(to_else)
            yield from node.orelse
            self.patch(to_end)
        else:
            self.patch(to_else)

    def _while(self, node: ast.While) -> Iterator:
        start = self.here()
        yield node.test
        to_end = self.emit(JUMP_IF_FALSE, None, node)
        loop = _Loop(is_for=False)
        self.loops.append(loop)
        yield from node.body
        self.loops.pop()
        back = self.emit(LOOP_BACK, start, node)
        for index in loop.continues:
            self.patch(index, back)
        self.patch(to_end)
        for index in loop.breaks:
            self.patch(index)

    def _for(self, node: ast.For) -> Iterator:
        self._check_target_name(node.target, node)
        yield node.iter
        get_iter = self.emit(GET_ITER, None, node.iter)
        head = [None, node.target, None]  # [end, variable, body]
        start = self.emit(FOR_ITER, head, node)
        head[2] = self.here()
        loop = _Loop(is_for=True)
        self.loops.append(loop)
        yield from node.body
        self.loops.pop()
        back = self.emit(FOR_ITER_BACK, head, node)
        for index in loop.continues:
            self.patch(index, start)
        pad = None
        if loop.breaks:
            pad = self.emit(POP_TOP, node.target, node)
            for index in loop.breaks:
                self.patch(index, pad)
        head[0] = self.here()
        self.fors.append((self.code, get_iter, start, back, pad, node.target))

    def _def(self, node: ast.FunctionDef) -> Iterator:
        self._check_target_name(node.name, node)
        names = [p.name for p in node.params]
        if len(set(names)) != len(names):
            raise self.error(ParseError, f"{node.name}(): a parameter name is repeated", node)
        seen_default = False
        for param in node.params:
            if param.default is not None:
                seen_default = True
                yield param.default
            elif seen_default:
                raise self.error(
                    ParseError,
                    f"{node.name}(): parameter '{param.name}' without a default follows one "
                    "with a default",
                    param,
                )
        outer = (self.code, self.loops, self.in_function)
        body = _Code(node.name)
        self.codes.append(body)
        self.code, self.loops, self.in_function = body, [], True
        yield from node.body
        self.emit(LOAD_CONST, None, node)
        self.emit(RETURN, None, node)
        self.code, self.loops, self.in_function = outer
        ndefaults = sum(p.default is not None for p in node.params)
        template = _FunctionTemplate(node.name, tuple(names), ndefaults, body)
        self.emit(MAKE_FUNCTION, template, node)
        self.emit(STORE_QUIET, node.name, node)

    def _return(self, node: ast.Return) -> Iterator:
        if not self.in_function:
            raise self.error(ParseError, "'return' outside a function", node)
        if node.value is None:
            self.emit(LOAD_CONST, None, node)
        else:
            yield node.value
        self.emit(RETURN, None, node)

    def _pass(self, node: ast.Pass) -> Iterator:
        yield from ()

    def _break(self, node: ast.Break) -> Iterator:
        if not self.loops:
            raise self.error(ParseError, "'break' outside a loop", node)
        self.loops[-1].breaks.append(self.emit(JUMP, None, node))
        yield from ()

    def _continue(self, node: ast.Continue) -> Iterator:
        if not self.loops:
            raise self.error(ParseError, "'continue' outside a loop", node)
        self.loops[-1].continues.append(self.emit(JUMP, None, node))
        yield from ()


# Unbound, so a compiler holds no reference cycle (bound methods in an instance dict
# would keep it, its interpreter and everything that interpreter ran alive until the
# cyclic GC finds them).
_VISITORS = {
    ast.Num: _Compiler._num,
    ast.Bool: _Compiler._bool,
    ast.Name: _Compiler._name,
    ast.ListExpr: _Compiler._list,
    ast.TupleExpr: _Compiler._tuple,
    ast.UnaryOp: _Compiler._unary,
    ast.BinOp: _Compiler._binop,
    ast.BoolOp: _Compiler._boolop,
    ast.Compare: _Compiler._compare,
    ast.IfExp: _Compiler._ifexp,
    ast.Call: _Compiler._call,
    ast.Attribute: _Compiler._attribute,
    ast.Slice: _Compiler._slice_outside,
    ast.Subscript: _Compiler._subscript,
    ast.ExprStmt: _Compiler._expr_stmt,
    ast.Assign: _Compiler._assign,
    ast.AugAssign: _Compiler._augassign,
    ast.If: _Compiler._if,
    ast.While: _Compiler._while,
    ast.For: _Compiler._for,
    ast.FunctionDef: _Compiler._def,
    ast.Return: _Compiler._return,
    ast.Pass: _Compiler._pass,
    ast.Break: _Compiler._break,
    ast.Continue: _Compiler._continue,
}


# ---------------------------------------------------------------------- helpers


def _jump_targets(ops: list[int], args: list) -> set[int]:
    targets: set[int] = set()
    for op, arg in zip(ops, args, strict=True):
        if op in (JUMP, JUMP_IF_FALSE, JUMP_IF_FALSE_OR_POP, JUMP_IF_TRUE_OR_POP, LOOP_BACK):
            targets.add(arg)
        elif op in (FOR_ITER, FOR_SPAN, FOR_ITER_BACK, FOR_SPAN_BACK):
            targets.update((arg[0], arg[2]))
        elif op == COMPARE_CHAIN:
            targets.add(arg[2])
    return targets


_FUSED = {BINARY_NUMBER_RIGHT: NAME_NUMBER_RIGHT, BINARY: NAME_BINARY}


def _fuse(ops: list[int], args: list) -> None:
    """Turn LOAD_NAME + an operator into one superinstruction where no jump lands
    between the two (the operator's own slot is kept, and stepped over)."""
    targets = _jump_targets(ops, args)
    index = 0
    last = len(ops) - 1
    while index < last:
        fused = _FUSED.get(ops[index + 1]) if ops[index] == LOAD_NAME else None
        if fused is not None and index + 1 not in targets:
            ops[index] = fused
            index += 2
        else:
            index += 1


def _short(value: Any) -> str:
    data = getattr(value, "_data", None)
    if data is not None and np.ndim(data) == 0:
        number = float(data)
        return str(int(number)) if number.is_integer() else repr(number)
    return "..."


def _did_you_mean(name: str, candidates: Any) -> str | None:
    import difflib  # only for errors: 1.5 ms of import

    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def _compile(interp: Interpreter, program: ast.Program, source: str | None) -> Compiled:
    """Compile with the cyclic GC paused: compiling allocates no cycles, and with a large
    AST alive, collections triggered by its allocations would double its time."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _Compiler(interp, source).compile(program)
    finally:
        if paused:
            gc.enable()


_CACHE: dict[tuple[int, str, Limits], Compiled] = {}
_CACHE_SIZE = 256
_CACHE_INSTRUCTIONS = 20_000
"""Only programs up to this many instructions are kept (a 1 MB formula is not)."""


def _cached_compile(interp: Interpreter, program: ast.Program) -> Compiled:
    """The compiled form of a Program object, kept while the cache holds it (the entry
    holds the program, so its id cannot be reused by another): a batch or a finite-
    difference check runs one parsed program many times."""
    key = (id(program), interp.dtype, interp.limits)
    compiled = _CACHE.get(key)
    if compiled is not None and compiled.program is program:
        return compiled
    compiled = _compile(interp, program, None)
    if len(compiled.code.ops) <= _CACHE_INSTRUCTIONS:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = compiled
    return compiled


# -------------------------------------------------------------------- interpreter


class Interpreter:
    """Runs programs in a persistent environment (a REPL session, or one CLI command).

    ``env`` maps the user's names to tensors, functions or other values. Bound
    variables and assignments of fresh constants are differentiable leaves;
    ``execute`` is transactional: if it raises, ``env`` holds the same names
    and values as before (gradients already accumulated are not rolled back).
    """

    def __init__(
        self, dtype: str = "float64", seed: int | None = None, limits: Limits | None = None
    ) -> None:
        if dtype not in ("float64", "float32"):
            raise FormulaValueError(
                f"unknown dtype '{dtype}'", hint="use float64 (the default) or float32"
            )
        self.dtype = dtype
        self.seed = seed
        self.limits = limits if limits is not None else DEFAULT_LIMITS
        self.env: dict[str, Any] = {}
        self.context = lang.Context(dtype, self.limits, seed)
        self._true = lang.TRUE
        self._false = lang.FALSE
        self._builtin_values: dict[str, Any] = {}

    # -- public API

    def bind(self, name: str, value: Any, requires_grad: bool = True) -> None:
        """Bind ``name`` to a leaf made from ``value`` (a number, nested list, array,
        tensor, or a constant formula as text) in the interpreter's dtype."""
        if not isinstance(name, str) or not name.isidentifier() or name in _KEYWORDS:
            raise FormulaValueError(
                f"'{name}' is not a variable name",
                hint="names start with a letter or _, then letters, digits or _",
            )
        if isinstance(value, str):
            value = self._constant_formula(value, name)
        self.env[name] = self.context.leaf(value, requires_grad, label=name)

    def compile(self, source_or_program: str | ast.Program) -> Compiled:
        """Parse (if given text) and compile a program once, to run it many times with
        `execute`, by this interpreter or any other with the same dtype and limits.

        ``execute`` of a Program object already reuses its compiled form (a small cache
        keyed by the object); this makes the reuse explicit. Raises what ``execute``
        raises for a program that cannot compile (parse errors, misplaced ``return``...).
        """
        source = source_or_program if isinstance(source_or_program, str) else None
        try:
            if source is not None:
                from gradcalc.parser import parse

                return _compile(self, parse(source, limits=self.limits), source)
            return _cached_compile(self, source_or_program)
        except FormulaError as exc:
            if exc.source is None and source is not None:
                exc.source = source
            raise
        except Exception as exc:
            raise _convert(exc).at(None, None, source) from _unexpected(exc)

    def execute(self, source_or_program: str | ast.Program | Compiled) -> Outcome:
        """Parse (if given text), compile (unless given `Compiled` code, or a Program
        object compiled before) and run a program; return its last value."""
        source = source_or_program if isinstance(source_or_program, str) else None
        saved = dict(self.env)
        try:
            if source is not None:
                from gradcalc.parser import parse

                compiled = _compile(self, parse(source, limits=self.limits), source)
            elif type(source_or_program) is Compiled:
                compiled = source_or_program
                source = compiled.source
                if compiled.dtype != self.dtype or compiled.limits != self.limits:
                    compiled = _compile(self, compiled.program, source)
            else:
                compiled = _cached_compile(self, source_or_program)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                # NumPy's own warnings (mean of an empty slice) say what the
                # non-finite value already shows; they must not reach a terminal
                warnings.simplefilter("ignore", RuntimeWarning)
                try:
                    return self._run(compiled, source)
                finally:
                    empty_cache()  # a program is a unit of work: free buffers go back
        except BaseException as exc:
            self.env.clear()
            self.env.update(saved)
            if isinstance(exc, FormulaError):
                if exc.source is None and source is not None:
                    exc.source = source
                raise
            if not isinstance(exc, Exception):
                raise
            raise _convert(exc).at(None, None, source) from _unexpected(exc)

    # -- values made by the compiler

    def _literal(self, number: float) -> Any:
        return self.context.literal(np.array(number, dtype=self.dtype))

    def _literal_array(self, numbers: list) -> Any:
        return self.context.literal(lang.nested_list_array(numbers, self.context))

    def _constant_formula(self, text: str, label: str) -> Any:
        scratch = Interpreter(self.dtype, limits=self.limits)
        scratch.context = self.context  # share the random generator
        try:
            outcome = scratch.execute(text)
        except FormulaError as exc:
            exc.message = f"in the value of {label}: {exc.message}"
            raise
        if not isinstance(outcome.value, lang.Tensor):
            raise FormulaTypeError(
                f"the value of {label} ({text!r}) is {lang.kind_of(outcome.value)}, not a tensor"
            )
        return outcome.value

    # -- name resolution (slow path: enclosing scopes, globals, built-ins)

    def _lookup(self, name: str, function: Function | None, called: bool = False) -> Any:
        if function is not None:
            for scope in function.scopes:
                value = scope.get(name, _MISSING)
                if value is not _MISSING:
                    return value
            value = self.env.get(name, _MISSING)
            if value is not _MISSING:
                return value
        value = self._builtin_values.get(name)
        if value is not None:
            return value
        constant = lang.CONSTANTS.get(name)
        if constant is not None:
            value = self.context.literal(np.array(constant.value, dtype=self.dtype))
        else:
            value = lang.FUNCTIONS.get(name)
        if value is None:
            raise self._unknown_name(name, function, called)
        self._builtin_values[name] = value
        return value

    def _any_users(self, names: tuple[str, ...], scope: dict, function: Function | None) -> bool:
        """Whether the user has bound any of these built-in names (here, not in a generator
        in `_run`, which would make ``self`` a cell variable there, slower to read)."""
        return any(self._is_users(name, scope, function) for name in names)

    def _is_users(self, name: str, scope: dict, function: Function | None) -> bool:
        if name in scope or name in self.env:
            return True
        return function is not None and any(name in s for s in function.scopes)

    def _unknown_name(self, name: str, function: Function | None, called: bool) -> FormulaError:
        visible = set(self.env) | set(lang.FUNCTIONS) | set(lang.CONSTANTS)
        for frame in self.context.scopes:
            visible |= set(frame)
        if function is not None:
            for scope in function.scopes:
                visible |= set(scope)
        suggestion = _did_you_mean(name, visible)
        if name in _MODULE_NAMES:
            return UnknownNameError(
                f"'{name}' is not defined: functions and methods need no module prefix",
                hint="write exp(x) or x.exp(), not torch.exp(x)",
            )
        if called and name == "print":
            return UnknownNameError(
                "there is no print(): a program shows the value of its last statement",
                hint="end the program with the name to show (or pick it with --of NAME)",
            )
        if called:
            other = "`gradcalc functions` lists the built-in functions"
            return UnknownNameError(
                f"there is no function '{name}'",
                hint=f"{suggestion} ({other})" if suggestion else other,
            )
        bind = f"bind it on the command line: {name}=2, or assign it first: {name} = 2"
        return UnknownNameError(
            f"'{name}' is not defined",
            hint=f"{suggestion} Or {bind}" if suggestion else bind,
        )

    # -- the machine

    def _run(self, compiled: Compiled, source: str | None) -> Outcome:
        """Execute flat code; user-function calls push frames, never Python recursion.

        The hot instructions come first in the dispatch chain and call the engine's
        Tensor methods directly. Operations are counted one by one, but the graph-size
        limit is compared where a run may go on indefinitely (loop back-edges, calls)
        and at the end; between two comparisons only a stretch of straight code runs.
        """
        context = self.context
        limits = self.limits
        max_elements = limits.max_elements
        max_operations = limits.max_graph_nodes
        max_iterations = limits.max_iterations
        max_depth = limits.max_call_depth
        Tensor = lang.Tensor
        Size = lang.Size
        Builtin = lang.Builtin
        truth = lang.truth
        float_dtype = context.np_dtype
        float_scalar = float_dtype.type
        builtin_values = self._builtin_values
        env = self.env
        context.scopes = [env]
        scopes = context.scopes
        frames: list[tuple] = []
        code = compiled.code
        unit = None if self._needs_generic(compiled) else code
        ops = code.ops if unit is not None else code.generic_ops
        args, nodes = code.args, code.nodes
        scope = env
        function: Function | None = None
        stack: list[Any] = []
        pc = 0
        iterations = 0  # both limits count per run
        operations = 0
        last_value: Any = None
        last_name: str | None = None
        argv: list[Any] = []
        left = right = callee = None
        # the hottest opcodes as locals: a local is read faster than a module global
        name_number_right = NAME_NUMBER_RIGHT
        name_binary = NAME_BINARY
        load_name = LOAD_NAME
        binary_number_right = BINARY_NUMBER_RIGHT
        binary_number_left = BINARY_NUMBER_LEFT
        binary = BINARY
        call_builtin1 = CALL_BUILTIN1
        store = STORE
        for_span_back = FOR_SPAN_BACK
        for_iter_back = FOR_ITER_BACK
        load_const = LOAD_CONST
        try:
            while True:
                op = ops[pc]
                arg = args[pc]
                pc += 1
                if op == name_number_right:  # LOAD_NAME + BINARY_NUMBER_RIGHT
                    try:
                        value = scope[arg]
                    except KeyError:
                        value = self._lookup(arg, function)
                    stack.append(value)
                    arg = args[pc]
                    pc += 1
                    operations += 1
                    if type(value) is Tensor and (
                        type(data := value._data) is float_scalar or data.dtype is float_dtype
                    ):
                        result = arg[4](value, arg[2])
                        if result is NotImplemented:
                            result = self._number_operator(BINARY_NUMBER_RIGHT, arg, value)
                        stack[-1] = result
                    else:
                        stack[-1] = self._number_operator(BINARY_NUMBER_RIGHT, arg, value)
                elif op == name_binary:  # LOAD_NAME + BINARY
                    try:
                        right = scope[arg]
                    except KeyError:
                        right = self._lookup(arg, function)
                    arg = args[pc]
                    pc += 1
                    left = stack[-1]
                    if type(left) is not Tensor or type(right) is not Tensor:
                        left, right = self._operands(arg[1], left, right)
                    if left._data.size * right._data.size > max_elements:
                        context.check_broadcast(arg[1], left, right)
                    operations += 1
                    result = arg[2](left, right)
                    if result is NotImplemented:
                        result = arg[0](left, right)
                    stack[-1] = result
                elif op == load_name:
                    try:
                        stack.append(scope[arg])
                    except KeyError:
                        stack.append(self._lookup(arg, function))
                elif op == binary_number_right or op == binary_number_left:  # noqa: SIM109 - speed
                    value = stack[-1]
                    operations += 1
                    if type(value) is Tensor and (
                        type(data := value._data) is float_scalar or data.dtype is float_dtype
                    ):
                        # the literal goes to the engine as a Python number, as in PyTorch
                        result = arg[4](value, arg[2])
                        if result is NotImplemented:
                            result = self._number_operator(op, arg, value)
                        stack[-1] = result
                    else:  # not a float tensor: let the engine promote as NumPy does
                        stack[-1] = self._number_operator(op, arg, value)
                elif op == binary:
                    right = stack.pop()
                    left = stack[-1]
                    if type(left) is not Tensor or type(right) is not Tensor:
                        left, right = self._operands(arg[1], left, right)
                    if left._data.size * right._data.size > max_elements:
                        context.check_broadcast(arg[1], left, right)
                    operations += 1
                    result = arg[2](left, right)
                    if result is NotImplemented:
                        result = arg[0](left, right)
                    stack[-1] = result
                elif op == call_builtin1:
                    value = stack[-1]
                    operations += 1
                    fast = arg.fast
                    if fast is not None and type(value) is Tensor:
                        stack[-1] = fast(value)
                    else:  # (an error is explained with the argument the built-in saw)
                        value = stack[-1] = lang.unshape(context, value)
                        stack[-1] = arg.builtin.impl(value)
                elif op == store:
                    last_value = scope[arg] = stack.pop()
                    last_name = arg
                elif op == for_span_back:
                    if next(stack[-1], _MISSING) is _MISSING:
                        self._end_span(stack, scope, arg[1])
                        pc = arg[0]
                    else:
                        iterations += 1
                        if iterations > max_iterations:
                            raise _iteration_limit(limits)
                        if operations > max_operations:
                            raise _graph_limit(limits)
                        pc = arg[2]
                elif op == for_iter_back:
                    item = next(stack[-1], _MISSING)
                    if item is _MISSING:
                        stack.pop()
                        pc = arg[0]
                    else:
                        iterations += 1
                        if iterations > max_iterations:
                            raise _iteration_limit(limits)
                        if operations > max_operations:
                            raise _graph_limit(limits)
                        scope[arg[1]] = item
                        pc = arg[2]
                elif op == load_const:
                    stack.append(arg)
                elif op == FOR_SPAN:
                    if next(stack[-1], _MISSING) is _MISSING:
                        self._end_span(stack, scope, arg[1])
                        pc = arg[0]
                    else:
                        iterations += 1
                        if iterations > max_iterations:
                            raise _iteration_limit(limits)
                        if operations > max_operations:
                            raise _graph_limit(limits)
                elif op == FOR_ITER:
                    item = next(stack[-1], _MISSING)
                    if item is _MISSING:
                        stack.pop()
                        pc = arg[0]
                    else:
                        iterations += 1
                        if iterations > max_iterations:
                            raise _iteration_limit(limits)
                        if operations > max_operations:
                            raise _graph_limit(limits)
                        scope[arg[1]] = item
                elif op == JUMP:
                    pc = arg
                elif op == LOAD_BUILTIN:
                    try:
                        stack.append(builtin_values[arg])
                    except KeyError:
                        stack.append(self._lookup(arg, None))
                elif op in _CALL_OPS:
                    total = arg.nargs + len(arg.kwnames)
                    if total:
                        argv = stack[-total:]
                        del stack[-total:]
                    else:
                        argv = []
                    if op == CALL_BUILTIN:
                        callee = arg.builtin
                    elif op == CALL_NAME:
                        callee = scope.get(arg.name, _MISSING)
                        if callee is _MISSING:
                            # at the top level a miss in env means a built-in
                            callee = builtin_values.get(arg.name) if function is None else None
                            if callee is None:
                                callee = self._lookup(arg.name, function, called=True)
                    elif op == CALL_METHOD:
                        callee = lang.METHODS[arg.name]
                        argv[0] = lang.unshape(context, argv[0])
                        if not isinstance(argv[0], Tensor):
                            what = lang.kind_of(argv[0])
                            raise FormulaTypeError(
                                f"'.{arg.name}()' needs a tensor, but this is {what}"
                            )
                    else:
                        callee = stack.pop()
                    operations += 1
                    if operations > max_operations:
                        raise _graph_limit(limits)
                    if type(callee) is Builtin:
                        impl = callee.impl
                        for value in argv:
                            if type(value) is Size:  # a shape is a vector of sizes
                                argv = _unshape_all(context, argv)
                                break
                        if arg.kwnames:
                            nargs = arg.nargs
                            kwargs = callee.keywords(arg.kwnames, argv[nargs:])
                            if callee.context:
                                result = impl(context, *argv[:nargs], **kwargs)
                            else:
                                result = impl(*argv[:nargs], **kwargs)
                        elif callee.context:
                            result = impl(context, *argv)
                        else:
                            result = impl(*argv)
                        stack.append(result)
                    elif type(callee) is Function:
                        if len(frames) >= max_depth:
                            raise LimitError(
                                f"calls nest deeper than {max_depth} "
                                f"(in {callee.name}(): is the recursion missing a base case?)",
                                hint="the limit is max_call_depth "
                                "(CLI: --max-call-depth) if the depth is intended",
                            )
                        local = callee.bind_arguments(argv, arg.nargs, arg.kwnames)
                        frames.append((ops, args, nodes, pc, stack, scope, function))
                        scopes.append(local)
                        code = callee.code
                        # a function of an earlier run was specialised for that run only
                        ops = code.ops if code.unit is unit else code.generic_ops
                        args, nodes = code.args, code.nodes
                        pc = 0
                        stack = []
                        scope = local
                        function = callee
                    else:
                        raise _not_callable(arg.name, callee)
                elif op == EXPR_STMT:
                    value = stack.pop()
                    if value is not None:
                        last_value = value
                        last_name = None
                elif op == JUMP_IF_FALSE:
                    if not truth(stack.pop()):
                        pc = arg
                elif op == STORE_QUIET:
                    scope[arg] = stack.pop()
                elif op == LOOP_BACK:
                    iterations += 1
                    if iterations > max_iterations:
                        raise _iteration_limit(limits)
                    if operations > max_operations:
                        raise _graph_limit(limits)
                    pc = arg
                elif op == RETURN:
                    value = stack.pop()
                    ops, args, nodes, pc, stack, scope, function = frames.pop()
                    scopes.pop()
                    stack.append(value)
                elif op == COMPARE or op == COMPARE_CHAIN:  # noqa: SIM109
                    right = stack.pop()
                    left = stack.pop()
                    if type(left) is Size and type(right) is Size and arg[1] in ("==", "!="):
                        result = self._true if arg[0](left, right) else self._false  # as tuples
                    else:
                        if type(left) is not Tensor or type(right) is not Tensor:
                            left, right = self._operands(arg[1], left, right)
                        if left._data.size * right._data.size > max_elements:
                            context.check_broadcast(arg[1], left, right)
                        result = arg[0](left, right)
                    if op == COMPARE or not truth(result):
                        stack.append(result)
                        if op == COMPARE_CHAIN:
                            pc = arg[2]
                    else:
                        stack.append(right)
                elif op == UNARY:
                    value = lang.unshape(context, stack[-1])
                    if not isinstance(value, Tensor):
                        raise FormulaTypeError(
                            f"unary '{arg[1]}' needs a tensor, but this is {lang.kind_of(value)}"
                        )
                    operations += 1
                    stack[-1] = arg[0](value)
                elif op == NOT:
                    stack[-1] = lang.FALSE if truth(stack[-1]) else lang.TRUE
                elif op == JUMP_IF_FALSE_OR_POP:
                    if truth(stack[-1]):
                        stack.pop()
                    else:
                        pc = arg
                elif op == JUMP_IF_TRUE_OR_POP:
                    if truth(stack[-1]):
                        pc = arg
                    else:
                        stack.pop()
                elif op == SUBSCRIPT:
                    key = stack.pop()
                    value = stack[-1]
                    if type(value) is Size:  # x.shape[0] is a number, x.shape[1:] a shape
                        item = lang.get_item(lang.unshape(context, value), key)
                        stack[-1] = _shape_part(item)
                        continue
                    if not isinstance(value, Tensor):
                        raise FormulaTypeError(
                            f"only tensors can be indexed, not {lang.kind_of(value)}"
                        )
                    operations += 1
                    stack[-1] = lang.get_item(value, key)
                elif op == BUILD_SLICE:
                    stack.append(_build_slice(stack, arg))
                elif op == BUILD_INDEX:
                    items = tuple(stack[-arg:])
                    del stack[-arg:]
                    stack.append(items)
                elif op == BUILD_LIST:
                    items = stack[-arg:] if arg else []
                    if arg:
                        del stack[-arg:]
                    operations += 1
                    items = _unshape_all(context, items)
                    stack.append(lang.build_list(context, items))
                elif op == ATTRIBUTE:
                    value = lang.unshape(context, stack[-1])
                    if not isinstance(value, Tensor):
                        raise FormulaTypeError(
                            f"'.{arg}' needs a tensor, but this is {lang.kind_of(value)}"
                        )
                    stack[-1] = lang.ATTRIBUTES[arg].get(context, value)
                elif op == STORE_FRESH:
                    name, names = arg
                    value = stack.pop()
                    if (
                        type(value) is Tensor
                        and not value.requires_grad
                        and value._data.dtype.kind == "f"
                        and not self._any_users(names, scope, function)
                    ):
                        value = context.promote(value)
                    last_value = scope[name] = value
                    last_name = name
                elif op == STORE_ITEM:
                    name, depth = arg
                    keys = stack[-depth:]
                    del stack[-depth:]
                    base = stack.pop()
                    value = stack.pop()
                    operations += 1
                    last_value = scope[name] = lang.set_items(context, name, base, keys, value)
                    last_name = name
                elif op == GET_SPAN:
                    iterable = lang.unshape(context, stack.pop())
                    span = context.loop_span(iterable)
                    stack.append((iterable, span))
                    stack.append(iter(span))
                elif op == GET_ITER:
                    stack.append(context.iterate(lang.unshape(context, stack.pop())))
                elif op == END_SPAN:
                    self._end_span(stack, scope, arg)
                elif op == POP_TOP:
                    stack.pop()
                elif op == MAKE_FUNCTION:
                    count = arg.ndefaults
                    defaults = tuple(stack[-count:]) if count else ()
                    if count:
                        del stack[-count:]
                    enclosing = (scope, *function.scopes) if function is not None else ()
                    stack.append(Function(arg, defaults, enclosing))
                elif op == RAISE:
                    raise _copy_error(arg)  # the compiled program keeps the original
                elif op == HALT:
                    if operations > max_operations:
                        raise _graph_limit(limits)
                    break
                else:  # pragma: no cover - the compiler emits nothing else
                    raise AssertionError(f"unknown opcode {op}")
        except Exception as exc:
            failed_op = ops[pc - 1] if pc else None
            site = args[pc - 1] if pc else None
            node = nodes[pc - 1] if pc else None
            error: FormulaError | None = None
            if failed_op == BINARY_NUMBER_RIGHT:
                left, right = stack[-1], site[3]
            elif failed_op == BINARY_NUMBER_LEFT:
                left, right = site[3], stack[-1]
            elif failed_op == CALL_BUILTIN1:
                callee, argv = site.builtin, [stack[-1]]
            if isinstance(exc, FormulaError):
                error = exc
            elif failed_op in _OPERATOR_OPS:
                error = _operator_error(exc, site[1], left, right)
            elif failed_op in _EXPLAINED_CALLS and type(callee) is Builtin:
                error = callee.explain(exc, argv, site.nargs, site.kwnames)
            cause = None
            if error is None:  # not explained: the generic words, and a bug's traceback
                error = _convert(exc)
                cause = _unexpected(exc)
            if node is not None:
                error.at(node.line or None, node.column or None, source)
            if frames and function is not None:
                caller_nodes, caller_pc = frames[-1][2], frames[-1][3]
                call_node = caller_nodes[caller_pc - 1]
                where = (
                    f" at line {call_node.line}" if call_node is not None and call_node.line else ""
                )
                note = f"in {function.name}(), called{where}"
                error.hint = f"{error.hint}; {note}" if error.hint else note
            raise error from cause
        finally:
            context.scopes = [env]
        return Outcome(last_value, last_name)

    def _number_operator(self, op: int, arg: tuple, value: Any) -> Any:
        """``x op 2`` / ``2 op x`` when x is not a float tensor: the literal as a tensor,
        so the engine promotes as NumPy does (or the operands are refused)."""
        left, right = (value, arg[3]) if op == BINARY_NUMBER_RIGHT else (arg[3], value)
        if type(value) is not lang.Tensor:
            left, right = self._operands(arg[1], left, right)
        return arg[0](left, right)

    def _operands(self, symbol: str, left: Any, right: Any) -> tuple[Any, Any]:
        """An operator's operands when one is not a tensor: a shape becomes the vector
        of its sizes; anything else that is not a tensor is refused."""
        left = lang.unshape(self.context, left)
        right = lang.unshape(self.context, right)
        _check_operands(symbol, left, right)
        return left, right

    def _end_span(self, stack: list, scope: dict, name: str) -> None:
        """Leave a FOR_SPAN loop: pop it, and bind its variable to the last item counted
        (Python's for leaves the variable there; a loop that never ran leaves it alone)."""
        iterator = stack.pop()
        iterable, span = stack.pop()
        try:  # by index from the end: len() of a huge range overflows
            number = span[-iterator.__length_hint__() - 1]
        except IndexError:
            return
        scope[name] = self.context.loop_item(iterable, number)

    def _needs_generic(self, compiled: Compiled) -> bool:
        """Whether this run must use the generic code: ``env`` shadows a built-in the
        specialised code calls directly, or holds a function (from an earlier run) that
        may read a loop variable the specialised code leaves unset while it loops."""
        env = self.env
        if compiled.builtin_names and not env.keys().isdisjoint(compiled.builtin_names):
            return True
        lazy = compiled.lazy_names
        if lazy:
            todo = [v for v in env.values() if type(v) is Function]
            seen: set[int] = set()
            while todo:
                function = todo.pop()
                if id(function) in seen:
                    continue
                seen.add(id(function))
                if not function.code.reads.isdisjoint(lazy):
                    return True
                for scope in function.scopes:
                    todo.extend(v for v in scope.values() if type(v) is Function)
        return False


# ---------------------------------------------------------------- error helpers


def _iteration_limit(limits: Limits) -> LimitError:
    return LimitError(
        f"loops ran more than {limits.max_iterations:,} iterations",
        hint="is a while condition never false? The limit is max_iterations "
        "(CLI: --max-iterations)",
    )


def _graph_limit(limits: Limits) -> LimitError:
    return LimitError(
        f"more than {limits.max_graph_nodes:,} operations in one run",
        hint="the limit is max_graph_nodes (CLI: --max-graph-nodes)",
    )


# Helpers of `_run` for what a comprehension would do there: a comprehension in `_run`
# would make the variables it reads (the stack, the context) cells, slower in every
# instruction.


def _unshape_all(context: Any, values: list) -> list:
    return [lang.unshape(context, value) for value in values]


def _build_slice(stack: list, present: tuple[bool, bool, bool]) -> slice:
    parts = [stack.pop() if given else None for given in reversed(present)]
    parts.reverse()
    return lang.make_slice(*parts)


def _shape_part(item: Any) -> Any:
    """An item of a shape (a number) or a slice of it (a shape again)."""
    data = item._data
    if np.ndim(data) == 1:
        return lang.Size(int(v) for v in data)
    return item


def _copy_error(error: FormulaError) -> FormulaError:
    """A fresh copy of an error a compiled program raises each time it runs."""
    fresh = error.__class__(error.message)
    fresh.__dict__.update(error.__dict__)
    return fresh


def _not_callable(name: str, value: Any) -> FormulaError:
    if isinstance(value, lang.Tensor):
        label = f"'{name}'" if name else "this"
        return FormulaTypeError(
            f"{label} is a tensor, not a function",
            hint="write * for multiplication, as in a*(b + 1)",
        )
    label = f"'{name}'" if name else "this value"
    return FormulaTypeError(f"{label} is {lang.kind_of(value)}, not a function")


def _check_operands(symbol: str, left: Any, right: Any) -> None:
    for value in (left, right):
        if not isinstance(value, lang.Tensor):
            hint = None
            if value is None:
                hint = (
                    "a .grad is None until backward() has run; a function without return gives None"
                )
            elif isinstance(value, lang.Builtin | Function):
                hint = f"call it: {value.name}(...)"
            raise FormulaTypeError(
                f"'{symbol}' needs numbers or tensors, but one side is {lang.kind_of(value)}",
                hint=hint,
            )


def _operator_error(exc: Exception, symbol: str, left: Any, right: Any) -> FormulaError | None:
    """A failed operator as a shape mismatch naming both shapes, if that is what it was."""
    if isinstance(exc, ValueError | RuntimeError | IndexError):
        problem = lang.operator_problem(symbol, left, right)
        if problem is not None:
            return ShapeError(problem)
    return None


# What a formula can make NumPy or the engine raise; anything else is a bug in gradcalc.
_ANTICIPATED = (
    FormulaError,
    RuntimeError,  # the engine's PyTorch-style errors, GradError among them
    TypeError,
    ValueError,
    IndexError,
    ArithmeticError,
    MemoryError,
    RecursionError,
)


def _unexpected(exc: BaseException) -> BaseException | None:
    """The original exception when it reveals a bug (kept as __cause__ for a traceback)."""
    return None if isinstance(exc, _ANTICIPATED) else exc


def _convert(exc: BaseException) -> FormulaError:
    """Any exception raised while running, as the FormulaError a user should see."""
    if isinstance(exc, FormulaError):
        return exc
    if isinstance(exc, GradError):
        return FormulaValueError(str(exc), hint=lang.grad_error_hint(exc))
    if isinstance(exc, RecursionError):
        return LimitError("the computation nests too deeply")
    if isinstance(exc, MemoryError):
        return LimitError(
            "not enough memory for this computation",
            hint="use smaller tensors (the limit on elements is max_elements, CLI: --max-elements)",
        )
    if isinstance(exc, TypeError):
        return FormulaTypeError(str(exc))
    if isinstance(exc, IndexError):
        return ShapeError(str(exc))
    if isinstance(exc, _ANTICIPATED):
        return FormulaValueError(str(exc) or type(exc).__name__)
    return FormulaValueError(
        f"internal error ({type(exc).__name__}: {exc})",
        hint="this is a bug in gradcalc; please report the formula",
    )
