"""Parity of the speed paths (issue 7): Conv2d's im2col lowering and TrainState's plain-dict fields."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from helpers import copy_torch_weights, max_abs_diff, tolerance, torch_dtype

from fnml import layers, losses, optim, train

# ------------------------------------------------------------------------------------------------
# Conv2d: im2col + one matmul when in_channels * kh * kw >= 64, out_channels >= 32, groups == 1, CPU backend
# ------------------------------------------------------------------------------------------------

# (in_channels, out_channels, kernel_size, kwargs, NHWC input shape); every case has a patch depth >= 64
# and >= 32 output channels (the rule's two conditions).
IM2COL_CASES = {
    "c8_k3": (8, 32, 3, {}, (2, 7, 6, 8)),
    "c8_k3_pad1": (8, 32, 3, dict(padding=1), (2, 7, 6, 8)),
    "c12_k(3,2)_stride2_pad(1,0)": (12, 32, (3, 2), dict(stride=2, padding=(1, 0)), (2, 9, 7, 12)),
    "c8_stride(2,1)": (8, 32, 3, dict(stride=(2, 1)), (2, 9, 6, 8)),
    "c8_dilation2_pad2": (8, 32, 3, dict(dilation=2, padding=2), (2, 7, 8, 8)),
    "c8_dilation(1,2)_stride2": (8, 32, 3, dict(dilation=(1, 2), stride=2), (2, 9, 9, 8)),
    "c8_nobias": (8, 32, 3, dict(bias=False), (2, 6, 6, 8)),
    "c8_same": (8, 32, 3, dict(padding="same"), (2, 6, 5, 8)),
    "c8_reflect_pad1": (8, 32, 3, dict(padding=1, padding_mode="reflect"), (2, 6, 6, 8)),
    "c4_k4_same_dilation2": (4, 32, 4, dict(padding="same", dilation=2), (2, 8, 8, 4)),
    "c64_k1": (64, 32, 1, {}, (2, 5, 5, 64)),
    "w3_conv2_32to64": (32, 64, 3, {}, (2, 13, 13, 32)),
    "unbatched": (8, 32, 3, dict(padding=1), (5, 6, 8)),
}


def _conv_pair(case: str, dtype: str):
    """An fnml Conv2d and a torch Conv2d with the same weights, plus an input (NHWC numpy)."""
    cin, cout, k, kwargs, shape = IM2COL_CASES[case]
    torch.manual_seed(0)
    torch_layer = torch.nn.Conv2d(cin, cout, k, **kwargs).to(torch_dtype(dtype))
    fnml_layer = layers.Conv2d(cin, cout, k, **kwargs, param_dtype=dtype, rngs=nnx.Rngs(0))
    copy_torch_weights(fnml_layer, torch_layer)  # torch OIHW -> HWIO (2, 3, 1, 0)
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    return fnml_layer, torch_layer, x


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(IM2COL_CASES))
def test_conv2d_im2col_matches_torch_forward_and_gradients(case, dtype):
    fnml_layer, torch_layer, x = _conv_pair(case, dtype)
    assert fnml_layer._use_im2col(), "these cases must exercise the im2col path"
    unbatched = x.ndim == 3

    # torch: NCHW; a fixed cotangent g so that d(sum(y * g)) checks every gradient entry.
    x_torch = torch.tensor(x.transpose(2, 0, 1) if unbatched else x.transpose(0, 3, 1, 2), requires_grad=True)
    y_torch = torch_layer(x_torch)
    g_torch = torch.tensor(np.random.default_rng(2).standard_normal(tuple(y_torch.shape)).astype(dtype))
    (y_torch * g_torch).sum().backward()
    to_nhwc = (1, 2, 0) if unbatched else (0, 2, 3, 1)  # (C, H, W) / (N, C, H, W) -> channels last
    g = jnp.asarray(g_torch.numpy().transpose(to_nhwc))

    graphdef, variables = nnx.split(fnml_layer)

    def objective(x, variables):
        y = nnx.merge(graphdef, variables)(x)
        return jnp.sum(y * g), y

    # Gradients with respect to the input and every parameter (plain dict {"kernel", "bias"}).
    (_, y), (grad_x, grad_params) = jax.jit(jax.value_and_grad(objective, argnums=(0, 1), has_aux=True))(
        jnp.asarray(x), nnx.to_pure_dict(variables)
    )
    expected = {
        "output": y_torch.detach().numpy().transpose(to_nhwc),
        "grad_input": x_torch.grad.numpy().transpose(to_nhwc),
        "grad_kernel": torch_layer.weight.grad.numpy().transpose(2, 3, 1, 0),  # OIHW -> HWIO
    }
    actual = {"output": y, "grad_input": grad_x, "grad_kernel": grad_params["kernel"]}
    if torch_layer.bias is not None:
        expected["grad_bias"] = torch_layer.bias.grad.numpy()
        actual["grad_bias"] = grad_params["bias"]
    tol = tolerance(dtype)
    for name in expected:
        scale = max(1.0, float(np.max(np.abs(expected[name]))))
        diff = max_abs_diff(actual[name], expected[name])
        assert diff <= tol["atol"] * scale, f"{case} {dtype} {name}: max |diff| {diff:.3g}"


@pytest.mark.parametrize(
    "args, kwargs, expected",
    [
        ((8, 32, 3), {}, True),  # 8 * 3 * 3 = 72 >= 64
        ((7, 32, 3), {}, False),  # 63 < 64
        ((1, 32, 3), {}, False),  # W3's conv1: 9
        ((8, 32, 3), dict(groups=2), False),  # grouped: lax
        ((64, 32, 1), {}, True),  # 1x1 over 64 channels
        ((16, 16, 3), {}, False),  # W7's 16-channel stage: 16 outputs < 32
        ((16, 31, 3), {}, False),
    ],
    ids=["depth72", "depth63", "w3_conv1", "groups2", "1x1_c64", "w7_out16", "out31"],
)
def test_conv2d_lowering_rule(args, kwargs, expected):
    layer = layers.Conv2d(*args, **kwargs, rngs=nnx.Rngs(0))
    assert layer._use_im2col() is (expected and jax.default_backend() == "cpu")


# ------------------------------------------------------------------------------------------------
# TrainState: plain nested dicts (C++ pytree flattening), nnx.State fields still accepted
# ------------------------------------------------------------------------------------------------


class _Net(nnx.Module):
    """Linear - BatchNorm1d - Dropout - Linear: parameters, statistics and an RNG stream in ``rest``."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.fc1 = layers.Linear(3, 4, rngs=rngs)
        self.bn = layers.BatchNorm1d(4)
        self.drop = layers.Dropout(0.5, rngs=rngs)
        self.fc2 = layers.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        return self.fc2(self.drop(self.bn(self.fc1(x))))


