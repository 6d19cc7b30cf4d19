"""The one JSON encoding of gradcalc's answers (CONTRACT §3): results, errors, graphs, values.

Every writer of JSON (``--json``, ``gradcalc batch``, ``graph --format json``,
the REPL's ``:json`` mode) builds its objects here and writes them with
:func:`dumps`. Objects are strict-JSON-ready: a tensor is a number or nested
lists, non-finite numbers are the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"``, and :func:`dumps` refuses anything else.

Nothing here imports NumPy or the engine until a tensor is encoded: a JSON
error, or an answer of the float backend, costs only ``json``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping

from gradcalc import _numpy
from gradcalc.errors import FormulaError, GradError

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

    from gradcalc.graph import Graph

np = _numpy.bind(globals())
"""NumPy, imported when a tensor is first encoded (see `gradcalc._numpy`)."""

SCHEMA_VERSION = 1
GRAPH_VALUE_ELEMENTS = 1000
"""Tensors up to this many elements carry their values in the JSON graph; larger ones a shape."""


def dumps(obj: Any) -> str:
    """Strict JSON text: raises ValueError rather than writing NaN/Infinity literals."""
    return _STRICT.encode(obj)


_STRICT = json.JSONEncoder(allow_nan=False)
"""What ``json.dumps(obj, allow_nan=False)`` builds at every call (only the default
options have a shared encoder): made once, a third of a small batch line's encoding."""


def tensor_to_json(array: Any) -> Any:
    """A number (0-d) or nested lists; non-finite floats become "NaN"/"Infinity"/"-Infinity".

    float32 values are written with their shortest float32 spelling (0.1, not
    0.10000000149011612).
    """
    return _to_json(array)[0]


def _to_json(array: Any) -> tuple[Any, bool]:
    """`tensor_to_json`, and whether every entry was finite (as ``api._note_values``
    asks: a result written at once is checked once)."""
    kind = type(array)
    if kind is _numpy.Float64 or kind is float:  # the float backend's value (no NumPy)
        number = float(array)
        if math.isfinite(number):
            return number, True
        return finite_or_text(number), False
    if kind is _ndarray and array.dtype is _float64 and array.size <= SMALL_ARRAY:
        # the common small float64 vector or matrix: one list, checked as it is
        ndim = array.ndim
        if ndim == 1:
            flat = array.tolist()
            if all(map(math.isfinite, flat)):
                return flat, True
            return [finite_or_text(x) for x in flat], False
        if ndim == 2:
            rows = array.tolist()
            if all(map(math.isfinite, itertools.chain.from_iterable(rows))):
                return rows, True
    if isinstance(array, float) and kind.__module__ != "numpy":
        number = float(array)
        return finite_or_text(number), math.isfinite(number)
    array = np.asarray(array)
    if array.ndim == 0:  # the common case (a scalar result), without NumPy reductions
        item = array.item()
        if not isinstance(item, float):
            return item, True
        if array.dtype.itemsize < 8:
            item = float(str(array.dtype.type(item)))
        if math.isfinite(item):
            return item, True
        return finite_or_text(item), False
    floating = array.dtype.kind == "f"
    short = floating and array.dtype.itemsize < 8
    if array.size == 0 or not floating:
        return array.tolist(), True
    if short:
        flat = [float(str(x)) for x in array.reshape(-1)]
    elif array.size <= SMALL_ARRAY:
        flat = array.reshape(-1).tolist()
        if all(map(math.isfinite, flat)):
            return (flat if array.ndim == 1 else array.tolist()), True
    elif np.isfinite(array).all():
        return array.tolist(), True
    else:
        flat = array.reshape(-1).tolist()
    finite = all(map(math.isfinite, flat))
    return _nest([finite_or_text(x) for x in flat], array.shape), finite


SMALL_ARRAY = 64
"""Arrays up to this size are checked for non-finite entries in Python, on their list:
NumPy's ``isfinite(a).all()`` costs ~2 µs at any size, 5x the list's check of a 5-vector."""


class _NoArray:
    """``np.ndarray`` until NumPy is loaded: no value is one (a type check must not load it)."""


_ndarray: Any = _NoArray
_float64: Any = None
"""``np.ndarray`` and NumPy's float64 dtype, once NumPy is loaded (for `tensor_to_json`'s
fast path: an array of another float64 dtype object, byte-swapped say, takes the general
one)."""


def _with_numpy(numpy: Any) -> None:
    global _ndarray, _float64
    _ndarray, _float64 = numpy.ndarray, numpy.dtype(numpy.float64)


_numpy.when_loaded(_with_numpy)


