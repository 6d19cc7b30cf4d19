"""The interpreter, construct by construct: values, gradients, scoping and outputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gradcalc import syntax as ast
from gradcalc.errors import (
    FormulaError,
    FormulaTypeError,
    FormulaValueError,
    ParseError,
    ShapeError,
)
from gradcalc.interpreter import Interpreter, Outcome


def run(source: str, dtype: str = "float64", seed: int | None = None, **bindings) -> Interpreter:
    interp = Interpreter(dtype=dtype, seed=seed)
    for name, value in bindings.items():
        interp.bind(name, value)
    interp.outcome = interp.execute(source)
    return interp


def value(source: str, **bindings) -> np.ndarray:
    out = run(source, **bindings).outcome.value
    return np.asarray(out._data)


def grad_of(interp: Interpreter, name: str) -> np.ndarray:
    return np.asarray(interp.env[name].grad._data)


def shape_of(source: str, **bindings) -> tuple[int, ...]:
    """The value of a program ending in ``.shape``: a torch.Size, checked as such."""
    out = run(source, **bindings).outcome.value
    assert repr(out) == f"torch.Size({list(out)})"
    return tuple(out)


# ------------------------------------------------------------------ operators


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("3*a**3 - b**2", -12.0),
        ("-a**2", -4.0),
        ("2**3**2", 512.0),
        ("2^3", 8.0),
        ("a - b - 1", -5.0),
        ("b / a / 2", 1.5),
        ("7 % 3", 1.0),
        ("-7 % 3", 2.0),
        ("+a", 2.0),
        ("(a + b) * 2", 16.0),
        ("1e-3 * 1000", 1.0),
        (".5 + 2.", 2.5),
        ("pi", np.pi),
        ("e", np.e),
    ],
)
def test_arithmetic_follows_python_precedence(source: str, expected: float) -> None:
    np.testing.assert_allclose(value(source, a=2, b=6), expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 < 2 < 3", True),
        ("3 > 2 > 2", False),
        ("1 < 2 <= 2 != 3", True),
        ("2 == 2", True),
        ("1 and 0", 0.0),
        ("0 and 1", 0.0),
        ("0 or 5", 5.0),
        ("2 or 5", 2.0),
        ("not 0", True),
        ("not 3", False),
        ("1 if 2 > 1 else 5", 1.0),
        ("1 if 2 < 1 else 5", 5.0),
        ("True + 1", 2.0),
    ],
)
def test_comparisons_and_logic_follow_python(source: str, expected: float) -> None:
    assert value(source) == expected


def test_comparisons_of_vectors_are_elementwise() -> None:
    assert value("[1, 2, 3] >= 2").tolist() == [False, True, True]


def test_truth_of_a_vector_is_an_error() -> None:
    with pytest.raises(FormulaValueError, match="ambiguous"):
        run("x = [1, 2]\nif x > 0: y = 1")


def test_short_circuit_skips_the_right_side() -> None:
    # the right side would be a NameError if it ran
    assert value("0 and nothing_here") == 0
    assert value("1 or nothing_here") == 1
    assert value("5 if 1 else nothing_here") == 5


def test_non_finite_values_are_results_not_errors() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert value("10**10**10") == np.inf
        assert value("1/0") == np.inf
        assert np.isnan(value("log(-1)"))
        assert value("-1/0") == -np.inf


def test_a_run_ignores_numpy_runtime_warnings_and_restores_the_filters_after() -> None:
    # mean of an empty tensor: NumPy warns from its own frames, which only the run's
    # filter silences; the run leaves the filters (the same list) as it found them
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=RuntimeWarning)  # (moved first inside)
        warnings.simplefilter("always", UserWarning)
        filters, show = warnings.filters, warnings.showwarning
        before = list(filters)
        assert np.isnan(value("mean(x)", x=[]))
        assert warnings.filters is filters and warnings.filters == before
        assert warnings.showwarning is show
        np.mean(np.array([]))  # outside a run, the caller's filters hold again
        warnings.warn("after", UserWarning, stacklevel=1)
    assert [type(w.message) for w in seen] == [UserWarning]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert np.isnan(value("mean(x)", x=[]))
        assert seen == []
        np.mean(np.array([]))  # the same warning outside a run
        assert seen and all(w.category is RuntimeWarning for w in seen)


def test_numpy_errstate_silences_once_and_keeps_the_callers_other_settings() -> None:
    from gradcalc import _numpy

    _numpy.load()
    old_call, old_size = np.geterrcall(), np.getbufsize()
    try:
        np.seterrcall(print)
        np.setbufsize(16384)
        for setting in ("warn", "raise"):
            with np.errstate(all=setting):
                with _numpy.errstate():
                    assert set(np.geterr().values()) == {"ignore"}
                    assert np.geterrcall() is print and np.getbufsize() == 16384
                    assert _numpy.errstate() is _numpy.NOTHING  # (silenced already)
                    assert float(np.float64(1e300) * 1e300) == np.inf
                assert set(np.geterr().values()) - {"ignore"} == {setting}
    finally:
        np.seterrcall(old_call)
        np.setbufsize(old_size)


# ------------------------------------------------------------------ statements


def test_last_assignment_is_the_output_with_its_name() -> None:
    out = run("a = 2; b = a * 3").outcome
    assert isinstance(out, Outcome)
    assert out.name == "b"
    assert float(out.value._data) == 6.0


def test_last_expression_statement_is_the_output_without_a_name() -> None:
    out = run("a = 2\na * 5").outcome
    assert out.name is None
    assert float(out.value._data) == 10.0


def test_a_statement_without_value_does_not_replace_the_output() -> None:
    out = run("x = 3\ny = x * x\ny.backward()").outcome
    assert out.name == "y"


def test_output_counts_statements_inside_loops() -> None:
    out = run("s = 0\nfor i in range(4):\n    t = i * 10\n").outcome
    assert out.name == "t"
    assert float(out.value._data) == 30.0


def test_if_elif_else() -> None:
    program = (
        "def sign(v):\n    if v > 0:\n        return 1\n"
        "    elif v < 0:\n        return -1\n    else:\n        return 0\n"
    )
    assert value(program + "sign(-3)") == -1
    assert value(program + "sign(0)") == 0
    assert value(program + "sign(4)") == 1


def test_while_with_break_and_continue() -> None:
    program = """
