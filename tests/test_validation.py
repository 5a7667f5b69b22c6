"""One rule for bad arguments: ``TypeError`` for a wrong type, ``ValueError`` for a wrong value.

Each public constructor / factory of losses, schedules, grad, tensors, data and sidebyside is given one
argument of the wrong type and one of the right type with a wrong value; the message must name the
argument, what was expected and what was received. The checks of ``fnml/_validation.py`` themselves are
tested first.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from fnml import _validation as V
from fnml import data, grad, losses, schedules, sidebyside, tensors

KEY = jax.random.key(0)

# ---------------------------------------------------------------------------------------------------
# The vocabulary
# ---------------------------------------------------------------------------------------------------

# (id, check, wrong type, TypeError match, wrong value, ValueError match)
CHECKS = [
    (
        "check_number",
        lambda v: V.check_number("lr", v, where="f"),
        "0.1",
        r"f: lr must be a number, got '0.1' \(str\)",
        None,
        None,
    ),
    (
        "check_positive",
        lambda v: V.check_positive("lr", v),
        True,
        r"lr must be a number, got True \(bool\)",
        0.0,
        r"lr must be > 0 and finite, got lr=0.0",
    ),
    (
        "check_non_negative",
        lambda v: V.check_non_negative("eps", v),
        None,
        r"eps must be a number, got None",
        float("inf"),
        r"eps must be >= 0 and finite, got eps=inf",
    ),
    (
        "check_bool",
        lambda v: V.check_bool("bias", v, where="LSTM"),
        1,
        r"LSTM: bias must be a bool \(True or False\), got 1 \(int\)",
        None,
        None,
    ),
    (
        "check_int",
        lambda v: V.check_int("n", v, minimum=0),
        2.5,
        r"n must be an int, got 2.5 \(float\)",
        -1,
        r"n must be an int >= 0, got n=-1",
    ),
    (
        "check_positive_int",
        lambda v: V.check_positive_int("n", v),
        "3",
        r"n must be a positive integer, got '3' \(str\)",
        0,
        r"n must be a positive integer, got n=0",
    ),
    (
        "check_pair",
        lambda v: V.check_pair("kernel_size", v),
        (3, 2.0),
        r"kernel_size must be an int or a tuple of 2 ints, got kernel_size=\(3, 2.0\)",
        (3, -1),
        r"kernel_size must be positive, got kernel_size=\(3, -1\)",
    ),
    (
        "check_key",
        lambda v: V.check_key("key", v),
        0,
        r"key must be a jax.random key \(jax.random.key\(seed\)\), got 0 \(int\)",
        None,
        None,
    ),
    (
        "check_in_interval",
        lambda v: V.check_in_interval("p", v, 0.0, 1.0),
        "0.5",
        r"p must be a number",
        1.0,
        r"p must be in \[0.0, 1.0\), got p=1.0",
    ),
    (
        "check_choice",
        lambda v: V.check_choice("mode", v, ("min", "max")),
        0,
        r"mode must be one of 'min', 'max'; got 0 \(int\)",
        "minimum",
        r"mode must be one of 'min', 'max'; got mode='minimum'",
    ),
    (
        "check_choice-bool",
        lambda v: V.check_choice("fused", v, ("auto", True, False)),
        1,
        r"fused must be one of 'auto', True, False; got 1 \(int\)",
        "yes",
        r"got fused='yes'",
    ),
    ("check_ndim", None, None, None, (2, 3), r"x must be 3-D or 4-D, got a 2-D array of shape \(2, 3\)"),
]


@pytest.mark.parametrize(
    ("check", "bad_type", "type_match"),
    [c[1:4] for c in CHECKS if c[2] is not None],
    ids=[c[0] for c in CHECKS if c[2] is not None],
)
def test_a_wrong_type_is_a_type_error(check, bad_type, type_match):
    with pytest.raises(TypeError, match=type_match):
        check(bad_type)


@pytest.mark.parametrize(
    ("check", "bad_value", "value_match"),
    [(c[1], c[4], c[5]) for c in CHECKS if c[4] is not None],
    ids=[c[0] for c in CHECKS if c[4] is not None],
)
def test_a_wrong_value_is_a_value_error(check, bad_value, value_match):
    check = check or (lambda shape: V.check_ndim("x", shape, (3, 4)))
    with pytest.raises(ValueError, match=value_match):
        check(bad_value)


def test_checks_return_normalised_values():
    assert V.check_positive_int("n", np.int64(3)) == 3 and type(V.check_positive_int("n", np.int64(3))) is int
    assert V.check_pair("k", [2, 3]) == (2, 3)
    assert V.check_bool("b", np.bool_(True)) is True
    assert V.check_number("lr", np.float32(0.5)) == 0.5  # numpy scalars are numbers
    assert V.check_choice("reduction", "sum", ("mean", "sum")) == "sum"
    V.check_key("key", jax.random.PRNGKey(0))  # raw uint32 keys are keys too


# ---------------------------------------------------------------------------------------------------
# Every public constructor / factory of the modules
# ---------------------------------------------------------------------------------------------------

X2 = jnp.ones((2, 3))
LABELS = jnp.array([0, 1])

# (id, wrong-type call, TypeError match, wrong-value call, ValueError match); None where an argument has no
# wrong type (or no wrong value) to give.
CONSTRUCTORS = [
    # losses: functional forms
    (
        "mse_loss",
        lambda: losses.mse_loss(X2, X2, reduction=None),
        r"mse_loss: reduction must be one of 'mean', 'sum', 'none'; got None",
        lambda: losses.mse_loss(X2, X2, reduction="avg"),
        r"got reduction='avg'",
    ),
    (
        "l1_loss",
        lambda: losses.l1_loss(X2, X2.astype(bool)),
        r"l1_loss: target must have a real numeric dtype, got dtype bool",
        lambda: losses.l1_loss(X2, X2[0]),
        r"l1_loss: target shape \(3,\) does not match input shape \(2, 3\)",
    ),
    (
        "smooth_l1_loss",
        lambda: losses.smooth_l1_loss(X2, X2, beta="1"),
        r"smooth_l1_loss: beta must be a number, got '1' \(str\)",
        lambda: losses.smooth_l1_loss(X2, X2, beta=-1.0),
        r"beta must be >= 0 and finite, got beta=-1.0",
    ),
    (
        "huber_loss",
        lambda: losses.huber_loss(X2, X2, delta=None),
        r"huber_loss: delta must be a number",
        lambda: losses.huber_loss(X2, X2, delta=0.0),
        r"delta must be > 0 and finite, got delta=0.0",
    ),
    (
        "cross_entropy",
        lambda: losses.cross_entropy(X2[:, :2], LABELS, ignore_index=1.5),
        r"cross_entropy: ignore_index must be an int, got 1.5 \(float\)",
        lambda: losses.cross_entropy(X2[:, :2], LABELS, label_smoothing=1.5),
        r"label_smoothing must be in \[0.0, 1.0\], got label_smoothing=1.5",
    ),
    (
        "nll_loss",
        lambda: losses.nll_loss(X2[:, :2], LABELS.astype(float)),
        r"nll_loss: class-index target must have an integer dtype",
        lambda: losses.nll_loss(X2[:, :2], jnp.array([0, 5])),
        r"nll_loss: target holds class index 5 outside \[0, 2\)",
    ),
    (
        "binary_cross_entropy",
        lambda: losses.binary_cross_entropy(X2 / 2, LABELS),
        r"binary_cross_entropy: target must have a floating dtype",
        lambda: losses.binary_cross_entropy(X2 * 2, X2),
        r"all elements of input must be in \[0, 1\], got 2.0",
    ),
    (
        "binary_cross_entropy_with_logits",
        lambda: losses.binary_cross_entropy_with_logits(X2, X2, pos_weight="3"),
        r"pos_weight must have a real numeric dtype",
        lambda: losses.binary_cross_entropy_with_logits(X2, X2, pos_weight=jnp.ones(4)),
        r"pos_weight of shape \(4,\) does not broadcast to the input shape \(2, 3\)",
    ),
    (
        "kl_div",
        lambda: losses.kl_div(X2, X2, log_target=1),
        r"kl_div: log_target must be a bool \(True or False\), got 1 \(int\)",
        lambda: losses.kl_div(X2, X2, reduction="average"),
        r"kl_div: reduction must be one of 'mean', 'batchmean', 'sum', 'none'; got reduction='average'",
    ),
    # losses: criteria validate when built
    (
        "MSELoss",
        lambda: losses.MSELoss(reduction=0),
        r"MSELoss: reduction must be one of .*; got 0 \(int\)",
        lambda: losses.MSELoss(reduction="avg"),
        r"MSELoss: reduction must be one of .*; got reduction='avg'",
    ),
    (
        "L1Loss",
        lambda: losses.L1Loss(reduction=b"sum"),
        r"L1Loss: reduction must be one of .*; got b'sum' \(bytes\)",
        lambda: losses.L1Loss(reduction="total"),
        r"got reduction='total'",
    ),
    (
        "SmoothL1Loss",
        lambda: losses.SmoothL1Loss(beta="0.5"),
        r"SmoothL1Loss: beta must be a number",
        lambda: losses.SmoothL1Loss(beta=-0.5),
        r"SmoothL1Loss: beta must be >= 0",
    ),
    (
        "HuberLoss",
        lambda: losses.HuberLoss(delta=[1.0]),
        r"HuberLoss: delta must be a number",
        lambda: losses.HuberLoss(delta=-1.0),
        r"HuberLoss: delta must be > 0",
    ),
    (
        "CrossEntropyLoss",
        lambda: losses.CrossEntropyLoss(ignore_index=True),
        r"CrossEntropyLoss: ignore_index must be an int, got True \(bool\)",
        lambda: losses.CrossEntropyLoss(label_smoothing=-0.1),
        r"CrossEntropyLoss: label_smoothing must be in \[0.0, 1.0\]",
    ),
    (
        "NLLLoss",
        lambda: losses.NLLLoss(weight=["a", "b"]),
        r"NLLLoss: weight must have a real numeric dtype, got dtype <U1",
        lambda: losses.NLLLoss(reduction="batchmean"),
        r"NLLLoss: reduction must be one of 'mean', 'sum', 'none'; got reduction='batchmean'",
    ),
    (
        "BCELoss",
        lambda: losses.BCELoss(weight=jnp.array([True])),
        r"BCELoss: weight must have a real numeric dtype, got dtype bool",
        lambda: losses.BCELoss(reduction="avg"),
        r"BCELoss: reduction must be one of",
    ),
    (
        "BCEWithLogitsLoss",
        lambda: losses.BCEWithLogitsLoss(pos_weight="3"),
        r"BCEWithLogitsLoss: pos_weight must have a real numeric dtype",
        lambda: losses.BCEWithLogitsLoss(reduction="mean "),
        r"got reduction='mean '",
    ),
    (
        "KLDivLoss",
        lambda: losses.KLDivLoss(log_target="yes"),
        r"KLDivLoss: log_target must be a bool",
        lambda: losses.KLDivLoss(reduction="avg"),
        r"KLDivLoss: reduction must be one of 'mean', 'batchmean', 'sum', 'none'",
    ),
    # schedules: factories
    (
        "step_lr",
        lambda: schedules.step_lr(0.1, step_size=2.5),
        r"StepLR: step_size must be a positive integer, got 2.5 \(float\)",
        lambda: schedules.step_lr(0.1, step_size=0),
        r"StepLR: step_size must be a positive integer, got step_size=0",
    ),
    (
        "multistep_lr",
        lambda: schedules.multistep_lr(0.1, milestones=[2, 4.0]),
        r"MultiStepLR: each milestone must be an int, got 4.0 \(float\)",
        lambda: schedules.multistep_lr(0.1, milestones=[4, 2]),
        r"MultiStepLR: milestones must be strictly increasing, got milestones=\[4, 2\]",
    ),
    (
        "exponential_lr",
        lambda: schedules.exponential_lr("0.1", gamma=0.9),
        r"ExponentialLR: lr must be a number, got '0.1' \(str\)",
        lambda: schedules.exponential_lr(0.1, gamma=0.0),
        r"ExponentialLR: gamma must be > 0",
    ),
    (
        "cosine_annealing_lr",
        lambda: schedules.cosine_annealing_lr(0.1, T_max=None),
        r"CosineAnnealingLR: T_max must be a positive integer, got None",
        lambda: schedules.cosine_annealing_lr(0.1, T_max=10, eta_min=-1.0),
        r"CosineAnnealingLR: eta_min must be >= 0",
    ),
    (
        "linear_lr",
        lambda: schedules.linear_lr(0.1, total_iters=1.5),
        r"LinearLR: total_iters must be an int, got 1.5 \(float\)",
        lambda: schedules.linear_lr(0.1, start_factor=0.0),
        r"LinearLR: start_factor must be in \(0, 1\], got start_factor=0.0",
    ),
    (
        "constant_lr",
        lambda: schedules.constant_lr(0.1, factor="half"),
        r"ConstantLR: factor must be a number",
        lambda: schedules.constant_lr(0.1, factor=1.5),
        r"ConstantLR: factor must be in \(0, 1\], got factor=1.5",
    ),
    (
        "one_cycle_lr",
        lambda: schedules.one_cycle_lr(0.1, total_steps=10, three_phase=1),
        r"OneCycleLR: three_phase must be a bool \(True or False\), got 1 \(int\)",
        lambda: schedules.one_cycle_lr(0.1, total_steps=10, anneal_strategy="exp"),
        r"OneCycleLR: anneal_strategy must be one of 'cos', 'linear'; got anneal_strategy='exp'",
    ),
    (
        "one_cycle_lr-per_epoch",
        lambda: schedules.one_cycle_lr(0.1, total_steps=10, per_epoch="no"),
        r"one_cycle_lr: per_epoch must be a bool",
        lambda: schedules.one_cycle_lr(0.1, epochs=0, steps_per_epoch=5),
        r"one_cycle_lr: epochs must be a positive integer, got epochs=0",
    ),
    (
        "reduce_lr_on_plateau",
        lambda: schedules.reduce_lr_on_plateau(0.1, patience=2.0),
        r"ReduceLROnPlateau: patience must be an int, got 2.0 \(float\)",
        lambda: schedules.reduce_lr_on_plateau(0.1, factor=1.0),
        r"ReduceLROnPlateau: factor must be in \[0, 1\)",
    ),
    # schedules: the classes themselves, built directly
    (
        "StepLR",
        lambda: schedules.StepLR(lr=0.1, step_size=3, steps_per_epoch=2.0),
        r"StepLR: steps_per_epoch must be a positive integer, got 2.0 \(float\)",
        lambda: schedules.StepLR(lr=0.1, step_size=0),
        r"StepLR: step_size must be a positive integer, got step_size=0",
    ),
    (
        "MultiStepLR",
        lambda: schedules.MultiStepLR(lr=0.1, milestones="30"),
        r"MultiStepLR: milestones must be a non-empty list of ints",
        lambda: schedules.MultiStepLR(lr=0.1, milestones=()),
        r"MultiStepLR: milestones must be a non-empty list of ints, got milestones=\(\)",
    ),
    (
        "ExponentialLR",
        lambda: schedules.ExponentialLR(lr=0.1, gamma=None),
        r"ExponentialLR: gamma must be a number",
        lambda: schedules.ExponentialLR(lr=-0.1, gamma=0.9),
        r"ExponentialLR: lr must be > 0 and finite, got lr=-0.1",
    ),
    (
        "CosineAnnealingLR",
        lambda: schedules.CosineAnnealingLR(lr=0.1, T_max=2.5),
        r"CosineAnnealingLR: T_max must be a positive integer, got 2.5 \(float\)",
        lambda: schedules.CosineAnnealingLR(lr=0.1, T_max=0),
        r"CosineAnnealingLR: T_max must be a positive integer, got T_max=0",
    ),
    (
        "LinearLR",
        lambda: schedules.LinearLR(lr=0.1, end_factor="1"),
        r"LinearLR: end_factor must be a number",
        lambda: schedules.LinearLR(lr=0.1, total_iters=-1),
        r"LinearLR: total_iters must be an int >= 0, got total_iters=-1",
    ),
    (
        "ConstantLR",
        lambda: schedules.ConstantLR(lr=0.1, total_iters="5"),
        r"ConstantLR: total_iters must be an int, got '5' \(str\)",
        lambda: schedules.ConstantLR(lr=0.1, factor=0.0),
        r"ConstantLR: factor must be in \(0, 1\]",
    ),
    (
        "OneCycleLR",
        lambda: schedules.OneCycleLR(max_lr=0.1, total_steps=10.0),
        r"OneCycleLR: total_steps must be a positive integer, got 10.0 \(float\)",
        lambda: schedules.OneCycleLR(max_lr=0.1, total_steps=10, pct_start=0.1),
        r"OneCycleLR: phase 1 of the cycle has zero length",
    ),
    (
        "ReduceLROnPlateau",
        lambda: schedules.ReduceLROnPlateau(lr=0.1, mode=None),
        r"ReduceLROnPlateau: mode must be one of 'min', 'max'; got None",
        lambda: schedules.ReduceLROnPlateau(lr=0.1, cooldown=-1),
        r"ReduceLROnPlateau: cooldown must be an int >= 0, got cooldown=-1",
    ),
    # grad: the transforms
    (
        "grad",
        lambda: grad.grad(jnp.sin, has_aux="no"),
        r"grad: has_aux must be a bool",
        lambda: grad.grad(jnp.sin, argnums=()),
        r"grad: argnums must name at least one argument",
    ),
    (
        "value_and_grad",
        lambda: grad.value_and_grad(jnp.sin, argnums=0.0),
        r"value_and_grad: argnums must be an int or a sequence of ints, got argnums=0.0",
        lambda: grad.value_and_grad(jnp.sin, argnums=[]),
        r"value_and_grad: argnums must name at least one argument",
    ),
    (
        "jacobian",
        lambda: grad.jacobian(jnp.sin, strategy=1),
        r"jacobian: strategy must be one of 'reverse-mode', 'forward-mode'; got 1 \(int\)",
        lambda: grad.jacobian(jnp.sin, strategy="central"),
        r"got strategy='central'",
    ),
    (
        "hessian",
        lambda: grad.hessian("sin"),
        r"hessian: f must be a callable",
        lambda: grad.hessian(jnp.sin, argnums=()),
        r"hessian: argnums must name at least one argument",
    ),
    (
        "backward",
        lambda: grad.backward(jnp.sin, jnp.ones(2), argnums="0"),
        r"backward: argnums must be an int or a sequence of ints",
        lambda: grad.backward(jnp.sin, jnp.ones(2), argnums=3),
        r"backward: argnums=3 is out of range for 1 argument",
    ),
    (
        "gradcheck",
        lambda: grad.gradcheck(jnp.sin, jnp.ones(2), eps="1e-6"),
        r"gradcheck: eps must be a number, got '1e-6' \(str\)",
        lambda: grad.gradcheck(jnp.sin, jnp.ones(2), atol=-1.0),
        r"gradcheck: atol must be >= 0 and finite, got atol=-1.0",
    ),
    # tensors: creation and conversion
    (
        "zeros",
        lambda: tensors.zeros(2, "3"),
        r"zeros: size must be an int, got '3' \(str\)",
        lambda: tensors.zeros(2, -3),
        r"zeros: size must be an int >= 0, got size=-3",
    ),
    (
        "full",
        lambda: tensors.full((2, 2.0), 1.0),
        r"full: size must be an int, got 2.0 \(float\)",
        lambda: tensors.full((-1,), 1.0),
        r"full: size must be an int >= 0, got size=-1",
    ),
    (
        "randn",
        lambda: tensors.randn(0, 3),
        r"randn: key must be a jax.random key .*got 0 \(int\)",
        lambda: tensors.randn(KEY, 3, -1),
        r"randn: size must be an int >= 0, got size=-1",
    ),
    (
        "rand",
        lambda: tensors.rand(KEY, True),
        r"rand: size must be an int, got True \(bool\)",
        lambda: tensors.rand(KEY, -2),
        r"rand: size must be an int >= 0, got size=-2",
    ),
    (
        "ones",
        lambda: tensors.ones((2, None)),
        r"ones: size must be an int, got None",
        lambda: tensors.ones(-1),
        r"ones: size must be an int >= 0, got size=-1",
    ),
    ("tensor", lambda: tensors.tensor([1.0], dtype="complex64"), r"unsupported dtype 'complex64'", None, None),
    (
        "to_torch",
        lambda: tensors.to_torch(X2, requires_grad=1),
        r"to_torch: requires_grad must be a bool \(True or False\), got 1 \(int\)",
        None,
        None,
    ),
    (
        "from_torch",
        lambda: tensors.from_torch(torch.ones(2), copy="yes"),
        r"from_torch: copy must be a bool",
        None,
        None,
    ),
    ("to_numpy", lambda: tensors.to_numpy(X2, copy=None), r"to_numpy: copy must be a bool", None, None),
    (
        "nchw_to_nhwc",
        None,
        None,
        lambda: tensors.nchw_to_nhwc(X2),
        r"nchw_to_nhwc: x must be 3-D or 4-D, got a 2-D array of shape \(2, 3\)",
    ),
    # data
    (
        "DataLoader",
        lambda: data.DataLoader(X2, batch_size=1, shuffle=1),
        r"DataLoader: shuffle must be a bool \(True or False\), got 1 \(int\)",
        lambda: data.DataLoader(X2, batch_size=0),
        r"DataLoader: batch_size must be a positive integer, got batch_size=0",
    ),
    (
        "DataLoader-key",
        lambda: data.DataLoader(X2, batch_size=1, shuffle=True, key=0),
        r"DataLoader: key must be a jax.random key .*got 0 \(int\)",
        lambda: data.DataLoader(X2, batch_size=4, drop_last=True),
        r"DataLoader: batch_size=4 is larger than the dataset \(2 samples\) with drop_last=True",
    ),
    (
        "random_split",
        lambda: data.random_split(KEY, 10, [0.5, "0.5"]),
        r"random_split: lengths\[1\] must be a number, got '0.5' \(str\)",
        lambda: data.random_split(KEY, 10, [0.5, 0.6]),
        r"random_split: lengths must be non-negative integers or fractions summing to 1",
    ),
    (
        "Standardizer",
        lambda: data.Standardizer(mean=np.array(["a"]), scale=np.ones(1)),
        r"Standardizer: mean must be a real numeric array, got dtype <U1",
        lambda: data.Standardizer(mean=np.zeros(2), scale=np.ones(3)),
        r"Standardizer: mean and scale must have the same shape, got \(2,\) and \(3,\)",
    ),
    (
        "batch_indices",
        lambda: data.batch_indices(4, 2, epoch=1.0),
        r"batch_indices: epoch must be an int, got 1.0 \(float\)",
        lambda: data.batch_indices(4, 2, shuffle=True),
        r"batch_indices: shuffle=True needs key=jax.random.key\(seed\), got key=None",
    ),
    (
        "num_batches",
        lambda: data.num_batches(10, 4, drop_last=None),
        r"num_batches: drop_last must be a bool",
        lambda: data.num_batches(10, 0),
        r"num_batches: batch_size must be a positive integer, got batch_size=0",
    ),
    (
        "epoch_batches",
        lambda: data.epoch_batches((X2,), jnp.arange(2), 1.5),
        r"epoch_batches: batch_size must be a positive integer, got 1.5 \(float\)",
        lambda: data.epoch_batches((X2,), jnp.arange(2), 0),
        r"epoch_batches: batch_size must be a positive integer, got batch_size=0",
    ),
    # sidebyside
    (
        "ParityCheck",
        lambda: sidebyside.ParityCheck("loss", 0.0, "1e-6"),
        r"ParityCheck: tol must be a number, got '1e-6' \(str\)",
        lambda: sidebyside.ParityCheck("loss", 0.0, -1e-6),
        r"ParityCheck: tol must be >= 0 and finite, got tol=-1e-06",
    ),
]


@pytest.mark.parametrize(
    ("call", "match"), [(c[1], c[2]) for c in CONSTRUCTORS if c[1]], ids=[c[0] for c in CONSTRUCTORS if c[1]]
)
def test_constructor_rejects_a_wrong_type_with_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()


@pytest.mark.parametrize(
    ("call", "match"), [(c[3], c[4]) for c in CONSTRUCTORS if c[3]], ids=[c[0] for c in CONSTRUCTORS if c[3]]
)
def test_constructor_rejects_a_wrong_value_with_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_schedule_built_directly_equals_its_factory():
    # Validation on construction does not change what a valid schedule computes.
    assert schedules.StepLR(lr=0.1, step_size=3) == schedules.step_lr(0.1, step_size=3)
    assert float(schedules.StepLR(lr=0.1, step_size=3, gamma=0.5)(3)) == pytest.approx(0.05)
    assert schedules.MultiStepLR(lr=0.1, milestones=[2, 4]).milestones == (2, 4)  # stored as a tuple
