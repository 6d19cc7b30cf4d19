"""The typed AST of the formula language.

The parser's one Transformer turns Lark's tree into these classes; the
interpreter and the pretty-printer see nothing else. Positions (1-based line
and column of the node's first token) are keyword-only and excluded from
equality, so ``parse(pretty(tree)) == tree`` compares structure only.

Operators are kept as their source spelling (``"+"``, ``"**"``, ``"and"``,
``"<="``); ``^`` is normalised to ``"**"`` by the parser.

The classes are slotted, and ``__match_args__`` lists each one's fields (so
``match`` works), as ``@dataclass(slots=True)`` made them; their ``__init__``,
``__eq__`` and ``__repr__`` are written here. The dataclass decorator cost ~10
ms of every start-up (it ``exec``s generated methods, rebuilds each class for
its slots, and importing it imports ``inspect``), and its generated ``__eq__``
and ``__repr__`` recursed, so they failed on a flat sum of a few thousand terms.
Here a metaclass derives ``__slots__`` and ``__match_args__`` from the class's
annotations, as ``ast.AST``'s ``_fields`` do; equality and repr walk the tree
with an explicit stack and compare or show the fields in ``__match_args__`` (the
positional fields, which are all but the positions).
"""

from __future__ import annotations

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any


POSITION_FIELDS = ("line", "column")
"""Keyword-only in every constructor, excluded from equality and repr."""


class NodeType(type):
    """Makes a node class slotted with its annotated fields, and ``__match_args__`` its
    bases' fields then its own, the positions excepted (defaults live in ``__init__``)."""

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> NodeType:
        own = tuple(namespace.get("__annotations__", ()))
        for field_name in own:
            namespace.pop(field_name, None)
        namespace["__slots__"] = own
        inherited = tuple(field for base in bases for field in getattr(base, "__match_args__", ()))
        namespace["__match_args__"] = inherited + tuple(
            field for field in own if field not in POSITION_FIELDS
        )
        return super().__new__(mcls, name, bases, namespace)


class Node(metaclass=NodeType):
    """Base of every AST node: a position, and iterative equality and repr."""

    line: int
    column: int

    def __init__(self, *, line: int = 0, column: int = 0) -> None:
        self.line = line
        self.column = column

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return _equal(self, other)

    def __repr__(self) -> str:
        return _repr(self)


def _equal(left: Node, right: Node) -> bool:
    """Field-by-field equality as the generated ``__eq__`` has it, without recursion."""
    pending: list[tuple[Any, Any]] = [(left, right)]
    while pending:
        a, b = pending.pop()
        if a is b:
            continue
        kind = a.__class__
        if isinstance(a, Node):
            if b.__class__ is not kind:
                return False
            pending += [(getattr(a, name), getattr(b, name)) for name in kind.__match_args__]
        elif kind is list and b.__class__ is list:
            if len(a) != len(b):
                return False
            pending += zip(a, b, strict=True)
        elif a != b:
            return False
    return True


def _repr(node: Node) -> str:
    """``Name(field=value, ...)`` as the generated ``__repr__`` has it, without recursion."""
    out: list[str] = []
    # (True, text to emit) or (False, a value to show), popped from the end.
    work: list[tuple[bool, Any]] = [(False, node)]
    while work:
        literal, value = work.pop()
        if literal:
            out.append(value)
        elif isinstance(value, Node):
            names = value.__class__.__match_args__
            out.append(value.__class__.__qualname__ + "(")
            work.append((True, ")"))
            for index in range(len(names) - 1, -1, -1):
                work.append((False, getattr(value, names[index])))
                work.append((True, f", {names[index]}=" if index else f"{names[index]}="))
        elif value.__class__ is list:
            out.append("[")
            work.append((True, "]"))
            for index in range(len(value) - 1, -1, -1):
                work.append((False, value[index]))
                if index:
                    work.append((True, ", "))
        else:
            out.append(repr(value))
    return "".join(out)


# ---------------------------------------------------------------- expressions


class Num(Node):
    """A number literal: an int when written without '.' or exponent (``2``), else a float."""

    value: int | float

    def __init__(self, value: float, *, line: int = 0, column: int = 0) -> None:
        self.value = value
        self.line = line
        self.column = column


class Bool(Node):
    """``True`` or ``False``."""

    value: bool

    def __init__(self, value: bool, *, line: int = 0, column: int = 0) -> None:
        self.value = value
        self.line = line
        self.column = column


