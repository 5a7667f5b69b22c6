"""fnml.parity against real torch: forward, gradients, 50-step training, first_divergence, check_defaults."""

from __future__ import annotations

import io
import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from flax import nnx
from helpers import one_torch_thread, tolerance
from rich.console import Console

from fnml import interop, layers, losses, optim, parity


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():  # torch on tiny tensors: its thread pool only costs (helpers.one_torch_thread)
        yield


class SmallCNN(nn.Module):
    """Conv (no bias before BatchNorm, as usual), BatchNorm2d, ReLU, MaxPool2d, flatten, Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(x.view(x.size(0), -1))


def six_layers():
    return nn.Sequential(
        nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 2)
    )


def _batches(dtype, count=5, n=6):
    generator = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(n, 2, 6, 6, dtype=dtype, generator=generator),
            torch.randint(0, 3, (n,), generator=generator),
        )
        for _ in range(count)
    ]


OPTIMIZERS = {
    "adam": (lambda params: torch.optim.Adam(params, lr=1e-2), lambda: optim.adam(lr=1e-2)),
    "sgd_momentum": (
        lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
        lambda: optim.sgd(lr=0.05, momentum=0.9),
    ),
}


@pytest.mark.parametrize("name", OPTIMIZERS, ids=list(OPTIMIZERS))
def test_training_parity_50_steps(name, dtype, torch_dtype):
    torch_model = SmallCNN().to(torch_dtype)
    twin = interop.from_torch(torch_model)
    make_torch_opt, make_fnml_opt = OPTIMIZERS[name]
    report = parity.compare_training(
        torch_model,
        make_torch_opt(torch_model.parameters()),
        nn.CrossEntropyLoss(),
        twin,
        make_fnml_opt(),
        losses.CrossEntropyLoss(),
        _batches(torch_dtype),
        steps=50,
    )
    assert len(report.torch_losses) == len(report.fnml_losses) == 50
    assert report.initial_max_param_diff == 0.0
    assert report.torch_losses[-1] < report.torch_losses[0]  # it actually trained
    limit = 1e-12 if dtype == "float64" else 1e-4
    assert report.max_loss_diff <= limit, report.to_dict()
    assert report.max_param_diff <= limit, report.to_dict()
    assert report.passed
    # The fnml model was updated in place to the final state (BatchNorm statistics included).
    exported = interop.state_dict(twin)
    for key, value in torch_model.state_dict().items():
        np.testing.assert_allclose(exported[key], value.numpy(), atol=limit, err_msg=key)
    json.dumps(report.to_dict())


def test_training_report_names_first_divergent_step_and_parameter():
    torch_model = SmallCNN().double()
    twin = interop.from_torch(torch_model)
    report = parity.compare_training(
        torch_model,
        torch.optim.SGD(torch_model.parameters(), lr=0.05),
        nn.CrossEntropyLoss(),
        twin,
        optax.sgd(0.06),
        losses.CrossEntropyLoss(),
        _batches(torch.float64),
        steps=4,
    )
    assert not report.passed
    assert report.first_step_exceeding == 1  # step 0's loss is computed before any update
    assert report.first_param_exceeding == "conv.weight" and report.first_param_step == 0
    text = _render(report)
    assert "FAIL" in text and "conv.weight" in text


def test_compare_forward_and_gradients(dtype, torch_dtype):
    torch_model = SmallCNN().to(torch_dtype)
    twin = interop.from_torch(torch_model)
    x, y = _batches(torch_dtype, count=1)[0]
    forward = parity.compare_forward(torch_model, twin, x)
    assert forward.max_abs_diff <= tolerance(dtype)["atol"]
    grads = parity.compare_gradients(torch_model, twin, x, y, (nn.CrossEntropyLoss(), losses.CrossEntropyLoss()))
    assert [row.name for row in grads.parameters] == [n for n, _ in torch_model.named_parameters()]
    assert grads.max_abs_diff <= tolerance(dtype)["atol"] and grads.loss_diff <= tolerance(dtype)["atol"]
    # Both sides advanced BatchNorm statistics once (training mode).
    np.testing.assert_allclose(
        interop.state_dict(twin)["bn.running_mean"], torch_model.bn.running_mean.numpy(), **tolerance(dtype)
    )
    assert json.loads(json.dumps(grads.to_dict()))["parameters"][0]["name"] == "conv.weight"
    assert "Gradient parity" in _render(grads) and "Forward parity" in _render(forward)


def test_compare_forward_nested_outputs_and_channels_last_inputs():
    torch_model = nn.Sequential(nn.Conv2d(2, 3, 3)).double()
    model = layers.Sequential(layers.Conv2d(2, 3, 3, param_dtype=jnp.float64, rngs=nnx.Rngs(0)))
    interop.load_state_dict(model, torch_model.state_dict())
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    report = parity.compare_forward(
        nn.Sequential(torch_model, nn.Flatten()),
        layers.Sequential(model, layers.Flatten()),
        x,
        fnml_inputs=x.numpy().transpose(0, 2, 3, 1),  # (N, C, H, W) -> (N, H, W, C)
    )
    assert report.max_abs_diff > 1e-3  # NHWC flatten order differs: the harness shows it
    lstm = nn.LSTM(3, 4, batch_first=True).double()
    wrapped = nn.Sequential(lstm)
    twin = interop.from_torch(wrapped)
    tokens = torch.randn(2, 5, 3, dtype=torch.float64)
    nested = parity.compare_forward(wrapped, twin, tokens)
    assert [row.name for row in nested.outputs] == ["[0]", "[1][0]", "[1][1]"]
    assert nested.max_abs_diff <= 1e-12


def test_first_divergence_finds_an_altered_eps():
    torch_model = six_layers().double().eval()
    twin = interop.from_torch(torch_model)
    x = torch.randn(7, 5, dtype=torch.float64)
    clean = parity.first_divergence(torch_model, twin, x)
    assert clean.first_divergent is None
    assert [row.name for row in clean.layers] == ["0", "1", "2", "3", "4", "5"]
    assert all(row.max_abs_diff <= 1e-12 for row in clean.layers)

    getattr(twin, "4").eps = 1e-2  # LayerNorm eps 1e-5 -> 1e-2: the deliberate porting mistake
    report = parity.first_divergence(torch_model, twin, x)
    assert report.first_divergent == "4"
    statuses = {row.name: row.status for row in report.layers}
    assert statuses["3"] == "ok" and statuses["4"] == "DIFFERS"
    assert "first divergent layer: 4" in _render(report)
    assert json.loads(json.dumps(report.to_dict()))["first_divergent"] == "4"


def test_first_divergence_on_a_cnn_twin_moves_channels_back():
    torch_model = SmallCNN().double().eval()
    twin = interop.from_torch(torch_model)
    twin.bn.momentum = 0.5  # eval mode: momentum does not matter, nothing diverges
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    report = parity.first_divergence(torch_model, twin, x)
    assert report.first_divergent is None and [r.name for r in report.layers] == ["conv", "bn", "fc"]
    with torch.no_grad():
        torch_model.bn.running_var.mul_(2.0)
    assert parity.first_divergence(torch_model, twin, x).first_divergent == "bn"


def test_check_defaults_flags_differing_settings():
    torch_model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.GELU(), nn.Flatten())
    twin = interop.from_torch(torch_model)
    assert parity.check_defaults(torch_model, twin).ok
    rngs = nnx.Rngs(0)
    hand_written = layers.Sequential(
        layers.Conv2d(2, 3, 3, padding=0, rngs=rngs),
        layers.BatchNorm2d(3, eps=1e-3, momentum=0.01),
        layers.GELU(approximate="tanh"),
    )
    hand_written.eval()
    report = parity.check_defaults(torch_model, hand_written)
    found = {(m.layer, m.setting): (m.torch_value, m.fnml_value) for m in report.mismatches}
    assert found[("0", "padding")] == ((1, 1), (0, 0))
    assert found[("1", "eps")] == (1e-5, 1e-3) and found[("1", "momentum")] == (0.1, 0.01)
    assert found[("2", "approximate")] == ("none", "tanh")
    assert found[("1", "training")] == (True, False)
    assert found[("3", "layer")] == ("Flatten", None)
    assert not report.ok and "approximate" in _render(report)
    assert json.loads(json.dumps(report.to_dict()))["mismatches"]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda t, f: parity.compare_forward(f, f, None), TypeError, "torch_model must be a torch.nn.Module"),
        (lambda t, f: parity.compare_forward(t, t, None), TypeError, "fnml_model must be a flax.nnx.Module"),
        (
            lambda t, f: parity.compare_gradients(t, f, 1, 1, nn.MSELoss()),
            TypeError,
            "criterion must be a pair",
        ),
        (
            lambda t, f: parity.compare_training(
                t, optax.sgd(0.1), nn.MSELoss(), f, optax.sgd(0.1), losses.MSELoss(), []
            ),
            TypeError,
            "torch_optimizer must be a torch.optim.Optimizer",
        ),
        (
            lambda t, f: parity.compare_training(
                t, torch.optim.SGD(t.parameters(), lr=0.1), nn.MSELoss(), f, "sgd", losses.MSELoss(), []
            ),
            TypeError,
            "fnml_optimizer must be an optax.GradientTransformation",
        ),
        (
            lambda t, f: parity.compare_training(
                t,
                torch.optim.SGD(t.parameters(), lr=0.1),
                nn.MSELoss(),
                f,
                optax.sgd(0.1),
                losses.MSELoss(),
                [],
            ),
            ValueError,
            "non-empty sequence of \\(inputs, targets\\) pairs",
        ),
        (
            lambda t, f: parity.compare_training(
                t,
                torch.optim.SGD(t.parameters(), lr=0.1),
                nn.MSELoss(),
                f,
                optax.sgd(0.1),
                losses.MSELoss(),
                [(torch.ones(1, 2), torch.ones(1, 1))],
                steps=0,
            ),
            ValueError,
            "steps must be a positive integer, got steps=0",
        ),
        (
            lambda t, f: parity.compare_training(
                t,
                torch.optim.SGD(t.parameters(), lr=0.1),
                nn.MSELoss(),
                f,
                optax.sgd(0.1),
                3,
                [(torch.ones(1, 2), torch.ones(1, 1))],
            ),
            TypeError,
            "must be callables",
        ),
    ],
    ids=[
        "torch_type",
        "fnml_type",
        "criterion",
        "torch_opt",
        "fnml_opt",
        "no_batches",
        "steps",
        "criterion_call",
    ],
)
def test_argument_errors(call, error, message):
    torch_model = nn.Sequential(nn.Linear(2, 1))
    with pytest.raises(error, match=message):
        call(torch_model, interop.from_torch(torch_model))


def test_gradients_of_a_model_that_is_not_a_twin_are_refused():
    torch_model = nn.Sequential(nn.Linear(2, 1)).double()
    other = layers.Sequential(layers.Linear(2, 1, param_dtype=jnp.float64, rngs=nnx.Rngs(0)), layers.ReLU())
    torch_model.add_module("extra", nn.Linear(1, 1).double())
    with pytest.raises(ValueError, match=r"no parameters named \['extra.weight', 'extra.bias'\]"):
        parity.compare_gradients(
            torch_model,
            other,
            torch.ones(3, 2, dtype=torch.float64),
            torch.ones(3, 1, dtype=torch.float64),
            (nn.MSELoss(), losses.MSELoss()),
        )


def _render(report) -> str:
    console = Console(file=io.StringIO(), width=140, no_color=True)
    console.print(report)
    return console.file.getvalue()
