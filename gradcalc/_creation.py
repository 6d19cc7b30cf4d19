"""Tensor constructors with PyTorch's signatures and defaults, and the random generator.

Defaults as PyTorch: the default dtype (float32 unless ``set_default_dtype``)
unless a dtype is given (``arange``/``full`` infer int64 or bool from integer or
boolean arguments), ``requires_grad=False``; ``device=`` must name the CPU.
Random numbers come from a NumPy PCG64 generator; ``manual_seed`` makes them
reproducible (they are not PyTorch's streams).
"""

from __future__ import annotations

import os

from gradcalc import _numpy
from gradcalc._tensor import (
    Size,
    Tensor,
    as_np_dtype,
    check_device,
    default_float,
    leaf,
    make_tensor,
)

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

np = _numpy.bind(globals())


def _size(size: tuple, keyword: Any = None) -> tuple[int, ...]:
    if keyword is not None:
        size = (keyword,)
    if len(size) == 1 and isinstance(size[0], (tuple, list, Size)):
        size = tuple(size[0])
    dims = tuple(int(d) for d in size)
    for d in dims:
        if d < 0:
            raise RuntimeError(f"Trying to create tensor with negative dimension {d}: {list(dims)}")
    return dims


def _float_dtype(dtype: Any) -> np.dtype:
    found = as_np_dtype(dtype)
    return default_float() if found is None else found


