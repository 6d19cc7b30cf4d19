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
"""

from __future__ import annotations

import difflib
import gc
import keyword
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcalc import builtins as lang
from gradcalc import syntax as ast
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

__all__ = ["Interpreter", "Outcome"]


@dataclass(slots=True)
class Outcome:
    """What a program produced: the last value a statement computed, and its name if assigned."""

    value: Any
    name: str | None = None


# ------------------------------------------------------------------ instructions
# Each instruction is an opcode in `_Code.ops` and its argument at the same
# index of `_Code.args`; `_Code.nodes` holds the AST node for error positions.

LOAD_CONST = 0  # push arg
LOAD_NAME = 1  # push the value of name arg
BINARY = 2  # pop r, l; push fn(l, r); arg = (fn, symbol)
STORE = 3  # pop into name arg; it becomes the program's output
CALL_NAME = 4  # call the function named site.name; arg = _CallSite
CALL_METHOD = 5  # call a whitelisted method on the first argument; arg = _CallSite
EXPR_STMT = 6  # pop; a non-None value becomes the program's output
JUMP_IF_FALSE = 7  # pop; jump to arg if false
JUMP = 8
FOR_ITER = 9  # next item of the iterator on top, or pop it and jump to arg
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
BINARY_NUMBER_LEFT = 33  # 2 op x; arg = (fn, symbol, number, literal tensor)

_MISSING = object()
_OPERATOR_OPS = frozenset({BINARY, BINARY_NUMBER_RIGHT, BINARY_NUMBER_LEFT, COMPARE, COMPARE_CHAIN})


class _Code:
    """Flat code for the program or one function body."""

    __slots__ = ("args", "name", "nodes", "ops")

    def __init__(self, name: str) -> None:
        self.name = name
        self.ops: list[int] = []
        self.args: list[Any] = []
        self.nodes: list[ast.Node | None] = []


@dataclass(slots=True, frozen=True)
class _CallSite:
    name: str
    nargs: int
    kwnames: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class _FunctionTemplate:
    name: str
    params: tuple[str, ...]
    ndefaults: int
    code: _Code


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
        self.visitors = {
            ast.Num: self._num,
            ast.Bool: self._bool,
            ast.Name: self._name,
            ast.ListExpr: self._list,
            ast.TupleExpr: self._tuple,
            ast.UnaryOp: self._unary,
            ast.BinOp: self._binop,
            ast.BoolOp: self._boolop,
            ast.Compare: self._compare,
            ast.IfExp: self._ifexp,
            ast.Call: self._call,
            ast.Attribute: self._attribute,
            ast.Slice: self._slice_outside,
            ast.Subscript: self._subscript,
            ast.ExprStmt: self._expr_stmt,
            ast.Assign: self._assign,
            ast.AugAssign: self._augassign,
            ast.If: self._if,
            ast.While: self._while,
            ast.For: self._for,
            ast.FunctionDef: self._def,
            ast.Return: self._return,
            ast.Pass: self._pass,
            ast.Break: self._break,
            ast.Continue: self._continue,
        }

    # -- plumbing

    def compile(self, program: ast.Program) -> _Code:
        self._drive(iter(program.body))
        self.emit(HALT, None, None)
        return self.code

    def _drive(self, root: Iterator) -> None:
        stack = [root]
        visitors = self.visitors
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
                stack.append(visitor(child))

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
            self.emit(BINARY, (_BINARY[node.op], node.op), node)
        else:
            self._emit_number_op(BINARY_NUMBER_RIGHT, node.op, number, node)

    def _emit_number_op(self, op: int, symbol: str, number: float, node: ast.Node) -> None:
        self.emit(op, (_BINARY[symbol], symbol, number, self._number(number)), node)

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
                self.emit(BINARY, (_BINARY[node.op], node.op), node)
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
        self.emit(GET_ITER, None, node.iter)
        start = self.emit(FOR_ITER, None, node)
        self.emit(STORE_QUIET, node.target, node)
        loop = _Loop(is_for=True)
        self.loops.append(loop)
        yield from node.body
        self.loops.pop()
        self.emit(JUMP, start, node)
        for index in loop.continues:
            self.patch(index, start)
        if loop.breaks:
            pad = self.emit(POP_TOP, None, node)
            for index in loop.breaks:
                self.patch(index, pad)
        self.patch(start)

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


# ---------------------------------------------------------------------- helpers


def _short(value: Any) -> str:
    data = getattr(value, "_data", None)
    if data is not None and np.ndim(data) == 0:
        number = float(data)
        return str(int(number)) if number.is_integer() else repr(number)
    return "..."


def _did_you_mean(name: str, candidates: Any) -> str | None:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def _compile(interp: Interpreter, program: ast.Program, source: str | None) -> _Code:
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
        self._true = self.context.literal(np.array(True))
        self._false = self.context.literal(np.array(False))
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

    def execute(self, source_or_program: str | ast.Program) -> Outcome:
        """Parse (if given text) and run a program; return its last value."""
        source = source_or_program if isinstance(source_or_program, str) else None
        saved = dict(self.env)
        try:
            if source is not None:
                from gradcalc.parser import parse

                program = parse(source, limits=self.limits)
            else:
                program = source_or_program
            code = _compile(self, program, source)
            with np.errstate(all="ignore"):
                return self._run(code, source)
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

    def _run(self, code: _Code, source: str | None) -> Outcome:
        """Execute flat code; user-function calls push frames, never Python recursion."""
        context = self.context
        limits = self.limits
        max_elements = limits.max_elements
        max_operations = limits.max_graph_nodes
        max_iterations = limits.max_iterations
        max_depth = limits.max_call_depth
        Tensor = lang.Tensor
        Builtin = lang.Builtin
        truth = lang.truth
        float_dtype = context.np_dtype
        builtin_values = self._builtin_values
        env = self.env
        context.scopes = [env]
        scopes = context.scopes
        frames: list[tuple] = []
        ops, args, nodes = code.ops, code.args, code.nodes
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
        try:
            while True:
                op = ops[pc]
                arg = args[pc]
                pc += 1
                if op == LOAD_NAME:
                    value = scope.get(arg, _MISSING)
                    if value is _MISSING:
                        value = self._lookup(arg, function)
                    stack.append(value)
                elif op == LOAD_CONST:
                    stack.append(arg)
                elif op == BINARY:
                    right = stack.pop()
                    left = stack[-1]
                    if type(left) is not Tensor or type(right) is not Tensor:
                        _check_operands(arg[1], left, right)
                    if left._data.size * right._data.size > max_elements:
                        context.check_broadcast(arg[1], left, right)
                    operations += 1
                    if operations > max_operations:
                        raise _graph_limit(limits)
                    stack[-1] = arg[0](left, right)
                elif op == BINARY_NUMBER_RIGHT or op == BINARY_NUMBER_LEFT:  # noqa: SIM109 - speed
                    value = stack[-1]
                    operations += 1
                    if operations > max_operations:
                        raise _graph_limit(limits)
                    if op == BINARY_NUMBER_RIGHT:
                        left, right = value, arg[3]
                    else:
                        left, right = arg[3], value
                    if type(value) is Tensor and value._data.dtype is float_dtype:
                        if op == BINARY_NUMBER_RIGHT:
                            stack[-1] = arg[0](value, arg[2])
                        else:
                            stack[-1] = arg[0](arg[2], value)
                    else:  # not a float tensor: let the engine promote as NumPy does
                        if type(value) is not Tensor:
                            _check_operands(arg[1], left, right)
                        stack[-1] = arg[0](left, right)
                elif op == STORE:
                    last_value = scope[arg] = stack.pop()
                    last_name = arg
                elif op == CALL_NAME or op == CALL_METHOD or op == CALL_VALUE:  # noqa: SIM109
                    total = arg.nargs + len(arg.kwnames)
                    if total:
                        argv = stack[-total:]
                        del stack[-total:]
                    else:
                        argv = []
                    if op == CALL_NAME:
                        callee = scope.get(arg.name, _MISSING)
                        if callee is _MISSING:
                            # at the top level a miss in env means a built-in
                            callee = builtin_values.get(arg.name) if function is None else None
                            if callee is None:
                                callee = self._lookup(arg.name, function, called=True)
                    elif op == CALL_METHOD:
                        callee = lang.METHODS[arg.name]
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
                        ops, args, nodes = code.ops, code.args, code.nodes
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
                elif op == JUMP:
                    pc = arg
                elif op == FOR_ITER:
                    item = next(stack[-1], _MISSING)
                    if item is _MISSING:
                        stack.pop()
                        pc = arg
                    else:
                        iterations += 1
                        if iterations > max_iterations:
                            raise _iteration_limit(limits)
                        stack.append(item)
                elif op == STORE_QUIET:
                    scope[arg] = stack.pop()
                elif op == LOOP_BACK:
                    iterations += 1
                    if iterations > max_iterations:
                        raise _iteration_limit(limits)
                    pc = arg
                elif op == RETURN:
                    value = stack.pop()
                    ops, args, nodes, pc, stack, scope, function = frames.pop()
                    scopes.pop()
                    stack.append(value)
                elif op == COMPARE or op == COMPARE_CHAIN:  # noqa: SIM109
                    right = stack.pop()
                    left = stack.pop()
                    if type(left) is not Tensor or type(right) is not Tensor:
                        _check_operands(arg[1], left, right)
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
                    value = stack[-1]
                    if not isinstance(value, Tensor):
                        raise FormulaTypeError(
                            f"unary '{arg[1]}' needs a tensor, but this is {lang.kind_of(value)}"
                        )
                    operations += 1
                    stack[-1] = arg[0](value)
                elif op == NOT:
                    stack[-1] = self._false if truth(stack[-1]) else self._true
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
                    if not isinstance(value, Tensor):
                        raise FormulaTypeError(
                            f"only tensors can be indexed, not {lang.kind_of(value)}"
                        )
                    operations += 1
                    stack[-1] = lang.get_item(value, key)
                elif op == BUILD_SLICE:
                    parts = [stack.pop() if present else None for present in reversed(arg)]
                    parts.reverse()
                    stack.append(lang.make_slice(*parts))
                elif op == BUILD_INDEX:
                    items = tuple(stack[-arg:])
                    del stack[-arg:]
                    stack.append(items)
                elif op == BUILD_LIST:
                    items = stack[-arg:] if arg else []
                    if arg:
                        del stack[-arg:]
                    operations += 1
                    stack.append(lang.build_list(context, items))
                elif op == ATTRIBUTE:
                    value = stack[-1]
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
                        and not any(self._is_users(n, scope, function) for n in names)
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
                elif op == GET_ITER:
                    stack.append(context.iterate(stack.pop()))
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
                    raise arg
                elif op == HALT:
                    break
                else:  # pragma: no cover - the compiler emits nothing else
                    raise AssertionError(f"unknown opcode {op}")
        except Exception as exc:
            failed_op = ops[pc - 1] if pc else None
            site = args[pc - 1] if pc else None
            node = nodes[pc - 1] if pc else None
            error: FormulaError | None = None
            if isinstance(exc, FormulaError):
                error = exc
            elif failed_op in _OPERATOR_OPS:
                error = _operator_error(exc, site[1], left, right)
            elif failed_op in (CALL_NAME, CALL_METHOD) and type(callee) is Builtin:
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
