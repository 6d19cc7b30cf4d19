"""``gradcalc.nn.functional``: the functional-style PyTorch names tutorials use.

The losses (``mse_loss``, ``l1_loss``, ``binary_cross_entropy_with_logits``,
``nll_loss``, ``cross_entropy``) and ``linear`` are declared here, once, in the
registry's style (``@deffunction``, see :mod:`gradcalc.ops`), so they are formula
built-ins too. ``mse_loss``, ``binary_cross_entropy_with_logits`` and ``nll_loss``
run the registry's fused ops (PyTorch's ``MseLossBackward0``, ...; checked by the
registry-wide gradcheck), the others compose registry ops. Class-index targets
only select (a constant mask); loss weights are constants.
"""

from __future__ import annotations

from gradcalc import _functions as F
from gradcalc import _numpy
from gradcalc import ops as O
from gradcalc._tensor import Tensor, apply1, apply2
from gradcalc.ops import deffunction

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

np = _numpy.bind(globals())

_NN = {"namespace": "nn.functional", "method": False}


@deffunction("mean (or sum) of the squared differences (x - target)**2", **_NN)
def mse_loss(
    input: Tensor,
    target: Any,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    reduction = _check_reduction(_reduction(size_average, reduce, reduction))
    if weight is not None:
        diff = input - target
        return _reduce(diff * diff * weight, reduction)
    return apply2(O.MSE_LOSS, F._as_tensor(input), F._operand(target), reduction)


@deffunction("mean (or sum) of the absolute differences |x - target|", **_NN)
def l1_loss(
    input: Tensor,
    target: Any,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
) -> Tensor:
    return _reduce(F.abs(input - target), _reduction(size_average, reduce, reduction))


@deffunction("mean (or sum) of log(1 + exp(-x)) terms: binary cross-entropy of logits x", **_NN)
def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Any,
    weight: Tensor | None = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """``(1 - t) x + (1 + (pos_weight - 1) t) softplus(-x)``, stable for any ``x``
    (softplus without its linear threshold), times ``weight``; gradients for both."""
    x = F._as_tensor(input)
    t = F._as_tensor(target)
    if t.shape != x.shape:
        raise ValueError(f"Target size ({t.shape!r}) must be the same as input size ({x.shape!r})")
    reduction = _check_reduction(_reduction(size_average, reduce, reduction))
    if x.dtype != t.dtype:
        x, t = F._promote(x, t)
    arrays = [None if w is None else _constant_like(w, x) for w in (weight, pos_weight)]
    return apply2(O.BCE_WITH_LOGITS, x, t, *arrays, reduction)


@deffunction(
    "negative log-likelihood of class indices under log-probabilities x (classes on axis 1)",
    **_NN,
)
def nll_loss(
    input: Tensor,
    target: Any,
    weight: Tensor | None = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
) -> Tensor:
    x = F._as_tensor(input)
    t = F._as_tensor(target)
    reduction = _reduction(size_average, reduce, reduction)
    reduction = _check_reduction(reduction)
    negated, counts = _pick(x, t, weight, ignore_index)
    class_dim = 0 if x.ndim == 1 else 1
    return apply1(O.NLL_LOSS, x, negated, class_dim, reduction, counts.total)


@deffunction(
    "cross-entropy of logits x (classes on axis 1) and class indices or probabilities", **_NN
)
def cross_entropy(
    input: Tensor,
    target: Any,
    weight: Tensor | None = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """PyTorch's ``cross_entropy``: ``log_softmax`` over the class axis (1, or 0 for one
    sample), then the negative log-likelihood of class indices (with ``ignore_index``) or
    the cross-entropy of class probabilities (a floating target of the input's shape);
    ``weight`` per class and ``label_smoothing`` as PyTorch defines them."""
    x = F._as_tensor(input)
    t = F._as_tensor(target)
    reduction = _check_reduction(_reduction(size_average, reduce, reduction))
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    class_dim = 0 if x.ndim == 1 else 1
    if x.ndim == 0:
        raise RuntimeError("cross_entropy: input must have a class dimension (got a 0-d tensor)")
    classes = x.shape[class_dim]
    logp = F.log_softmax(x, class_dim)
    wide = None if weight is None else _along(F._as_tensor(weight), x.ndim, class_dim)
    if t.shape == x.shape and t.is_floating_point():  # class probabilities
        if label_smoothing > 0:
            t = t * (1 - label_smoothing) + label_smoothing / classes
        terms = logp * t if wide is None else logp * t * wide
        if reduction == "none":
            return -F.sum(terms, class_dim)
        total = -F.sum(terms)
        return total if reduction == "sum" else total / (x.numel() / classes)
    negated, counts = _pick(logp, t, weight, ignore_index)
    nll = apply1(O.NLL_LOSS, logp, negated, class_dim, reduction, counts.total)
    if label_smoothing <= 0:
        return nll
    smooth = -F.sum(logp if wide is None else logp * wide, class_dim)
    smooth = smooth * F._wrap(_as_float(counts.ignored == 0, smooth))
    if reduction == "mean":
        smooth = F.sum(smooth) / counts.total
    elif reduction == "sum":
        smooth = F.sum(smooth)
    return (1 - label_smoothing) * nll + smooth * (label_smoothing / classes)


class _Counts:
    """What a mean over class-index targets divides by: the weights of the kept targets."""

    __slots__ = ("ignored", "total")

    def __init__(self, ignored: np.ndarray, total: Any) -> None:
        self.ignored = ignored
        self.total = total


def _pick(
    logp: Tensor, target: Tensor, weight: Any, ignore_index: int
) -> tuple[np.ndarray, _Counts]:
    """What NLL_LOSS reads: -weight at each target's class (+0.0 elsewhere, and for an
    ignored target), and the weights summed over kept targets. Targets are class
    indices: integers, or (from the formula language) floats holding whole numbers."""
    class_dim = 0 if logp.ndim == 1 else 1
    expected = tuple(logp.shape[:class_dim]) + tuple(logp.shape[class_dim + 1 :])
    if tuple(target.shape) != expected:
        if target.ndim >= 1 and logp.ndim >= 2 and target.shape[0] != logp.shape[0]:
            raise ValueError(
                f"Expected input batch_size ({logp.shape[0]}) to match target batch_size "
                f"({target.shape[0]})."
            )
        raise RuntimeError(
            f"expected target of shape {list(expected)} (class indices) or "
            f"{list(logp.shape)} (class probabilities), got {list(target.shape)}"
        )
    labels = np.asarray(target._data)
    if labels.dtype.kind == "f":
        if not np.all(np.mod(labels, 1) == 0):
            raise RuntimeError("class-index targets must be whole numbers")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iu":
        raise RuntimeError(f"expected class-index targets of an integer dtype, got {labels.dtype}")
    ignored = labels == ignore_index
    classes = logp.shape[class_dim]
    bad = (~ignored) & ((labels < 0) | (labels >= classes))
    if np.any(bad):
        raise IndexError(f"Target {labels[bad].flat[0]} is out of bounds.")
    shape = [1] * logp.ndim
    shape[class_dim] = classes
    onehot = np.arange(classes).reshape(shape) == np.expand_dims(labels, class_dim)
    onehot &= ~np.expand_dims(ignored, class_dim)
    w = 1.0 if weight is None else np.asarray(F._as_tensor(weight)._data).reshape(shape)
    # -weight at the target's class, +0.0 elsewhere: other classes' gradients are 0, not -0
    negated = _as_float(np.where(onehot, -w, 0.0), logp)
    return negated, _Counts(ignored, float(-np.sum(negated)))


def _along(weight: Tensor, ndim: int, class_dim: int) -> Tensor:
    shape = [1] * ndim
    shape[class_dim] = weight.numel()
    return weight.reshape(shape)


def _as_float(values: np.ndarray, like: Tensor) -> np.ndarray:
    return np.asarray(values, dtype=np.asarray(like._data).dtype)


def _constant_like(value: Any, like: Tensor) -> np.ndarray:
    """A weight as a constant array of ``like``'s dtype (loss weights get no gradient)."""
    data = value._data if isinstance(value, Tensor) else value
    return np.asarray(data, dtype=np.asarray(like._data).dtype)


def _check_reduction(reduction: str) -> str:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return reduction


def _reduction(size_average: Any, reduce: Any, reduction: str) -> str:
    """PyTorch's legacy ``size_average``/``reduce`` flags, mapped onto ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


@deffunction("x @ weight.T + bias, a fully connected layer", **_NN)
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    out = F.matmul(input, F.t(weight) if weight.ndim == 2 else weight)
    return out if bias is None else out + bias


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return F.mean(values)
    if reduction == "sum":
        return F.sum(values)
    if reduction == "none":
        return values
    raise ValueError(f"{reduction} is not a valid value for reduction")


relu = F.relu
sigmoid = F.sigmoid
tanh = F.tanh
softplus = F.softplus
softmax = F.softmax
log_softmax = F.log_softmax
