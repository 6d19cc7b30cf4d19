"""W1's one-shot commands: what each runs, the answer it must print, and the row it counts in.

Every command is checked before it is timed (and its exit code at every
timed run), so a fast wrong answer cannot pass. Expected numbers come from
the same formula written in NumPy here: values directly, gradients,
Jacobians and Hessians by central finite differences, so the check needs no
hand-derived derivative and no second autograd engine. JSON output is
compared field by field; text output must contain the expected numbers in
order (a subsequence of the numbers it prints, each within the printed
precision), which holds for Rich tables, NumPy's array printing and graph
trees alike without parsing each layout.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Array = np.ndarray
Function = Callable[..., Any]

FLOORS = {
    "pass": "python -c pass",
    "numpy": "python -c 'import numpy'",
    "numpy+rich": "python -c 'import numpy, rich.console, rich.table'",
}
"""Floor key -> measure name. The code of each is in `floor_commands`."""

FLOOR_CODE = {
    "pass": "pass",
    "numpy": "import numpy",
    "numpy+rich": "import numpy, rich.console, rich.table",
}


@dataclass(frozen=True)
class Row:
    """One row of issue 12's table: the cases it gathers, their floor and limit."""

    title: str
    floor: str
    limit: float
    note: str = ""


ROWS: dict[str, Row] = {
    "poly text": Row("scalar polynomial, text", "numpy", 0.7),
    "poly json": Row("scalar polynomial, JSON", "numpy", 0.5),
    "trans text": Row("scalar transcendental, text", "numpy", 0.7),
    "trans json": Row("scalar transcendental, JSON", "numpy", 0.5),
    "program text": Row("scalar program @file (def/if/for/while), text", "numpy", 0.7),
    "program json": Row("scalar program @file, JSON", "numpy", 0.5, "issue's scalar-JSON limit"),
    "vector text": Row("vector formula, text", "numpy+rich", 1.2),
    "vector json": Row("vector formula, JSON", "numpy", 1.2),
    "matrix text": Row("matrix loss, text", "numpy+rich", 1.2),
    "matrix json": Row("matrix loss, JSON", "numpy", 1.2),
    "graph tree": Row("graph of a scalar formula, tree", "numpy", 1.0),
    "graph json": Row("graph --format json", "numpy", 1.0, "tree's limit"),
    "graph dot": Row("graph --format dot", "numpy", 1.0, "tree's limit"),
    "hessian text": Row("hessian of a small vector formula, text", "numpy+rich", 1.3),
    "hessian json": Row("hessian, JSON", "numpy+rich", 1.3, "issue's row has one floor"),
    "jacobian text": Row("jacobian of a small vector formula, text", "numpy+rich", 1.3),
    "jacobian json": Row("jacobian, JSON", "numpy+rich", 1.3, "issue's row has one floor"),
    "diff text": Row("diff (symbolic) of a scalar formula, text", "numpy", 0.7, "issue 14"),
    "diff json": Row("diff of a scalar formula, JSON", "numpy", 0.5, "issue 14"),
    "check text": Row("--check of a scalar formula, text", "numpy", 0.7, "scalar text limit"),
    "check json": Row("--check of a scalar formula, JSON", "numpy", 0.5, "scalar JSON limit"),
    "parse text": Row("parse error, text", "numpy", 0.6),
    "parse json": Row("parse error, JSON", "numpy", 0.6),
    "name text": Row("name error, text", "numpy", 0.6),
    "name json": Row("name error, JSON", "numpy", 0.6),
    "help": Row("--help", "numpy", 1.0),
    "functions text": Row("functions", "numpy", 1.0),
    "functions json": Row("functions --json", "numpy", 1.0),
    "repl prompt": Row("REPL, start to first prompt (pty)", "numpy", 1.5),
}


@dataclass
class Expected:
    """What a grad/jacobian/hessian command must print (gradients of the sum when not scalar)."""

    value: Array
    gradients: dict[str, Array]
    jacobian: dict[str, Array] | None = None
    hessian: dict[str, dict[str, Array]] | None = None


