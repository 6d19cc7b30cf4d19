"""The engine's per-node loops in C (gradcalc/_native.c) against the same code in Python.

The engine suites run every test both ways (the ``backward_loops`` fixture);
these tests compare the two directly, bit for bit, on random scalar graphs,
and check what only the C side can get wrong: the public C API alone, slots
named as Python's, references (leaks, early frees), errors raised by a VJP
midway, and the hand-over to Python.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tracemalloc
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import gradcalc as torch
from gradcalc import _tensor, ops
from gradcalc.autograd import grad

needs_native = pytest.mark.skipif(
    _tensor._native is None, reason="gradcalc._native was not built (no C compiler at install)"
)


def test_the_c_loops_are_built_wherever_a_compiler_is() -> None:
    import sysconfig
    from pathlib import Path

    headers = Path(sysconfig.get_paths()["include"], "Python.h").is_file()
    compiler = shutil.which("cc") or shutil.which("gcc")
    if os.environ.get("GRADCALC_PURE_PYTHON") or not (compiler and headers):
        pytest.skip("pure Python asked for, or no C compiler and Python headers here")
    assert _tensor._native is not None


@pytest.mark.parametrize(
    ("setting", "pure"), [("1", True), ("yes", True), ("0", False), ("", False)]
)
def test_pure_python_can_be_chosen_by_environment(setting: str, pure: bool) -> None:
    import subprocess

    if not pure and _tensor._native is None:
        pytest.skip("gradcalc._native was not built")
    code = "from gradcalc import _tensor; print(_tensor._native is None)"
    env = {**os.environ, "GRADCALC_PURE_PYTHON": setting}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == str(pure), out.stderr


def test_the_extension_uses_only_cpythons_public_c_api() -> None:
    import re
    from pathlib import Path

    source = (Path(_tensor.__file__).parent / "_native.c").read_text()
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.DOTALL)  # comments may name anything
    assert not re.findall(r"\b_Py\w*", code)
    assert "PyMemberDescr" not in code and "d_member" not in code  # no slot offsets read


@needs_native
def test_the_c_slots_are_the_python_fallbacks_slots() -> None:
    import subprocess

    code = (
        "from gradcalc import _tensor as t; "
        "print(sorted(t._NodeSlots.__slots__), sorted(t._TensorSlots.__slots__))"
    )
    env = {**os.environ, "GRADCALC_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    native = _tensor._native

    def members(cls: type) -> list[str]:
        return sorted(k for k, v in vars(cls).items() if type(v).__name__ == "member_descriptor")

    assert out.stdout.strip() == f"{members(native.Node)} {members(native.TensorBase)}"
    assert issubclass(_tensor.Node, native.Node)
    assert issubclass(_tensor.Tensor, native.TensorBase)


# ---------------------------------------------------------------- same bits both ways

UNARY: list[Callable[[Any], Any]] = [
    lambda a: a.sin(),
    lambda a: a.cos(),
    lambda a: (a * 0.3).exp(),
    lambda a: a.tanh(),
    lambda a: a**2,
    lambda a: a**3,
    lambda a: -a,
    lambda a: (a * a + 1.0).sqrt(),
    lambda a: (a * a + 0.5).log(),
    lambda a: a.sigmoid(),
    lambda a: a.abs() + 0.1,
]
BINARY: list[Callable[[Any, Any], Any]] = [
    lambda a, b: a * b,
    lambda a, b: a + b,
    lambda a, b: a - b,
    lambda a, b: a / (b * b + 1.0),
    lambda a, b: torch.maximum(a, b),
    lambda a, b: 2.0 * a - b * 0.5,
]


def random_scalar_graph(seed: int, dtype: Any) -> tuple[list, list]:
    """Leaves and values of a random graph of 0-d ops that reuses values (several
    consumers per node), mixes in constants, and has a vector part reduced to 0-d."""
    rng = np.random.default_rng(seed)
    leaves = [torch.tensor(float(v), dtype=dtype, requires_grad=True) for v in rng.normal(size=3)]
    vector = torch.tensor(rng.normal(size=5), dtype=dtype, requires_grad=True)
    constant = torch.tensor(0.7, dtype=dtype)
    values = [*leaves, (vector * vector).sum(), constant]
    for _ in range(60):
        if rng.random() < 0.5:
            a = values[rng.integers(len(values))]
            values.append(UNARY[rng.integers(len(UNARY))](a))
        else:
            a, b = (values[i] for i in rng.integers(len(values), size=2))
            values.append(BINARY[rng.integers(len(BINARY))](a, b))
    return [*leaves, vector], values


def gradients_of(seed: int, dtype: Any, use_native: bool, monkeypatch: Any) -> list[np.ndarray]:
    with monkeypatch.context() as patch:
        if not use_native:
            patch.setattr(_tensor, "_native", None)
        leaves, values = random_scalar_graph(seed, dtype)
        out = values[-1] + values[-2] * values[-7]
        for leaf in leaves:  # every leaf reached, whatever the draw
            out = out + leaf.sum() * 0.01
        out.backward(retain_graph=True)
        first = [leaf.grad.numpy().copy() for leaf in leaves]
        out.backward()  # accumulates into .grad
        values = [v.detach().numpy() for v in values]
        return [out.detach().numpy(), *values, *first] + [leaf.grad.numpy() for leaf in leaves]


@needs_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("seed", range(12))
def test_random_scalar_graphs_give_the_same_bits(seed: int, dtype: Any, monkeypatch) -> None:
    native = gradients_of(seed, dtype, True, monkeypatch)
    python = gradients_of(seed, dtype, False, monkeypatch)
    for got, want in zip(native, python, strict=True):
        assert got.dtype == want.dtype
        assert got.tobytes() == want.tobytes()


def node_fields(node: Any) -> tuple:
    return (
        type(node).__name__,
        [type(p).__name__ for p, _ in node.next_functions],
        node.holds,
        [(type(v).__name__, np.asarray(v).tobytes()) for v in (node.s0, node.s1)],
        node.consts,
        None if node.ans is None else np.asarray(node.ans).tobytes(),
    )


FORWARDS: dict[str, Callable[[Any, Any], Any]] = {
    "tensor * tensor": lambda x, c: x * c,
    "tensor * number": lambda x, c: x * 2.5,
    "number * tensor": lambda x, c: 2.5 * x,
    "intermediate + leaf": lambda x, c: (x * c) + x,
    "constant - leaf": lambda x, c: c - x,
    "leaf / number": lambda x, c: x / 3,
    "exp (keeps its output)": lambda x, c: (x * c).exp(),
    "sin (keeps its input)": lambda x, c: torch.sin(x * c),
    "sigmoid": lambda x, c: (x * c).sigmoid(),
}


@needs_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("forward", FORWARDS.values(), ids=FORWARDS.keys())
def test_fast_0d_ops_record_what_python_records(forward: Any, dtype: Any, monkeypatch) -> None:
    def run() -> tuple:
        x = torch.tensor(0.75, dtype=dtype, requires_grad=True)
        c = torch.tensor(1.5, dtype=dtype)
        y = forward(x, c)
        return y.dtype, y.detach().numpy().tobytes(), type(y._data), node_fields(y.grad_fn)

    native = run()
    monkeypatch.setattr(_tensor, "_native", None)
    assert native == run()


def test_fast_ops_answer_for_the_python_functions_they_wrap() -> None:
    import inspect

    assert torch.Tensor.__mul__.__name__ == "__mul__"
    assert torch.sin.__name__ == "sin" and "SinBackward0" in torch.sin.__doc__
    assert list(inspect.signature(torch.sin).parameters) == ["input"]
    x = torch.tensor(0.5, requires_grad=True)
    assert x.sin().item() == torch.sin(x).item() == x.__mul__(1.0).sin().item()


@pytest.mark.usefixtures("backward_loops")
def test_a_second_backward_through_freed_nodes_is_an_error() -> None:
    x = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    y = (x * 3.0).sin() * x
    y.backward()
    with pytest.raises(torch.errors.FreedGraphError):
        y.backward()


# ---------------------------------------------------------------- what only C can get wrong


def chain(n: int) -> tuple[Any, Any]:
    x = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(0.9, dtype=torch.float64)
    y = x
    for _ in range(n):
        y = (y * c + x).sin() * 0.95
    return x, y


@pytest.mark.usefixtures("backward_loops")
def test_graphs_die_with_their_outputs_and_repeated_passes_do_not_grow_memory() -> None:
    _, y = chain(50)
    node = weakref.ref(y.grad_fn)
    y.backward()
    del y
    gc.collect()
    assert node() is None
    tracemalloc.start()
    try:
        for _ in range(3):  # warm up allocator caches
            chain(2_000)[1].backward()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(10):
            chain(2_000)[1].backward()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64_000, f"{grown} bytes kept after 10 passes of 8,000 nodes"


@pytest.mark.usefixtures("backward_loops")
def test_the_sentinels_and_leaves_keep_their_reference_counts() -> None:
    x = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)

    def one_pass() -> None:
        y = x
        for _ in range(100):
            y = (y * 0.9 + x).sin() * x
        y.backward()

    one_pass()
    gc.collect()
    freed, leaf = sys.getrefcount(_tensor._FREED), sys.getrefcount(x)
    for _ in range(5):
        one_pass()
    gc.collect()
    assert (sys.getrefcount(_tensor._FREED), sys.getrefcount(x)) == (freed, leaf)


class VJPFailed(Exception):
    pass


@pytest.mark.usefixtures("backward_loops")
def test_an_error_raised_by_a_vjp_midway_reaches_the_caller(monkeypatch) -> None:
    calls = []

    def failing(g: Any, a: Any, x: Any) -> Any:
        calls.append(g)
        if len(calls) == 5:
            raise VJPFailed("from the fifth sin")
        return g * np.cos(x)

    monkeypatch.setattr(ops.SIN.node, "vjps", (failing,))
    _, y = chain(10)
    with pytest.raises(VJPFailed, match="fifth sin"):
        y.backward()
    monkeypatch.undo()
    x2, y2 = chain(10)  # the engine is still usable
    y2.backward()
    assert np.isfinite(x2.grad.item())


def test_counts_beyond_64_bits_hand_the_pass_to_python(monkeypatch) -> None:
    expected_x, expected_y = chain(20)
    expected_y.backward()
    monkeypatch.setattr(_tensor, "_passes", (_tensor._NATIVE_BASE_LIMIT >> 40) - 1)
    x, y = chain(20)
    y.backward()  # the first pass with base >= 2**62: Python's loops
    assert _tensor._passes << 40 >= _tensor._NATIVE_BASE_LIMIT
    assert x.grad.item() == expected_x.grad.item()


@pytest.mark.usefixtures("backward_loops")
def test_grad_with_inputs_and_create_graph_take_the_general_path() -> None:
    x, y = chain(30)
    (first,) = grad(y, x, create_graph=True)
    (second,) = grad(first, x)
    xs, ys = chain(30)
    ys.backward()
    assert first.item() == xs.grad.item()
    assert np.isfinite(second.item())


# ---------------------------------------------------------------- the registry's quiet domains


def _edge_values(lo: float, hi: float) -> list[float]:
    """Values at and around a domain's ends, and ordinary ones, in float64."""
    points = [lo, hi, 0.0, -0.0, 1.0, -1.0, 0.5, -0.99, 88.0, 1e-300, 5e-324, 1e30, -1e30]
    points += [np.nextafter(lo, np.inf), np.nextafter(hi, -np.inf), 2.0**60, -(2.0**60)]
    points += [2.0**-60, -(2.0**-60), 3.0e38, 1e-45]
    return [float(p) for p in points if np.isfinite(p)]