def tensor(
    data: Any,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
    pin_memory: bool = False,
) -> Tensor:
    """A new leaf holding a copy of ``data`` (floats → float32, ints → int64, bools → bool)."""
    check_device(device)
    return make_tensor(data, dtype=dtype, requires_grad=requires_grad)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    check_device(device)
    if isinstance(data, Tensor) and (dtype is None or as_np_dtype(dtype) == data._data.dtype):
        return data
    return make_tensor(data, dtype=dtype)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing ``array``'s memory, as PyTorch's ``from_numpy``."""
    return leaf(np.asarray(array))


def zeros(
    *shape: Any,
    size: Any = None,
    dtype: Any = None,
    requires_grad: bool = False,
    device: Any = None,
    out: Any = None,
) -> Tensor:
    check_device(device)
    return leaf(np.zeros(_size(shape, size), dtype=_float_dtype(dtype)), requires_grad)


def ones(
    *shape: Any,
    size: Any = None,
    dtype: Any = None,
    requires_grad: bool = False,
    device: Any = None,
    out: Any = None,
) -> Tensor:
    check_device(device)
    return leaf(np.ones(_size(shape, size), dtype=_float_dtype(dtype)), requires_grad)


def empty(
    *shape: Any,
    size: Any = None,
    dtype: Any = None,
    requires_grad: bool = False,
    device: Any = None,
    out: Any = None,
) -> Tensor:
    check_device(device)
    return zeros(*shape, size=size, dtype=dtype, requires_grad=requires_grad)


def full(
    size: Any,
    fill_value: Any,
    *,
    dtype: Any = None,
    requires_grad: bool = False,
    device: Any = None,
) -> Tensor:
    check_device(device)
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    np_dtype = as_np_dtype(dtype)
    if np_dtype is None:
        if isinstance(fill_value, (bool, np.bool_)):
            np_dtype = np.dtype(np.bool_)
        elif isinstance(fill_value, (int, np.integer)):
            np_dtype = np.dtype(np.int64)
        else:
            np_dtype = default_float()
    return leaf(np.full(_size((size,)), fill_value, dtype=np_dtype), requires_grad)


def _like(input: Tensor, dtype: Any) -> tuple[tuple[int, ...], np.dtype]:
    np_dtype = as_np_dtype(dtype)
    return input._data.shape, input._data.dtype if np_dtype is None else np_dtype


def zeros_like(
    input: Tensor, *, dtype: Any = None, requires_grad: bool = False, device: Any = None
) -> Tensor:
    check_device(device)
    shape, np_dtype = _like(input, dtype)
    return leaf(np.zeros(shape, dtype=np_dtype), requires_grad)


def ones_like(
    input: Tensor, *, dtype: Any = None, requires_grad: bool = False, device: Any = None
) -> Tensor:
    check_device(device)
    shape, np_dtype = _like(input, dtype)
    return leaf(np.ones(shape, dtype=np_dtype), requires_grad)


def empty_like(
    input: Tensor, *, dtype: Any = None, requires_grad: bool = False, device: Any = None
) -> Tensor:
    check_device(device)
    return zeros_like(input, dtype=dtype, requires_grad=requires_grad)


def full_like(
    input: Tensor,
    fill_value: Any,
    *,
    dtype: Any = None,
    requires_grad: bool = False,
    device: Any = None,
) -> Tensor:
    check_device(device)
    shape, np_dtype = _like(input, dtype)
    return leaf(np.full(shape, fill_value, dtype=np_dtype), requires_grad)


def arange(
    start: Any,
    end: Any = None,
    step: Any = 1,
    *,
    dtype: Any = None,
    requires_grad: bool = False,
    device: Any = None,
) -> Tensor:
    """``[start, end)`` by ``step``; int64 when every argument is an integer, else float32."""
    check_device(device)
    if end is None:
        start, end = 0, start
    values = [v.item() if isinstance(v, Tensor) else v for v in (start, end, step)]
    if values[2] == 0:
        raise RuntimeError("step must be nonzero")
    np_dtype = as_np_dtype(dtype)
    if np_dtype is None:
        integral = all(isinstance(v, (int, np.integer)) for v in values)
        np_dtype = np.dtype(np.int64) if integral else default_float()
    count = max(int(np.ceil((values[1] - values[0]) / values[2])), 0)
    data = (values[0] + np.arange(count, dtype=np.float64) * values[2]).astype(np_dtype)
    if np_dtype.kind in "iu":
        data = np.arange(values[0], values[1], values[2], dtype=np_dtype)
    return leaf(data, requires_grad)


def linspace(
    start: Any,
    end: Any,
    steps: int,
    *,
    dtype: Any = None,
    requires_grad: bool = False,
    device: Any = None,
) -> Tensor:
    check_device(device)
    data = np.linspace(float(start), float(end), int(steps), dtype=np.float64)
    return leaf(data.astype(_float_dtype(dtype)), requires_grad)


def eye(
    n: int,
    m: int | None = None,
    *,
    dtype: Any = None,
    requires_grad: bool = False,
    device: Any = None,
) -> Tensor:
    check_device(device)
    return leaf(
        np.eye(int(n), None if m is None else int(m), dtype=_float_dtype(dtype)), requires_grad
    )


# ---------------------------------------------------------------- random numbers


class Generator:
    """A seedable source of random tensors (``torch.Generator``), PCG64 underneath."""

    def __init__(self, device: Any = "cpu") -> None:
        self._seed = int.from_bytes(os.urandom(8)) >> 1
        self._rng: np.random.Generator | None = None

    def manual_seed(self, seed: int) -> Generator:
        self._seed = int(seed)
        self._rng = None  # made at the first draw (a seeded run of scalars draws none)
        return self

    def initial_seed(self) -> int:
        return self._seed

    def seed(self) -> int:
        self.manual_seed(int.from_bytes(os.urandom(8)) >> 1)
        return self._seed

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.Generator(np.random.PCG64(self._seed))
        return self._rng


default_generator = Generator()


def manual_seed(seed: int) -> Generator:
    """Seed the default generator (every later ``rand``/``randn`` call is reproducible)."""
    return default_generator.manual_seed(seed)


def seed() -> int:
    return default_generator.seed()


def initial_seed() -> int:
    return default_generator.initial_seed()


def _rng(generator: Generator | None) -> np.random.Generator:
    return (default_generator if generator is None else generator).rng


def rand(
    *shape: Any,
    size: Any = None,
    generator: Generator | None = None,
    dtype: Any = None,
    requires_grad: bool = False,
    device: Any = None,
    out: Any = None,
) -> Tensor:
    """Uniform on [0, 1)."""
    check_device(device)
    np_dtype = _float_dtype(dtype)
    data = _rng(generator).random(_size(shape, size), dtype=np.float64).astype(np_dtype)
    return leaf(np.asarray(data), requires_grad)


def randn(
    *shape: Any,
    size: Any = None,
    generator: Generator | None = None,
    dtype: Any = None,
    requires_grad: bool = False,
    device: Any = None,
    out: Any = None,
) -> Tensor:
    """Standard normal."""
    check_device(device)
    np_dtype = _float_dtype(dtype)
    data = _rng(generator).standard_normal(_size(shape, size), dtype=np.float64).astype(np_dtype)
    return leaf(np.asarray(data), requires_grad)


def randint(
    low: int,
    high: int | None = None,
    size: Any = (),
    *,
    generator: Generator | None = None,
    dtype: Any = None,
    requires_grad: bool = False,
    device: Any = None,
) -> Tensor:
    check_device(device)
    if high is None:
        low, high = 0, low
    np_dtype = as_np_dtype(dtype) or np.dtype(np.int64)
    data = _rng(generator).integers(low, high, _size((size,)), endpoint=False).astype(np_dtype)
    return leaf(np.asarray(data), requires_grad)


def rand_like(
    input: Tensor, *, dtype: Any = None, requires_grad: bool = False, device: Any = None
) -> Tensor:
    check_device(device)
    shape, np_dtype = _like(input, dtype)
    return rand(shape, dtype=np_dtype, requires_grad=requires_grad)


def randn_like(
    input: Tensor, *, dtype: Any = None, requires_grad: bool = False, device: Any = None
) -> Tensor:
    check_device(device)
    shape, np_dtype = _like(input, dtype)
    return randn(shape, dtype=np_dtype, requires_grad=requires_grad)


def normal(
    mean: float = 0.0,
    std: float = 1.0,
    size: Any = (),
    *,
    generator: Generator | None = None,
    dtype: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    data = _rng(generator).normal(mean, std, _size((size,))).astype(_float_dtype(dtype))
    return leaf(np.asarray(data), requires_grad)
