"""The bad-input catalog: one row per (public function, bad input), each a pytest.raises test.

``ROWS`` is the single source of docs/bad_inputs.md (``python tests/test_bad_inputs.py > docs/bad_inputs.md``
regenerates it; ``test_the_doc_lists_every_row`` keeps the two in sync). Every error names the argument,
what was expected and what was received. Column "when": ``eager`` = plain-Python check before any
tracing (also raises under ``jit`` because it only needs shapes / dtypes / hyperparameters);
``eager (concrete)`` = a check on VALUES that runs when the array is concrete, while under ``jit`` the
same input gives the documented NaN (rows marked ``in jit``).
"""

from __future__ import annotations

import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from fnml import checkpoint, data, device, interop, layers, losses, optim, schedules, tensors, train

R = nnx.Rngs(0)
X4, Y4 = np.ones((4, 2)), np.ones((4, 1))


def _fit(**kw):
    args = dict(epochs=1, verbose=False)
    args.update(kw)
    X, Y = args.pop("X", X4), args.pop("Y", Y4)
    return train.fit(layers.SimpleNN(rngs=R), args.pop("tx", optim.sgd(lr=0.1)), losses.MSELoss(), X, Y, **args)


# Every directory these rows make lives under one TemporaryDirectory, removed when the
# module is collected or the interpreter exits, so the suite leaves nothing in /tmp.
_SCRATCH = tempfile.TemporaryDirectory(prefix="fnml-bad-inputs-")


def _not_a_checkpoint():
    return tempfile.mkdtemp(prefix="fnml-not-a-checkpoint-", dir=_SCRATCH.name)


def _corrupt_checkpoint():
    path = tempfile.mkdtemp(prefix="fnml-corrupt-", dir=_SCRATCH.name)
    state = {"w": jnp.arange(3.0)}
    checkpoint.save_checkpoint(path, state, step=1)
    with open(os.path.join(path, "1", checkpoint.MANIFEST), "w") as handle:
        handle.write("{")
    return checkpoint.restore_checkpoint(path, template=state, step=1)


def _save_pending():
    state = train.TrainState.create(layers.SimpleNN(rngs=R), optim.sgd(lr=0.1))
    step = train.make_train_step(losses.MSELoss(), accumulate_steps=2, streamed=True)
    state, _ = step(state, X4, Y4)
    return checkpoint.save_checkpoint(_not_a_checkpoint(), state, step=1)


