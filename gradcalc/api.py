"""The Python API every front end shares: run a formula, differentiate it, encode the result.

The CLI, the batch worker and scripts call :func:`evaluate` (and :func:`jacobian`,
:func:`hessian`), get one :class:`Result` back, and either render it with Rich
(``gradcalc.cli``) or turn it into strict JSON with :func:`result_to_json`.
Nothing here imports Rich or Typer, so a batch worker or a Dask task pays only
for the engine, the parser and the interpreter.

:func:`run_request` and :func:`run_line` are the per-request functions of
``gradcalc batch``: plain, picklable, and they never raise, so any map-style
engine (``concurrent.futures``, ``multiprocessing``, Dask, Ray, Spark) can
apply them to JSON Lines as they are.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import json
import math
import operator
import os
import re
import sys
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence

from gradcalc import _numpy
from gradcalc import limits as budgets
from gradcalc.errors import (
    FormulaError,
    FormulaTypeError,
    FormulaValueError,
    GradError,
    LimitError,
    ShapeError,
    UnknownNameError,
)
from gradcalc.jsonio import (  # re-exported: the JSON encoding front ends use
    SCHEMA_VERSION,
    all_finite,
    dumps,
    error_to_json,
    graph_to_json,
    result_to_json,
    tensor_to_json,
    value_notes,
    value_to_json,
    variables_to_json,
)
from gradcalc.limits import BATCH_LIMITS, DEFAULT_LIMITS, Limits

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from gradcalc.graph import Graph
    from gradcalc.interpreter import Interpreter, Outcome
    from gradcalc.symbolic import Derivatives

np = _numpy.bind(globals())
"""NumPy, imported at first use: work on the engine's float backend never needs it."""


class _Engine:
    """The engine's modules and names a request uses, imported at the first request (not
    with this module: a syntax error or ``--help`` pays for no engine), then read as
    attributes: ``from x import y`` inside a function costs ~1 µs a call, and a batch
    request of a small formula made a dozen of them."""

    __slots__ = ("Interpreter", "Tensor", "tensor")

    def __init__(self) -> None:
        from gradcalc import _tensor
        from gradcalc.interpreter import Interpreter

        self.Interpreter = Interpreter
        self.Tensor = _tensor.Tensor
        self.tensor = _tensor


@functools.cache
def _engine() -> _Engine:
    """The engine's names (see `_Engine`), imported on the first call."""
    return _Engine()


__all__ = [
    "CHECK_TOLERANCE",
    "SCHEMA_VERSION",
    "Result",
    "derivatives",
    "derivatives_in",
    "derivatives_json",
    "differentiate",
    "dumps",
    "error_to_json",
    "evaluate",
    "evaluate_json",
    "execute",
    "graph_to_json",
    "hessian",
    "interpreter",
    "jacobian",
    "result_to_json",
    "run_block",
    "run_line",
    "run_lines",
    "run_request",
    "split_names",
    "tensor_to_json",
    "value_to_json",
    "variables_to_json",
]

DTYPES = ("float64", "float32")
CHECK_TOLERANCE = 1e-4
"""Largest relative error (magnitudes below 1 compared absolutely) ``check`` accepts by
default (``check_tolerance``, CLI ``--check-tolerance``): float64 central differences
with a step of 1e-6 agree with a correct gradient to ~1e-8 on smooth formulas."""
CHECK_MAX_ENTRIES = 1000
"""Gradient entries compared by finite differences per result; larger gradients are sampled."""

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
"""A binding's text that is a plain number (it skips the interpreter's parser)."""
_REQUEST_KEYS = frozenset(
    {
        "id",
        "formula",
        "vars",
        "wrt",
        "of",
        "grad_output",
        "dtype",
        "seed",
        "check",
        "check_tolerance",
        "graph",
    }
)


_SURFACE: contextvars.ContextVar[str] = contextvars.ContextVar("surface", default="cli")
"""Where the request came from ("cli", "batch" while :func:`run_request` runs, "repl"
for :func:`interpreter`'s sessions): hints name what the user can change there."""
_UNBOUND_HINTS = {
    "cli": "bind it on the command line: {name}=2, or assign it first: {name} = 2",
    "batch": 'add it to the request\'s vars ("vars": {{"{name}": 2}}), or assign it first: '
    "{name} = 2",
    "repl": "assign it first: {name} = 2",
}


def _option(name: str) -> str:
    """An option as the current surface spells it: ``--grad-output``, or in batch the
    request's key ``'grad_output'``."""
    if _SURFACE.get() == "batch":
        return f"request '{name}'"
    return "--" + name.replace("_", "-")


class Result:
    """What a run produced: the output value, its gradients, and what the reader should know.

    A plain slotted class, not a dataclass: importing ``dataclasses`` (and ``inspect``
    with it) cost ~5 ms of every one-shot command's start-up.
    """

    _FIELDS = (
        "value",
        "dtype",
        "gradients",
        "unused",
        "summed",
        "notes",
        "check",
        "check_tolerance",
        "graph",
        "output_name",
        "jacobian",
        "hessian",
    )
    __slots__ = _FIELDS

    def __init__(
        self,
        value: np.ndarray,
        dtype: str,
        gradients: dict[str, np.ndarray] | None = None,
        unused: list[str] | None = None,
        summed: bool = False,
        notes: list[str] | None = None,
        check: dict[str, float | None] | None = None,
        check_tolerance: float = CHECK_TOLERANCE,
        graph: Graph | None = None,
        output_name: str | None = None,
        jacobian: dict[str, np.ndarray] | None = None,
        hessian: dict[str, dict[str, np.ndarray]] | None = None,
    ) -> None:
        self.value = value
        self.dtype = dtype
        self.gradients = {} if gradients is None else gradients
        self.unused = [] if unused is None else unused
        self.summed = summed
        self.notes = [] if notes is None else notes
        self.check = check
        self.check_tolerance = check_tolerance
        self.graph = graph
        self.output_name = output_name
        self.jacobian = jacobian
        self.hessian = hessian

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"Result({fields})"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    @property
    def check_passed(self) -> bool | None:
        """Whether every checked gradient is within ``check_tolerance`` of finite
        differences (names the formula defines are not checked); None without a check."""
        if self.check is None:
            return None
        return all(err is None or err <= self.check_tolerance for err in self.check.values())


# ---------------------------------------------------------------- evaluation


class _Run(namedtuple("_Run", "interp leaves output value output_name")):
    """One execution of the program: the interpreter, the bound leaves (name -> Tensor),
    the chosen output (a Tensor, or None when it is not a tensor), its value and name."""

    __slots__ = ()

    interp: Any
    leaves: dict[str, Any]
    output: Any
    value: np.ndarray
    output_name: str | None


def _releases_buffers(entry: Callable[..., Result]) -> Callable[..., Result]:
    """A request is a unit of work: once it returned (its graph and scratch
    tensors gone), the engine's free step buffers go back to malloc."""

    @functools.wraps(entry)
    def run(*args: Any, **kwargs: Any) -> Result:
        try:
            return entry(*args, **kwargs)
        finally:
            _empty_cache()

    return run


def _empty_cache() -> None:
    """The engine's free step buffers back to malloc (see `_releases_buffers`)."""
    recycle = sys.modules.get("gradcalc._recycle")
    if recycle is not None:  # (never imported: it holds no buffer)
        recycle.empty_cache()


def evaluate(
    formula: str,
    bindings: Mapping[str, Any] | None = None,
    wrt: Sequence[str] | None = None,
    of: str | None = None,
    grad_output: Any = None,
    dtype: str = "float64",
    seed: int | None = None,
    check: bool = False,
    graph: bool = False,
    limits: Limits | None = None,
    *,
    retain_graph: bool = False,
    check_tolerance: float | None = None,
) -> Result:
    """Run ``formula`` with ``bindings`` as differentiable leaves; return its value and gradients.

    Gradients are reported for ``wrt`` (bound variables or names the program
    defines), by default for every bound variable (or, with none bound, every
    leaf the program creates). A non-scalar output is differentiated as its sum unless
    ``grad_output`` gives the seed. ``check`` compares them with finite
    differences (``result.check_passed``: within ``check_tolerance``, default
    :data:`CHECK_TOLERANCE`). ``retain_graph`` keeps the saved values
    of ``result.graph``'s nodes (explain mode reads them). Raises
    ``FormulaError`` subclasses only.
    """
    dtype = _check_dtype(dtype)
    limits = limits or DEFAULT_LIMITS
    tolerance = _check_tolerance(check_tolerance)
    with budgets.running(limits, alarm=True):
        try:
            return _evaluate(
                formula, bindings, wrt, of, grad_output, dtype, seed, check, graph, limits,
                retain_graph, tolerance,
            )  # fmt: skip
        finally:
            _empty_cache()  # (as `_releases_buffers` does: once the run's frame is gone)


def _check_tolerance(value: Any) -> float:
    """``check_tolerance`` as given (a non-negative number), or the default."""
    if value is None:
        return CHECK_TOLERANCE
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise FormulaValueError(
            f"check_tolerance must be a non-negative number, not {value!r}",
            hint=f"the largest relative error {_option('check')} accepts; default "
            f"{CHECK_TOLERANCE:g}",
        )
    return float(value)


