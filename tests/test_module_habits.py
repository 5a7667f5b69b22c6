"""torch's attribute habits in ``layers.Module`` subclasses, against torch.

A plain list / dict of layers behaves as torch's ``nn.ModuleList`` / ``nn.ModuleDict`` (it becomes fnml's
``ModuleList`` / ``ModuleDict``); ``self.down = None`` then a module is registered as torch registers it
(after the other children); a list or dict filled after its assignment in ``__init__`` is registered too.
Each model is written twice, torch with ``nn.ModuleList`` / ``nn.ModuleDict`` / a ``None`` submodule and fnml
with plain Python containers and ``None``: print text, state_dict names and order, ``nnx.state``, forward and
three SGD steps (momentum) through ``train.make_train_step``, float64 to 1e-12. Weights are copied with the
tests' own copier (``helpers.copy_torch_weights``), independent of ``fnml.interop``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from helpers import assert_trees_close, copy_torch_weights, max_abs_diff, tolerance

from fnml import interop, layers, optim, train

F64 = jnp.float64


def _linear(i: int, o: int, rngs: nnx.Rngs) -> layers.Linear:
    return layers.Linear(i, o, param_dtype=F64, rngs=rngs)


class FnmlNet(layers.Module):
    """torch habits: None then a module, a plain list, a plain dict, a list filled by append, a None kept."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.down = None  # an optional submodule, decided below
        self.stem = _linear(3, 4, rngs)
        self.blocks = [_linear(4, 4, rngs) for _ in range(3)]
        self.heads = {"score": _linear(4, 2, rngs), "gate": _linear(4, 2, rngs)}
        self.extra = []
        for _ in range(2):
            self.extra.append(_linear(4, 4, rngs))
        self.proj = None  # stays None: no submodule, as in torch
        self.sizes = [3, 4]  # plain settings stay plain (static) values
        self.down = _linear(4, 4, rngs)

    def __call__(self, x):
        x = jnp.tanh(self.stem(x))
        for block in [*self.blocks, *self.extra]:
            x = jnp.tanh(block(x))
        x = self.down(x)
        return self.heads["score"](x) * jax.nn.sigmoid(self.heads["gate"](x))


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.down = None
        self.stem = torch.nn.Linear(3, 4)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(3)])
        self.heads = torch.nn.ModuleDict({"score": torch.nn.Linear(4, 2), "gate": torch.nn.Linear(4, 2)})
        self.extra = torch.nn.ModuleList()
        for _ in range(2):
            self.extra.append(torch.nn.Linear(4, 4))
        self.proj = None
        self.sizes = [3, 4]
        self.down = torch.nn.Linear(4, 4)

    def forward(self, x):
        x = torch.tanh(self.stem(x))
        for block in [*self.blocks, *self.extra]:
            x = torch.tanh(block(x))
        x = self.down(x)
        return self.heads["score"](x) * torch.sigmoid(self.heads["gate"](x))


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    model, torch_model = FnmlNet(rngs=nnx.Rngs(0)), TorchNet().double()
    copy_torch_weights(model, torch_model)
    return model, torch_model


def test_plain_containers_become_torch_containers(pair):
    model, _ = pair
    assert isinstance(model.blocks, layers.ModuleList) and len(model.blocks) == 3
    assert isinstance(model.heads, layers.ModuleDict) and list(model.heads.keys()) == ["score", "gate"]
    assert isinstance(model.extra, layers.ModuleList) and len(model.extra) == 2
    assert model.proj is None and model.sizes == [3, 4] and type(model.sizes) is list
    assert isinstance(model.down, layers.Linear)


def test_print_and_state_dict_names_are_torchs(pair):
    model, torch_model = pair
    assert str(model).replace("FnmlNet", "TorchNet") == str(torch_model)
    # "down" comes last, as torch registers a module assigned over a plain attribute (None) after the others.
    assert list(interop.state_dict(model)) == list(torch_model.state_dict())


def test_nnx_sees_every_parameter(pair):
    model, torch_model = pair
    params = nnx.state(model, nnx.Param)
    torch_names = {name.replace("weight", "kernel") for name, _ in torch_model.named_parameters()}
    assert {".".join(str(part) for part in path) for path, _ in nnx.to_flat_state(params)} == torch_names
    graphdef, state = nnx.split(model)
    merged = nnx.merge(graphdef, state)
    assert sorted(interop.state_dict(merged)) == sorted(torch_model.state_dict())


