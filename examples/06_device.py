"""06 device: the PyTorch basics tutorial's device section, side by side with fnml.

``torch.device`` + ``model.to(device)`` + ``X.to(device)`` become ``device.device(...)`` +
``model = device.to(model, dev)`` + ``X = device.to(X, dev)``. torch moves a module in place;
fnml returns a new module (its input is untouched). The tutorial's SimpleNN is built on both
sides with the same weights (``interop.load_state_dict``) and its outputs compared after the move.
Run: ``python examples/06_device.py``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from flax import nnx

from fnml import device, interop, layers, losses, tensors
from fnml.sidebyside import SideBySide

tour = SideBySide("06 device", "Devices: choosing one, moving a model and its data")


class SimpleNN(nn.Module):
    """The tutorial's network, in torch."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 2)  # input -> hidden
        self.fc2 = nn.Linear(2, 1)  # hidden -> output

    def forward(self, x):
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


# The tutorial's model and data, created once by torch; fnml gets the same weights and values.
torch.manual_seed(0)
TORCH_MODEL = SimpleNN()
X_TORCH = torch.randn(10, 2)  # 10 samples, 2 features
Y_TORCH = torch.randn(10, 1)  # 10 targets
FNML_MODEL = interop.load_state_dict(layers.SimpleNN(rngs=nnx.Rngs(0)), TORCH_MODEL.state_dict())

# ------------------------------------------------------------------------------------- choosing
tour.section(
    "Choosing a device",
    "'cuda' and 'gpu' both name JAX's GPU; an absent device is an error that lists what exists.",
)


def torch_choose():
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(device)
    print(torch.cuda.device_count(), "CUDA device(s)")
    return torch.ones(2, device=device)


def fnml_choose():
    dev = device.device("cuda" if device.cuda_is_available() else "cpu")
    print(dev)
    print(device.describe())
    return tensors.ones(2, device=dev)


t, f = tour.compare("torch.device(...)", torch_choose, fnml_choose)
tour.check("ones(2) created on the chosen device", t, f, tol=0.0)

# ------------------------------------------------------------------------------------- moving
tour.section(
    "Moving the model and the data",
    "model.to(device) moves parameters in place; device.to(model, dev) returns a moved copy, so assign it.",
)


def torch_move():
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = TORCH_MODEL
    model.to(device)  # in place
    X = X_TORCH.to(device)
    Y = Y_TORCH.to(device)
    output = model(X)
    loss = nn.MSELoss()(output, Y)
    print(next(model.parameters()).device, X.device)
    print(f"loss: {loss.item():.6f}")
    return output, loss


def fnml_move():
    dev = device.device("cuda" if device.cuda_is_available() else "cpu")
    model = device.to(FNML_MODEL, dev)  # a new module
    X = device.to(tensors.from_torch(X_TORCH), dev)
    Y = device.to(tensors.from_torch(Y_TORCH), dev)
    output = model(X)
    loss = losses.MSELoss()(output, Y)
    print(model.fc1.kernel[...].devices(), X.devices())
    print(f"loss: {float(loss):.6f}")
    return output, loss


t, f = tour.compare("model.to(device); X = X.to(device); Y = Y.to(device)", torch_move, fnml_move)
tour.check("model(X) and MSE loss after the move (float32)", t, f, tol=1e-6)


def torch_default():
    with torch.device("cpu"):
        z = torch.zeros(2)
    print(z.device)
    return z


def fnml_default():
    with device.default_device("cpu"):
        z = tensors.zeros(2)
    print(z.devices())
    return z


t, f = tour.compare("A default device for new tensors", torch_default, fnml_default)
tour.check("zeros created under a default device", t, f, tol=0.0)

tour.finish()
