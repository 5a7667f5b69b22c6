"""The training and evaluation steps take torch tensors wherever they take jax arrays (a torch DataLoader's
batches as they come), with tensors.from_torch's dtype rules, and train exactly as on the same numpy batch and
as torch does (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx
from helpers import cache_size, copy_torch_weights, max_abs_diff, tolerance

from fnml import layers, losses, optim, train

STEPS = 3


def _data():
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((8, 4)), rng.integers(0, 3, 8)) for _ in range(STEPS)]


def _models():
    torch_model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    model = layers.Sequential(
        layers.Linear(4, 6, param_dtype=np.float64, rngs=nnx.Rngs(0)),
        layers.Tanh(),
        layers.Linear(6, 3, param_dtype=np.float64, rngs=nnx.Rngs(1)),
    )
    copy_torch_weights(model, torch_model)
    return torch_model, model


def test_a_train_step_on_torch_tensors_equals_numpy_and_torch():
    torch_model, model = _models()
    step = train.make_train_step(losses.CrossEntropyLoss())
    on_torch = on_numpy = train.TrainState.create(model, optim.sgd(lr=0.1, momentum=0.9))
    optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9)
    for x, y in _data():
        on_torch, loss_t = step(on_torch, torch.from_numpy(x), torch.from_numpy(y))  # float64, int64 tensors
        on_numpy, loss_n = step(on_numpy, x, y)
        optimizer.zero_grad()
        expected = torch.nn.functional.cross_entropy(torch_model(torch.from_numpy(x)), torch.from_numpy(y))
        expected.backward()
        optimizer.step()
        assert float(loss_t) == float(loss_n)  # the same program on the same values
        assert abs(float(loss_t) - expected.item()) <= tolerance("float64")["atol"]
    assert max_abs_diff(on_torch.params, on_numpy.params) == 0.0
    fnml_weights = on_torch.model()[0].kernel[...]
    assert max_abs_diff(fnml_weights, torch_model[0].weight.detach().numpy().T) <= tolerance("float64")["atol"]
    assert cache_size(step) == 1  # a torch batch and a numpy batch of the same dtypes: one compilation


def test_nested_torch_batches_and_the_eval_step():
    _, model = _models()
    x, y = _data()[0]

    def loss_fn(model, batch):  # a dict batch, as a torch collate_fn may build
        return losses.cross_entropy(model(batch["x"]), batch["y"])

    step = train.make_train_step(loss_fn=loss_fn)
    state = train.TrainState.create(model, optim.sgd(lr=0.1))
    a, loss_a = step(state, {"x": torch.from_numpy(x), "y": torch.from_numpy(y)})
    b, loss_b = step(state, {"x": x, "y": y})
    assert float(loss_a) == float(loss_b) and max_abs_diff(a.params, b.params) == 0.0
    evaluate = train.make_eval_step(losses.CrossEntropyLoss(), metrics={"accuracy": train.accuracy})
    on_torch = evaluate(state, torch.from_numpy(x), torch.from_numpy(y))
    on_numpy = evaluate(state, x, y)
    assert {k: float(v) for k, v in on_torch.items()} == {k: float(v) for k, v in on_numpy.items()}


def test_the_batch_is_copied_not_shared_with_torch():
    """The step runs asynchronously: a loader refilling its tensor in place must not change the step's input."""
    _, model = _models()
    x, y = _data()[0]
    tensor = torch.from_numpy(x.copy())
    step = train.make_train_step(losses.CrossEntropyLoss())
    state = train.TrainState.create(model, optim.sgd(lr=0.1))
    _, loss = step(state, tensor, torch.from_numpy(y))
    tensor.fill_(1e6)  # what a reused loader buffer would do next
    assert float(loss) == float(step(state, x, y)[1])


def test_a_tensor_dtype_jax_cannot_hold_is_refused_by_name():
    _, model = _models()
    step = train.make_train_step(losses.MSELoss())
    state = train.TrainState.create(model, optim.sgd(lr=0.1))
    bad = torch.zeros(8, 4, dtype=torch.float64).to(torch.float8_e5m2fnuz)
    with pytest.raises(TypeError, match=r"train step: batch\[0\]: unsupported dtype torch.float8_e5m2fnuz"):
        step(state, bad, torch.zeros(8, 3, dtype=torch.float64))
