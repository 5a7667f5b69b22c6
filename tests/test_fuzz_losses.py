"""Property-based parity of every fnml loss against real torch.nn.functional, with hypothesis.

Each property draws shapes (batch 1 included, unbatched and spatial cross entropy), a dtype, every
option (reduction, weight, ignore_index, label_smoothing, pos_weight, beta, delta, log_target) and a
value regime (normal, large, near-zero, exact kinks such as ``input == target``, probabilities at exactly
0 and 1, logits of +-1e3), and compares the value and the vector-Jacobian product (w.r.t. the input, and
the target where torch differentiates it) under a random cotangent. NaN results (e.g. every target
ignored under ``reduction="mean"``) must be NaN on both sides.

One jitted ``value_and_vjp`` per (loss, static options): weights and data are traced arguments, shapes come
from small sets, so compilation is shared across examples.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from _hypothesis_profiles import examples
from helpers import tolerance
from hypothesis import given
from hypothesis import strategies as st

from fnml import losses

DTYPE = st.sampled_from(["float64", "float32"])
SEED = st.integers(0, 2**16)
REDUCTION = st.sampled_from(["mean", "sum", "none"])


@functools.cache
def _jitted(name: str, options: tuple, n_diff: int):
    """jit(value and vjp) of ``losses.<name>(input, target, **arrays, **options)``, cached per options."""
    fn = getattr(losses, name)

    def value_and_vjp(input, target, arrays, cotangent):
        primal = (input, target)[:n_diff]

        def f(*diff):
            args = (*diff, *(input, target)[len(diff) :])
            return fn(*args, **arrays, **dict(options))

        value, vjp = jax.vjp(f, *primal)
        return value, vjp(cotangent)

    return jax.jit(value_and_vjp)


def check_loss(
    name: str,
    torch_fn,
    input,
    target,
    dtype: str,
    *,
    arrays=None,
    options=(),
    diff_target=False,
    seed=0,
    scale=1.0,
):
    """Value and gradients of fnml ``losses.<name>`` against ``torch_fn(input, target, **arrays)``."""
    arrays = dict(arrays or {})
    ti = torch.tensor(input, requires_grad=True)
    tt = torch.tensor(target, requires_grad=diff_target)
    tarrays = {k: (None if v is None else torch.tensor(v)) for k, v in arrays.items()}
    expected = torch_fn(ti, tt, **tarrays, **dict(options))
    cot = np.asarray(np.random.default_rng(seed).standard_normal(tuple(expected.shape)), dtype=dtype)
    wrt = [ti, tt] if diff_target else [ti]
    expected_grads = torch.autograd.grad(expected, wrt, grad_outputs=torch.tensor(cot), allow_unused=True)
    jarrays = {k: (None if v is None else jnp.asarray(v)) for k, v in arrays.items()}
    value, grads = _jitted(name, tuple(options), len(wrt))(
        jnp.asarray(input), jnp.asarray(target), jarrays, jnp.asarray(cot)
    )
    tol = tolerance(dtype)
    for what, a, e in [("value", value, expected)] + [
        (f"grad {w}", g, eg) for w, g, eg in zip(("input", "target"), grads, expected_grads)
    ]:
        e = np.zeros(np.shape(a)) if e is None else e.detach().numpy().astype(np.float64)
        a = np.asarray(a, dtype=np.float64)
        assert a.shape == e.shape, f"{name} {what}: shape {a.shape} (fnml) != {e.shape} (torch)"
        finite = np.isfinite(e)
        magnitude = max(1.0, scale, float(np.max(np.abs(e[finite]), initial=0.0)))
        np.testing.assert_allclose(
            a, e, atol=tol["atol"] * magnitude, rtol=tol["rtol"], err_msg=f"{name} {what} options={options}"
        )


def values(shape, dtype: str, regime: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    x = {"large": x * 1e3, "tiny": x * 1e-6}.get(regime, x)
    if regime == "zeros":
        x = np.where(rng.random(shape) < 0.4, 0.0, x)
    return x.astype(dtype)


# --------------------------------------------------------------------------------------------------
# element-wise regression losses
# --------------------------------------------------------------------------------------------------


@examples(40)
@given(
    dtype=DTYPE,
    seed=SEED,
    reduction=REDUCTION,
    shape=st.sampled_from([(1,), (4,), (1, 3), (3, 2, 2)]),
    regime=st.sampled_from(["normal", "large", "tiny", "kinks"]),
    loss=st.sampled_from(["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss"]),
    param=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
)
def test_regression_losses(dtype, seed, reduction, shape, regime, loss, param):
    """MSE / L1 / SmoothL1(beta) / Huber(delta); kinks: |input - target| in {0, beta, delta} exactly."""
    x = values(shape, dtype, "normal" if regime == "kinks" else regime, seed)
    y = values(shape, dtype, "normal" if regime == "kinks" else regime, seed + 1)
    if regime == "kinks":
        rng = np.random.default_rng(seed + 2)
        offsets = rng.choice(np.array([0.0, param, -param]), size=shape).astype(dtype)
        y = (x + offsets).astype(dtype)
        x = (y - offsets).astype(dtype)  # exact differences after rounding
    options = [("reduction", reduction)]
    if loss == "smooth_l1_loss":
        options.append(("beta", param))
    if loss == "huber_loss":
        if param == 0.0:
            return  # torch requires delta > 0 (a bad-input row)
        options.append(("delta", param))
    check_loss(
        loss,
        getattr(F, loss),
        x,
        y,
        dtype,
        options=tuple(options),
        diff_target=True,
        seed=seed,
        scale=float(np.abs(x).max(initial=1)),
    )


# --------------------------------------------------------------------------------------------------
# classification losses
# --------------------------------------------------------------------------------------------------


@st.composite
def classification_inputs(draw, dtype):
    layout = draw(st.sampled_from(["(N,C)", "(C,)", "(N,C,d)"]))
    n = draw(st.sampled_from([1, 4]))
    c = draw(st.sampled_from([2, 5]))
    shape = {"(N,C)": (n, c), "(C,)": (c,), "(N,C,d)": (n, c, 3)}[layout]
    target_shape = {"(N,C)": (n,), "(C,)": (), "(N,C,d)": (n, 3)}[layout]
    return shape, target_shape, c


@examples(60)
@given(
    dtype=DTYPE,
    seed=SEED,
    data=st.data(),
    reduction=REDUCTION,
    regime=st.sampled_from(["normal", "large", "tiny", "ties", "extreme"]),
    weighted=st.booleans(),
    ignore=st.sampled_from([None, -100, 1]),
    label_smoothing=st.sampled_from([0.0, 0.1, 1.0]),
    probabilities=st.booleans(),
)
def test_cross_entropy(dtype, seed, data, reduction, regime, weighted, ignore, label_smoothing, probabilities):
    """Class indices (with ignored entries, possibly ALL ignored) or probability targets; logits up to 1e3."""
    shape, target_shape, c = data.draw(classification_inputs(dtype))
    rng = np.random.default_rng(seed)
    logits = values(shape, dtype, "large" if regime == "extreme" else ("normal" if regime == "ties" else regime), seed)
    if regime == "ties":
        logits = np.zeros(shape, dtype)  # every class equally likely
    weight = (rng.random(c) + 0.1).astype(dtype) if weighted else None
    options = [("reduction", reduction), ("label_smoothing", label_smoothing)]
    if probabilities:
        target = rng.random(shape).astype(dtype)
        target = (target / target.sum(axis=1 if len(shape) > 1 else 0, keepdims=True)).astype(dtype)
        diff_target = True
    else:
        target = rng.integers(0, c, size=target_shape)
        if ignore is not None:
            options.append(("ignore_index", ignore))
            target = np.where(rng.random(target_shape) < 0.3, ignore, target)
        diff_target = False
    check_loss(
        "cross_entropy",
        F.cross_entropy,
        logits,
        target,
        dtype,
        arrays={"weight": weight},
        options=tuple(options),
        diff_target=diff_target,
        seed=seed,
        scale=float(np.abs(logits).max(initial=1)),
    )


@examples(40)
@given(
    dtype=DTYPE,
    seed=SEED,
    data=st.data(),
    reduction=REDUCTION,
    weighted=st.booleans(),
    ignore=st.sampled_from([None, -100, 0]),
    regime=st.sampled_from(["normal", "large"]),
)
def test_nll_loss(dtype, seed, data, reduction, weighted, ignore, regime):
    shape, target_shape, c = data.draw(classification_inputs(dtype))
    rng = np.random.default_rng(seed)
    logits = values(shape, dtype, regime, seed)
    log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=1 if len(shape) > 1 else 0), dtype)
    target = rng.integers(0, c, size=target_shape)
    options = [("reduction", reduction)]
    if ignore is not None:
        options.append(("ignore_index", ignore))
        target = np.where(rng.random(target_shape) < 0.3, ignore, target)
    weight = (rng.random(c) + 0.1).astype(dtype) if weighted else None
    check_loss(
        "nll_loss",
        F.nll_loss,
        log_probs,
        target,
        dtype,
        arrays={"weight": weight},
        options=tuple(options),
        seed=seed,
        scale=float(np.abs(log_probs).max(initial=1)),
    )


@examples(40)
@given(
    dtype=DTYPE,
    seed=SEED,
    reduction=REDUCTION,
    shape=st.sampled_from([(1,), (4,), (2, 3)]),
    regime=st.sampled_from(["normal", "edges", "near-edges"]),
    weighted=st.booleans(),
    hard_targets=st.booleans(),
)
def test_binary_cross_entropy(dtype, seed, reduction, shape, regime, weighted, hard_targets):
    """Probabilities at exactly 0 and 1 (the -100 clamp) and within 1e-30 of them."""
    rng = np.random.default_rng(seed)
    p = rng.random(shape)
    if regime == "edges":
        p = np.where(rng.random(shape) < 0.5, rng.integers(0, 2, size=shape).astype(np.float64), p)
    elif regime == "near-edges":
        p = np.where(rng.random(shape) < 0.5, 1e-30, p)
    p = p.astype(dtype)
    y = (rng.integers(0, 2, size=shape) if hard_targets else rng.random(shape)).astype(dtype)
    weight = (rng.random(shape) + 0.1).astype(dtype) if weighted else None
    # the target gradient is -w*logit(p): infinite at p in {0, 1} (torch too): only the input grad there
    diff_target = regime == "normal"
    check_loss(
        "binary_cross_entropy",
        F.binary_cross_entropy,
        p,
        y,
        dtype,
        arrays={"weight": weight},
        options=(("reduction", reduction),),
        diff_target=diff_target,
        seed=seed,
        scale=100.0,
    )


@examples(40)
@given(
    dtype=DTYPE,
    seed=SEED,
    reduction=REDUCTION,
    shape=st.sampled_from([(1,), (4,), (2, 3)]),
    regime=st.sampled_from(["normal", "large", "extreme", "zeros"]),
    weighted=st.booleans(),
    pos_weighted=st.booleans(),
)
def test_binary_cross_entropy_with_logits(dtype, seed, reduction, shape, regime, weighted, pos_weighted):
    """Logits of +-1e3 and +-1e30 (float64): log-sum-exp must not overflow; pos_weight per class."""
    rng = np.random.default_rng(seed)
    x = values(shape, dtype, "large" if regime == "extreme" else regime, seed)
    if regime == "extreme" and dtype == "float64":
        x = (x * 1e27).astype(dtype)
    y = rng.random(shape).astype(dtype)
    weight = (rng.random(shape) + 0.1).astype(dtype) if weighted else None
    pos_weight = (rng.random(shape[-1:]) * 3).astype(dtype) if pos_weighted else None
    check_loss(
        "binary_cross_entropy_with_logits",
        F.binary_cross_entropy_with_logits,
        x,
        y,
        dtype,
        arrays={"weight": weight, "pos_weight": pos_weight},
        options=(("reduction", reduction),),
        diff_target=True,
        seed=seed,
        scale=float(np.abs(x).max(initial=1)),
    )


@examples(40)
@given(
    dtype=DTYPE,
    seed=SEED,
    reduction=st.sampled_from(["mean", "batchmean", "sum", "none"]),
    shape=st.sampled_from([(1, 3), (4, 3), (2, 3, 2)]),
    log_target=st.booleans(),
    zero_targets=st.booleans(),
)
def test_kl_div(dtype, seed, reduction, shape, log_target, zero_targets):
    """Targets with exact zeros (torch's xlogy: 0 * log 0 = 0) and log-space targets."""
    rng = np.random.default_rng(seed)
    log_q = np.asarray(jax.nn.log_softmax(jnp.asarray(rng.standard_normal(shape) * 3), axis=1), dtype)
    p = rng.random(shape)
    if zero_targets:
        p = np.where(rng.random(shape) < 0.4, 0.0, p)
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    target = np.log(np.maximum(p, 1e-30)).astype(dtype) if log_target else p.astype(dtype)
    with warnings.catch_warnings():
        # torch warns that reduction="mean" is element-wise (a documented torch quirk, not our concern)
        warnings.filterwarnings("ignore", message="reduction: 'mean' divides", category=UserWarning)
        check_loss(
            "kl_div",
            F.kl_div,
            log_q,
            target,
            dtype,
            options=(("reduction", reduction), ("log_target", log_target)),
            diff_target=not (zero_targets and not log_target),
            seed=seed,
            scale=70.0,
        )


@examples(4)
@given(dtype=DTYPE, seed=SEED)
def test_criteria_match_functional(dtype, seed):
    """The CamelCase criteria call the functional losses with their options (spot check, all of them)."""
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal((3, 4)).astype(dtype)
    idx = rng.integers(0, 4, size=3)
    pairs = [
        (losses.MSELoss(reduction="sum"), torch.nn.MSELoss(reduction="sum"), x, y),
        (losses.L1Loss(), torch.nn.L1Loss(), x, y),
        (losses.SmoothL1Loss(beta=0.5), torch.nn.SmoothL1Loss(beta=0.5), x, y),
        (losses.HuberLoss(delta=0.5), torch.nn.HuberLoss(delta=0.5), x, y),
        (
            losses.CrossEntropyLoss(label_smoothing=0.2),
            torch.nn.CrossEntropyLoss(label_smoothing=0.2),
            x,
            idx,
        ),
        (losses.NLLLoss(), torch.nn.NLLLoss(), x, idx),
        (losses.BCEWithLogitsLoss(), torch.nn.BCEWithLogitsLoss(), x, (y > 0).astype(dtype)),
        (losses.BCELoss(), torch.nn.BCELoss(), 1 / (1 + np.exp(-x)), (y > 0).astype(dtype)),
        (
            losses.KLDivLoss(reduction="batchmean"),
            torch.nn.KLDivLoss(reduction="batchmean"),
            -np.abs(x),
            np.abs(y) / np.abs(y).sum(),
        ),
    ]
    for ours, theirs, a, b in pairs:
        value = float(ours(jnp.asarray(a), jnp.asarray(b)))
        expected = float(theirs(torch.tensor(a), torch.tensor(b)))
        np.testing.assert_allclose(
            value,
            expected,
            rtol=tolerance(dtype)["rtol"],
            atol=tolerance(dtype)["atol"],
            err_msg=type(ours).__name__,
        )