QUIET_OPS = [op for op in ops.REGISTRY.values() if op.quiet is not None]


@pytest.mark.parametrize("op", QUIET_OPS, ids=[op.name for op in QUIET_OPS])
def test_ops_raise_no_floating_point_warning_inside_their_quiet_domain(op: ops.Op) -> None:
    # The C fast path trusts `quiet`: an op it runs there must not warn (the
    # warning would reach the user's frame). Underflow is silent by default.
    lo, hi = op.quiet
    values = _edge_values(lo, hi)
    for dtype in (np.float64, np.float32):
        scalars = [dtype(v) for v in values]
        with np.errstate(all="raise", under="ignore"):
            if op.arity == "1":
                for x in scalars:
                    if lo <= float(x) < hi:
                        op.forward(x)
            else:
                for x in scalars:
                    for y in [*scalars, *values]:  # a Python number as the second operand
                        a, b = abs(float(x)), abs(float(y))
                        if a <= hi and b <= hi and b >= lo:
                            op.forward(x, y)


# ---------------------------------------------------------------- leaves on the 0-d path


def watch_scalar_path(monkeypatch: Any, general: bool = False) -> list:
    """Make backward's 0-d fast path report what was left ready after each call
    (or, with ``general``, never run: the reference loop alone)."""
    left: list = []
    chosen = _tensor._BackwardPass.scalar_path

    def scalar_path(self: Any, base: int) -> Any:
        fast = chosen(self, base)
        if fast is None or general:
            return None

        def watched(ready: list, pending: dict, base: int, free: bool) -> None:
            fast(ready, pending, base, free)
            left.append([type(node).__name__ for node in ready])

        return watched

    monkeypatch.setattr(_tensor._BackwardPass, "scalar_path", scalar_path)
    return left