def all_finite(array: Any) -> bool:
    """Whether every entry of a float ndarray is finite (as `tensor_to_json` checks)."""
    if array.size <= SMALL_ARRAY:
        ndim = array.ndim
        if ndim == 1:  # (the common vector and matrix without a reshaped copy)
            return all(map(math.isfinite, array.tolist()))
        if ndim == 2:
            return all(map(math.isfinite, itertools.chain.from_iterable(array.tolist())))
        return all(map(math.isfinite, array.reshape(-1).tolist()))
    return bool(np.isfinite(array).all())


def value_notes(value_finite: bool, bad_gradients: list[str]) -> list[str]:
    """The notes on non-finite values: the value's, then the gradients named."""
    notes = []
    if not value_finite:
        notes.append("The value is not finite everywhere (NaN or Infinity appeared).")
    if bad_gradients:
        names = ", ".join(bad_gradients)
        notes.append(f"Non-finite gradient entries (NaN or Infinity): {names}.")
    return notes


def finite_or_text(x: float) -> float | str:
    """``x`` itself when finite, else its contract spelling ("NaN", "Infinity", "-Infinity")."""
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


def _nest(flat: list, shape: tuple[int, ...]) -> list:
    """Regroup a non-empty flat list into nested lists of ``shape``, innermost axis first."""
    items = flat
    for length in reversed(shape[1:]):
        items = [items[i : i + length] for i in range(0, len(items), length)]
    return items


# ---------------------------------------------------------------- results and errors


def result_to_json(result: Any, note_values: bool = False) -> dict:
    """The contract's result object (schema_version 1) for an ``api.Result``.

    ``note_values``: the result's values were not yet checked for non-finite entries
    (``api._note_values``); their notes are added here, where each value is read
    anyway (a result written out at once).

    (Typed ``Any``: ``gradcalc.api`` imports this module, not the other way round.)
    """
    value, finite = _to_json(result.value)
    shape = list(result.value.shape)  # (``result.shape``, without its tuple)
    gradients = {}
    bad = []
    Float64 = _numpy.Float64
    for name, g in result.gradients.items():
        # (a float backend's finite gradient without `_to_json`'s call)
        if type(g) is Float64 and math.isfinite(g):
            gradients[name] = float(g)
        else:
            gradients[name], all_finite_g = _to_json(g)
            if not all_finite_g:
                bad.append(name)
    if note_values:
        result.notes += value_notes(finite, bad)
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "value": value,
        "shape": shape,
        "dtype": result.dtype,
        "gradients": gradients,
    }
    if result.output_name is not None:
        out["output"] = result.output_name
    if result.unused:
        out["unused"] = list(result.unused)
    if result.summed:
        out["summed"] = True
    if result.check is not None:
        out["check"] = {
            name: (None if err is None else finite_or_text(err))
            for name, err in result.check.items()
        }
        out["check_passed"] = result.check_passed
        out["check_tolerance"] = result.check_tolerance
    if result.jacobian is not None:
        out["jacobian"] = {name: tensor_to_json(j) for name, j in result.jacobian.items()}
    if result.hessian is not None:
        out["hessian"] = {
            row: {col: tensor_to_json(block) for col, block in cols.items()}
            for row, cols in result.hessian.items()
        }
    if result.graph is not None:
        out["graph"] = graph_to_json(result.graph)
    if result.notes:
        out["note"] = " ".join(result.notes)
    return out


def error_to_json(exc: BaseException) -> dict:
    """``{"error": {"type", "message", "line", "column", "hint"}}`` for any exception.

    Anything that is not a ``FormulaError`` (a bug) is reported as
    ``ValueError`` with ``"internal": true`` so a consumer still sees a contract type.
    """
    if isinstance(exc, FormulaError):
        body = exc.to_json()
    elif isinstance(exc, GradError):
        body = {"type": "ValueError", "message": str(exc)}
    elif isinstance(exc, MemoryError):
        body = {"type": "LimitError", "message": "not enough memory for this computation"}
    elif isinstance(exc, RecursionError):
        body = {"type": "LimitError", "message": "the computation nests too deeply"}
    else:
        body = {
            "type": "ValueError",
            "message": f"internal error: {type(exc).__name__}: {exc}",
            "internal": True,
        }
    return {"error": body}


# ---------------------------------------------------------------- graphs


