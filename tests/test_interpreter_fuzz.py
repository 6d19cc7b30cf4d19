"""Random programs: the interpreter answers with a value or one of gradcalc's own errors.

Programs are generated from the language's pieces (operators, every built-in
function, method and attribute, indexing, statements) with arguments of the
wrong kind and shape on purpose. An error must be a FormulaError that is not
a converted bug (``__cause__`` holds the original exception only when it
was one), and a failed run leaves the environment as it was.

GRADCALC_FUZZ_EXAMPLES raises the number of examples (the issue's 10,000).
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradcalc import builtins as lang
from gradcalc.errors import FormulaError
from gradcalc.interpreter import Interpreter
from gradcalc.limits import Limits

EXAMPLES = int(os.environ.get("GRADCALC_FUZZ_EXAMPLES", "300"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

LEAVES = st.sampled_from(
    [
        "a", "v", "m", "c", "0", "1", "2.5", "-1", "1e308", "0.5", "True", "False", "pi",
        "[1, 2, 3]", "[[1, 2], [3, 4]]", "[]", "x.grad", "range(3)", "sqrt", "(1, 2)",
    ]
)  # fmt: skip
BINARY = st.sampled_from(["+", "-", "*", "/", "%", "**", "@", "<", "<=", "==", "!=", "and", "or"])
KEYWORDS = st.sampled_from(["axis", "dim", "keepdim", "p", "min", "max", "size", "requires_grad"])
FUNCTIONS = st.sampled_from(sorted(lang.FUNCTIONS))
METHODS = st.sampled_from(sorted(lang.METHODS))
ATTRIBUTES = st.sampled_from(sorted(lang.ATTRIBUTES))
INDICES = st.sampled_from(["0", "-1", "1:3", "::2", ":, 0", "5", "0.5", "a > 0", "[0, 1]", "::0"])


@st.composite
def expressions(draw: st.DrawFn, depth: int = 3) -> str:
    """A random expression at most ``depth`` operators deep (bounded, so recursion is fine)."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(LEAVES)

    def inner() -> str:
        return draw(expressions(depth - 1))

    def arguments() -> list[str]:
        return [inner() for _ in range(draw(st.integers(0, 3)))]

    kind = draw(st.integers(0, 6))
    if kind == 0:
        return f"({inner()} {draw(BINARY)} {inner()})"
    if kind == 1:
        return f"({draw(st.sampled_from(['-', '+', 'not ']))}{inner()})"
    if kind == 2:
        args = arguments()
        if draw(st.booleans()):
            args.append(f"{draw(KEYWORDS)}={inner()}")
        return f"{draw(FUNCTIONS)}({', '.join(args)})"
    if kind == 3:
        return f"{inner()}.{draw(METHODS)}({', '.join(arguments())})"
    if kind == 4:
        return f"{inner()}.{draw(ATTRIBUTES)}"
    if kind == 5:
        return f"{inner()}[{draw(INDICES)}]"
    return f"({inner()} if {inner()} else {inner()})"


EXPRESSIONS = expressions()

STATEMENTS = st.sampled_from(
    [
        "y = {0}",
        "y = {0}\ny.backward()",
        "if {0}:\n    y = {1}\nelse:\n    y = {2}",
        "for i in range(3):\n    y = {0}",
        "for i in {0}:\n    y = i",
        "while {0}:\n    y = {1}\n    break",
        "def f(p, q=2):\n    return {0}\ny = f({1})",
        "z = {0}\nz[0] = {1}",
        "z = {0}\nz += {1}",
        "y = grad({0}, a)",
    ]
)


def _check(source: str) -> None:
    interp = Interpreter(limits=Limits(max_elements=100_000, max_iterations=1_000))
    interp.bind("a", 1.5)
    interp.bind("v", [1.0, -2.0, 3.0])
    interp.bind("m", [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    interp.bind("c", 0.0, requires_grad=False)
    interp.bind("x", [2.0, 3.0])
    before = dict(interp.env)
    try:
        interp.execute(source)
    except FormulaError as error:
        assert error.__cause__ is None, f"{source!r} hit a bug: {error.__cause__!r}"
        assert error.message
        assert interp.env == before


@SETTINGS
@given(EXPRESSIONS)
def test_random_expressions_give_values_or_formula_errors(source: str) -> None:
    _check(source)


@SETTINGS
@given(STATEMENTS, st.lists(EXPRESSIONS, min_size=3, max_size=3))
def test_random_programs_give_values_or_formula_errors(template: str, parts: list[str]) -> None:
    _check(template.format(*parts))


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("ab1.+-*/%()[]:,=<>!\n ^@;_ef")), max_size=40))
def test_random_text_gives_values_or_formula_errors(source: str) -> None:
    _check(source)


def _outcome(source: str, generic: bool) -> tuple:
    """What a run gives (value, output name, error, names bound), specialised or generic."""
    interp = Interpreter(seed=7, limits=Limits(max_elements=100_000, max_iterations=1_000))
    if generic:
        interp._needs_generic = lambda compiled: True  # the generic twin of every instruction
    interp.bind("a", 1.5)
    interp.bind("v", [1.0, -2.0, 3.0])
    try:
        out = interp.execute(source)
    except FormulaError as error:
        return ("error", error.kind, error.message, error.line)
    return ("value", _shown(out.value), out.name, {k: _shown(v) for k, v in interp.env.items()})


def _shown(value) -> object:
    data = getattr(value, "_data", None)
    if data is None:
        return repr(value) if isinstance(value, lang.Size | lang.Builtin) else type(value)
    return (repr(np.asarray(data).tolist()), str(np.asarray(data).dtype))


LOOPS = st.sampled_from(
    [
        "y = a\nfor i in range(4):\n    y = {0}\n    if {1}: break",
        "y = a\nfor i in range(3):\n    if {0}: continue\n    y = y * {1}",
        "s = 0\nfor i in v:\n    s = s + {0}",
        "def f(p):\n    for j in range(2): p = p + {0}\n    return p\ny = f({1})",
        "sin = {0}\ny = sin",
        "y = {0}\nfor k in range(2): y = sin(y) + {1}",
        "def g(p, q=pi): return exp(p) * q + {0}\ny = 0\nfor i in range(2): y = y + g({1})",
        "n = 0\ny = a\nwhile n < 3:\n    n = n + 1\n    y = y * {0} + cos({1})",
        "for i in range(3):\n    def h(): return i * {0}\ny = h() + {1}",
    ]
)


@SETTINGS
@given(LOOPS, st.lists(EXPRESSIONS, min_size=2, max_size=2))
def test_specialised_code_runs_as_the_generic_code(template: str, parts: list[str]) -> None:
    source = template.format(*parts)
    assert _outcome(source, generic=False) == _outcome(source, generic=True), source
