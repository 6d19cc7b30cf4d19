"""One declaration per function reaches every surface (``gradcalc.ops.API``).

``gradcalc.<name>`` (and ``gradcalc.nn.functional.<name>``), ``Tensor.<name>``,
the formula built-in and its method sugar, and ``gradcalc functions`` are all
derived from the registry; these tests walk it, and the Python API itself, so
a function declared anywhere else would show.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import gradcalc
from gradcalc import builtins as lang
from gradcalc import ops
from gradcalc.api import evaluate
from gradcalc.cli.app import app

Tensor = gradcalc.Tensor
F = gradcalc.nn.functional


def _listed() -> set[str]:
    """The names ``gradcalc functions --json`` lists."""
    result = CliRunner().invoke(app, ["functions", "--json"])
    assert result.exit_code == 0, result.output
    return {row["name"] for row in json.loads(result.stdout)}


def _names(entry: ops.ApiFunction) -> tuple[str, ...]:
    return (entry.name, *entry.aliases)


# ---------------------------------------------------------------- erf, one entry


def test_erf_is_on_every_surface() -> None:
    values = [-1.5, -0.0, 0.25, 2.0, 4.5]
    x = gradcalc.tensor(values, dtype=gradcalc.float64, requires_grad=True)
    y = gradcalc.erf(x)
    assert y.grad_fn.name() == "ErfBackward0"
    assert ops.REGISTRY["erf"].grad_fn == "ErfBackward0"
    np.testing.assert_allclose(y.detach().numpy(), [math.erf(v) for v in values], rtol=5e-16)
    np.testing.assert_array_equal(x.erf().detach().numpy(), y.detach().numpy())  # Tensor.erf
    y.sum().backward()
    slope = [2 / math.sqrt(math.pi) * math.exp(-v * v) for v in values]
    np.testing.assert_allclose(x.grad.numpy(), slope, rtol=1e-15)
    # integer tensors compute in the default float, as PyTorch's erf does
    assert gradcalc.erf(gradcalc.tensor([1, 2])).dtype == gradcalc.float32

    # formula built-in and method sugar: the same value and gradient
    for formula in ("erf(x)", "x.erf()"):
        result = evaluate(formula, bindings={"x": values})
        np.testing.assert_array_equal(result.value, y.detach().numpy())
        np.testing.assert_array_equal(result.gradients["x"], x.grad.numpy())
    assert lang.FUNCTIONS["erf"].signature == "erf(x)"
    assert "erf" in lang.METHODS and "erf" in _listed()


def test_one_defop_entry_is_enough_for_a_new_elementwise_function() -> None:
    """As erf was added: declare an op with doc= before the registry completes, and it
    is gradcalc.<name>, Tensor.<name>, a built-in, listed, and gradient-checked."""
    code = """
import numpy as np
from gradcalc import ops
ops.defop(
    "cube", "CubeBackward0", lambda x: x * x * x, (lambda g, a, x: g * 3 * x * x,),
    scalar=lambda x: x * x * x, sample=ops.Sample(ops.UNARY), doc="x ** 3, elementwise",
)
import gradcalc
from gradcalc import builtins as lang
from gradcalc.api import evaluate
x = gradcalc.tensor([2.0], requires_grad=True)
y = gradcalc.cube(x) + x.cube()
y.backward()
assert y.grad_fn.next_functions[0][0].name() == "CubeBackward0"
assert x.grad.tolist() == [24.0], x.grad
assert lang.FUNCTIONS["cube"].signature == "cube(x)" and "cube" in lang.METHODS
result = evaluate("cube(x) + x.cube()", bindings={"x": 2})
assert float(result.value) == 16.0 and float(result.gradients["x"]) == 24.0
assert "cube" in gradcalc.__all__
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_erf_is_gradient_checked_by_the_registry_walk() -> None:
    from test_engine_gradcheck import test_vjp_matches_finite_differences

    cases = ops.REGISTRY["erf"].sample.cases()
    assert cases
    for shapes, consts in cases:  # first and second order, as the parametrised test does
        test_vjp_matches_finite_differences("erf", shapes, consts)


# ---------------------------------------------------------------- every surface, derived