@dataclass
class Case:
    """One timed command: gradcalc's arguments, its row, and the check of its output."""

    row: str
    label: str
    arguments: list[str]
    check: Callable[[str, str], None]
    """check(stdout, stderr) raises AssertionError unless the output is right."""
    returncode: int = 0
    kind: str = "process"
    """"process": run the console script; "repl-prompt"/"repl-answer": drive the REPL in a pty."""

    @property
    def name(self) -> str:
        return f"{self.row}: {self.label}"


# ---------------------------------------------------------------------- references


def literal(text: str) -> Array:
    return np.asarray(ast.literal_eval(text), dtype=np.float64)


def _shift(inputs: dict[str, Array], name: str, index: tuple[int, ...], step: float):
    moved = {k: v.copy() for k, v in inputs.items()}
    moved[name][index] += step
    return moved


def numeric_jacobian(f: Function, inputs: dict[str, Array], name: str, h: float = 1e-6) -> Array:
    """d f / d inputs[name], shape f.shape + input.shape, by central differences."""
    out_shape = np.shape(f(**inputs))
    x = inputs[name]
    result = np.zeros(out_shape + x.shape)
    for index in np.ndindex(x.shape):
        up = np.asarray(f(**_shift(inputs, name, index, h)))
        down = np.asarray(f(**_shift(inputs, name, index, -h)))
        result[(..., *index)] = (up - down) / (2 * h)
    return result


def reference(
    f: Function, inputs: dict[str, Array], *, jacobian: bool = False, hessian: bool = False
) -> Expected:
    """The value of f, the gradients of its sum, and optionally its Jacobians or Hessians."""

    def total(**values: Array) -> Array:
        return np.sum(f(**values))

    gradients = {name: numeric_jacobian(total, inputs, name) for name in inputs}
    found = Expected(np.asarray(f(**inputs), dtype=np.float64), gradients)
    if jacobian:
        found.jacobian = {name: numeric_jacobian(f, inputs, name) for name in inputs}
    if hessian:

        def gradient_of(name: str) -> Function:
            return lambda **values: numeric_jacobian(total, values, name, h=1e-5)

        found.hessian = {
            a: {b: numeric_jacobian(gradient_of(a), inputs, b, h=1e-4) for b in inputs}
            for a in inputs
        }
    return found


# ---------------------------------------------------------------------- checks

NUMBER = re.compile(r"(?<![\w.])-?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|(?<![\w.])-?(?:nan|inf)\b")


def numbers_in(text: str) -> list[float]:
    """Every number printed (not the digits inside names such as float64 or AddBackward0)."""
    return [float(m) for m in NUMBER.findall(text.replace("\u2212", "-"))]


def close(got: Any, want: Array, rtol: float, atol: float = 1e-8) -> bool:
    got_array = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got_array.shape != want.shape:
        return False
    scale = float(np.max(np.abs(want), initial=0.0))
    return bool(np.all(np.abs(got_array - want) <= rtol * scale + atol))


def expect_in_order(text: str, wanted: Sequence[tuple[float, float]], what: str) -> None:
    """Each (number, tolerance) appears among text's numbers, in order (greedy subsequence)."""
    found = numbers_in(text)
    position = 0
    for number, tolerance in wanted:
        while position < len(found) and abs(found[position] - number) > tolerance:
            position += 1
        if position == len(found):
            raise AssertionError(f"{what}: {number!r} not printed where expected in {text[:800]!r}")
        position += 1


def _flat(array: Array, rtol: float, atol: float = 1e-8) -> list[tuple[float, float]]:
    array = np.asarray(array, dtype=np.float64)
    scale = float(np.max(np.abs(array), initial=0.0))
    return [(float(x), rtol * scale + atol) for x in array.ravel()]


