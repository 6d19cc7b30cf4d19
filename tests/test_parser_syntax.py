"""The AST classes: slotted classes whose hand-written methods agree with their fields.

``gradcalc.syntax`` writes ``__init__``, ``__eq__`` and ``__repr__`` itself and
derives ``__slots__`` and ``__match_args__`` from the annotations (dataclasses
cost start-up time and their generated methods recurse); these tests hold them
to what ``@dataclass(slots=True)`` gave, and check they do not recurse.
"""

from __future__ import annotations

import inspect
import math

import pytest

from gradcalc import syntax as ast
from gradcalc.parser import parse

NODE_CLASSES = [
    cls
    for cls in vars(ast).values()
    if isinstance(cls, type) and issubclass(cls, ast.Node) and cls is not ast.Node
]


def test_every_node_class_is_slotted_with_its_annotated_fields() -> None:
    assert len(NODE_CLASSES) == 42
    for cls in [ast.Node, *NODE_CLASSES]:
        assert vars(cls)["__slots__"] == tuple(vars(cls).get("__annotations__", ())), cls
        assert cls.__doc__ and cls.__doc__.strip(), cls
        node = cls.__new__(cls)
        with pytest.raises(AttributeError):
            node.not_a_field = 1  # slotted: no __dict__


@pytest.mark.parametrize("cls", NODE_CLASSES, ids=lambda cls: cls.__name__)
def test_hand_written_init_matches_the_fields(cls: type) -> None:
    positional = [
        name for name in vars(cls).get("__annotations__", {}) if name not in ast.POSITION_FIELDS
    ]
    assert cls.__match_args__ == tuple(positional)
    parameters = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in parameters] == [*positional, "line", "column"]
    kinds = [p.kind for p in parameters]
    assert (
        kinds
        == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * len(positional)
        + [inspect.Parameter.KEYWORD_ONLY] * 2
    )
    assert [p.default for p in parameters[-2:]] == [0, 0]
    values = [object() for _ in positional]
    node = cls(*values, line=3, column=4)
    assert [getattr(node, name) for name in positional] == values
    assert (node.line, node.column) == (3, 4)
    assert repr(node).startswith(cls.__qualname__ + "(")
    match node:
        case ast.Node(line=3):
            pass
        case _:
            pytest.fail("match on a node's fields")


def test_equality_ignores_positions_and_compares_structure() -> None:
    assert parse("a + 2*b") == parse("a  +  2 * b")
    assert parse("(a + 2*b)").body[0].value.column == 1
    assert parse("a + 2*b").body[0].value == parse("\n\n   a + 2*b").body[0].value
    assert parse("a + b") != parse("a - b")
    assert parse("f(x, axis=0)") != parse("f(x, axis=1)")
    assert parse("[a, b]") != parse("[a, b, c]")
    assert ast.Num(1.0) != ast.Bool(True)
    assert ast.Pass() == ast.Pass() and ast.Pass() != ast.Break()
    assert ast.Name("a") != "a" and ast.Name("a") != None  # noqa: E711
    nan = ast.Num(math.nan)
    # As the generated __eq__ compares tuples of fields: identical values are equal.
    assert nan == nan and ast.Num(float("nan")) != ast.Num(float("nan"))
    with pytest.raises(TypeError):
        hash(ast.Name("a"))


def test_repr_is_the_dataclass_repr_without_positions() -> None:
    tree = parse("y = -f(x, axis=0)[1:, ::2] if a < b else [True]\nreturn")
    assert repr(tree) == (
        "Program(body=[Assign(target=Name(id='y'), value=IfExp(test=Compare(left=Name(id='a'), "
        "ops=['<'], comparators=[Name(id='b')]), body=UnaryOp(op='-', operand=Subscript("
        "value=Call(func=Name(id='f'), args=[Name(id='x')], keywords=[Keyword(name='axis', "
        "value=Num(value=0))]), index=TupleExpr(items=[Slice(lower=Num(value=1), upper=None, "
        "step=None), Slice(lower=None, upper=None, step=Num(value=2))]))), "
        "orelse=ListExpr(items=[Bool(value=True)]))), Return(value=None)])"
    )
    assert repr(ast.Pass(line=2)) == "Pass()"
    assert repr(ast.Param("x")) == "Param(name='x', default=None)"


def test_equality_and_repr_do_not_recurse_on_long_formulas() -> None:
    """A flat sum of 50,000 terms is a BinOp chain 50,000 deep: == and repr still work."""
    source = " + ".join(f"x{i % 7}" for i in range(50_000))
    first, second = parse(source), parse(source)
    assert first == second
    assert first != parse(source + " + x0")
    text = repr(first)
    assert text.startswith("Program(body=[ExprStmt(value=BinOp(op='+', left=BinOp(")
    assert text.count("Name(id=") == 50_000