def _evaluate(
    formula: str,
    bindings: Mapping[str, Any] | None,
    wrt: Sequence[str] | None,
    of: str | None,
    grad_output: Any,
    dtype: str,
    seed: int | None,
    check: bool,
    graph: bool,
    limits: Limits,
    retain_graph: bool = False,
    check_tolerance: float = CHECK_TOLERANCE,
    program: Any = None,
) -> Result:
    """:func:`evaluate` on the engine (arguments checked; ``program`` is ``formula``
    parsed, if the caller has it). The caller releases the engine's buffers after it
    (`_empty_cache`): a wrapper's packing of its dozen arguments cost more."""
    if check and seed is None:
        # Finite differences re-run the program: they must see the same random draws.
        seed = int.from_bytes(os.urandom(4)) >> 1
    if (
        wrt is None
        and of is None
        and grad_output is None
        and seed is None
        and not (check or graph or retain_graph)
    ):
        result = _replayed(formula, bindings, dtype, limits)
        if result is not None:
            return result
    values = _binding_values(bindings)
    if graph:
        with _recorder():
            result, run, seed_array = _differentiate(
                formula, values, wrt, of, grad_output, dtype, seed, limits, retain_graph, program
            )
    else:
        result, run, seed_array = _differentiate(
            formula, values, wrt, of, grad_output, dtype, seed, limits, retain_graph, program
        )
    if check:
        result.check_tolerance = check_tolerance
        base = {name: _check_point(leaf) for name, leaf in run.leaves.items()}
        result.check = _finite_difference_check(formula, base, result, of, seed_array, seed, limits)
        _note_check(result)
    if graph:
        from gradcalc.graph import build_graph

        result.graph = build_graph(run.output, _named_tensors(run), result.gradients)
    return result


def evaluate_json(
    formula: str,
    bindings: Mapping[str, Any] | None = None,
    wrt: Sequence[str] | None = None,
    of: str | None = None,
    grad_output: Any = None,
    dtype: str = "float64",
    seed: int | None = None,
    check: bool = False,
    graph: bool = False,
    limits: Limits | None = None,
    *,
    check_tolerance: float | None = None,
) -> dict:
    """``result_to_json(evaluate(...))``, NumPy's floating-point warnings silenced.

    What ``--json`` and ``gradcalc batch`` write. All-scalar float64 work runs on the
    engine's float backend and imports no NumPy. Raises ``FormulaError`` subclasses only.
    """
    dtype = _check_dtype(dtype)
    limits = limits or DEFAULT_LIMITS
    tolerance = _check_tolerance(check_tolerance)
    program = _checked_program(formula, limits)  # a syntax error is reported before NumPy loads
    with _numpy.errstate(), budgets.running(limits, alarm=True):
        try:
            result = _evaluate(
                formula,
                bindings,
                wrt,
                of,
                grad_output,
                dtype,
                seed,
                check,
                graph,
                limits,
                False,
                tolerance,
                program,
            )
        finally:
            _empty_cache()  # (as `_releases_buffers` does: once the run's frame is gone)
        return result_to_json(result)


@_releases_buffers
def jacobian(
    formula: str,
    bindings: Mapping[str, Any] | None = None,
    wrt: Sequence[str] | None = None,
    of: str | None = None,
    dtype: str = "float64",
    seed: int | None = None,
    limits: Limits | None = None,
) -> Result:
    """Like :func:`evaluate`, plus ``result.jacobian[name]`` of shape ``output.shape + name.shape``.

    Built row by row: one vector-Jacobian product per output element (PyTorch's layout).
    """
    dtype = _check_dtype(dtype)
    limits = limits or DEFAULT_LIMITS
    with budgets.running(limits, alarm=True):
        return _jacobian(formula, bindings, wrt, of, dtype, seed, limits)


def _jacobian(
    formula: str,
    bindings: Mapping[str, Any] | None,
    wrt: Sequence[str] | None,
    of: str | None,
    dtype: str,
    seed: int | None,
    limits: Limits,
) -> Result:
    values = _binding_values(bindings)
    result, run, _ = _differentiate(
        formula, values, wrt, of, None, dtype, seed, limits, retain_graph=True
    )
    targets = _targets(run, wrt)
    result.jacobian = {}
    if run.output is None or not _requires_grad(run.output):
        for name, tensor in targets:
            result.jacobian[name] = np.zeros(run.value.shape + _shape_of(tensor), dtype=dtype)
        return result
    _check_size(run.value.size * sum(_size_of(t) for _, t in targets), "the Jacobian", limits)
    rows = _vjp_rows(run.output, [t for _, t in targets], dtype, create_graph=False)
    for index, (name, tensor) in enumerate(targets):
        block = np.stack([row[index] for row in rows]) if rows else np.zeros((0,))
        result.jacobian[name] = block.reshape(run.value.shape + _shape_of(tensor))
    return result


@_releases_buffers
def hessian(
    formula: str,
    bindings: Mapping[str, Any] | None = None,
    wrt: Sequence[str] | None = None,
    of: str | None = None,
    dtype: str = "float64",
    seed: int | None = None,
    limits: Limits | None = None,
) -> Result:
    """Like :func:`evaluate`, plus ``result.hessian[a][b]`` of shape ``a.shape + b.shape``.

    The output must be a scalar. Second derivatives are gradients of the
    gradient (recorded with ``create_graph=True``), one row per gradient entry.
    """
    dtype = _check_dtype(dtype)
    limits = limits or DEFAULT_LIMITS
    with budgets.running(limits, alarm=True):
        return _hessian(formula, bindings, wrt, of, dtype, seed, limits)


def _hessian(
    formula: str,
    bindings: Mapping[str, Any] | None,
    wrt: Sequence[str] | None,
    of: str | None,
    dtype: str,
    seed: int | None,
    limits: Limits,
) -> Result:
    values = _binding_values(bindings)
    interp_run = _execute(formula, values, of, dtype, seed, limits)
    if interp_run.value.size != 1 or interp_run.value.ndim != 0:
        raise ShapeError(
            "the Hessian needs a scalar output; this one has shape "
            f"{_shape_text(interp_run.value)}",
            hint=f"reduce it first, e.g. sum(...) or mean(...), or pick one with {_option('of')}",
        )
    targets = _targets(interp_run, wrt)
    total = sum(_size_of(t) for _, t in targets)
    _check_size(total * total, "the Hessian", limits)
    result = _result_from_run(interp_run, dtype)
    result.hessian = {name: {} for name, _ in targets}
    live = [(n, t) for n, t in targets if _requires_grad(t)]
    first: list[Any] = [None] * len(live)
    if interp_run.output is not None and _requires_grad(interp_run.output) and live:
        first = list(
            _grad(
                [interp_run.output],
                [t for _, t in live],
                None,
                create_graph=True,
                retain_graph=True,
            )
        )
    gradient_of = {name: g for (name, _), g in zip(live, first, strict=True)}
    for name, tensor in targets:
        g = gradient_of.get(name)
        result.gradients[name] = _zeros_or(g, tensor, dtype)
        if g is None:
            result.unused.append(name)
    for row_name, row_tensor in targets:
        g = gradient_of.get(row_name)
        rows = (
            _vjp_rows(g, [t for _, t in targets], dtype, create_graph=False)
            if g is not None and _requires_grad(g)
            else []
        )
        for index, (col_name, col_tensor) in enumerate(targets):
            shape = _shape_of(row_tensor) + _shape_of(col_tensor)
            if rows:
                block = np.stack([row[index] for row in rows]).reshape(shape)
            else:
                block = np.zeros(shape, dtype=dtype)
            result.hessian[row_name][col_name] = block
    _note_values(result)
    return result


# ---------------------------------------------------------------- sessions (the REPL)


def interpreter(
    dtype: str = "float64",
    seed: int | None = None,
    limits: Limits | None = None,
    *,
    program: bool = False,
    write: Any = None,
) -> Interpreter:
    """A fresh interpreter for a session whose names persist from entry to entry (the REPL).

    Run entries with :func:`execute` and differentiate expressions against
    its names with :func:`differentiate`; ``interp.env`` maps each name to its value.
    ``program=True`` runs programs as Python does (``gradcalc run``: ``import torch``,
    ``print``...; `gradcalc.pylang`), ``print`` calling ``write(text)``.
    """
    from gradcalc.interpreter import Interpreter

    if program and seed is not None:
        import gradcalc

        gradcalc.manual_seed(seed)  # torch.rand... draw from the default generator
    interp = Interpreter(
        dtype=_check_dtype(dtype),
        seed=seed,
        limits=limits or DEFAULT_LIMITS,
        program=program,
        write=write,
    )
    interp.unbound_hint = _UNBOUND_HINTS["repl"]
    return interp


def execute(interp: Interpreter, source: str) -> Outcome:
    """Run ``source`` in ``interp``: its ``Outcome`` (last value, and its name if assigned).

    Transactional: if it raises, every name is as before. Autograd misuse (a
    second backward through a freed graph, ...) and exhaustion are raised as
    contract errors with a hint; raises ``FormulaError`` subclasses only. The entry runs
    under its own budget (``interp.limits``: time, memory, work).
    """
    return _session_errors(lambda: interp.execute(source), interp.limits)