def text_check(expected: Expected, names: Sequence[str], checked: bool = False):
    """Text output: the value, each gradient, then each Jacobian/Hessian block, in order."""

    def check(stdout: str, stderr: str) -> None:
        wanted = _flat(expected.value, 1e-6)
        for name in names:
            if not re.search(rf"(?m)^\s*{re.escape(name)}\s", stdout):
                raise AssertionError(f"no row for {name!r} in {stdout[:800]!r}")
            wanted += _flat(expected.gradients[name], 1e-6)
        if expected.hessian:
            for a in names:
                for b in names:
                    wanted += _flat(expected.hessian[a][b], 1e-5)
        if expected.jacobian:
            for name in names:
                wanted += _flat(expected.jacobian[name], 1e-6)
        expect_in_order(stdout, wanted, "text output")
        if checked and stdout.count(" ok") < len(names):
            raise AssertionError(f"--check did not say ok for every variable: {stdout[:800]!r}")

    return check


def json_check(expected: Expected, names: Sequence[str], checked: bool = False):
    """--json output: one object whose value, gradients (and blocks) match the reference."""

    def check(stdout: str, stderr: str) -> None:
        answer = json.loads(stdout)
        problems = []
        if not close(answer.get("value"), expected.value, 1e-9, 1e-12):
            problems.append("value")
        gradients = answer.get("gradients") or {}
        if list(gradients) != list(names):
            problems.append(f"gradient names {list(gradients)}")
        problems += [
            f"gradient {n}"
            for n in names
            if n in gradients and not close(gradients[n], expected.gradients[n], 1e-6)
        ]
        if expected.jacobian is not None:
            blocks = answer.get("jacobian") or {}
            problems += [
                f"jacobian {n}"
                for n in names
                if not close(blocks.get(n), expected.jacobian[n], 1e-6)
            ]
        if expected.hessian is not None:
            blocks = answer.get("hessian") or {}
            problems += [
                f"hessian {a},{b}"
                for a in names
                for b in names
                if not close((blocks.get(a) or {}).get(b), expected.hessian[a][b], 1e-5)
            ]
        if checked:
            errors = answer.get("check") or {}
            if sorted(errors) != sorted(names) or not all(e < 1e-6 for e in errors.values()):
                problems.append(f"check {errors}")
        if problems:
            raise AssertionError(f"wrong {', '.join(problems)} in {stdout[:800]!r}")

    return check


LEAF = re.compile(
    r"(\w+) \(AccumulateGrad\)(?:\\n|\s)+value:? (\S+?)(?:\\n|\s)+grad:? ([^\s\"\\]+)"
)


def graph_check(expected: Expected, names: Sequence[str], style: str):
    """graph output: the root's value, and each leaf's value and gradient."""

    def check(stdout: str, stderr: str) -> None:
        if style == "json":
            graph = json.loads(stdout)
            nodes = {node["id"]: node for node in graph["nodes"]}
            root = nodes[graph["root"]]["value"]
            leaves = {
                n["name"]: (n["value"], n["grad"])
                for n in nodes.values()
                if n["op"] == "AccumulateGrad"
            }
            rtol = 1e-9
        else:
            if style == "dot" and not stdout.lstrip().startswith("digraph"):
                raise AssertionError(f"not DOT: {stdout[:200]!r}")
            first = re.search(r"value:? (\S+?)(?:\\n|\s)", stdout)
            root = float(first.group(1)) if first else None
            leaves = {m[0]: (float(m[1]), float(m[2])) for m in LEAF.findall(stdout)}
            rtol = 1e-5  # printed with 6 significant digits
        if root is None or not close(root, expected.value, rtol):
            raise AssertionError(f"root value {root} != {expected.value} in {stdout[:800]!r}")
        if sorted(leaves) != sorted(names):
            raise AssertionError(f"leaves {sorted(leaves)} in {stdout[:800]!r}")
        # The inputs are not in Expected: the gradients are what matter.
        for name in names:
            if not close(leaves[name][1], expected.gradients[name], max(rtol, 1e-6)):
                raise AssertionError(f"leaf {name} grad {leaves[name][1]} in {stdout[:800]!r}")

    return check