# (function, bad input, exception, match, callable, when)
ROWS = [
    # ---- layers
    (
        "layers.LSTM",
        "bias=1 (torch: TypeError too)",
        TypeError,
        r"LSTM: bias must be a bool \(True or False\), got 1 \(int\)",
        lambda: layers.LSTM(4, 4, bias=1, rngs=R),
        "eager",
    ),
    (
        "layers.Linear",
        "input with the wrong number of features",
        ValueError,
        r"Linear\(in_features=3\) got an input with 4 features .*expected 3",
        lambda: layers.Linear(3, 2, rngs=R)(jnp.ones((2, 4))),
        "eager",
    ),
    (
        "layers.Linear",
        "in_features=0",
        ValueError,
        r"in_features must be a positive integer, got in_features=0",
        lambda: layers.Linear(0, 2, rngs=R),
        "eager",
    ),
    (
        "layers.Linear",
        "in_features='3' (a wrong type)",
        TypeError,
        r"Linear: in_features must be a positive integer, got '3' \(str\)",
        lambda: layers.Linear("3", 2, rngs=R),
        "eager",
    ),
    (
        "layers.Conv2d",
        "NCHW input given to the NHWC layer",
        ValueError,
        r"got an input with 8 channels .*expected 3; the input looks NCHW",
        lambda: layers.Conv2d(3, 4, 3, rngs=R)(jnp.ones((1, 3, 8, 8))),
        "eager",
    ),
    (
        "layers.Conv2d",
        "2-D input",
        ValueError,
        r"input must be 3-D or 4-D, got a 2-D array of shape \(8, 3\)",
        lambda: layers.Conv2d(3, 4, 3, rngs=R)(jnp.ones((8, 3))),
        "eager",
    ),
    (
        "layers.Conv2d",
        "in_channels not divisible by groups",
        ValueError,
        r"in_channels=3 must be divisible by groups=2",
        lambda: layers.Conv2d(3, 4, 3, groups=2, rngs=R),
        "eager",
    ),
    (
        "layers.Conv2d",
        "unknown padding_mode",
        ValueError,
        r"padding_mode must be one of .*got padding_mode='mirror'",
        lambda: layers.Conv2d(3, 4, 3, padding_mode="mirror", rngs=R),
        "eager",
    ),
    (
        "layers.Conv2d",
        "padding='same' with stride 2",
        ValueError,
        r"padding='same' is not supported for strided",
        lambda: layers.Conv2d(3, 4, 3, stride=2, padding="same", rngs=R),
        "eager",
    ),
    (
        "layers.BatchNorm1d",
        "wrong channel count",
        ValueError,
        r"BatchNorm1d\(num_features=3\) got an input with 5 channels .*expected 3",
        lambda: layers.BatchNorm1d(3)(jnp.ones((4, 5))),
        "eager",
    ),
    (
        "layers.BatchNorm1d",
        "one value per channel in training",
        ValueError,
        r"expected more than 1 value per channel when training, got input shape \(1, 3\)",
        lambda: layers.BatchNorm1d(3)(jnp.ones((1, 3))),
        "eager",
    ),
    (
        "layers.BatchNorm1d",
        "momentum=1.5",
        ValueError,
        r"momentum must be in \[0.0, 1.0\], got momentum=1.5",
        lambda: layers.BatchNorm1d(3, momentum=1.5),
        "eager",
    ),
    (
        "layers.BatchNorm2d",
        "eps=-1",
        ValueError,
        r"eps must be > 0, got eps=-1.0",
        lambda: layers.BatchNorm2d(3, eps=-1.0),
        "eager",
    ),
    (
        "layers.BatchNorm2d",
        "2-D input",
        ValueError,
        r"input must be 4-D, got a 2-D array of shape \(4, 3\)",
        lambda: layers.BatchNorm2d(3)(jnp.ones((4, 3))),
        "eager",
    ),
    (
        "layers.LayerNorm",
        "trailing axes differ from normalized_shape",
        ValueError,
        r"LayerNorm\(normalized_shape=\(4,\)\) got an input of shape \(2, 5\); "
        r"its trailing axes must be \(4,\)",
        lambda: layers.LayerNorm(4)(jnp.ones((2, 5))),
        "eager",
    ),
    (
        "layers.Embedding",
        "index == num_embeddings",
        IndexError,
        r"Embedding\(num_embeddings=5\): index 5 is out of range \[0, 4\]",
        lambda: layers.Embedding(5, 2, rngs=R)(jnp.array([5])),
        "eager (concrete)",
    ),
    (
        "layers.Embedding",
        "negative index",
        IndexError,
        r"index -1 is out of range \[0, 4\]",
        lambda: layers.Embedding(5, 2, rngs=R)(jnp.array([-1])),
        "eager (concrete)",
    ),
    (
        "layers.Embedding",
        "float indices",
        TypeError,
        r"indices must be an integer array, got dtype float",
        lambda: layers.Embedding(5, 2, rngs=R)(jnp.array([1.0])),
        "eager",
    ),
    (
        "layers.Embedding",
        "padding_idx out of range",
        ValueError,
        r"padding_idx must be within num_embeddings=5 \(in \[-5, 4\]\), got padding_idx=5",
        lambda: layers.Embedding(5, 2, padding_idx=5, rngs=R),
        "eager",
    ),
    (
        "layers.Dropout",
        "p=1.5",
        ValueError,
        r"p must be in \[0.0, 1.0\], got p=1.5",
        lambda: layers.Dropout(1.5),
        "eager",
    ),
    (
        "layers.MaxPool2d",
        "kernel_size=0",
        ValueError,
        r"kernel_size must be positive, got kernel_size=0",
        lambda: layers.MaxPool2d(0),
        "eager",
    ),
    (
        "layers.MaxPool2d",
        "padding > kernel/2",
        ValueError,
        r"padding should be at most half .*got padding=2",
        lambda: layers.MaxPool2d(2, padding=2),
        "eager",
    ),
    (
        "layers.AvgPool2d",
        "input smaller than the window",
        ValueError,
        r"input of shape \(1, 2, 2, 1\) \(NHWC\) is too small for kernel_size=4",
        lambda: layers.AvgPool2d(4)(jnp.ones((1, 2, 2, 1))),
        "eager",
    ),
    (
        "layers.AdaptiveAvgPool2d",
        "output_size=0",
        ValueError,
        r"output_size must be a positive int .*got output_size=0",
        lambda: layers.AdaptiveAvgPool2d(0),
        "eager",
    ),
    (
        "layers.Softmax",
        "dim out of range",
        IndexError,
        r"expected to be in range of \[-2, 1\], got 3",
        lambda: layers.Softmax(dim=3)(jnp.ones((2, 3))),
        "eager",
    ),
    (
        "layers.GELU",
        "unknown approximate",
        ValueError,
        r"approximate must be one of 'none', 'tanh'; got approximate='fast'",
        lambda: layers.GELU(approximate="fast"),
        "eager",
    ),
    (
        "layers.Sequential",
        "a function instead of a module",
        TypeError,
        r"layer 0 must be a module .*got custom_jvp",
        lambda: layers.Sequential(jax.nn.relu),
        "eager",
    ),
    (
        "layers.LSTM",
        "input_size mismatch",
        ValueError,
        r"input_size=2 of the input does not match LSTM\(input_size=3\)",
        lambda: layers.LSTM(3, 4, rngs=R)(jnp.ones((5, 2, 2))),
        "eager",
    ),
    (
        "layers.LSTM",
        "1-D input",
        ValueError,
        r"input must be 2-D or 3-D, got a 1-D array of shape \(5,\)",
        lambda: layers.LSTM(3, 4, rngs=R)(jnp.ones((5,))),
        "eager",
    ),
    (
        "layers.GRU",
        "h_0 of the wrong shape",
        ValueError,
        r"h_0 must have shape \(1, 2, 4\) .*got shape \(2, 2, 4\)",
        lambda: layers.GRU(3, 4, rngs=R)(jnp.ones((5, 2, 3)), jnp.ones((2, 2, 4))),
        "eager",
    ),
    (
        "layers.RNN",
        "unknown nonlinearity",
        ValueError,
        r"nonlinearity must be one of 'tanh', 'relu'; got nonlinearity='sigmoid'",
        lambda: layers.RNN(3, 4, nonlinearity="sigmoid", rngs=R),
        "eager",
    ),
    # ---- losses
    (
        "losses.mse_loss",
        "target shape differs",
        ValueError,
        r"target shape \(4,\) does not match input shape \(3,\); expected the same shape",
        lambda: losses.mse_loss(jnp.ones(3), jnp.ones(4)),
        "eager",
    ),
    (
        "losses.mse_loss",
        "reduction='avg'",
        ValueError,
        r"reduction must be one of 'mean', 'sum', 'none'; got reduction='avg'",
        lambda: losses.mse_loss(jnp.ones(3), jnp.ones(3), reduction="avg"),
        "eager",
    ),
    (
        "losses.mse_loss",
        "integer input",
        TypeError,
        r"input must have a floating dtype, got dtype int32",
        lambda: losses.mse_loss(jnp.ones(3, jnp.int32), jnp.ones(3, jnp.int32)),
        "eager",
    ),
    (
        "losses.cross_entropy",
        "class index == C",
        ValueError,
        r"target holds class index 3 outside \[0, 3\)",
        lambda: losses.cross_entropy(jnp.ones((2, 3)), jnp.array([0, 3])),
        "eager (concrete)",
    ),
    (
        "losses.cross_entropy",
        "negative class index (not ignore_index)",
        ValueError,
        r"class index -1 outside \[0, 3\) .*ignore_index=-100 is the only other value allowed",
        lambda: losses.cross_entropy(jnp.ones((2, 3)), jnp.array([0, -1])),
        "eager (concrete)",
    ),
    (
        "losses.cross_entropy",
        "class index out of range under jit",
        None,
        "NaN (no error can be raised from traced values)",
        lambda: _expect_nan(jax.jit(losses.cross_entropy)(jnp.ones((2, 3)), jnp.array([0, 3]))),
        "in jit",
    ),
    (
        "losses.cross_entropy",
        "float target of the wrong shape",
        ValueError,
        r"target shape \(2, 4\) does not match input shape \(2, 3\); expected class indices of shape \(2,\)",
        lambda: losses.cross_entropy(jnp.ones((2, 3)), jnp.ones((2, 4))),
        "eager",
    ),
    (
        "losses.cross_entropy",
        "label_smoothing=1.5",
        ValueError,
        r"label_smoothing must be in \[0.0, 1.0\], got label_smoothing=1.5",
        lambda: losses.cross_entropy(jnp.ones((2, 3)), jnp.array([0, 1]), label_smoothing=1.5),
        "eager",
    ),
    (
        "losses.cross_entropy",
        "weight with C+1 entries",
        ValueError,
        r"weight must have shape \(C,\) = \(3,\).*got shape \(4,\)",
        lambda: losses.cross_entropy(jnp.ones((2, 3)), jnp.array([0, 1]), weight=jnp.ones(4)),
        "eager",
    ),
    (
        "losses.cross_entropy",
        "float class indices",
        TypeError,
        r"class-index target must have an integer dtype, got dtype float",
        lambda: losses.cross_entropy(jnp.ones((2, 3)), jnp.array([0.0, 1.0])),
        "eager",
    ),
    (
        "losses.nll_loss",
        "batch size mismatch",
        ValueError,
        r"target shape \(3,\) does not match input shape \(2, 3\)",
        lambda: losses.nll_loss(jnp.ones((2, 3)), jnp.array([0, 1, 2])),
        "eager",
    ),
    (
        "losses.binary_cross_entropy",
        "probability 1.5",
        ValueError,
        r"all elements of input must be in \[0, 1\], got 1.5",
        lambda: losses.binary_cross_entropy(jnp.array([1.5]), jnp.array([1.0])),
        "eager (concrete)",
    ),
    (
        "losses.binary_cross_entropy",
        "NaN input (torch raises)",
        ValueError,
        r"all elements of input must be in \[0, 1\], got nan",
        lambda: losses.binary_cross_entropy(jnp.array([jnp.nan]), jnp.array([1.0])),
        "eager (concrete)",
    ),
    (
        "losses.binary_cross_entropy",
        "target 2.0",
        ValueError,
        r"all elements of target must be in \[0, 1\], got 2.0",
        lambda: losses.binary_cross_entropy(jnp.array([0.5]), jnp.array([2.0])),
        "eager (concrete)",
    ),
    (
        "losses.binary_cross_entropy",
        "probability 1.5 under jit",
        None,
        "NaN",
        lambda: _expect_nan(jax.jit(losses.binary_cross_entropy)(jnp.array([1.5]), jnp.array([1.0]))),
        "in jit",
    ),
    (
        "losses.binary_cross_entropy_with_logits",
        "pos_weight not broadcastable",
        ValueError,
        r"pos_weight of shape \(4,\) does not broadcast to the input shape \(2, 3\)",
        lambda: losses.binary_cross_entropy_with_logits(jnp.ones((2, 3)), jnp.ones((2, 3)), pos_weight=jnp.ones(4)),
        "eager",
    ),
    (
        "losses.huber_loss",
        "delta=0",
        ValueError,
        r"delta must be > 0 and finite, got delta=0.0",
        lambda: losses.huber_loss(jnp.ones(3), jnp.ones(3), delta=0.0),
        "eager",
    ),
    (
        "losses.smooth_l1_loss",
        "beta=-1",
        ValueError,
        r"beta must be >= 0 and finite, got beta=-1.0",
        lambda: losses.smooth_l1_loss(jnp.ones(3), jnp.ones(3), beta=-1.0),
        "eager",
    ),
    (
        "losses.kl_div",
        "reduction='avg'",
        ValueError,
        r"reduction must be one of 'mean', 'batchmean', 'sum', 'none'",
        lambda: losses.kl_div(jnp.ones(3), jnp.ones(3), reduction="avg"),
        "eager",
    ),
    # ---- optimizers, clipping, schedules
    (
        "optim.sgd",
        "params= (torch's Optimizer(model.parameters()))",
        TypeError,
        r"optim.sgd: fnml optimizers take no parameters \(got params=a dict of 1 entry \(not shown\).*"
        r"TrainState.create\(model, optim.sgd\(lr=...\)\)",
        lambda: optim.sgd(params={"w": np.full(3, 123.456)}),
        "eager",
    ),
    (
        "optim.adam",
        "amsgrad=1 (a bool option given an int)",
        TypeError,
        r"optim.adam: amsgrad must be a bool \(True or False\), got 1 \(int\)",
        lambda: optim.adam(amsgrad=1),
        "eager",
    ),
    (
        "schedules.sequential_lr",
        "sub-schedules with different base lr",
        ValueError,
        r"SequentialLR: every schedule must have the same lr .*got lr=0.1 for schedulers\[0\] and lr=0.2",
        lambda: schedules.sequential_lr([schedules.linear_lr(0.1), schedules.constant_lr(0.2)], milestones=[5]),
        "eager",
    ),
    (
        "schedules.cosine_annealing_warm_restarts",
        "T_0=0",
        ValueError,
        r"CosineAnnealingWarmRestarts: T_0 must be a positive integer, got T_0=0",
        lambda: schedules.cosine_annealing_warm_restarts(0.1, T_0=0),
        "eager",
    ),
    (
        "schedules.chained_scheduler",
        "a cosine with eta_min != 0 (no closed form)",
        ValueError,
        r"ChainedScheduler: schedulers\[0\] is a CosineAnnealingLR with eta_min=0.01.*use eta_min=0",
        lambda: schedules.chained_scheduler([schedules.cosine_annealing_lr(0.1, T_max=5, eta_min=0.01)]),
        "eager",
    ),
    (
        "schedules.current_lr",
        "a bare optimizer state without lr=",
        ValueError,
        r"current_lr: with a bare optimizer state, pass lr=",
        lambda: schedules.current_lr(optim.adam(lr=0.01).init({"w": jnp.zeros(2)})),
        "eager",
    ),
    (
        "optim.sgd",
        "lr=-0.1",
        ValueError,
        r"lr must be >= 0 and finite, got lr=-0.1",
        lambda: optim.sgd(lr=-0.1),
        "eager",
    ),
    (
        "optim.sgd",
        "nesterov without momentum",
        ValueError,
        r"nesterov=True requires momentum > 0 and dampening=0",
        lambda: optim.sgd(lr=0.1, nesterov=True),
        "eager",
    ),
    (
        "optim.adam",
        "betas[0]=1.0",
        ValueError,
        r"betas\[0\] must be in \[0.0, 1.0\), got betas\[0\]=1.0",
        lambda: optim.adam(betas=(1.0, 0.999)),
        "eager",
    ),
    (
        "optim.adam",
        "eps=-1",
        ValueError,
        r"eps must be >= 0 and finite, got eps=-1.0",
        lambda: optim.adam(eps=-1.0),
        "eager",
    ),
    (
        "optim.adamw",
        "weight_decay=-0.1",
        ValueError,
        r"weight_decay must be >= 0 and finite, got weight_decay=-0.1",
        lambda: optim.adamw(weight_decay=-0.1),
        "eager",
    ),
    (
        "optim.rmsprop",
        "alpha=-0.1",
        ValueError,
        r"alpha must be >= 0 and finite, got alpha=-0.1",
        lambda: optim.rmsprop(alpha=-0.1),
        "eager",
    ),
    (
        "optim.adagrad",
        "lr_decay=-1",
        ValueError,
        r"lr_decay must be >= 0 and finite, got lr_decay=-1.0",
        lambda: optim.adagrad(lr_decay=-1.0),
        "eager",
    ),
    (
        "optim.adadelta",
        "rho=1.5",
        ValueError,
        r"rho must be in \[0.0, 1.0\], got rho=1.5",
        lambda: optim.adadelta(rho=1.5),
        "eager",
    ),
    (
        "optim.nadam",
        "momentum_decay=-1",
        ValueError,
        r"momentum_decay must be >= 0 and finite, got momentum_decay=-1.0",
        lambda: optim.nadam(momentum_decay=-1.0),
        "eager",
    ),
    (
        "optim.clip_grad_norm",
        "max_norm=-1",
        ValueError,
        r"max_norm must be >= 0 and finite, got max_norm=-1.0",
        lambda: optim.clip_grad_norm(max_norm=-1.0),
        "eager",
    ),
    (
        "schedules.step_lr",
        "step_size=0",
        ValueError,
        r"step_size must be a positive integer, got step_size=0",
        lambda: schedules.step_lr(0.1, step_size=0),
        "eager",
    ),
    (
        "schedules.cosine_annealing_lr",
        "T_max=0",
        ValueError,
        r"T_max must be a positive integer, got T_max=0",
        lambda: schedules.cosine_annealing_lr(0.1, T_max=0),
        "eager",
    ),
    (
        "schedules.one_cycle_lr",
        "no total_steps nor epochs",
        ValueError,
        r"define either total_steps or \(epochs and steps_per_epoch\)",
        lambda: schedules.one_cycle_lr(0.1),
        "eager",
    ),
    (
        "schedules.multistep_lr",
        "decreasing milestones",
        ValueError,
        r"milestones must be strictly increasing, got milestones=\[5, 2\]",
        lambda: schedules.multistep_lr(0.1, milestones=[5, 2]),
        "eager",
    ),
    (
        "schedules.StepLR",
        "built directly with step_size=0",
        ValueError,
        r"StepLR: step_size must be a positive integer, got step_size=0",
        lambda: schedules.StepLR(lr=0.1, step_size=0),
        "eager",
    ),
    (
        "schedules.step_lr",
        "step_size=2.5 (a wrong type)",
        TypeError,
        r"StepLR: step_size must be a positive integer, got 2.5 \(float\)",
        lambda: schedules.step_lr(0.1, step_size=2.5),
        "eager",
    ),
    # ---- data
    (
        "data.DataLoader",
        "empty dataset",
        ValueError,
        r"the dataset is empty \(0 samples\)",
        lambda: data.DataLoader(np.ones((0, 2)), np.ones((0,)), batch_size=2),
        "eager",
    ),
    (
        "data.DataLoader",
        "X and Y of different lengths",
        ValueError,
        r"same number of samples .*got lengths \[4, 3\]",
        lambda: data.DataLoader(np.ones((4, 2)), np.ones((3,)), batch_size=2),
        "eager",
    ),
    (
        "data.DataLoader",
        "batch_size=0",
        ValueError,
        r"batch_size must be a positive integer, got batch_size=0",
        lambda: data.DataLoader(np.ones((4, 2)), np.ones((4,)), batch_size=0),
        "eager",
    ),
    (
        "data.DataLoader",
        "batch_size > n with drop_last",
        ValueError,
        r"batch_size=8 is larger than the dataset \(4 samples\) with drop_last=True",
        lambda: data.DataLoader(np.ones((4, 2)), np.ones((4,)), batch_size=8, drop_last=True),
        "eager",
    ),
    (
        "data.DataLoader",
        "shuffle without key",
        ValueError,
        r"shuffle=True needs key=jax.random.key\(seed\), got key=None",
        lambda: data.DataLoader(np.ones((4, 2)), np.ones((4,)), batch_size=2, shuffle=True),
        "eager",
    ),
    (
        "data.random_split",
        "fractions summing to 1.1",
        ValueError,
        r"lengths must be non-negative integers or fractions summing to 1",
        lambda: data.random_split(jax.random.key(0), 10, [0.5, 0.6]),
        "eager",
    ),
    (
        "data.Standardizer.fit",
        "empty dataset",
        ValueError,
        r"Standardizer.fit: the dataset is empty \(0 samples\)",
        lambda: data.Standardizer.fit(np.ones((0, 3))),
        "eager",
    ),
    # ---- training
    (
        "train.fit",
        "keep_modes='yes'",
        TypeError,
        r"fit: keep_modes must be a bool \(True or False\), got 'yes' \(str\)",
        lambda: _fit(keep_modes="yes"),
        "eager",
    ),
    (
        "train.make_train_step",
        "a torch tensor jax cannot hold (float8) in the batch",
        TypeError,
        r"train step: batch\[0\]: unsupported dtype torch.float8_e5m2fnuz; fnml maps these dtypes",
        lambda: train.make_train_step(losses.MSELoss())(
            train.TrainState.create(layers.SimpleNN(rngs=R), optim.sgd(lr=0.1)),
            torch.zeros(4, 2).to(torch.float8_e5m2fnuz),
            torch.zeros(4, 1),
        ),
        "eager",
    ),
    (
        "train.TrainState.train",
        "mode=1",
        TypeError,
        r"TrainState.train: mode must be a bool \(True or False\), got 1 \(int\)",
        lambda: train.TrainState.create(layers.SimpleNN(rngs=R), optim.sgd(lr=0.1)).train(1),
        "eager",
    ),
    (
        "train.fit",
        "X and Y of different lengths",
        ValueError,
        r"fit: .*same number of samples .*got lengths \[4, 3\]",
        lambda: _fit(Y=np.ones((3, 1))),
        "eager",
    ),
    (
        "train.fit",
        "empty dataset",
        ValueError,
        r"fit: the dataset is empty \(0 samples\)",
        lambda: _fit(X=np.ones((0, 2)), Y=np.ones((0, 1))),
        "eager",
    ),
    (
        "train.fit",
        "batch_size > n with drop_last",
        ValueError,
        r"fit: batch_size=8 is larger than the dataset \(4 samples\)",
        lambda: _fit(batch_size=8, drop_last=True),
        "eager",
    ),
    (
        "train.fit",
        "epochs=0",
        ValueError,
        r"fit: epochs must be a positive integer, got epochs=0",
        lambda: _fit(epochs=0),
        "eager",
    ),
    (
        "train.fit",
        "tx='adam' (a string)",
        TypeError,
        r"tx must be an optax.GradientTransformation .*got str",
        lambda: _fit(tx="adam"),
        "eager",
    ),
    (
        "train.fit",
        "resume_from a missing directory",
        FileNotFoundError,
        r"fit: resume_from='/nonexistent/ck' does not exist",
        lambda: _fit(resume_from="/nonexistent/ck"),
        "eager",
    ),
    (
        "train.make_train_step",
        "streamed=True without an accumulation (accumulate_steps=1)",
        ValueError,
        r"make_train_step: streamed=True feeds the micro-batches .* needs accumulate_steps >= 2",
        lambda: train.make_train_step(losses.MSELoss(), streamed=True),
        "eager",
    ),
    (
        "train.fit",
        "loader= an iterator (exhausted after one epoch)",
        TypeError,
        r"fit: loader is an iterator",
        lambda: _fit(X=None, Y=None, loader=iter([(X4, Y4)])),
        "eager",
    ),
    (
        "train.fit",
        "loader= with batch_size (the loader batches)",
        ValueError,
        r"fit: batch_size=2 with loader=: the loader batches and shuffles",
        lambda: _fit(X=None, Y=None, loader=[(X4, Y4)], batch_size=2),
        "eager",
    ),
    (
        "train.fit",
        "loader= yielding a number of micro-batches not divisible by accumulate_steps",
        ValueError,
        r"fit: accumulate_steps=2 needs every optimizer step to see 2 micro-batches, but the loader yields 3",
        lambda: _fit(X=None, Y=None, loader=[(X4, Y4)] * 3, accumulate_steps=2),
        "eager",
    ),
    (
        "checkpoint.save_checkpoint",
        "a state holding the gradients of pending micro-batches",
        ValueError,
        r"save_checkpoint: the state holds the gradients of 1 micro-batches of a streamed accumulation",
        lambda: _save_pending(),
        "eager",
    ),
    (
        "train.fit",
        "resume_from a directory without checkpoints",
        ValueError,
        r"is not a checkpoint directory",
        lambda: _fit(resume_from=_not_a_checkpoint()),
        "eager",
    ),
    (
        "train.fit",
        "check_finite='yes'",
        TypeError,
        r"check_finite must be a bool \(True or False\), got 'yes' \(str\)",
        lambda: _fit(check_finite="yes"),
        "eager",
    ),
    (
        "train.fit",
        "NaN in X (on_nonfinite='raise')",
        train.NonFiniteLossError,
        r"non-finite loss nan at step 1",
        lambda: _fit(X=np.full((4, 2), np.nan)),
        "after the step (host check of the losses)",
    ),
    # ---- devices
    (
        "device.device",
        "unknown name 'cdua'",
        ValueError,
        r"unknown device string 'cdua'; expected \"cpu\", \"cuda\"",
        lambda: device.device("cdua"),
        "eager",
    ),
    (
        "device.device",
        "index past the last device",
        device.DeviceNotFoundError,
        r"device 'cpu:7' does not exist",
        lambda: device.device("cpu:7"),
        "eager",
    ),
    (
        "device.to",
        "unknown device name",
        ValueError,
        r"unknown device string 'quantum'",
        lambda: device.to(jnp.ones(2), "quantum"),
        "eager",
    ),
    # ---- state dicts, files, checkpoints
    (
        "interop.load_state_dict",
        "missing key",
        interop.StateDictError,
        r"Missing key\(s\): 'bias'",
        lambda: interop.load_state_dict(layers.Linear(2, 3, rngs=R), {"weight": np.ones((3, 2))}),
        "eager",
    ),
    (
        "interop.load_state_dict",
        "transposed weight",
        interop.StateDictError,
        r"size mismatch for weight: shape \(2, 3\) in the state dict, \(3, 2\) in the model",
        lambda: interop.load_state_dict(layers.Linear(2, 3, rngs=R), {"weight": np.ones((2, 3)), "bias": np.ones(3)}),
        "eager",
    ),
    (
        "interop.load_state_dict",
        "unexpected key",
        interop.StateDictError,
        r"Unexpected key\(s\): 'extra'",
        lambda: interop.load_state_dict(
            layers.Linear(2, 3, rngs=R), {"weight": np.ones((3, 2)), "bias": np.ones(3), "extra": np.ones(1)}
        ),
        "eager",
    ),
    (
        "interop.load_state_dict",
        "a torch model instead of its state_dict",
        TypeError,
        r"pass torch_model.state_dict\(\), not the torch model",
        lambda: interop.load_state_dict(layers.Linear(2, 3, rngs=R), torch.nn.Linear(2, 3)),
        "eager",
    ),
    (
        "interop.load_state_dict",
        "unknown file extension",
        ValueError,
        r"state_dict path 'w.npz' has an unknown extension",
        lambda: interop.load_state_dict(layers.Linear(2, 3, rngs=R), "w.npz"),
        "eager",
    ),
    (
        "interop.load_safetensors",
        "missing file",
        FileNotFoundError,
        r"no safetensors file at '/nonexistent/w.safetensors'",
        lambda: interop.load_safetensors("/nonexistent/w.safetensors"),
        "eager",
    ),
    (
        "checkpoint.restore_checkpoint",
        "directory does not exist",
        FileNotFoundError,
        r"restore_checkpoint: checkpoint directory '/nonexistent/ck' does not exist",
        lambda: checkpoint.restore_checkpoint("/nonexistent/ck", template={}),
        "eager",
    ),
    (
        "checkpoint.restore_checkpoint",
        "directory is not a checkpoint",
        ValueError,
        r"restore_checkpoint: '.*fnml-not-a-checkpoint-.*' is not a checkpoint directory",
        lambda: checkpoint.restore_checkpoint(_not_a_checkpoint(), template={}),
        "eager",
    ),
    (
        "checkpoint.restore_checkpoint",
        "corrupt manifest, explicit step",
        checkpoint.CorruptCheckpointError,
        r"unreadable manifest",
        _corrupt_checkpoint,
        "eager",
    ),
    (
        "checkpoint.checkpoint_metadata",
        "directory is not a checkpoint",
        ValueError,
        r"checkpoint_metadata: .* is not a checkpoint directory",
        lambda: checkpoint.checkpoint_metadata(_not_a_checkpoint()),
        "eager",
    ),
    # ---- tensors
    (
        "tensors.tensor",
        "unknown dtype",
        TypeError,
        r"unsupported dtype 'complex300'",
        lambda: tensors.tensor([1, 2], dtype="complex300"),
        "eager",
    ),
    (
        "tensors.randn",
        "an int instead of a key",
        TypeError,
        r"randn: key must be a jax.random key \(jax.random.key\(seed\)\), got 3 \(int\)",
        lambda: tensors.randn(3, 4),
        "eager",
    ),
    (
        "tensors.nchw_to_nhwc",
        "2-D input",
        ValueError,
        r"x must be 3-D or 4-D, got a 2-D array of shape \(2, 3\)",
        lambda: tensors.nchw_to_nhwc(jnp.ones((2, 3))),
        "eager",
    ),
    (
        "tensors.from_torch",
        "a list",
        TypeError,
        r"from_torch: tensor must be a torch.Tensor, got list",
        lambda: tensors.from_torch([1, 2]),
        "eager",
    ),
]