def formula(a: Any, b: Any) -> Any:
    """Nodes with constants (``**3``, ``3 *``), shared operands, two leaves."""
    return 3 * a**3 - b**2 + a * b + (a * b).sin() * 0.5


def leaf_gradients(dtype: Any, monkeypatch: Any, general: bool) -> tuple[list, list]:
    with monkeypatch.context() as patch:
        left = watch_scalar_path(patch, general)
        a = torch.tensor(0.3, dtype=dtype, requires_grad=True)
        b = torch.tensor(-1.7, dtype=dtype, requires_grad=True)
        y = formula(a, b)
        y.backward(retain_graph=True)
        # (``_raw``: ``.numpy()`` would turn a Python float into NumPy's for good)
        first = [(type(t.grad._raw), np.asarray(t.grad._raw).tobytes()) for t in (a, b)]
        y.backward()  # accumulates into .grad
        second = [(type(t.grad._raw), np.asarray(t.grad._raw).tobytes()) for t in (a, b)]
        return first + second, left


@pytest.mark.usefixtures("backward_loops")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_a_scalar_graph_and_its_leaves_run_in_one_call_with_the_same_bits(
    dtype: Any, monkeypatch
) -> None:
    fast, left = leaf_gradients(dtype, monkeypatch, general=False)
    assert left == [[], []]  # one call per pass, nothing left for the general loop
    reference, never = leaf_gradients(dtype, monkeypatch, general=True)
    assert never == []
    assert fast == reference