class Name(Node):
    """A variable or function name."""

    id: str

    def __init__(self, id: str, *, line: int = 0, column: int = 0) -> None:
        self.id = id
        self.line = line
        self.column = column


class ListExpr(Node):
    """``[a, b, ...]``."""

    items: list[Expr]

    def __init__(self, items: list[Expr], *, line: int = 0, column: int = 0) -> None:
        self.items = items
        self.line = line
        self.column = column


class TupleExpr(Node):
    """Comma-separated items; appears as a subscript index (``x[:, 0]``)."""

    items: list[Expr]

    def __init__(self, items: list[Expr], *, line: int = 0, column: int = 0) -> None:
        self.items = items
        self.line = line
        self.column = column


class Str(Node):
    """A string literal (adjacent literals already joined, escapes decoded)."""

    value: str

    def __init__(self, value: str, *, line: int = 0, column: int = 0) -> None:
        self.value = value
        self.line = line
        self.column = column


class FormattedValue(Node):
    """One ``{value!conversion:spec}`` field of an f-string."""

    value: Expr
    conversion: str | None = None  # "r", "s", "a" or None
    spec: str | None = None

    def __init__(
        self,
        value: Expr,
        conversion: str | None = None,
        spec: str | None = None,
        *,
        line: int = 0,
        column: int = 0,
    ) -> None:
        self.value = value
        self.conversion = conversion
        self.spec = spec
        self.line = line
        self.column = column


class FString(Node):
    """An f-string: literal text (str) and `FormattedValue` fields in order."""

    parts: list[Any]

    def __init__(self, parts: list[Any], *, line: int = 0, column: int = 0) -> None:
        self.parts = parts
        self.line = line
        self.column = column


class NoneLit(Node):
    """``None``."""

    def __init__(self, *, line: int = 0, column: int = 0) -> None:
        self.line = line
        self.column = column


class Comprehension(Node):
    """``for targets in iter if cond...`` of a list comprehension."""

    target: str | list[str]
    iter: Expr
    ifs: list[Expr]

    def __init__(
        self,
        target: str | list[str],
        iter: Expr,
        ifs: list[Expr],
        *,
        line: int = 0,
        column: int = 0,
    ) -> None:
        self.target = target
        self.iter = iter
        self.ifs = ifs
        self.line = line
        self.column = column


class ListComp(Node):
    """``[elt for ... in ... if ...]``."""

    elt: Expr
    generators: list[Comprehension]

    def __init__(
        self, elt: Expr, generators: list[Comprehension], *, line: int = 0, column: int = 0
    ) -> None:
        self.elt = elt
        self.generators = generators
        self.line = line
        self.column = column


class Lambda(Node):
    """``lambda params: body``."""

    params: list[Param]
    body: Expr

    def __init__(self, params: list[Param], body: Expr, *, line: int = 0, column: int = 0):
        self.params = params
        self.body = body
        self.line = line
        self.column = column


class UnaryOp(Node):
    """A prefix operator: ``-``, ``+`` or ``not``."""

    op: str  # "-", "+", "not"
    operand: Expr

    def __init__(self, op: str, operand: Expr, *, line: int = 0, column: int = 0) -> None:
        self.op = op
        self.operand = operand
        self.line = line
        self.column = column


class BinOp(Node):
    """A binary arithmetic operator."""

    op: str  # "+", "-", "*", "/", "//", "%", "**", "@"
    left: Expr
    right: Expr

    def __init__(self, op: str, left: Expr, right: Expr, *, line: int = 0, column: int = 0) -> None:
        self.op = op
        self.left = left
        self.right = right
        self.line = line
        self.column = column


class BoolOp(Node):
    """``a and b and ...`` or ``a or b or ...``."""

    op: str  # "and", "or"
    values: list[Expr]  # two or more, flattened like Python's ast

    def __init__(self, op: str, values: list[Expr], *, line: int = 0, column: int = 0) -> None:
        self.op = op
        self.values = values
        self.line = line
        self.column = column


class Compare(Node):
    """A comparison chain: ``a < b <= c`` is one Compare."""

    left: Expr
    ops: list[str]  # "<", "<=", ">", ">=", "==", "!=", "is", "is not", "in", "not in"
    comparators: list[Expr]

    def __init__(
        self,
        left: Expr,
        ops: list[str],
        comparators: list[Expr],
        *,
        line: int = 0,
        column: int = 0,
    ) -> None:
        self.left = left
        self.ops = ops
        self.comparators = comparators
        self.line = line
        self.column = column