def _expect_nan(value):
    """The documented in-jit result: NaN, never a plausible wrong number."""
    assert np.isnan(np.asarray(value)).all(), value
    return value


def _id(row):
    return f"{row[0]}: {row[1]}"


@pytest.mark.parametrize("row", ROWS, ids=[_id(r) for r in ROWS])
def test_bad_input(row):
    _, _, exception, match, call, _ = row
    if exception is None:
        call()  # the documented non-error result is asserted inside the callable
        return
    with pytest.raises(exception, match=match):
        call()


def test_the_catalog_has_at_least_40_rows_and_the_doc_lists_every_row():
    assert len(ROWS) >= 40
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "bad_inputs.md")
    with open(path) as handle:
        doc = handle.read()
    assert doc == render(), "docs/bad_inputs.md is stale: regenerate with `python tests/test_bad_inputs.py`"


def render() -> str:
    """docs/bad_inputs.md from ROWS."""
    lines = [
        "# Bad inputs: what every public function does with them",
        "",
        "Generated from `tests/test_bad_inputs.py` (`python tests/test_bad_inputs.py > docs/bad_inputs.md`);",
        "every row is a `pytest.raises(..., match=...)` test there.",
        "",
        "**When** the check runs: `eager` = plain Python before any tracing (shapes, dtypes,",
        "hyperparameters: it also raises when the call is traced under `jit`); `eager (concrete)` = a check",
        "on *values* (class indices, probabilities, embedding indices) that runs when the array is concrete;",
        "under `jit` values",
        "cannot raise, so the same input gives NaN (the `in jit` rows), never a plausible wrong number. For",
        "non-finite values inside a jitted training step use `fit(..., check_finite=True)` /",
        "`make_train_step(..., check_finite=True)` (host check of per-step flags, names the parameter)",
        "rather than `jax.experimental.checkify` (which would change the step's signature).",
        "",
        f"{len(ROWS)} rows.",
        "",
        "| function | bad input | result | message (regex) | when |",
        "|---|---|---|---|---|",
    ]
    for function, bad, exception, match, _, when in ROWS:
        result = exception.__name__ if exception is not None else "no error"
        message = match.replace("|", "\\|")
        lines.append(f"| `{function}` | {bad} | {result} | `{message}` | {when} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
