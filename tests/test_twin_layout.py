"""Twins of convolutional models run channels-last between layers, with the transposes at the edges.

fnml's Conv/BatchNorm/pool layers compute channels-last (NHWC). A twin used to transpose torch's NCHW
tensor in and out around EVERY such layer (93 transposes in a small ResNet's training step vs 9 in the
native model). Now channels-last values flow through elementwise ops (ReLU, the residual add, dropout,
scaling by a per-channel parameter) and go back to torch's layout only where an op needs it. Checked
here: the count of transposes in the traced forward, and that every path (fast and fallback) gives
torch's values and gradients in float64.
"""

from __future__ import annotations

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from flax import nnx
from helpers import tolerance
from test_porting_corpus import ResNetTiny

from fnml import interop, losses, parity


def _transposes(twin, x) -> int:
    """Layout transposes (NCHW <-> NHWC) in the jaxpr of ``twin(x)``."""
    graphdef, state = nnx.split(twin)
    jaxpr = jax.make_jaxpr(lambda s, v: nnx.merge(graphdef, s)(v))(state, x)  # pure: BatchNorm may write stats

    def count(j) -> int:
        total = 0
        for eqn in j.eqns:
            # NCHW <-> NHWC moves of activations (kernels read in torch's layout are dead code XLA drops)
            total += eqn.primitive.name == "transpose" and eqn.params["permutation"] in ((0, 2, 3, 1), (0, 3, 1, 2))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                total += count(sub)
        return total

    return count(jaxpr.jaxpr)


class Block(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN, + identity, ReLU (torchvision's BasicBlock, stride 1)."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class Chain(nn.Module):
    """Stem, two residual blocks, max-pool, global average pool, linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(Block(8), Block(8))
        self.pool, self.gap = nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(self.gap(x), 1))


class Elementwise(nn.Module):
    """Channels-last values meeting scalars, a (C, 1, 1) parameter, a (N, C, 1, 1) gate, torch.where,
    dropout and F.gelu: all stay channels-last; a higher-rank operand and non-elementwise ops
    (softmax over channels, cat along channels, a per-row view) take torch's layout."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 4).reshape(4, 1, 1))
        self.gate = nn.Conv2d(4, 4, 1)
        self.drop = nn.Dropout(0.0)
        self.out = nn.Conv1d(8, 2, 1)

    def forward(self, x):
        y = F.gelu(self.conv(x)) * self.scale + 1.0  # (N, 4, H, W) * (4, 1, 1) + scalar
        s = torch.sigmoid(self.gate(y.mean(dim=(2, 3), keepdim=True)))  # squeeze-excite gate (N, 4, 1, 1)
        y = self.drop(torch.where(y > 1.0, y * s, -y))
        z = torch.cat([y, torch.softmax(y, dim=1)], dim=1)  # (N, 8, H, W)
        w = z.unsqueeze(0) + z  # a 5-D operand: broadcasting adds a leading axis (torch's layout)
        return self.out(w[0].flatten(2)), z.mean()  # (N, 8, H*W) -> Conv1d (channels-last inside again)


MODELS = {"chain": (Chain, 3), "elementwise": (Elementwise, 3), "resnet_tiny": (ResNetTiny, 2)}  # (class, channels)


def _criteria(name):
    """(torch, fnml) criteria on the model's output: cross-entropy of (N, classes) logits (Elementwise: of its
    (N, 2, H*W) output averaged over positions, plus its second output)."""
    if name != "elementwise":
        return (F.cross_entropy, losses.cross_entropy)
    return (
        lambda out, y: F.cross_entropy(out[0].mean(dim=2), y) + out[1],
        lambda out, y: losses.cross_entropy(out[0].mean(axis=2), y) + out[1],
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", MODELS)
def test_channels_last_twin_matches_torch_forward_and_gradients(name, dtype):
    cls, channels = MODELS[name]
    torch.manual_seed(0)
    model = cls().to(getattr(torch, dtype)).train()
    x = torch.randn(3, channels, 8, 8, dtype=getattr(torch, dtype))
    twin = interop.from_torch(model, torch.randn(2, channels, 8, 8, dtype=x.dtype)).train()
    tol = tolerance(dtype)
    assert parity.compare_forward(model, twin, x).max_abs_diff <= tol["atol"]
    report = parity.compare_gradients(model, twin, x, torch.tensor([0, 1, 1]), _criteria(name))
    assert report.loss_diff <= tol["atol"] and report.max_abs_diff <= tol["atol"], report


def test_a_resnet_twin_transposes_only_at_its_edges():
    """Entry (NCHW -> NHWC once) and exit (before flatten): 2 transposes in the traced forward, whatever the depth."""
    model = Chain().double().train()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    twin = interop.from_torch(model, x).train()
    assert _transposes(twin, jnp.asarray(x.numpy())) == 2
    twin.eval()
    assert _transposes(twin, jnp.asarray(x.numpy())) == 2


def test_the_twin_equals_transposing_around_every_layer():
    """Keeping the layout between layers changes no value: eval forward bitwise equal to the per-layer form."""
    from fnml.interop import capture

    model = Chain().double().eval()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    twin = interop.from_torch(model, x).eval()
    fast = np.asarray(twin(jnp.asarray(x.numpy())))
    original = capture._channels_last_layer
    try:
        capture._channels_last_layer = lambda layer, adapter, args: capture._call_layer(
            layer, adapter, capture._logical(args)
        )
        per_layer = np.asarray(twin(jnp.asarray(x.numpy())))
    finally:
        capture._channels_last_layer = original
    np.testing.assert_array_equal(fast, per_layer)
    with torch.no_grad():
        np.testing.assert_allclose(fast, model(x).numpy(), rtol=0, atol=1e-12)


def test_a_twin_traced_without_examples_keeps_the_layout_too():
    """The torch.fx path (from_torch(model), no example inputs): same values, transposes only at the edges."""
    model = Chain().double().eval()
    twin = interop.from_torch(model).eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert parity.compare_forward(model, twin, x).max_abs_diff <= 1e-12
    assert _transposes(twin, jnp.asarray(x.numpy())) == 2