class IfExp(Node):
    """``body if test else orelse``."""

    test: Expr
    body: Expr
    orelse: Expr

    def __init__(
        self, test: Expr, body: Expr, orelse: Expr, *, line: int = 0, column: int = 0
    ) -> None:
        self.test = test
        self.body = body
        self.orelse = orelse
        self.line = line
        self.column = column


class Keyword(Node):
    """A keyword argument ``name=value`` of a call."""

    name: str
    value: Expr

    def __init__(self, name: str, value: Expr, *, line: int = 0, column: int = 0) -> None:
        self.name = name
        self.value = value
        self.line = line
        self.column = column


class Call(Node):
    """``func(args, name=value)``; ``func`` is a Name, or an Attribute for method sugar."""

    func: Expr
    args: list[Expr]
    keywords: list[Keyword]

    def __init__(
        self,
        func: Expr,
        args: list[Expr],
        keywords: list[Keyword],
        *,
        line: int = 0,
        column: int = 0,
    ) -> None:
        self.func = func
        self.args = args
        self.keywords = keywords
        self.line = line
        self.column = column


class Attribute(Node):
    """``value.attr``."""

    value: Expr
    attr: str

    def __init__(self, value: Expr, attr: str, *, line: int = 0, column: int = 0) -> None:
        self.value = value
        self.attr = attr
        self.line = line
        self.column = column


class Slice(Node):
    """``lower:upper:step`` in a subscript; missing parts are None."""

    lower: Expr | None
    upper: Expr | None
    step: Expr | None

    def __init__(
        self,
        lower: Expr | None,
        upper: Expr | None,
        step: Expr | None,
        *,
        line: int = 0,
        column: int = 0,
    ) -> None:
        self.lower = lower
        self.upper = upper
        self.step = step
        self.line = line
        self.column = column


class Subscript(Node):
    """``value[index]``."""

    value: Expr
    index: Expr  # an Expr, a Slice, or a TupleExpr of those

    def __init__(self, value: Expr, index: Expr, *, line: int = 0, column: int = 0) -> None:
        self.value = value
        self.index = index
        self.line = line
        self.column = column


Expr = (
    Num
    | Bool
    | Name
    | ListExpr
    | TupleExpr
    | UnaryOp
    | BinOp
    | BoolOp
    | Compare
    | IfExp
    | Call
    | Attribute
    | Slice
    | Subscript
    | Str
    | FString
    | NoneLit
    | ListComp
    | Lambda
)

# ----------------------------------------------------------------- statements


class ExprStmt(Node):
    """An expression on its own line (its value is the program's result if last)."""

    value: Expr

    def __init__(self, value: Expr, *, line: int = 0, column: int = 0) -> None:
        self.value = value
        self.line = line
        self.column = column


class Assign(Node):
    """``target = value``."""

    target: Expr  # Name or Subscript
    value: Expr

    def __init__(self, target: Expr, value: Expr, *, line: int = 0, column: int = 0) -> None:
        self.target = target
        self.value = value
        self.line = line
        self.column = column


class AugAssign(Node):
    """``target op= value``."""

    target: Expr  # Name or Subscript
    op: str  # the binary operator: "+", "-", "*", "/", "%", "**", "@"
    value: Expr

    def __init__(
        self, target: Expr, op: str, value: Expr, *, line: int = 0, column: int = 0
    ) -> None:
        self.target = target
        self.op = op
        self.value = value
        self.line = line
        self.column = column


class If(Node):
    """``elif`` chains are nested Ifs in ``orelse``."""

    test: Expr
    body: list[Stmt]
    orelse: list[Stmt]

    def __init__(
        self,
        test: Expr,
        body: list[Stmt],
        orelse: list[Stmt],
        *,
        line: int = 0,
        column: int = 0,
    ) -> None:
        self.test = test
        self.body = body
        self.orelse = orelse
        self.line = line
        self.column = column


class While(Node):
    """``while test:`` and its block."""

    test: Expr
    body: list[Stmt]

    def __init__(self, test: Expr, body: list[Stmt], *, line: int = 0, column: int = 0) -> None:
        self.test = test
        self.body = body
        self.line = line
        self.column = column


