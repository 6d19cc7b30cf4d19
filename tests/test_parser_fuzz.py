"""Parser properties: printed ASTs parse back; any input parses or raises our own errors.

Run the fuzzers longer with ``GRADCALC_FUZZ_EXAMPLES=10000``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradcalc import syntax as ast
from gradcalc.errors import LimitError, ParseError
from gradcalc.parser import (
    _current,
    _parser,
    _Rejected,
    _ScanState,
    parse,
    pretty,
    token_vocabulary,
)

EXAMPLES = int(os.environ.get("GRADCALC_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KEYWORDS = {
    "if", "elif", "else", "while", "for", "in", "def", "return", "pass", "break", "continue",
    "and", "or", "not", "True", "False", "None", "is", "import", "from", "as", "with",
    "lambda", "assert",
}  # fmt: skip

# ---------------------------------------------------------------- AST strategies

names = st.one_of(
    st.sampled_from(["a", "b", "x", "w", "sum", "e", "pi", "θ", "x_1"]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True),
).filter(lambda name: name not in KEYWORDS)

numbers = st.one_of(
    st.integers(min_value=0, max_value=10**20).map(float),
    st.floats(min_value=0.0, allow_nan=False, allow_infinity=True),
).map(ast.Num)

leaves = st.one_of(names.map(ast.Name), numbers, st.booleans().map(ast.Bool))


def unique_keywords(values: st.SearchStrategy) -> st.SearchStrategy:
    pairs = st.lists(st.tuples(names, values), max_size=2, unique_by=lambda pair: pair[0])
    return pairs.map(lambda items: [ast.Keyword(name, value) for name, value in items])


def indices(children: st.SearchStrategy) -> st.SearchStrategy:
    optional = st.none() | children
    slices = st.builds(ast.Slice, optional, optional, optional)
    one = children | slices
    return one | st.lists(one, min_size=1, max_size=3).map(ast.TupleExpr)


def compound(children: st.SearchStrategy) -> st.SearchStrategy:
    binary_ops = st.sampled_from(["+", "-", "*", "/", "%", "@", "**"])
    comparison_ops = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
    return st.one_of(
        st.builds(ast.UnaryOp, st.sampled_from(["-", "+", "not"]), children),
        st.builds(ast.BinOp, binary_ops, children, children),
        st.builds(
            ast.BoolOp, st.sampled_from(["and", "or"]), st.lists(children, min_size=2, max_size=3)
        ),
        st.integers(1, 3).flatmap(
            lambda n: st.builds(
                ast.Compare,
                children,
                st.lists(comparison_ops, min_size=n, max_size=n),
                st.lists(children, min_size=n, max_size=n),
            )
        ),
        st.builds(ast.IfExp, children, children, children),
        st.builds(ast.Call, children, st.lists(children, max_size=3), unique_keywords(children)),
        st.builds(ast.Attribute, children, names),
        st.builds(ast.Subscript, children, indices(children)),
        st.lists(children, max_size=3).map(ast.ListExpr),
        st.lists(children, min_size=1, max_size=3).map(ast.TupleExpr),
    )


expressions = st.recursive(leaves, compound, max_leaves=25)
# Statements hold smaller expressions, so a generated program stays a screenful.
small_expressions = st.recursive(leaves, compound, max_leaves=4)
targets = names.map(ast.Name) | st.builds(
    ast.Subscript, small_expressions, indices(small_expressions)
)


def statement_lists(statements: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(statements, min_size=1, max_size=2)


def parameter_lists() -> st.SearchStrategy:
    def build(items: list[tuple[str, ast.Node | None]], defaults_from: int) -> list[ast.Param]:
        return [
            ast.Param(name, default if position >= defaults_from else None)
            for position, (name, default) in enumerate(items)
        ]

    items = st.lists(
        st.tuples(names, small_expressions), max_size=3, unique_by=lambda item: item[0]
    )
    return st.builds(build, items, st.integers(0, 3))


simple_statements = st.one_of(
    st.builds(ast.ExprStmt, small_expressions),
    st.builds(ast.Assign, targets, small_expressions),
    st.builds(
        ast.AugAssign,
        targets,
        st.sampled_from(["+", "-", "*", "/", "%", "@", "**"]),
        small_expressions,
    ),
    st.builds(ast.Return, st.none() | small_expressions),
    st.just(ast.Pass()),
    st.just(ast.Break()),
    st.just(ast.Continue()),
)


def compound_statements(children: st.SearchStrategy) -> st.SearchStrategy:
    blocks = statement_lists(children)
    return st.one_of(
        st.builds(ast.If, small_expressions, blocks, st.just([]) | blocks),
        st.builds(ast.While, small_expressions, blocks),
        st.builds(ast.For, names, small_expressions, blocks),
        st.builds(ast.FunctionDef, names, parameter_lists(), blocks),
    )


statements = st.recursive(simple_statements, compound_statements, max_leaves=5)
programs = st.lists(statements, max_size=4).map(ast.Program)


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 1))  # generating programs is the slow part
@given(programs)
def test_pretty_printed_programs_parse_back_to_the_same_ast(program: ast.Program) -> None:
    text = pretty(program)
    assert parse(text) == program, text


@FUZZ
@given(small_expressions)
def test_pretty_printed_expressions_parse_back_to_the_same_ast(node: ast.Node) -> None:
    text = pretty(node)
    assert parse(text) == ast.Program([ast.ExprStmt(node)]), text


# ---------------------------------------------------------------------- fuzzing

SEPARATORS = ["", " ", " ", "\n", "\n    ", "\n  ", "\t", "; ", "\\\n", "\r\n", " # c\n"]
token_soup = st.lists(
    st.tuples(
        st.sampled_from([*token_vocabulary(), "x", "2", "(", ")", "[", "]"]),
        st.sampled_from(SEPARATORS),
    ),
    max_size=40,
).map(lambda pairs: "".join(token + separator for token, separator in pairs))
random_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"])
    | st.sampled_from("()[]:=\n \t#"),
    max_size=60,
)


def check_only_our_errors(text: str) -> ast.Program | None:
    try:
        tree = parse(text)
    except (ParseError, LimitError) as error:
        assert not error.message.startswith("the parser failed"), (text, error.message)
        assert error.line is not None and error.line >= 1, (text, error.message)
        assert error.column is not None and error.column >= 1, (text, error.message)
        return None
    return tree


@FUZZ
@given(token_soup | random_text)
def test_any_text_parses_or_raises_a_gradcalc_error(text: str) -> None:
    tree = check_only_our_errors(text)
    if tree is not None:
        assert parse(pretty(tree)) == tree


def driver_outcome(text: str, fast: bool) -> object:
    """What one driver makes of a text: a tree, "rejected", or one of our errors."""
    parser = _parser()
    _current.scan = _ScanState(500)
    try:
        if fast:
            return parser.fast.parse(text + "\n", parser.postlex)
        return parser.lark.parse(text + "\n")
    except (_Rejected, parser.errors.UnexpectedInput):
        return "rejected"
    except (ParseError, LimitError) as error:
        return (type(error).__name__, error.message, error.line, error.column)
    finally:
        _current.scan = None


@FUZZ
@given(token_soup | random_text)
def test_fast_driver_agrees_with_lark(text: str) -> None:
    """The fast driver and Lark's own parser accept the same texts and build the same trees."""
    assert driver_outcome(text, fast=True) == driver_outcome(text, fast=False), text


@FUZZ
@given(
    st.lists(st.sampled_from(["(", "[", "-", "not ", "2**", "a if b else ", "f("]), max_size=300)
)
def test_deep_prefixes_give_limit_or_parse_errors(prefixes: list[str]) -> None:
    text = "".join(prefixes) + "a"
    check_only_our_errors(text)
    check_only_our_errors(text + ")" * text.count("(") + "]" * text.count("["))
