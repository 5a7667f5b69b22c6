"""RNNCell / LSTMCell / GRUCell against torch's cells and against one step of fnml's full layers; ModuleList,
ModuleDict and Unflatten against torch's (print text, iteration, state_dict names, forward).

Cells: forward and gradients w.r.t. the input, the state and every parameter, float64 (<= 1e-12) and float32
(table tolerance), batched and unbatched, with and without an initial state, with and without bias. Weights
are copied with the tests' own copier (``helpers.copy_torch_weights``: torch ``weight_ih`` -> fnml
``kernel_ih`` transposed), independent of ``fnml.interop``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from helpers import assert_trees_close, copy_torch_weights, jax_dtype, torch_dtype

from fnml import interop, layers, train

IN, H, N = 3, 4, 2

CELLS = [
    ("RNNCell-tanh", lambda **kw: layers.RNNCell(IN, H, **kw), lambda: torch.nn.RNNCell(IN, H)),
    (
        "RNNCell-relu",
        lambda **kw: layers.RNNCell(IN, H, nonlinearity="relu", **kw),
        lambda: torch.nn.RNNCell(IN, H, nonlinearity="relu"),
    ),  # noqa: E501
    ("RNNCell-no-bias", lambda **kw: layers.RNNCell(IN, H, False, **kw), lambda: torch.nn.RNNCell(IN, H, False)),
    ("LSTMCell", lambda **kw: layers.LSTMCell(IN, H, **kw), lambda: torch.nn.LSTMCell(IN, H)),
    (
        "LSTMCell-no-bias",
        lambda **kw: layers.LSTMCell(IN, H, bias=False, **kw),
        lambda: torch.nn.LSTMCell(IN, H, bias=False),
    ),  # noqa: E501
    ("GRUCell", lambda **kw: layers.GRUCell(IN, H, **kw), lambda: torch.nn.GRUCell(IN, H)),
    (
        "GRUCell-no-bias",
        lambda **kw: layers.GRUCell(IN, H, bias=False, **kw),
        lambda: torch.nn.GRUCell(IN, H, bias=False),
    ),  # noqa: E501
]
CELL_IDS = [c[0] for c in CELLS]


def _pair(make_fnml, make_torch, dtype):
    torch_cell = make_torch().to(torch_dtype(dtype))
    cell = make_fnml(param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0))
    copy_torch_weights(cell, torch_cell)
    return cell, torch_cell


def _is_lstm(cell) -> bool:
    return isinstance(cell, layers.LSTMCell)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_state", [True, False], ids=["hx", "no-hx"])
@pytest.mark.parametrize(("name", "make_fnml", "make_torch"), CELLS, ids=CELL_IDS)
def test_cell_matches_torch_forward_and_every_gradient(name, make_fnml, make_torch, with_state, batched, dtype):
    cell, torch_cell = _pair(make_fnml, make_torch, dtype)
    rng = np.random.default_rng(0)
    lead = (N,) if batched else ()
    x = rng.standard_normal((*lead, IN)).astype(dtype)
    states = [rng.standard_normal((*lead, H)).astype(dtype) for _ in range(2 if _is_lstm(cell) else 1)]
    cotangents = [rng.standard_normal((*lead, H)).astype(dtype) for _ in states]

    # torch: value and gradients w.r.t. input, states (when given) and every parameter
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    hx = (tuple(st) if _is_lstm(cell) else st[0]) if with_state else None
    out = torch_cell(xt, hx)
    outs = out if _is_lstm(cell) else (out,)
    params = dict(torch_cell.named_parameters())
    wrt = [xt, *(st if with_state else []), *params.values()]
    grads = torch.autograd.grad(outs, wrt, [torch.as_tensor(c) for c in cotangents])
    torch_grads = dict(zip(["input", *(f"state{i}" for i in range(len(st) if with_state else 0)), *params], grads))

    graphdef, fnml_params = nnx.split(cell, nnx.Param)

    def run(fnml_params, x, states):
        module = nnx.merge(graphdef, fnml_params)
        hx = (tuple(states) if _is_lstm(module) else states[0]) if with_state else None
        result = module(x, hx)
        return result if _is_lstm(module) else (result,)

    value, pullback = jax.vjp(run, fnml_params, jnp.asarray(x), [jnp.asarray(s) for s in states])
    d_params, d_x, d_states = pullback(tuple(jnp.asarray(c) for c in cotangents))
    fnml_grads = {"input": d_x}
    if with_state:
        fnml_grads.update({f"state{i}": g for i, g in enumerate(d_states)})
    for torch_name in params:
        fnml_name = torch_name.replace("weight", "kernel")
        gradient = d_params[fnml_name][...]
        fnml_grads[torch_name] = gradient.T if fnml_name.startswith("kernel") else gradient  # kernel = weight.T
    assert_trees_close(tuple(value), tuple(o.detach() for o in outs), dtype=dtype)
    assert_trees_close(fnml_grads, torch_grads, dtype=dtype)


LAYER_OF_CELL = {
    "RNNCell-tanh": lambda: layers.RNN(IN, H, param_dtype=jnp.float64, rngs=nnx.Rngs(1)),
    "RNNCell-relu": lambda: layers.RNN(IN, H, nonlinearity="relu", param_dtype=jnp.float64, rngs=nnx.Rngs(1)),
    "RNNCell-no-bias": lambda: layers.RNN(IN, H, bias=False, param_dtype=jnp.float64, rngs=nnx.Rngs(1)),
    "LSTMCell": lambda: layers.LSTM(IN, H, param_dtype=jnp.float64, rngs=nnx.Rngs(1)),
    "LSTMCell-no-bias": lambda: layers.LSTM(IN, H, bias=False, param_dtype=jnp.float64, rngs=nnx.Rngs(1)),
    "GRUCell": lambda: layers.GRU(IN, H, param_dtype=jnp.float64, rngs=nnx.Rngs(1)),
    "GRUCell-no-bias": lambda: layers.GRU(IN, H, bias=False, param_dtype=jnp.float64, rngs=nnx.Rngs(1)),
}


@pytest.mark.parametrize(("name", "make_fnml", "make_torch"), CELLS, ids=CELL_IDS)
def test_cell_is_one_step_of_the_full_layer(name, make_fnml, make_torch):
    cell = make_fnml(param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    layer = LAYER_OF_CELL[name]()
    for kind in ("kernel_ih", "kernel_hh", "bias_ih", "bias_hh"):
        if getattr(cell, kind) is not None:
            getattr(layer, f"{kind}_l0")[...] = getattr(cell, kind)[...]
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((N, IN)))
    h = jnp.asarray(rng.standard_normal((N, H)))
    if _is_lstm(cell):
        c = jnp.asarray(rng.standard_normal((N, H)))
        _, (h_n, c_n) = layer(x[None], (h[None], c[None]))  # (T=1, N, in)
        assert_trees_close(cell(x, (h, c)), (h_n[0], c_n[0]))
    else:
        _, h_n = layer(x[None], h[None])
        assert_trees_close(cell(x, h), h_n[0])


@pytest.mark.parametrize(("name", "make_fnml", "make_torch"), CELLS, ids=CELL_IDS)
def test_cell_prints_like_torch_and_inits_like_it(name, make_fnml, make_torch):
    cell, torch_cell = make_fnml(rngs=nnx.Rngs(0)), make_torch()
    assert str(cell) == str(torch_cell)
    bound = 1 / np.sqrt(H)
    for torch_name, tensor in torch_cell.named_parameters():
        value = np.asarray(getattr(cell, torch_name.replace("weight", "kernel"))[...])
        assert value.shape == tuple(reversed(tensor.shape)) if value.ndim == 2 else value.shape == tuple(tensor.shape)
        assert value.dtype == np.float32 and np.abs(value).max() <= bound
    wide = layers.LSTMCell(IN, 256, rngs=nnx.Rngs(2)).kernel_hh[...]
    assert abs(float(jnp.abs(wide).max()) - 1 / 16) < 1e-3  # U(-1/sqrt(H), 1/sqrt(H)) fills its range


def test_cells_in_a_loop_train_under_jit():
    cell = layers.GRUCell(IN, H, rngs=nnx.Rngs(0))

    @nnx.jit
    def unroll(cell, xs):
        h = None
        for x in xs:
            h = cell(x, h)
        return h

    xs = jnp.ones((5, N, IN))
    assert unroll(cell, xs).shape == (N, H)


CELL_ERRORS = {
    "input_3d": (lambda c: c(jnp.ones((1, 2, IN))), ValueError, r"RNNCell: Expected input to be 1D or 2D, got 3D"),
    "input_features": (
        lambda c: c(jnp.ones((2, IN + 1))),
        ValueError,
        r"RNNCell: input has 4 features, does not match RNNCell\(input_size=3\)",
    ),  # noqa: E501
    "hx_shape": (
        lambda c: c(jnp.ones((2, IN)), jnp.ones((3, H))),
        ValueError,
        r"RNNCell: hx must have shape \(2, 4\) \(batch, hidden_size\), got shape \(3, 4\)",
    ),  # noqa: E501
    "hx_unbatched_shape": (
        lambda c: c(jnp.ones(IN), jnp.ones((1, H))),
        ValueError,
        r"RNNCell: hx must have shape \(4,\) \(hidden_size,\) for an unbatched input",
    ),  # noqa: E501
    "hx_tuple": (
        lambda c: c(jnp.ones(IN), (jnp.ones(H), jnp.ones(H))),
        TypeError,
        r"RNNCell: hx must be one array h_0, got a tuple",
    ),  # noqa: E501
}


@pytest.mark.parametrize("case", sorted(CELL_ERRORS))
def test_cell_call_errors(case):
    call, error, message = CELL_ERRORS[case]
    with pytest.raises(error, match=message):
        call(layers.RNNCell(IN, H, rngs=nnx.Rngs(0)))


def test_cell_constructor_errors():
    with pytest.raises(ValueError, match=r"RNNCell: nonlinearity must be one of 'tanh', 'relu'"):
        layers.RNNCell(IN, H, nonlinearity="gelu", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"LSTMCell: hidden_size must be a positive integer, got hidden_size=0"):
        layers.LSTMCell(IN, 0, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"GRUCell: bias must be a bool"):
        layers.GRUCell(IN, H, bias=1, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"GRUCell: rngs must be an nnx.Rngs, got int"):
        layers.GRUCell(IN, H, rngs=0)
    with pytest.raises(TypeError, match=r"LSTMCell: hx must be a tuple \(h_0, c_0\), got ArrayImpl"):
        layers.LSTMCell(IN, H, rngs=nnx.Rngs(0))(jnp.ones(IN), jnp.ones(H))


# ------------------------------------------------------------------------------------------------
# ModuleList
# ------------------------------------------------------------------------------------------------


def _linear(i: int, o: int, seed: int = 0):
    return layers.Linear(i, o, rngs=nnx.Rngs(seed))


def test_module_list_operations_follow_torch():
    ours = layers.ModuleList([_linear(2, 2), layers.ReLU()])
    theirs = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.ReLU()])
    for container, make in (
        (ours, (lambda: _linear(2, 3), layers.Tanh, layers.Sigmoid)),
        (theirs, (lambda: torch.nn.Linear(2, 3), torch.nn.Tanh, torch.nn.Sigmoid)),
    ):  # noqa: E501
        linear, tanh, sigmoid = make
        assert container.append(linear()) is container
        container.extend([tanh(), tanh()])
        container.insert(1, sigmoid())
        container += [sigmoid()]
        del container[0]
        container.pop(2)
        container[0] = tanh()
    assert [type(m).__name__ for m in ours] == [type(m).__name__ for m in theirs]
    assert len(ours) == len(theirs) == 5
    assert type(ours[-1]).__name__ == type(theirs[-1]).__name__
    assert [type(m).__name__ for m in ours[1:4]] == [type(m).__name__ for m in theirs[1:4]]
    assert isinstance(ours[1:4], layers.ModuleList) and len(ours[::2]) == len(theirs[::2])
    assert str(ours) == str(theirs)
    assert str(ours + layers.ModuleList([layers.ReLU()])) == str(theirs + torch.nn.ModuleList([torch.nn.ReLU()]))


def test_module_list_print_compresses_repeats_like_torch():
    ours = layers.ModuleList([_linear(2, 2, seed) for seed in range(3)] + [layers.ReLU(), _linear(2, 1)])
    theirs = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)] + [torch.nn.ReLU(), torch.nn.Linear(2, 1)])
    assert str(ours) == str(theirs)
    assert str(layers.ModuleList()) == str(torch.nn.ModuleList())


class _FnmlBlocks(layers.Module):
    def __init__(self, rngs):
        self.stem = layers.Linear(3, 4, rngs=rngs)
        self.blocks = layers.ModuleList([layers.Linear(4, 4, rngs=rngs) for _ in range(11)])
        self.heads = layers.ModuleDict({"score": layers.Linear(4, 1, rngs=rngs), "act": layers.Tanh()})

    def __call__(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = jax.nn.relu(block(x))
        return self.heads["act"](self.heads["score"](x))


class _TorchBlocks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Linear(3, 4)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(11)])
        self.heads = torch.nn.ModuleDict({"score": torch.nn.Linear(4, 1), "act": torch.nn.Tanh()})

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = torch.relu(block(x))
        return self.heads["act"](self.heads["score"](x))


def test_containers_have_torchs_state_dict_names_and_load_torch_weights():
    model, torch_model = _FnmlBlocks(nnx.Rngs(0)), _TorchBlocks().double()
    assert str(model).replace("_FnmlBlocks", "_TorchBlocks") == str(torch_model)
    assert list(interop.state_dict(model)) == list(torch_model.state_dict())  # blocks.10.weight after blocks.9
    interop.load_state_dict(model, torch_model.state_dict())
    x = np.random.default_rng(2).standard_normal((5, 3))
    assert_trees_close(model(jnp.asarray(x)), torch_model(torch.from_numpy(x)).detach(), dtype="float32")
    # Through nnx.split/merge the containers keep torch's order inside them ("blocks.10" after "blocks.9"); merge
    # sorts a plain model's own attributes (stem/blocks/heads), so only the key set is compared at the top.
    graphdef, state = nnx.split(model)
    merged = list(interop.state_dict(nnx.merge(graphdef, state)))
    assert sorted(merged) == sorted(torch_model.state_dict())
    assert [k for k in merged if k.startswith("blocks.")] == [
        k for k in torch_model.state_dict() if k.startswith("blocks.")
    ]  # noqa: E501


def test_a_model_with_containers_trains_with_fnml_train():
    model = _FnmlBlocks(nnx.Rngs(0))
    state = train.TrainState.create(model, optax.sgd(0.1))
    step = train.make_train_step(lambda out, y: jnp.mean((out - y) ** 2))
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 1))
    state, first = step(state, x, y)
    state, second = step(state, x, y)
    assert float(second) < float(first)
    names, torch_names = list(interop.state_dict(state.model())), list(_TorchBlocks().state_dict())
    assert sorted(names) == sorted(torch_names)
    assert [k for k in names if k.startswith("blocks.")] == [k for k in torch_names if k.startswith("blocks.")]


# ------------------------------------------------------------------------------------------------
# ModuleDict
# ------------------------------------------------------------------------------------------------


def test_module_dict_operations_follow_torch():
    ours = layers.ModuleDict({"b": _linear(2, 2), "a": layers.ReLU()})
    theirs = torch.nn.ModuleDict({"b": torch.nn.Linear(2, 2), "a": torch.nn.ReLU()})
    ours.update([("z", layers.Tanh()), ("c", layers.Sigmoid())])
    theirs.update([("z", torch.nn.Tanh()), ("c", torch.nn.Sigmoid())])
    ours.update({"b": layers.Softsign()})  # replacing keeps the position
    theirs.update({"b": torch.nn.Softsign()})
    ours["d"] = layers.GELU()
    theirs["d"] = torch.nn.GELU()
    del ours["a"]
    del theirs["a"]
    assert type(ours.pop("z")).__name__ == type(theirs.pop("z")).__name__
    assert list(ours.keys()) == list(theirs.keys()) == ["b", "c", "d"]
    assert list(ours) == list(theirs)
    assert [type(v).__name__ for v in ours.values()] == [type(v).__name__ for v in theirs.values()]
    assert [(k, type(v).__name__) for k, v in ours.items()] == [(k, type(v).__name__) for k, v in theirs.items()]
    assert ("c" in ours, "a" in ours, len(ours)) == ("c" in theirs, "a" in theirs, len(theirs))
    assert type(ours["c"]).__name__ == "Sigmoid"
    assert str(ours) == str(theirs)
    ours.clear()
    theirs.clear()
    assert len(ours) == len(theirs) == 0 and str(ours) == str(theirs)


# ------------------------------------------------------------------------------------------------
# Unflatten
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dim", "sizes", "shape"),
    [
        (1, (2, 3), (4, 6)),
        (-1, (2, -1), (3, 8)),
        (0, [2, 2], (4, 5)),
        (1, (3, 1, 2), (2, 6, 2)),
        (-2, (-1, 2), (2, 6, 3)),
    ],
    ids=["dim1", "dim-1-inferred", "dim0-list", "dim1-three", "dim-2-inferred"],
)
def test_unflatten_matches_torch(dim, sizes, shape):
    x = np.arange(np.prod(shape), dtype=float).reshape(shape)
    ours, theirs = layers.Unflatten(dim, sizes), torch.nn.Unflatten(dim, sizes)
    assert str(ours) == str(theirs)
    np.testing.assert_array_equal(np.asarray(ours(jnp.asarray(x))), theirs(torch.from_numpy(x)).numpy())


CONTAINER_ERRORS = {
    "list_index_out_of_range": (
        lambda: layers.ModuleList([layers.ReLU()])[1],
        IndexError,
        r"ModuleList: index 1 is out of range for 1 modules",
    ),  # noqa: E501
    "list_index_string": (
        lambda: layers.ModuleList([layers.ReLU()])["0"],
        TypeError,
        r"ModuleList indices must be integers or slices, not str",
    ),  # noqa: E501
    "list_item_not_module": (
        lambda: layers.ModuleList([jax.nn.relu]),
        TypeError,
        r"ModuleList: item 0: PjitFunction is not a module|ModuleList: item 0: .* is not a module",
    ),  # noqa: E501
    "list_extend_not_iterable": (
        lambda: layers.ModuleList().extend(3),
        TypeError,
        r"ModuleList.extend should be called with an iterable of modules, but got int",
    ),  # noqa: E501
    "list_is_not_callable": (
        lambda: layers.ModuleList([layers.ReLU()])(jnp.ones(2)),
        NotImplementedError,
        r'Module \[ModuleList\] is missing the required "forward" function',
    ),  # noqa: E501
    "dict_key_not_str": (
        lambda: layers.ModuleDict({1: layers.ReLU()}),
        TypeError,
        r"ModuleDict: module name should be a string, got int",
    ),  # noqa: E501
    "dict_key_with_dot": (
        lambda: layers.ModuleDict({"a.b": layers.ReLU()}),
        KeyError,
        r'module name cannot contain ".", got: a.b',
    ),  # noqa: E501
    "dict_key_empty": (
        lambda: layers.ModuleDict({"": layers.ReLU()}),
        KeyError,
        r"module name cannot be the empty string",
    ),
    "dict_key_is_a_method": (
        lambda: layers.ModuleDict({"update": layers.ReLU()}),
        KeyError,
        r"ModuleDict: attribute 'update' already exists",
    ),  # noqa: E501
    "dict_value_not_module": (
        lambda: layers.ModuleDict({"a": 3}),
        TypeError,
        r"ModuleDict\['a'\]: int is not a module",
    ),  # noqa: E501
    "dict_missing_key": (lambda: layers.ModuleDict()["x"], KeyError, r"x"),
    "dict_update_bad_pair": (
        lambda: layers.ModuleDict().update([("a", layers.ReLU(), 1)]),
        ValueError,
        r"ModuleDict.update: sequence element #0 has length 3; 2 is required",
    ),  # noqa: E501
    "dict_update_not_iterable": (
        lambda: layers.ModuleDict().update(5),
        TypeError,
        r"ModuleDict.update should be called with a mapping",
    ),  # noqa: E501
    "unflatten_sizes_int": (
        lambda: layers.Unflatten(1, 6),
        TypeError,
        r"Unflatten: unflattened_size must be a tuple of ints, but found type int",
    ),  # noqa: E501
    "unflatten_sizes_float": (
        lambda: layers.Unflatten(1, (2, 3.0)),
        TypeError,
        r"unflattened_size must be tuple of ints, but found element of type float at pos 1",
    ),  # noqa: E501
    "unflatten_two_inferred": (
        lambda: layers.Unflatten(1, (-1, -1)),
        ValueError,
        r"Unflatten: unflattened_size may hold one -1",
    ),  # noqa: E501
    "unflatten_dim_float": (lambda: layers.Unflatten(1.0, (2, 3)), TypeError, r"Unflatten: dim must be an int"),
    "unflatten_wrong_product": (
        lambda: layers.Unflatten(1, (2, 2))(jnp.ones((2, 6))),
        ValueError,
        r"Unflatten: unflattened_size \(2, 2\) must multiply to the size of dimension 1 \(6\)",
    ),  # noqa: E501
    "unflatten_not_divisible": (
        lambda: layers.Unflatten(1, (4, -1))(jnp.ones((2, 6))),
        ValueError,
        r"Unflatten: cannot split dimension 1 of size 6 into \(4, -1\)",
    ),  # noqa: E501
    "unflatten_dim_out_of_range": (
        lambda: layers.Unflatten(2, (1, 2))(jnp.ones((2, 2))),
        IndexError,
        r"Unflatten: dimension out of range",
    ),  # noqa: E501
}


@pytest.mark.parametrize("case", sorted(CONTAINER_ERRORS))
def test_container_errors(case):
    make, error, message = CONTAINER_ERRORS[case]
    with pytest.raises(error, match=message):
        make()
