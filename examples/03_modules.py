"""03 modules: the PyTorch basics tutorial's nn.Module section, side by side with fnml.

torch subclasses ``nn.Module`` and writes ``forward``; fnml subclasses ``layers.Module`` (a Flax NNX
module that prints like torch's) and writes ``__call__``. Both models get the same weights (torch's,
copied over: ``kernel = weight.T``), the same input ``x = randn(1, 2)`` and target, and the outputs,
MSE losses and gradients are compared. Run: ``python examples/03_modules.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import torch
import torch.nn as nn
from flax import nnx

from fnml import layers, losses, tensors
from fnml.sidebyside import SideBySide

tour = SideBySide("03 modules", "nn.Module: define a network, print it, run it, measure a loss")

# The tutorial's random input and a random target, drawn once by torch and shared with fnml.
torch.manual_seed(2)  # a seed where both hidden ReLUs are active, so every gradient is non-zero
X = torch.randn(1, 2)
TARGET = torch.randn(1, 1)

# ------------------------------------------------------------------------------------- definition
tour.section(
    "Defining a network",
    """
    The same class in both: layers are built in __init__, the computation is forward (torch) or
    __call__ (fnml). fnml layers need an explicit random-number source, nnx.Rngs, for their init.
    """,
)


def torch_define():
    class SimpleNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(2, 2)  # input -> hidden
            self.fc2 = nn.Linear(2, 1)  # hidden -> output

        def forward(self, x):
            x = torch.relu(self.fc1(x))  # ReLU activation
            x = self.fc2(x)
            return x

    model = SimpleNN()
    print(model)
    return model


def fnml_define():
    class SimpleNN(layers.Module):
        def __init__(self, *, rngs):
            self.fc1 = layers.Linear(2, 2, rngs=rngs)  # input -> hidden
            self.fc2 = layers.Linear(2, 1, rngs=rngs)  # hidden -> output

        def __call__(self, x):
            x = jax.nn.relu(self.fc1(x))  # ReLU activation
            x = self.fc2(x)
            return x

    model = SimpleNN(rngs=nnx.Rngs(0))
    print(model)
    return model


torch_model, fnml_model = tour.compare("class SimpleNN; print(model)", torch_define, fnml_define)
tour.record("print(model) text identical", float(str(torch_model) != str(fnml_model)), tol=0.0)

# ------------------------------------------------------------------------------------- same weights
tour.section(
    "Same weights on both sides",
    """
    Initial weights are random in both frameworks and their random streams differ (the distribution
    is the same: U(-1/sqrt(in_features), 1/sqrt(in_features)) for weights and biases). To compare
    numbers, copy torch's weights into the fnml model. fnml keeps a Linear's kernel as (in, out),
    the transpose of torch's (out, in) weight; fnml.interop.load_state_dict does this for any model.
    """,
)


def torch_weights():
    for name, param in torch_model.named_parameters():
        print(name, tuple(param.shape))
    return {name: param.detach() for name, param in torch_model.named_parameters()}


def fnml_weights():
    for layer in ("fc1", "fc2"):
        weight = getattr(torch_model, layer).weight
        bias = getattr(torch_model, layer).bias
        getattr(fnml_model, layer).kernel[...] = tensors.from_torch(weight.detach()).T  # (out, in) -> (in, out)
        getattr(fnml_model, layer).bias[...] = tensors.from_torch(bias.detach())
    for layer in ("fc1", "fc2"):
        print(f"{layer}.kernel", getattr(fnml_model, layer).kernel[...].shape)
        print(f"{layer}.bias", getattr(fnml_model, layer).bias[...].shape)
    return {
        f"{layer}.{name}": value
        for layer in ("fc1", "fc2")
        for name, value in (
            ("weight", getattr(fnml_model, layer).kernel[...].T),
            ("bias", getattr(fnml_model, layer).bias[...]),
        )
    }


t, f = tour.compare("Parameters", torch_weights, fnml_weights)
tour.check("copied parameters", t, f, tol=0.0)

# ------------------------------------------------------------------------------------- forward pass
tour.section("Forward pass", "Calling the model runs forward / __call__ on a (1, 2) input.")


def torch_forward():
    x = X  # torch.randn(1, 2)
    output = torch_model(x)
    print(output)
    return output


def fnml_forward():
    x = tensors.from_torch(X)  # the same draw
    output = fnml_model(x)
    print(output)
    return output


t, f = tour.compare("output = model(x)", torch_forward, fnml_forward)
tour.check("forward output", t, f, tol=1e-6)

# ------------------------------------------------------------------------------------- loss and gradients
tour.section(
    "Loss and gradients",
    """
    MSELoss on the output and a random target; torch fills .grad with loss.backward(), fnml returns the
    gradients of the loss function w.r.t. the model's parameters (nnx.grad).
    """,
)


def torch_loss():
    criterion = nn.MSELoss()
    target = TARGET  # torch.randn(1, 1)
    torch_model.zero_grad()
    loss = criterion(torch_model(X), target)
    loss.backward()
    print("loss:", loss.item())
    print("fc1.weight.grad:", torch_model.fc1.weight.grad)
    return loss, {name: param.grad for name, param in torch_model.named_parameters()}


def fnml_loss():
    criterion = losses.MSELoss()
    target = tensors.from_torch(TARGET)
    x = tensors.from_torch(X)

    def loss_fn(model):
        return criterion(model(x), target)

    loss, grads = nnx.value_and_grad(loss_fn)(fnml_model)
    print("loss:", float(loss))
    print("fc1.kernel grad (transposed):", grads["fc1"]["kernel"][...].T)
    return loss, {
        f"{layer}.{name}": value
        for layer in ("fc1", "fc2")
        for name, value in (("weight", grads[layer]["kernel"][...].T), ("bias", grads[layer]["bias"][...]))
    }


(t_loss, t_grads), (f_loss, f_grads) = tour.compare("loss = criterion(output, target)", torch_loss, fnml_loss)
tour.check("MSE loss", t_loss, f_loss, tol=1e-6)
tour.check("gradients", t_grads, f_grads, tol=1e-6)

# ------------------------------------------------------------------------------------- the built-in model
tour.section(
    "The tutorial model ships with fnml",
    "fnml.layers.SimpleNN is the same network; state_dict names are torch's (fc1.weight, ...).",
)


def torch_builtin():
    print(torch_model)
    return jnp.zeros(())


def fnml_builtin():
    model = layers.SimpleNN(rngs=nnx.Rngs(0))
    print(model)
    return jnp.zeros(())


tour.compare("print(SimpleNN)", torch_builtin, fnml_builtin)
tour.record(
    "layers.SimpleNN prints like torch",
    float(str(layers.SimpleNN(rngs=nnx.Rngs(0))) != str(torch_model)),
    tol=0.0,
)

tour.finish()
