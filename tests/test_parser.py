"""The formula grammar and parser: precedence, every form, positions, errors, limits, size."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gradcalc import syntax as ast
from gradcalc.errors import LimitError, ParseError
from gradcalc.limits import Limits
from gradcalc.parser import (
    LARK_OPTIONS,
    _build_parser,
    _parser,
    _run,
    grammar_text,
    parse,
    pretty,
    table_data,
    tables_source,
)


def sexp(node: ast.Node | None) -> str:
    """A compact prefix rendering of small trees, so expected shapes read at a glance."""
    match node:
        case None:
            return "_"
        case ast.Num(value=value):
            return repr(float(value))  # (ints and floats alike: 2 and 2.0)
        case ast.Bool(value=value):
            return str(value)
        case ast.Name(id=name):
            return name
        case ast.UnaryOp(op=op, operand=operand):
            return f"({op} {sexp(operand)})"
        case ast.BinOp(op=op, left=left, right=right):
            return f"({op} {sexp(left)} {sexp(right)})"
        case ast.BoolOp(op=op, values=values):
            return f"({op} {' '.join(map(sexp, values))})"
        case ast.Compare(left=left, ops=ops, comparators=rest):
            pairs = " ".join(f"{op} {sexp(item)}" for op, item in zip(ops, rest, strict=True))
            return f"(cmp {sexp(left)} {pairs})"
        case ast.IfExp(test=test, body=body, orelse=orelse):
            return f"(ifexp {sexp(test)} {sexp(body)} {sexp(orelse)})"
        case ast.Call(func=func, args=args, keywords=keywords):
            parts = [sexp(func), *map(sexp, args), *(f"{k.name}={sexp(k.value)}" for k in keywords)]
            return f"(call {' '.join(parts)})"
        case ast.Attribute(value=value, attr=attr):
            return f"(. {sexp(value)} {attr})"
        case ast.Subscript(value=value, index=index):
            return f"([] {sexp(value)} {sexp(index)})"
        case ast.Slice(lower=lower, upper=upper, step=step):
            return f"(: {sexp(lower)} {sexp(upper)} {sexp(step)})"
        case ast.ListExpr(items=items):
            return f"[{' '.join(map(sexp, items))}]"
        case ast.TupleExpr(items=items):
            return f"(tuple {' '.join(map(sexp, items))})"
    raise AssertionError(f"no sexp for {node!r}")


def expr(source: str) -> ast.Node:
    """The expression of a one-expression program."""
    (statement,) = parse(source).body
    assert isinstance(statement, ast.ExprStmt)
    return statement.value


# ---------------------------------------------------------------- precedence

PRECEDENCE = [
    ("-a**2", "(- (** a 2.0))"),
    ("2**3**2", "(** 2.0 (** 3.0 2.0))"),
    ("2**-1", "(** 2.0 (- 1.0))"),
    ("-a**-b", "(- (** a (- b)))"),
    ("(-a)**2", "(** (- a) 2.0)"),
    ("2^3^2", "(** 2.0 (** 3.0 2.0))"),
    ("-a^2", "(- (** a 2.0))"),
    ("a-b-c", "(- (- a b) c)"),
    ("a/b/c", "(/ (/ a b) c)"),
    ("a-(b-c)", "(- a (- b c))"),
    ("a+b*c", "(+ a (* b c))"),
    ("(a+b)*c", "(* (+ a b) c)"),
    ("a*b%c@d/e", "(/ (@ (% (* a b) c) d) e)"),
    ("a@b+c", "(+ (@ a b) c)"),
    ("- - a", "(- (- a))"),
    ("+-a", "(+ (- a))"),
    ("a*-b", "(* a (- b))"),
    ("not a == b", "(not (cmp a == b))"),
    ("not a and b", "(and (not a) b)"),
    ("a or b and c", "(or a (and b c))"),
    ("a or b or c", "(or a b c)"),
    ("a and b and c", "(and a b c)"),
    ("(a or b) or c", "(or (or a b) c)"),
    ("a < b <= c", "(cmp a < b <= c)"),
    ("a == b != c > d >= e", "(cmp a == b != c > d >= e)"),
    ("a + 1 < b * 2", "(cmp (+ a 1.0) < (* b 2.0))"),
    ("(a < b) < c", "(cmp (cmp a < b) < c)"),
    ("a if b else c", "(ifexp b a c)"),
    ("a if b else c if d else e", "(ifexp b a (ifexp d c e))"),
    ("a or b if c and d else e", "(ifexp (and c d) (or a b) e)"),
    ("-x.T", "(- (. x T))"),
    ("-x[0]**2", "(- (** ([] x 0.0) 2.0))"),
    ("x.sum(axis=0)", "(call (. x sum) axis=0.0)"),
    ("f(a)(b)", "(call (call f a) b)"),
    ("x.T.T", "(. (. x T) T)"),
    ("x[0][1]", "([] ([] x 0.0) 1.0)"),
    ("f(x, 2, axis=0, keepdim=True)", "(call f x 2.0 axis=0.0 keepdim=True)"),
    ("f()", "(call f)"),
    ("f(a,)", "(call f a)"),
    ("x.__class__", "(. x __class__)"),
]


@pytest.mark.parametrize(("source", "shape"), PRECEDENCE)
def test_precedence_and_associativity_follow_python(source: str, shape: str) -> None:
    assert sexp(expr(source)) == shape


def test_caret_is_normalised_to_double_star() -> None:
    assert expr("a ^ b") == expr("a ** b")
    assert parse("x ^= 2").body[0] == parse("x **= 2").body[0]


# ------------------------------------------------------------------ literals

LITERALS = [
    ("2", 2.0),
    ("2.", 2.0),
    ("2.5", 2.5),
    (".5", 0.5),
    ("1e-3", 1e-3),
    ("1E+5", 1e5),
    ("2.5e3", 2500.0),
    ("007", 7.0),
    ("1e999", math.inf),
]


@pytest.mark.parametrize(("source", "value"), LITERALS)
def test_number_literals(source: str, value: float) -> None:
    assert expr(source) == ast.Num(value)


def test_booleans_lists_tuples_and_subscripts() -> None:
    assert expr("True") == ast.Bool(True)
    assert expr("False") == ast.Bool(False)
    assert sexp(expr("[]")) == "[]"
    assert sexp(expr("[[0,1,2],[3,4,5],]")) == "[[0.0 1.0 2.0] [3.0 4.0 5.0]]"
    assert sexp(expr("(1, 2)")) == "(tuple 1.0 2.0)"
    assert sexp(expr("(1,)")) == "(tuple 1.0)"
    assert sexp(expr("(1)")) == "1.0"
    assert sexp(expr("x[0]")) == "([] x 0.0)"
    assert sexp(expr("x[-1]")) == "([] x (- 1.0))"
    assert sexp(expr("x[1:3]")) == "([] x (: 1.0 3.0 _))"
    assert sexp(expr("x[:, 0]")) == "([] x (tuple (: _ _ _) 0.0))"
    assert sexp(expr("x[::2]")) == "([] x (: _ _ 2.0))"
    assert sexp(expr("x[1:]")) == "([] x (: 1.0 _ _))"
    assert sexp(expr("x[:-1:]")) == "([] x (: _ (- 1.0) _))"
    assert sexp(expr("x[a,]")) == "([] x (tuple a))"
    assert sexp(expr("x[i, j]")) == "([] x (tuple i j))"


def test_unicode_names_are_names() -> None:
    assert expr("θ + λ_2") == ast.BinOp("+", ast.Name("θ"), ast.Name("λ_2"))


# ---------------------------------------------------------------- statements


def test_assignment_forms() -> None:
    assign, element, *augmented = parse(
        "y = 1\nx[0] = 2\nw -= 0.01 * g\na += 1; a *= 2; a /= 2; a **= 2; a @= m; a %= 3; a ^= 2"
    ).body
    assert assign == ast.Assign(ast.Name("y"), ast.Num(1.0))
    assert element == ast.Assign(ast.Subscript(ast.Name("x"), ast.Num(0.0)), ast.Num(2.0))
    assert [(s.target, s.op) for s in augmented] == [
        (ast.Name("w"), "-"),
        *((ast.Name("a"), op) for op in ["+", "*", "/", "**", "@", "%", "**"]),
    ]


def test_semicolons_and_blank_lines_and_comments() -> None:
    program = parse("# header\n\na = 2; b = 6;  # trailing\n\n\nP = 3*a**3 - b**2  # seed 000\n")
    assert [type(s).__name__ for s in program.body] == ["Assign", "Assign", "Assign"]
    assert parse("") == ast.Program([])
    assert parse("   \n# only a comment\n") == ast.Program([])


def test_if_elif_else_chain_nests_in_orelse() -> None:
    (top,) = parse(
        "if a > 0:\n    y = 1\nelif a < 0:\n    y = -1\nelif a == 0: y = 0\nelse:\n    y = 2\n"
    ).body
    assert isinstance(top, ast.If) and sexp(top.test) == "(cmp a > 0.0)"
    second = top.orelse[0]
    assert isinstance(second, ast.If) and sexp(second.test) == "(cmp a < 0.0)"
    third = second.orelse[0]
    assert isinstance(third, ast.If) and third.body == [ast.Assign(ast.Name("y"), ast.Num(0.0))]
    assert third.orelse == [ast.Assign(ast.Name("y"), ast.Num(2.0))]
    assert parse("if a:\n  b\nelse:\n  if c:\n    d\n") == parse("if a:\n  b\nelif c:\n  d\n")


def test_one_line_blocks() -> None:
    assert parse("if x > 0: y = 1") == parse("if x > 0:\n    y = 1\n")
    assert parse("def f(a): return a*2") == parse("def f(a):\n    return a*2\n")
    assert parse("while a: a -= 1; b += 1") == parse("while a:\n    a -= 1\n    b += 1\n")
    assert parse("for i in range(3): pass") == parse("for i in range(3):\n    pass\n")


def test_loops_functions_and_jumps() -> None:
    source = (
        "def f(a, b=0.1,):\n"
        "    b = a * 2\n"
        "    while b.norm() < 1000:\n"
        "        b = b * 2\n"
        "        if b.sum() > 0: break\n"
        "        else: continue\n"
        "    for i in range(4):\n"
        "        pass\n"
        "    return b\n"
        "def g(): return\n"
    )
    f, g = parse(source).body
    assert isinstance(f, ast.FunctionDef) and f.name == "f"
    assert f.params == [ast.Param("a"), ast.Param("b", ast.Num(0.1))]
    _, loop, for_loop, ret = f.body
    assert isinstance(loop, ast.While) and sexp(loop.test) == "(cmp (call (. b norm)) < 1000.0)"
    assert loop.body[1] == ast.If(loop.body[1].test, [ast.Break()], [ast.Continue()])
    assert isinstance(for_loop, ast.For) and for_loop.target == "i"
    assert for_loop.body == [ast.Pass()]
    assert ret == ast.Return(ast.Name("b"))
    assert g == ast.FunctionDef("g", [], [ast.Return(None)])


def test_indentation_with_tabs_nested_blocks_and_a_common_margin() -> None:
    nested = parse("if a:\n\tif b:\n\t\tc = 1\n\td = 2\ne = 3\n").body
    assert len(nested) == 2 and len(nested[0].body) == 2
    # Text pasted with a margin (a shell here-doc) parses as if dedented.
    assert parse("\n    a = 2\n    if a:\n        b = 1\n    c = 3\n") == parse(
        "a = 2\nif a:\n    b = 1\nc = 3\n"
    )


def test_line_continuation_inside_brackets_and_with_backslash() -> None:
    assert parse("y = f(a,\n      b,\n   c)\nz = [1,\n2]") == parse("y = f(a, b, c)\nz = [1, 2]")
    assert parse("y = a + \\\n    b") == parse("y = a + b")


def test_positions_are_the_first_token_of_each_node() -> None:
    program = parse("x = 1\nif x:\n    y = -a + f(b)[c] * 2\n")
    assign, branch = program.body
    assert (assign.line, assign.column) == (1, 1)
    assert (branch.line, branch.column) == (2, 1)
    inner = branch.body[0]
    assert (inner.line, inner.column) == (3, 5)
    total = inner.value
    assert (total.line, total.column) == (3, 9)  # starts at '-'
    product = total.right
    assert (product.line, product.column) == (3, 14)  # f(b)[c] * 2 starts at f
    assert (product.right.line, product.right.column) == (3, 24)
    bracketed = expr("(a + b) * c")
    assert (bracketed.line, bracketed.column) == (1, 1)
    assert (bracketed.left.line, bracketed.left.column) == (1, 1)
    assert (bracketed.left.right.line, bracketed.left.right.column) == (1, 6)


# ------------------------------------------------------------ friendly errors

ERRORS = [
    ("3*", "expected an operand after '*'", (1, 3)),
    ("a +* b", "expected an operand after '+', but found '*'", (1, 4)),
    ("y = ", "expected an operand after '='", (1, 4)),
    ("3*(a", "unclosed '(' opened at line 1, column 3", (1, 3)),
    ("f(a,\n  b\nc = 2", "unclosed '(' opened at line 1, column 2", (1, 2)),
    ("x = [1, 2", "unclosed '[' opened at line 1, column 5", (1, 5)),
    ("a)", "unmatched ')'", (1, 2)),
    ("(a]", "']' does not match '(' opened at line 1, column 1", (1, 3)),
    ("if x = 1: y = 2", "'=' is assignment; use '==' to compare", (1, 6)),
    ("while x = 1: pass", "'=' is assignment; use '==' to compare", (1, 9)),
    ("if x > 0 y = 1", "expected ':' to end the 'if' line", (1, 10)),
    ("for i in range(3)\n  pass", "expected ':' to end the 'for' line", (1, 18)),
    ("if x:\ny = 1", "expected an indented block after ':'", (2, 1)),
    ("a = 1\n    b = 2", "unexpected indent", (2, 5)),
    ("if a:\n    b\n  c", "unindent does not match any outer indentation level", (3, 3)),
    ("else: y", "'else' without an 'if' block before it", (1, 1)),
    ("if a: if b: c", "'if' cannot follow ':' on the same line", (1, 7)),
    ("x = $", "unknown character '$'", (1, 5)),
    ('import "os"', "unexpected", (1, 8)),
    ("f('a)", "unterminated string", (1, 3)),
    ("１ + ２", "unknown character '１'", (1, 1)),
    ("x = 1２", "unknown character '２'", (1, 6)),
    ("class A: pass", "'class' is not part of the gradcalc language", (1, 1)),
    ("a b", "two values in a row with nothing between them", (1, 3)),
    ("f(a b)", "two values in a row with nothing between them", (1, 5)),
    ("f(1)=2", "cannot assign to a call", (1, 1)),
    ("f(x=1, 2)", "positional argument follows keyword argument", (1, 8)),
    ("f(x, a=1, a=2)", "keyword argument 'a' repeated", (1, 11)),
    ("f(a+b=1)", "a keyword argument needs a plain name before '='", (1, 3)),
    ("def f(a=1, b): pass", "parameter 'b' without a default follows one", (1, 12)),
    ("def f(a, a): pass", "duplicate parameter 'a'", (1, 10)),
    ("a ! b", "unknown character '!'", (1, 3)),
    ("{1: 2}", "braces are not part of the language", (1, 1)),
    ("1 if 2", "unexpected end of line", (1, 7)),
    ("return return", "unexpected 'return'", (1, 8)),
    ("  a\nb", "this line is indented less than the first line", (2, 1)),
]


@pytest.mark.parametrize(("source", "message", "position"), ERRORS)
def test_errors_say_what_is_wrong_in_words(
    source: str, message: str, position: tuple[int, int]
) -> None:
    with pytest.raises(ParseError) as caught:
        parse(source)
    error = caught.value
    assert message in error.message
    assert (error.line, error.column) == position
    assert error.source == source
    assert error.hint
    for lark_name in ("RPAR", "LPAR", "NAME", "NUMBER", "_NEWLINE", "$END", "COMP_OP"):
        assert lark_name not in error.message and lark_name not in error.hint


def test_error_caret_points_at_the_spot() -> None:
    with pytest.raises(ParseError) as caught:
        parse("y = 3*(a +\n  b")
    assert caught.value.caret() == "y = 3*(a +\n      ^"
    assert caught.value.to_json()["type"] == "ParseError"


def test_generic_errors_name_what_was_expected_in_words() -> None:
    with pytest.raises(ParseError) as caught:
        parse("x[1:2:3:4]")
    assert caught.value.message == "unexpected ':'"
    assert caught.value.hint == "expected ',', ']'"


# ------------------------------------------------------------------- limits


def nested(depth: int, opener: str, closer: str, core: str = "a") -> str:
    return opener * depth + core + closer * depth


@pytest.mark.parametrize(
    "source",
    [
        nested(200, "(", ")"),
        nested(200, "-(", ")"),
        nested(200, "[", "]"),
        nested(200, "f(", ")"),
        nested(200, "x[", "]"),
        "- " * 200 + "a",
        "not " * 200 + "a",
        "**".join(["2"] * 200),
        " if c else ".join(["a"] * 200),
    ],
    ids=["parens", "neg-parens", "lists", "calls", "subscripts", "minus", "not", "pow", "ifexp"],
)
def test_two_hundred_levels_parse(source: str) -> None:
    assert len(parse(source).body) == 1


@pytest.mark.parametrize(
    "source",
    [
        nested(5000, "(", ")"),
        nested(5000, "-(", ")"),
        nested(5000, "[", "]"),
        "- " * 5000 + "a",
        "not " * 5000 + "a",
        "+-" * 2500 + "a",
        "**".join(["2"] * 5000),
        " if c else ".join(["a"] * 5000),
        "".join(f"{' ' * level}if a:\n" for level in range(600)) + " " * 600 + "b\n",
        nested(5000, "(", ""),
    ],
    ids=[
        "parens",
        "neg-parens",
        "lists",
        "minus",
        "not",
        "signs",
        "pow",
        "ifexp",
        "blocks",
        "open",
    ],
)
def test_five_thousand_levels_are_a_limit_error(source: str) -> None:
    with pytest.raises(LimitError) as caught:
        parse(source)
    assert "nests deeper than 500 levels" in caught.value.message
    assert caught.value.line is not None and caught.value.column is not None


def test_nesting_limit_is_configurable_and_counts_from_the_right_place() -> None:
    source = nested(30, "(", ")")
    assert parse(source, max_nesting=30)
    with pytest.raises(LimitError) as caught:
        parse(source, max_nesting=29)
    assert (caught.value.line, caught.value.column) == (1, 30)
    with pytest.raises(LimitError):
        parse(source, limits=Limits(max_nesting=10))
    # A deep formula parses with a raised limit (the parser never recurses).
    deep = parse(nested(20_000, "(", ")"), max_nesting=30_000)
    assert deep.body[0].value == ast.Name("a")


def test_flat_sequences_do_not_count_as_nesting() -> None:
    assert parse(" + ".join(["-a"] * 2000), max_nesting=3)
    assert parse(" and ".join(["not a"] * 2000), max_nesting=3)
    assert parse("x" + ".T" * 2000 + "[0]" * 2000, max_nesting=3)
    assert parse("; ".join(["a = -b ** 2"] * 2000), max_nesting=3)


# --------------------------------------------------------------------- size


def count_nodes(root: ast.Node) -> int:
    """Count AST nodes with an explicit stack (the trees here are too deep to recurse)."""
    count, stack = 0, [root]
    while stack:
        node = stack.pop()
        count += 1
        for name in node.__slots__:
            value = getattr(node, name)
            if isinstance(value, ast.Node):
                stack.append(value)
            elif isinstance(value, list):
                stack.extend(item for item in value if isinstance(item, ast.Node))
    return count


def test_flat_sum_of_100000_terms_parses_and_prints() -> None:
    source = "+".join(["a"] * 100_000)
    tree = parse(source)
    total = tree.body[0].value
    assert isinstance(total, ast.BinOp) and total.op == "+"
    assert count_nodes(tree) == 1 + 1 + 100_000 + 99_999
    printed = pretty(tree)
    assert printed == " + ".join(["a"] * 100_000)
    assert pretty(parse(printed)) == printed


def test_one_megabyte_formula_parses() -> None:
    unit = "3*a**3 - b[0]**2 + sin(x) / (c + 2.5)"
    source = " + ".join([unit] * (1_000_000 // (len(unit) + 3) + 1))
    assert len(source) >= 1_000_000
    tree = parse(source)
    assert count_nodes(tree) > 300_000
    assert pretty(tree) == " + ".join([pretty(expr(unit))] * source.count("sin"))


def test_many_statements_and_a_long_list() -> None:
    program = parse("\n".join(f"x{i} = {i}" for i in range(20_000)))
    assert len(program.body) == 20_000
    assert len(expr("[" + ", ".join(["1"] * 50_000) + "]").items) == 50_000


# -------------------------------------------------------------- pretty-print


def test_pretty_uses_minimal_parentheses() -> None:
    cases = {
        "-a ** 2": "-a ** 2",
        "(-a) ** 2": "(-a) ** 2",
        "(a ** b) ** c": "(a ** b) ** c",
        "a - (b - c)": "a - (b - c)",
        "(a + b) * c": "(a + b) * c",
        "not (a and b)": "not (a and b)",
        "(a if b else c) + 1": "(a if b else c) + 1",
        "x[1:3, ::2, 0]": "x[1:3, ::2, 0]",
        "x[a,]": "x[a,]",
        "(2).T": "(2).T",
        "f(a, k=(1, 2))": "f(a, k=(1, 2))",
        "- - a": "--a",
        "1e999 + 0.1": "1e999 + 0.1",
    }
    for source, printed in cases.items():
        assert pretty(expr(source)) == printed
        assert expr(printed) == expr(source)


def test_pretty_prints_programs_with_blocks() -> None:
    source = (
        "def f(a, b=0.1):\n"
        "    while a < b:\n"
        "        a += 1\n"
        "    if a:\n"
        "        return a\n"
        "    elif b:\n"
        "        pass\n"
        "    else:\n"
        "        x[0] = -1\n"
        "    for i in range(3):\n"
        "        break\n"
        "    return"
    )
    assert pretty(parse(source)) == source
    assert pretty(parse("a = 1; b = 2")) == "a = 1\nb = 2"


def test_pretty_of_deep_nesting_stays_iterative() -> None:
    tree = parse(nested(5000, "-(", ")"), max_nesting=20_000)
    printed = pretty(tree)
    assert printed == "-" * 5000 + "a"
    assert parse(printed, max_nesting=20_000).body[0].value.operand.op == "-"


# ------------------------------------------------------- loading the parser


def test_parser_is_built_once_from_the_generated_tables() -> None:
    assert _parser() is _parser()
    from gradcalc.grammar import _standalone, _tables

    assert grammar_text() == _tables.GRAMMAR_TEXT, "run: python -m gradcalc.parser"
    assert grammar_text() == _standalone.GRAMMAR_TEXT, "run: python -m gradcalc.parser"
    assert _parser().source == "tables"


def test_generated_tables_are_what_lark_makes_of_the_grammar() -> None:
    """The stored tables cannot go stale: the installed Lark regenerates them exactly."""
    import lark

    from gradcalc.grammar import _tables

    fresh = table_data(lark.Lark(grammar_text(), **LARK_OPTIONS))
    assert fresh == _tables.TABLES, "run: python -m gradcalc.parser"
    stored = Path(_tables.__file__).read_text(encoding="utf-8")
    assert tables_source() == stored, "run: python -m gradcalc.parser"


def test_table_data_does_not_depend_on_string_hashing() -> None:
    """Lark numbers the LALR states differently per hash seed; the stored tables do not."""
    script = (
        "import hashlib\n"
        "from gradcalc.parser import tables_source\n"
        "print(hashlib.sha256(tables_source().encode()).hexdigest())\n"
    )
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env
        )
        assert run.returncode == 0, run.stderr
        digests.add(run.stdout)
    assert len(digests) == 1


def test_stale_tables_are_replaced_by_lark_at_start_up(tmp_path, monkeypatch) -> None:
    import gradcalc.parser as parser_module

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(parser_module, "_fresh_generated", lambda name: None)
    built = _build_parser()
    assert built.source == "lark-cache"
    source = "def f(a):\n    return -a**2 if a > 0 else [a, a][0]\ny = f(x)[1:2, ::3]\n"
    assert _run(built, source, 500) == parse(source)
    with pytest.raises(ParseError, match="two values in a row"):
        _run(built, "a b", 500)


# One program per grammar rule alternative (optional parts present and absent).
EVERY_RULE = [
    "",
    "\n\n# only a comment\n",
    "a; b = 1; c += 2;\nd **= 3\ne ^= 4",
    "if a: b\nelif c: d\nelif e: f\nelse: g",
    "if a:\n    b\nelif c:\n    d",
    "if a:\n  b\nelse:\n  c; d",
    "while a < b <= c != d: a = a - 1",
    "for i in range(3):\n    if i: continue\n    break",
    "def f(): pass\ndef g(a, b=1,): return\ndef h(a,): return a",
    "x = -a**-b + +c - d * e / f % g @ h",
    "y = not a and b and c or d or e if f else g if h else i",
    "z = f()(a)(a, b,)(a, k=1)(k=1, j=2,).T[0][1:][:2][::3][1:2:3][:, 0,][a,][::][:][1::]",
    "w = (a) + (a,) + (a, b) + (a, b,) + [] + [a] + [a,] + [a, b] + [a, b,] + [True, False]",
    "v = 1.5e-3 + .5 + 2. + 10 \\\n    + 3",
    "a;\n\f\nb",  # a form feed between newlines leaves a newline token on its own
    "def f(a): pass\ndef g(a, b): pass\ndef h(a, b, c=1): pass",
    "f(a,) + f(a, b, c) + x[a, b] + x[a, b, c] + (a, b, c) + [a, b, c]",
    "x[1:2:] + x[1:2] + x[1::2] + x[:1:2] + x[:1:]",
    "import torch, torch.nn.functional as F\nfrom torch.autograd import Variable, grad as g",
    "from torch import (nn, autograd,)\nfrom a.b import (c)",
    "a, b = b, a\nc, = d,\nreturn a, b,\nx //= 2 // 3",
    "with torch.no_grad(), f() as g:\n    x = None",
    "for i, x in enumerate(y): pass\nfor (a, b) in z: pass",
    "s = 'a' \"b\" f'{x!r:>8} {{}}' r'\\d' '''x\ny'''",
    "t = a is b is not c in d not in e\nu = ()\na = b = c\nf = lambda: 1",
    "g = lambda x, y=2,: x\nassert a\nassert a, b",
    "v = [x * 2 for x in y if x if not x for z, w in q]\nu = sum(x for x in y) + (z for z in w)",
    "import a\nimport a, b, c\nfrom a import b\nfrom a import b, c, d\nfrom a import (b, c, d)",
    "from a import (b, c, d,)\nfrom a import (b)\nwith a: pass\nwith a, b, c: pass",
    "from a import (b,)\nfrom a import (b, c,)\nfrom a import (b, c)\nfrom a import b, c",
    "for a, in x: pass\nfor a, b, in x: pass\nfor a, b, c in x: pass\nfor (a) in x: pass",
    "for (a,) in x: pass\nfor (a, b, c) in x: pass\nfor (a, b,) in x: pass",
    "for (a, b, c,) in x: pass",
]


@pytest.mark.parametrize("source", EVERY_RULE)
def test_fast_driver_builds_what_lark_builds_for_every_rule(source: str) -> None:
    parser = _parser()
    fast = _run(parser, source, 500)
    assert fast == _run(parser, source, 500, fast=False)
    assert repr(fast) == repr(_run(parser, source, 500, fast=False))


def test_every_rule_corpus_reduces_every_rule() -> None:
    """EVERY_RULE reaches each rule's callback (so the test above checks each rule's shape)."""
    from gradcalc.grammar import _tables
    from gradcalc.parser import _Parser

    parser = _Parser(_tables.TABLES, "tables")
    reductions = parser.fast.actions.reductions
    reduced: set[int] = set()

    def counting(number: int, callback: object) -> object:
        def reduce(children: list) -> object:
            reduced.add(number)
            return callback(children)

        return reduce

    for number, (size, origin, callback) in enumerate(reductions):
        if callback is not None:
            reductions[number] = (size, origin, counting(number, callback))
    for source in EVERY_RULE:
        _run(parser, source, 500)
    never = [
        _tables.TABLES["rules"][number]
        for number, (_, _, callback) in enumerate(reductions)
        if callback is not None and number not in reduced
    ]
    # A program cannot start with a newline token: the postlexer drops leading blank lines.
    assert never == [(1, "__start_star_0", "__start_star_0", False, (), 0)]


def test_lark_cache_fallback_builds_the_same_parser(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    source = "def f(a):\n    return -a**2 if a > 0 else [a, a][0]\ny = f(x)[1:2, ::3]\n"
    for _ in range(2):  # builds and writes the cache, then loads it
        built = _build_parser(prefer_generated=False)
        assert built.source == "lark-cache"
        assert _run(built, source, 500, fast=False) == parse(source)
        assert _run(built, source, 500) == parse(source)
    assert list((tmp_path / "gradcalc").glob("grammar-*.cache"))


def test_unwritable_cache_dir_falls_back_to_no_cache(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert _build_parser(prefer_generated=False).source == "lark"


def test_import_is_light_and_parsing_does_not_import_lark() -> None:
    script = (
        "import sys, gradcalc.parser as p\n"
        "assert 'lark' not in sys.modules\n"
        "p.parse('3*a**3 - b**2')\n"
        "loaded = [m for m in sys.modules if 'lark' in m or m.endswith('_standalone')]\n"
        "assert not loaded, f'valid input needs neither Lark nor its standalone parser: {loaded}'\n"
        "try:\n"
        "    p.parse('a b')\n"
        "except p.ParseError as error:\n"
        "    assert 'two values in a row' in error.message\n"
        "assert 'lark' not in sys.modules, 'errors are explained by the standalone parser'\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_parse_is_thread_safe() -> None:
    sources = [f"y{i} = (a + {i}) * b\nif y{i}:\n    z = [{i}]\n" for i in range(8)]
    expected = [parse(source) for source in sources]
    failures: list[str] = []

    def work(index: int) -> None:
        for _ in range(100):
            if parse(sources[index]) != expected[index]:
                failures.append(sources[index])
        try:
            parse(sources[index] + ")")
        except ParseError as error:
            if error.message != "unmatched ')'":
                failures.append(error.message)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


@pytest.mark.skipif(os.name != "posix", reason="uses a POSIX cache path")
def test_cache_path_honours_xdg(tmp_path, monkeypatch) -> None:
    from gradcalc.parser import _cache_file

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _cache_file().parent == tmp_path / "gradcalc"