def error_check(kind: str, column: int, culprit: str, json_mode: bool):
    """An error: its kind, position and culprit, on stderr (text) or as JSON on stdout."""

    def check(stdout: str, stderr: str) -> None:
        if json_mode:
            error = json.loads(stdout).get("error") or {}
            found = (error.get("type"), error.get("line"), error.get("column"))
            right = found == (kind, 1, column) and culprit in error.get("message", "")
        else:
            right = (
                stderr.startswith(f"{kind}: ")
                and f"(line 1, column {column})" in stderr
                and culprit in stderr
                and "^" in stderr
            )
        if not right:
            raise AssertionError(
                f"expected a {kind} at column {column} naming {culprit!r}, got "
                f"{(stdout if json_mode else stderr)[:500]!r}"
            )

    return check


_DERIVATIVE_NAMESPACE = {
    "exp": np.exp,
    "log": np.log,
    "log1p": np.log1p,
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "sqrt": np.sqrt,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
}
"""What the printed derivatives of `DIFFS` call, in NumPy (a derivative is checked by
evaluating it at the point and comparing with finite differences)."""


def diff_check(expected: Expected, point: dict[str, Array], json_mode: bool):
    """Symbolic derivatives, one per name, whose values at ``point`` are the gradients."""

    def check(stdout: str, stderr: str) -> None:
        if json_mode:
            found = json.loads(stdout).get("derivatives") or {}
        else:
            found = dict(
                line[len("d/d") :].split(" = ", 1)
                for line in stdout.splitlines()
                if line.startswith("d/d")
            )
        if set(found) != set(expected.gradients):
            raise AssertionError(f"derivatives for {sorted(found)}: {stdout[:300]!r}")
        for name, text in found.items():
            value = eval(text.replace("^", "**"), {**_DERIVATIVE_NAMESPACE}, dict(point))
            if not close(value, expected.gradients[name], 1e-6, 1e-6):
                raise AssertionError(
                    f"d/d{name} = {text} is {value} at the point, not {expected.gradients[name]}"
                )

    return check


BUILTINS_SAMPLE = ("exp", "log", "sin", "tanh", "relu", "softmax", "logsumexp", "matmul")


def help_check(stdout: str, stderr: str) -> None:
    if not stdout.startswith("Usage: gradcalc") or "hessian" not in stdout:
        raise AssertionError(f"not gradcalc's help: {stdout[:300]!r}")


def functions_check(json_mode: bool):
    def check(stdout: str, stderr: str) -> None:
        if json_mode:
            names = {entry["name"] for entry in json.loads(stdout)}
            missing = [n for n in BUILTINS_SAMPLE if n not in names]
        else:  # a row starts with the name, or with its signature `name(...)`
            missing = [n for n in BUILTINS_SAMPLE if not re.search(rf"(?m)^\s*{n}\b", stdout)]
        if missing:
            raise AssertionError(f"functions lists no {missing}: {stdout[:300]!r}")

    return check


# ---------------------------------------------------------------------- the formulas


def sigmoid(x: Array) -> Array:
    return 1 / (1 + np.exp(-x))


def softplus(x: Array) -> Array:
    return np.log1p(np.exp(x))


def softmax(x: Array, axis: int = -1) -> Array:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def logsumexp(x: Array) -> Array:
    return np.log(np.sum(np.exp(x)))


@dataclass
class Formula:
    """A formula (or @program), its variables as typed on the command line, and NumPy's version."""

    label: str
    text: str
    variables: dict[str, str]
    numpy: Function
    file_text: str | None = None
    """A program: written to a file and passed as @path; `text` is then the file's name."""
    extra: list[str] = field(default_factory=list)

    def inputs(self) -> dict[str, Array]:
        return {name: literal(value) for name, value in self.variables.items()}

    def arguments(self, workdir: Path) -> list[str]:
        if self.file_text is not None:
            path = workdir / self.text
            path.write_text(self.file_text, encoding="utf-8")
            first = f"@{path}"
        else:
            first = self.text
        return [first, *(f"{k}={v}" for k, v in self.variables.items()), *self.extra]


