"""fnml.losses against real torch.nn.functional: values and gradients for every option combination.

Each parity test builds the same inputs once (numpy), runs torch's loss with autograd and fnml's loss
with ``jax.vjp`` under the same random cotangent, and compares value and gradients w.r.t. the input (and
the target where torch gives one). float64 checks exactness (1e-12), float32 the working tolerance.
Inputs contain the awkward points on purpose: exact kinks (|d| = 0, beta, delta), BCE probabilities at
0 and 1 (the -100 clamp), logits of +-50 and +-1000.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_trees_close, cache_size, finite_max_abs_diff, jax_value_and_vjp, torch_value_and_vjp

from fnml import losses

REDUCTIONS = ("mean", "sum", "none")
KL_MEAN_WARNING = "ignore:reduction. 'mean' divides the total loss:UserWarning"


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------


def compare_with_torch(torch_fn, fnml_fn, arrays, differentiable, dtype, *, seed=0):
    """Value and vector-Jacobian products of fnml vs torch; returns the max |diff| seen.

    ``arrays``: numpy arguments shared by both sides; ``differentiable``: indices of the arguments to
    differentiate (torch requires_grad / jax.vjp primals). The cotangent is one random array of the
    output's shape, so every per-element gradient is exercised, also for reduction="none".
    """

    def draw(shape):  # one random cotangent of the output's shape, the same for both sides
        return np.random.default_rng(seed).standard_normal(shape).astype(dtype)

    torch_value, torch_grads = torch_value_and_vjp(torch_fn, arrays, differentiable, draw)
    cotangent = draw(tuple(torch_value.shape))
    fnml_value, fnml_grads = jax_value_and_vjp(fnml_fn, arrays, differentiable, cotangent)

    assert fnml_value.dtype == np.dtype(dtype), f"loss dtype {fnml_value.dtype}, expected {dtype}"
    actual = {"value": fnml_value, "grads": list(fnml_grads)}
    expected = {"value": torch_value, "grads": list(torch_grads)}
    assert_trees_close(actual, expected, dtype=dtype)
    worst = max(
        [finite_max_abs_diff(fnml_value, torch_value.detach())]
        + [finite_max_abs_diff(g, tg) for g, tg in zip(fnml_grads, torch_grads)]
    )
    if dtype == "float64":
        # Exactness: away from the 1e12-sized BCE gradients at x in {0, 1}, the absolute difference is
        # rounding (<= 1e-12). Those entries are covered by the relative tolerance above.
        scale = max(
            [1.0, float(np.nanmax(np.abs(np.nan_to_num(torch_value.detach().numpy(), posinf=0, neginf=0))))]
            + [float(np.max(np.abs(np.nan_to_num(g.numpy(), posinf=0, neginf=0)), initial=0)) for g in torch_grads]
        )
        assert worst <= 1e-12 * scale, f"float64 max |diff| {worst:.3g} exceeds 1e-12 (scale {scale:.3g})"
    return worst


def rng_for(*parts) -> np.random.Generator:
    """A deterministic generator per parameter combination (crc32 of the ids: stable across runs)."""
    return np.random.default_rng(zlib.crc32(repr(parts).encode()))


# ---------------------------------------------------------------------------------------------------
# Regression losses: mse, l1, smooth_l1, huber
# ---------------------------------------------------------------------------------------------------

# (name, fnml function, torch function) with the option under test bound in both.
REGRESSION_CASES = {
    "mse": (losses.mse_loss, F.mse_loss),
    "l1": (losses.l1_loss, F.l1_loss),
    "smooth_l1-beta1": (
        functools.partial(losses.smooth_l1_loss, beta=1.0),
        functools.partial(F.smooth_l1_loss, beta=1.0),
    ),
    "smooth_l1-beta0.5": (
        functools.partial(losses.smooth_l1_loss, beta=0.5),
        functools.partial(F.smooth_l1_loss, beta=0.5),
    ),
    "smooth_l1-beta0": (
        functools.partial(losses.smooth_l1_loss, beta=0.0),
        functools.partial(F.smooth_l1_loss, beta=0.0),
    ),
    "huber-delta1": (
        functools.partial(losses.huber_loss, delta=1.0),
        functools.partial(F.huber_loss, delta=1.0),
    ),
    "huber-delta2.5": (
        functools.partial(losses.huber_loss, delta=2.5),
        functools.partial(F.huber_loss, delta=2.5),
    ),
}


def regression_inputs(dtype):
    """(input, target) of shape (4, 5): 10 exact kinks (d in 0, +-0.5, +-1, +-2.5) and 10 random entries."""
    kinks_target = np.full(10, 0.25)
    kinks_input = kinks_target + np.array([0.0, 0.0, 0.5, -0.5, 1.0, -1.0, 2.5, -2.5, 0.0, 1.0])
    rng = np.random.default_rng(1)
    random_input, random_target = rng.standard_normal(10) * 2, rng.standard_normal(10)
    x = np.concatenate([kinks_input, random_input]).reshape(4, 5).astype(dtype)
    y = np.concatenate([kinks_target, random_target]).reshape(4, 5).astype(dtype)
    return x, y


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", list(REGRESSION_CASES))
def test_regression_losses_match_torch(case, reduction, dtype):
    fnml_fn, torch_fn = REGRESSION_CASES[case]
    x, y = regression_inputs(dtype)
    compare_with_torch(
        lambda a, b: torch_fn(a, b, reduction=reduction),
        lambda a, b: fnml_fn(a, b, reduction=reduction),
        [x, y],
        differentiable=(0, 1),
        dtype=dtype,
    )


def test_l1_gradient_is_zero_at_the_kink_unlike_jnp_abs():
    x, y = jnp.array([1.0, 2.0, -3.0]), jnp.array([1.0, 0.0, 0.0])
    grad = jax.grad(losses.l1_loss)(x, y)
    torch_x = torch.tensor(np.asarray(x), requires_grad=True)
    F.l1_loss(torch_x, torch.tensor(np.asarray(y))).backward()
    assert_trees_close(grad, torch_x.grad)
    assert float(grad[0]) == 0.0
    # The point of the hand-written |d|: JAX's own abs has gradient 1 at 0.
    assert float(jax.grad(lambda v: jnp.abs(v - 1.0))(1.0)) == 1.0


# ---------------------------------------------------------------------------------------------------
# Classification: cross_entropy and nll_loss
# ---------------------------------------------------------------------------------------------------

NUM_CLASSES = 4
# input rank -> (input shape, class-index target shape)
RANK_SHAPES = {
    "unbatched(C)": ((NUM_CLASSES,), ()),
    "2d(N,C)": ((6, NUM_CLASSES), (6,)),
    "4d(N,C,H,W)": ((2, NUM_CLASSES, 2, 3), (2, 2, 3)),
}
# ignore variants: ignore_index passed, value written into some targets (None: none ignored)
IGNORE_VARIANTS = {
    "no-ignored": (-100, None),
    "ignore-100": (-100, -100),
    "ignore-in-range1": (1, 1),
}


def class_logits(shape, dtype, rng):
    """Logits with extremes: +-30 entries and an exact 0 beside N(0, 2) values."""
    logits = rng.standard_normal(shape) * 2
    flat = logits.reshape(-1)
    flat[:3] = [30.0, -30.0, 0.0]
    return flat.reshape(shape).astype(dtype)


def class_targets(target_shape, rng, ignore_value):
    """Indices covering every class; a third of them set to ``ignore_value`` (never all of them)."""
    target = rng.integers(0, NUM_CLASSES, size=target_shape)
    if ignore_value is not None and target.size > 1:
        flat = target.reshape(-1)
        flat[::3] = ignore_value
        flat[1] = 2 if ignore_value == 1 else flat[1]  # keep at least one target that is not ignored
        target = flat.reshape(target_shape)
    return target.astype(np.int64)


def class_weight(dtype):
    return np.array([0.5, 2.0, 1.0, 3.0], dtype=dtype)


def _option_grid_dtypes(options_on: tuple[bool, ...]) -> tuple[str, ...]:
    """float64 (exactness) for every combination; float32 (same code, working tolerance) on the two
    corners where the options are all off or all on, which keeps the file fast (each new combination
    costs XLA compilations of its own)."""
    return ("float64", "float32") if len(set(options_on)) == 1 else ("float64",)


def _ignore_variants(rank: str):
    # One unbatched target cannot be partly ignored: only the plain variant for (C,) inputs.
    return ("no-ignored",) if rank == "unbatched(C)" else tuple(IGNORE_VARIANTS)


CROSS_ENTROPY_CASES = [
    pytest.param(
        reduction,
        weighted,
        ignore,
        smoothing,
        kind,
        rank,
        dtype,
        id=f"{dtype}-{kind}-{rank}-{reduction}-{'weight' if weighted else 'noweight'}-{ignore}-ls{smoothing}",
    )
    for kind, rank, reduction, weighted, smoothing in itertools.product(
        ("indices", "probabilities"), RANK_SHAPES, REDUCTIONS, (False, True), (0.0, 0.2)
    )
    # torch rejects ignore_index >= 0 with probability targets, and they have no ignored entries.
    for ignore in (_ignore_variants(rank) if kind == "indices" else ("no-ignored",))
    for dtype in _option_grid_dtypes(
        (weighted, smoothing > 0) + ((ignore != "no-ignored",) if kind == "indices" and rank != "unbatched(C)" else ())
    )
]


@pytest.mark.parametrize("reduction, weighted, ignore, label_smoothing, kind, rank, dtype", CROSS_ENTROPY_CASES)
def test_cross_entropy_matches_torch(reduction, weighted, ignore, label_smoothing, kind, rank, dtype):
    rng = rng_for("ce", reduction, weighted, ignore, label_smoothing, kind, rank, dtype)
    input_shape, target_shape = RANK_SHAPES[rank]
    ignore_index, ignore_value = IGNORE_VARIANTS[ignore]
    x = class_logits(input_shape, dtype, rng)
    if kind == "indices":
        target = class_targets(target_shape, rng, ignore_value)
        differentiable = (0,)
    else:
        # Probabilities along the class dim (dim 1, or 0 when unbatched), one row with an exact 0 and 1.
        class_dim = 0 if len(input_shape) == 1 else 1
        target = np.array(jax.nn.softmax(rng.standard_normal(input_shape) * 2, axis=class_dim), dtype=dtype)
        if len(input_shape) == 2:
            target[0] = np.eye(NUM_CLASSES, dtype=dtype)[2]
        differentiable = (0, 1)
    arrays = [x, target] + ([class_weight(dtype)] if weighted else [])

    def torch_loss(a, b, *w):
        return F.cross_entropy(
            a,
            b,
            weight=w[0] if w else None,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
        )

    def fnml_loss(a, b, *w):
        return losses.cross_entropy(
            a,
            b,
            weight=w[0] if w else None,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
        )

    compare_with_torch(torch_loss, fnml_loss, arrays, differentiable, dtype)


NLL_CASES = [
    pytest.param(
        reduction,
        weighted,
        ignore,
        rank,
        dtype,
        id=f"{dtype}-{rank}-{reduction}-{'weight' if weighted else 'noweight'}-{ignore}",
    )
    for rank, reduction, weighted in itertools.product(RANK_SHAPES, REDUCTIONS, (False, True))
    for ignore in _ignore_variants(rank)
    for dtype in _option_grid_dtypes((weighted,) + ((ignore != "no-ignored",) if rank != "unbatched(C)" else ()))
]


@pytest.mark.parametrize("reduction, weighted, ignore, rank, dtype", NLL_CASES)
def test_nll_loss_matches_torch(reduction, weighted, ignore, rank, dtype):
    rng = rng_for("nll", reduction, weighted, ignore, rank, dtype)
    input_shape, target_shape = RANK_SHAPES[rank]
    ignore_index, ignore_value = IGNORE_VARIANTS[ignore]
    log_probs = np.asarray(
        jax.nn.log_softmax(class_logits(input_shape, "float64", rng), axis=min(1, len(input_shape) - 1))
    )
    arrays = [log_probs.astype(dtype), class_targets(target_shape, rng, ignore_value)]
    arrays += [class_weight(dtype)] if weighted else []
    compare_with_torch(
        lambda a, b, *w: F.nll_loss(a, b, weight=w[0] if w else None, ignore_index=ignore_index, reduction=reduction),
        lambda a, b, *w: losses.nll_loss(
            a, b, weight=w[0] if w else None, ignore_index=ignore_index, reduction=reduction
        ),
        arrays,
        (0,),
        dtype,
    )


@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2], ids=["ls0", "ls0.2"])
def test_cross_entropy_all_targets_ignored_is_nan_like_torch(weighted, label_smoothing):
    x = np.random.default_rng(0).standard_normal((3, NUM_CLASSES))
    target = np.full(3, -100)
    weight = class_weight("float64") if weighted else None
    fnml_value = losses.cross_entropy(x, target, weight=weight, label_smoothing=label_smoothing)
    torch_value = F.cross_entropy(
        torch.tensor(x),
        torch.tensor(target),
        label_smoothing=label_smoothing,
        weight=None if weight is None else torch.tensor(weight),
    )
    assert np.isnan(float(fnml_value)) and torch.isnan(torch_value)
    assert (
        float(losses.cross_entropy(x, target, weight=weight, reduction="sum", label_smoothing=label_smoothing)) == 0.0
    )


def test_cross_entropy_optax_differs_from_torch_with_weights():
    """Why the weighted mean is written here: optax's per-example mean does not divide by sum of w[y]."""
    import optax

    rng = np.random.default_rng(3)
    x, target, weight = (
        rng.standard_normal((5, NUM_CLASSES)),
        rng.integers(0, NUM_CLASSES, 5),
        class_weight("float64"),
    )
    naive = float(jnp.mean(weight[target] * optax.softmax_cross_entropy_with_integer_labels(x, target)))
    torch_value = float(F.cross_entropy(torch.tensor(x), torch.tensor(target), weight=torch.tensor(weight)))
    assert abs(naive - torch_value) > 1e-3
    assert abs(float(losses.cross_entropy(x, target, weight=weight)) - torch_value) <= 1e-12


