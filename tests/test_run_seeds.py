# ruff: noqa: E501 - seed code and outputs are quoted verbatim
"""The seeds' own code, as written (``import torch``), run by gradcalc: `gradcalc run` and the REPL.

Each seed's notebook cells become one program: a cell that only shows a value
(``x.grad``) is wrapped in ``print(repr(...))`` for ``gradcalc run``, and left bare
for the REPL (which shows it, as the notebook did). What is printed must be the
seed's printed output (each expected text is checked to appear in the seed file,
each cell's first line too). Cells drawing random numbers cannot print the seed's
numbers (gradcalc's generator is not PyTorch's): their output is checked for
PyTorch's layout and the relationships the tutorial shows.

Cells whose seed output is an error (seed 002's RuntimeErrors) and seed 004's
pre-0.4 ``.creator`` (an AttributeError in PyTorch 2.x, as here) are fed to a REPL
session, which, like the notebook, reports the error for that cell and goes on.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from gradcalc.cli.repl import Entry, Session, run_script
from gradcalc.interpreter import Interpreter

SEEDS = Path(__file__).resolve().parent / "seeds"
SHOWS = object()
"""Marks a cell that ends with an expression whose value the notebook displays."""


def seed_text(prefix: str) -> str:
    (path,) = SEEDS.glob(f"{prefix}_*.txt")
    return path.read_text(encoding="utf-8")


CELLS = {
    "000": [
        ("import torch", ""),
        ("a = torch.tensor(2., requires_grad=True)\nb = torch.tensor(6., requires_grad=True)", ""),
        ("P = 3*a**3 - b**2\nprint('P: {}'.format(P))", "P: -12.0"),
        ("P.backward()", ""),
        (
            "print('gradient w.r.t. a: {}'.format(a.grad))\nprint('gradient w.r.t. b: {}'.format(b.grad))",
            "gradient w.r.t. a: 36.0\ngradient w.r.t. b: -12.0",
        ),
        ("Q = -3*a**3 + b**2\nprint('Q: {}'.format(Q))", "Q: 12.0"),
        ("Q.backward()", ""),
        (
            "print('gradient w.r.t. a: {}'.format(a.grad))\nprint('gradient w.r.t. b: {}'.format(b.grad))",
            "gradient w.r.t. a: 0.0\ngradient w.r.t. b: 0.0",
        ),
        (
            "# clear the gradients\nif a.grad is not None:\n    a.grad.zero_()\n\nif b.grad is not None:\n    b.grad.zero_()",
            "",
        ),
        (
            "# forward pass for P\nP = 3*a**3 - b**2\nprint('P: {}'.format(P))\n\n# backward pass for P\nP.backward()\nprint('gradient w.r.t. a: {}'.format(a.grad))\nprint('gradient w.r.t. b: {}'.format(b.grad))",
            "P: -12.0\ngradient w.r.t. a: 36.0\ngradient w.r.t. b: -12.0",
        ),
        (
            "# clear the gradients\nif a.grad is not None:\n    a.grad.zero_()\n\nif b.grad is not None:\n    b.grad.zero_()",
            "",
        ),
        (
            "# forward pass for Q\nQ = -3*a**3 + b**2\nprint('Q: {}'.format(Q))\n\n# backward pass for Q\nQ.backward()\nprint('gradient w.r.t. a: {}'.format(a.grad))\nprint('gradient w.r.t. b: {}'.format(b.grad))",
            "Q: 12.0\ngradient w.r.t. a: -36.0\ngradient w.r.t. b: 12.0",
        ),
    ],
    "001": [
        ("import torch", ""),
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
            "#Gradients are now deposited in a.grad and b.grad\n# check if collected gradients are correct\nprint(a.grad)\nprint(b.grad)\n\nprint(9*a**2 == a.grad)\nprint(-2*b == b.grad)",
            "tensor([36., 81.])\ntensor([-12.,  -8.])\ntensor([True, True])\ntensor([True, True])",
        ),
        (
            "x = torch.rand(5, 5)\ny = torch.rand(5, 5)\nz = torch.rand((5, 5), requires_grad=True)",
            "",
        ),
        ("with torch.no_grad():\n    c = x + z\nprint(c.requires_grad)", "False"),
        ("d = x + z\nd_detached = d.detach()\nprint(d_detached.requires_grad)", "False"),
        (
            "sample_size = 2\nnumber_features = 3\n\nx = torch.arange(sample_size*number_features).reshape(sample_size, number_features) * 1.0\nprint(x)\n\ntarget = torch.arange(2, sample_size+2).reshape(sample_size, 1) * 1.0\nprint(target)",
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
            "def update_parameter(w, learning_rate=0.1):\n    with torch.no_grad():\n        w.add_(w.grad, alpha=-1*learning_rate)",
            "",
        ),
        ("update_parameter(w, 0.01)", ""),
        (
            "print(w)",
            "tensor([[0.7300],\n        [0.6300],\n        [0.5300]], requires_grad=True)",
        ),
        (
            "a = torch.tensor([2.0, 3.0], requires_grad=True)\nb = torch.tensor([6.0, 4.0], requires_grad=True)\nQ = 3*a**3 - b**2\nprint(Q)",
            "tensor([-12.,  65.], grad_fn=<SubBackward0>)",
        ),
        (
            "external_grad = torch.tensor([1., 1.])\nQ.backward(gradient=external_grad)\nprint(a.grad)",
            "tensor([36., 81.])",
        ),
        ("a.grad.zero_()", SHOWS, "tensor([0., 0.])"),
    ],
    "002": [
        ("import torch", ""),
        (
            "x=torch.tensor(5, requires_grad=True, dtype=torch.float32) # creates a tensor (think as multi-dimensional array)",
            "",
        ),
        ("x", SHOWS, "tensor(5., requires_grad=True)"),
        ("x.grad  # x.grad=None initally", SHOWS, "None"),
        ("y=x*x", ""),
        ("y", SHOWS, "tensor(25., grad_fn=<MulBackward0>)"),
        ("y.backward() # computes partial derivatives ∂y/∂x and stores it in x.grad", ""),
        ("x.grad # ∂y/∂x = 2 * x = 2 * 5 = 10", SHOWS, "tensor(10.)"),
        (
            "x=torch.tensor(5, requires_grad=True, dtype=torch.float32)\nz=torch.tensor(3, requires_grad=True, dtype=torch.float32)",
            "",
        ),
        ("y=x*x + z + torch.log(z)", ""),
        ("y.backward()", ""),
        ("x.grad, z.grad", SHOWS, "(tensor(10.), tensor(1.3333))"),
        (
            "x=torch.tensor(5, requires_grad=True, dtype=torch.float32)\nz=torch.tensor(3, requires_grad=True, dtype=torch.float32)",
            "",
        ),
        ("r1=x*x + z + torch.log(z) # r1=f(x,z), where f=x*x + z + log(z)", ""),
        ("r2=r1+torch.sqrt(x)  # r2=g(r1,x), where g=r1 + √x", ""),
        ("r3=100*r1+torch.log(r2) # r3=h(r1,r2), where h=100 * r1 + log(r2)", ""),
        ("y=r1+r2+r3 # y=u(r1,r2,r3), where u=r1 + r2 +r3", ""),
        (
            "y.backward() # voila! (∂y/∂x) and z (∂y/∂z) are calculated and stored in x.grad and z.grad respectively",
            "",
        ),
        (
            'print(f"∂y/∂x={x.grad}, ∂y/∂z={z.grad}")',
            "∂y/∂x=1020.5499267578125, ∂y/∂z=136.0425567626953",
        ),
        (
            "print(x.grad, z.grad, r1.grad, r2.grad, r3.grad)",
            "tensor(1020.5499) tensor(136.0426) None None None",
        ),
    ],
    "003": [
        ("import torch", ""),
        ("x = torch.arange(4.0)\nx", SHOWS, "tensor([0., 1., 2., 3.])"),
        (
            "x.requires_grad_(True)  # Same as `x = torch.arange(4.0, requires_grad=True)`\nx.grad  # The default value is None",
            SHOWS,
            "None",
        ),
        ("y = 2 * torch.dot(x, x)\ny", SHOWS, "tensor(28., grad_fn=<MulBackward0>)"),
        ("y.backward()\nx.grad", SHOWS, "tensor([ 0.,  4.,  8., 12.])"),
        ("x.grad == 4 * x  #gradient of x", SHOWS, "tensor([True, True, True, True])"),
        (
            "# PyTorch accumulates the gradient in default, we need to clear the previous\n# values\nx.grad.zero_()\ny = x.sum()\ny.backward()\nx.grad",
            SHOWS,
            "tensor([1., 1., 1., 1.])",
        ),
        ("x.sum()", SHOWS, "tensor(6., grad_fn=<SumBackward0>)"),
        (
            "# Invoking `backward` on a non-scalar requires passing in a `gradient` argument\nx.grad.zero_()\ny = x * x\ny.sum().backward()\nx.grad",
            SHOWS,
            "tensor([0., 2., 4., 6.])",
        ),
        (
            "x.grad.zero_()\ny = x * x\nu = y.detach()\nz = u * x\n\nz.sum().backward()\nx.grad == u",
            SHOWS,
            "tensor([True, True, True, True])",
        ),
        (
            "x.grad.zero_()\ny.sum().backward()\nx.grad == 2 * x",
            SHOWS,
            "tensor([True, True, True, True])",
        ),
        (
            "def f(a):\n    b = a * 2\n    while b.norm() < 10:\n        b = b * 2\n    if b.sum() > 0:\n        c = b\n    else:\n        c = 100 * b\n    return c",
            "",
        ),
    ],
}


def _cells(prefix: str) -> list[tuple[str, bool, str]]:
    out = []
    for cell in CELLS[prefix]:
        code, shows, expected = (
            (cell[0], True, cell[2]) if len(cell) == 3 else (cell[0], False, cell[1])
        )
        out.append((code, shows, expected))
    return out


def as_program(prefix: str, *, repl: bool) -> str:
    """The seed's cells as one program; a value-only cell printed (left bare for the REPL)."""
    lines = []
    for code, shows, _ in _cells(prefix):
        if shows and not repl:
            *body, last = code.splitlines()
            last = re.sub(r"\s+#.*$", "", last)
            code = "\n".join([*body, f"print(repr(({last})))"])
        lines.append(code)
    return "\n".join(lines) + "\n"