SEED = Formula("3*a**3 - b**2", "3*a**3 - b**2", {"a": "2", "b": "6"}, lambda a, b: 3 * a**3 - b**2)

POLYNOMIALS = [
    SEED,
    Formula(
        "a**2*b + 4*a*b - b**3/3 + 7",
        "a**2*b + 4*a*b - b**3/3 + 7",
        {"a": "1.5", "b": "-2"},
        lambda a, b: a**2 * b + 4 * a * b - b**3 / 3 + 7,
    ),
    Formula(
        "(a - 2*b)**4 + a*b*c - c**2 (3 vars)",
        "(a - 2*b)**4 + a*b*c - c**2",
        {"a": "0.5", "b": "1.25", "c": "3"},
        lambda a, b, c: (a - 2 * b) ** 4 + a * b * c - c**2,
    ),
]

TRANSCENDENTAL = [
    Formula(
        "exp·sin + tanh - log + relu",
        "exp(a)*sin(b) + tanh(a*b) - log(b) + relu(a - b)",
        {"a": "2", "b": "1.5"},
        lambda a, b: np.exp(a) * np.sin(b) + np.tanh(a * b) - np.log(b) + np.maximum(a - b, 0),
    ),
    Formula(
        "sigmoid·cos + sqrt - log1p(exp)",
        "sigmoid(a)*cos(b) + sqrt(a + b) - log1p(exp(-a))",
        {"a": "0.7", "b": "2.2"},
        lambda a, b: sigmoid(a) * np.cos(b) + np.sqrt(a + b) - np.log1p(np.exp(-a)),
    ),
    Formula(
        "softplus·tan + abs + exp(-a**2)",
        "softplus(a)*tan(b) + abs(a - b) + exp(-a**2)",
        {"a": "-0.3", "b": "0.9"},
        lambda a, b: softplus(a) * np.tan(b) + np.abs(a - b) + np.exp(-(a**2)),
    ),
]

PROGRAM_LOOPS = """\
# a def with a for loop and an if/else, called twice
def f(u, n):
    acc = u
    for i in range(n):
        if i % 2 == 0:
            acc = acc * u + 1
        else:
            acc = sin(acc) + u
    return acc

y = f(a, 4) + b * f(b, 3)
"""


def _program_loops(a: Array, b: Array) -> Array:
    def f(u: Array, n: int) -> Array:
        acc = u
        for i in range(n):
            acc = acc * u + 1 if i % 2 == 0 else np.sin(acc) + u
        return acc

    return f(a, 4) + b * f(b, 3)


PROGRAM_NEWTON = """\
# Newton's square root in a def, called from a while loop with if/elif/else
def newton_sqrt(v, steps):
    r = v
    for i in range(steps):
        r = 0.5 * (r + v / r)
    return r

k = 0
total = 0
while k < 3:
    if k == 1:
        total = total + newton_sqrt(a * b, 5)
    elif k == 2:
        total = total * exp(-b / 4)
    else:
        total = total + tanh(a - k * b)
    k = k + 1
total
"""


def _program_newton(a: Array, b: Array) -> Array:
    def newton_sqrt(v: Array, steps: int) -> Array:
        r = v
        for _ in range(steps):
            r = 0.5 * (r + v / r)
        return r

    total = np.float64(0.0)
    for k in range(3):
        if k == 1:
            total = total + newton_sqrt(a * b, 5)
        elif k == 2:
            total = total * np.exp(-b / 4)
        else:
            total = total + np.tanh(a - k * b)
    return total


PROGRAMS = [
    Formula(
        "prog_loops.gc", "prog_loops.gc", {"a": "0.5", "b": "1.5"}, _program_loops, PROGRAM_LOOPS
    ),
    Formula(
        "prog_newton.gc",
        "prog_newton.gc",
        {"a": "0.8", "b": "2.5"},
        _program_newton,
        PROGRAM_NEWTON,
    ),
]

