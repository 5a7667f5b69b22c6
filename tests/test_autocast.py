"""autocast="bfloat16" against torch.autocast("cpu", dtype=torch.bfloat16) on the same weights and data.

What is held (measured, 50 steps): per-step losses within AUTOCAST_LOSS_ATOL[model] of torch's autocast run,
the first step's loss within FIRST_STEP_ATOL (one forward through bfloat16 layers), float32 master parameters and
optimizer state. Both runs differ from float32 training by ~1e-3 (bfloat16 rounding), so the test also checks
that fnml's autocast run IS a bfloat16 run (its first loss differs from the float32 one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from helpers import cache_size, copy_torch_weights

from fnml import layers, losses, optim, train

STEPS = 50
# Per-step loss |fnml - torch| over 50 steps (losses ~0.3..1.5), per model. fnml.functional accumulates
# bfloat16 matmuls/convolutions in float32 and adds the bias before the one rounding, as torch's CPU kernels:
# the first step is exact for both; the MLP then holds 4.3e-6 over 50 steps, the CNN drifts to 5.8e-3
# (convolution backward: torch's oneDNN bf16 kernels round their weight/input gradients differently).
AUTOCAST_LOSS_ATOL = {"mlp": 1e-4, "cnn": 1e-2}
FIRST_STEP_ATOL = 1e-6  # measured 0 (MLP and CNN)


class TorchMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = torch.nn.Linear(8, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 4)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class MLP(nnx.Module):
    def __init__(self, *, rngs):
        self.fc1, self.fc2 = layers.Linear(8, 32, rngs=rngs), layers.Linear(32, 32, rngs=rngs)
        self.fc3 = layers.Linear(32, 4, rngs=rngs)

    def __call__(self, x):
        return self.fc3(jax.nn.relu(self.fc2(jax.nn.relu(self.fc1(x)))))


class TorchCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 8, 3), torch.nn.Linear(8, 3)

    def forward(self, x):  # (N, 1, 8, 8) -> conv 6x6 -> pool 3x3 -> conv 1x1 -> (N, 8) -> (N, 3)
        return self.fc(torch.flatten(torch.relu(self.c2(torch.max_pool2d(torch.relu(self.c1(x)), 2))), 1))


class CNN(nnx.Module):
    def __init__(self, *, rngs):
        self.c1, self.c2 = layers.Conv2d(1, 4, 3, rngs=rngs), layers.Conv2d(4, 8, 3, rngs=rngs)
        self.pool, self.fc = layers.MaxPool2d(2), layers.Linear(8, 3, rngs=rngs)

    def __call__(self, x):  # NHWC (N, 8, 8, 1); the 1x1 spatial output flattens like torch's
        return self.fc(jax.nn.relu(self.c2(self.pool(jax.nn.relu(self.c1(x))))).reshape(x.shape[0], -1))


CASES = {
    "mlp": (TorchMLP, MLP, lambda: torch.randn(16, 8), 4),
    "cnn": (TorchCNN, CNN, lambda: torch.randn(8, 1, 8, 8), 3),
}


def _torch_run(torch_model, X, Y, *, autocast):
    optimizer = torch.optim.Adam(torch_model.parameters(), lr=1e-2)
    out = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = torch.nn.functional.cross_entropy(torch_model(X), Y)
        loss.backward()
        optimizer.step()
        out.append(loss.item())
    return np.array(out)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bfloat16_autocast_tracks_torch_autocast_over_50_steps(case):
    torch_cls, fnml_cls, draw, classes = CASES[case]
    torch_model = torch_cls()
    initial = {k: v.clone() for k, v in torch_model.state_dict().items()}
    X, Y = draw(), torch.randint(0, classes, (draw().shape[0],))
    x = X.numpy() if X.ndim == 2 else X.numpy().transpose(0, 2, 3, 1)  # NCHW -> NHWC
    torch_losses = _torch_run(torch_model, X, Y, autocast=True)

    runs = {}
    for autocast in ("bfloat16", None):
        torch_model.load_state_dict(initial)
        model = fnml_cls(rngs=nnx.Rngs(0))
        copy_torch_weights(model, torch_model)
        state = train.TrainState.create(model, optim.adam(lr=1e-2))
        step = train.make_train_step(losses.CrossEntropyLoss(), autocast=autocast)
        step_losses = []
        for _ in range(STEPS):
            state, loss = step(state, x, Y.numpy())
            step_losses.append(float(loss))
        assert cache_size(step) == 1
        runs[autocast] = (np.array(step_losses), state)

    fnml_losses, state = runs["bfloat16"]
    assert np.max(np.abs(fnml_losses - torch_losses)) <= AUTOCAST_LOSS_ATOL[case]
    assert abs(fnml_losses[0] - torch_losses[0]) <= FIRST_STEP_ATOL
    assert abs(fnml_losses[0] - runs[None][0][0]) > 1e-6  # the autocast run is not a float32 run
    # float32 master weights and optimizer state; the loss itself is float32 (torch: the same)
    floats = [a for a in jax.tree.leaves((state.params, state.opt_state)) if jnp.issubdtype(a.dtype, jnp.floating)]
    assert floats and all(a.dtype == jnp.float32 for a in floats)


def test_autocast_forward_casts_matmul_layers_only_and_keeps_the_module_unchanged():
    torch_model = TorchMLP()
    model = MLP(rngs=nnx.Rngs(0))
    copy_torch_weights(model, torch_model)
    state = train.TrainState.create(model, optim.sgd(lr=0.1))
    X, Y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    evaluate = train.make_eval_step(losses.CrossEntropyLoss(), autocast="bfloat16")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = torch.nn.functional.cross_entropy(torch_model(X), Y).item()
    assert abs(float(evaluate(state, X.numpy(), Y.numpy())["loss"]) - expected) <= FIRST_STEP_ATOL
    assert state.model().fc1.dtype is None  # the cast lives in the traced copy only

    def general(m, x, y):
        out = m(x)
        assert out.dtype == jnp.float32  # the general form's model returns float32 outputs under autocast
        return losses.cross_entropy(out, y)

    step = train.make_train_step(loss_fn=general, autocast="bfloat16")
    state, _ = step(state, X.numpy(), Y.numpy())
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(state.params))


def test_autocast_errors():
    with pytest.raises(ValueError, match="autocast='float16' needs a loss scaler"):
        train.make_train_step(losses.MSELoss(), autocast="float16")
    with pytest.raises(ValueError, match="autocast must be one of None, 'bfloat16', 'float16'"):
        train.fit(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.sgd(lr=0.1), losses.MSELoss(), np.ones((2, 2)),
                  np.ones((2, 1)), epochs=1, autocast="fp16")  # fmt: skip
    model = layers.SimpleNN(param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    step = train.make_train_step(losses.MSELoss(), autocast="bfloat16")
    with pytest.raises(ValueError, match="autocast needs float32 master parameters"):
        step(train.TrainState.create(model, optim.sgd(lr=0.1)), np.ones((2, 2)), np.ones((2, 1)))
