# ruff: noqa: E501 - seed code and outputs are quoted verbatim
"""The five PyTorch autograd tutorials of ../shared/seeds, run with ``import gradcalc as torch``.

Each cell's code is the seed's code, run in one namespace per seed as a
notebook would (a trailing expression is displayed with ``repr``). Where the
seed's output is deterministic, what we print must equal it line for line,
and that text must appear verbatim in the seed file. Cells drawing random
numbers check the relationships the tutorial prints instead.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

import gradcalc

SEEDS = Path(__file__).resolve().parent / "seeds"
"""The five tutorials the project was created from, with their printed outputs (a copy)."""


def seed_text(prefix: str) -> str:
    (path,) = SEEDS.glob(f"{prefix}_*.txt")
    return path.read_text()


def as_gradcalc(code: str) -> str:
    """The cell with its torch imports pointing at gradcalc (``import gradcalc as torch``)."""
    code = re.sub(r"^import torch$", "import gradcalc as torch", code, flags=re.M)
    return re.sub(
        r"^from torch\.autograd import", "from gradcalc.autograd import", code, flags=re.M
    )


def run_cell(code: str, namespace: dict) -> str:
    """Run a notebook cell; return what it printed (and the display of a last expression)."""
    tree = ast.parse(as_gradcalc(code))
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    body = tree.body[:-1] if last is not None else tree.body
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(ast.Module(body, []), "<cell>", "exec"), namespace)  # the seed's own code
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)
            if value is not None:
                print(repr(value))
    return out.getvalue().rstrip("\n")


def check_cells(prefix: str, cells: list[tuple[str, str | None]]) -> dict:
    text = seed_text(prefix)
    namespace: dict = {}
    for code, expected in cells:
        assert code.strip().splitlines()[0] in text, f"not the seed's code: {code!r}"
        printed = run_cell(code, namespace)
        if expected is not None:
            assert expected in text, f"not the seed's output: {expected!r}"
            assert printed == expected, f"cell {code!r}"
    return namespace


# ---------------------------------------------------------------- seed 000


def test_seed_000_gradients_accumulate_until_cleared() -> None:
    clear = (
        "if a.grad is not None:\n    a.grad.zero_()\n\nif b.grad is not None:\n    b.grad.zero_()"
    )
    check_cells(
        "000",
        [
            ("import torch", None),
            (
                "a = torch.tensor(2., requires_grad=True)\nb = torch.tensor(6., requires_grad=True)",
                "",
            ),
            ("P = 3*a**3 - b**2\nprint('P: {}'.format(P))", "P: -12.0"),
            ("P.backward()", ""),
            (
                "print('gradient w.r.t. a: {}'.format(a.grad))\n"
                "print('gradient w.r.t. b: {}'.format(b.grad))",
                "gradient w.r.t. a: 36.0\ngradient w.r.t. b: -12.0",
            ),
            ("Q = -3*a**3 + b**2\nprint('Q: {}'.format(Q))", "Q: 12.0"),
            ("Q.backward()", ""),
            (
                "print('gradient w.r.t. a: {}'.format(a.grad))\n"
                "print('gradient w.r.t. b: {}'.format(b.grad))",
                "gradient w.r.t. a: 0.0\ngradient w.r.t. b: 0.0",
            ),
            (clear, ""),
            (
                "# forward pass for P\nP = 3*a**3 - b**2\nprint('P: {}'.format(P))\n\n"
                "# backward pass for P\nP.backward()\n"
                "print('gradient w.r.t. a: {}'.format(a.grad))\n"
                "print('gradient w.r.t. b: {}'.format(b.grad))",
                "P: -12.0\ngradient w.r.t. a: 36.0\ngradient w.r.t. b: -12.0",
            ),
            (clear, ""),
            (
                "# forward pass for Q\nQ = -3*a**3 + b**2\nprint('Q: {}'.format(Q))\n\n"
                "# backward pass for Q\nQ.backward()\n"
                "print('gradient w.r.t. a: {}'.format(a.grad))\n"
                "print('gradient w.r.t. b: {}'.format(b.grad))",
                "Q: 12.0\ngradient w.r.t. a: -36.0\ngradient w.r.t. b: 12.0",
            ),
        ],
    )


# ---------------------------------------------------------------- seed 001


def test_seed_001_differentiation_in_autograd() -> None:
    ns = check_cells(
        "001",
        [
            ("import torch", None),
            (
                "a = torch.tensor([2.0, 3.0], requires_grad=True)\nprint(a)",
                "tensor([2., 3.], requires_grad=True)",
            ),
            (
                "b = torch.tensor([6.0, 4.0], requires_grad=True)\nprint(b)",
                "tensor([6., 4.], requires_grad=True)",
            ),
            ("Q = 3*a**3 - b**2\nprint(Q)", "tensor([-12.,  65.], grad_fn=<SubBackward0>)"),
            ("external_grad = torch.tensor([1., 1.])\nQ.backward(gradient=external_grad)", ""),
            (
                "#Gradients are now deposited in a.grad and b.grad\n"
                "# check if collected gradients are correct\nprint(a.grad)\nprint(b.grad)\n\n"
                "print(9*a**2 == a.grad)\nprint(-2*b == b.grad)",
                "tensor([36., 81.])\ntensor([-12.,  -8.])\ntensor([True, True])\ntensor([True, True])",
            ),
        ],
    )
    torch = ns["torch"]
    # Random cells: same structure, different numbers.
    printed = run_cell("shape = (3,1)\nx = torch.randn(shape, requires_grad=True)\nprint(x)", ns)
    assert re.fullmatch(
        r"tensor\(\[\[.*\],\n        \[.*\],\n        \[.*\]\], requires_grad=True\)", printed
    )
    printed = run_cell("y = x+1\nprint(y)\nprint(y.requires_grad)\nprint(y.grad_fn)", ns)
    assert printed.endswith("grad_fn=<AddBackward0>)\nTrue\n" + repr(ns["y"].grad_fn))
    assert re.search(r"<AddBackward0 object at 0x[0-9a-f]+>$", printed)
    printed = run_cell(
        "z = y**2 + 3\nprint(z)\nprint(z.requires_grad)\nprint(z.grad_fn)\n"
        "print(z.grad_fn.next_functions)\nprint(z.grad_fn.next_functions[0][0].next_functions)",
        ns,
    )
    lines = printed.splitlines()
    assert re.fullmatch(r"\(\(<PowBackward0 object at 0x[0-9a-f]+>, 0\), \(None, 0\)\)", lines[-2])
    assert lines[-1] == f"(({ns['y'].grad_fn!r}, 0),)"
    assert np.allclose(ns["z"].detach().numpy(), ns["y"].detach().numpy() ** 2 + 3)

    check_cells(
        "001",
        [
            ("import torch", None),
            (
                "x = torch.rand(5, 5)\ny = torch.rand(5, 5)\n"
                "z = torch.rand((5, 5), requires_grad=True)\n\na = x + y\n"
                'print(f"Does `a` require gradients? : {a.requires_grad}")\nb = x + z\n'
                'print(f"Does `b` require gradients?: {b.requires_grad}")',
                "Does `a` require gradients? : False\nDoes `b` require gradients?: True",
            ),
        ],
    )
    ns2: dict = {"torch": torch}
    for code, expected in [
        (
            "x = torch.rand(5, 5)\ny = torch.rand(5, 5)\nz = torch.rand((5, 5), requires_grad=True)",
            "",
        ),
        ("with torch.no_grad():\n    c = x + z\nprint(c.requires_grad)", "False"),
        ("d = x + z\nd_detached = d.detach()\nprint(d_detached.requires_grad)", "False"),
        (
            "sample_size = 2\nnumber_features = 3\n\n"
            "x = torch.arange(sample_size*number_features).reshape(sample_size, number_features)"
            " * 1.0\nprint(x)\n\n"
            "target = torch.arange(2, sample_size+2).reshape(sample_size, 1) * 1.0\nprint(target)",
            "tensor([[0., 1., 2.],\n        [3., 4., 5.]])\ntensor([[2.],\n        [3.]])",
        ),
        (
            "w = torch.ones((3,1), requires_grad=True)\nprint(w)\nprint(w.grad)",
            "tensor([[1.],\n        [1.],\n        [1.]], requires_grad=True)\nNone",
        ),
        (
            "output = x.matmul(w)\nprint(output)",
            "tensor([[ 3.],\n        [12.]], grad_fn=<MmBackward0>)",
        ),
        (
            "loss = ((output - target)**2).mean()\nprint(loss)",
            "tensor(41., grad_fn=<MeanBackward0>)",
        ),
        ("loss.backward()", ""),
        ("print(w.grad)", "tensor([[27.],\n        [37.],\n        [47.]])"),
        (
            "def update_parameter(w, learning_rate=0.1):\n    with torch.no_grad():\n"
            "        w.add_(w.grad, alpha=-1*learning_rate)",
            "",
        ),
        ("update_parameter(w, 0.01)", ""),
        (
            "print(w)",
            "tensor([[0.7300],\n        [0.6300],\n        [0.5300]], requires_grad=True)",
        ),
        (
            "a = torch.tensor([2.0, 3.0], requires_grad=True)\n"
            "b = torch.tensor([6.0, 4.0], requires_grad=True)\nQ = 3*a**3 - b**2\nprint(Q)",
            "tensor([-12.,  65.], grad_fn=<SubBackward0>)",
        ),
        (
            "external_grad = torch.tensor([1., 1.])\n"
            "Q.backward(gradient=external_grad)\nprint(a.grad)",
            "tensor([36., 81.])",
        ),
        ("a.grad.zero_()", "tensor([0., 0.])"),
    ]:
        assert code.splitlines()[0] in seed_text("001")
        printed = run_cell(code, ns2)
        assert expected in seed_text("001") and printed == expected, code
    assert run_cell("print(output.grad_fn)", ns2).startswith("<MmBackward0 object at 0x")


# ---------------------------------------------------------------- seed 002


def test_seed_002_simple_and_involved_examples() -> None:
    ns = check_cells(
        "002",
        [
            ("import torch", None),
            (
                "x=torch.tensor(5, requires_grad=True, dtype=torch.float32) "
                "# creates a tensor (think as multi-dimensional array)",
                "",
            ),
            ("x", "tensor(5., requires_grad=True)"),
            ("x.grad  # x.grad=None initally", ""),
            ("y=x*x", ""),
            ("y", "tensor(25., grad_fn=<MulBackward0>)"),
            ("y.grad", ""),
            ("y.backward() # computes partial derivatives ∂y/∂x and stores it in x.grad", ""),
            ("x.grad # ∂y/∂x = 2 * x = 2 * 5 = 10", "tensor(10.)"),
            (
                "x=torch.tensor(5, requires_grad=True, dtype=torch.float32)\n"
                "z=torch.tensor(3, requires_grad=True, dtype=torch.float32)",
                "",
            ),
            ("y=x*x + z + torch.log(z)", ""),
            ("y.backward()", ""),
            ("x.grad, z.grad", "(tensor(10.), tensor(1.3333))"),
            (
                "x=torch.tensor(5, requires_grad=True, dtype=torch.float32)\n"
                "z=torch.tensor(3, requires_grad=True, dtype=torch.float32)",
                "",
            ),
            ("r1=x*x + z + torch.log(z) # r1=f(x,z), where f=x*x + z + log(z)", ""),
            ("r2=r1+torch.sqrt(x)  # r2=g(r1,x), where g=r1 + √x", ""),
            ("r3=100*r1+torch.log(r2) # r3=h(r1,r2), where h=100 * r1 + log(r2)", ""),
            ("y=r1+r2+r3 # y=u(r1,r2,r3), where u=r1 + r2 +r3", ""),
            ("y.backward() # voila!", ""),
            (
                'print(f"∂y/∂x={x.grad}, ∂y/∂z={z.grad}")',
                "∂y/∂x=1020.5499267578125, ∂y/∂z=136.0425567626953",
            ),
            (
                "print(x.grad, z.grad, r1.grad, r2.grad, r3.grad)",
                "tensor(1020.5499) tensor(136.0426) None None None",
            ),
        ],
    )
    torch = ns["torch"]
    text = seed_text("002")
    with pytest.raises(RuntimeError) as error:
        run_cell("x=torch.tensor(5)\ny=x*x\ny.backward() # you get an error", ns)
    assert f"RuntimeError: {error.value}" in text
    with pytest.raises(RuntimeError, match="Only Tensors of floating point"):
        run_cell("x=torch.tensor(5, requires_grad=True)\ny=x*x\ny.backward()", ns)
    # The exercise: r2.backward() gives the gradients of r2 alone.
    run_cell(
        "x=torch.tensor(5, requires_grad=True, dtype=torch.float32)\n"
        "z=torch.tensor(3, requires_grad=True, dtype=torch.float32)\n"
        "r1=x*x + z + torch.log(z)\nr2=r1+torch.sqrt(x)\nr3=100*r1+torch.log(r2)\ny=r1+r2+r3\n"
        "r2.backward()",
        ns,
    )
    assert np.isclose(ns["x"].grad.item(), 10 + 0.5 / np.sqrt(5), rtol=1e-6)
    assert np.isclose(ns["z"].grad.item(), 1 + 1 / 3, rtol=1e-6)
    assert torch.__version__


# ---------------------------------------------------------------- seed 003


def test_seed_003_automatic_differentiation() -> None:
    ns = check_cells(
        "003",
        [
            ("import torch", None),
            ("x = torch.arange(4.0)\nx", "tensor([0., 1., 2., 3.])"),
            (
                "x.requires_grad_(True)  # Same as `x = torch.arange(4.0, requires_grad=True)`\n"
                "x.grad  # The default value is None",
                "",
            ),
            ("y = 2 * torch.dot(x, x)\ny", "tensor(28., grad_fn=<MulBackward0>)"),
            ("y.backward()\nx.grad", "tensor([ 0.,  4.,  8., 12.])"),
            ("x.grad == 4 * x  #gradient of x", "tensor([True, True, True, True])"),
            (
                "# PyTorch accumulates the gradient in default, we need to clear the previous\n"
                "# values\nx.grad.zero_()\ny = x.sum()\ny.backward()\nx.grad",
                "tensor([1., 1., 1., 1.])",
            ),
            ("x.sum()", "tensor(6., grad_fn=<SumBackward0>)"),
            (
                "# Invoking `backward` on a non-scalar requires passing in a `gradient` argument\n"
                "x.grad.zero_()\ny = x * x\ny.sum().backward()\nx.grad",
                "tensor([0., 2., 4., 6.])",
            ),
            (
                "x.grad.zero_()\ny = x * x\nu = y.detach()\nz = u * x\n\n"
                "z.sum().backward()\nx.grad == u",
                "tensor([True, True, True, True])",
            ),
            (
                "x.grad.zero_()\ny.sum().backward()\nx.grad == 2 * x",
                "tensor([True, True, True, True])",
            ),
            (
                "def f(a):\n    b = a * 2\n    while b.norm() < 10:\n        b = b * 2\n"
                "    if b.sum() > 0:\n        c = b\n    else:\n        c = 100 * b\n    return c",
                "",
            ),
        ],
    )
    torch = ns["torch"]
    for seed in range(20):
        torch.manual_seed(seed)
        printed = run_cell(
            "a = torch.randn(size=(), requires_grad=True)\nprint (a)\nd = f(a)\nd.backward()\nd", ns
        )
        first, second = printed.splitlines()
        assert re.fullmatch(r"tensor\(-?\d+\.\d{4}, requires_grad=True\)", first)
        assert re.fullmatch(r"tensor\(-?\d+\.\d{4}, grad_fn=<MulBackward0>\)", second)
        a, d = ns["a"], ns["d"]
        # d = k * a for the k the loop chose, so a.grad == d / a (exactly when k is a power of 2).
        assert np.isclose(a.grad.item(), (d / a).item(), rtol=1e-6)
        if d.item() > 0:
            assert run_cell("a.grad == d / a", ns) == "tensor(True)"


# ---------------------------------------------------------------- seed 004


def test_seed_004_legacy_variable_api() -> None:
    ns: dict = {}
    text = seed_text("004")
    cells = [
        "import torch\nimport numpy as np\nfrom torch.autograd import Variable",
        "x = torch.randn(3,3)\nx",
        "v = Variable(x,requires_grad=True)",
        "v",
        "v.data",
        "y = v**2",
        "y",
        "y.creator",
        "z = y + 3",
        "z.creator.previous_functions[0][0]",
        "z.creator.previous_functions[0][0].previous_functions[0][0]",
        "z",
        "f = z.mean()\nf",
        "f.backward()",
        "v.grad",
    ]
    for code in cells:
        assert code.splitlines()[0] in text
        run_cell(
            code.replace("torch.autograd", "gradcalc.autograd").replace(
                "import torch", "import gradcalc as torch"
            ),
            ns,
        )
    v, y, z, f = ns["v"], ns["y"], ns["z"], ns["f"]
    assert ns["torch"] is gradcalc
    assert np.shares_memory(ns["x"].numpy(), v.data.numpy())
    assert z.creator.previous_functions[0][0] is y.creator
    assert z.creator.previous_functions[0][0].previous_functions[0][0] is v
    assert np.allclose(f.item(), (v.detach().numpy() ** 2 + 3).mean())
    assert np.allclose(v.grad.numpy(), 2 * v.detach().numpy() / 9)

    for code in [
        "x = Variable(torch.randn(2,2),requires_grad=True)\nx",
        "y = x**2\ny",
        "y.backward(torch.ones(2,2))",
        "x.grad",
    ]:
        assert code.splitlines()[0] in text
        run_cell(code, ns)
    assert np.allclose(ns["x"].grad.numpy(), 2 * ns["x"].detach().numpy())

    code = (
        "x = torch.randn(3)\nx = Variable(x, requires_grad=True)\n\ny = x * 2\n"
        "while y.data.norm() < 1000:\n    y = y * 2\n\nprint(y)"
    )
    assert code.splitlines()[0] in text
    run_cell(code, ns)
    assert ns["y"].data.norm().item() >= 1000
    run_cell("y.backward(torch.Tensor([1,0.1,0.01]))", ns)
    grads = ns["x"].grad.numpy() / np.array([1, 0.1, 0.01], dtype=np.float32)
    factor = ns["y"].detach().numpy()[0] / ns["x"].detach().numpy()[0]
    assert np.allclose(grads, factor, rtol=1e-5) and np.log2(factor).is_integer()
