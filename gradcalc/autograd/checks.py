"""``gradcheck`` and ``gradgradcheck``: PyTorch's tests of a derivative against
central finite differences, with its defaults (``eps=1e-6``, ``atol=1e-5``,
``rtol=1e-3``), messages and ``raise_exception`` behaviour.

The numerical Jacobian perturbs one input element at a time by ``±eps`` (on a
copy of the input) and takes ``(f(x + eps) - f(x - eps)) / (2 eps)``; the
analytical one is one ``grad`` call per output element, seeded one-hot. Both are
laid out as PyTorch prints them: a row per input element, a column per output
element. A pair agrees when ``|analytical - numerical| <= atol + rtol * |numerical|``.
``gradgradcheck`` is ``gradcheck`` of the function's vector-Jacobian product
(recorded with ``create_graph=True``) with respect to the inputs and the vector.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from gradcalc import _numpy
from gradcalc._tensor import Tensor, grad, leaf, wrap

np = _numpy.bind(globals())

__all__ = ["GradcheckError", "gradcheck", "gradgradcheck"]


class GradcheckError(RuntimeError):
    """A derivative disagrees with finite differences (PyTorch's ``GradcheckError``)."""


def _as_tuple(value: Any) -> tuple:
    if isinstance(value, tuple):
        return value
    if isinstance(value, list):
        return tuple(value)
    return (value,)


def _differentiable(values: tuple) -> list[int]:
    return [i for i, v in enumerate(values) if isinstance(v, Tensor) and v.requires_grad]


def _outputs(func: Callable[..., Any], args: tuple) -> tuple[Tensor, ...]:
    out = _as_tuple(func(*args))
    for i, o in enumerate(out):
        if not isinstance(o, Tensor):
            raise TypeError(
                f"gradcheck: output {i} of the function is a {type(o).__name__}, not a Tensor"
            )
    return out


def _numerical(
    func: Callable[..., Any], inputs: tuple, which: list[int], eps: float
) -> list[list[np.ndarray]]:
    """``[input][output]`` Jacobians by central differences, each (input numel, output numel)."""
    outputs = _outputs(func, inputs)
    sizes = [o.numel() for o in outputs]
    jacobians = []
    for i in which:
        x = inputs[i]
        base = np.array(x._data, dtype=x._data.dtype, copy=True)
        blocks = [np.zeros((base.size, size)) for size in sizes]
        for k in range(base.size):
            sides = []
            for step in (-eps, eps):
                data = base.copy()
                data.flat[k] = data.flat[k] + step
                args = list(inputs)
                args[i] = leaf(data, requires_grad=x.requires_grad)
                sides.append(_outputs(func, tuple(args)))
            for j, (low, high) in enumerate(zip(*sides, strict=True)):
                diff = np.asarray(high._data, np.float64) - np.asarray(low._data, np.float64)
                blocks[j][k] = diff.ravel() / (2 * eps)
        jacobians.append(blocks)
    return jacobians


def _analytical(
    func: Callable[..., Any], inputs: tuple, which: list[int], check_grad_dtypes: bool
) -> list[list[np.ndarray]]:
    """``[input][output]`` Jacobians from backward, one one-hot seed per output element."""
    outputs = _outputs(func, inputs)
    targets = [inputs[i] for i in which]
    jacobians = [[np.zeros((x.numel(), o.numel())) for o in outputs] for x in targets]
    for j, out in enumerate(outputs):
        if not out.requires_grad:
            continue
        seed = np.zeros(out.shape, dtype=np.asarray(out._data).dtype)
        for k in range(seed.size):
            seed.flat[k] = 1
            grads = grad(out, targets, wrap(seed.copy()), retain_graph=True, allow_unused=True)
            seed.flat[k] = 0
            for i, (g, x) in enumerate(zip(grads, targets, strict=True)):
                if g is None:
                    continue
                if check_grad_dtypes and (g.dtype != x.dtype or g.shape != x.shape):
                    raise GradcheckError("Gradient has dtype mismatch")
                jacobians[i][j][:, k] = np.asarray(g._data, np.float64).ravel()
    return jacobians


def _forward_mode(func: Callable[..., Any], inputs: tuple, which: list[int]) -> list:
    """``[input][output]`` Jacobians from Jacobian-vector products, one one-hot direction
    per input element (``functional.jvp``: forward mode by the double-backward trick)."""
    from gradcalc.autograd.functional import jvp

    def on_differentiable(*chosen: Tensor) -> tuple:
        args = list(inputs)
        for i, x in zip(which, chosen, strict=True):
            args[i] = x
        return _outputs(func, tuple(args))

    chosen = tuple(inputs[i] for i in which)
    sizes = [o.numel() for o in _outputs(func, inputs)]
    jacobians = [[np.zeros((x.numel(), size)) for size in sizes] for x in chosen]
    for position, x in enumerate(chosen):
        for k in range(x.numel()):
            directions = []
            for other in chosen:
                direction = np.zeros(tuple(other.shape), dtype=other._data.dtype)
                if other is x:
                    direction.flat[k] = 1
                directions.append(wrap(direction))
            _, columns = jvp(on_differentiable, chosen, tuple(directions))
            for j, column in enumerate(columns):
                jacobians[position][j][k] = np.asarray(column._data, np.float64).ravel()
    return jacobians


def _compare(numerical: list, other: list, which: list[int], atol: float, rtol: float,
             what: str) -> None:  # fmt: skip
    for position, (num_blocks, blocks) in enumerate(zip(numerical, other, strict=True)):
        for j, (n, a) in enumerate(zip(num_blocks, blocks, strict=True)):
            if not np.all(np.abs(a - n) <= atol + rtol * np.abs(n)):
                raise GradcheckError(
                    f"{what}Jacobian mismatch for output {j} with respect to input "
                    f"{which[position]},\nnumerical:{wrap(n)!r}\nanalytical:{wrap(a)!r}\n"
                )


def _warn_precision(inputs: tuple, which: list[int]) -> None:
    for i in which:
        if inputs[i]._data.dtype != np.float64:
            warnings.warn(
                f"Input #{i} requires gradient and is not a double precision floating point "
                "or complex. This check will likely fail if all the inputs are not of double "
                "precision floating point or complex. ",
                UserWarning,
                stacklevel=3,
            )


def gradcheck(
    func: Callable[..., Any],
    inputs: Any,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    nondet_tol: float = 0.0,
    check_undefined_grad: bool = True,
    check_grad_dtypes: bool = False,
    check_batched_grad: bool = False,
    check_batched_forward_grad: bool = False,
    check_forward_ad: bool = False,
    check_backward_ad: bool = True,
    fast_mode: bool = False,
    masked: bool | None = None,
) -> bool:
    """Whether ``func``'s backward agrees with central finite differences for every
    input that requires grad (float64 inputs recommended, as in PyTorch). On a
    mismatch: ``GradcheckError`` with both Jacobians, or False when not
    ``raise_exception``. Backward passes are deterministic here (``nondet_tol``)
    and there is no vmap (``check_batched_*``); ``fast_mode`` checks fully;
    ``check_forward_ad`` compares Jacobian-vector products (``functional.jvp``) too."""
    inputs = _as_tuple(inputs)
    which = _differentiable(inputs)
    if not which:
        raise ValueError(
            "gradcheck expects at least one input tensor to require gradient, but none of "
            "them have requires_grad=True."
        )
    _warn_precision(inputs, which)
    if not (check_backward_ad or check_forward_ad):
        return True
    try:
        numerical = _numerical(func, inputs, which, eps)
        if check_backward_ad:
            analytical = _analytical(func, inputs, which, check_grad_dtypes)
            _compare(numerical, analytical, which, atol, rtol, "")
        if check_forward_ad:
            forward = _forward_mode(func, inputs, which)
            _compare(numerical, forward, which, atol, rtol, "While considering the forward AD: ")
    except GradcheckError:
        if raise_exception:
            raise
        return False
    return True


def gradgradcheck(
    func: Callable[..., Any],
    inputs: Any,
    grad_outputs: Any = None,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    gen_non_contig_grad_outputs: bool = False,
    raise_exception: bool = True,
    nondet_tol: float = 0.0,
    check_undefined_grad: bool = True,
    check_grad_dtypes: bool = False,
    check_batched_grad: bool = False,
    check_fwd_over_rev: bool = False,
    check_rev_over_rev: bool = True,
    fast_mode: bool = False,
    masked: bool = False,
) -> bool:
    """``gradcheck`` of the second derivatives: of ``grad(func(inputs), inputs,
    grad_outputs, create_graph=True)`` with respect to the inputs and ``grad_outputs``
    (random in [-1, 1) when not given, from a fixed seed: the global generator is untouched)."""
    inputs = _as_tuple(inputs)
    if grad_outputs is None:
        rng = np.random.default_rng(0)
        grad_outputs = tuple(
            leaf(
                rng.uniform(-1, 1, tuple(o.shape)).astype(
                    o._data.dtype if o.is_floating_point() else np.float64
                ),
                requires_grad=True,
            )
            for o in _outputs(func, inputs)
        )
    else:
        grad_outputs = _as_tuple(grad_outputs)
    count = len(grad_outputs)
    which = _differentiable(inputs)

    def vector_jacobian(*args: Any) -> tuple[Tensor, ...]:
        given = tuple(a.requires_grad_() if isinstance(a, Tensor) else a for a in args[:-count])
        pairs = [
            (o, v)
            for o, v in zip(_outputs(func, given), args[-count:], strict=True)
            if o.requires_grad
        ]
        if not pairs:
            return ()
        outputs, vectors = zip(*pairs, strict=True)
        targets = [given[i] for i in which]
        grads = grad(list(outputs), targets, list(vectors), create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)

    return gradcheck(
        vector_jacobian,
        inputs + grad_outputs,
        eps=eps,
        atol=atol,
        rtol=rtol,
        raise_exception=raise_exception,
        check_grad_dtypes=check_grad_dtypes,
    )