def expected_output(prefix: str, *, repl: bool) -> str:
    text = seed_text(prefix)
    out = []
    for code, _shows, expected in _cells(prefix):
        assert code.splitlines()[0] in text, code
        if expected == "None" and repl:
            continue  # the REPL, as a notebook, shows no None
        if expected:
            assert expected in text or expected == "None", expected
            out.append(expected + "\n")
    return "".join(out)


def run_program(source: str) -> str:
    out: list[str] = []
    Interpreter(program=True, write=out.append).execute(source)
    return "".join(out)


def run_repl(source: str) -> tuple[str, str, int]:
    """Piped into ``gradcalc repl``: each statement an entry."""
    stdout, stderr = io.StringIO(), io.StringIO()
    session = Session(stdout=stdout, stderr=stderr, script=True)
    code = run_script(io.StringIO(source), session)
    return stdout.getvalue(), stderr.getvalue(), code


def run_cells(cells: list[str]) -> tuple[str, str, int]:
    """A REPL session given each notebook cell as one entry (as ``:load`` or a paste gives a
    block): like the notebook, it shows only a cell's last value."""
    stdout, stderr = io.StringIO(), io.StringIO()
    session = Session(stdout=stdout, stderr=stderr, script=True)
    line = 1
    for cell in cells:
        session.run(Entry(cell, line))
        line += cell.count("\n") + 1
    return stdout.getvalue(), stderr.getvalue(), 1 if session.failures else 0


