"""Compiled programs: compile once and run many times, and the specialised code
(direct built-in calls, loops that do not make an unread variable's items) behaving
exactly as the generic code does."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gradcalc import interpreter as interpreter_module
from gradcalc.errors import FormulaTypeError, LimitError, ShapeError, UnknownNameError
from gradcalc.interpreter import Compiled, Interpreter
from gradcalc.limits import Limits
from gradcalc.parser import parse


def number(value) -> float:
    return float(np.asarray(value._data))


# ------------------------------------------------------------------ compile once


def test_compiled_code_runs_in_many_interpreters_with_their_own_values() -> None:
    compiled = Interpreter().compile("y = 3*a**3 - b**2")
    assert isinstance(compiled, Compiled)
    for a, b in [(2.0, 6.0), (1.0, 1.0), (-1.5, 0.5)]:
        interp = Interpreter()
        interp.bind("a", a)
        interp.bind("b", b)
        out = interp.execute(compiled)
        assert out.name == "y"
        assert number(out.value) == 3 * a**3 - b**2
        out.value.backward()
        assert number(interp.env["a"].grad) == 9 * a**2
        assert number(interp.env["b"].grad) == -2 * b


def test_a_program_object_is_compiled_once(monkeypatch) -> None:
    program = parse("sin(x) * 2")
    calls = []
    real = interpreter_module._compile

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(interpreter_module, "_compile", counting)
    for x in (0.1, 0.2, 0.3):
        interp = Interpreter()
        interp.bind("x", x)
        assert number(interp.execute(program).value) == pytest.approx(2 * np.sin(x))
    assert len(calls) == 1
    interp = Interpreter()
    interp.bind("x", 1.0)
    interp.execute(parse("sin(x) * 2"))
    assert len(calls) == 2  # another program object


def test_compiled_code_of_another_dtype_or_limits_is_recompiled() -> None:
    compiled = Interpreter().compile("x * 2.5")
    interp = Interpreter(dtype="float32")
    interp.bind("x", 2.0)
    out = interp.execute(compiled)
    assert out.value._data.dtype == np.float32
    strict = Interpreter(limits=Limits(max_iterations=3))
    with pytest.raises(LimitError):
        strict.execute(Interpreter().compile("for i in range(10): y = i"))


def test_an_error_compiled_into_the_program_is_raised_fresh_each_run() -> None:
    compiled = Interpreter().compile("y = 1\n[[1, 2], [3]]")
    for _ in range(2):
        with pytest.raises(ShapeError) as info:
            Interpreter().execute(compiled)
        assert info.value.line == 2


def test_literals_shared_by_compiled_code_are_never_changed_in_place() -> None:
    compiled = Interpreter().compile("a = (2).zero_()\nb = 2 * 1\nc = (2).requires_grad_()")
    for _ in range(2):
        interp = Interpreter()
        interp.execute(compiled)
        assert number(interp.env["a"]) == 0.0
        assert number(interp.env["b"]) == 2.0
        assert interp.env["c"].requires_grad
    assert number(Interpreter().execute("2 * 1").value) == 2.0


# ------------------------------------------------------------------ loop variables


def test_an_unread_loop_variable_ends_at_the_last_item() -> None:
    interp = Interpreter()
    interp.bind("x", 1.0)
    interp.execute("y = x\nfor i in range(5): y = y * 2")
    assert number(interp.env["i"]) == 4.0
    assert interp.env["i"].requires_grad is False
    interp.execute("for j in range(2, 20, 3):\n    if j > 9: break\n    y = y + 1")
    assert number(interp.env["j"]) == 11.0
    interp.execute("for k in range(0): y = y + 1")
    assert "k" not in interp.env
    interp.execute("for row in [[1, 2], [3, 4]]: y = y + 1")
    assert interp.env["row"]._data.tolist() == [3.0, 4.0]


def test_a_loop_variable_in_a_huge_range_can_break() -> None:
    interp = Interpreter()
    interp.execute("for i in range(10**30):\n    if i > 2: break")
    assert number(interp.env["i"]) == 3.0


def test_a_function_of_an_earlier_run_sees_the_loop_variable() -> None:
    interp = Interpreter()
    interp.execute("def f(): return i * 1")
    out = interp.execute("s = 0\nfor i in range(4): s = s + f()\ns")
    assert number(out.value) == 0 + 1 + 2 + 3
    interp.execute("def outer():\n    def inner(): return i * 10\n    return inner\ng = outer()")
    interp.execute("outer = 1")  # g still reaches inner through its closure
    out = interp.execute("s = 0\nfor i in range(3): s = s + g()\ns")
    assert number(out.value) == 30


def test_loop_limits_still_hold_in_specialised_loops() -> None:
    interp = Interpreter(limits=Limits(max_iterations=100))
    with pytest.raises(LimitError, match="iterations"):
        interp.execute("for i in range(1000): y = 1")
    interp = Interpreter(limits=Limits(max_graph_nodes=50))
    interp.bind("x", 1.0)
    with pytest.raises(LimitError, match="operations"):
        interp.execute("y = x\nfor i in range(100): y = sin(y) * 0.5")


def test_straight_code_past_the_graph_limit_is_refused() -> None:
    interp = Interpreter(limits=Limits(max_graph_nodes=10))
    interp.bind("a", 1.0)
    with pytest.raises(LimitError, match="operations"):
        interp.execute(" + ".join(["a"] * 20))
    assert number(interp.execute(" + ".join(["a"] * 10)).value) == 10.0


# ------------------------------------------------------------------ built-in names


def test_a_bound_name_shadows_a_built_in_called_by_compiled_code() -> None:
    compiled = Interpreter().compile("sin(x)")
    interp = Interpreter()
    interp.bind("x", 0.5)
    assert number(interp.execute(compiled).value) == pytest.approx(np.sin(0.5))
    interp.bind("sin", 2.0)
    with pytest.raises(FormulaTypeError, match="'sin' is a tensor"):
        interp.execute(compiled)


def test_a_built_in_assigned_later_in_the_program_is_shadowed_from_then_on() -> None:
    interp = Interpreter()
    interp.execute("a = sin(0)\nsin = 3\nb = sin * 2")
    assert number(interp.env["a"]) == 0.0
    assert number(interp.env["b"]) == 6.0
    with pytest.raises(FormulaTypeError, match="not a function"):
        interp.execute("sin(1)")


def test_a_function_of_an_earlier_run_calls_the_built_in_or_the_new_global() -> None:
    interp = Interpreter()
    interp.execute("def f(x): return exp(x)")
    assert number(interp.execute("f(0)").value) == 1.0
    interp.execute("exp = 5")
    with pytest.raises(FormulaTypeError, match="not a function"):
        interp.execute("f(0)")


def test_a_bound_name_that_is_a_built_in_keeps_the_direct_calls() -> None:
    """A request's variable ``t`` (a built-in's name the program only reads) shadows the
    built-in where it is read, at the top level and in functions, and the calls of other
    built-ins stay direct (no CALL_NAME)."""
    compiled = Interpreter().compile("def f(y): return y * t + e\nsum(softmax(x) * t) + f(1)")
    calls = []
    handlers = interpreter_module._HANDLERS
    real = handlers[interpreter_module.CALL_NAME]

    def counting(m, site, pc):
        calls.append(site.name)
        return real(m, site, pc)

    interp = Interpreter()
    interp.bind("x", [1.0, 2.0, 3.0])
    interp.bind("t", [0.5, -1.0, 2.0])
    interp.bind("e", 10.0)
    assert not interp._needs_generic(compiled)
    handlers[interpreter_module.CALL_NAME] = counting
    try:
        out = number(interp.execute(compiled).value.sum())
    finally:
        handlers[interpreter_module.CALL_NAME] = real
    soft = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    assert out == pytest.approx(3 * (soft @ [0.5, -1.0, 2.0]) + 3 * 10.0 + 1.5)
    assert calls == ["f"]  # (the user's function; sum and softmax called directly)
    plain = Interpreter()
    plain.bind("x", [1.0, 2.0, 3.0])
    with pytest.raises(FormulaTypeError, match=r"built-in function t\(\)"):
        plain.execute(compiled)


def test_a_session_function_shadows_a_built_in_called_with_keywords() -> None:
    """Built-ins found by name are every interpreter's, but the session's own functions come
    first, at each call site, whether it calls with one argument, several or keywords."""
    interp = Interpreter()
    interp.bind("x", [1.0, 2.0])
    compiled = interp.compile("softmax(x) + maximum(x, 1) + sum(x, dim=0)")
    before = number(interp.execute(compiled).value.sum())
    assert before == pytest.approx(1.0 + 3.0 + 6.0)
    interp.execute("def softmax(v): return v * 0\ndef maximum(a, b): return a - b")
    interp.execute("def sum(v, dim=5): return dim")
    assert number(interp.execute(compiled).value.sum()) == pytest.approx(0 + 1.0 + 0)
    other = Interpreter()  # another interpreter in the process: the built-ins
    other.bind("x", [1.0, 2.0])
    assert number(other.execute(compiled).value.sum()) == pytest.approx(before)


def test_a_call_site_maps_keywords_for_each_built_in_it_calls() -> None:
    """A site's keyword names are kept for the built-in it called: another one there (its
    name rebound) maps them by its own parameters."""
    compiled = Interpreter().compile("g(x, dim=0)")
    for function, expected in (("sum", [4.0, 6.0]), ("mean", [2.0, 3.0]), ("sum", [4.0, 6.0])):
        interp = Interpreter()
        interp.bind("x", [[1.0, 2.0], [3.0, 4.0]])
        interp.execute(f"g = {function}")
        assert np.asarray(interp.execute(compiled).value._data).tolist() == expected
    interp = Interpreter()
    interp.bind("x", [[1.0, 2.0], [3.0, 4.0]])
    interp.execute("g = softmax")
    with pytest.raises(ShapeError, match="softmax: axis 2 is out of range"):
        interp.execute("g(x[0][0], dim=0) + g(x, dim=2)")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_interpreters_of_each_dtype_get_their_own_constants(dtype) -> None:
    other = "float64" if dtype == "float32" else "float32"
    first, second = Interpreter(dtype), Interpreter(other)
    compiled = first.compile("pi * 1")
    for _ in range(2):  # (each run looks the constant up in its interpreter)
        assert str(first.execute(compiled).value.dtype).endswith(dtype)
        assert str(second.execute("pi * 1").value.dtype).endswith(other)
    assert str(first.execute("e").value.dtype).endswith(dtype)


def test_a_one_tensor_call_runs_the_adapter_s_function_as_the_generic_code_does() -> None:
    """``sum(x)`` called directly (the registry function the adapter passes a tensor to):
    the values, and a failure's words, of the generic call."""
    for source in ("sum(x)", "f = sum\nf(x)"):
        interp = Interpreter()
        interp.bind("x", [[1.0, 2.0], [3.0, 4.0]])
        assert number(interp.execute(source).value) == 10.0
    messages = []
    for source in ("bmm(x)", "f = bmm\nf(x)"):
        interp = Interpreter()
        interp.bind("x", [[1.0, 2.0], [3.0, 4.0]])
        with pytest.raises(FormulaTypeError) as caught:
            interp.execute(source)
        messages.append((caught.value.message, caught.value.hint))
    assert (
        messages[0]
        == messages[1]
        == (
            "bmm(): missing a required argument: 'y'",
            "signature: bmm(x, y)",
        )
    )