def test_every_declared_surface_exists() -> None:
    exported = set(gradcalc.__all__)
    dtypes = {*gradcalc._ALIASES, "bool"}  # gradcalc.float is a dtype, Tensor.float a method
    for entry in ops.API.values():
        for name in _names(entry):
            in_namespace = entry.function and entry.namespace == "gradcalc"
            assert (name in exported) == in_namespace or name in dtypes, name
            if in_namespace:
                assert getattr(gradcalc, name) is entry.impl, name
            if entry.namespace == "nn.functional":
                assert getattr(F, name) is entry.impl, name
            if entry.method is not False:
                expected = entry.impl if entry.method is True else entry.method
                assert getattr(Tensor, name) is expected, name
            assert (name in lang.FUNCTIONS) == entry.builtin, name
            if entry.builtin:
                assert lang.FUNCTIONS[name].doc.endswith(entry.doc), name


def test_no_public_function_escapes_the_registry() -> None:
    """What ``gradcalc`` exports is the registry's functions, or what ``_ENGINE_NAMES``
    lists outside it (constructors, classes, grad mode), or a submodule or dtype."""
    registry = {name for entry in ops.API.values() for name in _names(entry)}
    outside = {name for names in gradcalc._ENGINE_NAMES.values() for name in names}
    rest = set(gradcalc.__all__) - registry - outside - set(gradcalc._ALIASES)
    assert rest == {"GradError", "__version__", "autograd", "nn"}
    assert not registry & outside


def _differentiable_python_functions() -> list[tuple[str, ops.ApiFunction]]:
    """(name, entry) for every function of gradcalc and gradcalc.nn.functional that
    differentiates: walked from the Python API, looked up in the registry."""
    by_impl = {id(entry.impl): entry for entry in ops.API.values()}
    found = []
    for module in (gradcalc, F):
        public = getattr(module, "__all__", None) or [n for n in dir(module) if n[0] != "_"]
        for name in public:
            entry = by_impl.get(id(getattr(module, name)))
            if entry is not None and entry.differentiable:
                found.append((name, entry))
    return found


def test_every_differentiable_python_function_is_a_formula_builtin() -> None:
    functions = _differentiable_python_functions()
    assert len(functions) > 80
    listed = _listed()
    missing = [name for name, _ in functions if name not in lang.FUNCTIONS or name not in listed]
    assert missing == []
    for name, entry in functions:
        if entry.method is True or name in ("mse_loss", "l1_loss", "linear", "rsub"):
            assert name in lang.METHODS, name  # x.name(...) as in PyTorch


def test_differentiable_methods_are_formula_methods() -> None:
    for entry in ops.API.values():
        if entry.differentiable and entry.method is True and entry.builtin:
            for name in _names(entry):
                assert name in lang.METHODS, name