@pytest.mark.usefixtures("backward_loops")
def test_leaves_with_hooks_recorded_values_or_another_type_take_the_general_path(
    monkeypatch,
) -> None:
    left = watch_scalar_path(monkeypatch)
    a = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-1.7, dtype=torch.float64, requires_grad=True)
    seen = []
    a.register_hook(lambda g: seen.append(g.item()) or g * 2)
    formula(a, b).backward()
    assert ["AccumulateGrad"] in left and len(seen) == 1
    assert a.grad.item() == 2 * seen[0]
    b.grad.numpy()  # .grad's data becomes NumPy's float64, the gradient stays a float
    before = b.grad._raw
    left.clear()
    formula(a, b).backward()
    assert ["AccumulateGrad"] in left and type(b.grad._raw) is type(before)
    left.clear()
    c = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    with _tensor.record_values():
        y = formula(c, c)
        y.backward()
    leaf = c._accum() if callable(c._accum) else None
    assert ["AccumulateGrad"] in left
    assert leaf is not None and leaf.meta.grad_value == c.grad.item()


@pytest.mark.usefixtures("backward_loops")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("seed", range(4))
def test_random_scalar_graphs_give_the_general_paths_bits(seed: int, dtype: Any, monkeypatch):
    def run(general: bool) -> list:
        with monkeypatch.context() as patch:
            watch_scalar_path(patch, general)
            leaves, values = random_scalar_graph(seed, dtype)
            out = values[-1] * values[-3] + values[-2]
            for leaf in leaves[:3]:  # each 0-d leaf reached, its gradient a scalar
                out = out + leaf * 0.25
            out.backward(retain_graph=True)
            out.backward()
            grads = [t.grad for t in leaves]  # (the vector leaf: when the draw reaches it)
            return [g if g is None else (type(g._raw), np.asarray(g._raw).tobytes()) for g in grads]

    assert run(general=False) == run(general=True)
