"""The typed AST of the formula language.

The parser's one Transformer turns Lark's tree into these dataclasses; the
interpreter and the pretty-printer see nothing else. Positions (1-based line
and column of the node's first token) are keyword-only and excluded from
equality, so ``parse(pretty(tree)) == tree`` compares structure only.

Operators are kept as their source spelling (``"+"``, ``"**"``, ``"and"``,
``"<="``); ``^`` is normalised to ``"**"`` by the parser.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field


@dataclass(slots=True, eq=True)
class Node:
    _: KW_ONLY
    line: int = field(default=0, compare=False, repr=False)
    column: int = field(default=0, compare=False, repr=False)


# ---------------------------------------------------------------- expressions


@dataclass(slots=True, eq=True)
class Num(Node):
    value: float


@dataclass(slots=True, eq=True)
class Bool(Node):
    value: bool


@dataclass(slots=True, eq=True)
class Name(Node):
    id: str


@dataclass(slots=True, eq=True)
class ListExpr(Node):
    items: list[Expr]


@dataclass(slots=True, eq=True)
class TupleExpr(Node):
    """Comma-separated items; appears as a subscript index (``x[:, 0]``)."""

    items: list[Expr]


@dataclass(slots=True, eq=True)
class UnaryOp(Node):
    op: str  # "-", "+", "not"
    operand: Expr


@dataclass(slots=True, eq=True)
class BinOp(Node):
    op: str  # "+", "-", "*", "/", "%", "**", "@"
    left: Expr
    right: Expr


@dataclass(slots=True, eq=True)
class BoolOp(Node):
    op: str  # "and", "or"
    values: list[Expr]  # two or more, flattened like Python's ast


@dataclass(slots=True, eq=True)
class Compare(Node):
    left: Expr
    ops: list[str]  # "<", "<=", ">", ">=", "==", "!="
    comparators: list[Expr]


@dataclass(slots=True, eq=True)
class IfExp(Node):
    """``body if test else orelse``."""

    test: Expr
    body: Expr
    orelse: Expr


@dataclass(slots=True, eq=True)
class Keyword(Node):
    name: str
    value: Expr


@dataclass(slots=True, eq=True)
class Call(Node):
    """``func(args, name=value)``; ``func`` is a Name, or an Attribute for method sugar."""

    func: Expr
    args: list[Expr]
    keywords: list[Keyword]


@dataclass(slots=True, eq=True)
class Attribute(Node):
    value: Expr
    attr: str


@dataclass(slots=True, eq=True)
class Slice(Node):
    lower: Expr | None
    upper: Expr | None
    step: Expr | None


@dataclass(slots=True, eq=True)
class Subscript(Node):
    value: Expr
    index: Expr  # an Expr, a Slice, or a TupleExpr of those


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
)

# ----------------------------------------------------------------- statements


@dataclass(slots=True, eq=True)
class ExprStmt(Node):
    value: Expr


@dataclass(slots=True, eq=True)
class Assign(Node):
    target: Expr  # Name or Subscript
    value: Expr


@dataclass(slots=True, eq=True)
class AugAssign(Node):
    target: Expr  # Name or Subscript
    op: str  # the binary operator: "+", "-", "*", "/", "%", "**", "@"
    value: Expr


@dataclass(slots=True, eq=True)
class If(Node):
    """``elif`` chains are nested Ifs in ``orelse``."""

    test: Expr
    body: list[Stmt]
    orelse: list[Stmt]


@dataclass(slots=True, eq=True)
class While(Node):
    test: Expr
    body: list[Stmt]


@dataclass(slots=True, eq=True)
class For(Node):
    target: str
    iter: Expr
    body: list[Stmt]


@dataclass(slots=True, eq=True)
class Param(Node):
    name: str
    default: Expr | None = None


@dataclass(slots=True, eq=True)
class FunctionDef(Node):
    name: str
    params: list[Param]
    body: list[Stmt]


@dataclass(slots=True, eq=True)
class Return(Node):
    value: Expr | None


@dataclass(slots=True, eq=True)
class Pass(Node):
    pass


@dataclass(slots=True, eq=True)
class Break(Node):
    pass


@dataclass(slots=True, eq=True)
class Continue(Node):
    pass


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
)


@dataclass(slots=True, eq=True)
class Program(Node):
    body: list[Stmt]