# ---------------------------------------------------------------------------------------------------
# Binary cross entropy (probabilities and logits)
# ---------------------------------------------------------------------------------------------------

BCE_WEIGHTS = {"noweight": None, "weight(C,)": (5,), "weight(N,C)": (4, 5)}


def bce_inputs(dtype):
    """Probabilities (4, 5) with exact 0 and 1 against targets 0, 1 and fractions (the -100 clamp)."""
    rng = np.random.default_rng(2)
    x = rng.uniform(0.01, 0.99, (4, 5))
    y = rng.uniform(0, 1, (4, 5))
    x[0] = [0.0, 0.0, 1.0, 1.0, 0.0]
    y[0] = [0.0, 1.0, 0.0, 1.0, 0.5]
    x[1, :3] = [1e-50, 1 - 1e-12, 0.5]
    y[1, :3] = [1.0, 0.0, 0.5]
    return x.astype(dtype), y.astype(dtype)


@pytest.mark.parametrize("weight", list(BCE_WEIGHTS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_matches_torch(reduction, weight, dtype):
    x, y = bce_inputs(dtype)
    arrays = [x, y]
    if BCE_WEIGHTS[weight] is not None:
        arrays.append(np.random.default_rng(5).uniform(0.5, 2, BCE_WEIGHTS[weight]).astype(dtype))
    compare_with_torch(
        lambda a, b, *w: F.binary_cross_entropy(a, b, weight=w[0] if w else None, reduction=reduction),
        lambda a, b, *w: losses.binary_cross_entropy(a, b, weight=w[0] if w else None, reduction=reduction),
        arrays,
        (0, 1),
        dtype,
    )


def test_binary_cross_entropy_clamps_and_gradients_at_0_and_1():
    x = np.array([0.0, 0.0, 1.0, 1.0])
    y = np.array([0.0, 1.0, 0.0, 1.0])
    value = losses.binary_cross_entropy(x, y, reduction="none")
    np.testing.assert_array_equal(np.asarray(value), [0.0, 100.0, 100.0, 0.0])  # log clamped at -100
    grad = jax.grad(losses.binary_cross_entropy)(jnp.asarray(x), jnp.asarray(y))
    torch_x = torch.tensor(x, requires_grad=True)
    F.binary_cross_entropy(torch_x, torch.tensor(y)).backward()
    # torch: (x - y) / max(x (1 - x), 1e-12) / N: finite (about 2.5e11); autodiff of the clamp gives NaN.
    assert np.isfinite(np.asarray(grad)).all() and abs(float(grad[1])) > 1e11
    assert_trees_close(grad, torch_x.grad)


POS_WEIGHTS = {"nopos": None, "pos(C,)": (5,), "pos(1,)": (1,), "pos(N,C)": (4, 5)}


BCE_LOGITS_CASES = [
    pytest.param(reduction, weight, pos_weight, dtype, id=f"{dtype}-{reduction}-{weight}-{pos_weight}")
    for reduction, weight, pos_weight in itertools.product(REDUCTIONS, BCE_WEIGHTS, POS_WEIGHTS)
    for dtype in _option_grid_dtypes((weight != "noweight", pos_weight != "nopos"))
]


@pytest.mark.parametrize("reduction, weight, pos_weight, dtype", BCE_LOGITS_CASES)
def test_binary_cross_entropy_with_logits_matches_torch(reduction, weight, pos_weight, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 5)) * 3
    x[0] = [-1000.0, -50.0, 0.0, 50.0, 1000.0]
    y = rng.uniform(0, 1, (4, 5))
    y[1] = [0.0, 1.0, 0.0, 1.0, 0.5]
    arrays = [x.astype(dtype), y.astype(dtype)]
    has_weight, has_pos = BCE_WEIGHTS[weight] is not None, POS_WEIGHTS[pos_weight] is not None
    if has_weight:
        arrays.append(rng.uniform(0.5, 2, BCE_WEIGHTS[weight]).astype(dtype))
    if has_pos:
        arrays.append(rng.uniform(0.5, 4, POS_WEIGHTS[pos_weight]).astype(dtype))

    def split(extra):
        return (extra[0] if has_weight else None), (extra[-1] if has_pos else None)

    def torch_loss(a, b, *extra):
        w, p = split(extra)
        return F.binary_cross_entropy_with_logits(a, b, weight=w, pos_weight=p, reduction=reduction)

    def fnml_loss(a, b, *extra):
        w, p = split(extra)
        return losses.binary_cross_entropy_with_logits(a, b, weight=w, pos_weight=p, reduction=reduction)

    compare_with_torch(torch_loss, fnml_loss, arrays, (0, 1), dtype)


# ---------------------------------------------------------------------------------------------------
# KL divergence
# ---------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings(KL_MEAN_WARNING)  # torch warns that "mean" is element-wise: the case tested
@pytest.mark.parametrize("log_target", [False, True], ids=["prob-target", "log-target"])
@pytest.mark.parametrize("reduction", ("mean", "batchmean", "sum", "none"))
def test_kl_div_matches_torch(reduction, log_target, dtype):
    rng = np.random.default_rng(6)
    log_q = np.asarray(jax.nn.log_softmax(rng.standard_normal((3, 5)), axis=1))
    p = np.array(jax.nn.softmax(rng.standard_normal((3, 5)) * 2, axis=1))
    p[0] = [0.0, 0.5, 0.5, 0.0, 0.0]  # zeros: 0 log 0 = 0; torch's target gradient there is NaN
    target = np.log(p + 0.1) if log_target else p
    compare_with_torch(
        lambda a, b: F.kl_div(a, b, reduction=reduction, log_target=log_target),
        lambda a, b: losses.kl_div(a, b, reduction=reduction, log_target=log_target),
        [log_q.astype(dtype), target.astype(dtype)],
        (0, 1),
        dtype,
    )


# ---------------------------------------------------------------------------------------------------
# Traced (jit) inputs: invalid values become NaN instead of a plausible number
# ---------------------------------------------------------------------------------------------------


def test_cross_entropy_out_of_range_target_under_jit_is_nan():
    x = jnp.asarray(np.random.default_rng(7).standard_normal((4, NUM_CLASSES)))
    target = jnp.array([0, NUM_CLASSES, 2, -1])  # NUM_CLASSES and -1 are out of range
    per_element = jax.jit(functools.partial(losses.cross_entropy, reduction="none"))(x, target)
    assert np.isnan(np.asarray(per_element)).tolist() == [False, True, False, True]
    expected = F.cross_entropy(torch.tensor(np.asarray(x))[[0, 2]], torch.tensor([0, 2]), reduction="none")
    assert_trees_close(per_element[jnp.array([0, 2])], expected)
    for reduction in ("mean", "sum"):
        assert np.isnan(float(jax.jit(functools.partial(losses.cross_entropy, reduction=reduction))(x, target)))
    smoothed = jax.jit(functools.partial(losses.cross_entropy, label_smoothing=0.1))(x, target)
    assert np.isnan(float(smoothed))
    # ignore_index itself is not "out of range": it is skipped.
    jitted = jax.jit(losses.cross_entropy)
    assert np.isfinite(float(jitted(x, jnp.array([0, -100, 2, 1]))))
    # Recompile guard: new target values (valid or not) reuse the compiled loss. jax shares the cache
    # of jit(losses.cross_entropy) with other tests that jit the same function, so count the growth.
    compiled = cache_size(jitted)
    jitted(x, jnp.array([3, 3, 0, 1]))
    jitted(x, target)
    assert cache_size(jitted) == compiled


def test_nll_loss_out_of_range_target_under_jit_is_nan():
    log_probs = jax.nn.log_softmax(jnp.ones((2, NUM_CLASSES)), axis=1)
    values = jax.jit(functools.partial(losses.nll_loss, reduction="none"))(log_probs, jnp.array([7, 1]))
    assert np.isnan(np.asarray(values)).tolist() == [True, False]


def test_binary_cross_entropy_out_of_range_under_jit_is_nan():
    bce = jax.jit(functools.partial(losses.binary_cross_entropy, reduction="none"))
    values = bce(jnp.array([0.5, 1.5, -0.1, 0.5]), jnp.array([0.5, 0.5, 0.5, 1.5]))
    assert np.isnan(np.asarray(values)).tolist() == [False, True, True, True]


def test_concrete_target_is_checked_under_grad():
    """jax.grad traces the input only: a concrete bad target still raises eagerly."""
    with pytest.raises(ValueError, match=r"class index 9 outside \[0, 4\)"):
        jax.grad(losses.cross_entropy)(jnp.zeros((2, NUM_CLASSES)), jnp.array([0, 9]))


# ---------------------------------------------------------------------------------------------------
# Errors: every check, with the message it gives
# ---------------------------------------------------------------------------------------------------

X2 = np.zeros((2, 3))
LABELS = np.array([0, 1])

ERROR_CASES = [
    (
        "mse-reduction",
        lambda: losses.mse_loss(X2, X2, reduction="avg"),
        ValueError,
        r"mse_loss: reduction must be one of 'mean', 'sum', 'none'; got reduction='avg'",
    ),
    (
        "l1-reduction",
        lambda: losses.l1_loss(X2, X2, reduction="batchmean"),
        ValueError,
        r"l1_loss: reduction must be one of",
    ),
    (
        "ce-reduction",
        lambda: losses.cross_entropy(X2, LABELS, reduction="elementwise"),
        ValueError,
        r"cross_entropy: reduction must be one of",
    ),
    (
        "kl-reduction",
        lambda: losses.kl_div(X2, X2, reduction="avg"),
        ValueError,
        r"kl_div: reduction must be one of 'mean', 'batchmean', 'sum', 'none'",
    ),
    (
        "mse-shape",
        lambda: losses.mse_loss(X2, np.zeros((3, 2))),
        ValueError,
        r"mse_loss: target shape \(3, 2\) does not match input shape \(2, 3\)",
    ),
    (
        "l1-shape",
        lambda: losses.l1_loss(X2, np.zeros(3)),
        ValueError,
        r"l1_loss: target shape \(3,\) does not match input shape \(2, 3\)",
    ),
    (
        "smooth_l1-shape",
        lambda: losses.smooth_l1_loss(X2, np.zeros((2, 1))),
        ValueError,
        r"smooth_l1_loss: target shape \(2, 1\)",
    ),
    (
        "huber-shape",
        lambda: losses.huber_loss(X2, np.zeros((1, 3))),
        ValueError,
        r"huber_loss: target shape \(1, 3\)",
    ),
    (
        "bce-shape",
        lambda: losses.binary_cross_entropy(X2, np.zeros(3)),
        ValueError,
        r"binary_cross_entropy: target shape \(3,\) does not match",
    ),
    (
        "bcel-shape",
        lambda: losses.binary_cross_entropy_with_logits(X2, np.zeros((2,))),
        ValueError,
        r"binary_cross_entropy_with_logits: target shape \(2,\)",
    ),
    (
        "kl-shape",
        lambda: losses.kl_div(X2, np.zeros((2, 4))),
        ValueError,
        r"kl_div: target shape \(2, 4\) does not match input shape \(2, 3\)",
    ),
    (
        "mse-int-input",
        lambda: losses.mse_loss(np.zeros(3, np.int64), np.zeros(3)),
        TypeError,
        r"mse_loss: input must have a floating dtype, got dtype int64",
    ),
    (
        "mse-bool-target",
        lambda: losses.mse_loss(np.zeros(3), np.zeros(3, bool)),
        TypeError,
        r"mse_loss: target must have a real numeric dtype, got dtype bool",
    ),
    (
        "ce-float-indices",
        lambda: losses.cross_entropy(X2, np.array([0.0, 1.0])),
        TypeError,
        r"cross_entropy: class-index target must have an integer dtype, got dtype float64",
    ),
    (
        "ce-int-probabilities",
        lambda: losses.cross_entropy(X2, np.zeros((2, 3), np.int64)),
        TypeError,
        r"holds class probabilities and must have a floating dtype, got dtype int64",
    ),
    (
        "ce-target-shape",
        lambda: losses.cross_entropy(X2, np.array([0, 1, 2])),
        ValueError,
        r"cross_entropy: target shape \(3,\) does not match input shape \(2, 3\); "
        r"expected class indices of shape \(2,\)",
    ),
    (
        "ce-target-shape-4d",
        lambda: losses.cross_entropy(np.zeros((2, 3, 4, 5)), np.zeros((2, 5, 4), np.int64)),
        ValueError,
        r"target shape \(2, 5, 4\) does not match input shape \(2, 3, 4, 5\); "
        r"expected class indices of shape \(2, 4, 5\)",
    ),
    (
        "ce-scalar-input",
        lambda: losses.cross_entropy(np.float64(1.0), np.int64(0)),
        ValueError,
        r"cross_entropy: input must be \(C,\), \(N, C\) or \(N, C, d1, ...\), got a 0-D array",
    ),
    (
        "ce-index-too-large",
        lambda: losses.cross_entropy(X2, np.array([0, 3])),
        ValueError,
        r"cross_entropy: target holds class index 3 outside \[0, 3\)",
    ),
    (
        "ce-index-negative",
        lambda: losses.cross_entropy(X2, np.array([-1, 0])),
        ValueError,
        r"class index -1 outside \[0, 3\) \(1 of 2 entries; ignore_index=-100",
    ),
    (
        "ce-index-is-ignore-elsewhere",
        lambda: losses.cross_entropy(X2, np.array([-100, 0]), ignore_index=1),
        ValueError,
        r"class index -100 outside \[0, 3\)",
    ),
    (
        "nll-index-too-large",
        lambda: losses.nll_loss(X2, np.array([5, 0])),
        ValueError,
        r"nll_loss: target holds class index 5 outside \[0, 3\)",
    ),
    (
        "nll-float-target",
        lambda: losses.nll_loss(X2, np.array([0.0, 1.0])),
        TypeError,
        r"nll_loss: class-index target must have an integer dtype",
    ),
    (
        "nll-target-shape",
        lambda: losses.nll_loss(X2, np.zeros((2, 3), np.int64)),
        ValueError,
        r"nll_loss: target shape \(2, 3\) does not match input shape \(2, 3\); "
        r"expected class indices of shape \(2,\)",
    ),
    (
        "ce-weight-length",
        lambda: losses.cross_entropy(X2, LABELS, weight=np.ones(4)),
        ValueError,
        r"cross_entropy: weight must have shape \(C,\) = \(3,\), one entry per class, got shape \(4,\)",
    ),
    (
        "nll-weight-2d",
        lambda: losses.nll_loss(X2, LABELS, weight=np.ones((1, 3))),
        ValueError,
        r"nll_loss: weight must have shape \(C,\) = \(3,\)",
    ),
    (
        "ce-weight-bool",
        lambda: losses.cross_entropy(X2, LABELS, weight=np.ones(3, bool)),
        TypeError,
        r"cross_entropy: weight must have a real numeric dtype, got dtype bool",
    ),
    (
        "ce-ignore-index-float",
        lambda: losses.cross_entropy(X2, LABELS, ignore_index=1.0),
        TypeError,
        r"cross_entropy: ignore_index must be an int, got 1.0",
    ),
    (
        "ce-ignore-index-probabilities",
        lambda: losses.cross_entropy(X2, np.full((2, 3), 1 / 3), ignore_index=0),
        ValueError,
        r"ignore_index=0 is not supported with class-probability targets",
    ),
    (
        "ce-label-smoothing-high",
        lambda: losses.cross_entropy(X2, LABELS, label_smoothing=1.5),
        ValueError,
        r"cross_entropy: label_smoothing must be in \[0.0, 1.0\], got label_smoothing=1.5",
    ),
    (
        "ce-label-smoothing-negative",
        lambda: losses.cross_entropy(X2, LABELS, label_smoothing=-0.1),
        ValueError,
        r"label_smoothing must be in \[0.0, 1.0\], got label_smoothing=-0.1",
    ),
    (
        "smooth_l1-negative-beta",
        lambda: losses.smooth_l1_loss(X2, X2, beta=-1.0),
        ValueError,
        r"smooth_l1_loss: beta must be >= 0 and finite, got beta=-1.0",
    ),
    (
        "huber-zero-delta",
        lambda: losses.huber_loss(X2, X2, delta=0.0),
        ValueError,
        r"huber_loss: delta must be > 0 and finite, got delta=0.0",
    ),
    (
        "huber-delta-string",
        lambda: losses.huber_loss(X2, X2, delta="1"),
        TypeError,
        r"huber_loss: delta must be a number, got '1'",
    ),
    (
        "bce-input-above-1",
        lambda: losses.binary_cross_entropy(np.array([0.5, 1.5]), np.array([0.0, 1.0])),
        ValueError,
        r"binary_cross_entropy: all elements of input must be in \[0, 1\], got 1.5 \(1 of 2 outside\)",
    ),
    (
        "bce-target-negative",
        lambda: losses.binary_cross_entropy(np.array([0.5, 0.5]), np.array([-0.5, 1.0])),
        ValueError,
        r"all elements of target must be in \[0, 1\], got -0.5",
    ),
    (
        "bce-input-nan",
        lambda: losses.binary_cross_entropy(np.array([np.nan]), np.array([1.0])),
        ValueError,
        r"all elements of input must be in \[0, 1\], got nan",
    ),
    (
        "bce-int-target",
        lambda: losses.binary_cross_entropy(np.array([0.5]), np.array([1])),
        TypeError,
        r"binary_cross_entropy: target must have a floating dtype, got dtype int64",
    ),
    (
        "bce-weight-shape",
        lambda: losses.binary_cross_entropy(np.full((2, 3), 0.5), np.zeros((2, 3)), weight=np.ones(2)),
        ValueError,
        r"binary_cross_entropy: weight of shape \(2,\) does not broadcast to the input shape \(2, 3\)",
    ),
    (
        "bcel-pos-weight-shape",
        lambda: losses.binary_cross_entropy_with_logits(X2, X2, pos_weight=np.ones(4)),
        ValueError,
        r"pos_weight of shape \(4,\) does not broadcast to the input shape \(2, 3\)",
    ),
    (
        "bcel-weight-bigger",
        lambda: losses.binary_cross_entropy_with_logits(X2, X2, weight=np.ones((5, 2, 3))),
        ValueError,
        r"weight of shape \(5, 2, 3\) does not broadcast to the input shape \(2, 3\)",
    ),
    (
        "bcel-int-target",
        lambda: losses.binary_cross_entropy_with_logits(X2, np.zeros((2, 3), np.int32)),
        TypeError,
        r"binary_cross_entropy_with_logits: target must have a floating dtype, got dtype int32",
    ),
    (
        "kl-log-target-not-bool",
        lambda: losses.kl_div(X2, X2, log_target=1),
        TypeError,
        r"kl_div: log_target must be a bool \(True or False\), got 1 \(int\)",
    ),
    (
        "criterion-reduction",
        lambda: losses.MSELoss(reduction="avg"),
        ValueError,
        r"MSELoss: reduction must be one of 'mean', 'sum', 'none'; got reduction='avg'",
    ),
    (
        "criterion-kl-reduction",
        lambda: losses.L1Loss(reduction="batchmean"),
        ValueError,
        r"L1Loss: reduction must be one of",
    ),
    (
        "criterion-label-smoothing",
        lambda: losses.CrossEntropyLoss(label_smoothing=2),
        ValueError,
        r"CrossEntropyLoss: label_smoothing must be in \[0.0, 1.0\], got label_smoothing=2",
    ),
    (
        "criterion-ignore-index",
        lambda: losses.NLLLoss(ignore_index="x"),
        TypeError,
        r"NLLLoss: ignore_index must be an int, got 'x'",
    ),
    (
        "criterion-ce-ignore-index",
        lambda: losses.CrossEntropyLoss(ignore_index=None),
        TypeError,
        r"CrossEntropyLoss: ignore_index must be an int, got None",
    ),
    (
        "criterion-beta",
        lambda: losses.SmoothL1Loss(beta=-0.5),
        ValueError,
        r"SmoothL1Loss: beta must be >= 0 and finite, got beta=-0.5",
    ),
    (
        "criterion-delta",
        lambda: losses.HuberLoss(delta=-1.0),
        ValueError,
        r"HuberLoss: delta must be > 0 and finite, got delta=-1.0",
    ),
    (
        "criterion-log-target",
        lambda: losses.KLDivLoss(log_target="yes"),
        TypeError,
        r"KLDivLoss: log_target must be a bool \(True or False\), got 'yes' \(str\)",
    ),
    (
        "criterion-bce-weight",
        lambda: losses.BCELoss(weight=np.array(["a"])),
        TypeError,
        r"BCELoss: weight must have a real numeric dtype",
    ),
    (
        "criterion-bcel-pos-weight",
        lambda: losses.BCEWithLogitsLoss(pos_weight=np.ones(2, bool)),
        TypeError,
        r"BCEWithLogitsLoss: pos_weight must have a real numeric dtype, got dtype bool",
    ),
    ("criterion-positional", lambda: losses.CrossEntropyLoss(np.ones(3)), TypeError, r"positional argument"),
]


@pytest.mark.parametrize("call, error, match", [pytest.param(*case[1:], id=case[0]) for case in ERROR_CASES])
def test_invalid_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_torch_also_rejects_out_of_range_class_indices():
    """The eager check mirrors torch, which raises instead of returning a number."""
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 3]))


