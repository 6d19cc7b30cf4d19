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

The machine (`_Machine`) runs each opcode through a small handler function
(`_HANDLERS`), except the few a scalar loop runs, which its loop writes out; each
of those, and each specialised opcode, carries its measured gain.

Speed: the machine's own work per operation is kept small beside the engine's.
Code is compiled once per Program object, dtype and limits (`Interpreter.compile`
makes that explicit: a `Compiled` runs in any interpreter with that dtype and
limits). The compiler specialises what the whole program shows to be safe, with
a generic twin for runs where it is not (a built-in called directly unless the
run's ``env`` shadows it; a loop variable nothing reads is bound once, when its
loop ends); loops test at their bottom, and the operators call the engine's
Tensor methods directly. Operations are counted one by one; the graph-size limit
is compared at loop back-edges, calls and the end.
"""

from __future__ import annotations

import gc
import itertools
import keyword
import math
import operator
from collections.abc import Iterator

from gradcalc import _numpy, _tensor
from gradcalc import builtins as lang
from gradcalc import limits as budgets
from gradcalc import syntax as ast
from gradcalc._recycle import empty_cache
from gradcalc.builtins import Builtin, Size, Tensor, truth
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

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

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
# Each instruction is an opcode in `_Code.ops` and its argument at the same index of
# `_Code.args`; `_Code.nodes` holds the AST node for error positions. The machine runs
# each opcode's handler from `_HANDLERS` (see "the machine" below).
# `_Code.generic_ops` is the same program without the specialisations that assume a
# built-in name is not shadowed or a loop variable is never read (`_specialise`): it
# runs when a run cannot assume them.

# Opcodes up to LAST_INLINE are written out in `_Machine.run`'s loop, where they cost
# no call (their measured gains are there); the others run their handler (`_HANDLERS`).
LOAD_NAME = 0  # push the value of name arg (in the round of the instruction after it)
BINARY_NUMBER = 1  # x op 2 / 2 op x: the literal goes to the engine as a Python number, as
# in PyTorch; arg = (fn, symbol, number, literal tensor, Tensor method, literal on the left)
BINARY = 2  # pop r, l; push fn(l, r); arg = (fn, symbol, Tensor method or fn)
CALL_BUILTIN1 = 3  # specialised CALL_NAME: a built-in no name of the run can shadow, one
# argument, its Tensor method (or adapter) called directly; arg = _CallSite. W2 +18%, a def +4%
STORE = 4  # pop into name arg; it becomes the program's output
FOR_SPAN = 5  # specialised FOR_ITER: counts without making the items nothing reads (see
# GET_SPAN)
FOR_ITER = 6  # a for loop's bottom: next item into arg[1], go to arg[2]; or pop, go to arg[0]
LOAD_CONST = 7  # push arg
LAST_INLINE = 7
_CHECK_EVERY = 1 << 14
"""Iterations or operations between two checks of the run's budget (time, memory): a
few milliseconds of a scalar loop, so a check costs nothing measurable."""
STORE_FRESH = 8  # like STORE, but a fresh constant becomes a leaf; arg = (name, names)
STORE_QUIET = 9  # store without becoming the output (def)
STORE_ITEM = 10  # functional x[i][j] = v; arg = (name, depth)
EXPR_STMT = 11  # pop; a non-None value becomes the program's output
POP_TOP = 12
UNARY = 13  # arg = (fn, symbol)
NOT = 14
COMPARE = 15  # arg = (fn, symbol)
COMPARE_CHAIN = 16  # arg = [fn, symbol, end]: if false push result, jump to end; else keep right
JUMP = 17
JUMP_IF_FALSE = 18  # pop; jump to arg if false
JUMP_IF_FALSE_OR_POP = 19
JUMP_IF_TRUE_OR_POP = 20
LOOP_IF_TRUE = 21  # a while loop's bottom: pop; if true count an iteration, jump to arg
GET_ITER = 22
SUBSCRIPT = 23
BUILD_LIST = 24  # arg = item count
BUILD_INDEX = 25  # arg = item count; a tuple index such as x[:, 0]
BUILD_SLICE = 26  # arg = (has_lower, has_upper, has_step)
ATTRIBUTE = 27  # arg = attribute name (whitelisted at compile time)
CALL_NAME = 28  # call the function named site.name; arg = _CallSite
CALL_METHOD = 29  # call a whitelisted method on the first argument; arg = _CallSite
CALL_VALUE = 30  # call the value below the arguments; arg = _CallSite
MAKE_FUNCTION = 31  # arg = _FunctionTemplate; pops its defaults
RETURN = 32
RAISE = 33  # arg = a FormulaError, raised when reached
HALT = 34
LOAD_BUILTIN = 35  # specialised LOAD_NAME: a built-in name the program never binds (env
# may); `y * pi - e` +8%
GET_SPAN = 36  # specialised GET_ITER for FOR_SPAN: push (iterable, span), iterator;
# W2 +12%, a def +9%
END_SPAN = 37  # specialised POP_TOP after a break out of a FOR_SPAN loop; arg = name
# Program mode (Python's values, `gradcalc.pylang`) and the statements both modes share:
PY_BINARY = 38  # pop r, l; push l op r with Python's meaning; arg = symbol
PY_INPLACE = 39  # the same for augmented assignment (x -= ... in place on a tensor)
PY_UNARY = 40  # arg = "-" or "+"
PY_COMPARE = 41  # arg = symbol ("is", "in", "<"...)
PY_COMPARE_CHAIN = 42  # arg = [symbol, end]
BUILD_TUPLE = 43  # arg = item count
BUILD_PYLIST = 44  # arg = item count: a Python list
LIST_APPEND = 45  # pop an item onto the list arg items below the top (comprehensions)
BUILD_STRING = 46  # arg = part count: join the strings
FORMAT = 47  # format the top value; arg = (conversion, spec)
GET_MEMBER = 48  # value.name by `pylang.get_member`; arg = name
SET_MEMBER = 49  # pop obj, value; obj.name = value; arg = name
UNPACK = 50  # pop a sequence of arg items; push them last first
WITH_ENTER = 51  # pop a context manager, enter it; arg = whether to push what it returns
WITH_EXIT = 52  # leave the innermost context manager entered
STORE_SUBSCR = 53  # pop key, obj, value; obj[key] = value
DELETE_NAME = 54  # forget a hidden name (an unpacked loop item); arg = name
DUP_TOP = 55  # push the top value again (a = b = value)
ASSERT_FAIL = 56  # raise AssertionError (with the message on the stack if arg)
_LAST_OP = 56

_MISSING = object()
_NO_FUNCTIONS: dict[str, Any] = {}
"""A program's calls find no language functions by name: Python's come from `_lookup`."""


class _Code:
    """Flat code for the program or one function body."""

    __slots__ = (
        "args",
        "generic_ops",
        "name",
        "nodes",
        "ops",
        "reads",
        "unit",
    )

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
    __slots__ = ("builtin", "fast", "keywords", "kwnames", "name", "nargs")

    def __init__(self, name: str, nargs: int, kwnames: tuple[str, ...]) -> None:
        self.name = name
        self.nargs = nargs
        self.kwnames = kwnames
        self.builtin: Any = None  # the Builtin of a CALL_BUILTIN1 site
        self.fast: Any = None  # what CALL_BUILTIN1 calls with a small tensor: its Tensor
        # method, or the adapter
        self.keywords: tuple[Any, tuple[str, ...]] | None = None
        """The last built-in called here with keywords, and their names in its spelling."""


class _FunctionTemplate:
    __slots__ = ("code", "name", "ndefaults", "params")

    def __init__(self, name: str, params: tuple[str, ...], ndefaults: int, code: _Code) -> None:
        self.name = name
        self.params = params
        self.ndefaults = ndefaults
        self.code = code


def _top_level_binds(code: _Code) -> frozenset[str]:
    """Every name the top-level code stores (before `_specialise` turns FOR_ITER into
    FOR_SPAN, whose loop variable is then bound by END_SPAN or _end_span: the same name)."""
    names: set[str] = set()
    for op, arg in zip(code.ops, code.args, strict=True):
        if op == STORE or op == STORE_QUIET:  # noqa: SIM109
            names.add(arg)
        elif op == STORE_FRESH or op == STORE_ITEM or op == END_SPAN:  # noqa: SIM109
            names.add(arg if op == END_SPAN else arg[0])
        elif op == FOR_ITER or op == FOR_SPAN:  # noqa: SIM109
            names.add(arg[1])
    return frozenset(names)


class Compiled:
    """A program compiled for one dtype and one set of limits, ready to run any number
    of times, by any `Interpreter` with that dtype and those limits.

    Made by `Interpreter.compile`; `Interpreter.execute` accepts it in place of the
    program. It holds no values of a run: each run binds names in its interpreter's
    ``env``. Its literal tensors are shared, read-only constants.
    """

    __slots__ = (
        "binds",
        "builtin_names",
        "code",
        "dtype",
        "lazy_names",
        "limits",
        "program",
        "python",
        "source",
    )

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
        """Built-in names the specialised code calls directly, assuming nothing in ``env``
        shadows them (a loaded one, such as a request's variable ``t``, may be shadowed)."""
        self.lazy_names = lazy_names
        """Loop variables the specialised code leaves unset until their loop ends."""
        self.source: str | None = None
        """The text it was compiled from, if any, for the caret of a run's errors."""
        self.python = False
        """Compiled for program mode (Python's values)."""
        self.binds: frozenset[str] = _top_level_binds(code)
        """The names a run can bind in ``env`` (function bodies bind in their own scopes):
        all that `Interpreter.execute` saves to undo a failed run, so an entry costs the
        same in a REPL session of 50,000 names as in a fresh one."""


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
    __slots__ = ("breaks", "continues", "is_for", "withs")

    def __init__(self, is_for: bool, withs: int = 0) -> None:
        self.is_for = is_for
        self.withs = withs  # with blocks open where the loop starts
        self.breaks: list[int] = []
        self.continues: list[int] = []


_BINARY = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
    "//": operator.floordiv,
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
    "//": "floordiv",
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
_FORMULA_MODULES = {"torch": "torch", "gradcalc": "gradcalc", "F": "torch.nn.functional"}
"""Prefixes a formula may use without importing them: ``torch.exp(x)`` is ``exp(x)``."""


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
        self.fors: list[tuple[_Code, int, int, int | None, str]] = []
        self.program = interp.program  # Python's values (`gradcalc run`)
        self.withs = 0  # with blocks open in the code being compiled
        self.hidden = 0  # hidden names made so far (unpacked loop items)

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
        compiled.python = self.program
        return compiled

    def _specialise(self) -> tuple[frozenset[str], frozenset[str]]:
        if self.program:  # names are Python's built-ins, nothing to specialise
            for code in self.codes:
                code.reads = frozenset(
                    a for o, a in zip(code.ops, code.args, strict=True) if o == LOAD_NAME
                )
                code.unit = self.code
            return frozenset(), frozenset()
        return self._specialise_formula()

    def _specialise_formula(self) -> tuple[frozenset[str], frozenset[str]]:
        """Rewrite what the whole program shows to be safe, keeping the generic twin:
        a call or load of a built-in name the program never assigns goes straight to the
        built-in (unless, at run time, ``env`` holds that name), and a ``for`` loop whose
        variable the program never reads counts without making its items (unless a
        function defined by an earlier run could read it). Returns those built-in names
        and loop variables, for `Interpreter._needs_generic`.
        """
        builtin_names, everything_read = self._specialise_builtins(self._assigned_names())
        lazy_names: set[str] = set()
        for code, get_iter, next_item, pad, target in self.fors:
            if target in everything_read:
                continue
            if code.generic_ops is code.ops:
                code.generic_ops = list(code.ops)
            code.ops[get_iter] = GET_SPAN
            code.ops[next_item] = FOR_SPAN
            if pad is not None:
                code.ops[pad] = END_SPAN
            lazy_names.add(target)
        return frozenset(builtin_names), frozenset(lazy_names)

    def _assigned_names(self) -> set[str]:
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
        return assigned

    def _specialise_builtins(self, assigned: set[str]) -> tuple[set[str], set[str]]:
        """LOAD_BUILTIN and CALL_BUILTIN1 where the program never assigns the name; also
        records the names each code reads. Returns the names CALL_BUILTIN1 calls (which
        nothing in ``env`` may shadow) and every name read.
        (A direct call of built-ins with more arguments gained under 2%: they use CALL_NAME.)
        """
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
                        ops[index] = LOAD_BUILTIN  # (env may bind it: `_load_builtin` looks)
                elif op == CALL_NAME:
                    reads.add(arg.name)
                    builtin = lang.FUNCTIONS.get(arg.name)
                    if arg.name not in assigned and _calls_one_tensor(arg, builtin):
                        arg.builtin = builtin
                        arg.fast = builtin.direct() or builtin.impl
                        builtin_names.add(arg.name)
                        ops[index] = CALL_BUILTIN1
                elif op == STORE_ITEM:
                    reads.add(arg[0])
                elif op == MAKE_FUNCTION:
                    reads |= read_by[id(arg.code)]
            code.reads = frozenset(reads)
            code.unit = self.code
            read_by[id(code)] = reads
            if ops != generic:
                code.generic_ops = generic
        return builtin_names, set().union(*read_by.values())

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
                value = child.value if self.program else self._number(child.value)
                self.emit(LOAD_CONST, value, child)
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
        try:
            value = float(value)
        except OverflowError:  # an int literal beyond floats
            value = math.inf
        key = value.hex()
        constant = self.constants.get(key)
        if constant is None:
            constant = self.constants[key] = self.interp._literal(float(value))
        return constant

    # -- expressions

    def _num(self, node: ast.Num) -> Iterator:
        self.emit(LOAD_CONST, node.value if self.program else self._number(node.value), node)
        yield from ()

    def _bool(self, node: ast.Bool) -> Iterator:
        if self.program:
            self.emit(LOAD_CONST, node.value, node)
        else:
            self.emit(LOAD_CONST, lang.TRUE if node.value else lang.FALSE, node)
        yield from ()

    def _str(self, node: ast.Str) -> Iterator:
        self.emit(LOAD_CONST, node.value, node)
        yield from ()

    def _none(self, node: ast.NoneLit) -> Iterator:
        self.emit(LOAD_CONST, None, node)
        yield from ()

    def _fstring(self, node: ast.FString) -> Iterator:
        for part in node.parts:
            if type(part) is str:
                self.emit(LOAD_CONST, part, node)
            else:
                yield part.value
                self.emit(FORMAT, (part.conversion, part.spec), part)
        self.emit(BUILD_STRING, len(node.parts), node)

    def _listcomp(self, node: ast.ListComp) -> Iterator:
        # As in Python 3, a function called at once: its loop variables stay its own.
        outer = (self.code, self.loops, self.in_function, self.withs)
        body = _Code("<listcomp>")
        self.codes.append(body)
        self.code, self.loops, self.in_function, self.withs = body, [], True, 0
        yield from self._comprehension(node)
        self.emit(RETURN, None, node)
        self.code, self.loops, self.in_function, self.withs = outer
        self.emit(MAKE_FUNCTION, _FunctionTemplate("<listcomp>", (), 0, body), node)
        self.emit(CALL_VALUE, _CallSite("<listcomp>", 0, ()), node)

    def _comprehension(self, node: ast.ListComp) -> Iterator:
        self.emit(BUILD_PYLIST if self.program else BUILD_LIST, 0, node)
        loops = []
        for generator in node.generators:
            yield generator.iter
            self.emit(GET_ITER, None, generator.iter)
            to_next = self.emit(JUMP, None, generator)
            head = [None, None, self.here()]
            head[1] = self._loop_target(generator.target, generator)
            skips = []
            for condition in generator.ifs:
                yield condition
                skips.append(self.emit(JUMP_IF_FALSE, None, condition))
            loops.append((to_next, head, skips, generator))
        yield node.elt
        self.emit(LIST_APPEND, len(node.generators) + 1, node)
        for to_next, head, skips, generator in reversed(loops):
            self.patch(to_next)
            for index in skips:
                self.patch(index)
            self.emit(FOR_ITER, head, generator)
            head[0] = self.here()

    def _loop_target(self, target: str | list[str], node: ast.Node) -> str:
        """The name a loop's FOR_ITER binds; for ``for a, b in ...`` a hidden one, unpacked
        into the names at the top of the body."""
        if type(target) is str:
            self._check_target_name(target, node)
            return target
        self.hidden += 1
        hidden = f".item{self.hidden}"
        self.emit(LOAD_NAME, hidden, node)
        self.emit(UNPACK, len(target), node)
        for name in target:
            self._check_target_name(name, node)
            self.emit(STORE_QUIET, name, node)
        return hidden

    def _import(self, node: ast.Import) -> Iterator:
        from gradcalc import pylang

        for alias in node.names:
            try:
                module = pylang.import_module(alias.name)
                if alias.asname is None and "." in alias.name:
                    name, module = (
                        alias.name.split(".")[0],
                        pylang.import_module(alias.name.split(".")[0]),
                    )
                else:
                    name = alias.asname or alias.name
            except FormulaError as exc:
                self.emit(
                    RAISE, exc.at(alias.line or None, alias.column or None, self.source), alias
                )
                continue
            self.emit(LOAD_CONST, module, alias)
            self.emit(STORE_QUIET, name, alias)
        yield from ()

    def _import_from(self, node: ast.ImportFrom) -> Iterator:
        from gradcalc import pylang

        for alias in node.names:
            try:
                module = pylang.import_module(node.module)
                full = f"{node.module}.{alias.name}"
                if full in pylang.MODULES:
                    value = pylang.MODULES[full]
                elif alias.name in module.members:
                    value = module.members[alias.name]
                else:
                    raise UnknownNameError(
                        f"cannot import name '{alias.name}' from '{node.module}'",
                        hint=_did_you_mean(alias.name, module.members),
                    )
            except FormulaError as exc:
                self.emit(
                    RAISE, exc.at(alias.line or None, alias.column or None, self.source), alias
                )
                continue
            self.emit(LOAD_CONST, value, alias)
            self.emit(STORE_QUIET, alias.asname or alias.name, alias)
        yield from ()

    def _with(self, node: ast.With) -> Iterator:
        for item in node.items:
            yield item.context
            self.emit(WITH_ENTER, item.name is not None, item)
            if item.name is not None:
                self._check_target_name(item.name, item)
                self.emit(STORE_QUIET, item.name, item)
            self.withs += 1
        yield from node.body
        for item in reversed(node.items):
            self.emit(WITH_EXIT, None, item)
            self.withs -= 1

    def _exit_withs(self, count: int, node: ast.Node) -> None:
        for _ in range(count):
            self.emit(WITH_EXIT, None, node)

    def _name(self, node: ast.Name) -> Iterator:
        self.emit(LOAD_NAME, node.id, node)
        yield from ()

    def _list(self, node: ast.ListExpr | ast.TupleExpr) -> Iterator:
        if self.program:
            yield from node.items
            op = BUILD_PYLIST if type(node) is ast.ListExpr else BUILD_TUPLE
            self.emit(op, len(node.items), node)
            return
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
        if self.program:
            yield operand
            self.emit(NOT if node.op == "not" else PY_UNARY, node.op, node)
            return
        if node.op == "-" and type(operand) is ast.Num:
            self.emit(LOAD_CONST, self._number(-float(operand.value)), node)
            return
        yield operand
        if node.op == "not":
            self.emit(NOT, None, node)
        else:
            self.emit(UNARY, (_UNARY[node.op], node.op), node)

    def _binop(self, node: ast.BinOp) -> Iterator:
        if self.program:  # a left-deep chain down its left spine, as below
            spine = []
            current: Any = node
            while type(current) is ast.BinOp:
                spine.append(current)
                current = current.left
            yield current
            for binop in reversed(spine):
                yield binop.right
                self.emit(PY_BINARY, binop.op, binop)
            return
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
            self._emit_number_op(first.op, left, first, literal_left=True)
        else:
            yield first.left
            yield from self._right_operand(first)
        for binop in spine[1:]:
            yield from self._right_operand(binop)

    def _right_operand(self, node: ast.BinOp) -> Iterator:
        number = _literal_number(node.right)
        if number is None and (type(node.left) in _STRINGS or type(node.right) in _STRINGS):
            yield node.right  # 'x = ' + ...: Python's operator (sizes checked)
            self.emit(PY_BINARY, node.op, node)
        elif number is None:
            yield node.right
            self._emit_binary(node.op, node)
        else:
            self._emit_number_op(node.op, number, node)

    def _emit_binary(self, symbol: str, node: ast.Node) -> None:
        fn = _BINARY[symbol]
        self.emit(BINARY, (fn, symbol, _tensor_method(symbol) or fn), node)

    def _emit_number_op(
        self, symbol: str, number: float, node: ast.Node, literal_left: bool = False
    ) -> None:
        fn = _BINARY[symbol]
        if literal_left:
            reflected = _tensor_method(symbol, reflected=True)
            method = (lambda x, n: fn(n, x)) if reflected is None else reflected
        else:
            method = _tensor_method(symbol) or fn
        arg = (fn, symbol, number, self._number(number), method, literal_left)
        self.emit(BINARY_NUMBER, arg, node)

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
        python = self.program or any(op not in _COMPARE for op in node.ops)
        for index, (symbol, right) in enumerate(zip(node.ops, node.comparators, strict=True)):
            yield right
            if python:
                if index < last:
                    chain.append(self.emit(PY_COMPARE_CHAIN, [symbol, None], node))
                else:
                    self.emit(PY_COMPARE, symbol, node)
            elif index < last:
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
        if type(func) is ast.Attribute and (self.program or _on_module(func)):
            yield func
            yield from node.args
            yield from (k.value for k in node.keywords)
            self.emit(CALL_VALUE, _CallSite(func.attr, len(node.args), kwnames), func)
        elif type(func) is ast.Attribute:
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
        if self.program or _on_module(node):
            yield node.value
            self.emit(GET_MEMBER, node.attr, node)
            return
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
        kind = type(target)
        if (self.program and kind is not ast.Subscript) or kind in (
            ast.Attribute,
            ast.TupleExpr,
            ast.ListExpr,
        ):
            yield node.value
            yield from self._store_target(target, node)
            return
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

    def _store_target(self, target: ast.Node, node: ast.Node) -> Iterator:
        """Store the value on the stack into ``target`` (a name, x.attr, x[i], or a tuple of
        those, unpacked)."""
        kind = type(target)
        if kind is ast.Name:
            self._check_target_name(target.id, target)
            self.emit(STORE, target.id, node)
        elif kind is ast.Attribute:
            yield target.value
            self.emit(SET_MEMBER, target.attr, target)
        elif kind is ast.Subscript and self.program:
            yield target.value
            yield from self._index(target.index)
            self.emit(STORE_SUBSCR, None, target)
        elif kind is ast.Subscript:
            self.hidden += 1
            hidden = f".value{self.hidden}"
            self.emit(STORE_QUIET, hidden, node)
            yield from self._assign(
                ast.Assign(target, ast.Name(hidden), line=node.line, column=node.column)
            )
            self.emit(DELETE_NAME, hidden, node)
        elif kind is ast.TupleExpr or kind is ast.ListExpr:
            self.emit(UNPACK, len(target.items), target)
            for item in target.items:
                yield from self._store_target(item, node)
        else:
            raise self.error(ParseError, "cannot assign to this", target)

    def _check_target_name(self, name: str, node: ast.Node) -> None:
        if name in _KEYWORDS:
            raise self.error(ParseError, f"'{name}' is a keyword and cannot be assigned", node)

    def _augassign(self, node: ast.AugAssign) -> Iterator:
        target = node.target
        if self.program or type(target) is ast.Attribute:
            # x op= v: in place where the value allows it (a tensor under no_grad), as Python
            yield target
            yield node.value
            self.emit(PY_INPLACE, node.op, node)
            yield from self._store_target(target, node)
            return
        if type(target) is ast.Name:
            self._check_target_name(target.id, target)
            self.emit(LOAD_NAME, target.id, target)
            number = _literal_number(node.value)
            if number is None:
                yield node.value
                self._emit_binary(node.op, node)
            else:
                self._emit_number_op(node.op, number, node)
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

    # Loops test at their bottom, entered by a jump there: one dispatch per iteration
    # for the loop itself.

    def _while(self, node: ast.While) -> Iterator:
        to_test = self.emit(JUMP, None, node)
        body = self.here()
        loop = _Loop(is_for=False, withs=self.withs)
        self.loops.append(loop)
        yield from node.body
        self.loops.pop()
        self.patch(to_test)
        for index in loop.continues:
            self.patch(index)
        yield node.test
        self.emit(LOOP_IF_TRUE, body, node)
        for index in loop.breaks:
            self.patch(index)

    def _for(self, node: ast.For) -> Iterator:
        yield node.iter
        get_iter = self.emit(GET_ITER, None, node.iter)
        to_next = self.emit(JUMP, None, node)
        body = self.here()
        target = self._loop_target(node.target, node)
        head = [None, target, body]  # [end, variable, body]
        loop = _Loop(is_for=True, withs=self.withs)
        self.loops.append(loop)
        yield from node.body
        self.loops.pop()
        self.patch(to_next)
        for index in loop.continues:
            self.patch(index)
        next_item = self.emit(FOR_ITER, head, node)
        pad = None
        if loop.breaks:  # a break leaves the iterator on the stack
            pad = self.emit(POP_TOP, node.target, node)
            for index in loop.breaks:
                self.patch(index, pad)
        head[0] = self.here()
        if not self.program and target == node.target:
            self.fors.append((self.code, get_iter, next_item, pad, target))

    def _def(self, node: ast.FunctionDef) -> Iterator:
        self._check_target_name(node.name, node)
        yield from self._function(node.name, node.params, node.body, node)
        self.emit(STORE_QUIET, node.name, node)

    def _lambda(self, node: ast.Lambda) -> Iterator:
        body = [ast.Return(node.body, line=node.body.line, column=node.body.column)]
        yield from self._function("<lambda>", node.params, body, node)

    def _function(self, name: str, params: list, statements: list, node: ast.Node) -> Iterator:
        """MAKE_FUNCTION of a body compiled into its own code (defaults evaluated here)."""
        node = ast.FunctionDef(name, params, statements, line=node.line, column=node.column)
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
        outer = (self.code, self.loops, self.in_function, self.withs)
        body = _Code(node.name)
        self.codes.append(body)
        self.code, self.loops, self.in_function, self.withs = body, [], True, 0
        yield from node.body
        self.emit(LOAD_CONST, None, node)
        self.emit(RETURN, None, node)
        self.code, self.loops, self.in_function, self.withs = outer
        ndefaults = sum(p.default is not None for p in node.params)
        template = _FunctionTemplate(node.name, tuple(names), ndefaults, body)
        self.emit(MAKE_FUNCTION, template, node)

    def _assert(self, node: ast.Assert) -> Iterator:
        yield node.test
        to_fail = self.emit(JUMP_IF_FALSE, None, node)
        to_end = self.emit(JUMP, None, node)
        self.patch(to_fail)
        if node.msg is not None:
            yield node.msg
        self.emit(ASSERT_FAIL, node.msg is not None, node)
        self.patch(to_end)

    def _chain_assign(self, node: ast.ChainAssign) -> Iterator:
        yield node.value
        for target in node.targets[:-1]:
            self.emit(DUP_TOP, None, node)
            yield from self._store_target(target, node)
        yield from self._store_target(node.targets[-1], node)

    def _return(self, node: ast.Return) -> Iterator:
        if not self.in_function:
            raise self.error(ParseError, "'return' outside a function", node)
        if node.value is None:
            self.emit(LOAD_CONST, None, node)
        else:
            yield node.value
        self._exit_withs(self.withs, node)
        self.emit(RETURN, None, node)

    def _pass(self, node: ast.Pass) -> Iterator:
        yield from ()

    def _break(self, node: ast.Break) -> Iterator:
        if not self.loops:
            raise self.error(ParseError, "'break' outside a loop", node)
        self._exit_withs(self.withs - self.loops[-1].withs, node)
        self.loops[-1].breaks.append(self.emit(JUMP, None, node))
        yield from ()

    def _continue(self, node: ast.Continue) -> Iterator:
        if not self.loops:
            raise self.error(ParseError, "'continue' outside a loop", node)
        self._exit_withs(self.withs - self.loops[-1].withs, node)
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
    ast.Str: _Compiler._str,
    ast.NoneLit: _Compiler._none,
    ast.FString: _Compiler._fstring,
    ast.ListComp: _Compiler._listcomp,
    ast.Import: _Compiler._import,
    ast.ImportFrom: _Compiler._import_from,
    ast.With: _Compiler._with,
    ast.Lambda: _Compiler._lambda,
    ast.ChainAssign: _Compiler._chain_assign,
    ast.Assert: _Compiler._assert,
}


