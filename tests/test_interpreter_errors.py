"""Every failure inside the interpreter is a gradcalc FormulaError a person can act on."""

from __future__ import annotations

import pytest

from gradcalc.errors import (
    FormulaError,
    FormulaTypeError,
    FormulaValueError,
    ShapeError,
    UnknownNameError,
)
from gradcalc.interpreter import Interpreter


def fail(source: str, **bindings) -> FormulaError:
    interp = Interpreter()
    for name, value in bindings.items():
        interp.bind(name, value)
    with pytest.raises(FormulaError) as info:
        interp.execute(source)
    return info.value


# ------------------------------------------------------------------ names


def test_unknown_function_suggests_the_closest() -> None:
    error = fail("sqr(4)")
    assert isinstance(error, UnknownNameError)
    assert error.kind == "NameError"
    assert "there is no function 'sqr'" in error.message
    assert error.hint.startswith("did you mean 'sqrt'")


def test_unknown_variable_says_how_to_bind_it() -> None:
    error = fail("q + 1")
    assert "bind it on the command line: q=2" in error.hint


def test_misspelt_variable_suggests_the_bound_name() -> None:
    error = fail("alpah * 2", alpha=1)
    assert "did you mean 'alpha'?" in error.hint


def test_unknown_method_suggests_the_closest() -> None:
    error = fail("x.summ()", x=1)
    assert error.kind == "NameError"
    assert error.hint.startswith("did you mean 'sum'")


def test_positions_point_at_the_node() -> None:
    error = fail("a = 1\nb = 2\nc = a + zz * b")
    assert (error.line, error.column) == (3, 9)
    assert error.source_line() == "c = a + zz * b"
    assert error.caret().endswith("        ^")
    assert error.to_json()["type"] == "NameError"


# ------------------------------------------------------------------ shapes


def test_matmul_shape_error_names_both_shapes() -> None:
    error = fail("[1, 2] @ [1, 2, 3]")
    assert isinstance(error, ShapeError)
    assert error.message == "matmul: (2,) @ (3,) — inner dimensions 2 and 3 differ"
    error = fail("matmul(ones(2, 3), ones(2, 3))")
    assert error.message == "matmul: (2, 3) @ (2, 3) — inner dimensions 3 and 2 differ"
    error = fail("x.matmul(w)", x=[[1, 2]], w=[[1, 2, 3]])
    assert "inner dimensions 2 and 1 differ" in error.message


def test_broadcast_error_names_the_operator_and_shapes() -> None:
    error = fail("[1, 2] + [1, 2, 3]")
    assert isinstance(error, ShapeError)
    assert "'+'" in error.message and "(2,)" in error.message and "(3,)" in error.message
    error = fail("maximum(ones(2), ones(3))")
    assert isinstance(error, ShapeError)
    assert error.message.startswith("maximum:")


def test_reshape_and_dot_shape_errors() -> None:
    error = fail("reshape(arange(6), 4)")
    assert isinstance(error, ShapeError)
    assert "(6,)" in error.message and "(4,)" in error.message
    error = fail("dot([1, 2], [1, 2, 3])")
    assert isinstance(error, ShapeError)
    assert "lengths 2 and 3 differ" in error.message


# ------------------------------------------------------------------ calls


def test_wrong_argument_count_quotes_the_signature() -> None:
    error = fail("exp(1, 2)")
    assert isinstance(error, FormulaTypeError)
    assert error.hint == "signature: exp(x)"


def test_bad_keyword_suggests_the_parameter() -> None:
    error = fail("sum([1, 2], axs=0)")
    assert isinstance(error, FormulaTypeError)
    assert "has no parameter 'axs'" in error.message
    assert "did you mean 'axis'?" in error.hint
    assert "sum(x, axis=None, keepdim=False)" in error.hint


def test_none_argument_is_a_type_error() -> None:
    error = fail("exp(x.grad)", x=1)
    assert isinstance(error, FormulaTypeError)


def test_operator_on_none_explains_grad_none() -> None:
    error = fail("x.grad * 2", x=1)
    assert isinstance(error, FormulaTypeError)
    assert "None" in error.message


def test_calling_the_result_of_a_call_that_is_not_a_function() -> None:
    error = fail("(x * 2)(3)", x=1)
    assert isinstance(error, FormulaTypeError)


def test_range_is_only_for_loops() -> None:
    error = fail("range(3) + 1")
    assert isinstance(error, FormulaTypeError)


def test_looping_over_a_scalar() -> None:
    error = fail("for v in 3: pass")
    assert isinstance(error, FormulaTypeError)


