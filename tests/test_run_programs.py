# ruff: noqa: E501 - programs and PyTorch's printed output are quoted verbatim
"""`gradcalc run`: programs run as ``python FILE`` runs them, printing what PyTorch prints.

The expected outputs were made by running the same text with PyTorch 2.13 and CPython
(the tests need neither). tests/programs/seed_*.py are the five seed tutorials' cells as
one program each (a cell that only shows a value wrapped in print(); random draws replaced
by fixed values, as gradcalc's generator is not PyTorch's); seed_*.out is what PyTorch
printed for them. Seed 004 is written for PyTorch 2.x: pre-0.4's ``.creator`` is gone
(``y.grad_fn`` replaced it), and ``.creator`` is an error here as in PyTorch 2.13
(`test_legacy_creator_is_an_attribute_error`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gradcalc.errors import FormulaError, LimitError, ParseError
from gradcalc.interpreter import Interpreter

PROGRAMS = Path(__file__).resolve().parent / "programs"


def run(source: str) -> str:
    out: list[str] = []
    Interpreter(program=True, write=out.append).execute(source)
    return "".join(out)


def failure(source: str) -> tuple[str, FormulaError]:
    out: list[str] = []
    with pytest.raises(FormulaError) as caught:
        Interpreter(program=True, write=out.append).execute(source)
    return "".join(out), caught.value


@pytest.mark.parametrize("name", ["seed_000", "seed_001", "seed_002", "seed_003", "seed_004"])
def test_each_seed_program_prints_what_pytorch_prints(name: str) -> None:
    source = (PROGRAMS / f"{name}.py").read_text(encoding="utf-8")
    expected = (PROGRAMS / f"{name}.out").read_text(encoding="utf-8")
    assert run(source) == expected


CASES = [
    ("print(1/2, 7//2, -7//2, 7 % 3, 2**10, 2**-1, 3 == 3.0)", "0.5 3 -4 1 1024 0.5 True\n"),
    ("print('a' + 'b', 'ab' * 3, 'x=%d y=%.2f' % (3, 2.5))", "ab ababab x=3 y=2.50\n"),
    (
        "print('{:.4f} {:>8}| {!r} {:<5}|'.format(3.14159, 'ab', 'q', 7))",
        "3.1416       ab| 'q' 7    |\n",
    ),
    (
        "x = 2.5\nname = 'w'\nprint(f'{name}: {x:.3f} {x!r} {x*2:>8.2f} {{}}')",
        "w: 2.500 2.5     5.00 {}\n",
    ),
    ("print(1, 2, 3, sep=', ', end='.\\n')", "1, 2, 3.\n"),
    ("print('''tri\nple''', \"dq\", 'esc\\tape\\\\n')", "tri\nple dq esc\tape\\n\n"),
    ("a, b = 1, 2\na, b = b, a\nprint(a, b)", "2 1\n"),
    ("(a, b), c = (1, 2), 3\nprint(a, b, c)", "1 2 3\n"),
    (
        "t = (1,)\nprint(t, (), [], [1, [2, 3]], None, True, False)",
        "(1,) () [] [1, [2, 3]] None True False\n",
    ),
    (
        "print([i * i for i in range(5) if i % 2 == 0], [x + y for x in 'ab' for y in 'cd'])",
        "[0, 4, 16] ['ac', 'ad', 'bc', 'bd']\n",
    ),
    (
        "for i, v in enumerate(['a', 'b'], 1):\n    print(i, v)\nfor p, q in zip([1, 2], (3, 4)):\n    print(p * q)",
        "1 a\n2 b\n3\n8\n",
    ),
    (
        "print(len([1, 2, 3]), list(range(2, 8, 2)), tuple('ab'), abs(-3), round(2.567, 2), round(2.5))",
        "3 [2, 4, 6] ('a', 'b') 3 2.57 2\n",
    ),
    (
        "print(float('inf'), -float('inf'), float('nan'), int(3.9), str(12) + '!', bool(0), bool([1]))",
        "inf -inf nan 3 12! False True\n",
    ),
    (
        "print(isinstance(3, int), isinstance(3.0, (int, float)), sum([1, 2, 3]), max(1, 5), min([4, 2]))",
        "True True 6 5 2\n",
    ),
    (
        "x = None\nprint(x is None, x is not None, 1 in [1, 2], 3 not in (1, 2), 'a' in 'cat')",
        "True False True True True\n",
    ),
    (
        "import math\nprint(math.pi, math.sqrt(2), math.inf > 1e308, math.floor(2.5))",
        "3.141592653589793 1.4142135623730951 True 2\n",
    ),
    (
        "import torch\nprint(torch.tensor([2., 3.], requires_grad=True), torch.tensor(5), torch.tensor([1, 2]))",
        "tensor([2., 3.], requires_grad=True) tensor(5) tensor([1, 2])\n",
    ),
    (
        "import torch\nx = torch.tensor([1., 2.], dtype=torch.float64, requires_grad=True)\nprint(x * 2)",
        "tensor([2., 4.], dtype=torch.float64, grad_fn=<MulBackward0>)\n",
    ),
    (
        "import torch\nx = torch.tensor(2.0, requires_grad=True)\ny = x ** 3\ny.backward()\nprint(x.grad, x.grad.item(), y.item(), y.grad_fn.name())",
        "tensor(12.) 12.0 8.0 PowBackward0\n",
    ),
    (
        "import torch\nx = torch.tensor([1., 2.], requires_grad=True)\ny = (x * x).sum()\nprint(y.grad_fn.next_functions[0][0].name(), x.grad is None)",
        "MulBackward0 True\n",
    ),
    (
        "import torch\nw = torch.tensor([1., 2.], requires_grad=True)\nloss = (w * w).sum()\nloss.backward()\nwith torch.no_grad():\n    w -= 0.1 * w.grad\nprint(w, w.requires_grad, w.is_leaf)\nw.grad.zero_()\nprint(w.grad)",
        "tensor([0.8000, 1.6000], requires_grad=True) True True\ntensor([0., 0.])\n",
    ),
    (
        "import torch\nx = torch.ones(2, requires_grad=True)\nwith torch.no_grad():\n    y = x * 2\nwith torch.enable_grad():\n    z = x * 2\nprint(y.requires_grad, z.requires_grad, torch.is_grad_enabled())",
        "False True True\n",
    ),
    (
        "import torch\nx = torch.ones(2, requires_grad=True)\ny = x * 3\ny.retain_grad()\ny.sum().backward()\nprint(y.grad, x.data, x.detach().requires_grad_().requires_grad)",
        "tensor([1., 1.]) tensor([1., 1.]) True\n",
    ),
    (
        "import torch\nfrom torch.autograd import Variable\nv = Variable(torch.ones(2), requires_grad=True)\nprint(v, (v * 2).grad_fn.name())",
        "tensor([1., 1.], requires_grad=True) MulBackward0\n",
    ),
    (
        "import torch.nn.functional as F\nimport torch\nprint(F.relu(torch.tensor([-1., 2.])), F.mse_loss(torch.tensor([1., 2.]), torch.tensor([0., 0.])))",
        "tensor([0., 2.]) tensor(2.5000)\n",
    ),
    (
        "import torch\nx = torch.tensor([1., 2., 3.])\nprint(x // 2, x % 2, x.shape, x.shape[0], x.sum().item())",
        "tensor([0., 1., 1.]) tensor([1., 0., 1.]) torch.Size([3]) 3 6.0\n",
    ),
    (
        "import torch\nx = torch.tensor([1., 2.])\nx.requires_grad = True\ny = (x * x).sum()\ny.backward()\nprint(x.grad)\nx.grad = None\nprint(x.grad)",
        "tensor([2., 4.])\nNone\n",
    ),
    (
        "import torch\nprint(torch.tensor(3.5) > 2, (torch.tensor(3.) * 2).item(), float(torch.tensor(2.)), int(torch.tensor(7)))",
        "tensor(True) 6.0 2.0 7\n",
    ),
    (
        "import torch\nx = torch.tensor([1., 2.], requires_grad=True)\ny = x * 2\nprint(y)\nprint('{}'.format(y.sum()), f'{y.sum():.2f}')",
        "tensor([2., 4.], grad_fn=<MulBackward0>)\n6.0 6.00\n",
    ),
    (
        "def f(a, b=2):\n    return a * b, a + b\np, q = f(3)\nprint(p, q, f(1, b=5))",
        "6 5 (5, 6)\n",
    ),
    ("i = 0\nwhile True:\n    i += 1\n    if i > 3:\n        break\nprint(i)", "4\n"),
]


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_each_construct_prints_what_python_and_pytorch_print(source: str, expected: str) -> None:
    assert run(source) == expected


def test_grad_fn_prints_as_pytorch_object_repr_with_a_stable_address() -> None:
    """PyTorch prints a grad_fn's memory address; programs print a number in its place,
    the same for the same grad_fn (so identities show), the same on every run."""
    source = (
        "import torch\nx = torch.ones(2, requires_grad=True)\ny = x + 1\nz = y ** 2\n"
        "print(y)\nprint(y.grad_fn)\nprint(z.grad_fn, z.grad_fn.next_functions)\n"
        "print(z.grad_fn.next_functions[0][0].next_functions)\n"
        "print('{} {!r}'.format(y.grad_fn, [y.grad_fn]), f'{z.grad_fn}', repr(z.grad_fn) == str(z.grad_fn))"
    )
    expected = (
        "tensor([2., 2.], grad_fn=<AddBackward0>)\n"
        "<AddBackward0 object at 0x000000000001>\n"
        "<PowBackward0 object at 0x000000000002> ((<AddBackward0 object at 0x000000000001>, 0),)\n"
        "((<AccumulateGrad object at 0x000000000003>, 0), (None, 0))\n"
        "<AddBackward0 object at 0x000000000001> [<AddBackward0 object at 0x000000000001>] "
        "<PowBackward0 object at 0x000000000002> True\n"
    )
    assert run(source) == expected
    assert run(source) == expected  # (every run)


@pytest.mark.parametrize(
    ("source", "line", "words"),
    [
        # seed 002's cells whose output is an error: PyTorch's RuntimeError, here a report
        ("import torch\nx=torch.tensor(5)\ny=x*x\ny.backward()", 4, "does not require grad"),
        ("import torch\nx=torch.tensor(5, requires_grad=True)", 2, "floating point"),
        ("import torch\nx = torch.ones(2)\ny = x.creator", 3, "has no attribute 'creator'"),
        ("print('a')\nimport os", 2, "No module named 'os'"),
        ("from torch.autograd import nothing", 1, "cannot import name 'nothing'"),
        ("x = 1\nprint(y)", 2, "name 'y' is not defined"),
        ("print(1 / 0)", 1, "ZeroDivisionError: division by zero"),
        ("a, b = 1, 2, 3", 1, "too many values to unpack"),
        ("print('{0.real}'.format(1))", 1, "not supported"),
        ("import torch\nx = torch.ones(3)\nprint(max(x, 0))", 3, "torch.maximum"),
        ("x = (1).__class__", 1, "has no attribute '__class__'"),
        ("import torch\nx = torch.ones(2).numpy()\nx.tofile('f')", 3, "has no attribute 'tofile'"),
        ("import numpy as np\nnp.array([1])", 2, "numpy is not available"),
        ("with 3:\n    pass", 1, "context manager"),
    ],
)
def test_errors_stop_the_program_at_their_line(source: str, line: int, words: str) -> None:
    _, error = failure(source)
    assert words in error.message or words in (error.hint or ""), error
    assert error.line == line


def test_output_before_an_error_is_kept() -> None:
    printed, error = failure("print('before')\nx = undefined_name\nprint('after')")
    assert printed == "before\n" and error.line == 2


@pytest.mark.parametrize(
    "source",
    [
        "s = 'a' * 10**9",
        "s = [0] * 10**9",
        "x = 10 ** 10 ** 10",
        "s = 'ab'\nfor i in range(40):\n    s = s + s",
        "print('{:>2000000000}'.format(1))",
        "print(f'{1:.2000000000f}')",
        "x = list(range(10**12))",
        "import torch\nx = torch.zeros(10**6, 10**6)",
        "import torch\nx = torch.arange(10**12)",
        "s = 'x'.rjust(10**10)",
    ],
)
def test_sizes_are_limited_before_anything_is_made(source: str) -> None:
    with pytest.raises(LimitError):
        Interpreter(program=True, write=lambda text: None).execute(source)


def test_iterations_are_limited() -> None:
    from gradcalc.limits import Limits

    interp = Interpreter(program=True, limits=Limits(max_iterations=1000), write=lambda t: None)
    with pytest.raises(LimitError):
        interp.execute("x = [i for i in range(10**9)]")


def test_grad_mode_is_restored_after_an_error_inside_no_grad() -> None:
    import gradcalc

    with pytest.raises(FormulaError):
        run("import torch\nwith torch.no_grad():\n    x = 1 / 0")
    assert gradcalc.is_grad_enabled()
    assert (
        run(
            "import torch\ndef f():\n    with torch.no_grad():\n        return 1\nf()\nprint(torch.is_grad_enabled())"
        )
        == "True\n"
    )
    assert (
        run(
            "import torch\nfor i in range(2):\n    with torch.no_grad():\n        break\nprint(torch.is_grad_enabled())"
        )
        == "True\n"
    )


def test_fullwidth_digits_are_a_parse_error() -> None:
    with pytest.raises(ParseError):
        run("print(１ + ２)")


def test_gradcalc_run_cli_file_stdin_errors_and_closed_pipe(tmp_path: Path) -> None:
    program = tmp_path / "p.py"
    program.write_text(
        "import torch\nx = torch.tensor(2., requires_grad=True)\n(x**3).backward()\nprint(x.grad)\ny = x.nope\n"
    )
    command = [sys.executable, "-m", "gradcalc", "run"]
    done = subprocess.run([*command, str(program)], capture_output=True, text=True, timeout=60)
    assert done.stdout == "tensor(12.)\n"
    assert done.returncode == 1
    assert "line 5" in done.stderr and "nope" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run(
        [*command, "-"], input="print('hi', 1/2)\n", capture_output=True, text=True, timeout=60
    )
    assert (done.stdout, done.returncode) == ("hi 0.5\n", 0)
    many = tmp_path / "many.py"
    many.write_text("for i in range(200000):\n    print(i)\n")
    shell = f"{sys.executable} -m gradcalc run {many} | head -2"
    done = subprocess.run(shell, shell=True, capture_output=True, text=True, timeout=120)
    assert done.stdout == "0\n1\n" and "Traceback" not in done.stderr and done.stderr == ""


def test_every_registry_function_is_reachable_from_programs() -> None:
    """ops.API is the one declaration: torch.<name>, F.<name> and x.<method> all come from it."""
    import gradcalc.nn.functional  # noqa: F401  (the registry, complete)
    from gradcalc import ops, pylang

    torch = pylang.MODULES["torch"].members
    functional = pylang.MODULES["torch.nn.functional"].members
    members = pylang.tensor_members()
    for entry in ops.API.values():
        names = (entry.name, *entry.aliases)
        if entry.function:
            table = functional if entry.namespace == "nn.functional" else torch
            for name in names:
                assert table[name] is entry.impl, name
        if entry.method and entry.namespace == "gradcalc":
            assert entry.name in members, entry.name
    assert run(
        "import torch\nx = torch.tensor([1., -2.])\nprint(torch.abs(x), x.abs(), torch.absolute(x))"
    ) == ("tensor([1., 2.]) tensor([1., 2.]) tensor([1., 2.])\n")


def test_keyword_arguments_take_pytorchs_names() -> None:
    out = run(
        "import torch\nx = torch.tensor([[1., 2.], [3., 4.]], dtype=torch.float64, requires_grad=True)\n"
        "print(x.sum(dim=0, keepdim=True), torch.sum(x, dim=1), x.dtype)"
    )
    assert out == (
        "tensor([[4., 6.]], dtype=torch.float64, grad_fn=<SumBackward1>) "
        "tensor([3., 7.], dtype=torch.float64, grad_fn=<SumBackward1>) torch.float64\n"
    )


def test_attribute_assignment_is_limited_to_grad_data_requires_grad() -> None:
    _, error = failure("import torch\nx = torch.ones(2)\nx.T = 1")
    assert "not writable" in error.message and error.line == 3
    _, error = failure("x = 'a'\nx.upper = 1")
    assert "cannot set attribute" in error.message


# ---------------------------------------------------------------- the formula language


@pytest.mark.parametrize(
    ("formula", "value"),
    [
        ("7 // 2", 3.0),
        ("-7 // 2", -4.0),
        ("7 % 3", 1.0),
        ("x // 2", 2.0),
        ("x + inf", float("inf")),
    ],
)
def test_formula_floor_division_and_infinity(formula: str, value: float) -> None:
    interp = Interpreter()
    interp.bind("x", 5.0)
    assert float(interp.execute(formula).value) == value


def test_formula_nan_and_strings_and_tuples() -> None:
    import math

    interp = Interpreter()
    assert math.isnan(float(interp.execute("nan").value))
    assert interp.execute("'a' + 'b'").value == "ab"
    assert interp.execute("'ab' * 2 + '!'").value == "abab!"
    interp.execute("a, b = 1, 2")
    assert float(interp.env["a"]) == 1.0 and float(interp.env["b"]) == 2.0
    assert interp.execute("a is None").value is not None


def test_print_in_a_formula_session_writes_and_in_a_one_shot_formula_is_refused() -> None:
    out: list[str] = []
    Interpreter(write=out.append).execute("x = 2\nprint('x:', x)")
    assert out == ["x: tensor(2., dtype=torch.float64, requires_grad=True)\n"]
    with pytest.raises(FormulaError, match="there is no print"):
        Interpreter().execute("print(2)")


def test_max_with_a_number_notes_that_it_is_an_axis() -> None:
    from gradcalc import api

    result = api.evaluate("min(a, 0)", {"a": [1.0, -2.0]})
    assert any("minimum(a, 0)" in note for note in result.notes)
    assert api.formula_notes("max(x, 0) + max(x)") == [
        "max(x, 0) reduces along axis 0 (as PyTorch's torch.max(x, dim)); the elementwise "
        "larger of x and 0 is maximum(x, 0)"
    ]
    assert api.formula_notes("maximum(x, 0)") == []


def test_generator_expressions_run_as_lists() -> None:
    assert run(
        "print(sum(x * x for x in range(4)), list(i for i in 'ab'), any(v > 2 for v in [1, 3]))"
    ) == ("14 ['a', 'b'] True\n")


def test_a_triple_quoted_string_keeps_the_lines_after_it_counted() -> None:
    _, error = failure('s = """a\nb\nc"""\nprint(s)\ny = undefined')
    assert error.line == 5


def test_a_program_object_compiles_for_each_mode() -> None:
    from gradcalc.parser import parse

    program = parse("x = 7 // 2\nx")
    formula = Interpreter().execute(program).value
    python = Interpreter(program=True).execute(program).value
    assert float(formula) == 3.0 and type(formula).__name__ == "Tensor"
    assert python == 3 and type(python) is int
    compiled = Interpreter().compile("y = 1 / 2\ny")
    assert Interpreter(program=True).execute(compiled).value == 0.5


def test_a_repl_printing_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    many = tmp_path / "many.py"
    many.write_text("import torch\nfor i in range(200000):\n    print(i)\n\n")
    shell = f"{sys.executable} -m gradcalc repl < {many} | head -2"
    done = subprocess.run(shell, shell=True, capture_output=True, text=True, timeout=120)
    assert done.stdout == "0\n1\n" and done.stderr == ""


def test_the_python_api_calls_back_a_programs_functions() -> None:
    source = (
        "import torch\nfrom torch.autograd.functional import jacobian, hessian\n"
        "def f(x):\n    return x ** 3\n"
        "def g(x):\n    return (x ** 3).sum()\n"
        "x = torch.tensor([1., 2.])\nprint(jacobian(f, x))\nprint(hessian(g, x))\n"
        "print(torch.ones(2).numpy())"
    )
    assert run(source) == (
        "tensor([[ 3.,  0.],\n        [ 0., 12.]])\n"
        "tensor([[ 6.,  0.],\n        [ 0., 12.]])\n[1. 1.]\n"
    )
    _, error = failure(
        "import torch\nfrom torch.autograd.functional import jacobian\n"
        "def bad(x):\n    return x.nope\nprint(jacobian(bad, torch.ones(2)))"
    )
    assert error.line == 4 and "called back by the Python API" in error.hint


def test_callbacks_nest_only_so_deep() -> None:
    source = (
        "import torch\nfrom torch.autograd.functional import jacobian\n"
        "def f(x):\n    return jacobian(f, x)\nf(torch.ones(1))"
    )
    with pytest.raises(LimitError, match="calls back"):
        run(source)


def test_chained_assignment_and_lambda() -> None:
    source = (
        "a = b = [1]\nb.append(2)\nprint(a, a is b)\n"
        "f = lambda x, y=2: x * y\nprint(f(3), f(3, y=4), (lambda: 'k')())\n"
        "print(sorted([3, 1, 2]), [(lambda v: v + 1)(i) for i in range(3)])"
    )
    assert run(source) == "[1, 2] True\n6 12 k\n[1, 2, 3] [1, 2, 3]\n"


def test_comprehension_variables_stay_in_the_comprehension() -> None:
    source = (
        "i = 'outer'\nsquares = [i * i for i in range(4)]\nprint(i, squares)\n"
        "def f(n):\n    k = 10\n    return [k + j for j in range(n)]\nprint(f(2))\n"
        "print([(a, b) for a, b in zip('xy', [1, 2]) if b > 1])"
    )
    assert run(source) == "outer [0, 1, 4, 9]\n[10, 11]\n[('y', 2)]\n"


def test_assert_main_guard_and_self_documenting_fstrings() -> None:
    source = (
        "assert 1 + 1 == 2\nif __name__ == '__main__':\n    print('main')\n"
        "x = 2.5\nprint(f'{x=} {x = :.2f} {x==2.5}')"
    )
    assert run(source) == "main\nx=2.5 x = 2.50 True\n"  # (CPython's output)
    _, error = failure("import torch\nx = torch.ones(2)\nassert x.sum() > 5, f'sum is {x.sum()}'")
    assert error.message == "AssertionError: sum is 2.0" and error.line == 3
    _, error = failure("assert []")
    assert error.message == "AssertionError"


def test_a_lambda_is_called_back_as_a_hook() -> None:
    import gradcalc

    if not hasattr(gradcalc.Tensor, "register_hook"):
        pytest.skip("Tensor.register_hook is not in this engine")
    source = (
        "import torch\nx = torch.tensor([1., 2.], requires_grad=True)\n"
        "h = x.register_hook(lambda g: g * 2)\n(x * 3).sum().backward()\nprint(x.grad)"
    )
    assert run(source) == "tensor([6., 6.])\n"


def test_python_arithmetic_is_not_counted_as_graph_operations() -> None:
    from gradcalc.limits import Limits

    limits = Limits(max_graph_nodes=1000, max_iterations=10_000)
    out: list[str] = []
    source = "s = 0\nfor i in range(3000):\n    s += i * 2 - 1\nprint(s)"
    Interpreter(program=True, limits=limits, write=out.append).execute(source)
    assert out == ["8994000\n"]
    with pytest.raises(LimitError, match="operations"):
        Interpreter(program=True, limits=limits, write=out.append).execute(
            "import torch\nx = torch.ones(1)\nfor i in range(3000):\n    x = x * 1"
        )