def _data():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.standard_normal((8, 3))), jnp.asarray(rng.standard_normal((8, 1)))


def test_train_state_fields_are_plain_dicts_with_typed_keys():
    state = train.TrainState.create(_Net(rngs=nnx.Rngs(0)), optim.adam(lr=1e-2))
    assert type(state.params) is dict and type(state.rest) is dict
    assert isinstance(state.params["fc1"]["kernel"], jax.Array)
    key = state.rest["drop"]["rngs"]["key"]
    assert jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    step = train.make_train_step(losses.MSELoss())
    x, y = _data()
    for _ in range(3):
        state, _ = step(state, x, y)
    assert type(state.rest) is dict
    assert jnp.issubdtype(state.rest["drop"]["rngs"]["key"].dtype, jax.dtypes.prng_key)
    assert int(state.rest["drop"]["rngs"]["count"]) == 3
    assert int(state.rest["bn"]["num_batches_tracked"]) == 3
    model = state.model()
    assert isinstance(model.bn.running_mean, nnx.BatchStat)
    assert max_abs_diff(model.fc1.kernel[...], state.params["fc1"]["kernel"]) == 0.0


def test_label_by_names_unchanged_on_dict_params():
    state = train.TrainState.create(_Net(rngs=nnx.Rngs(0)), optim.sgd(lr=0.1))
    names = []
    optim.label_by(lambda name, leaf: names.append(name) or "all")(state.params)
    assert sorted(names) == ["bn.bias", "bn.weight", "fc1.bias", "fc1.kernel", "fc2.bias", "fc2.kernel"]


def test_nnx_state_fields_give_the_same_trajectory():
    tx = optim.adam(lr=1e-2)
    model = _Net(rngs=nnx.Rngs(0))
    new = train.TrainState.create(model, tx)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = jax.tree.map(jnp.copy, (params, rest))
    old = train.TrainState(
        graphdef=graphdef, tx=tx, params=params, rest=rest, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32)
    )
    step = train.make_train_step(losses.MSELoss())
    x, y = _data()
    for _ in range(3):
        new, loss_new = step(new, x, y)
        old, loss_old = step(old, x, y)
        assert float(loss_new) == float(loss_old)
    assert isinstance(old.rest, nnx.State)  # the hand-built form is kept
    assert max_abs_diff(jax.tree.leaves(new.params), jax.tree.leaves(old.params)) == 0.0
    assert max_abs_diff(jax.tree.leaves(new.opt_state), jax.tree.leaves(old.opt_state)) == 0.0


def test_conv2d_im2col_is_one_two_dimensional_matmul():
    # The measured-faster form (issue 7, round 3): ONE dot_general on (N*Ho*Wo, kh*kw*C) patches, whose
    # weight gradient contracts a single axis; a 4-D dot_general was 5-7% slower on the whole W3 step.
    layer = layers.Conv2d(32, 64, 3, rngs=nnx.Rngs(0))
    if not layer._use_im2col():
        pytest.skip("the im2col lowering is CPU-only")
    jaxpr = jax.make_jaxpr(lambda x: layer(x))(jnp.zeros((2, 13, 13, 32), jnp.float32))
    dots = [eqn for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == "dot_general"]
    assert len(dots) == 1
    assert [v.aval.shape for v in dots[0].invars] == [(2 * 11 * 11, 9 * 32), (9 * 32, 64)]