def test_forward_and_three_sgd_steps_match_torch_float64(pair):
    model, torch_model = pair
    x = np.random.default_rng(1).standard_normal((5, 3))
    y = np.random.default_rng(2).standard_normal((5, 2))
    assert_trees_close(model(jnp.asarray(x)), torch_model(torch.from_numpy(x)).detach(), dtype="float64")

    state = train.TrainState.create(model, optim.sgd(lr=0.1, momentum=0.9))
    step = train.make_train_step(lambda out, target: jnp.mean((out - target) ** 2))
    torch_model = TorchNet().double()
    torch_model.load_state_dict(pair[1].state_dict())
    torch_opt = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9)
    losses, torch_losses = [], []
    for _ in range(3):
        state, loss = step(state, jnp.asarray(x), jnp.asarray(y))
        losses.append(float(loss))
        torch_opt.zero_grad()
        torch_loss = torch.mean((torch_model(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2)
        torch_loss.backward()
        torch_opt.step()
        torch_losses.append(torch_loss.item())
    np.testing.assert_allclose(losses, torch_losses, **tolerance("float64"))
    trained = interop.state_dict(state.model())  # nnx.merge sorts the model's own attributes: compare by name
    expected = {name: value.detach().numpy() for name, value in torch_model.state_dict().items()}
    assert sorted(trained) == sorted(expected)
    assert max_abs_diff(trained, expected) <= tolerance("float64")["atol"]


def test_load_state_dict_fills_plain_containers(pair):
    _, torch_model = pair
    model = interop.load_state_dict(FnmlNet(rngs=nnx.Rngs(5)), torch_model.state_dict())
    x = np.random.default_rng(3).standard_normal((2, 3))
    assert_trees_close(model(jnp.asarray(x)), torch_model(torch.from_numpy(x)).detach(), dtype="float64")


def test_a_submodule_assigned_after_construction_is_registered_like_torchs():
    model, torch_model = FnmlNet(rngs=nnx.Rngs(0)), TorchNet()
    model.late = [_linear(2, 2, nnx.Rngs(1))]
    torch_model.late = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
    model.proj = _linear(2, 2, nnx.Rngs(2))  # None -> a module, after __init__
    torch_model.proj = torch.nn.Linear(2, 2)
    assert list(interop.state_dict(model)) == list(torch_model.state_dict())
    assert str(model).replace("FnmlNet", "TorchNet") == str(torch_model)
    paths = {path[:2] for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert ("late", "0") in paths and ("proj", "kernel") in paths


def test_a_dict_filled_after_its_assignment_and_nested_lists_are_registered():
    class Net(layers.Module):
        def __init__(self, rngs):
            self.heads = {}
            self.heads["a"] = _linear(2, 1, rngs)
            self.stages = [[_linear(2, 2, rngs), _linear(2, 2, rngs)], [_linear(2, 2, rngs)]]

    class TorchNet_(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = torch.nn.ModuleDict()
            self.heads["a"] = torch.nn.Linear(2, 1)
            self.stages = torch.nn.ModuleList(
                [
                    torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)]),
                    torch.nn.ModuleList([torch.nn.Linear(2, 2)]),
                ]
            )

    model, torch_model = Net(nnx.Rngs(0)), TorchNet_()
    assert list(interop.state_dict(model)) == list(torch_model.state_dict())
    assert str(model).replace("Net", "TorchNet_", 1) == str(torch_model)
    assert len(nnx.to_flat_state(nnx.state(model, nnx.Param))) == len(list(torch_model.parameters()))


def test_mixed_lists_and_tuples_are_nnx_data():
    class Net(layers.Module):
        def __init__(self, rngs):
            self.mixed = [_linear(2, 2, rngs), jnp.tanh]  # not a ModuleList (torch refuses functions): nnx.List
            self.pair = (_linear(2, 2, rngs), _linear(2, 2, rngs))
            self.table = {"w": jnp.ones(2), "name": "x"}  # arrays in a dict: data, not a ModuleDict

    model = Net(nnx.Rngs(0))
    assert isinstance(model.mixed, nnx.List) and model.mixed[1] is jnp.tanh
    assert type(model.pair) is tuple and type(model.table) is dict
    flat = {path for path, _ in nnx.to_flat_state(nnx.state(model))}
    assert {("mixed", 0, "kernel"), ("pair", 1, "bias"), ("table", "w")} <= flat
    assert list(interop.state_dict(model)) == [
        "mixed.0.weight",
        "mixed.0.bias",
        "pair.0.weight",
        "pair.0.bias",
        "pair.1.weight",
        "pair.1.bias",
    ]


def test_explicit_nnx_static_is_left_to_flax():
    class Net(layers.Module):
        def __init__(self, rngs):
            self.blocks = nnx.static([_linear(2, 2, rngs)])

    with pytest.raises(ValueError, match=r"annotated with nnx.static"):
        Net(nnx.Rngs(0))


@pytest.mark.parametrize(
    ("heads", "error", "match"),
    [
        ({"a.b": "linear"}, KeyError, r'ModuleDict: module name cannot contain ".", got: a.b'),
        ({"keys": "linear"}, KeyError, r"ModuleDict: attribute 'keys' already exists"),
        ({1: "linear"}, TypeError, r"ModuleDict: module name should be a string, got int"),
    ],
)
def test_a_dict_of_modules_follows_module_dict_key_rules(heads, error, match):
    # torch's nn.ModuleDict raises the same errors for these keys; a plain dict is never silently left unregistered.
    class Net(layers.Module):
        def __init__(self, rngs):
            self.heads = {key: _linear(2, 1, rngs) for key in heads}

    with pytest.raises(error, match=match):
        Net(nnx.Rngs(0))