def _on_module(node: ast.Attribute) -> bool:
    """``torch.x``, ``F.x``, ``math.x``: a member of a module (resolved at run time)."""
    return type(node.value) is ast.Name and (
        node.value.id in _MODULE_NAMES or node.value.id in _FORMULA_MODULES
    )


# ---------------------------------------------------------------------- helpers


def _calls_one_tensor(site: _CallSite, builtin: Any) -> bool:
    """A call CALL_BUILTIN1 can make: a built-in with one positional argument."""
    return builtin is not None and site.nargs == 1 and not site.kwnames and not builtin.context


def _short(value: Any) -> str:
    if type(value) is Tensor and value.ndim == 0:
        number = float(value.item())
        return str(int(number)) if number.is_integer() else repr(number)
    return "..."


_SUGGEST_FROM = 200
"""Names bound last in each scope that a NameError's "did you mean" looks at: a REPL
session of 50,000 names would otherwise make each typo cost milliseconds more."""


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


_CACHE: dict[tuple[int, str, Limits, bool], Compiled] = {}
_CACHE_SIZE = 256
_CACHE_INSTRUCTIONS = 20_000
"""Only programs up to this many instructions are kept (a 1 MB formula is not)."""


def _cached_compile(interp: Interpreter, program: ast.Program) -> Compiled:
    """The compiled form of a Program object, kept while the cache holds it (the entry
    holds the program, so its id cannot be reused by another): a batch or a finite-
    difference check runs one parsed program many times."""
    key = (id(program), interp.dtype, interp.limits, interp.program)
    compiled = _CACHE.get(key)
    if compiled is not None and compiled.program is program:
        return compiled
    compiled = _compile(interp, program, None)
    if len(compiled.code.ops) <= _CACHE_INSTRUCTIONS:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = compiled
    return compiled