def differentiate(
    interp: Interpreter, source: str, *, graph: bool = False, label: str | None = None
) -> Result:
    """The value of ``source`` against ``interp``'s names, and its gradient with respect to
    every tensor among them that requires grad (what the REPL's ``:grad`` shows).

    Nothing is bound and no ``.grad`` changes: gradients come from
    ``autograd.grad`` with ``retain_graph=True``, so a stored result can still
    be ``backward()``-ed afterwards. ``label`` names the output in the result.
    With ``graph=True``, ``result.graph`` is the computation behind it (values
    and gradients where this call computed them; nodes recorded by earlier
    entries carry none).
    """
    from gradcalc import Tensor

    env = interp.env
    saved = dict(env)
    try:
        with _recorder() if graph else _numpy.NOTHING:
            outcome = _session_errors(lambda: interp.execute(source), interp.limits)
            output = outcome.value
            if not isinstance(output, Tensor):
                raise FormulaValueError(
                    f"{source!r} is not a tensor, so it has no gradients",
                    hint="give an expression such as '3*a**3 - b**2'",
                )
            named = [(n, t) for n, t in saved.items() if isinstance(t, Tensor) and t.requires_grad]
            result = _gradients_in_session(output, named, label)
    finally:
        env.clear()
        env.update(saved)
    if graph:
        from gradcalc.graph import build_graph

        tensors = [(name, t) for name, t in saved.items() if isinstance(t, Tensor)]
        result.graph = build_graph(output, tensors, result.gradients)
    return result


SIMPLIFIERS = ("gradcalc", "sympy")
"""``simplify=``: gradcalc's own simplifier, or SymPy's ``simplify`` after it (optional extra)."""


def derivatives(
    formula: str,
    bindings: Mapping[str, Any] | None = None,
    wrt: Sequence[str] | None = None,
    dtype: str = "float64",
    limits: Limits | None = None,
    simplify: str = "gradcalc",
) -> Derivatives:
    """Each variable's derivative of ``formula`` as a formula (``gradcalc diff``).

    ``bindings`` is the point: needed only where the derivative depends on it
    (``if``/``while`` on values, kinks), and then the derivative is that of the
    branch taken there (a note says so). Without ``wrt``, every free name.
    Each derivative is valid formula text: evaluated at any point it equals
    what :func:`evaluate` computes there. Raises ``FormulaError`` subclasses only.
    """
    from gradcalc import symbolic

    dtype = _check_dtype(dtype)
    limits = limits or DEFAULT_LIMITS
    _check_simplifier(simplify)
    values = _binding_values(bindings)
    try:
        found = _guarded(
            lambda: symbolic.differentiate(formula, values, list(wrt or []), dtype, limits)
        )
    except FormulaError as exc:
        if exc.source is None:
            exc.source = formula
        raise
    return symbolic.sympy_simplify(found) if simplify == "sympy" else found


def derivatives_json(formula: str, **options: Any) -> dict:
    """``derivatives_to_json(derivatives(formula, **options))``."""
    from gradcalc.jsonio import derivatives_to_json

    return derivatives_to_json(derivatives(formula, **options))


def derivatives_in(
    interp: Interpreter, source: str, wrt: Sequence[str] | None = None, simplify: str = "gradcalc"
) -> Derivatives:
    """:func:`derivatives` of ``source`` against a session's variables at their values
    (the REPL's ``:diff``). Binds nothing; raises ``FormulaError`` subclasses only."""
    from gradcalc import symbolic

    _check_simplifier(simplify)
    found = _session_errors(lambda: symbolic.differentiate_in(interp, source, list(wrt or [])))
    return symbolic.sympy_simplify(found) if simplify == "sympy" else found


def split_names(argument: str) -> tuple[str, list[str] | None]:
    """``EXPR [NAMES]`` (the REPL's ``:diff``): a last word of comma-separated names after
    an expression that parses on its own is the names; otherwise it is all expression."""
    head, _, last = argument.strip().rpartition(" ")
    names = [n for n in last.split(",") if n]
    if not head.strip() or not names or not all(n.isidentifier() for n in names):
        return argument, None
    from gradcalc.parser import parse

    try:
        parse(head)
    except FormulaError:
        return argument, None
    return head, names


def _check_simplifier(simplify: str) -> None:
    if simplify not in SIMPLIFIERS:
        raise FormulaValueError(
            f"unknown simplifier '{simplify}'", hint="use gradcalc (the default) or sympy"
        )
    if simplify == "sympy":
        import importlib.util

        if importlib.util.find_spec("sympy") is None:
            raise FormulaValueError(
                "--simplify sympy needs SymPy, which is not installed",
                hint="pip install 'gradcalc[sympy]', or leave --simplify out",
            )


def _gradients_in_session(output: Any, named: list[tuple[str, Any]], label: str | None) -> Result:
    value = _value_of(output)
    result = Result(value=value, dtype=str(value.dtype), output_name=label)
    if value.ndim > 0 and named:
        result.summed = True
        result.notes.append(
            f"The value has shape {tuple(value.shape)}; it was differentiated as its sum."
        )
    grads: Sequence[Any] = [None] * len(named)
    if output.requires_grad and named:
        from gradcalc._tensor import grad

        seed = [_tensor(np.ones_like(value), result.dtype)] if value.ndim > 0 else None
        inputs = [t for _, t in named]
        grads = _session_errors(
            lambda: grad([output], inputs, grad_outputs=seed, retain_graph=True, allow_unused=True)
        )
    for (name, tensor), gradient in zip(named, grads, strict=True):
        if gradient is not None:
            result.gradients[name] = _value_of(gradient)
        elif tensor.is_leaf:
            result.gradients[name] = _zeros_or(None, tensor, tensor.dtype.name)
            result.unused.append(name)
    if result.unused:
        result.notes.append(f"Not used (gradient 0): {', '.join(result.unused)}.")
    if not named:
        result.notes.append("No variable requires grad; assign one first, e.g. a = 2.")
    return result


def _session_errors(action: Callable[[], Any], limits: Limits | None = None) -> Any:
    """Autograd misuse and exhaustion as contract errors, each with a hint where one helps;
    run under a budget of ``limits`` (or the one already running), hinted for the REPL."""
    try:
        with budgets.running(limits or DEFAULT_LIMITS, alarm=True):
            return action()
    except LimitError as exc:
        budgets.rehint(exc, "repl")
        raise
    except GradError as exc:
        from gradcalc.builtins import grad_error_hint

        hint = grad_error_hint(exc)
        if type(exc).__name__ == "FreedGraphError":
            hint = "backward() freed this graph; differentiate the formula itself, or " + (
                hint or "recompute it"
            )
        raise FormulaValueError(str(exc), hint=hint) from None
    except MemoryError:
        error = budgets.limit_error("max_memory", "not enough memory for this computation")
        budgets.rehint(error, "repl")
        raise error from None
    except RecursionError:
        raise LimitError("the computation nests too deeply") from None


def _differentiate(
    formula: str,
    values: dict[str, Any],
    wrt: Sequence[str] | None,
    of: str | None,
    grad_output: Any,
    dtype: str,
    seed: int | None,
    limits: Limits,
    retain_graph: bool = False,
    program: Any = None,
) -> tuple[Result, _Run, np.ndarray | None]:
    if program is None:
        program = _checked_program(formula, limits)  # a syntax error is reported before NumPy loads
    replays = _replays(formula, values, wrt, of, grad_output, seed, limits, retain_graph, dtype)
    tensor_module = _engine().tensor
    passes = tensor_module.backward_passes()
    if replays is not None and replays.may_record(values):
        from gradcalc._replay import CountNodes

        with CountNodes() as count:
            run = _execute(formula, values, of, dtype, seed, limits, program)
        nodes = count.nodes
    else:
        run = _execute(formula, values, of, dtype, seed, limits, program)
        nodes = None
    fresh = tensor_module.backward_passes() == passes  # the program ran no backward or grad()
    verify = None
    if replays is not None and fresh:
        try:  # (before backward frees the graph's data)
            verify = replays.record(program, run, values, nodes)
        except Exception:  # a bug of the tracer must not cost the request: no replays
            replays.program_ok = False
    outcome = _gradients(
        run, formula, program, wrt, grad_output, dtype, seed, limits, fresh, retain_graph
    )
    if verify is not None:
        replays.verify(verify, values, outcome[0], formula, limits)  # (never raises)
    return outcome


def _gradients(
    run: _Run,
    formula: str,
    program: Any,
    wrt: Sequence[str] | None,
    grad_output: Any,
    dtype: str,
    seed: int | None,
    limits: Limits,
    fresh: bool,
    retain_graph: bool = False,
) -> tuple[Result, _Run, np.ndarray | None]:
    """The result of ``run``: its value, and gradients by the engine's backward pass
    (``fresh``: the program itself ran none, so the leaves' ``.grad`` are unset)."""
    value = run.value
    result = Result(value, _dtype_name(value.dtype), output_name=run.output_name)
    notes = _formula_notes(formula, limits, program)
    if notes:
        result.notes += notes
    targets = _targets(run, wrt)
    seed_array = None
    if grad_output is not None:
        seed_array = _constant_array(grad_output, dtype, seed, limits)
        if seed_array.shape != value.shape:
            raise ShapeError(
                f"{_option('grad_output')} has shape {_shape_text(seed_array)} but the output "
                "has shape "
                f"{_shape_text(value)}",
                hint="the seed of a vector-Jacobian product has the output's shape",
            )
    elif value.ndim > 0 and targets:
        _note_summed(result)
    inputs = []  # the targets that require grad (``_requires_grad``: the property's slot)
    for _, t in targets:
        if t._requires_grad:
            inputs.append(t)
    grads: Sequence[Any] = [None] * len(inputs)
    output = run.output
    if output is not None and output._requires_grad and inputs:
        seed_tensor = None
        if value.ndim > 0 or seed_array is not None:
            ones = np.ones(value.shape, dtype=dtype)
            seed_tensor = _tensor(ones if seed_array is None else seed_array, dtype)
        if fresh and _owns_every_leaf(run, inputs):
            grads = _backward_into(output, inputs, seed_tensor, retain_graph)
        else:
            grads = _grad([output], inputs, seed_tensor, retain_graph=retain_graph)
    if len(inputs) < len(targets):  # a target that requires no grad has none
        names = [name for name, t in targets if t._requires_grad]
        gradient_of = dict(zip(names, grads, strict=True))
        grads = [gradient_of.get(name) for name, _ in targets]
    gradients = result.gradients
    for (name, tensor), g in zip(targets, grads, strict=True):  # (names are unique)
        if g is None:
            gradients[name] = _zeros_or(None, tensor, dtype)
            result.unused.append(name)
        else:
            gradients[name] = _raw_value(g._raw, g)
    _finish_result(result)
    return result, run, seed_array