def test_signatures_stay_lazy_until_shown() -> None:
    """Start-up builds no signature: each is read from the engine when first shown."""
    code = (
        "from gradcalc import builtins as lang\n"
        "built = [n for n, b in lang.FUNCTIONS.items() if b._visible is not None]\n"
        "assert not built, built\n"
        "assert lang.FUNCTIONS['var'].signature.startswith('var(x, axis=None')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


# ---------------------------------------------------------------- the language agrees

X = [[0.5, -1.25, 2.0], [1.5, 0.75, -0.5]]

AGREE = [
    ("var(x, 1)", lambda x: x.var(1)),
    ("std(x)", lambda x: x.std()),
    ("var(x, axis=0, unbiased=False)", lambda x: x.var(0, unbiased=False)),
    ("x.std(dim=1, keepdim=True)", lambda x: x.std(1, keepdim=True)),
    ("log_softmax(x)", lambda x: F.log_softmax(x, -1)),
    ("log_softmax(x, 0)", lambda x: x.log_softmax(0)),
    ("cat(x, x * 2, axis=1)", lambda x: gradcalc.cat([x, x * 2], 1)),
    ("cat([x, x])", lambda x: gradcalc.cat([x, x])),
    ("concatenate(x[0], x[1])", lambda x: gradcalc.cat([x[0], x[1]])),
    ("stack([x, x], axis=1)", lambda x: gradcalc.stack([x, x], 1)),
    ("amax(x, 1)", lambda x: x.amax(1)),
    ("amin(x)", lambda x: x.amin()),
    ("unsqueeze(x, 0)", lambda x: x.unsqueeze(0)),
    ("squeeze(unsqueeze(x, 1))", lambda x: x.unsqueeze(1).squeeze()),
    ("permute(x, 1, 0)", lambda x: x.permute(1, 0)),
    ("flatten(x)", lambda x: x.flatten()),
    ("ravel(x)", lambda x: gradcalc.ravel(x)),
    ("index_select(x, 1, [2, 0, 2])", lambda x: x.index_select(1, gradcalc.tensor([2, 0, 2]))),
    ("narrow(x, 1, 1, 2)", lambda x: x.narrow(1, 1, 2)),
    ("select(x, 0, 1)", lambda x: x.select(0, 1)),
    ("expand(x[0:1], 4, 3)", lambda x: x[0:1].expand(4, 3)),
    ("x[0].expand_as(x)", lambda x: x[0].expand_as(x)),
    ("broadcast_to(x[0], [2, 3])", lambda x: gradcalc.broadcast_to(x[0], (2, 3))),
    ("masked_fill(x, x > 0, 0)", lambda x: x.masked_fill(x > 0, 0.0)),
    ("mse_loss(x, x * 0.5)", lambda x: F.mse_loss(x, x * 0.5)),
    ("l1_loss(x, 1)", lambda x: F.l1_loss(x, gradcalc.tensor(1.0, dtype=gradcalc.float64))),
    ("linear(x, x)", lambda x: F.linear(x, x)),
    ("outer(x[0], x[1])", lambda x: gradcalc.outer(x[0], x[1])),
    ("ger(x[0], x[1])", lambda x: gradcalc.ger(x[0], x[1])),
    ("inner(x[0], x[1])", lambda x: gradcalc.inner(x[0], x[1])),
    ("mv(x, x[0])", lambda x: gradcalc.mv(x, x[0])),
    ("bmm(unsqueeze(x, 0), unsqueeze(t(x), 0))", lambda x: gradcalc.bmm(x[None], x.t()[None])),
    ("rsqrt(abs(x) + 1)", lambda x: gradcalc.rsqrt(x.abs() + 1)),
    ("log2(absolute(x)) + log10(abs(x))", lambda x: x.abs().log2() + x.abs().log10()),
    ("exp2(x)", lambda x: gradcalc.exp2(x)),
    ("reciprocal(x)", lambda x: x.reciprocal()),
    ("remainder(x, 0.7)", lambda x: x.remainder(0.7)),
    (
        "round(x * 3, 1) + trunc(x) + sign(x) + floor(x) + ceil(x)",
        lambda x: (x * 3).round(1) + gradcalc.trunc(x) + x.sign() + x.floor() + x.ceil(),
    ),
    ("float_power(abs(x), 1.5)", lambda x: gradcalc.float_power(x.abs(), 1.5)),
    ("rsub(x, 2)", lambda x: gradcalc.rsub(x, 2)),
    ("clip(x, -0.5, 0.5)", lambda x: x.clip(-0.5, 0.5)),
    ("true_divide(x, 2) + negative(x)", lambda x: x.true_divide(2) - x),
    ("swapaxes(x, 0, 1)", lambda x: x.swapaxes(0, 1)),
    ("view_as(x, t(x)) + reshape_as(x, t(x))", lambda x: x.view_as(x.t()) * 2),
    ("type_as(x, x)", lambda x: x.type_as(x)),
    ("add(x, x, alpha=2)", lambda x: x.add(x, alpha=2)),
]


@pytest.mark.parametrize(("formula", "python"), AGREE, ids=[f for f, _ in AGREE])
def test_builtin_agrees_with_the_python_function(formula: str, python) -> None:
    x = gradcalc.tensor(X, dtype=gradcalc.float64, requires_grad=True)
    y = python(x)
    y.sum().backward()
    result = evaluate(formula, bindings={"x": X})
    np.testing.assert_allclose(result.value, y.detach().numpy(), rtol=1e-15, atol=1e-15)
    gradient = result.gradients["x"]
    expected = x.grad.numpy() if x.grad is not None else np.zeros_like(gradient)
    np.testing.assert_allclose(gradient, expected, rtol=1e-15, atol=1e-15)


def test_language_arguments_are_converted_and_explained() -> None:
    # whole-number floats become the engine's ints; a fraction is an error with the name
    with pytest.raises(Exception, match=r"unsqueeze\(\): axis must be a whole number"):
        evaluate("unsqueeze(x, 0.5)", bindings={"x": X})
    with pytest.raises(Exception, match=r"var\(\): has no parameter 'dtype'"):
        evaluate("var(x, dtype=1)", bindings={"x": X})
    with pytest.raises(Exception, match="cannot be broadcast"):
        evaluate("maximum(x, [1, 2])", bindings={"x": X})