# ---------------------------------------------------------------------------------------------------
# Criteria (the CamelCase factories)
# ---------------------------------------------------------------------------------------------------


def test_criterion_reads_like_the_tutorial_and_matches_torch(dtype):
    rng = np.random.default_rng(8)
    output, target = rng.standard_normal((5, 1)).astype(dtype), rng.standard_normal((5, 1)).astype(dtype)
    criterion = losses.MSELoss()
    assert repr(criterion) == repr(torch.nn.MSELoss()) == "MSELoss()"
    loss = criterion(jnp.asarray(output), jnp.asarray(target))
    assert_trees_close(loss, torch.nn.MSELoss()(torch.tensor(output), torch.tensor(target)), dtype=dtype)


def _criterion_pairs():
    """(fnml criterion, torch module, input, target) for every criterion with non-default options."""
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    probs, labels = rng.uniform(0.05, 0.95, (4, 3)), rng.integers(0, 3, 4)
    weight, pos = np.array([1.0, 2.0, 0.5]), np.array([2.0, 1.0, 3.0])
    log_p = np.asarray(jax.nn.log_softmax(x, axis=1))
    target_p = np.asarray(jax.nn.softmax(y, axis=1))
    return {
        "MSELoss": (losses.MSELoss(reduction="sum"), torch.nn.MSELoss(reduction="sum"), x, y),
        "L1Loss": (losses.L1Loss(), torch.nn.L1Loss(), x, y),
        "SmoothL1Loss": (losses.SmoothL1Loss(beta=0.5), torch.nn.SmoothL1Loss(beta=0.5), x, y),
        "HuberLoss": (
            losses.HuberLoss(delta=0.7, reduction="none"),
            torch.nn.HuberLoss(delta=0.7, reduction="none"),
            x,
            y,
        ),
        "CrossEntropyLoss": (
            losses.CrossEntropyLoss(weight=weight, ignore_index=1, label_smoothing=0.1),
            torch.nn.CrossEntropyLoss(weight=torch.tensor(weight), ignore_index=1, label_smoothing=0.1),
            x,
            labels,
        ),
        "NLLLoss": (
            losses.NLLLoss(weight=weight),
            torch.nn.NLLLoss(weight=torch.tensor(weight)),
            log_p,
            labels,
        ),
        "BCELoss": (
            losses.BCELoss(weight=weight),
            torch.nn.BCELoss(weight=torch.tensor(weight)),
            probs,
            target_p,
        ),
        "BCEWithLogitsLoss": (
            losses.BCEWithLogitsLoss(pos_weight=pos, reduction="sum"),
            torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos), reduction="sum"),
            x,
            target_p,
        ),
        "KLDivLoss": (
            losses.KLDivLoss(reduction="batchmean", log_target=True),
            torch.nn.KLDivLoss(reduction="batchmean", log_target=True),
            log_p,
            np.log(target_p),
        ),
    }


