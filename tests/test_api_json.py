"""Strict JSON encoding of results and errors (CONTRACT §3), independent of any formula."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradcalc import api, jsonio
from gradcalc.api import Result, error_to_json, result_to_json, tensor_to_json
from gradcalc.errors import GradError, LimitError, ParseError


def strict_loads(text: str) -> object:
    def reject(constant: str) -> object:
        raise AssertionError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=reject)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.array(-12.0), -12.0),
        (np.array([1.0, 2.5]), [1.0, 2.5]),
        (np.array([[0.0, 1.0], [2.0, 3.0]]), [[0.0, 1.0], [2.0, 3.0]]),
        (np.array(np.inf), "Infinity"),
        (np.array([np.nan, -np.inf, 1.0]), ["NaN", "-Infinity", 1.0]),
        (np.array([[np.nan], [2.0]]), [["NaN"], [2.0]]),
        (np.array(0.1, dtype=np.float32), 0.1),
        (np.array([0.1, np.inf], dtype=np.float32), [0.1, "Infinity"]),
        (np.array([True, False]), [True, False]),
        (np.array(3, dtype=np.int64), 3),
        (np.zeros((2, 0)), [[], []]),
        (np.zeros((0, 3)), []),
        (np.arange(24.0).reshape(2, 3, 4), np.arange(24.0).reshape(2, 3, 4).tolist()),
    ],
)
def test_tensor_to_json(array: np.ndarray, expected: object) -> None:
    assert tensor_to_json(array) == expected
    strict_loads(api.dumps(tensor_to_json(array)))


def _spelled(items: object) -> object:
    """What the contract writes for ``array.tolist()``: non-finite floats as text."""
    if isinstance(items, list):
        return [_spelled(item) for item in items]
    return jsonio.finite_or_text(items) if isinstance(items, float) else items


@pytest.mark.parametrize("size", [1, 5, jsonio.SMALL_ARRAY, jsonio.SMALL_ARRAY + 1, 500])
def test_small_and_large_arrays_are_checked_for_non_finite_entries_alike(size: int) -> None:
    # Small arrays are checked on their list, large ones by NumPy: the same answers.
    values = np.random.default_rng(size).standard_normal(size)
    for bad in (None, np.nan, np.inf, -np.inf):
        array = values.copy()
        if bad is not None:
            array[size // 2] = bad
        assert jsonio.all_finite(array) == bool(np.isfinite(array).all())
        for shape in ((size,), (1, size), (size, 1)):
            shaped = array.reshape(shape)
            assert tensor_to_json(shaped) == _spelled(shaped.tolist())


def test_result_has_every_contract_key_and_exact_numbers() -> None:
    result = Result(
        value=np.array(-12.0),
        dtype="float64",
        gradients={"a": np.array(36.0), "b": np.array(-12.0)},
    )
    text = api.dumps(result_to_json(result))
    assert text == (
        '{"schema_version": 1, "value": -12.0, "shape": [], "dtype": "float64", '
        '"gradients": {"a": 36.0, "b": -12.0}}'
    )


def test_optional_keys_appear_when_present() -> None:
    result = Result(
        value=np.array([1.0, np.nan]),
        dtype="float64",
        gradients={"x": np.array([1.0, 1.0]), "c": np.array(0.0)},
        unused=["c"],
        summed=True,
        notes=["one.", "two."],
        check={"x": 1e-11, "c": None},
        output_name="y",
    )
    payload = strict_loads(api.dumps(result_to_json(result)))
    assert payload["value"] == [1.0, "NaN"]
    assert payload["shape"] == [2]
    assert payload["unused"] == ["c"]
    assert payload["summed"] is True
    assert payload["note"] == "one. two."
    assert payload["check"] == {"x": 1e-11, "c": None}
    assert payload["output"] == "y"


def test_errors_carry_the_contract_type_and_position() -> None:
    exc = ParseError("expected an operand after '*'", line=1, column=4, hint="remove one")
    assert error_to_json(exc) == {
        "error": {
            "type": "ParseError",
            "message": "expected an operand after '*'",
            "line": 1,
            "column": 4,
            "hint": "remove one",
        }
    }
    assert error_to_json(LimitError("too big"))["error"]["type"] == "LimitError"
    assert error_to_json(GradError("boom"))["error"]["type"] == "ValueError"
    assert error_to_json(MemoryError())["error"]["type"] == "LimitError"
    internal = error_to_json(ZeroDivisionError("x"))["error"]
    assert internal["type"] == "ValueError" and internal["internal"] is True


def test_dumps_refuses_non_finite_numbers() -> None:
    with pytest.raises(ValueError):
        api.dumps({"x": float("nan")})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"id": 3}', "no 'formula'"),
        ('{"id": 3, "formula": 5}', "'formula' must be a string"),
        ('{"id": 3, "formula": "a", "vars": [1]}', "'vars' must be an object"),
        ('{"id": 3, "formula": "a", "wrt": 5}', "'wrt' must be a list"),
        ('{"id": 3, "formula": "a", "seed": "x"}', "'seed' must be an integer"),
        ('{"id": 3, "formula": "a", "color": 1}', "unknown keys: color"),
    ],
)
def test_malformed_requests_give_error_lines(line: str, message: str) -> None:
    text, ok = api.run_line(line, 9)
    assert not ok
    payload = strict_loads(text)
    assert message in payload["error"]["message"]
    assert payload["error"]["message"].startswith("input line 9: ")
    assert payload["id"] == (3 if line.startswith('{"id": 3') else None)
    assert set(payload) == {"id", "error"}


class _Row(np.ndarray):
    """An ndarray subclass: `tensor_to_json` takes its general path for it."""


@pytest.mark.parametrize(
    "array",
    [
        np.array([1.0, -0.1, 1e300]),
        np.array([np.nan, 2.0, -np.inf]),
        np.zeros(0),
        np.zeros((3, 0)),
        np.arange(6.0).reshape(2, 3),
        np.arange(12.0).reshape(3, 4).T,  # (not contiguous)
        np.array([[1.0, np.inf], [np.nan, -0.0]]),
        np.arange(float(jsonio.SMALL_ARRAY)).reshape(8, 8),
    ],
)
def test_small_float64_arrays_are_written_as_by_the_general_path(array: np.ndarray) -> None:
    fast = tensor_to_json(array)
    assert fast == tensor_to_json(array.view(_Row)) == _spelled(array.tolist())
    assert api.dumps(fast) == api.dumps(tensor_to_json(array.view(_Row)))


@pytest.mark.parametrize(
    "obj",
    [
        {"id": None, "a": [1, 2.5, -0.0, 1e300, True, False, None], "é": "ü\n\"'"},
        [{"x": {"y": [[1.0]]}}, (1, 2), 10**30],
        "text",
        0.1,
        {"value": jsonio._numpy.Float64(2.5)},
    ],
)
def test_dumps_writes_what_json_dumps_writes(obj: object) -> None:
    assert api.dumps(obj) == json.dumps(obj, allow_nan=False)


def test_dumps_raises_what_json_dumps_raises() -> None:
    cycle: list = []
    cycle.append(cycle)
    for bad in (cycle, {"x": [float("inf")]}, {"x": object()}, {(1, 2): 3}):
        with pytest.raises(Exception) as ours:
            api.dumps(bad)
        with pytest.raises(Exception) as theirs:
            json.dumps(bad, allow_nan=False)
        assert type(ours.value) is type(theirs.value)
        assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize(
    "line",
    [
        '{"formula": "2*x", "vars": {"x": 1}}',
        '  {"formula": "2*x", "vars": {"x": 1}}\r',
        '\ufeff{"formula": "2"}',
        '{"formula": "2"} {"formula": "3"}',
        '{"formula": "2", "vars": {"x": [1, 2}}',
        '{"formula": "2", "id": "\\ud800"}',
        "",
    ],
)
def test_request_lines_are_read_as_json_loads_reads_them(line: str) -> None:
    try:
        expected = json.loads(line)
    except ValueError as exc:
        text, ok = api.run_line(line, 2)
        assert not ok and str(exc) in strict_loads(text)["error"]["message"]
        return
    assert api._loads(line) == expected