def graph_to_json(graph: Graph, max_value_elements: int = GRAPH_VALUE_ELEMENTS) -> dict:
    """``{"root", "nodes": [...], "edges": [{"from", "to"}]}``; big tensors carry only a shape."""

    def tensor(array: np.ndarray | None) -> Any:
        if array is None or getattr(array, "size", 1) > max_value_elements:
            return None
        return tensor_to_json(array)

    nodes = [
        {
            "id": node.id,
            "op": node.op,
            "name": node.name,
            "shape": None if node.shape is None else list(node.shape),
            "value": tensor(node.value),
            "grad": tensor(node.grad),
        }
        for node in graph.nodes
    ]
    edges = [{"from": consumer, "to": source} for consumer, source in graph.edges]
    return {"root": graph.root, "nodes": nodes, "edges": edges}


# ---------------------------------------------------------------- language values (the REPL)


def explanation_to_json(explanation: Any, max_elements: int = GRAPH_VALUE_ELEMENTS) -> dict:
    """Explain mode (``gradcalc.explain``): the result object (CONTRACT §3) plus
    ``forward``, ``backward`` and ``totals``.

    Tensors over ``max_elements`` elements are written as null beside their shape.
    """
    import numpy as np

    def tensor(array: Any) -> Any:
        if array is None or np.size(array) > max_elements:
            return None
        return tensor_to_json(np.asarray(array))

    payload = result_to_json(explanation.result)
    payload.pop("graph", None)  # the forward list carries the same nodes
    payload["forward"] = [
        {
            "id": step.id,
            "op": step.op,
            **({"name": step.name} if step.name is not None else {}),
            "inputs": step.inputs,
            "expr": step.expr,
            "shape": None if step.value is None else list(np.shape(step.value)),
            "value": tensor(step.value),
        }
        for step in explanation.forward
    ]
    payload["backward"] = [
        {
            "node": step.node,
            "op": step.op,
            "expr": step.expr,
            "upstream": tensor(step.upstream),
            "to": [
                {
                    "input": part.input,
                    "local": tensor(part.local),
                    **({"describe": part.describe} if part.describe else {}),
                    "contribution": tensor(part.contribution),
                }
                for part in step.to
            ],
        }
        for step in explanation.backward
    ]
    payload["totals"] = {
        name: {
            "node": node_id,
            "contributions": [
                {"from": source, "value": tensor(value)}
                for source, value in explanation.contributions_to(node_id)
            ],
        }
        for name, node_id in explanation.variables().items()
    }
    return payload


def value_to_json(value: Any) -> dict:
    """A value a formula produced, as a result object without gradients.

    A tensor adds ``grad_fn`` (its node's name) or ``requires_grad``; a number
    or a shape is a tensor of its own; anything else (a function, a string)
    has ``"value": null`` and its text in ``note``.
    """
    import numpy as np

    from gradcalc import Size, Tensor

    if isinstance(value, Tensor):
        array = np.asarray(value)
        payload = _plain_result(array)
        if value.grad_fn is not None:
            payload["grad_fn"] = value.grad_fn.name()
        elif value.requires_grad:
            payload["requires_grad"] = True
        return payload
    if isinstance(value, bool | int | float | np.generic | Size):
        return _plain_result(np.asarray(value, dtype=np.int64 if isinstance(value, Size) else None))
    return {"schema_version": SCHEMA_VERSION, "value": None, "note": repr(value)}


def _plain_result(array: np.ndarray) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "value": tensor_to_json(array),
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "gradients": {},
    }


def variables_to_json(names: Mapping[str, Any]) -> dict:
    """``{"schema_version": 1, "vars": {name: ...}}``: each tensor's value, shape, dtype,
    ``grad_fn``/``requires_grad`` and stored ``grad``; other values by their kind."""
    from gradcalc import Tensor
    from gradcalc.builtins import kind_of

    listing: dict[str, Any] = {}
    for name, value in names.items():
        if isinstance(value, Tensor):
            entry = value_to_json(value)
            del entry["schema_version"], entry["gradients"]
            if value.grad is not None:
                entry["grad"] = value_to_json(value.grad)["value"]
            listing[name] = entry
        else:
            listing[name] = {"kind": kind_of(value).removeprefix("a ").removeprefix("the ")}
    return {"schema_version": SCHEMA_VERSION, "vars": listing}


def functions_to_json(functions: Mapping[str, Any]) -> list[dict]:
    """``gradcalc functions --json``: ``[{"name", "signature", "doc"}]`` in table order."""
    return [
        {"name": name, "signature": spec.signature, "doc": spec.doc}
        for name, spec in functions.items()
    ]


def derivatives_to_json(found: Any) -> dict:
    """``gradcalc diff --json``: each variable's derivative as formula text that runs
    alone (named intermediates first, ``t1 = ...; ...``), and notes when there are any."""
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "derivatives": dict(found.programs)}
    if found.intermediates:
        out["intermediates"] = {name: text for name, text in found.intermediates}
    if found.notes:
        out["notes"] = list(found.notes)
    return out