s = 0
i = 0
while True:
    i += 1
    if i % 2 == 0:
        continue
    if i > 9:
        break
    s += i
s
"""
    assert value(program) == 1 + 3 + 5 + 7 + 9


def test_for_over_range_forms() -> None:
    assert value("s = 0\nfor i in range(5): s += i\ns") == 10
    assert value("s = 0\nfor i in range(2, 5): s += i\ns") == 9
    assert value("s = 0\nfor i in range(10, 0, -3): s += i\ns") == 10 + 7 + 4 + 1
    assert value("s = 0\nfor i in range(4.0): s += 1\ns") == 4


def test_for_over_a_tensor_iterates_its_first_axis_differentiably() -> None:
    interp = run("s = 0\nfor row in x:\n    s = s + row[0] * row[1]\ns", x=[[1, 2], [3, 4]])
    assert float(interp.outcome.value._data) == 14.0
    interp.execute("s.backward()")
    np.testing.assert_array_equal(grad_of(interp, "x"), [[2, 1], [4, 3]])


def test_break_in_for_leaves_the_loop() -> None:
    assert value("n = 0\nfor i in range(100):\n    if i == 7: break\n    n = i\nn") == 6


def test_nested_loops_with_break() -> None:
    program = """
count = 0
for i in range(5):
    for j in range(5):
        if j > i: break
        count += 1