def _note_summed(result: Result) -> None:
    result.summed = True
    result.notes.append(
        f"The output has shape {_shape_text(result.value)}; it was differentiated as its sum "
        f"(a seed of ones). Use {_option('grad_output')} to give another seed."
    )


def _finish_result(result: Result) -> None:
    """What every result says last: unused variables, output size, non-finite values."""
    if result.unused:
        result.notes.append(_unused_note(result.unused))
    _check_output(result)
    _note_values(result)


def _unused_note(names: list[str]) -> str:
    return f"Not used by the output (gradient 0): {', '.join(names)}."


def _execute(
    formula: str,
    values: Mapping[str, Any],
    of: str | None,
    dtype: str,
    seed: int | None,
    limits: Limits,
    program: Any = None,
) -> _Run:
    """Run ``formula`` (``program``: it parsed, if the caller has it) in a fresh interpreter
    with ``values`` bound as leaves; contract errors carry the formula's text."""
    interp = _engine().Interpreter(dtype, seed, limits)
    interp.unbound_hint = _UNBOUND_HINTS[_SURFACE.get()]
    leaves = {}
    env = interp.env
    try:  # (what `_guarded` does, without a closure per call)
        for name, value in values.items():
            interp.bind(name, value)
            leaves[name] = env[name]
    except FormulaError:
        raise
    except Exception as exc:
        _reraise(exc)
    try:
        outcome = interp.execute(_program(formula, limits) if program is None else program)
    except FormulaError as exc:
        if exc.source is None:
            exc.source = formula  # a cached program carries no text; the caret needs it
        raise
    except Exception as exc:
        error = _contract_error(exc)
        if error is None:
            raise
        error.source = formula  # type: ignore[attr-defined] (a FormulaError)
        raise error from None
    if of is not None:
        if of not in env:
            raise UnknownNameError(
                f"{_option('of')} names '{of}', which the formula does not define",
                hint=f"pick a variable the formula assigns, or leave {_option('of')} out for "
                "the last value",
            )
        output, name = env[of], of
    else:
        output, name = outcome.value, outcome.name
        if output is None:
            raise FormulaValueError(
                "the formula produced no value",
                hint=f"end it with an expression, or pick a variable with {_option('of')}",
            )
    tensor, value = _as_output(output, name)
    return _Run(interp, leaves, tensor, value, name)


def _replays(
    formula: str,
    values: dict[str, Any],
    wrt: Sequence[str] | None,
    of: str | None,
    grad_output: Any,
    seed: int | None,
    limits: Limits,
    retain_graph: bool,
    dtype: str,
) -> _Replays | None:
    """The replays of ``formula`` with these bound names (see :mod:`gradcalc._replay`), or
    None when this run is not one a replay answers: no bound leaves, options (``wrt``,
    ``of``, a seed of random draws or of the gradient), values kept for a graph."""
    if (
        of is not None
        or wrt is not None
        or grad_output is not None
        or seed is not None
        or retain_graph
        or not values
        or len(formula) > _PROGRAM_CACHE_TEXT
        or _engine().tensor.is_recording_values()
    ):
        return None
    key = (formula, dtype, limits, tuple(values))
    replays = _REPLAYS.get(key)
    if replays is None:
        if len(_REPLAYS) >= _PROGRAM_CACHE_SIZE:
            _REPLAYS.pop(next(iter(_REPLAYS)))
        replays = _REPLAYS[key] = _Replays(dtype, limits)
    return replays


def _replayed(
    formula: str,
    bindings: Mapping[str, Any] | None,
    dtype: str,
    limits: Limits,
    written: bool = False,
) -> Result | None:
    """``formula``'s result by a verified trace (no interpreter, no graph), or None when
    none fits: the caller then runs it the ordinary way (which also records traces).
    ``written``: for a result written out at once (see `_Replays.result`)."""
    if not bindings or type(bindings) is not dict:
        return None
    replays = _REPLAYS.get((formula, dtype, limits, tuple(bindings)))
    if replays is None or not replays.ready or not _engine().tensor.is_grad_enabled():
        return None  # (under no_grad() nothing is recorded: the ordinary run answers)
    raws = replays.inputs(bindings)
    if raws is None:
        return None
    if _numpy.quiet():  # (a batch block's requests: NumPy silenced once for all)
        return replays.result(list(bindings), raws, formula, written=written)
    with _numpy.errstate(), _numpy.ignoring_warnings():
        return replays.result(list(bindings), raws, formula, written=written)


class _Replays:
    """One formula's traces, by the types, dtypes and shapes of its bound leaves.

    The first run of a formula records nothing (a one-shot command pays one dict
    lookup). The second leaves a trace of its graph if the program is in
    :func:`gradcalc._replay.replayable`'s subset; the third also answers by the
    trace and keeps it only if that gave the same result, bit for bit (value,
    gradients, notes), on these other values. Later runs are answered by
    :meth:`result`, which does what `_gradients` does for a run without options.
    """

    __slots__ = ("context", "dtype", "limits", "program_ok", "ready", "runs", "traces")

    def __init__(self, dtype: str, limits: Limits) -> None:
        self.dtype = dtype
        self.limits = limits
        self.runs = 0
        self.ready = False
        """Some trace is verified."""
        self.program_ok: bool | None = None
        self.context: Any = None
        self.traces: dict[tuple, _Entry | bool] = {}
        """leaf specs (`_raw_spec`) -> its trace, or False: never replayed."""

    def inputs(self, bindings: dict[str, Any]) -> list[Any] | None:
        """The leaves' data for ``bindings`` (a request's ``vars``), as `Context.leaf`
        makes it; None for anything but plain numbers and lists of them (the ordinary
        run reports what is wrong, if anything)."""
        if self.dtype != "float64":
            return self._leaf_data(bindings)
        raws = []
        for value in bindings.values():
            kind = type(value)
            if kind is float:
                raws.append(value)
            elif kind is int and abs(value) < 2**1023:
                raws.append(float(value))
            elif kind is list:
                array = _float64_array(value, self.limits.max_elements)
                if array is None:
                    return None
                raws.append(array)
            else:
                return self._leaf_data(bindings)
        return raws

    def _leaf_data(self, bindings: dict[str, Any]) -> list[Any] | None:
        context = self.context
        if context is None:
            from gradcalc.builtins import Context

            context = self.context = Context(self.dtype, self.limits, None)
        try:
            values = _binding_values(bindings)
            return [context.leaf(value, True, name)._raw for name, value in values.items()]
        except Exception:  # (the ordinary run reports it)
            return None

    def result(
        self,
        names: list[str],
        raws: list[Any],
        formula: str,
        verified: bool = True,
        written: bool = False,
    ) -> Result | None:
        """The result of a run with leaves ``names`` holding ``raws``, by a (``verified``)
        trace for their shapes; None when there is none, or it failed. ``written``: the
        caller writes it out at once with ``result_to_json(result, note_values=True)``,
        so its gradients may share memory with the trace's values and its values are
        not checked for NaN here."""
        entry = self.traces.get(tuple(map(_raw_spec, raws)))
        if not entry or (verified and not entry.verified):
            return None
        trace = entry.trace
        if trace.literals and (
            trace.stale() or _PROGRAMS.get((formula, self.limits.max_nesting)) is not entry.program
        ):  # (its literals are not the program's as they are now: made again when next run)
            self.traces.pop(entry.spec, None)
            return None
        try:
            return self._result(entry, names, raws, formula, written)
        except Exception:  # (the ordinary run answers, or reports the error)
            return None

    def _result(
        self, entry: _Entry, names: list[str], raws: list[Any], formula: str, written: bool
    ) -> Result:
        trace = entry.trace
        data, saved = trace.run(raws)
        raw = data[-1]
        value = _raw_value(raw)
        dtype_name = entry.dtype_name
        if dtype_name is None:
            dtype_name = entry.dtype_name = _dtype_name(value.dtype)
            notes = _NOTES.get((formula, self.limits.max_nesting))
            entry.notes = tuple(formula_notes(formula, self.limits) if notes is None else notes)
        result = Result(value, dtype_name, output_name=entry.output_name)
        if entry.notes:
            result.notes += entry.notes
        if type(raw) is float:
            seed = 1.0
        elif value.ndim:
            _note_summed(result)
            seed = np.ones(value.shape, dtype=self.dtype)
            if seed.dtype != raw.dtype:
                raise TypeError("a seed of another dtype than the output's")
        else:
            seed = raw.dtype.type(1)
        totals = trace.backward(data, saved, seed)
        engine = _engine().tensor
        ndarray = engine._ndarray  # (a stand-in type until NumPy is loaded)
        Float64 = _numpy.Float64
        gradients = result.gradients
        for name, like, total in zip(names, raws, totals, strict=True):
            if type(total) is float and type(like) is float:  # (the float backend's)
                gradients[name] = Float64(total)
                continue
            if total is None:
                gradients[name] = _zeros_or(None, engine._wrap(like), self.dtype)
                result.unused.append(name)
                continue
            if (  # (as the engine's AccumulateGrad stores ``.grad``)
                type(total) is not ndarray
                or type(like) is not ndarray
                or total.dtype is not like.dtype
            ):
                total = engine._cast_like(total, like)
            gradients[name] = _raw_value(total if written else engine._own(total))
        if written:  # (no budget: the size of this output was within it when verified)
            if result.unused:
                result.notes.append(_unused_note(result.unused))
        else:
            _finish_result(result)
        return result

    def may_record(self, values: dict[str, Any]) -> bool:
        """Whether `record` may make a trace of this run (its nodes are then counted)."""
        if self.runs < 1 or self.program_ok is False or len(self.traces) >= 16:
            return False
        raws = self.inputs(values)
        return raws is not None and tuple(map(_raw_spec, raws)) not in self.traces

    def record(
        self, program: Any, run: _Run, values: dict[str, Any], nodes: int | None
    ) -> _Entry | None:
        """After a fresh run's forward pass on ``values``: keep its trace (second run),
        or return the unverified trace this run is to check (third run). ``nodes``: the
        graph nodes the run made, if counted (`_replay.CountNodes`)."""
        self.runs += 1
        if self.runs < 2:
            return None
        if self.program_ok is None:
            from gradcalc._replay import replayable

            self.program_ok = replayable(program, set(run.leaves))
        output = run.output
        if not self.program_ok or output is None or not output._requires_grad:
            return None
        raws = self.inputs(values)  # (the leaves as made: a run may have converted some)
        if raws is None:
            return None
        spec = tuple(map(_raw_spec, raws))
        entry = self.traces.get(spec)
        if entry is not None:
            return entry if entry and not entry.verified else None
        if len(self.traces) >= 16:  # (a formula asked with ever new shapes)
            return None
        from gradcalc._replay import Trace

        trace = Trace.of(list(run.leaves.values()), output)
        if trace is not None and nodes != len(trace.steps):
            trace = None  # (ops that do not reach the output: see `_replay.CountNodes`)
        if trace is None:
            self.traces[spec] = False
        else:
            self.traces[spec] = _Entry(trace, run.output_name, spec, program)
        return None

    def verify(
        self, entry: list, values: dict[str, Any], result: Result, formula: str, limits: Limits
    ) -> None:
        """Answer this run again by ``entry``'s trace: kept if that gives ``result``."""
        replayed = None
        raws = self.inputs(values)
        if raws is not None:
            with _numpy.errstate(), _numpy.ignoring_warnings():
                replayed = self.result(list(values), raws, formula, verified=False)
        if replayed is not None and _same_result(result, replayed):
            entry.verified = self.ready = True
        else:
            self.traces[entry.spec] = False