@pytest.mark.parametrize("name", list(_criterion_pairs()))
def test_criteria_match_torch_modules_eagerly_and_under_jit(name):
    criterion, module, x, y = _criterion_pairs()[name]
    expected = module(torch.tensor(x), torch.tensor(y))
    assert_trees_close(criterion(x, y), expected)
    # A criterion closes over its options: a jitted train step can capture it, and it is hashable
    # (identity), so it can also be a static argument.
    assert_trees_close(jax.jit(criterion)(jnp.asarray(x), jnp.asarray(y)), expected)
    assert hash(criterion) == hash(criterion)
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'reduction'"):
        criterion.reduction = "sum"


def test_criteria_reprs_show_non_default_options():
    assert repr(losses.CrossEntropyLoss()) == "CrossEntropyLoss()"
    assert repr(losses.CrossEntropyLoss(weight=[1.0, 2.0], label_smoothing=0.1)) == (
        "CrossEntropyLoss(weight=[1.0, 2.0], label_smoothing=0.1)"
    )
    assert repr(losses.KLDivLoss(reduction="batchmean")) == "KLDivLoss(reduction='batchmean')"
    assert repr(losses.SmoothL1Loss(beta=0.5)) == "SmoothL1Loss(beta=0.5)"
    assert repr(losses.BCEWithLogitsLoss(pos_weight=np.ones(20))).startswith(
        "BCEWithLogitsLoss(pos_weight=<array shape=(20,)"
    )


def test_weight_is_cast_to_the_input_dtype():
    x = np.random.default_rng(10).standard_normal((3, 4)).astype(np.float32)
    loss = losses.cross_entropy(x, np.array([0, 1, 3]), weight=np.array([1.0, 2.0, 3.0, 4.0]))  # float64 weight
    assert loss.dtype == np.float32
    expected = F.cross_entropy(torch.tensor(x), torch.tensor([0, 1, 3]), weight=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert_trees_close(loss, expected, dtype="float32")
