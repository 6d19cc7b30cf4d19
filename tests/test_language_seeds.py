"""Every seed tutorial's computation, written in the formula language, gives the seed's numbers.

The seeds printed float32; the language computes in float64, so values are
compared with the seeds' printed precision, and exactly against float64
references computed here with NumPy where the seed's rounding would hide
an error.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradcalc.interpreter import Interpreter


def array(value) -> np.ndarray:
    return np.asarray(value._data)


def grad(interp: Interpreter, name: str) -> np.ndarray:
    return np.asarray(interp.env[name].grad._data)


# ------------------------------------------------------------------ seed 000


def test_seed_000_p_and_q_accumulate_then_clear() -> None:
    repl = Interpreter()
    out = repl.execute("a = 2\nb = 6\nP = 3*a**3 - b**2")
    assert float(array(out.value)) == -12.0 and out.name == "P"
    out = repl.execute("P.backward()\na.grad")
    assert float(array(out.value)) == 36.0
    assert float(grad(repl, "b")) == -12.0

    out = repl.execute("Q = -3*a**3 + b**2")
    assert float(array(out.value)) == 12.0
    repl.execute("Q.backward()")
    assert float(grad(repl, "a")) == 0.0  # gradients accumulate: 36 + (-36)
    assert float(grad(repl, "b")) == 0.0

    repl.execute("zero_grad()\nP = 3*a**3 - b**2\nP.backward()")
    assert (float(grad(repl, "a")), float(grad(repl, "b"))) == (36.0, -12.0)

    repl.execute("a.grad.zero_()\nb.grad.zero_()\nQ = -3*a**3 + b**2\nQ.backward()")
    assert (float(grad(repl, "a")), float(grad(repl, "b"))) == (-36.0, 12.0)


# ------------------------------------------------------------------ seed 001


def test_seed_001_vector_q_with_external_gradient() -> None:
    repl = Interpreter()
    repl.execute("a = [2.0, 3.0]\nb = [6.0, 4.0]\nQ = 3*a**3 - b**2")
    np.testing.assert_array_equal(array(repl.env["Q"]), [-12.0, 65.0])
    assert repl.env["Q"].grad_fn.name() == "SubBackward0"
    repl.execute("external_grad = tensor([1., 1.])\nQ.backward(gradient=external_grad)")
    np.testing.assert_array_equal(grad(repl, "a"), [36.0, 81.0])
    np.testing.assert_array_equal(grad(repl, "b"), [-12.0, -8.0])
    assert array(repl.execute("9*a**2 == a.grad").value).tolist() == [True, True]
    assert array(repl.execute("-2*b == b.grad").value).tolist() == [True, True]
    np.testing.assert_array_equal(array(repl.execute("a.grad.zero_()").value), [0.0, 0.0])


def test_seed_001_graph_of_y_and_z() -> None:
    repl = Interpreter(seed=0)
    repl.execute("shape = (3, 1)\nx = randn(shape, requires_grad=True)\ny = x + 1\nz = y**2 + 3")
    x = array(repl.env["x"])
    assert x.shape == (3, 1)
    np.testing.assert_allclose(array(repl.env["z"]), (x + 1) ** 2 + 3)
    assert bool(array(repl.execute("y.requires_grad").value))
    assert repl.env["y"].grad_fn.name() == "AddBackward0"
    assert repl.env["z"].grad_fn.name() == "AddBackward0"
    assert repl.env["z"].grad_fn.next_functions[0][0].name() == "PowBackward0"


def test_seed_001_requires_grad_propagation_and_detach() -> None:
    repl = Interpreter(seed=1)
    repl.execute(
        "x = rand(5, 5, requires_grad=False)\n"
        "y = rand(5, 5, requires_grad=False)\n"
        "z = rand((5, 5), requires_grad=True)\n"
        "a = x + y\nb = x + z\nd = x + z\nd_detached = d.detach()"
    )
    assert not repl.env["a"].requires_grad
    assert repl.env["b"].requires_grad
    assert not repl.env["d_detached"].requires_grad


def test_seed_001_mlp_loss_gradient_and_update() -> None:
    repl = Interpreter()
    repl.execute(
        "sample_size = 2\nnumber_features = 3\n"
        "x = arange(sample_size*number_features).reshape(sample_size, number_features) * 1.0\n"
        "target = arange(2, sample_size+2).reshape(sample_size, 1) * 1.0\n"
        "w = ones((3, 1))"
    )
    np.testing.assert_array_equal(array(repl.env["x"]), [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(array(repl.env["target"]), [[2], [3]])
    assert repl.env["w"].grad is None and repl.env["w"].requires_grad
    out = repl.execute("output = x.matmul(w)")
    np.testing.assert_array_equal(array(out.value), [[3], [12]])
    assert out.value.grad_fn.name() == "MmBackward0"
    out = repl.execute("loss = ((output - target)**2).mean()")
    assert float(array(out.value)) == 41.0
    assert out.value.grad_fn.name() == "MeanBackward0"
    repl.execute("loss.backward()")
    np.testing.assert_array_equal(grad(repl, "w"), [[27], [37], [47]])
    out = repl.execute(
        "def update_parameter(w, learning_rate=0.1):\n"
        "    return detach(w - learning_rate * w.grad).requires_grad_()\n"
        "w = update_parameter(w, 0.01)"
    )
    np.testing.assert_allclose(array(out.value), [[0.73], [0.63], [0.53]])
    assert repl.env["w"].requires_grad and repl.env["w"].is_leaf


def test_seed_001_a_training_loop_in_the_language() -> None:
    repl = Interpreter()
    out = repl.execute(
        "x = const(arange(6).reshape(2, 3))\ntarget = const([[2.], [3.]])\nw = ones(3, 1)\n"
        "for step in range(200):\n"
        "    loss = mean((x @ w - target)**2)\n"
        "    w = detach(w - 0.02 * grad(loss, w)).requires_grad_()\n"
        "loss"
    )
    assert float(array(out.value)) < 1e-3


# ------------------------------------------------------------------ seed 002


def test_seed_002_simple_and_one_more_example() -> None:
    repl = Interpreter()
    repl.bind("x", 5)
    repl.execute("y = x*x\ny.backward()")
    assert float(grad(repl, "x")) == 10.0
    repl = Interpreter()
    repl.bind("x", 5)
    repl.bind("z", 3)
    repl.execute("y = x*x + z + log(z)\ny.backward()")
    assert float(grad(repl, "x")) == 10.0
    np.testing.assert_allclose(float(grad(repl, "z")), 1.3333, atol=1e-4)


def test_seed_002_error_cases_of_the_tutorial() -> None:
    from gradcalc.errors import FormulaValueError

    repl = Interpreter()
    with pytest.raises(FormulaValueError, match="does not require grad"):
        repl.execute("x = const(5)\ny = x*x\ny.backward()")


def test_seed_002_involved_example() -> None:
    repl = Interpreter()
    repl.bind("x", 5)
    repl.bind("z", 3)
    repl.execute(
        "r1 = x*x + z + log(z)\nr2 = r1 + sqrt(x)\nr3 = 100*r1 + log(r2)\ny = r1 + r2 + r3\n"
        "y.backward()"
    )
    x_grad, z_grad = float(grad(repl, "x")), float(grad(repl, "z"))
    # the seed's float32 printout
    np.testing.assert_allclose(x_grad, 1020.5499267578125, rtol=1e-6)
    np.testing.assert_allclose(z_grad, 136.0425567626953, rtol=1e-6)
    # float64 by hand: y = 102*r1 + sqrt(x) + log(r2)
    r1 = 25 + 3 + np.log(3.0)
    r2 = r1 + np.sqrt(5.0)
    assert x_grad == pytest.approx(
        102 * 10 + 0.5 / np.sqrt(5) + (10 + 0.5 / np.sqrt(5)) / r2, rel=1e-12
    )
    assert z_grad == pytest.approx((102 + 1 / r2) * (1 + 1 / 3), rel=1e-12)
    for name in ("r1", "r2", "r3"):
        assert repl.env[name].grad is None  # intermediates keep no .grad, as in PyTorch
    # ...but their gradients can be asked for (on a graph backward has not freed)
    dy_dr1 = float(
        array(
            repl.execute(
                "r1 = x*x + z + log(z)\nr2 = r1 + sqrt(x)\nr3 = 100*r1 + log(r2)\n"
                "y = r1 + r2 + r3\ngrad(y, r1)"
            ).value
        )
    )
    assert dy_dr1 == pytest.approx(102 + 1 / r2, rel=1e-12)


def test_seed_002_exercise_r2_backward() -> None:
    repl = Interpreter()
    repl.bind("x", 5)
    repl.bind("z", 3)
    repl.execute(
        "r1 = x*x + z + log(z)\nr2 = r1 + sqrt(x)\nr3 = 100*r1 + log(r2)\ny = r1 + r2 + r3\n"
        "r2.backward()"
    )
    assert float(grad(repl, "x")) == pytest.approx(10 + 0.5 / np.sqrt(5), rel=1e-12)
    assert float(grad(repl, "z")) == pytest.approx(1 + 1 / 3, rel=1e-12)


# ------------------------------------------------------------------ seed 003


def test_seed_003_dot_sum_and_detach() -> None:
    repl = Interpreter()
    repl.execute("x = arange(4.0)\nx.requires_grad_(True)")
    assert repl.env["x"].grad is None
    out = repl.execute("y = 2 * dot(x, x)\ny")
    assert float(array(out.value)) == 28.0
    assert out.value.grad_fn.name() == "MulBackward0"
    repl.execute("y.backward()")
    np.testing.assert_array_equal(grad(repl, "x"), [0, 4, 8, 12])
    assert array(repl.execute("x.grad == 4 * x").value).all()

    repl.execute("x.grad.zero_()\ny = x.sum()\ny.backward()")
    np.testing.assert_array_equal(grad(repl, "x"), [1, 1, 1, 1])
    out = repl.execute("x.sum()")
    assert float(array(out.value)) == 6.0 and out.value.grad_fn.name() == "SumBackward0"

    repl.execute("x.grad.zero_()\ny = x * x\ny.sum().backward()")
    np.testing.assert_array_equal(grad(repl, "x"), [0, 2, 4, 6])

    out = repl.execute(
        "x.grad.zero_()\ny = x * x\nu = y.detach()\nz = u * x\nz.sum().backward()\nx.grad == u"
    )
    assert array(out.value).all()
    out = repl.execute("x.grad.zero_()\ny.sum().backward()\nx.grad == 2 * x")
    assert array(out.value).all()


SEED_003_F = """
def f(a):
    b = a * 2
    while b.norm() < 10:
        b = b * 2
    if b.sum() > 0:
        c = b
    else:
        c = 100 * b
    return c