def _float64_array(value: list, max_elements: int) -> Any:
    """A list of numbers (nested) as `Context.leaf` makes a float64 leaf of it, in one
    NumPy call and a look at what it made (None for anything else: strings, None,
    ragged rows, huge ints; and for arrays the limits must see, large or too large)."""
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = array.dtype.kind
    if (
        kind not in "fib"
        or array.size >= budgets.LARGE
        or array.size > max_elements
        or not array.ndim
    ):
        return None
    return array if array.dtype.char == "d" else array.astype(np.float64)


class _Entry:
    """A trace of `_Replays`, and what its results share (found at first use)."""

    __slots__ = ("dtype_name", "notes", "output_name", "program", "spec", "trace", "verified")

    def __init__(self, trace: Any, output_name: str | None, spec: tuple, program: Any) -> None:
        self.trace = trace
        self.output_name = output_name
        self.spec = spec
        self.program = program
        """The parsed program the trace was made from: a literal belongs to its compiled
        form (`gradcalc._replay.Trace.stale`)."""
        self.verified = False
        self.dtype_name: str | None = None
        self.notes: tuple[str, ...] = ()


_REPLAYS: dict[tuple, _Replays] = {}


def _raw_spec(raw: Any) -> tuple:
    """What a trace depends on of a leaf: its data's type, dtype and shape."""
    if type(raw) is float:
        return _FLOAT_SPEC
    return (type(raw), raw.dtype, raw.shape)


_FLOAT_SPEC = (float,)


def _same_result(result: Result, other: Result) -> bool:
    """Whether two results hold the same bits (values, gradients) and the same words."""
    if (
        result.notes != other.notes
        or result.unused != other.unused
        or result.summed != other.summed
        or result.output_name != other.output_name
        or list(result.gradients) != list(other.gradients)
    ):
        return False
    pairs = [(result.value, other.value)]
    pairs += [(g, other.gradients[name]) for name, g in result.gradients.items()]
    for a, b in pairs:
        if type(a) is not type(b):
            return False
        if type(a) is _numpy.Float64:  # (the float backend's: no NumPy to load)
            if a.hex() != b.hex():
                return False
        elif a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            return False
    return True


def module_members(dotted: str) -> list[str]:
    """The members of a module programs can import, by the name a session uses for it
    (``torch``, ``torch.nn.functional``, ``F``, ``math``): for completion. Empty if none."""
    from gradcalc import pylang

    path = {"F": "torch.nn.functional", "nn": "torch.nn"}.get(dotted, dotted)
    module = pylang.MODULES.get(path)
    if module is None or module.name == "numpy":
        return []
    return sorted(name for name in module.members if not name.startswith("_"))


def formula_notes(formula: str, limits: Limits | None = None) -> list[str]:
    """What a formula probably did not mean (``max(x, 0)`` reduces along axis 0)."""
    limits = limits or DEFAULT_LIMITS
    notes = _NOTES.get((formula, limits.max_nesting))
    if notes is None:
        try:
            program = _program(formula, limits)
        except FormulaError:
            program = None
        notes = _formula_notes(formula, limits, program)
    return list(notes)


def _formula_notes(formula: str, limits: Limits, program: Any) -> tuple[str, ...]:
    """`formula_notes` of ``formula`` parsed as ``program`` (None: it does not parse),
    cached by its text."""
    key = (formula, limits.max_nesting)
    notes = _NOTES.get(key)
    if notes is None:
        from gradcalc.interpreter import axis_notes

        notes = () if program is None else tuple(axis_notes(program))
        if len(formula) <= _PROGRAM_CACHE_TEXT:
            if len(_NOTES) >= _PROGRAM_CACHE_SIZE:
                _NOTES.pop(next(iter(_NOTES)))
            _NOTES[key] = notes
    return notes


_NOTES: dict[tuple[str, int], tuple[str, ...]] = {}
"""`formula_notes` by formula, as `_PROGRAMS` (walking the tree cost a batch request of a
small formula ~20% of its time)."""


def _checked_program(formula: str, limits: Limits) -> Any:
    """``formula`` parsed (cached for the run that follows), its source on any error."""
    program = _PROGRAMS.get((formula, limits.max_nesting))  # (`_program`'s first look)
    if program is not None:
        return program
    try:
        return _program(formula, limits)
    except FormulaError as exc:
        if exc.source is None:
            exc.source = formula
        raise


def _program(formula: str, limits: Limits) -> Any:
    """The parsed program, cached by its text: a batch repeats a few formulas many times."""
    key = (formula, limits.max_nesting)
    program = _PROGRAMS.get(key)
    if program is None and _LAST_PROGRAM[0] == key:
        program = _LAST_PROGRAM[1]  # a long formula, parsed a moment ago by _checked_program
    if program is None:
        from gradcalc.parser import parse

        program = parse(formula, limits=limits)
        if len(formula) <= _PROGRAM_CACHE_TEXT:
            if len(_PROGRAMS) >= _PROGRAM_CACHE_SIZE:
                _PROGRAMS.pop(next(iter(_PROGRAMS)))
            _PROGRAMS[key] = program
        else:
            _LAST_PROGRAM[:] = [key, program]
    return program


_PROGRAMS: dict[tuple[str, int], Any] = {}
_LAST_PROGRAM: list[Any] = [None, None]
"""The last formula too long for the cache, and its program: one parse per request."""
_PROGRAM_CACHE_SIZE = 256
_PROGRAM_CACHE_TEXT = 10_000
"""Only formulas up to this many characters are kept (a 1 MB formula is parsed each time)."""


def _targets(run: _Run, wrt: Sequence[str] | None) -> list[tuple[str, Any]]:
    """The (name, tensor) pairs gradients are reported for, in a stable order.

    By default the variables the user bound (``NAME=VALUE``, batch ``vars``): what
    the formula assigns is its own data (``t = ones(3, 2)``), reported only when
    ``wrt`` names it. A formula given no bindings reports the differentiable leaves
    it assigns (``a = 2; b = 6; 3*a**3 - b**2``: seed 000 as a program)."""
    env = run.interp.env
    if wrt is None:
        targets = list(run.leaves.items())
        if targets:
            return targets
        Tensor = _engine().Tensor
        for name, value in env.items():
            if (
                name not in run.leaves
                and isinstance(value, Tensor)
                and value.is_leaf
                and value.requires_grad
            ):
                targets.append((name, value))
        return targets
    Tensor = _engine().Tensor
    targets = []
    for name in dict.fromkeys(wrt):
        if name in run.leaves:
            targets.append((name, run.leaves[name]))
        elif name in env and isinstance(env[name], Tensor):
            targets.append((name, env[name]))
        elif name in env:
            raise FormulaTypeError(
                f"{_option('wrt')} names '{name}', which is a {_kind(env[name])}, not a tensor"
            )
        else:
            raise UnknownNameError(
                f"{_option('wrt')} names '{name}', which is neither bound nor defined by the "
                "formula",
                hint=(
                    "add it to the request's vars or name a variable the formula assigns"
                    if _SURFACE.get() == "batch"
                    else "bind it with NAME=VALUE or name a variable the formula assigns"
                ),
            )
    return targets