VECTORS = [
    Formula(
        "logsumexp(x*w) + norm(x - w)",
        "logsumexp(x*w) + norm(x - w)",
        {"x": "[1, 2, 3, 4]", "w": "[0.5, -1, 2, 0.25]"},
        lambda x, w: logsumexp(x * w) + np.sqrt(np.sum((x - w) ** 2)),
    ),
    Formula(
        "sum(softmax(x) * t)",
        "sum(softmax(x) * t)",
        {"x": "[1, 2, 3]", "t": "[0.5, -1, 2]"},
        lambda x, t: np.sum(softmax(x) * t),
    ),
    Formula(
        "mean(tanh(x) * exp(-x**2)) + max(x)",
        "mean(tanh(x) * exp(-x**2)) + max(x)",
        {"x": "[0.3, -1.2, 0.8, 2.5, -0.4]"},
        lambda x: np.mean(np.tanh(x) * np.exp(-(x**2))) + np.max(x),
    ),
]

MATRICES = [
    Formula(
        "mean((x@w - t)**2), 2x3 @ 3x1",
        "mean((x@w - t)**2)",
        {"x": "[[0, 1, 2], [3, 4, 5]]", "w": "[[1], [1], [1]]", "t": "[[2], [3]]"},
        lambda x, w, t: np.mean((x @ w - t) ** 2),
    ),
    Formula(
        "mean((tanh(x@w1)@w2 - t)**2), 3x2 MLP",
        "mean((tanh(x@w1)@w2 - t)**2)",
        {
            "x": "[[1, 2], [3, 4], [5, 6]]",
            "w1": "[[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]]",
            "w2": "[[1], [-1], [0.5]]",
            "t": "[[1], [0], [2]]",
        },
        lambda x, w1, w2, t: np.mean((np.tanh(x @ w1) @ w2 - t) ** 2),
    ),
    Formula(
        "cross-entropy of softmax(x@w, axis=1)",
        "-mean(sum(t * log(softmax(x @ w, axis=1)), axis=1))",
        {
            "x": "[[1, 0.5], [-0.3, 2], [0.7, -1]]",
            "w": "[[0.2, -0.1, 0.4], [0.3, 0.8, -0.5]]",
            "t": "[[1, 0, 0], [0, 0, 1], [0, 1, 0]]",
        },
        lambda x, w, t: -np.mean(np.sum(t * np.log(softmax(x @ w, axis=1)), axis=1)),
    ),
]

GRAPHS = [
    Formula("x*x + log(z)", "x*x + log(z)", {"x": "5", "z": "3"}, lambda x, z: x * x + np.log(z)),
    Formula(
        "tanh(a*b) + exp(a)",
        "tanh(a*b) + exp(a)",
        {"a": "0.5", "b": "-1.5"},
        lambda a, b: np.tanh(a * b) + np.exp(a),
    ),
]

HESSIANS = [
    Formula("sum(x**4)", "sum(x**4)", {"x": "[1, 2]"}, lambda x: np.sum(x**4)),
    Formula(
        "logsumexp(x) + x[0]*x[1]**2",
        "logsumexp(x) + x[0]*x[1]**2",
        {"x": "[0.5, 1, 2]"},
        lambda x: logsumexp(x) + x[0] * x[1] ** 2,
    ),
]

JACOBIANS = [
    Formula("softmax(x)", "softmax(x)", {"x": "[1, 2, 3]"}, softmax),
    Formula(
        "tanh(w @ x)",
        "tanh(w @ x)",
        {"w": "[[1, 2], [3, 4]]", "x": "[0.1, -0.2]"},
        lambda w, x: np.tanh(w @ x),
    ),
]

ERRORS = {
    "parse": (
        "ParseError",
        [("3*a +", {"a": "2"}, 6, "+"), ("sin(a + b", {"a": "1", "b": "2"}, 4, "(")],
    ),
    "name": (
        "NameError",
        [("3*a + c", {"a": "2"}, 7, "'c'"), ("sin(q) * a", {"a": "1"}, 5, "'q'")],
    ),
}
"""Row -> (error kind, [(formula, variables, column, what the message names)])."""