count
"""
    assert value(program) == 15


def test_loop_variable_is_a_constant() -> None:
    interp = run("for i in range(3): pass")
    assert not interp.env["i"].requires_grad
    assert float(interp.env["i"]._data) == 2.0


def test_pass_does_nothing() -> None:
    assert value("x = 1\nif x > 0: pass\nx") == 1


# ------------------------------------------------------------------ functions


def test_def_with_defaults_and_keywords() -> None:
    program = "def f(a, b=10, c=100):\n    return a + b + c\n"
    assert value(program + "f(1)") == 111
    assert value(program + "f(1, 2)") == 103
    assert value(program + "f(1, c=3)") == 14
    assert value(program + "f(c=1, a=2)") == 13


def test_recursion() -> None:
    program = "def fact(n):\n    if n <= 1: return 1\n    return n * fact(n - 1)\nfact(10)"
    assert value(program) == 3628800


def test_function_without_return_gives_none() -> None:
    out = run("def f(x):\n    y = x\nz = f(2)").outcome
    assert out.value is None


def test_functions_see_globals_and_have_their_own_locals() -> None:
    interp = run("k = 3\ndef f(x):\n    t = x * k\n    return t\ny = f(2)")
    assert float(interp.env["y"]._data) == 6
    assert "t" not in interp.env


def test_nested_functions_see_the_enclosing_scope() -> None:
    program = (
        "def outer(a):\n    def inner(b):\n        return a * b\n    return inner(3)\nouter(5)"
    )
    assert value(program) == 15


def test_gradient_flows_through_user_functions() -> None:
    interp = run("def sq(v): return v * v\ny = sq(sq(x))\ny.backward()", x=2)
    assert float(grad_of(interp, "x")) == 4 * 2**3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("f()", "missing the argument 'a'"),
        ("f(1, 2, 3)", "takes 2 arguments but 3 were given"),
        ("f(1, z=2)", "has no parameter 'z'"),
        ("f(1, a=2)", "two values for 'a'"),
    ],
)
def test_user_function_argument_errors_quote_the_signature(call: str, message: str) -> None:
    with pytest.raises(FormulaTypeError, match=message) as info:
        run("def f(a, b=2):\n    return a + b\n" + call)
    assert "f(a, b=2)" in info.value.hint


def test_error_inside_a_function_names_the_call() -> None:
    with pytest.raises(ShapeError) as info:
        run("def f(v):\n    return v @ [1, 2, 3]\n\nf([1, 2])")
    error = info.value
    assert error.line == 2
    assert "called at line 4" in error.hint


# ------------------------------------------------------------------ names and binding


def test_bound_variables_are_differentiable_leaves() -> None:
    interp = run("x", x=[1.0, 2.0])
    leaf = interp.env["x"]
    assert leaf.requires_grad and leaf.is_leaf
    assert leaf._data.dtype == np.float64


def test_bind_accepts_constant_formulas_and_requires_grad_false() -> None:
    interp = Interpreter()
    interp.bind("w", "ones(3, 1)")
    interp.bind("c", 5, requires_grad=False)
    assert interp.env["w"].requires_grad
    assert np.shape(interp.env["w"]._data) == (3, 1)
    assert not interp.env["c"].requires_grad


def test_bind_rejects_bad_names() -> None:
    with pytest.raises(FormulaValueError):
        Interpreter().bind("2x", 1)
    with pytest.raises(FormulaValueError):
        Interpreter().bind("if", 1)


def test_fresh_constants_become_leaves_but_derived_values_do_not() -> None:
    interp = run(
        "a = 2\nb = [1, 2]\nw = ones(3, 1)\nc = a * 3\nk = const(4)\nu = detach(c)\nr = 2 * pi"
    )
    env = interp.env
    for name in ("a", "b", "w", "r"):
        assert env[name].requires_grad and env[name].is_leaf, name
    assert env["c"].requires_grad and not env["c"].is_leaf
    assert not env["k"].requires_grad
    assert not env["u"].requires_grad


def test_requires_grad_false_keyword_keeps_a_constant() -> None:
    interp = run("x = rand(2, 2, requires_grad=False)\ny = x * 2")
    assert not interp.env["x"].requires_grad
    assert not interp.env["y"].requires_grad


def test_a_shadowed_constructor_is_not_fresh() -> None:
    interp = run("def ones(n): return const(n)\nz = ones(3)")
    assert not interp.env["z"].requires_grad


def test_names_shadow_constants_and_functions() -> None:
    assert value("e = 3\ne * 2") == 6
    with pytest.raises(FormulaTypeError, match="'sum' is a tensor, not a function"):
        run("sum = 5\nsum([1, 2])")


def test_calling_a_tensor_is_a_type_error() -> None:
    with pytest.raises(FormulaTypeError, match="'a' is a tensor, not a function"):
        run("a(2)", a=3)


def test_builtins_are_values() -> None:
    assert value("f = sqrt\nf(16)") == 4


def test_transactional_env_on_failure() -> None:
    interp = Interpreter()
    interp.bind("a", 2)
    interp.execute("b = a * 2")
    before = dict(interp.env)
    with pytest.raises(FormulaValueError):
        interp.execute("b = 100\nc = 5\nif [1, 2] > 0: pass")
    assert interp.env == before
    assert float(interp.env["b"]._data) == 4


def test_env_persists_between_executions() -> None:
    interp = Interpreter()
    interp.execute("def f(x): return x + 1")
    interp.execute("y = f(2)")
    assert float(interp.env["y"]._data) == 3


def test_float32_dtype() -> None:
    interp = run("y = a * 0.1 + arange(3)", dtype="float32", a=2)
    assert interp.env["y"]._data.dtype == np.float32
    assert interp.env["a"]._data.dtype == np.float32


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(FormulaValueError):
        Interpreter(dtype="int8")


def test_seeded_random_constructors_repeat() -> None:
    first = run("randn(3)", seed=7).outcome.value._data
    again = run("randn(3)", seed=7).outcome.value._data
    other = run("randn(3)", seed=8).outcome.value._data
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    uniform = run("rand(1000)", seed=1).outcome.value._data
    assert uniform.min() >= 0 and uniform.max() < 1


# ------------------------------------------------------------------ tensors


def test_lists_and_nested_lists() -> None:
    assert value("[[0, 1, 2], [3, 4, 5]]").shape == (2, 3)
    assert value("[]").shape == (0,)
    np.testing.assert_array_equal(value("[a, 2 * a, -1]", a=3), [3, 6, -1])


def test_list_of_variables_is_differentiable() -> None:
    interp = run("v = [a, a * a]\ns = sum(v * [1, 10])\ns.backward()", a=3)
    assert float(grad_of(interp, "a")) == 1 + 10 * 2 * 3


def test_tuple_outside_index_is_a_vector() -> None:
    assert value("zeros((2, 3))").shape == (2, 3)
    assert value("shape = (3, 1)\nrandn(shape)").shape == (3, 1)


def test_ragged_list_is_a_shape_error() -> None:
    with pytest.raises(ShapeError, match="ragged"):
        run("[[1, 2], [3]]")
    with pytest.raises(ShapeError, match="different shapes"):
        run("[a, [1, 2]]", a=1)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x[0]", 0),
        ("x[-1]", 5),
        ("x[1:3]", [1, 2]),
        ("x[::2]", [0, 2, 4]),
        ("x[x > 3]", [4, 5]),
        ("x[[0, 5]]", [0, 5]),
        ("m[1, 2]", 5),
        ("m[:, 0]", [0, 3]),
        ("m[1][0]", 3),
        ("m[0, 1:]", [1, 2]),
        ("x[1.0]", 1),
    ],
)
def test_indexing_and_slicing(source: str, expected) -> None:
    program = "x = arange(6)\nm = x.reshape(2, 3)\n" + source
    np.testing.assert_array_equal(value(program), expected)


def test_index_errors() -> None:
    with pytest.raises(ShapeError, match="out of range"):
        run("x = arange(3)\nx[5]")
    with pytest.raises(FormulaValueError, match="whole number"):
        run("x = arange(3)\nx[0.5]")


def test_subscript_assignment_is_functional_and_differentiable() -> None:
    interp = run("y = x * 1\ny[0] = 10 * x[1]\ns = sum(y * [1, 2, 3])\ns.backward()", x=[1, 2, 3])
    np.testing.assert_array_equal(interp.env["y"]._data, [20, 2, 3])
    # s = 10*x1 + 2*x1 + 3*x2
    np.testing.assert_array_equal(grad_of(interp, "x"), [0, 12, 3])


def test_subscript_assignment_forms() -> None:
    np.testing.assert_array_equal(
        value("z = zeros(2, 3)\nz[1] = [1, 2, 3]\nz"), [[0, 0, 0], [1, 2, 3]]
    )
    np.testing.assert_array_equal(value("z = zeros(2, 3)\nz[:, 1] = 7\nz"), [[0, 7, 0], [0, 7, 0]])
    np.testing.assert_array_equal(value("z = zeros(2, 3)\nz[0][2] = 4\nz"), [[0, 0, 4], [0, 0, 0]])
    np.testing.assert_array_equal(value("z = arange(4)\nz[z > 1] = 0\nz"), [0, 1, 0, 0])
    np.testing.assert_array_equal(value("z = arange(3)\nz[1] += 5\nz"), [0, 6, 2])


def test_subscript_assignment_shape_mismatch() -> None:
    with pytest.raises(ShapeError, match="cannot store"):
        run("z = zeros(3)\nz[0:2] = [1, 2, 3]")


def test_augmented_assignment() -> None:
    assert value("w = 1\nw -= 0.25\nw *= 4\nw /= 2\nw **= 3\nw") == 1.5**3
    np.testing.assert_array_equal(value("m = eye(2)\nm @= [[1, 2], [3, 4]]\nm"), [[1, 2], [3, 4]])


# ------------------------------------------------------------------ methods and attributes


def test_method_sugar() -> None:
    program = "x = arange(6)\n"
    assert value(program + "x.sum()") == 15
    assert value(program + "x.reshape(2, 3).sum(axis=0)").tolist() == [3, 5, 7]
    assert value(program + "x.reshape(2, 3).sum(dim=1)").tolist() == [3, 12]
    assert shape_of(program + "x.reshape(2, 3).T.shape") == (3, 2)
    assert shape_of(program + "x.shape") == (6,)
    np.testing.assert_allclose(value("[3, 4].norm()"), 5)
    assert value("(arange(4) - 2).relu()").tolist() == [0, 0, 0, 1]
    assert value("ones(2, 3).matmul(ones(3, 1))").tolist() == [[3], [3]]


def test_attributes() -> None:
    interp = run("y = x * 2\nr = y.requires_grad\nl = y.is_leaf\nf = y.grad_fn", x=[1.0])
    assert bool(interp.env["r"]._data) is True
    assert bool(interp.env["l"]._data) is False
    assert interp.env["f"].name() == "MulBackward0"
    assert value("c = const(3)\nc.requires_grad") == False  # noqa: E712


def test_shape_is_a_size_as_in_pytorch_and_a_vector_in_arithmetic() -> None:
    program = "x = ones(2, 3)\n"
    assert repr(run(program + "x.shape").outcome.value) == "torch.Size([2, 3])"
    assert repr(run("tensor(2.).shape").outcome.value) == "torch.Size([])"
    assert shape_of(program + "shape(x)") == (2, 3)
    assert shape_of(program + "x.shape[1:]") == (3,)
    assert value(program + "x.shape[0]") == 2
    assert value(program + "x.shape[-1] * x.shape[0]") == 6
    assert value(program + "len(x.shape)") == 2
    assert value(program + "prod(x.shape)") == 6
    assert value(program + "x.shape * 2").tolist() == [4, 6]
    assert value(program + "tensor(x.shape)").tolist() == [2, 3]
    assert bool(value(program + "x.shape == ones(2, 3).shape"))
    assert bool(value(program + "x.shape != ones(3, 2).shape"))
    assert value(program + "x.shape < [3, 3]").tolist() == [True, False]
    assert shape_of(program + "zeros(x.shape).shape") == (2, 3)
    assert shape_of(program + "randn(x.shape).shape") == (2, 3)
    assert shape_of(program + "ones(6).reshape(x.shape[::-1]).shape") == (3, 2)
    assert shape_of(program + "reshape(ones(6), x.shape).shape") == (2, 3)
    assert value(program + "s = 0\nfor n in x.shape: s = s + n\ns") == 5
    assert value(program + "1 if tensor(2.).shape else 0") == 0
    with pytest.raises(FormulaTypeError, match="a shape"):
        run(program + "s = x.shape\ns[0] = 1")


def test_grad_attribute_is_none_before_backward() -> None:
    out = run("x.grad", x=1).outcome
    assert out.value is None


@pytest.mark.parametrize("source", ["x.numpy()", "x.__class__", "x.foo", "x.__dict__"])
def test_attributes_outside_the_whitelist_are_refused(source: str) -> None:
    with pytest.raises(FormulaError) as info:
        run(source, x=1)
    assert info.value.kind in ("NameError", "TypeError")


def test_a_method_used_as_an_attribute_says_to_call_it() -> None:
    with pytest.raises(FormulaTypeError, match="call it"):
        run("x.sum", x=1)


def test_transpose_forms() -> None:
    program = "x = arange(24).reshape(2, 3, 4)\n"
    assert shape_of(program + "transpose(x).shape") == (4, 3, 2)
    assert shape_of(program + "transpose(x, 0, 1).shape") == (3, 2, 4)
    assert shape_of(program + "x.T.shape") == (4, 3, 2)
    assert value("transpose([[1, 2]])").tolist() == [[1], [2]]


# ------------------------------------------------------------------ autograd in the language


def test_grad_is_differentiable_so_second_derivatives_work() -> None:
    assert value("grad(x**3, x)", x=2) == 12
    assert value("grad(grad(x**3, x), x)", x=2) == 12
    assert value("grad(grad(grad(x**3, x), x), x)", x=2) == 6


def test_grad_of_a_non_scalar_sums_and_unused_is_zero() -> None:
    np.testing.assert_array_equal(value("grad(x * x, x)", x=[1, 2]), [2, 4])
    np.testing.assert_array_equal(value("grad(y * 3, x)", x=[1, 2], y=1), [0, 0])
    np.testing.assert_array_equal(value("grad(x * x, x, [1, 10])", x=[1, 2]), [2, 40])


def test_grad_of_an_intermediate() -> None:
    assert value("r1 = x * x\ny = 3 * r1 + r1 * r1\ngrad(y, r1)", x=2) == 3 + 2 * 4


def test_grad_against_a_constant_is_an_error() -> None:
    with pytest.raises(FormulaValueError, match="constant"):
        run("grad(x * 2, const(x))", x=1)


def test_backward_accumulates_and_zero_grad_clears() -> None:
    interp = run("y = x * x\ny.backward()\ny = x * x\nbackward(y)", x=3)
    assert float(grad_of(interp, "x")) == 12
    interp.execute("zero_grad()")
    assert interp.env["x"].grad is None
    interp.execute("(x * 5).backward()\nx.grad.zero_()")
    assert float(grad_of(interp, "x")) == 0


def test_backward_with_a_gradient_argument() -> None:
    interp = run("y = x * x\ny.backward([1, 0.5])", x=[1, 2])
    np.testing.assert_array_equal(grad_of(interp, "x"), [2, 2])


def test_requires_grad_and_retain_grad_methods() -> None:
    interp = run(
        "c = const([1, 2]).requires_grad_()\nr = c * 2\nr.retain_grad()\n"
        "s = sum(r * r)\ns.backward()"
    )
    np.testing.assert_array_equal(grad_of(interp, "c"), [8, 16])
    np.testing.assert_array_equal(np.asarray(interp.env["r"].grad._data), [4, 8])


def test_a_literal_is_never_changed_in_place() -> None:
    # `2` is one shared constant in the compiled loop; requires_grad_ must not mutate it.
    out = run(
        "for i in range(3):\n    t = (2).requires_grad_()\n    k = 2\nk.requires_grad"
    ).outcome
    assert bool(out.value._data)
    assert not run("2").outcome.value.requires_grad


# ------------------------------------------------------------------ ASTs built by hand


def test_execute_accepts_a_program_ast() -> None:
    program = ast.Program(
        [
            ast.Assign(ast.Name("y"), ast.BinOp("*", ast.Name("x"), ast.Num(3.0))),
            ast.ExprStmt(ast.Call(ast.Name("backward"), [ast.Name("y")], [])),
        ]
    )
    interp = Interpreter()
    interp.bind("x", 2.0)
    out = interp.execute(program)
    assert out.name == "y"
    assert float(grad_of(interp, "x")) == 3


def test_return_outside_function_and_break_outside_loop() -> None:
    with pytest.raises(ParseError, match="outside a function"):
        run("return 1")
    with pytest.raises(ParseError, match="outside a loop"):
        run("break")
    with pytest.raises(ParseError, match="outside a loop"):
        run("def f():\n    continue")


def test_literals_reach_the_engine_as_numbers_so_graph_names_match_pytorch() -> None:
    interp = run("p = x**2\nr = 1 - x\nq = 3 * x\nm = mean(x, keepdim=True)", x=[1.0, 2.0])
    names = {n: interp.env[n].grad_fn.name() for n in ("p", "r", "q", "m")}
    assert names == {
        "p": "PowBackward0",
        "r": "RsubBackward1",
        "q": "MulBackward0",
        "m": "MeanBackward1",
    }
    assert run("y = x**x", x=2.0).env["y"].grad_fn.name() == "PowBackward1"


def test_float32_literals_keep_float32() -> None:
    interp = run("y = x * 0.1 + 1\nb = (x > 0) * 1.5", dtype="float32", x=[1.0])
    assert interp.env["y"]._data.dtype == np.float32
    assert interp.env["b"]._data.dtype == np.float32


def test_the_benchmark_chain_matches_the_python_api() -> None:
    import gradcalc

    x = gradcalc.tensor(0.3, dtype=gradcalc.float64, requires_grad=True)
    y = x
    for _ in range(200):
        y = (y * 0.9 + x).sin() * 0.95
    y.backward()
    interp = run(
        "y = x\nfor i in range(200):\n    y = sin(y * 0.9 + x) * 0.95\ny.backward()", x=0.3
    )
    assert float(interp.env["y"]._data) == float(y._data)
    assert float(grad_of(interp, "x")) == float(x.grad._data)


def test_keyboard_interrupt_restores_names_and_propagates(monkeypatch) -> None:
    from gradcalc import builtins as lang

    def interrupt(x):
        raise KeyboardInterrupt

    monkeypatch.setitem(lang.FUNCTIONS, "interrupt", lang.Builtin("interrupt", "test", interrupt))
    interp = Interpreter()
    interp.execute("a = 1")
    before = dict(interp.env)
    with pytest.raises(KeyboardInterrupt):
        interp.execute("b = 2\nfor i in range(10): interrupt(i)")
    assert interp.env == before


def test_zero_grad_inside_a_function_clears_locals_and_globals() -> None:
    program = (
        "def step(w):\n    (w * w).backward()\n    g = w.grad * 1\n    zero_grad()\n"
        "    return g\ng = step(x)"
    )
    interp = run(program, x=3.0)
    assert float(interp.env["g"]._data) == 6.0
    assert interp.env["x"].grad is None


@pytest.mark.parametrize(
    ("source", "grad_fn"),
    [
        ("x.t()", "TBackward0"),
        ("x.mm(x)", "MmBackward0"),
        ("x.view(4)", "ViewBackward0"),
        ("x.add(x)", "AddBackward0"),
        ("x.sub(x)", "SubBackward0"),
        ("x.mul(x)", "MulBackward0"),
        ("x.div(x)", "DivBackward0"),
        ("x.neg()", "NegBackward0"),
        ("x.square()", "PowBackward0"),
        ("x.clone()", "CloneBackward0"),
        ("x.pow(2)", "PowBackward0"),
        ("x.pow(x)", "PowBackward1"),
    ],
)
def test_pytorch_habit_methods(source: str, grad_fn: str) -> None:
    out = run(source, x=[[1.0, 2.0], [3.0, 4.0]]).outcome
    assert out.value.grad_fn.name() == grad_fn


def test_where_as_a_method_is_refused_with_the_function_form() -> None:
    with pytest.raises(FormulaTypeError, match="where"):
        run("x.where(x > 0, 1)", x=1)


def test_empty_program_and_definitions_only_have_no_output() -> None:
    assert run("").outcome == Outcome(None, None)
    assert run("# just a comment\n").outcome == Outcome(None, None)
    assert run("def f(x): return x").outcome.value is None


def test_runtime_warnings_are_ignored_once_per_block_of_runs() -> None:
    """A batch block sets the filter for its requests; a run inside it adds none."""
    from gradcalc import _numpy, api

    assert _numpy.ignoring_warnings() is not _numpy.NOTHING
    with _numpy.ignoring_warnings():
        assert _numpy.ignoring_warnings() is _numpy.NOTHING
        assert np.isnan(value("mean(x)", x=[]))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        block = (
            b'{"formula": "mean(x)", "vars": {"x": []}}\n{"formula": "log(-a)", "vars": {"a": 1}}\n'
        )
        text, answered, failed = api.run_block(block)
        assert (answered, failed) == (2, 0) and seen == []
        assert text.count('"value": "NaN"') == 2
        np.mean(np.array([]))  # after the block, the caller's filters again
        assert seen and all(w.category is RuntimeWarning for w in seen)
