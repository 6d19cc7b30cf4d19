"""Resource limits, and programs whose size or depth must not matter."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from gradcalc import syntax as ast
from gradcalc.errors import LimitError
from gradcalc.interpreter import Interpreter
from gradcalc.limits import Limits


def test_loop_iterations_are_limited() -> None:
    interp = Interpreter(limits=Limits(max_iterations=1000))
    with pytest.raises(LimitError, match="1,000 iterations"):
        interp.execute("while True: pass")
    with pytest.raises(LimitError):
        interp.execute("for i in range(2000): pass")


def test_iterations_are_counted_across_nested_loops() -> None:
    interp = Interpreter(limits=Limits(max_iterations=100))
    with pytest.raises(LimitError):
        interp.execute("for i in range(20):\n    for j in range(20): pass")


def test_call_depth_is_limited_without_python_recursion() -> None:
    interp = Interpreter(limits=Limits(max_call_depth=50))
    with pytest.raises(LimitError, match="deeper than 50") as info:
        interp.execute("def f(n):\n    return f(n + 1)\nf(0)")
    assert "base case" in info.value.message


def test_deep_recursion_within_the_limit_runs_under_the_default_recursion_limit() -> None:
    interp = Interpreter(limits=Limits(max_call_depth=5000))
    program = "def down(n):\n    if n <= 0: return 0\n    return 1 + down(n - 1)\ndown(4000)"
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)  # Python's default
    try:
        out = interp.execute(program)
    finally:
        sys.setrecursionlimit(saved)
    assert float(out.value._data) == 4000


@pytest.mark.parametrize(
    "source",
    [
        "arange(10**12)",
        "zeros(10**6, 10**6)",
        "ones(10**5, 1) * ones(1, 10**5)",
        "ones(10**5, 1) @ ones(1, 10**5)",
        "eye(10**5)",
        "randn(10**9)",
        "linspace(0, 1, 10**10)",
        "full([10**5, 10**5], 1)",
        "maximum(ones(10**5, 1), ones(1, 10**5))",
        "ones(10**5, 1) < ones(1, 10**5)",
        "clamp(ones(10**5, 1), min=ones(1, 10**5))",
        "where(ones(10**5, 1) > 0, 1, ones(1, 10**5))",
        "[ones(2 * 10**4)] * 1 + ones(2 * 10**4, 1)",
    ],
)
def test_tensor_size_is_checked_before_allocating(source: str) -> None:
    started = time.perf_counter()
    with pytest.raises(LimitError, match="elements"):
        Interpreter().execute(source)
    assert time.perf_counter() - started < 1.0


def test_element_limit_is_configurable() -> None:
    interp = Interpreter(limits=Limits(max_elements=10))
    interp.execute("ones(10)")
    with pytest.raises(LimitError):
        interp.execute("ones(11)")
    with pytest.raises(LimitError):
        interp.bind("big", list(range(11)))


def test_graph_size_is_limited() -> None:
    interp = Interpreter(limits=Limits(max_graph_nodes=100))
    with pytest.raises(LimitError, match="operations"):
        interp.execute("s = 1\nfor i in range(200): s = s * 1.01")


def test_a_limit_error_carries_a_position_and_a_hint() -> None:
    interp = Interpreter(limits=Limits(max_iterations=10))
    with pytest.raises(LimitError) as info:
        interp.execute("x = 1\nwhile x > 0:\n    x = x + 1")
    assert info.value.line == 2
    assert info.value.hint


# ------------------------------------------------------------------ size is not a limit


def _left_deep_sum(terms: int) -> ast.Program:
    node: ast.Node = ast.Name("a")
    for _ in range(terms - 1):
        node = ast.BinOp("+", node, ast.Name("a"))
    return ast.Program([ast.ExprStmt(node)])


def test_flat_sum_of_100000_terms_from_a_hand_built_ast() -> None:
    interp = Interpreter()
    interp.bind("a", 2.0)
    out = interp.execute(_left_deep_sum(100_000))
    assert float(out.value._data) == 200_000
    grad = interp.execute("grad(" + "+".join(["a"] * 1000) + ", a)").value
    assert float(grad._data) == 1000


def test_flat_sum_of_100000_terms_from_source_differentiates() -> None:
    interp = Interpreter()
    interp.bind("a", 2.0)
    out = interp.execute("y = " + " + ".join(["a"] * 100_000) + "\ny.backward()\ny")
    assert float(out.value._data) == 200_000
    assert float(interp.env["a"].grad._data) == 100_000


def test_deeply_nested_conditional_expression_from_an_ast() -> None:
    node: ast.Node = ast.Num(7.0)
    for _ in range(20_000):
        node = ast.IfExp(ast.Bool(False), ast.Num(1.0), node)
    out = Interpreter().execute(ast.Program([ast.ExprStmt(node)]))
    assert float(out.value._data) == 7


def test_deeply_nested_blocks_from_an_ast() -> None:
    body: list = [ast.Assign(ast.Name("y"), ast.Num(1.0))]
    for _ in range(5_000):
        body = [ast.If(ast.Bool(True), body, [])]
    out = Interpreter().execute(ast.Program(body))
    assert out.name == "y"


def test_a_long_chain_of_assignments() -> None:
    lines = ["x0 = a"] + [f"x{i} = x{i - 1} * 1.0001" for i in range(1, 20_000)]
    interp = Interpreter()
    interp.bind("a", 1.0)
    out = interp.execute("\n".join(lines) + "\nbackward(x19999)")
    assert out.name == "x19999"
    np.testing.assert_allclose(float(interp.env["a"].grad._data), 1.0001**19999)