@pytest.mark.parametrize("prefix", sorted(CELLS))
def test_seed_program_under_gradcalc_run_prints_the_seeds_output(prefix: str) -> None:
    assert run_program(as_program(prefix, repl=False)) == expected_output(prefix, repl=False)


@pytest.mark.parametrize("prefix", sorted(CELLS))
def test_seed_program_in_the_repl_prints_the_seeds_output(prefix: str) -> None:
    stdout, stderr, code = run_cells([code for code, _, _ in _cells(prefix)])
    assert (stdout, stderr, code) == (expected_output(prefix, repl=True), "", 0)


@pytest.mark.parametrize("prefix", ["000", "001", "002"])
def test_seed_program_piped_into_the_repl_prints_the_seeds_output(prefix: str) -> None:
    # Piped, each statement is an entry, so (as in Python's REPL) every bare expression
    # shows its value: seeds 000-002 end their cells with one, or with none.
    stdout, stderr, code = run_repl(as_program(prefix, repl=True))
    assert (stdout, stderr, code) == (expected_output(prefix, repl=True), "", 0)


def test_seed_001_random_cells_print_pytorch_layout() -> None:
    printed = run_program(
        "import torch\nshape = (3,1)\nx = torch.randn(shape, requires_grad=True)\nprint(x)\n"
        "y = x+1\nprint(y)\nprint(y.requires_grad)\nprint(y.grad_fn)\n"
        "z = y**2 + 3\nprint(z)\nprint(z.requires_grad)\nprint(z.grad_fn)\n"
        "print(z.grad_fn.next_functions)\nprint(z.grad_fn.next_functions[0][0].next_functions)\n"
        "x = torch.rand(5, 5)\ny = torch.rand(5, 5)\nz = torch.rand((5, 5), requires_grad=True)\n\n"
        'a = x + y\nprint(f"Does `a` require gradients? : {a.requires_grad}")\nb = x + z\n'
        'print(f"Does `b` require gradients?: {b.requires_grad}")\n'
    )
    text = seed_text("001")
    lines = printed.splitlines()
    assert re.fullmatch(r"tensor\(\[\[ ?-?\d\.\d{4}\],", lines[0])
    assert lines[2].endswith("]], requires_grad=True)")
    assert lines[5].endswith("]], grad_fn=<AddBackward0>)") and lines[6] == "True"
    assert re.fullmatch(r"<AddBackward0 object at 0x[0-9a-f]+>", lines[7])
    assert re.fullmatch(r"<AddBackward0 object at 0x[0-9a-f]+>", lines[12])
    assert re.fullmatch(r"\(\(<PowBackward0 object at 0x[0-9a-f]+>, 0\), \(None, 0\)\)", lines[13])
    assert lines[14] == f"(({lines[7]}, 0),)"
    assert lines[15:] == [
        "Does `a` require gradients? : False",
        "Does `b` require gradients?: True",
    ]
    assert "\n".join(lines[15:]) in text