def test_non_integral_shape() -> None:
    error = fail("zeros(2.5)")
    assert isinstance(error, FormulaValueError)
    assert "whole number" in error.message


# ------------------------------------------------------------------ autograd misuse


def test_backward_of_a_constant_is_a_value_error_with_the_engine_message() -> None:
    error = fail("y = const(2) * 3\ny.backward()")
    assert isinstance(error, FormulaValueError)
    assert "does not require grad" in error.message


def test_second_backward_through_a_freed_graph() -> None:
    error = fail("y = x * x\ny.backward()\ny.backward()", x=2)
    assert isinstance(error, FormulaValueError)
    assert error.hint


def test_backward_of_a_vector_needs_a_gradient() -> None:
    error = fail("y = x * 2\ny.backward()", x=[1, 2])
    assert isinstance(error, FormulaValueError)
    assert "implicitly" in error.message


# ------------------------------------------------------------------ nothing else escapes


@pytest.mark.parametrize(
    "source",
    [
        "x[None]",
        "eye(-1)",
        "arange(0, 1, 0)",
        "linspace(0, 1, -2)",
        "range(1, 2, 0)",
        "softmax(x, axis=3)",
        "sum(x, axis=5)",
        "clamp(x)",
        "x[1:2:0]",
        "transpose(ones(2, 2), 0, 5)",
        "reshape(x, [[1, 2]])",
        "full(2, [1, 2])",
        "len(x)",
        "x.item() + randn(2, size=3)",
        "[1, 2] and 3",
        "where(x, 1, None_here)",
        "grad(x, 3)",
        "norm(x, p=[1, 2])",
        "x.zero_()",
        "tensor(x, requires_grad=True)(2)",
    ],
)
def test_odd_programs_raise_only_formula_errors(source: str) -> None:
    interp = Interpreter()
    interp.bind("x", 1.5)
    before = dict(interp.env)
    with pytest.raises(FormulaError):
        interp.execute(source)
    assert interp.env == before


def test_unknown_function_does_not_suggest_binding_a_variable() -> None:
    error = fail("frobnicate(2)")
    assert "bind" not in error.hint
    assert "gradcalc functions" in error.hint


def test_max_with_a_second_tensor_points_to_maximum() -> None:
    error = fail("max(a, b)", a=2, b=6)
    assert isinstance(error, ShapeError)
    assert "maximum(x, y)" in error.hint


def test_backward_gradient_of_the_wrong_shape() -> None:
    error = fail("y = x * 2\ny.backward([1, 2])", x=[1, 2, 3])
    assert isinstance(error, ShapeError)
    assert "(2,)" in error.message and "(3,)" in error.message


def test_unexpected_python_errors_keep_their_cause() -> None:
    from gradcalc import builtins as lang

    def broken(x):
        raise KeyError("boom")

    lang.FUNCTIONS["broken_for_test"] = lang.Builtin("broken_for_test", "test only", broken)
    try:
        error = fail("broken_for_test(1)")
    finally:
        del lang.FUNCTIONS["broken_for_test"]
    assert isinstance(error, FormulaValueError)
    assert "internal error" in error.message
    assert isinstance(error.__cause__, KeyError)


def test_module_prefixes_are_the_languages_built_ins_and_print_gets_its_own_hint() -> None:
    interp = Interpreter()
    interp.bind("x", 1.0)
    assert float(interp.execute("torch.exp(x) - exp(x)").value) == 0.0
    assert float(interp.execute("F.relu(-x) + gradcalc.sum(x) + torch.pi").value) > 4.14
    error = fail("torch.nothing(x)", x=1)
    assert "module 'torch' has no attribute 'nothing'" in error.message
    error = fail("np.exp(x)", x=1)
    assert "'np' is not defined" in error.message
    error = fail("print(2)")
    assert "last statement" in error.message


def test_a_list_nested_past_numpy_dimensions() -> None:
    error = fail("[" * 70 + "1" + "]" * 70)
    assert isinstance(error, ShapeError)
    assert "64 dimensions" in error.message


def test_two_hundred_levels_of_brackets_work() -> None:
    interp = Interpreter()
    interp.bind("a", 2.0)
    out = interp.execute("(" * 200 + "a" + " + 1)" * 200)
    assert float(out.value._data) == 202.0


def test_numpy_runtime_warnings_stay_quiet(recwarn):
    from gradcalc.interpreter import Interpreter

    value = Interpreter().execute("x = [1.0, 2.0]\nmean(x[0:0]) + log(0*x[0]) + 1/(0*x[0])").value
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert value is not None
