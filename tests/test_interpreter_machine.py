"""The machine itself: its dispatch table, loops tested at their bottom, and errors
reported at the instruction that failed whether it ran in the loop or in a handler."""

from __future__ import annotations

import ast as python_ast
import inspect

import numpy as np
import pytest

from gradcalc import interpreter as machine
from gradcalc.errors import FormulaError, LimitError, ShapeError, UnknownNameError
from gradcalc.interpreter import Interpreter
from gradcalc.limits import Limits


def number(value) -> float:
    return float(np.asarray(value._data))


def failure(source: str, **limits) -> FormulaError:
    interp = Interpreter(limits=Limits(**limits))
    interp.bind("a", 1.0)
    interp.bind("v", [1.0, 2.0])
    interp.bind("w", [1.0, 2.0, 3.0])
    with pytest.raises(FormulaError) as info:
        interp.execute(source)
    return info.value


# ------------------------------------------------------------------ structure


def test_every_opcode_is_written_out_in_the_loop_or_has_one_handler() -> None:
    opcodes = {
        name: value
        for name, value in vars(machine).items()
        if name.isupper()
        and not name.startswith("_")
        and type(value) is int
        and name != "LAST_INLINE"
    }
    assert sorted(opcodes.values()) == list(range(len(opcodes)))
    assert len(machine._HANDLERS) == len(opcodes)
    for name, op in opcodes.items():
        handler = machine._HANDLERS[op]
        assert (handler is None) == (op <= machine.LAST_INLINE), name


def test_no_function_of_the_interpreter_is_long() -> None:
    tree = python_ast.parse(inspect.getsource(machine))
    lengths = {
        node.name: node.end_lineno - node.lineno + 1
        for node in python_ast.walk(tree)
        if isinstance(node, python_ast.FunctionDef)
    }
    assert max(lengths.values()) <= 100, max(lengths, key=lengths.get)


# ------------------------------------------------------------------ loops


@pytest.mark.parametrize("read", ["", "    last = i\n"])
def test_for_loops_continue_and_break_with_or_without_their_variable_read(read: str) -> None:
    program = (
        "s = 0\nfor i in range(10):\n" + read + "    if i == 2: continue\n"
        "    if i == 6: break\n    s = s + 1\ns"
    )
    interp = Interpreter()
    assert number(interp.execute(program).value) == 5  # 0, 1, 3, 4, 5
    assert number(interp.env["i"]) == 6


def test_a_for_loop_that_never_runs_binds_nothing() -> None:
    interp = Interpreter()
    interp.execute("s = 0\nfor i in range(0): s = i\nfor j in range(0): s = s + 1")
    assert "i" not in interp.env
    assert "j" not in interp.env


def test_while_loops_count_the_iterations_they_run() -> None:
    program = "i = 0\nwhile i < {n}:\n    if i < 0: continue\n    i = i + 1\ni"
    limited = Interpreter(limits=Limits(max_iterations=10))
    assert number(limited.execute(program.format(n=10)).value) == 10
    with pytest.raises(LimitError, match="10 iterations"):
        limited.execute(program.format(n=11))
    assert number(Interpreter().execute("while False: x = 1\n5").value) == 5


def test_the_graph_limit_holds_in_while_loops_and_calls() -> None:
    for program in (
        "y = a\nwhile True:\n    y = y * 2",
        "def f(p): return p * 2\ny = a\nfor i in range(100): y = f(y)",
    ):
        error = failure(program, max_graph_nodes=50)
        assert isinstance(error, LimitError)
        assert "operations" in error.message


# ------------------------------------------------------------------ errors


def test_a_name_load_and_the_operator_after_it_fail_each_at_its_own_position() -> None:
    unknown = failure("a +  nope")
    assert isinstance(unknown, UnknownNameError)
    assert (unknown.line, unknown.column) == (1, 6)
    mismatch = failure("y = v * 2 + w")
    assert isinstance(mismatch, ShapeError)
    assert "(2,) and (3,)" in mismatch.message
    assert (mismatch.line, mismatch.column) == (1, 5)


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("v @ w", "inner dimensions 2 and 3"),
        ("v < w", "(2,) and (3,)"),
        ("v < w < 2", "(2,) and (3,)"),
        ("v.shape @ w", "inner dimensions 1 and 3"),
        ("def g(q): return sin(q) @ v\ng(w)", "inner dimensions 3 and 2"),
        ("maximum(v, w)", "(2,) and (3,)"),
    ],
)
def test_failed_operators_and_calls_name_both_shapes(source: str, words: str) -> None:
    error = failure(source)
    assert isinstance(error, ShapeError)
    assert words in error.message
    assert error.__cause__ is None


def test_an_error_in_a_function_says_where_it_was_called_and_leaves_no_frame() -> None:
    interp = Interpreter()
    interp.bind("v", [1.0, 2.0])
    interp.execute("def f(p):\n    return p @ ones(3)")
    with pytest.raises(ShapeError) as info:
        interp.execute("y = 1\nfor i in range(2):\n    y = f(v)")
    assert "in f(), called at line 3" in info.value.hint
    assert interp.context.scopes == [interp.env]
    assert "y" not in interp.env
    assert number(interp.execute("f(ones(3))").value) == 3