def test_seed_003_random_cell_prints_pytorch_layout() -> None:
    program = as_program("003", repl=False) + (
        "torch.manual_seed(1)\na = torch.randn(size=(), requires_grad=True)\nprint (a)\n"
        "d = f(a)\nd.backward()\nprint(repr((d)))\nprint(repr((a.grad == d / a)))\n"
    )
    *_, first, second, third = run_program(program).splitlines()
    assert re.fullmatch(r"tensor\(-?\d+\.\d{4}, requires_grad=True\)", first)
    assert re.fullmatch(r"tensor\(-?\d+\.\d{4}, grad_fn=<MulBackward0>\)", second)
    assert third == "tensor(True)"


def test_seed_002_error_cells_are_reported_and_the_session_goes_on() -> None:
    source = (
        "import torch\n"
        "x=torch.tensor(5)\ny=x*x\ny.backward() # you get an error\n"
        "x=torch.tensor(5, requires_grad=True)\ny=x*x\ny.backward() # you get an error\n"
        "print('after')\n"
    )
    stdout, stderr, code = run_repl(source)  # piped: the lines of the input are counted
    stderr = " ".join(stderr.split())  # (the report is wrapped to the console's width)
    assert stdout == "after\n" and code == 1
    assert "element 0 of tensors does not require grad and does not have a grad_fn" in stderr
    assert "Only Tensors of floating point" in stderr  # (PyTorch 2.x adds "and complex")
    assert "line 4" in stderr and "line 5" in stderr
    for words in (
        "element 0 of tensors does not require grad",
        "Only Tensors of floating point dtype",
    ):
        assert words in seed_text("002")


def test_seed_004_in_modern_pytorch_terms() -> None:
    """Seed 004 is PyTorch 0.3 (Variable printing, ``.creator``). PyTorch 2.13 runs the same
    cells with ``Variable`` a plain tensor and ``.creator`` an AttributeError; so does gradcalc."""
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
        "z",
        "f = z.mean()\nf",
        "f.backward()",
        "v.grad",
        "x = Variable(torch.randn(2,2),requires_grad=True)\nx",
        "y = x**2\ny",
        "y.backward(torch.ones(2,2))",
        "x.grad",
        "x = torch.randn(3)\nx = Variable(x, requires_grad=True)\n\ny = x * 2\nwhile y.data.norm() < 1000:\n    y = y * 2\n\nprint(y)",
        "y.backward(torch.Tensor([1,0.1,0.01]))",
        "x.grad",
    ]
    text = seed_text("004")
    for cell in cells:
        assert cell.splitlines()[0] in text
    stdout, stderr, code = run_cells(cells)
    assert code == 1 and stderr.count("'Tensor' object has no attribute 'creator'") == 2
    shown = stdout.split("tensor(")[1:]
    kinds = [
        re.sub(r"\s+", "", re.sub(r"-?\d+\.\d{4}(e[+-]\d+)?", "N", "tensor(" + part))
        for part in shown
    ]
    matrix = "tensor([[N,N,N],[N,N,N],[N,N,N]]"
    assert kinds[0] == matrix + ")"
    assert kinds[1] == matrix + ",requires_grad=True)"
    assert kinds[2] == matrix + ")"
    assert kinds[3] == matrix + ",grad_fn=<PowBackward0>)"
    assert kinds[4] == matrix + ",grad_fn=<AddBackward0>)"
    assert kinds[5] == "tensor(N,grad_fn=<MeanBackward0>)"
    assert kinds[6] == matrix + ")"
    assert re.fullmatch(r"tensor\(\[N,N,N\],grad_fn=<MulBackward0>\)", kinds[-2])
