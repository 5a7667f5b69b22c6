"""What a PyTorch user types out of habit gets an error that shows the fnml spelling (or just works)."""

from __future__ import annotations

import inspect

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from fnml import device, layers, losses, optim, parity, train

FACTORIES = ["sgd", "adam", "adamw", "adamax", "nadam", "radam", "rmsprop", "adagrad", "adadelta"]


def _torch_linear():
    return torch.nn.Linear(2, 2)


PARAMETER_HABITS = {
    "torch-parameters": lambda: _torch_linear().parameters(),
    "torch-parameter-list": lambda: list(_torch_linear().parameters()),
    "torch-module": _torch_linear,
    "fnml-module": lambda: layers.SimpleNN(rngs=nnx.Rngs(0)),
    "nnx-param-state": lambda: nnx.state(layers.SimpleNN(rngs=nnx.Rngs(0)), nnx.Param),
}


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("habit", list(PARAMETER_HABITS), ids=list(PARAMETER_HABITS))
def test_optimizer_given_parameters_shows_train_state_create(factory, habit):
    with pytest.raises(TypeError, match=rf"optim\.{factory}: fnml optimizers take no parameters .*"
                                        rf"TrainState\.create\(model, optim\.{factory}\(lr=\.\.\.\)\)"):  # fmt: skip
        getattr(optim, factory)(PARAMETER_HABITS[habit](), lr=0.01)


TORCH_NAMES = [
    ("learning_rate", 0.01, "lr"),
    ("b1", 0.9, "betas"),
    ("beta2", 0.99, "betas"),
    ("wd", 1e-4, "weight_decay"),
    ("decay", 1e-4, "weight_decay"),
    ("epsilon", 1e-6, "eps"),
]


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize(("keyword", "value", "torch_name"), TORCH_NAMES, ids=[k for k, _, _ in TORCH_NAMES])
def test_unknown_keywords_suggest_the_torch_name(factory, keyword, value, torch_name):
    accepted = inspect.signature(getattr(optim, factory)).parameters
    if factory == "rmsprop" and keyword == "decay":
        torch_name = "alpha"  # optax's rmsprop "decay" is torch's alpha
    if torch_name not in accepted:
        torch_name = None  # e.g. betas for SGD: no suggestion that would not work
    with pytest.raises(TypeError, match=rf"optim\.{factory}: unknown keyword {keyword}=") as info:
        getattr(optim, factory)(**{keyword: value})
    if torch_name is not None:
        assert f"did you mean {torch_name}=" in str(info.value)
    assert "fnml uses torch.optim's names: lr" in str(info.value)


def test_misspelt_keyword_gets_the_closest_name_and_valid_calls_still_work():
    with pytest.raises(TypeError, match="unknown keyword momentun=0.9; did you mean momentum="):
        optim.sgd(lr=0.1, momentun=0.9)
    with pytest.raises(TypeError, match=r"did you mean betas= \(one pair: betas=\(beta1, beta2\)\)"):
        optim.adam(lr=0.1, beta1=0.8)
    assert isinstance(optim.adam(0.1, betas=(0.8, 0.9)), optax.GradientTransformation)
    assert isinstance(optim.sgd(optim.step_lr(lr=0.1, step_size=2)), optax.GradientTransformation)  # a schedule


def test_train_state_refuses_a_torch_optimizer_and_names_the_fnml_way():
    optimizer = torch.optim.Adam(_torch_linear().parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"a torch optimizer; fnml's take no parameters: TrainState\.create"):
        train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), optimizer)


def test_eval_and_train_return_the_model():
    model = layers.SimpleNN(rngs=nnx.Rngs(0))
    assert model.eval() is model and model.train() is model


def test_device_to_accepts_torch_tensors_and_refuses_torch_modules():
    tensor = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    moved = device.to(tensor, "cpu")
    assert moved.dtype == jnp.float32 and moved.shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(moved), tensor.numpy())
    tensor.add_(1.0)  # the conversion copied: a later in-place change does not show
    assert float(moved[0, 0]) == 0.0
    tree = device.to({"x": torch.ones(2, requires_grad=True), "y": np.zeros(1)}, device.device("cpu"))
    assert float(tree["x"].sum()) == 2.0 and tree["y"].shape == (1,)
    with pytest.raises(TypeError, match=r"to: got a torch\.nn\.Module \(Linear\); port it first with "
                                        r"fnml\.interop\.from_torch"):  # fmt: skip
        device.to(_torch_linear(), "cpu")


def _tiny_pair():
    torch_model = torch.nn.Linear(2, 1).double()
    model = layers.Linear(2, 1, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    model.kernel[...] = jnp.asarray(torch_model.weight.detach().numpy().T.copy())
    model.bias[...] = jnp.asarray(torch_model.bias.detach().numpy().copy())
    return torch_model, model


def test_print_of_every_parity_report_shows_its_table(capsys):
    torch_model, model = _tiny_pair()
    x, y = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    criterion = (torch.nn.MSELoss(), losses.MSELoss())
    reports = {
        "Forward parity": parity.compare_forward(torch_model, model, x),
        "Gradient parity": parity.compare_gradients(torch_model, model, x, y, criterion),
        "Training parity: loss per step": parity.compare_training(
            torch_model,
            torch.optim.SGD(torch_model.parameters(), lr=0.1),
            torch.nn.MSELoss(),
            model,
            optim.sgd(lr=0.1),
            losses.MSELoss(),
            [(x, y)],
            steps=2,
        ),  # fmt: skip
        "check_defaults|Settings that differ": parity.check_defaults(torch_model, model),
    }
    for titles, report in reports.items():
        print(report)
        out = capsys.readouterr().out
        assert any(title in out for title in titles.split("|")), out
        assert "Report(" not in out  # the table, not the dataclass repr
    assert "PASS: 2 steps" in str(reports["Training parity: loss per step"])
