"""01 tensors: the PyTorch basics tutorial's tensor section, side by side with fnml.

Creation (zeros, ones, randn, from NumPy, on a device), operations (add, elementwise multiply,
transpose, shape), device moves, and the clone/detach/to counterparts. Random values are drawn
once by torch and shared with the fnml column (torch and JAX random streams never match).
Run: ``python examples/01_tensors.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

from fnml import device, grad, tensors
from fnml.sidebyside import SideBySide

tour = SideBySide("01 tensors", "Tensors: creation, operations, devices, clone/detach/to")


def torch_draw(seed: int, *shape: int) -> torch.Tensor:
    """The values torch.randn(*shape) gives right after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    return torch.randn(*shape)


# Drawn once here; the torch column re-draws them with the same seed, the fnml column imports them.
C = torch_draw(1, 2, 3)
D = torch_draw(2, 2, 3)
E, F = torch_draw(3, 2, 3), torch_draw(4, 2, 3)
G = torch_draw(5, 3, 2)

# ------------------------------------------------------------------------------------- creation
tour.section(
    "Creating tensors",
    "fnml arrays are jax.Array values. Default dtype float32 like torch. Random draws take an explicit key; "
    "to compare with torch, the torch draw is shared through tensors.from_torch.",
)


def torch_zeros():
    a = torch.zeros(2, 3)
    print(a)
    return a


def fnml_zeros():
    a = tensors.zeros(2, 3)
    print(a)
    return a


t, f = tour.compare("2x3 zeros", torch_zeros, fnml_zeros)
tour.check("zeros(2, 3)", t, f, tol=0.0)


def torch_ones():
    b = torch.ones(2, 3)
    print(b)
    return b


def fnml_ones():
    b = tensors.ones(2, 3)
    print(b)
    return b


t, f = tour.compare("2x3 ones", torch_ones, fnml_ones)
tour.check("ones(2, 3)", t, f, tol=0.0)


def torch_randn():
    torch.manual_seed(1)
    c = torch.randn(2, 3)
    print(c)
    return c


def fnml_randn():
    c = tensors.from_torch(C)  # torch's draw, shared
    print(c)
    own = tensors.randn(jax.random.key(0), 2, 3)  # fnml's own keyed draw
    print("own draw:", own.shape, own.dtype)
    return c


t, f = tour.compare("2x3 random normal", torch_randn, fnml_randn)
tour.check("randn(2, 3) (shared draw)", t, f, tol=0.0)


def torch_from_numpy():
    numpy_array = np.array([[1, 2], [3, 4]])
    tensor_from_numpy = torch.from_numpy(numpy_array)
    print(tensor_from_numpy)
    return tensor_from_numpy


def fnml_from_numpy():
    numpy_array = np.array([[1, 2], [3, 4]])
    # int64 needs JAX's x64 mode; without it fnml
    # warns (PrecisionWarning) and keeps int32
    tensor_from_numpy = tensors.from_numpy(numpy_array)
    print(tensor_from_numpy, tensor_from_numpy.dtype)
    return tensor_from_numpy


t, f = tour.compare("From a NumPy array", torch_from_numpy, fnml_from_numpy)
tour.check("from_numpy", t, f, tol=0.0)


def torch_on_device():
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(2)
    d = torch.randn(2, 3, device=device)
    print(d)
    return d


def fnml_on_device():
    dev = device.device("cuda" if device.cuda_is_available() else "cpu")
    d = tensors.from_torch(D, device=dev)  # shared draw, placed on dev
    # own draw: tensors.randn(key, 2, 3, device=dev)
    print(d)
    print(d.devices())
    return d


t, f = tour.compare("On a chosen device (CPU/GPU)", torch_on_device, fnml_on_device)
tour.check("randn(2, 3, device=...)", t, f, tol=0.0)

# ------------------------------------------------------------------------------------- operations
tour.section("Common operations", "The operators are the same; .t() is .T (or jnp.transpose).")


def torch_add():
    torch.manual_seed(3)
    e = torch.randn(2, 3)
    torch.manual_seed(4)
    f = torch.randn(2, 3)
    print(e + f)
    return e + f


def fnml_add():
    e = tensors.from_torch(E)
    f = tensors.from_torch(F)
    print(e + f)
    return e + f


t, f = tour.compare("Addition", torch_add, fnml_add)
tour.check("e + f", t, f, tol=0.0)


def torch_mul():
    print(E * F)
    return E * F


def fnml_mul():
    e, f = tensors.from_torch(E), tensors.from_torch(F)
    print(e * f)
    return e * f


t, f = tour.compare("Elementwise multiplication", torch_mul, fnml_mul)
tour.check("e * f", t, f, tol=0.0)


def torch_transpose():
    torch.manual_seed(5)
    g = torch.randn(3, 2)
    print(g.t())  # or g.transpose(0, 1)
    return g.t()


def fnml_transpose():
    g = tensors.from_torch(G)
    print(g.T)  # or jnp.transpose(g), g.transpose(1, 0)
    return g.T


t, f = tour.compare("Transpose", torch_transpose, fnml_transpose)
tour.check("g.t()", t, f, tol=0.0)


def torch_shape():
    print(G.shape)
    return tuple(G.shape)


def fnml_shape():
    g = tensors.from_torch(G)
    print(g.shape)  # a plain tuple
    return g.shape


t, f = tour.compare("Shape", torch_shape, fnml_shape)
tour.check("g.shape", np.asarray(t), np.asarray(f), tol=0.0)

# ------------------------------------------------------------------------------------- devices
tour.section(
    "Tensors and devices",
    "torch moves a tensor with .to('cuda'); fnml returns a new array on the device (jax arrays are immutable).",
)


def torch_move():
    tensor_from_list = torch.tensor([1.0, 2.0, 3.0])
    if torch.cuda.is_available():
        tensor_from_list = tensor_from_list.to("cuda")
    print(tensor_from_list.device)
    return tensor_from_list


def fnml_move():
    tensor_from_list = tensors.tensor([1.0, 2.0, 3.0])
    if device.cuda_is_available():
        tensor_from_list = device.to(tensor_from_list, "cuda")
    print(tensor_from_list.devices())
    return tensor_from_list


t, f = tour.compare("Moving to the GPU when there is one", torch_move, fnml_move)
tour.check("tensor.to(device)", t, f, tol=0.0)

# ------------------------------------------------------------------------------------- clone/detach/to
tour.section(
    "Memory: clone, detach, to",
    "jax arrays never change in place, so clone is only a fresh buffer; detach is jax.lax.stop_gradient; "
    "to converts dtype and/or device and returns a new array.",
)


def torch_clone_detach_to():
    x = torch.tensor([1.5, -2.25, 3.0], requires_grad=True)
    y = x.clone()
    z = x.detach()
    w = x.to("cpu", torch.float16)
    g = torch.autograd.grad((x * z).sum(), x)[0]
    print(y, z, w, g, sep="\n")
    return y, z, w, g


def fnml_clone_detach_to():
    x = tensors.tensor([1.5, -2.25, 3.0])
    y = tensors.clone(x)
    z = tensors.detach(x)
    w = tensors.to(x, "cpu", torch.float16)
    g = grad.grad(lambda x: (x * tensors.detach(x)).sum())(x)
    print(y, z, w, g, sep="\n")
    return y, z, w, g


t, f = tour.compare("clone / detach / to", torch_clone_detach_to, fnml_clone_detach_to)
tour.check("clone, detach, to(float16), grad through detach", t, f, tol=0.0)
assert isinstance(f[0], jnp.ndarray)

tour.finish()