"""


@pytest.mark.parametrize(
    ("a", "factor"),
    [(0.19865, 64), (-0.19865, 6400), (3.0, 4), (20.0, 2), (-0.001, 100 * 2**14)],
)
def test_seed_003_control_flow_function(a: float, factor: float) -> None:
    repl = Interpreter()
    repl.bind("a", a)
    out = repl.execute(SEED_003_F + "d = f(a)\nd.backward()\nd")
    assert float(array(out.value)) == pytest.approx(a * factor, rel=1e-12)
    assert float(grad(repl, "a")) == pytest.approx(factor, rel=1e-12)
    assert bool(array(repl.execute("a.grad == d / a").value))


def test_seed_003_with_the_seed_printout() -> None:
    repl = Interpreter()
    repl.bind("a", 0.19865)
    out = repl.execute(SEED_003_F + "d = f(a)\nd.backward()\nd")
    assert float(array(out.value)) == pytest.approx(12.7136, abs=1e-4)


def test_seed_003_with_a_random_scalar() -> None:
    repl = Interpreter(seed=3)
    out = repl.execute(
        SEED_003_F + "a = randn(requires_grad=True)\nd = f(a)\nd.backward()\na.grad == d / a"
    )
    assert bool(array(out.value))


# ------------------------------------------------------------------ seed 004

SEED_004_V = [[-1.0151, 0.9188, -0.2068], [-1.3705, -1.3533, 0.0913], [-0.2909, -0.4593, -1.0358]]


def test_seed_004_mean_of_squares_plus_three() -> None:
    repl = Interpreter()
    repl.bind("v", SEED_004_V)
    out = repl.execute("y = v**2\nz = y + 3\nf = z.mean()\nf.backward()\nf")
    assert float(array(out.value)) == pytest.approx(3.7782, abs=1e-4)
    expected = [[-0.2256, 0.2042, -0.0460], [-0.3046, -0.3007, 0.0203], [-0.0646, -0.1021, -0.2302]]
    np.testing.assert_allclose(grad(repl, "v"), expected, atol=1e-4)
    np.testing.assert_allclose(grad(repl, "v"), 2 * np.array(SEED_004_V) / 9, rtol=1e-12)
    assert repl.env["y"].grad_fn.name() == "PowBackward0"


def test_seed_004_backward_with_ones() -> None:
    repl = Interpreter()
    repl.bind("x", [[-0.6308, 0.0987], [0.2058, -0.3468]])
    repl.execute("y = x**2\ny.backward(ones(2, 2))")
    np.testing.assert_allclose(grad(repl, "x"), [[-1.2616, 0.1973], [0.4115, -0.6936]], atol=1e-4)


def test_seed_004_dynamic_graph_doubling_loop() -> None:
    printed = np.array([473.9218, -370.5789, 1680.9589])
    repl = Interpreter()
    repl.bind("x", printed / 1024)
    out = repl.execute(
        "y = x * 2\nwhile y.data.norm() < 1000:\n    y = y * 2\n"
        "y.backward(tensor([1, 0.1, 0.01]))\ny"
    )
    np.testing.assert_allclose(array(out.value), printed, rtol=1e-12)
    np.testing.assert_allclose(grad(repl, "x"), [1024, 102.4, 10.24], rtol=1e-12)


def test_seed_004_dynamic_graph_with_random_x() -> None:
    repl = Interpreter(seed=4)
    out = repl.execute(
        "x = randn(3)\ny = x * 2\nn = 1\nwhile y.norm() < 1000:\n    y = y * 2\n    n += 1\n"
        "y.backward([1, 0.1, 0.01])\nn"
    )
    factor = 2.0 ** float(array(out.value))
    np.testing.assert_allclose(grad(repl, "x"), factor * np.array([1, 0.1, 0.01]), rtol=1e-12)


def test_seed_002_in_float32_reproduces_the_printout_exactly() -> None:
    repl = Interpreter(dtype="float32")
    repl.bind("x", 5)
    repl.bind("z", 3)
    repl.execute(
        "r1 = x*x + z + log(z)\nr2 = r1 + sqrt(x)\nr3 = 100*r1 + log(r2)\ny = r1 + r2 + r3\n"
        "y.backward()"
    )
    assert float(grad(repl, "x")) == 1020.5499267578125
    assert float(grad(repl, "z")) == 136.0425567626953