class For(Node):
    """``for target in iter:`` and its block."""

    target: str | list[str]  # one name, or the names a tuple item is unpacked into
    iter: Expr
    body: list[Stmt]

    def __init__(
        self,
        target: str | list[str],
        iter: Expr,
        body: list[Stmt],
        *,
        line: int = 0,
        column: int = 0,
    ) -> None:
        self.target = target
        self.iter = iter
        self.body = body
        self.line = line
        self.column = column


class Param(Node):
    """A function parameter, with its default expression if it has one."""

    name: str
    default: Expr | None = None

    def __init__(
        self, name: str, default: Expr | None = None, *, line: int = 0, column: int = 0
    ) -> None:
        self.name = name
        self.default = default
        self.line = line
        self.column = column


class FunctionDef(Node):
    """``def name(params):`` and its block."""

    name: str
    params: list[Param]
    body: list[Stmt]

    def __init__(
        self,
        name: str,
        params: list[Param],
        body: list[Stmt],
        *,
        line: int = 0,
        column: int = 0,
    ) -> None:
        self.name = name
        self.params = params
        self.body = body
        self.line = line
        self.column = column


class Return(Node):
    """``return`` with a value or None."""

    value: Expr | None

    def __init__(self, value: Expr | None, *, line: int = 0, column: int = 0) -> None:
        self.value = value
        self.line = line
        self.column = column


class Pass(Node):
    """``pass``."""

    def __init__(self, *, line: int = 0, column: int = 0) -> None:
        self.line = line
        self.column = column


class Break(Node):
    """``break``."""

    def __init__(self, *, line: int = 0, column: int = 0) -> None:
        self.line = line
        self.column = column


class Continue(Node):
    """``continue``."""

    def __init__(self, *, line: int = 0, column: int = 0) -> None:
        self.line = line
        self.column = column


class Alias(Node):
    """``name [as asname]`` of an import (``name`` may be dotted: ``torch.nn.functional``)."""

    name: str
    asname: str | None = None

    def __init__(self, name: str, asname: str | None = None, *, line: int = 0, column: int = 0):
        self.name = name
        self.asname = asname
        self.line = line
        self.column = column


class Import(Node):
    """``import torch``, ``import torch.nn.functional as F``."""

    names: list[Alias]

    def __init__(self, names: list[Alias], *, line: int = 0, column: int = 0) -> None:
        self.names = names
        self.line = line
        self.column = column


class ImportFrom(Node):
    """``from torch.autograd import Variable``."""

    module: str
    names: list[Alias]

    def __init__(self, module: str, names: list[Alias], *, line: int = 0, column: int = 0):
        self.module = module
        self.names = names
        self.line = line
        self.column = column


class WithItem(Node):
    """``context [as name]`` of a with statement."""

    context: Expr
    name: str | None = None

    def __init__(self, context: Expr, name: str | None = None, *, line: int = 0, column: int = 0):
        self.context = context
        self.name = name
        self.line = line
        self.column = column


class With(Node):
    """``with torch.no_grad():`` and its block."""

    items: list[WithItem]
    body: list[Stmt]

    def __init__(
        self, items: list[WithItem], body: list[Stmt], *, line: int = 0, column: int = 0
    ) -> None:
        self.items = items
        self.body = body
        self.line = line
        self.column = column


class ChainAssign(Node):
    """``a = b = value``: the value stored into each target, left to right."""

    targets: list[Expr]
    value: Expr

    def __init__(self, targets: list[Expr], value: Expr, *, line: int = 0, column: int = 0):
        self.targets = targets
        self.value = value
        self.line = line
        self.column = column


class Assert(Node):
    """``assert test, message``."""

    test: Expr
    msg: Expr | None = None

    def __init__(self, test: Expr, msg: Expr | None = None, *, line: int = 0, column: int = 0):
        self.test = test
        self.msg = msg
        self.line = line
        self.column = column


Stmt = (
    ExprStmt
    | Assign
    | AugAssign
    | If
    | While
    | For
    | FunctionDef
    | Return
    | Pass
    | Break
    | Continue
    | Import
    | ImportFrom
    | With
    | ChainAssign
    | Assert
)


class Program(Node):
    """A whole formula or program: its statements in order."""

    body: list[Stmt]

    def __init__(self, body: list[Stmt], *, line: int = 0, column: int = 0) -> None:
        self.body = body
        self.line = line
        self.column = column