def _grad(
    outputs: list[Any],
    inputs: list[Any],
    seed: Any,
    *,
    retain_graph: bool = False,
    create_graph: bool = False,
) -> Sequence[Any]:
    from gradcalc._tensor import grad

    def run() -> Sequence[Any]:
        return grad(
            outputs,
            inputs,
            grad_outputs=None if seed is None else [seed],
            retain_graph=retain_graph or create_graph,
            create_graph=create_graph,
            allow_unused=True,
        )

    return _guarded(run)


def _owns_every_leaf(run: _Run, inputs: list[Any]) -> bool:
    """True when a plain backward into ``.grad`` gives exactly ``autograd.grad``'s answer.

    ``grad`` first finds the nodes leading to ``inputs`` (a second walk over the
    graph, a quarter of ``evaluate`` on a long scalar chain) so nothing else is
    computed. Skipping that is safe when every input is a leaf this run created
    whose ``.grad`` is still unset (the caller checked that no backward ran during
    the program, so no leaf holds a gradient and no part of the graph was freed)
    and no recorder keeps per-node gradients for ``--graph`` (pruned nodes show
    none). Other named leaves send us to ``grad`` too: their gradients would be
    wasted work (an unnamed leaf the program made still gets one, unseen).
    """
    engine = _engine()
    if engine.tensor.is_recording_values():
        return False
    # (the slots behind ``is_leaf``, ``grad`` of a leaf and ``requires_grad``: read once
    # per tensor of every request, the properties cost more than the rest of this test)
    for tensor in inputs:
        if tensor._grad_fn is not None or tensor._grad is not None:
            return False
    Tensor = engine.Tensor
    chosen = set(map(id, inputs))
    leaves = run.leaves.values()
    if len(leaves) == len(inputs) and all(map(operator.is_, leaves, inputs)):
        leaves = ()  # (the inputs are the bound leaves, in order: each passes)
    for values in (leaves, run.interp.env.values()):
        for value in values:
            if (
                isinstance(value, Tensor)
                and value._requires_grad
                and value._grad_fn is None
                and id(value) not in chosen
            ):
                return False
    return True


def _backward_into(output: Any, inputs: list[Any], seed: Any, retain_graph: bool) -> list[Any]:
    """``autograd.grad(output, inputs)`` by way of ``backward``: each input's new ``.grad``."""
    try:  # (what `_guarded` does, without a closure per call)
        _engine().tensor.backward(
            [output], None if seed is None else [seed], retain_graph=retain_graph
        )
    except FormulaError:
        raise
    except Exception as exc:
        _reraise(exc)
    return list(map(_GRAD, inputs))  # (``.grad`` of a leaf, as `_owns_every_leaf` saw)


_GRAD = operator.attrgetter("_grad")


def _vjp_rows(output: Any, inputs: list[Any], dtype: str, create_graph: bool) -> list[list]:
    """One row per output element: the gradients of that element w.r.t. each input, flattened."""
    shape = _shape_of(output)
    size = int(np.prod(shape, dtype=np.int64))
    rows = []
    budget = budgets.current()
    for flat_index in range(size):
        if budget is not None and flat_index % 64 == 63:
            budget.check()  # a row is a backward pass: thousands of them take a while
        onehot = np.zeros(size, dtype=dtype)
        onehot[flat_index] = 1.0
        seed = _tensor(onehot.reshape(shape), dtype)
        grads = _grad([output], inputs, seed, retain_graph=True, create_graph=create_graph)
        rows.append(
            [np.reshape(_zeros_or(g, t, dtype), -1) for g, t in zip(grads, inputs, strict=True)]
        )
    return rows


def _reraise(exc: Exception) -> NoReturn:
    """Raise ``exc`` as its contract error (`_contract_error`), or as it is when it has none."""
    error = _contract_error(exc)
    if error is None:
        raise exc
    raise error from None


def _guarded(action: Callable[[], Any]) -> Any:
    """Run engine/interpreter work, turning resource exhaustion and autograd misuse into
    contract errors (``LimitError``/``ValueError``) instead of Python exceptions."""
    try:
        return action()
    except FormulaError:
        raise
    except Exception as exc:
        _reraise(exc)


def _contract_error(exc: Exception) -> Exception | None:
    """The contract error `_guarded` raises for ``exc`` (autograd misuse, exhaustion), or
    None for any other exception, which goes on as it is."""
    if isinstance(exc, GradError):
        return FormulaValueError(str(exc))
    if isinstance(exc, MemoryError):
        return budgets.limit_error(
            "max_memory", "not enough memory for this computation", "use smaller tensors"
        )
    if isinstance(exc, RecursionError):
        return LimitError("the computation nests too deeply")
    return None


# ---------------------------------------------------------------- finite differences