def _formula_cases(
    row: str, formulas: Sequence[Formula], workdir: Path, *, modes=("text", "json"), **options
) -> list[Case]:
    cases = []
    for formula in formulas:
        expected = reference(formula.numpy, formula.inputs(), **options)
        names = list(formula.variables)
        arguments = formula.arguments(workdir)
        if "text" in modes:
            cases.append(Case(f"{row} text", formula.label, arguments, text_check(expected, names)))
        if "json" in modes:
            cases.append(
                Case(
                    f"{row} json",
                    formula.label,
                    [*arguments, "--json"],
                    json_check(expected, names),
                )
            )
    return cases


def cases(workdir: Path) -> list[Case]:
    """Every W1 command of issue 12's table, grouped by row (program files go in workdir)."""
    found = []
    found += _formula_cases("poly", POLYNOMIALS, workdir)
    found += _formula_cases("trans", TRANSCENDENTAL, workdir)
    found += _formula_cases("program", PROGRAMS, workdir)
    found += _formula_cases("vector", VECTORS, workdir)
    found += _formula_cases("matrix", MATRICES, workdir)
    for formula in GRAPHS:
        expected = reference(formula.numpy, formula.inputs())
        names = list(formula.variables)
        arguments = ["graph", *formula.arguments(workdir)]
        found += [
            Case("graph tree", formula.label, arguments, graph_check(expected, names, "tree")),
            Case(
                "graph json",
                formula.label,
                [*arguments, "--format", "json"],
                graph_check(expected, names, "json"),
            ),
            Case(
                "graph dot",
                formula.label,
                [*arguments, "--format", "dot"],
                graph_check(expected, names, "dot"),
            ),
        ]
    for command, formulas, option in (
        ("hessian", HESSIANS, "hessian"),
        ("jacobian", JACOBIANS, "jacobian"),
    ):
        for case in _formula_cases(command, formulas, workdir, **{option: True}):
            case.arguments = [command, *case.arguments]
            found.append(case)
    for formula in (*POLYNOMIALS[:2], *TRANSCENDENTAL[:2]):
        expected = reference(formula.numpy, formula.inputs())
        arguments = ["diff", *formula.arguments(workdir)]
        found += [
            Case(
                "diff text", formula.label, arguments, diff_check(expected, formula.inputs(), False)
            ),
            Case(
                "diff json",
                formula.label,
                [*arguments, "--json"],
                diff_check(expected, formula.inputs(), True),
            ),
        ]
    for formula in (SEED, TRANSCENDENTAL[0]):
        expected = reference(formula.numpy, formula.inputs())
        names = list(formula.variables)
        arguments = [*formula.arguments(workdir), "--check"]
        found += [
            Case("check text", formula.label, arguments, text_check(expected, names, True)),
            Case(
                "check json",
                formula.label,
                [*arguments, "--json"],
                json_check(expected, names, True),
            ),
        ]
    for row, (kind, errors) in ERRORS.items():
        for text, variables, column, culprit in errors:
            arguments = [text, *(f"{k}={v}" for k, v in variables.items())]
            found += [
                Case(
                    f"{row} text",
                    text,
                    arguments,
                    error_check(kind, column, culprit, False),
                    returncode=1,
                ),
                Case(
                    f"{row} json",
                    text,
                    [*arguments, "--json"],
                    error_check(kind, column, culprit, True),
                    returncode=1,
                ),
            ]
    found += [
        Case("help", "gradcalc --help", ["--help"], help_check),
        Case("functions text", "gradcalc functions", ["functions"], functions_check(False)),
        Case(
            "functions json",
            "gradcalc functions --json",
            ["functions", "--json"],
            functions_check(True),
        ),
        Case("repl prompt", "gradcalc repl", ["repl"], lambda out, err: None, kind="repl-prompt"),
        Case(
            "repl answer",
            "gradcalc repl, first answer",
            ["repl"],
            lambda out, err: None,
            kind="repl-answer",
        ),
    ]
    return found


SEED_TEXT = "poly text: 3*a**3 - b**2"
SEED_JSON = "poly json: 3*a**3 - b**2"
