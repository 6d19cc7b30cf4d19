"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gradcalc import _tensor


@pytest.fixture(params=["native", "python"])
def backward_loops(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Run a test with the engine's per-node loops in C and again in Python (see _native.c):
    backward's loops, node recording and the forward's 0-d ops (Node and Tensor keep
    their C slots either way)."""
    if request.param == "native":
        if _tensor._native is None:
            pytest.skip("gradcalc._native was not built (no C compiler at install)")
    else:
        monkeypatch.setattr(_tensor, "_native", None)
        monkeypatch.setattr(_tensor, "_record", _tensor._record_py)
    yield request.param