def _finite_difference_check(
    formula: str,
    base: dict[str, np.ndarray],
    result: Result,
    of: str | None,
    seed_array: np.ndarray | None,
    seed: int | None,
    limits: Limits,
) -> dict[str, float | None]:
    """Max relative error of each reported gradient against central differences in float64.

    Only bound variables can be perturbed; names the program defines get ``None``.
    """
    weights = None if seed_array is None else seed_array.astype(np.float64)

    def objective(name: str, flat_index: int, step: float) -> float:
        perturbed = dict(base)
        if type(base[name]) is float:  # a scalar (the float backend: no NumPy)
            perturbed[name] = base[name] + step
        else:
            moved = base[name].copy()
            moved.reshape(-1)[flat_index] += step
            perturbed[name] = moved
        run = _execute(formula, perturbed, of, "float64", seed, limits)
        if weights is None and isinstance(run.value, float):
            return float(run.value)
        out = np.asarray(run.value, dtype=np.float64)
        return float(np.sum(out if weights is None else out * weights))

    checkable = [name for name in result.gradients if name in base]
    budget = max(1, CHECK_MAX_ENTRIES // max(1, len(checkable)))
    report: dict[str, float | None] = {}
    for name in result.gradients:
        if name not in base:
            report[name] = None
            continue
        if type(base[name]) is float:
            point, gradient, indices = [base[name]], [float(result.gradients[name])], [0]
        else:
            point = base[name].reshape(-1)
            gradient = np.asarray(result.gradients[name], dtype=np.float64).reshape(-1)
            indices = _sample_indices(point.size, budget)
        worst = 0.0
        for i in indices:
            step = 1e-6 * max(1.0, abs(float(point[i])))
            estimate = (objective(name, int(i), step) - objective(name, int(i), -step)) / (2 * step)
            g = float(gradient[i])
            if not (math.isfinite(estimate) and math.isfinite(g)):
                worst = math.nan if not (math.isnan(g) and math.isnan(estimate)) else worst
                continue
            error = abs(g - estimate) / max(1.0, abs(g), abs(estimate))
            worst = max(worst, error) if not math.isnan(worst) else worst
        report[name] = worst
        if len(indices) < len(point):
            result.notes.append(
                f"{_option('check')} compared {len(indices)} of {point.size} entries of the "
                "gradient of "
                f"'{name}'."
            )
    return report


def _check_point(leaf: Any) -> Any:
    """A bound leaf's value in float64 for finite differences: a float for a scalar."""
    if leaf.dtype.name == "float64" and not leaf.shape:
        return float(leaf.item())
    return _as_float64(leaf._data)


def _sample_indices(size: int, budget: int) -> np.ndarray:
    if size <= budget:
        return np.arange(size)
    return np.unique(np.linspace(0, size - 1, budget).round().astype(np.int64))


def _note_check(result: Result) -> None:
    assert result.check is not None
    skipped = [name for name, err in result.check.items() if err is None]
    bad = [
        name
        for name, err in result.check.items()
        if err is not None and not (err <= result.check_tolerance)
    ]
    if bad:
        worst = ", ".join(f"{name} ({_short_float(result.check[name])})" for name in bad)
        result.notes.append(
            f"{_option('check')}: gradient disagrees with finite differences beyond "
            f"{result.check_tolerance:g}: "
            f"{worst} (expected at kinks such as relu or abs at 0)."
        )
    if skipped:
        result.notes.append(
            f"{_option('check')} skipped names the formula defines itself: {', '.join(skipped)}."
        )


# ---------------------------------------------------------------- values in and out


def _binding_values(bindings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check each VALUE's type; plain numbers in text skip the interpreter's parser.

    Other strings are constant formulas, evaluated by ``Interpreter.bind``.
    """
    values: dict[str, Any] = {}
    for name, value in (bindings or {}).items():
        kind = type(value)  # (the common cases first: a failed isinstance costs more)
        if kind in _NUMBER_TYPES or (kind is list and _is_number_list(value)):
            values[name] = value
        elif isinstance(value, str):
            text = value.strip()
            if _NUMBER.fullmatch(text):
                values[name] = float(text)
            elif text[:1] == "[":
                values[name] = _json_number_list(text, value)
            else:
                values[name] = value
        elif isinstance(value, (bool, int, float)) or _is_number_list(value) or _is_numpy(value):
            values[name] = value
        elif _is_tensor(value):
            values[name] = value.detach()
        else:
            raise FormulaTypeError(
                f"the value of {name} is a {type(value).__name__}; expected a number, a list "
                "of numbers, or a constant formula as a string"
            )
    return values


def _json_number_list(text: str, value: str) -> Any:
    """A list of numbers written as JSON (``[[1, 0.5], [-0.3, 2]]``) read as JSON, not as
    a constant formula (a parse and a run of the interpreter: ~0.5 ms of a one-shot
    vector command each); ``value`` itself for anything else (``[.5, 1]``, digits past
    float64's 15, which the formula's own reading decides)."""
    if not re.fullmatch(_NUMBER_LIST, text) or re.search(r"\d{16}", text):
        return value
    try:
        parsed = json.loads(text)
    except ValueError:
        return value
    return parsed if type(parsed) is list and _rectangular(parsed) else value


def _rectangular(rows: list) -> bool:
    """Whether nested lists are numbers in a box (no ragged rows: the formula's own
    reading words that error)."""
    level = [rows]
    while True:
        kinds = {type(item) for row in level for item in row}
        if kinds <= _NUMBER_TYPES:
            return True
        if kinds != {list} or len({len(item) for row in level for item in row}) != 1:
            return False
        level = [item for row in level for item in row]


_NUMBER_LIST = r"[\[\]\s,0-9eE+\-.]*"
"""What a JSON array of numbers is written with (no names, no true/NaN/Infinity)."""


def _is_numpy(value: Any) -> bool:
    """An ndarray or a NumPy scalar, asked without loading NumPy (a value cannot be one
    before it is imported; a request of plain numbers must not load it)."""
    return "numpy" in sys.modules and isinstance(value, np.ndarray | np.generic)


def _is_tensor(value: Any) -> bool:
    from gradcalc import Tensor

    return isinstance(value, Tensor)


def _constant_array(value: Any, dtype: str, seed: int | None, limits: Limits) -> np.ndarray:
    """The --grad-output VALUE (number, nested list, or constant formula) as an array."""
    from gradcalc.interpreter import Interpreter

    interp = Interpreter(dtype=dtype, seed=seed, limits=limits)
    _guarded(lambda: interp.bind("grad_output", value, requires_grad=False))
    return np.asarray(interp.env["grad_output"]._data)


_NUMBER_TYPES = frozenset((bool, int, float))
_LIST_TYPES = frozenset((list, tuple))


def _is_number_list(value: Any) -> bool:
    """True for (nested) lists of numbers, checked iteratively (depth is the caller's)."""
    if type(value) is list and set(map(type, value)) <= _NUMBER_TYPES:
        return True  # (the common vector, at once)
    if not isinstance(value, (list, tuple)):
        return False
    stack = [value]
    while stack:
        items = stack.pop()
        kinds = set(map(type, items))  # (the common lists at C speed; others item by item)
        if kinds <= _NUMBER_TYPES:
            continue
        if kinds <= _LIST_TYPES:  # rows: their items in one list (a leaf is a number or not)
            stack.append(list(itertools.chain.from_iterable(items)))
            continue
        for item in items:
            if isinstance(item, (list, tuple)):
                stack.append(item)
            elif not isinstance(item, (bool, int, float)):
                return False
    return True


def _as_output(value: Any, name: str | None) -> tuple[Any, np.ndarray]:
    """(tensor or None, ndarray) for a program output; non-numbers are a TypeError."""
    if isinstance(value, _engine().Tensor):
        return value, _value_of(value)
    if isinstance(value, (bool, int, float)) or type(value).__module__ == "numpy":
        return None, np.asarray(value)
    if isinstance(value, (tuple, list)) and _is_number_list(value):
        return None, np.asarray(value)
    what = f"'{name}'" if name else "the output"
    raise FormulaTypeError(f"{what} is a {_kind(value)}, not a tensor or a number")


def _result_from_run(run: _Run, dtype: str) -> Result:
    return Result(value=run.value, dtype=_dtype_name(run.value.dtype), output_name=run.output_name)


def _dtype_name(dtype: Any) -> str:
    """``str(dtype)``, remembered: NumPy spells a dtype in Python (~2.5 µs a call)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype)
    return name


_DTYPE_NAMES: dict[Any, str] = {}


def _zeros_or(gradient: Any, tensor: Any, dtype: str) -> np.ndarray:
    if gradient is None:
        if _is_0d_float64(tensor._raw):
            return _numpy.Float64(0.0)
        return np.zeros(_shape_of(tensor), dtype=_float_dtype(tensor, dtype))
    return _value_of(gradient)


def _value_of(tensor: Any) -> Any:
    """A tensor's value for a Result: an ndarray, or a float backend's ``Float64``."""
    return _raw_value(tensor._raw, tensor)


def _raw_value(raw: Any, tensor: Any = None) -> Any:
    """:func:`_value_of` of a tensor's data ``raw`` (``tensor``: the tensor, if any)."""
    kind = type(raw)
    if kind is float:
        return _numpy.Float64(raw)
    if kind is np.ndarray and raw.ndim:
        return raw  # (what np.asarray(tensor._data) returns)
    if _is_0d_float64(raw):
        return _numpy.Float64(raw.item())
    return np.asarray(raw if tensor is None else tensor._data)


def _is_0d_float64(raw: Any) -> bool:
    """Whether a tensor's data (``_raw``) is a 0-d float64 (``tensor.dtype`` and ``shape``
    say so too, at a few times the cost: they build a dtype and a Size)."""
    kind = type(raw)
    if kind is float:
        return True
    return kind is not bool and raw.ndim == 0 and raw.dtype.char == "d"  # (.name: ~2 µs)


def _note_values(result: Result) -> None:
    bad = []
    Float64 = _numpy.Float64
    for name, g in result.gradients.items():
        # (a float backend's gradient without `_all_finite`'s call: most requests' case)
        if not (math.isfinite(g) if type(g) is Float64 else _all_finite(g)):
            bad.append(name)
    result.notes += value_notes(_all_finite(result.value), bad)


def _all_finite(array: np.ndarray) -> bool:
    if type(array) is _numpy.Float64:
        return math.isfinite(array)
    if array.dtype.kind != "f":
        return True
    if array.ndim == 0:
        return math.isfinite(array.item())
    return all_finite(array)


def _named_tensors(run: _Run) -> list[tuple[str, Any]]:
    """(name, tensor) pairs for labelling graph nodes: bound leaves first, then the program's."""
    from gradcalc import Tensor

    named = list(run.leaves.items())
    named += [(name, t) for name, t in run.interp.env.items() if isinstance(t, Tensor)]
    return named


def _recorder() -> Any:
    from gradcalc import _tensor

    return _tensor.record_values()


def _tensor(array: np.ndarray, dtype: str) -> Any:
    import gradcalc

    return gradcalc.tensor(array, dtype=getattr(gradcalc, dtype))


def _requires_grad(tensor: Any) -> bool:
    return bool(getattr(tensor, "requires_grad", False))


def _shape_of(tensor: Any) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _size_of(tensor: Any) -> int:
    return tensor.numel()


def _float_dtype(tensor: Any, dtype: str) -> str:
    kind = tensor.dtype
    return kind.name if kind.is_floating_point else dtype


def _as_float64(value: Any) -> np.ndarray:
    return np.array(value, dtype=np.float64)


def _check_size(elements: int, what: str, limits: Limits) -> None:
    """Before a result of ``elements`` is computed: one tensor's size limit, and the run's
    budget for the array and its output (`OUTPUT_BYTES` each)."""
    if elements > limits.max_elements:
        raise budgets.limit_error(
            "max_elements",
            f"{what} would have {elements:,} elements, more than the limit of "
            f"{limits.max_elements:,}",
        )
    budget = budgets.current()
    if budget is not None and elements >= budgets.LARGE:
        budget.allocate(elements, np.dtype(np.float64).itemsize + OUTPUT_BYTES, what)


OUTPUT_BYTES = 64
"""Memory an output element costs on its way out (a Python float in a list, its text)."""


def _check_output(result: Result) -> None:
    """The output (value and gradients) must fit the run's memory budget as text too."""
    budget = budgets.current()
    if budget is None:
        return
    elements = getattr(result.value, "size", 1)  # (a float backend's float: one)
    for gradient in result.gradients.values():
        elements += getattr(gradient, "size", 1)
    if elements >= budgets.LARGE:
        budget.check(elements * OUTPUT_BYTES, f"the output ({elements:,} numbers)")


def _check_dtype(dtype: str) -> str:
    text = str(dtype).removeprefix("gradcalc.").removeprefix("torch.")
    if text not in DTYPES:
        raise FormulaValueError(f"unknown dtype '{dtype}'; use float64 or float32")
    return text


def _shape_text(array: np.ndarray) -> str:
    return str(tuple(array.shape))


def _short_float(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def _kind(value: Any) -> str:
    if callable(value):
        return "function"
    return type(value).__name__


# ---------------------------------------------------------------- batch requests


def run_request(request: Any, limits: Limits | None = None) -> dict:
    """Evaluate one batch request (a dict as in CONTRACT §3); never raises.

    Returns the result object, or ``{"error": ...}``, with the request's ``id``
    first (``None`` when the request has none). NumPy's floating-point
    warnings are silenced: non-finite values are reported in ``note``.
    """
    request_id = request.get("id") if isinstance(request, dict) else None
    limits = limits or BATCH_LIMITS
    surface = _SURFACE.set("batch")
    try:
        result = None
        if type(request) is dict and _PLAIN_KEYS.issuperset(request):  # (most requests)
            formula = request.get("formula")
            if type(formula) is str:
                dtype = request.get("dtype") or "float64"
                result = _replayed(formula, request.get("vars"), dtype, limits, written=True)
        if result is not None:
            out = result_to_json(result, note_values=True)
        else:
            out = evaluate_json(**_request_arguments(request, limits))
    except LimitError as exc:
        budgets.rehint(exc, "batch")
        out = error_to_json(exc)
        _forget_frames(exc)
    except OverflowError as exc:  # an integer in the request beyond float64 (10**400)
        out = error_to_json(
            FormulaValueError(f"request holds a number too large for a float64 ({exc})")
        )
    except Exception as exc:
        out = error_to_json(exc)
        _forget_frames(exc)
    finally:
        _SURFACE.reset(surface)
    return {"id": request_id, **out}


_PLAIN_KEYS = frozenset(("id", "formula", "vars", "dtype"))
"""A request with no other keys may be answered by `_replayed` at once (what
`evaluate_json` does for it, without its checks of options it does not have)."""


def _forget_frames(exc: BaseException) -> None:
    """Clear the locals of the frames an answered error's tracebacks hold: they form a
    cycle with the exception (a frame holds it while it is raised) and would keep the
    failed run's tensors and graph alive until the cyclic collector ran, so a batch
    worker would carry each failed request's memory into the next ones."""
    import traceback

    seen = 0
    error: BaseException | None = exc
    while error is not None and seen < 8:
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__
        seen += 1


def run_line(
    line: str, line_number: int | None = None, limits: Limits | None = None
) -> tuple[str, bool]:
    """One JSON Lines request in, one JSON line out (without newline), and whether it succeeded.

    Malformed input (not JSON, not an object, no ``formula``) yields an error
    line. Never raises.
    """
    request = _read_request(line, line_number)
    if type(request) is tuple:
        return request
    return _answer(request, line_number, limits)


def _read_request(line: str, line_number: int | None) -> dict | tuple[str, bool]:
    """A JSON line's request object, or the error line (and False) that answers it."""
    try:
        request = _loads(line)
    except ValueError as exc:
        where = _where(line_number)
        reply = {"id": None, **_bad_request(f"{where}not valid JSON ({exc})")}
        return dumps(reply), False
    except RecursionError:  # json's decoder recurses: ~1,000 levels of brackets
        where = _where(line_number)
        reply = {"id": None, "error": {"type": "LimitError", "message": f"{where}{_TOO_DEEP}"}}
        return dumps(reply), False
    if not isinstance(request, dict):
        kind = type(request).__name__
        where = _where(line_number)
        reply = {"id": None, **_bad_request(f"{where}expected a JSON object, got {kind}")}
        return dumps(reply), False
    request_id = request.get("id")
    problem = None if type(request_id) in _PLAIN_IDS else _id_problem(request_id)
    if problem:
        where = _where(line_number)
        return dumps({"id": None, **_bad_request(f"{where}request 'id' {problem}")}), False
    return request


def _answer(request: dict, line_number: int | None, limits: Limits | None) -> tuple[str, bool]:
    """`run_line` of a request read by `_read_request`."""
    reply = run_request(request, limits)
    if "error" in reply and line_number is not None and not reply["error"].get("internal"):
        message = reply["error"]["message"]
        if message.startswith("request "):
            reply["error"]["message"] = _where(line_number) + message
    try:
        return dumps(reply), "error" not in reply
    except (TypeError, ValueError, RecursionError) as exc:  # a bug
        return dumps({"id": None, **error_to_json(exc)}), False


def _where(line_number: int | None) -> str:
    return f"input line {line_number}: " if line_number is not None else ""


_TOO_DEEP = "the JSON nests too deeply"
_PLAIN_IDS = frozenset((type(None), str, int, bool))
"""The ids `_id_problem` passes at once (most requests' ids: asked without its call)."""


def _loads(line: str) -> Any:
    """``json.loads(line)``: for a line that is one JSON value with no space around it
    (what a writer of JSON Lines writes), by the decoder's ``raw_decode``, without
    ``loads``'s two passes for white space; anything else, and any error, by ``json.loads``."""
    if type(line) is str:
        try:
            value, end = _RAW_DECODE(line)
        except ValueError:  # (space first, a BOM, an error: json.loads, and its error)
            return json.loads(line)
        if end == len(line):
            return value
    return json.loads(line)


_RAW_DECODE = json.JSONDecoder().raw_decode


def _id_problem(value: Any) -> str | None:
    """Why a request's id cannot be echoed in strict JSON (NaN, 1e400), or None."""
    if value is None or type(value) in (str, int, bool):
        return None
    if type(value) is float:
        if math.isfinite(value):
            return None
        return f"is {value} (NaN, or a number too large for a float): not strict JSON"
    try:
        dumps(value)
    except (TypeError, ValueError, RecursionError):
        return "holds NaN or Infinity (or a number too large for a float): not strict JSON"
    return None


def run_lines(
    lines: Iterable[tuple[int, str]], limits: Limits | None = None
) -> list[tuple[str, bool]]:
    """:func:`run_line` over (line number, text) pairs: one task for a process pool."""
    return [run_line(text, number, limits) for number, text in lines]


def run_block(
    block: bytes, first_line: int = 1, limits: Limits | None = None
) -> tuple[str, int, int]:
    """A block of JSON Lines (UTF-8, whole lines) in; (output lines, answered, failed) out.

    Blank lines are skipped but counted, so error messages name the input
    line ``first_line + i``. The unit of work ``gradcalc batch`` hands a
    worker: one pickled object each way, never a line at a time.

    The block's requests are answered grouped by formula, and written in input
    order. Requests are independent, so only speed depends on the order: one
    formula's requests in a row keep its trace, its ops' code and NumPy's in the
    processor's caches (W6's mixed batch, five kinds interleaved: 30 µs a request
    answered in input order, 25 grouped; each kind alone, 13 to 49).
    """
    text = block.decode("utf-8", errors="replace")
    requests = []
    for number, line in enumerate(text.split("\n"), start=first_line):
        if line.strip():
            requests.append((number, line))
    if not requests:
        return "", 0, 0
    out: list[Any] = [None] * len(requests)
    failed = 0
    # once for the block's requests (each request's and interpreter's then do nothing)
    with _numpy.errstate(), _numpy.ignoring_warnings():
        for index, (number, line) in enumerate(requests):
            request = _read_request(line, number)
            requests[index] = (_formula_of(request), index, number, request)
        requests.sort(key=_FIRST)  # (stable: a formula's requests stay in input order)
        for _, index, number, request in requests:
            if type(request) is not tuple:
                request = _answer(request, number, limits)
            out[index] = request[0]
            failed += not request[1]
    answered = len(out)
    out.append("")
    return "\n".join(out), answered, failed


_FIRST = operator.itemgetter(0)


def _formula_of(request: Any) -> str:
    """The text a block groups a request by: its formula, if it has one."""
    if type(request) is dict:
        formula = request.get("formula")
        if type(formula) is str:
            return formula
    return ""


def _bad_request(message: str) -> dict:
    return {"error": {"type": "ValueError", "message": message}}


def _request_arguments(request: Any, limits: Limits) -> dict[str, Any]:
    """Validate a batch request and map it to :func:`evaluate_json`'s keyword arguments."""
    if not isinstance(request, dict):
        raise FormulaValueError(f"request must be a JSON object, got {type(request).__name__}")
    if not _REQUEST_KEYS.issuperset(request):
        unknown = sorted(set(request) - _REQUEST_KEYS)
        raise FormulaValueError(
            f"request has unknown keys: {', '.join(map(str, unknown))}",
            hint="allowed: " + ", ".join(sorted(_REQUEST_KEYS)),
        )
    formula = request.get("formula")
    if not isinstance(formula, str):
        missing = "formula" not in request
        raise FormulaValueError(
            "request has no 'formula'" if missing else "request 'formula' must be a string"
        )
    variables = request.get("vars") or {}
    if not isinstance(variables, dict):
        raise FormulaValueError("request 'vars' must be an object of NAME: VALUE")
    wrt = request.get("wrt")
    if isinstance(wrt, str):
        wrt = [name.strip() for name in wrt.split(",") if name.strip()]
    elif wrt is not None and not (isinstance(wrt, list) and all(isinstance(n, str) for n in wrt)):
        raise FormulaValueError("request 'wrt' must be a list of names")
    of = request.get("of")
    if of is not None and not isinstance(of, str):
        raise FormulaValueError("request 'of' must be a name")
    seed = request.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise FormulaValueError("request 'seed' must be an integer")
    return {
        "formula": formula,
        "bindings": variables,
        "wrt": wrt,
        "of": of,
        "grad_output": request.get("grad_output"),
        "dtype": request.get("dtype") or "float64",
        "seed": seed,
        "check": bool(request.get("check", False)) or "check_tolerance" in request,
        "check_tolerance": request.get("check_tolerance"),
        "graph": bool(request.get("graph", False)),
        "limits": limits,
    }