def test_built_in_constants_and_functions_as_values() -> None:
    interp = Interpreter()
    assert number(interp.execute("pi * 2").value) == pytest.approx(2 * np.pi)
    assert number(interp.execute("f = cos\nf(0)").value) == 1.0
    interp.execute("pi = 3")
    assert number(interp.execute("pi * 2").value) == 6.0


def test_a_built_in_with_a_wrong_argument_explains_itself() -> None:
    with pytest.raises(FormulaTypeError, match="sin"):
        Interpreter().execute("def f(): return 1\nsin(f)")
    with pytest.raises(UnknownNameError):
        Interpreter().execute("sinn(2)")


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1/0", np.inf),
        ("log(-1)", np.nan),
        ("10**10**10", np.inf),
        ("-1/0", -np.inf),
        ("sqrt(-1)", np.nan),
        ("exp(1000)", np.inf),
        ("0/0", np.nan),
        ("x = 0\ny = 1/x\nbackward(y)\nx.grad", -np.inf),
        ("[1, 0] / 0", None),
    ],
)
def test_non_finite_results_come_without_warnings(source: str, expected) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = Interpreter().execute(source)
    if expected is not None:
        np.testing.assert_equal(number(out.value), expected)


def test_number_operators_on_integer_and_float_tensors() -> None:
    interp = Interpreter()
    assert interp.execute("2 - arange(3)").value._data.tolist() == [2, 1, 0]
    assert interp.execute("arange(3) * 0.5").value._data.tolist() == [0, 0.5, 1.0]
    assert interp.execute("2 ** arange(3)").value._data.tolist() == [1, 2, 4]
    assert interp.execute("7 % arange(1, 4)").value._data.tolist() == [0, 1, 1]
    with pytest.raises(FormulaTypeError, match="'-' needs numbers or tensors"):
        interp.execute("def f(): return 1\n2 - f")


def test_errors_of_compiled_text_carry_the_source_for_the_caret() -> None:
    compiled = Interpreter().compile("y = 1\nz = y + nope")
    with pytest.raises(UnknownNameError) as info:
        Interpreter().execute(compiled)
    assert info.value.line == 2
    assert info.value.source_line() == "z = y + nope"
    with pytest.raises(UnknownNameError) as info:
        Interpreter(dtype="float32").execute(compiled)
    assert info.value.source_line() == "z = y + nope"
