"""Guards for torch-faithful details that the broader parity tests did not pin down (mutation testing).

Each test here was written because one small, plausible change to the library (a "mutant": e.g.
RAdam rectifying at ``rho_t >= 5`` instead of torch's ``> 5``) still passed every other test. Each
test failed on its mutant and passes on the real code; the mutant is named in the test's docstring.
Every test computes torch's answer in the same test (no pasted numbers) and compares exactly in
float64 (max |diff| <= 1e-12), except where the detail only exists in float32 (said so there).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from helpers import max_abs_diff, tolerance, torch_dtype

from fnml import interop, layers, optim, schedules

F64 = tolerance("float64")["atol"]


def _optimizer_trajectories(torch_factory, tx, grads: np.ndarray, p0: np.ndarray, dtype: str):
    """Feed the same gradient sequence to a torch optimizer and an fnml one; params after every step.

    ``grads``: (steps, *shape); ``p0``: (*shape). Returns (torch (steps, *shape), fnml (steps, *shape)).
    """
    t_dtype = torch_dtype(dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(t_dtype)  # torch keeps scalar state (step) in the default dtype
    try:
        p_torch = torch.tensor(p0, dtype=t_dtype, requires_grad=True)
        opt = torch_factory([p_torch])
        torch_out = []
        for g in grads:
            p_torch.grad = torch.tensor(g, dtype=t_dtype)
            opt.step()
            torch_out.append(p_torch.detach().numpy().copy())
    finally:
        torch.set_default_dtype(previous)
    p = jnp.asarray(p0, dtype)
    state = tx.init(p)
    fnml_out = []
    for g in grads:
        updates, state = tx.update(jnp.asarray(g, dtype), state, p)
        p = optax.apply_updates(p, updates)
        fnml_out.append(np.asarray(p))
    return np.stack(torch_out), np.stack(fnml_out)


# ----------------------------------------------------------------------------------------------------
# RAdam: torch rectifies only when rho_t > 5 (strictly); optax uses >= 5.
# ----------------------------------------------------------------------------------------------------

# A beta2 for which rho_6 is exactly 5.0 in float64, both in torch's formula
# (rho_inf - 2 t b2**t / (1 - b2**t)) and in fnml's (expm1-based); found by scanning the float64
# neighbours of the root of rho_6(b2) = 5. Typical betas never hit 5.0 exactly, so no other test
# can tell ">" from ">=".
RHO_EXACTLY_5_BETA2 = 0.8397685748659791


def test_radam_does_not_rectify_when_rho_t_is_exactly_5():
    """Kills: ``rectify = rho_t >= 5.0`` (optax's rule) instead of torch's ``rho_t > 5.0``."""
    b2, step = RHO_EXACTLY_5_BETA2, 6
    rho_inf = 2 / (1 - b2) - 1
    torch_rho_6 = rho_inf - 2 * float(step) * (b2**step) / (1 - b2**step)  # torch's radam.py formula
    assert torch_rho_6 == 5.0, f"precondition: torch's rho_6 must be exactly 5.0, got {torch_rho_6!r}"
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(8, 5))
    p0 = rng.normal(size=(5,))
    expected, actual = _optimizer_trajectories(
        lambda ps: torch.optim.RAdam(ps, lr=0.1, betas=(0.9, b2)),
        optim.radam(lr=0.1, betas=(0.9, b2)),
        grads,
        p0,
        "float64",
    )
    # Step 6 (index 5) is the one where rectifying or not makes the difference.
    assert max_abs_diff(actual[5], expected[5]) <= F64, "step 6: rho_t == 5 must take the un-rectified branch"
    assert max_abs_diff(actual, expected) <= F64


# ----------------------------------------------------------------------------------------------------
# Adam's bias correction: accurate in float32 host precision (x64 off, as in examples / real use).
# ----------------------------------------------------------------------------------------------------


def test_adam_bias_correction_is_accurate_with_x64_off():
    """Kills: ``1 - b2**t`` computed plainly (optax's form) instead of ``-expm1(t * log(b2))``.

    float32-only detail: with x64 on, both forms agree to ~1e-16, so every float64 test passes either
    way. With x64 off the host scalars are float32: ``b2**t`` rounds to 6e-8 absolute, which is
    6e-4 / t relative in ``1 - b2**t`` for b2 = 0.9999 (torch: Python doubles). A constant gradient
    makes every Adam update exactly ``-lr * sign(g)`` up to that rounding (``sqrt(v_t / (1 - b2**t))
    = |g|``); from p = 0 with lr = 1 the per-step updates (differences of near-integer float32
    params, exact) expose the relative error directly.
    """
    steps = 12
    grads = np.tile(np.array([0.3, -1.7, 2.5e-2, 40.0], np.float32), (steps, 1))  # constant gradient
    p0 = np.zeros(4, np.float32)
    with jax.enable_x64(False):
        expected, actual = _optimizer_trajectories(
            lambda ps: torch.optim.Adam(ps, lr=1.0, betas=(0.9, 0.9999)),
            optim.adam(lr=1.0, betas=(0.9, 0.9999)),
            grads,
            p0,
            "float32",
        )
    assert actual.dtype == np.float32
    zero = np.zeros((1, 4), np.float32)
    torch_updates = np.diff(np.concatenate([zero, expected]), axis=0)  # (steps, 4), each ~ -sign(g)
    fnml_updates = np.diff(np.concatenate([zero, actual]), axis=0)
    relative = np.max(np.abs(fnml_updates - torch_updates) / np.abs(torch_updates))
    print(f"max relative error of Adam's updates (x64 off): {relative:.3g}")
    assert relative <= 5e-6, f"relative error of Adam's updates {relative:.3g} (plain 1 - b2**t gives ~1e-5 and more)"


# ----------------------------------------------------------------------------------------------------
# ReduceLROnPlateau, mode="max" with threshold_mode="rel": best * (1 + threshold), not best + threshold.
# ----------------------------------------------------------------------------------------------------


def _torch_plateau_lrs(kwargs: dict, metrics: list[float]) -> np.ndarray:
    """torch's (lr, best, num_bad_epochs) after each scheduler.step(metric)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    trace = []
    for metric in metrics:
        scheduler.step(metric)
        trace.append((opt.param_groups[0]["lr"], scheduler.best, scheduler.num_bad_epochs))
    return np.asarray(trace, np.float64)


def test_reduce_lr_on_plateau_max_rel_threshold_scales_with_best():
    """Kills: mode="max", threshold_mode="rel" testing ``metric > best + threshold`` (the "abs" rule).

    The existing mode-max-rel case has metrics near 1, where ``best * 1.1`` and ``best + 0.1``
    coincide; around 10 they do not (11 vs 10.1), so the two rules reduce the lr at different epochs.
    """
    kwargs = dict(mode="max", patience=1, threshold=0.1, threshold_mode="rel")
    metrics = [10.0, 10.5, 10.8, 11.5, 11.6, 13.0, 13.1, 13.2]
    expected = _torch_plateau_lrs(kwargs, metrics)
    absolute = _torch_plateau_lrs({**kwargs, "threshold_mode": "abs"}, metrics)
    assert not np.array_equal(expected, absolute), "precondition: the rel and abs rules must disagree here"
    plateau = schedules.reduce_lr_on_plateau(lr=0.1, **kwargs)
    state = plateau.init()
    actual = []
    for metric in metrics:
        state = plateau.step(state, metric)
        actual.append((float(state.lr), float(state.best), float(state.num_bad_epochs)))
    assert max_abs_diff(np.asarray(actual), expected) <= F64


# ----------------------------------------------------------------------------------------------------
# interop.state_dict: num_batches_tracked is int64 like torch's, even when JAX (x64 off) holds int32.
# ----------------------------------------------------------------------------------------------------


def test_state_dict_num_batches_tracked_is_int64_with_x64_off():
    """Kills: ``_Slot.to_torch`` keeping the fnml dtype for the counter instead of torch's int64.

    With x64 on (the test default) the fnml counter is already int64, so the round-trip tests cannot
    tell; with x64 off it is int32 and only the explicit cast gives torch's dtype.
    """
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    torch_bn = torch.nn.BatchNorm1d(3)
    torch_bn(torch.from_numpy(x))  # training mode: num_batches_tracked -> 1
    expected = torch_bn.state_dict()["num_batches_tracked"]
    with jax.enable_x64(False):
        bn = layers.BatchNorm1d(3)
        bn(jnp.asarray(x))
        assert bn.num_batches_tracked[...].dtype == jnp.int32  # precondition: the fnml counter is int32 here
        exported = interop.state_dict(bn)["num_batches_tracked"]
    assert exported.dtype == np.int64 and expected.dtype == torch.int64
    assert exported.shape == tuple(expected.shape) and int(exported) == int(expected) == 1