class _LatePylang:
    """`gradcalc.pylang` (Python's values and built-ins: programs, ``print``, imports),
    imported at its first use, when it takes this stand-in's place: a formula seldom
    needs it, and its import was ~1 ms of every one-shot command's start."""

    def __getattr__(self, name: str) -> Any:
        global pylang
        from gradcalc import pylang as module

        pylang = module
        return getattr(module, name)


pylang: Any = _LatePylang()

# -------------------------------------------------------------------- interpreter


class Interpreter:
    """Runs programs in a persistent environment (a REPL session, or one CLI command).

    ``env`` maps the user's names to tensors, functions or other values. Bound
    variables and assignments of fresh constants are differentiable leaves;
    ``execute`` is transactional: if it raises, ``env`` holds the same names
    and values as before (gradients already accumulated are not rolled back).
    """

    unbound_hint = "bind it on the command line: {name}=2, or assign it first: {name} = 2"
    """How an undefined name can get a value, in the words of the surface running the
    program (``gradcalc.api`` sets the batch's and the REPL's)."""

    def __init__(
        self,
        dtype: str = "float64",
        seed: int | None = None,
        limits: Limits | None = None,
        *,
        program: bool = False,
        write: Any = None,
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
        self._builtin_values: dict[str, Any] = {}
        self.program = program
        """Python's values and built-ins (``gradcalc run``): ``2`` is an int, ``[1, 2]`` a
        list, names are Python's (`gradcalc.pylang`); else the formula language's."""
        self._write = write
        self._run_context: pylang.RunContext | None = None
        self._callbacks = 0  # program functions the Python API is calling back, nested
        self._source: str | None = None  # the text being run, for callbacks' errors
        self.prints = program or write is not None
        """Whether ``print`` is a built-in: in programs, and in formula sessions that say
        where it writes (the REPL); a one-shot formula's output is its value."""

    @property
    def run_context(self) -> pylang.RunContext:
        """Where ``print`` writes (``write(text)``), and the limits Python's values obey;
        made when first needed (a formula's run seldom needs it)."""
        context = self._run_context
        if context is None:
            context = self._run_context = pylang.RunContext(
                self.limits, self._write or pylang.stdout_write
            )
        return context

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
        self.env[name] = self.context.leaf(value, requires_grad, name)

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
        saved: dict[str, Any] = {}
        try:
            if source is not None:
                from gradcalc.parser import parse

                compiled = _compile(self, parse(source, limits=self.limits), source)
            elif type(source_or_program) is Compiled:
                compiled = source_or_program
                source = compiled.source
                if (
                    compiled.dtype != self.dtype
                    or compiled.limits != self.limits
                    or compiled.python != self.program
                ):
                    compiled = _compile(self, compiled.program, source)
            else:
                compiled = _cached_compile(self, source_or_program)
            binds = compiled.binds
            if binds:  # (a frozenset: iterated twice in one order; no comprehension's frame)
                before = map(self.env.get, binds, itertools.repeat(_MISSING))
                saved = dict(zip(binds, before, strict=True))
            with _numpy.errstate(), _numpy.ignoring_warnings():
                self._source = source
                try:
                    return self._run(compiled, source)
                finally:
                    empty_cache()  # a program is a unit of work: free buffers go back
        except BaseException as exc:
            for name, value in saved.items():  # only what the run could bind (`Compiled.binds`)
                if value is _MISSING:
                    self.env.pop(name, None)
                else:
                    self.env[name] = value
            if isinstance(exc, FormulaError):
                if exc.source is None and source is not None:
                    exc.source = source
                raise
            if not isinstance(exc, Exception):
                raise
            raise _convert(exc).at(None, None, source) from _unexpected(exc)

    # -- values made by the compiler

    def _literal(self, number: float) -> Any:
        return self.context.number_literal(number)

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
        if self.program:
            return self._lookup_python(name, function)
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
        if name == "print" and self.prints:
            return pylang.BUILTINS["print"]
        if name in _FORMULA_MODULES:  # torch.exp(x): the language's exp
            return pylang.MODULES[_FORMULA_MODULES[name]]
        constant = lang.CONSTANTS.get(name)
        if constant is not None:
            value = self.context.number_literal(constant.value)
        else:
            value = lang.FUNCTIONS.get(name)
        if value is None:
            raise self._unknown_name(name, function, called)
        self._builtin_values[name] = value
        return value

    def python_callable(self, function: Function) -> Any:
        """A program's function as a Python callable, for the Python API to call back
        (``torch.autograd.functional.jacobian(f, x)``, ``x.register_hook(hook)``): each
        call runs the function's code on a machine of its own, under the same limits."""

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call_back(function, args, kwargs)

        call.__name__ = call.__qualname__ = function.name
        return call

    def _call_back(self, function: Function, args: tuple, kwargs: dict) -> Any:
        depth = max(self.limits.max_call_depth // 10, 1)
        if self._callbacks >= depth:
            raise LimitError(
                f"the Python API calls back the program's functions more than {depth} deep",
                hint="the limit is a tenth of max_call_depth (CLI: --max-call-depth)",
            )
        code = _Code(function.name)
        count = 1 + len(args) + len(kwargs)
        code.ops += [LOAD_CONST] * count + [CALL_VALUE, HALT]
        code.args += [function, *args, *kwargs.values()]
        code.args += [_CallSite(function.name, len(args), tuple(kwargs)), None]
        code.nodes += [None] * len(code.ops)
        code.unit = code
        compiled = Compiled(
            code, ast.Program([]), self.dtype, self.limits, frozenset(), frozenset()
        )
        compiled.python = self.program
        scopes = self.context.scopes
        self._callbacks += 1
        machine = _Machine(self, compiled)
        try:
            machine.run()
        except Exception as exc:
            error, cause = machine.error(exc, self._source)
            raise error from cause
        finally:
            self._callbacks -= 1
            self.context.scopes = scopes
            while machine.managers:
                machine.managers.pop().__exit__(None, None, None)
        return machine.stack[-1]

    def show(self, value: Any) -> str:
        """``repr(value)`` as this interpreter's programs print it (a grad_fn with its
        stable number, `pylang.show`): what the REPL shows of an expression."""
        return pylang.show(value, self.run_context)

    def _lookup_python(self, name: str, function: Function | None) -> Any:
        if function is not None:
            for scope in function.scopes:
                value = scope.get(name, _MISSING)
                if value is not _MISSING:
                    return value
        value = self.env.get(name, _MISSING)
        if value is not _MISSING:
            return value
        value = pylang.BUILTINS.get(name)
        if value is not None:
            return value
        if name == "__name__":
            return "__main__"  # (a program runs as python's main module)
        if name in _MODULE_NAMES:
            hint = (
                "import it first: import torch"
                if name != "F"
                else ("import it first: import torch.nn.functional as F")
            )
        else:
            candidates = [*pylang.BUILTINS, *itertools.islice(reversed(self.env), _SUGGEST_FROM)]
            if function is not None:
                for scope in function.scopes:
                    candidates += scope
            hint = _did_you_mean(name, candidates)
            if hint is None and name in lang.FUNCTIONS:
                hint = f"did you mean torch.{name}? (import torch first)"
        return_error = UnknownNameError(f"name '{name}' is not defined", hint=hint)
        raise return_error

    def _any_users(self, names: tuple[str, ...], scope: dict, function: Function | None) -> bool:
        """Whether the user has bound any of these built-in names."""
        return any(self._is_users(name, scope, function) for name in names)

    def _is_users(self, name: str, scope: dict, function: Function | None) -> bool:
        if name in scope or name in self.env:
            return True
        return function is not None and any(name in s for s in function.scopes)

    def _unknown_name(self, name: str, function: Function | None, called: bool) -> FormulaError:
        visible = set(lang.FUNCTIONS) | set(lang.CONSTANTS)
        scopes = [self.env, *self.context.scopes, *(function.scopes if function else ())]
        for scope in {id(scope): scope for scope in scopes}.values():
            visible.update(itertools.islice(reversed(scope), _SUGGEST_FROM))
        suggestion = _did_you_mean(name, visible)
        if name in _MODULE_NAMES:
            return UnknownNameError(
                f"'{name}' is not defined: functions and methods need no module prefix",
                hint="write exp(x) or x.exp(), not torch.exp(x)",
            )
        if called and name == "print" and not self.prints:
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
        bind = self.unbound_hint.format(name=name)
        return UnknownNameError(
            f"'{name}' is not defined",
            hint=f"{suggestion} Or {bind}" if suggestion else bind,
        )

    # -- running

    def _run(self, compiled: Compiled, source: str | None) -> Outcome:
        """Run compiled code on a `_Machine`; what it raises becomes the FormulaError a
        user sees, at the position of the instruction that failed."""
        machine = _Machine(self, compiled)
        try:
            budget = budgets.current()
            if budget is not None:  # a run inside a request: its budget (as `running` does)
                machine.budget = budget
                machine.run()
            else:
                with budgets.running(self.limits) as machine.budget:
                    machine.run()
        except Exception as exc:
            error, cause = machine.error(exc, source)
            raise error from cause
        finally:
            self.context.scopes = [self.env]
            while machine.managers:  # an error inside `with torch.no_grad():`
                machine.managers.pop().__exit__(None, None, None)
        if self.program and _ends_without_value(compiled.program):
            return Outcome(None)  # (what a notebook cell shows: only a last expression)
        return Outcome(machine.last_value, machine.last_name)

    def _needs_generic(self, compiled: Compiled) -> bool:
        """Whether this run must use the generic code: ``env`` shadows a built-in the
        specialised code calls directly, or holds a function (from an earlier run) that
        may read a loop variable the specialised code leaves unset while it loops.

        Only functions the run can reach are looked at: those named by what the program
        reads, what they read in ``env``, and their closures' functions (a REPL session
        of 50,000 names costs no more per run than a fresh one)."""
        env = self.env
        if compiled.builtin_names and not env.keys().isdisjoint(compiled.builtin_names):
            return True
        lazy = compiled.lazy_names
        if lazy:
            todo = _functions_named(env, compiled.code.reads)
            seen: set[int] = set()
            while todo:
                function = todo.pop()
                if id(function) in seen:
                    continue
                seen.add(id(function))
                if not function.code.reads.isdisjoint(lazy):
                    return True
                todo += _functions_named(env, function.code.reads)
                for scope in function.scopes:
                    todo.extend(v for v in scope.values() if type(v) is Function)
        return False


def axis_notes(program: ast.Program) -> list[str]:
    """Notes for ``max(x, 0)``/``min(x, 0)`` in a formula: the number is an axis (as in
    PyTorch's ``torch.max(x, dim)``), which is seldom what was meant by it."""
    notes: list[str] = []
    todo: list[Any] = [program]
    while todo:  # (iterative: the program may nest as deep as the limits allow)
        node = todo.pop()
        if isinstance(node, ast.Node):
            if (
                type(node) is ast.Call
                and type(node.func) is ast.Name
                and node.func.id in ("max", "min")
                and len(node.args) == 2
                and _literal_number(node.args[1]) is not None
            ):
                name = node.func.id
                other = "maximum" if name == "max" else "minimum"
                x, number = parse_pretty(node.args[0]), parse_pretty(node.args[1])
                which = "larger" if name == "max" else "smaller"
                note = (
                    f"{name}({x}, {number}) reduces along axis {number} (as PyTorch's "
                    f"torch.{name}(x, dim)); the elementwise {which} of {x} and {number} "
                    f"is {other}({x}, {number})"
                )
                if note not in notes:
                    notes.append(note)
            todo += [getattr(node, name) for name in type(node).__match_args__]
        elif type(node) is list:
            todo += node
    return notes


def parse_pretty(node: ast.Node) -> str:
    from gradcalc.parser import pretty

    return pretty(node)


def _ends_without_value(program: ast.Program | None) -> bool:
    """A program whose last statement is a block, an import...: it shows no value."""
    if program is None or not program.body:
        return True
    return type(program.body[-1]) not in (ast.ExprStmt, ast.Assign, ast.AugAssign)


def _functions_named(env: dict[str, Any], names: frozenset[str]) -> list[Function]:
    """The user functions that ``names`` hold in ``env``."""
    return [v for v in map(env.get, names) if type(v) is Function]


# --------------------------------------------------------------------- the machine
# The gains written beside opcodes are CPU instructions per loop iteration, counted
# with callgrind (deterministic, unlike wall time on a shared machine), of scalar loops
# run 1,000 times: W2's `y = sin(y * 0.9 + x) * 0.95`, and others with `def`, `while`,
# `if`, built-in calls and arithmetic. "W2 +9%" means W2 runs 9% more instructions
# without it: through its handler instead, for an opcode written out in `run`; with
# the generic twin instead, for a specialised one.


class _Machine:
    """One run of compiled code: a stack machine, user-function calls as frames.

    The opcodes up to LAST_INLINE are written out in `run`'s loop; every other opcode
    has a handler in `_HANDLERS`, called as ``handler(machine, arg, pc)`` with ``pc``
    the index of the next instruction. A handler returns the index to go on at, or -1
    after it switched frames (a call or return of a user function) or ended the run.

    Operations are counted one by one, but the graph-size limit is compared where a run
    may go on indefinitely (loop back-edges, calls) and at the end; between two
    comparisons only a stretch of straight code runs. What is compared there is the
    next checkpoint (`next_iterations`, `next_operations`: every `_CHECK_EVERY` at most,
    sooner when the limits are lower), where `checkpoint` checks the limits and the
    run's `Budget` (time, memory) at no cost to the operations in between.
    """

    __slots__ = (
        "args",
        "argv",
        "budget",
        "builtin_values",
        "callee",
        "context",
        "done",
        "fault",
        "frames",
        "function",
        "functions",
        "interp",
        "iterations",
        "last_name",
        "last_value",
        "limits",
        "managers",
        "next_iterations",
        "next_operations",
        "nodes",
        "operations",
        "ops",
        "pc",
        "scope",
        "scopes",
        "stack",
        "unit",
    )

    def __init__(self, interp: Interpreter, compiled: Compiled) -> None:
        self.interp = interp
        self.context = interp.context
        self.limits = interp.limits
        self.builtin_values = interp._builtin_values
        self.functions = _NO_FUNCTIONS if interp.program else lang.FUNCTIONS
        self.scopes = interp.context.scopes = [interp.env]  # built-ins reach scopes here
        self.frames: list[tuple] = []  # the callers' (ops, args, nodes, pc, stack, scope, function)
        self.iterations = 0  # both limits count per run
        self.operations = 0
        self.budget: budgets.Budget | None = None  # set by Interpreter._run
        self.next_iterations = min(self.limits.max_iterations, _CHECK_EVERY)
        self.next_operations = min(self.limits.max_graph_nodes, _CHECK_EVERY)
        self.last_value: Any = None
        self.last_name: str | None = None
        self.callee: Any = None  # the last call's callee and arguments, to explain a failure
        self.argv: list = []
        self.done = False
        self.fault = -1  # the index of the instruction that raised
        self.managers: list = []  # context managers entered (with), innermost last
        self.unit = None if interp._needs_generic(compiled) else compiled.code
        self.start(compiled.code, interp.env, None)

    def start(self, code: _Code, scope: dict, function: Function | None) -> None:
        """Make ``code`` the running frame, from its first instruction."""
        generic = code.unit is not self.unit  # (a function of an earlier run: made for it)
        self.ops = code.generic_ops if generic else code.ops
        self.args = code.args
        self.nodes = code.nodes
        self.pc = 0
        self.stack: list = []
        self.scope = scope
        self.function = function

    def run(self) -> None:
        """Dispatch instructions until HALT; on an exception, `fault` is where it rose.

        Opcodes written out cost no call; counters, checkpoints, opcodes are fast locals.
        """
        ops, args, pc, stack, scope = self.ops, self.args, self.pc, self.stack, self.scope
        operations, iterations, limits = self.operations, self.iterations, self.limits
        max_operations, max_iterations = self.next_operations, self.next_iterations
        max_elements, handlers, large = limits.max_elements, _HANDLERS, budgets.LARGE
        # float64 on the float backend needs no NumPy (a NumPy value: the general path)
        float_dtype = self.context.np_dtype if self.context.dtype_name != "float64" else None
        if float_dtype is None and _numpy.is_loaded():
            float_dtype = self.context.np_dtype
        float_scalar = float if float_dtype is None else float_dtype.type
        python_values = _tensor.PYTHON_VALUES
        load_name, binary_number, binary, call1 = LOAD_NAME, BINARY_NUMBER, BINARY, CALL_BUILTIN1
        store, last_inline, for_span, for_iter = STORE, LAST_INLINE, FOR_SPAN, FOR_ITER
        try:
            while True:
                op = ops[pc]
                arg = args[pc]
                pc += 1
                while op == load_name:  # W2 +9%, for_i +15%, while +12%
                    try:
                        stack.append(scope[arg])
                    except KeyError:
                        stack.append(self.interp._lookup(arg, self.function))
                    op = ops[pc]
                    arg = args[pc]
                    pc += 1
                if op == binary_number:  # W2 +9% (two per iteration), def +4%
                    value = stack[-1]
                    operations += 1
                    if type(value) is Tensor and (
                        (kind := type(data := value._raw)) is float
                        or kind is float_scalar
                        or (kind is not bool and data.dtype is float_dtype and data.size < large)
                    ):
                        result = arg[4](value, arg[2])  # the literal as a number, as in PyTorch
                        if result is not NotImplemented:
                            stack[-1] = result
                            continue
                    stack[-1] = _number_operator(self.context, arg, value)
                elif op == binary:  # W2 +4%, for_i +7%, def +3%
                    left = stack[-2]
                    right = stack[-1]
                    if type(left) is not Tensor or type(right) is not Tensor:
                        left, right = _operands(self.context, arg[1], left, right)
                    n = 1 if type(ld := left._raw) in python_values else ld.size
                    k = 1 if type(rd := right._raw) in python_values else rd.size
                    if n * k > max_elements or n > large or k > large:  # (a float: one element)
                        self.context.check_broadcast(arg[1], left, right)
                    operations += 1
                    result = arg[2](left, right)
                    if result is NotImplemented:
                        result = arg[0](left, right)
                    del stack[-1]
                    stack[-1] = result
                elif op == call1:  # W2 +4%
                    value = stack[-1]
                    operations += 1
                    if type(value) is Tensor and (
                        type(data := value._raw) in python_values or data.size < large
                    ):
                        stack[-1] = arg.fast(value)
                    else:  # (an error is explained with the argument the built-in saw)
                        value = stack[-1] = lang.unshape(self.context, value)
                        _spend(self, (value,))
                        stack[-1] = arg.builtin.impl(value)
                elif op == store:  # W2 +3%, for_i +5%
                    self.last_value = scope[arg] = stack.pop()
                    self.last_name = arg
                elif op > last_inline:
                    self.operations, self.iterations = operations, iterations
                    pc = handlers[op](self, arg, pc)
                    operations, iterations = self.operations, self.iterations
                    max_operations, max_iterations = self.next_operations, self.next_iterations
                    if pc < 0:  # a call, a return or the end: another frame, or none
                        if self.done:
                            return
                        ops, args, pc = self.ops, self.args, self.pc
                        stack, scope = self.stack, self.scope
                elif op == for_span or op == for_iter:  # noqa: SIM109 (no tuple) W2 +4%, for_i +7%
                    item = next(stack[-1], _MISSING)
                    if item is _MISSING:
                        pc = _end_loop(self, op, arg)
                        continue
                    iterations += 1
                    if iterations > max_iterations or operations > max_operations:
                        max_operations, max_iterations = self.checkpoint(operations, iterations)
                    if op == for_iter:
                        scope[arg[1]] = item
                    pc = arg[2]
                else:  # LOAD_CONST: while +2%, cmp +2%
                    stack.append(arg)
        except Exception:
            self.fault = pc - 1
            raise

    def checkpoint(self, operations: int = -1, iterations: int = -1) -> tuple[int, int]:
        """A loop or call went past the next checkpoint (the run's counters, if given, are
        stored first): raise the limit crossed, or check the budget's time and memory and
        set the next checkpoints, returned as (operations, iterations)."""
        if operations >= 0:
            self.operations, self.iterations = operations, iterations
        limits = self.limits
        if self.iterations > limits.max_iterations or self.operations > limits.max_graph_nodes:
            raise _over_limit(limits, self.iterations, self.operations)
        if self.budget is not None:
            self.budget.check()
        self.next_iterations = min(limits.max_iterations, self.iterations + _CHECK_EVERY)
        self.next_operations = min(limits.max_graph_nodes, self.operations + _CHECK_EVERY)
        return self.next_operations, self.next_iterations

    def error(
        self, exc: Exception, source: str | None
    ) -> tuple[FormulaError, BaseException | None]:
        """What the failed instruction raised, as the error a user sees, at its position
        (inside a user function, with where it was called); and a bug's own exception."""
        error = exc if isinstance(exc, FormulaError) else self.explain(exc)
        cause = None
        if error is None:  # not explained: the generic words, and a bug's traceback
            error = _convert(exc)
            cause = _unexpected(exc)
            if self.interp.program and cause is None and not isinstance(exc, FormulaError):
                error.message = pylang.python_error(exc)  # as Python reports it
                error.hint = None  # (the formula language's advice does not apply)
        node = self.nodes[self.fault]
        if node is not None:
            error.at(node.line or None, node.column or None, source)
        if self.frames and self.function is not None:
            caller_nodes, return_pc = self.frames[-1][2], self.frames[-1][3]
            call_node = caller_nodes[return_pc - 1]
            where = f" at line {call_node.line}" if call_node is not None and call_node.line else ""
            called = f"called{where}" if call_node is not None else "called back by the Python API"
            note = f"in {self.function.name}(), {called}"
            error.hint = f"{error.hint}; {note}" if error.hint else note
        return error, cause

    def explain(self, exc: Exception) -> FormulaError | None:
        """A failed operator or built-in call in the user's terms (a shape mismatch that
        names both shapes...), from the operands the instruction left on the stack."""
        op, site, stack = self.ops[self.fault], self.args[self.fault], self.stack
        if op == BINARY_NUMBER:
            value = stack[-1]
            left, right = (site[3], value) if site[5] else (value, site[3])
            return _operator_error(exc, site[1], left, right)
        if op in (BINARY, COMPARE, COMPARE_CHAIN):
            left, right = _unshape_all(self.context, stack[-2:])
            return _operator_error(exc, site[1], left, right)
        if op == CALL_BUILTIN1:
            return site.builtin.explain(exc, [stack[-1]], 1, ())
        if op in (CALL_NAME, CALL_METHOD) and type(self.callee) is Builtin:
            return self.callee.explain(exc, self.argv, site.nargs, site.kwnames)
        return None


def _end_loop(m: _Machine, op: int, arg: list) -> int:
    """Leave a for loop whose items ran out: pop its iterator; a FOR_SPAN loop binds
    its variable now (`_end_span`). Returns where the code goes on."""
    if op == FOR_ITER:
        m.stack.pop()
        return arg[0]
    return _end_span(m, arg[1], arg[0])


def _over_limit(limits: Limits, iterations: int, operations: int) -> LimitError:
    """The limit a loop went over (iterations first)."""
    if iterations > limits.max_iterations:
        return _iteration_limit(limits)
    return _graph_limit(limits)


# ---- handlers: values and names


def _load_builtin(m: _Machine, arg: str, pc: int) -> int:
    # The program never binds the name, so only env can: a request's variable `t` shadows
    # the built-in here, without sending the whole run to the generic code.
    value = m.scopes[0].get(arg, _MISSING)
    if value is _MISSING:
        value = m.builtin_values.get(arg, _MISSING)
        if value is _MISSING:
            value = m.interp._lookup(arg, None)
    m.stack.append(value)
    return pc


def _store_fresh(m: _Machine, arg: tuple[str, tuple[str, ...]], pc: int) -> int:
    name, names = arg
    value = m.stack.pop()
    if (
        type(value) is Tensor
        and not value.requires_grad
        and value.dtype.is_floating_point
        and not m.interp._any_users(names, m.scope, m.function)
    ):
        value = m.context.promote(value)
    m.last_value = m.scope[name] = value
    m.last_name = name
    return pc


def _store_quiet(m: _Machine, arg: str, pc: int) -> int:
    m.scope[arg] = m.stack.pop()
    return pc


def _store_item(m: _Machine, arg: tuple[str, int], pc: int) -> int:
    name, depth = arg
    stack = m.stack
    keys = stack[-depth:]
    del stack[-depth:]
    base = stack.pop()
    value = stack.pop()
    m.operations += 1
    m.last_value = m.scope[name] = lang.set_items(m.context, name, base, keys, value)
    m.last_name = name
    return pc


def _expr_stmt(m: _Machine, arg: None, pc: int) -> int:
    value = m.stack.pop()
    if value is not None or m.interp.program:  # a program shows its last statement's value
        m.last_value = value
        m.last_name = None
    return pc


def _pop_top(m: _Machine, arg: Any, pc: int) -> int:
    m.stack.pop()
    return pc


def _raise(m: _Machine, arg: FormulaError, pc: int) -> int:
    raise _copy_error(arg)  # the compiled program keeps the original


def _halt(m: _Machine, arg: None, pc: int) -> int:
    if m.operations > m.limits.max_graph_nodes:
        raise _graph_limit(m.limits)
    m.done = True
    return -1


# ---- handlers: operators


def _unary(m: _Machine, arg: tuple, pc: int) -> int:
    value = lang.unshape(m.context, m.stack[-1])
    if not isinstance(value, Tensor):
        raise FormulaTypeError(
            f"unary '{arg[1]}' needs a tensor, but this is {lang.kind_of(value)}"
        )
    if _size(value) >= budgets.LARGE:
        m.context.check_elements(_size(value), f"the result of unary '{arg[1]}'")
    m.operations += 1
    m.stack[-1] = arg[0](value)
    return pc


def _not(m: _Machine, arg: Any, pc: int) -> int:
    if m.interp.program:
        m.stack[-1] = not truth(m.stack[-1])
        return pc
    m.stack[-1] = lang.FALSE if truth(m.stack[-1]) else lang.TRUE
    return pc


def _compare(m: _Machine, arg: tuple, pc: int) -> int:
    stack = m.stack
    result = _comparison(m, arg, stack[-2], stack[-1])
    del stack[-1]
    stack[-1] = result
    return pc


def _compare_chain(m: _Machine, arg: list, pc: int) -> int:
    stack = m.stack
    result = _comparison(m, arg, stack[-2], stack[-1])
    if truth(result):
        del stack[-2]  # the right operand is the next comparison's left
        return pc
    del stack[-1]
    stack[-1] = result
    return arg[2]


def _comparison(m: _Machine, arg: Any, left: Any, right: Any) -> Any:
    if type(left) is Size and type(right) is Size and arg[1] in ("==", "!="):
        return lang.TRUE if arg[0](left, right) else lang.FALSE  # as tuples
    if type(left) is not Tensor or type(right) is not Tensor:
        left, right = _operands(m.context, arg[1], left, right)
    if left.numel() * right.numel() > m.limits.max_elements:
        m.context.check_broadcast(arg[1], left, right)
    return arg[0](left, right)


# ---- handlers: jumps and loops


def _jump(m: _Machine, arg: int, pc: int) -> int:
    return arg


def _jump_if_false(m: _Machine, arg: int, pc: int) -> int:
    return pc if truth(m.stack.pop()) else arg


def _jump_if_false_or_pop(m: _Machine, arg: int, pc: int) -> int:
    if truth(m.stack[-1]):
        m.stack.pop()
        return pc
    return arg


def _jump_if_true_or_pop(m: _Machine, arg: int, pc: int) -> int:
    if truth(m.stack[-1]):
        return arg
    m.stack.pop()
    return pc


def _loop_if_true(m: _Machine, arg: int, pc: int) -> int:
    if not truth(m.stack.pop()):
        return pc
    m.iterations += 1
    if m.iterations > m.next_iterations or m.operations > m.next_operations:
        m.checkpoint()
    return arg


def _get_iter(m: _Machine, arg: None, pc: int) -> int:
    m.stack.append(m.context.iterate(lang.unshape(m.context, m.stack.pop())))
    return pc


def _get_span(m: _Machine, arg: None, pc: int) -> int:
    iterable = lang.unshape(m.context, m.stack.pop())
    span = m.context.loop_span(iterable)
    m.stack.append((iterable, span))
    m.stack.append(iter(span))
    return pc


def _end_span(m: _Machine, arg: str, pc: int) -> int:
    """Leave a FOR_SPAN loop: pop it, and bind its variable to the last item counted
    (Python's for leaves the variable there; a loop that never ran leaves it alone)."""
    iterator = m.stack.pop()
    iterable, span = m.stack.pop()
    try:  # by index from the end: len() of a huge range overflows
        number = span[-iterator.__length_hint__() - 1]
    except IndexError:
        return pc
    m.scope[arg] = m.context.loop_item(iterable, number)
    return pc


# ---- handlers: indexing, lists, attributes


def _subscript(m: _Machine, arg: None, pc: int) -> int:
    stack = m.stack
    key = stack.pop()
    value = stack[-1]
    if m.interp.program:
        m.operations += 1
        if type(key) is tuple and type(value) is not Tensor:
            raise FormulaTypeError(f"{pylang.type_name(value)} indices must be integers or slices")
        stack[-1] = value[key]
        return pc
    if type(value) is Size:  # x.shape[0] is a number, x.shape[1:] a shape
        stack[-1] = _shape_part(lang.get_item(lang.unshape(m.context, value), key))
        return pc
    if not isinstance(value, Tensor):
        raise FormulaTypeError(f"only tensors can be indexed, not {lang.kind_of(value)}")
    m.operations += 1
    stack[-1] = lang.get_item(value, key)
    return pc


def _build_slice(m: _Machine, arg: tuple[bool, bool, bool], pc: int) -> int:
    stack = m.stack
    parts = [stack.pop() if given else None for given in reversed(arg)]
    parts.reverse()
    stack.append(slice(*parts) if m.interp.program else lang.make_slice(*parts))
    return pc


def _build_index(m: _Machine, arg: int, pc: int) -> int:
    items = tuple(m.stack[-arg:])
    del m.stack[-arg:]
    m.stack.append(items)
    return pc


def _build_list(m: _Machine, arg: int, pc: int) -> int:
    stack = m.stack
    items = stack[-arg:] if arg else []
    if arg:
        del stack[-arg:]
    m.operations += 1
    stack.append(lang.build_list(m.context, _unshape_all(m.context, items)))
    return pc


def _attribute(m: _Machine, arg: str, pc: int) -> int:
    value = lang.unshape(m.context, m.stack[-1])
    if not isinstance(value, Tensor):
        raise FormulaTypeError(f"'.{arg}' needs a tensor, but this is {lang.kind_of(value)}")
    m.stack[-1] = lang.ATTRIBUTES[arg].get(m.context, value)
    return pc


# ---- handlers: calls


def _call_name(m: _Machine, site: _CallSite, pc: int) -> int:
    callee = m.scope.get(site.name, _MISSING)
    if callee is _MISSING:
        # at the top level a miss in env means a built-in: the language's functions are
        # every interpreter's (its constants, print, modules are its own: `_lookup`)
        callee = m.functions.get(site.name) if m.function is None else None
        if callee is None:
            callee = m.interp._lookup(site.name, m.function, called=True)
    return _call(m, site, callee, pc)


def _call_method(m: _Machine, site: _CallSite, pc: int) -> int:
    first = len(m.stack) - site.nargs - len(site.kwnames)  # the tensor it is called on
    value = m.stack[first] = lang.unshape(m.context, m.stack[first])
    if not isinstance(value, Tensor):
        raise FormulaTypeError(
            f"'.{site.name}()' needs a tensor, but this is {lang.kind_of(value)}"
        )
    return _call(m, site, lang.METHODS[site.name], pc)


def _call_value(m: _Machine, site: _CallSite, pc: int) -> int:
    callee = m.stack.pop(len(m.stack) - site.nargs - len(site.kwnames) - 1)
    return _call(m, site, callee, pc)


def _call(m: _Machine, site: _CallSite, callee: Any, pc: int) -> int:
    """Call ``callee`` with the arguments on the stack: a built-in, or a user function,
    whose code runs in a new frame."""
    stack = m.stack
    first = len(stack) - site.nargs - len(site.kwnames)
    argv = stack[first:]
    del stack[first:]
    m.operations += 1
    if m.operations > m.next_operations:
        m.checkpoint()
    if type(callee) is Builtin:
        stack.append(_call_builtin(m, site, callee, argv))
        return pc
    if type(callee) is not Function:
        stack.append(_call_python(m, site, callee, argv))
        return pc
    depth = m.limits.max_call_depth
    if len(m.frames) >= depth:
        raise budgets.limit_error(
            "max_call_depth",
            f"calls nest deeper than {depth} "
            f"(in {callee.name}(): is the recursion missing a base case?)",
        )
    local = callee.bind_arguments(argv, site.nargs, site.kwnames)
    m.frames.append((m.ops, m.args, m.nodes, pc, stack, m.scope, m.function))
    m.scopes.append(local)
    m.start(callee.code, local, callee)
    return -1


def _call_builtin(m: _Machine, site: _CallSite, callee: Builtin, argv: list) -> Any:
    for value in argv:
        if type(value) is Size:  # a shape is a vector of sizes
            argv = _unshape_all(m.context, argv)
            break
    _spend(m, argv)
    m.callee, m.argv = callee, argv
    impl, nargs = callee.impl, site.nargs
    if site.kwnames:
        known = site.keywords
        if known is None or known[0] is not callee:
            known = site.keywords = (callee, callee.keyword_names(site.kwnames))
        kwargs = dict(zip(known[1], argv[nargs:], strict=True))
        if callee.context:
            return impl(m.context, *argv[:nargs], **kwargs)
        return impl(*argv[:nargs], **kwargs)
    if callee.context:
        return impl(m.context, *argv)
    return impl(*argv)


def _call_python(m: _Machine, site: _CallSite, callee: Any, argv: list) -> Any:
    """Call one of Python's built-ins (`pylang.BUILTINS`, a string's method) or a function
    of the Python API reached through a module or a tensor (``torch.ones``, ``x.sum``)."""
    nargs = site.nargs
    kwargs = dict(zip(site.kwnames, argv[nargs:], strict=True))
    if type(callee) is pylang.PyBuiltin:
        return callee.fn(m.interp.run_context, *argv[:nargs], **kwargs)
    if isinstance(callee, pylang.Namespace) or not callable(callee):
        raise _not_callable(site.name, callee)
    pylang.check_creation(callee, argv[:nargs], kwargs, m.limits)
    if any(type(value) is Function for value in argv):  # jacobian(f, x), register_hook(h)
        wrap = m.interp.python_callable
        argv = [wrap(v) if type(v) is Function else v for v in argv]
        kwargs = {k: wrap(v) if type(v) is Function else v for k, v in kwargs.items()}
    return callee(*argv[:nargs], **kwargs)


def _return(m: _Machine, arg: None, pc: int) -> int:
    value = m.stack.pop()
    m.ops, m.args, m.nodes, m.pc, m.stack, m.scope, m.function = m.frames.pop()
    m.scopes.pop()
    m.stack.append(value)
    return -1


def _make_function(m: _Machine, arg: _FunctionTemplate, pc: int) -> int:
    stack = m.stack
    count = arg.ndefaults
    defaults = tuple(stack[-count:]) if count else ()
    if count:
        del stack[-count:]
    enclosing = (m.scope, *m.function.scopes) if m.function is not None else ()
    stack.append(Function(arg, defaults, enclosing))
    return pc


# ---- handlers: Python's values (program mode) and the statements both modes share


def _py_binary(m: _Machine, arg: str, pc: int) -> int:
    stack = m.stack
    left, right = stack[-2], stack[-1]
    if _large(m, left, right):
        m.context.check_broadcast(arg, left, right)
    m.operations += type(left) is Tensor or type(right) is Tensor  # (graph operations only)
    result = pylang.binary(arg, left, right, m.limits)
    del stack[-1]
    stack[-1] = result
    return pc


def _py_inplace(m: _Machine, arg: str, pc: int) -> int:
    stack = m.stack
    left, right = stack[-2], stack[-1]
    if not m.interp.program:
        left, right = _operands(m.context, arg, left, right)
    elif _large(m, left, right):
        m.context.check_broadcast(arg, left, right)
    m.operations += type(left) is Tensor or type(right) is Tensor
    result = pylang.binary(arg, left, right, m.limits, inplace=True)
    del stack[-1]
    stack[-1] = result
    return pc


def _large(m: _Machine, left: Any, right: Any) -> bool:
    """Two tensors whose broadcast result may be over the limit (checked exactly then)."""
    return (
        type(left) is Tensor
        and type(right) is Tensor
        and left.numel() * right.numel() > m.limits.max_elements
    )


def _py_unary(m: _Machine, arg: str, pc: int) -> int:
    m.operations += type(m.stack[-1]) is Tensor
    m.stack[-1] = -m.stack[-1] if arg == "-" else +m.stack[-1]
    return pc


def _py_compare(m: _Machine, arg: str, pc: int) -> int:
    stack = m.stack
    result = _py_comparison(m, arg, stack[-2], stack[-1])
    del stack[-1]
    stack[-1] = result
    return pc


def _py_comparison(m: _Machine, symbol: str, left: Any, right: Any) -> Any:
    if not m.interp.program and symbol in _COMPARE:
        return _comparison(m, (_COMPARE[symbol], symbol), left, right)
    result = pylang.binary(symbol, left, right, m.limits)
    if not m.interp.program and type(result) is bool:
        return lang.TRUE if result else lang.FALSE
    return result


def _py_compare_chain(m: _Machine, arg: list, pc: int) -> int:
    stack = m.stack
    result = _py_comparison(m, arg[0], stack[-2], stack[-1])
    if truth(result):
        del stack[-2]
        return pc
    del stack[-1]
    stack[-1] = result
    return arg[1]


def _build_tuple(m: _Machine, arg: int, pc: int) -> int:
    stack = m.stack
    items = tuple(stack[-arg:]) if arg else ()
    if arg:
        del stack[-arg:]
    stack.append(items)
    return pc


def _build_pylist(m: _Machine, arg: int, pc: int) -> int:
    stack = m.stack
    items = stack[-arg:] if arg else []
    if arg:
        del stack[-arg:]
    stack.append(items)
    return pc


def _list_append(m: _Machine, arg: int, pc: int) -> int:
    item = m.stack.pop()
    target = m.stack[-arg]
    if type(target) is list:
        if len(target) >= m.limits.max_elements:
            pylang.items(range(len(target) + 1), m.limits, "the list")
        target.append(item)
    else:  # the formula language's list: a tensor of the items, made when the list ends
        m.stack[-arg] = lang.build_list(m.context, [*_rows_of(target), item])
    return pc


def _rows_of(value: Any) -> list:
    if type(value) is Tensor:
        return [value[i] for i in range(value.shape[0])] if value.ndim else []
    return list(value)


def _build_string(m: _Machine, arg: int, pc: int) -> int:
    stack = m.stack
    parts = stack[-arg:] if arg else []
    if arg:
        del stack[-arg:]
    pylang.items(range(sum(len(p) for p in parts)), m.limits, "the string")
    stack.append("".join(parts))
    return pc


def _format(m: _Machine, arg: tuple, pc: int) -> int:
    m.stack[-1] = pylang.format_value(m.stack[-1], arg[0], arg[1], m.interp.run_context)
    return pc


def _get_member(m: _Machine, arg: str, pc: int) -> int:
    value = m.stack[-1]
    if not m.interp.program:
        if type(value) is Size:
            value = lang.unshape(m.context, value)
        elif type(value) is pylang.Namespace and value.name != "math":
            # a formula's torch.exp is the language's exp (its numbers, its axis=)
            if arg in lang.FUNCTIONS:
                m.stack[-1] = lang.FUNCTIONS[arg]
                return pc
            if arg in lang.CONSTANTS:
                m.stack[-1] = m.interp._lookup(arg, None)
                return pc
    m.stack[-1] = pylang.get_member(value, arg, m.limits)
    return pc


def _set_member(m: _Machine, arg: str, pc: int) -> int:
    target = m.stack.pop()
    value = m.stack.pop()
    pylang.set_member(target, arg, value)
    return pc


def _unpack(m: _Machine, arg: int, pc: int) -> int:
    value = m.stack.pop()
    items = pylang.items(value, m.limits, "the value unpacked")
    if len(items) != arg:
        if len(items) > arg:
            message = f"too many values to unpack (expected {arg}, got {len(items)})"
        else:
            message = f"not enough values to unpack (expected {arg}, got {len(items)})"
        raise FormulaValueError(message)
    items.reverse()
    m.stack += items
    return pc


def _with_enter(m: _Machine, arg: bool, pc: int) -> int:
    manager = m.stack.pop()
    if not isinstance(manager, lang.GRAD_MODES):
        raise FormulaTypeError(
            f"'{pylang.type_name(manager)}' object does not support the context manager protocol",
            hint="with torch.no_grad():, torch.enable_grad() or torch.set_grad_enabled(mode)",
        )
    entered = manager.__enter__()
    m.managers.append(manager)
    if arg:
        m.stack.append(entered)
    return pc


def _with_exit(m: _Machine, arg: None, pc: int) -> int:
    m.managers.pop().__exit__(None, None, None)
    return pc


def _store_subscr(m: _Machine, arg: None, pc: int) -> int:
    stack = m.stack
    key = stack.pop()
    target = stack.pop()
    value = stack.pop()
    if type(target) is list or type(target) is Tensor:
        m.operations += 1
        target[key] = value
        return pc
    raise FormulaTypeError(f"'{pylang.type_name(target)}' object does not support item assignment")


def _assert_fail(m: _Machine, arg: bool, pc: int) -> int:
    message = pylang.show(m.stack.pop(), m.interp.run_context, as_str=True) if arg else ""
    raise FormulaValueError(f"AssertionError: {message}" if message else "AssertionError")


def _dup_top(m: _Machine, arg: None, pc: int) -> int:
    m.stack.append(m.stack[-1])
    return pc


def _delete_name(m: _Machine, arg: str, pc: int) -> int:
    m.scope.pop(arg, None)
    return pc


_HANDLER_OF = {
    PY_BINARY: _py_binary,
    PY_INPLACE: _py_inplace,
    PY_UNARY: _py_unary,
    PY_COMPARE: _py_compare,
    PY_COMPARE_CHAIN: _py_compare_chain,
    BUILD_TUPLE: _build_tuple,
    BUILD_PYLIST: _build_pylist,
    LIST_APPEND: _list_append,
    BUILD_STRING: _build_string,
    FORMAT: _format,
    GET_MEMBER: _get_member,
    SET_MEMBER: _set_member,
    UNPACK: _unpack,
    WITH_ENTER: _with_enter,
    WITH_EXIT: _with_exit,
    STORE_SUBSCR: _store_subscr,
    DELETE_NAME: _delete_name,
    DUP_TOP: _dup_top,
    ASSERT_FAIL: _assert_fail,
    STORE_FRESH: _store_fresh,
    STORE_QUIET: _store_quiet,
    STORE_ITEM: _store_item,
    EXPR_STMT: _expr_stmt,
    POP_TOP: _pop_top,
    UNARY: _unary,
    NOT: _not,
    COMPARE: _compare,
    COMPARE_CHAIN: _compare_chain,
    JUMP: _jump,
    JUMP_IF_FALSE: _jump_if_false,
    JUMP_IF_FALSE_OR_POP: _jump_if_false_or_pop,
    JUMP_IF_TRUE_OR_POP: _jump_if_true_or_pop,
    LOOP_IF_TRUE: _loop_if_true,
    GET_ITER: _get_iter,
    SUBSCRIPT: _subscript,
    BUILD_LIST: _build_list,
    BUILD_INDEX: _build_index,
    BUILD_SLICE: _build_slice,
    ATTRIBUTE: _attribute,
    CALL_NAME: _call_name,
    CALL_METHOD: _call_method,
    CALL_VALUE: _call_value,
    MAKE_FUNCTION: _make_function,
    RETURN: _return,
    RAISE: _raise,
    HALT: _halt,
    LOAD_BUILTIN: _load_builtin,
    GET_SPAN: _get_span,
    END_SPAN: _end_span,
}
_HANDLERS = [_HANDLER_OF.get(op) for op in range(_LAST_OP + 1)]
"""Each opcode's handler, by opcode (None for those `_Machine.run` writes out)."""


# ---- helpers of the handlers


def _operands(context: Any, symbol: str, left: Any, right: Any) -> tuple[Any, Any]:
    """An operator's operands when one is not a tensor: a shape becomes the vector
    of its sizes; anything else that is not a tensor is refused."""
    left = lang.unshape(context, left)
    right = lang.unshape(context, right)
    _check_operands(symbol, left, right)
    return left, right


_STRINGS = (ast.Str, ast.FString)
_PYTHON_VALUES = frozenset({str, list, tuple})
"""Values the formula language's operators leave to Python (strings; a program's lists)."""


def _number_operator(context: Any, arg: tuple, value: Any) -> Any:
    """``x op 2`` / ``2 op x`` when x is not a float tensor: the literal as a tensor,
    so the engine promotes as NumPy does (or the operands are refused)."""
    if type(value) in _PYTHON_VALUES:  # 'ab' * 3: the literal as a Python number
        number = int(arg[2]) if float(arg[2]).is_integer() else arg[2]
        left, right = (number, value) if arg[5] else (value, number)
        return pylang.binary(arg[1], left, right, context.limits)
    left, right = (arg[3], value) if arg[5] else (value, arg[3])
    if type(value) is not Tensor:
        left, right = _operands(context, arg[1], left, right)
    elif _size(value) >= budgets.LARGE:
        context.check_elements(_size(value), f"the result of '{arg[1]}'")
    return arg[0](left, right)


def _spend(m: _Machine, argv: Any) -> None:
    """A built-in about to read large tensors: their elements are work, and the budget's
    time and memory are checked (its result's size is the built-in's to check)."""
    for value in argv:
        if (
            type(value) is Tensor
            and type(raw := value._raw) not in _tensor.PYTHON_VALUES  # (`_size`, inline)
            and raw.size >= budgets.LARGE
            and m.budget is not None
        ):
            m.budget.spend(raw.size)


def _size(tensor: Tensor) -> int:
    """A tensor's element count, without making NumPy of a float backend's value."""
    raw = tensor._raw
    return 1 if type(raw) in _tensor.PYTHON_VALUES else raw.size


def _unshape_all(context: Any, values: list) -> list:
    return [lang.unshape(context, value) for value in values]


# ---------------------------------------------------------------- error helpers


def _iteration_limit(limits: Limits) -> LimitError:
    return budgets.limit_error(
        "max_iterations",
        f"loops ran more than {limits.max_iterations:,} iterations",
        "is a while condition never false?",
    )


def _graph_limit(limits: Limits) -> LimitError:
    return budgets.limit_error(
        "max_graph_nodes",
        f"more than {limits.max_graph_nodes:,} operations in one run",
        "is a loop or a recursion running away?",
    )


def _shape_part(item: Any) -> Any:
    """An item of a shape (a number) or a slice of it (a shape again)."""
    data = item._data
    if data.ndim == 1:
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
        return budgets.limit_error(
            "max_memory", "not enough memory for this computation", "use smaller tensors"
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
