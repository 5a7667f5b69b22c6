"""Multi-head attention and the transformer layers.

PyTorch equivalent: ``torch/nn/modules/activation.py`` (MultiheadAttention), ``transformer.py``.

The math is torch's reference (slow) path, :func:`fnml.functional.multi_head_attention_forward`, never
its fused inference fast path. Layouts and names for converting state dicts (torch name -> fnml):

- ``MultiheadAttention``: ``in_proj_weight (3E, E)``, ``q_proj_weight (E, E)``, ``k_proj_weight (E, kdim)``,
  ``v_proj_weight (E, vdim)``, ``in_proj_bias (3E,)``, ``bias_k`` / ``bias_v (1, 1, E)``: same names and
  torch's layouts (they are handed to the functional op as they are); ``out_proj`` is a Linear, so
  ``out_proj.weight (E, E)`` is ``out_proj.kernel = weight.T``.
- Transformer layers: ``self_attn``, ``multihead_attn`` (decoder), ``linear1``, ``linear2`` (Linear:
  ``kernel = weight.T``), ``norm1`` / ``norm2`` / ``norm3`` (LayerNorm, same names and shapes);
  ``TransformerEncoder`` / ``TransformerDecoder``: ``layers.<i>.`` and ``norm``; ``Transformer``:
  ``encoder.`` / ``decoder.``. Data is torch's: ``(T, N, E)``, or ``(N, T, E)`` with ``batch_first=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fnml._validation import check_bool, check_in_interval, check_positive, check_positive_int
from fnml.functional.activation import gelu_unchecked
from fnml.functional.attention import multi_head_attention_unchecked
from fnml.layers._facts import CHILDREN, LOWERS_OP_BY_OP, TorchFacts
from fnml.layers.base import Module, _compute_dtype, torch_uniform
from fnml.layers.container import ModuleList
from fnml.layers.dropout import Dropout
from fnml.layers.linear import Linear, NonDynamicallyQuantizableLinear
from fnml.layers.normalization import LayerNorm

__all__ = [
    "MultiheadAttention",
    "TransformerEncoderLayer",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerDecoder",
    "Transformer",
]


# --------------------------------------------------------------------------------------------------
# Initialisation and small helpers
# --------------------------------------------------------------------------------------------------


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """torch's ``_calculate_fan_in_and_fan_out`` for a weight in torch's layout ``(out, in, *receptive)``."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _xavier_uniform(key: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    # torch.nn.init.xavier_uniform_: U(-a, a), a = sqrt(6 / (fan_in + fan_out)); symmetric in the two fans.
    fan_in, fan_out = _fans(shape)
    return torch_uniform(math.sqrt(6.0 / (fan_in + fan_out)))(key, shape, dtype)


def _xavier_normal(key: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    # torch.nn.init.xavier_normal_: N(0, std^2), std = sqrt(2 / (fan_in + fan_out)).
    fan_in, fan_out = _fans(shape)
    flat = jax.random.normal(key, (math.prod(shape),), dtype) * math.sqrt(2.0 / (fan_in + fan_out))
    return flat.reshape(shape)  # (prod(shape),) -> shape


def _value(variable: Any) -> jax.Array | None:
    return None if variable is None else variable[...]


def _dropout_stream(rngs: nnx.Rngs, where: str) -> Any:
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"{where}: rngs must be an nnx.Rngs (keyword-only), got {type(rngs).__name__}")
    return rngs["dropout"].fork()


def _activation(activation: Any, where: str) -> Callable[[jax.Array], jax.Array]:
    """torch's ``_get_activation_fn``: "relu" / "gelu" or any callable (a function or an fnml layer)."""
    if isinstance(activation, str):
        if activation == "relu":
            return jax.nn.relu
        if activation == "gelu":
            return gelu_unchecked  # torch's exact erf form (jax.nn.gelu defaults to tanh)
        raise ValueError(f"{where}: activation should be 'relu' or 'gelu' (or a callable), got {activation!r}")
    if not callable(activation):
        raise TypeError(f"{where}: activation must be 'relu', 'gelu' or a callable, got {activation!r}")
    return activation


def _check_layer_args(d_model, nhead, dim_feedforward, dropout, layer_norm_eps, batch_first, norm_first, bias, where):
    check_positive_int("d_model", d_model, where=where)
    check_positive_int("nhead", nhead, where=where)
    check_positive_int("dim_feedforward", dim_feedforward, where=where)
    check_in_interval("dropout", dropout, 0.0, 1.0, closed_high=True, where=where)
    check_positive("layer_norm_eps", layer_norm_eps, where=where)
    for name, flag in (("batch_first", batch_first), ("norm_first", norm_first), ("bias", bias)):
        check_bool(name, flag, where=where)


def _fresh_dropout_streams(clone: nnx.Module, source: nnx.Module) -> None:
    """Give a deep copy its own dropout streams, drawn from ``source``'s (torch's clones draw different masks)."""
    clone_streams = [node for _, node in nnx.iter_graph(clone) if isinstance(node, nnx.RngStream)]
    source_streams = [node for _, node in nnx.iter_graph(source) if isinstance(node, nnx.RngStream)]
    for target, origin in zip(clone_streams, source_streams, strict=True):
        target.key[...] = origin()
        target.count[...] = jnp.zeros_like(target.count[...])


def _clones(layer: nnx.Module, num_layers: int, where: str) -> ModuleList:
    """torch's ``_get_clones``: ``num_layers`` deep copies (same initial weights), each with its own RNG."""
    check_positive_int("num_layers", num_layers, where=where)
    copies = []
    for _ in range(num_layers):
        clone = nnx.clone(layer)
        _fresh_dropout_streams(clone, layer)
        copies.append(clone)
    return ModuleList(copies)


class _TorchOrdered(Module):
    """Children and tensors listed in torch's registration order (``nnx.clone`` sorts attributes by name)."""

    _torch_order: tuple[str, ...] = ()

    def _torch_children(self) -> list[tuple[str, Any]]:
        pairs = [(name, getattr(self, name, None)) for name in self._torch_order]
        return [(name, value) for name, value in pairs if isinstance(value, nnx.Module)]


# --------------------------------------------------------------------------------------------------
# MultiheadAttention
# --------------------------------------------------------------------------------------------------


class MultiheadAttention(_TorchOrdered):
    """Multi-head attention with torch's parameters, initialisation, masks and return values.

    PyTorch equivalent: ``torch.nn.MultiheadAttention(embed_dim, num_heads, dropout=0.0, bias=True,
    add_bias_kv=False, add_zero_attn=False, kdim=None, vdim=None, batch_first=False)``.

    ``__call__(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` returns ``(output, weights)`` as torch: ``output (L, N,
    E)`` (``(N, L, E)`` with ``batch_first=True``, ``(L, E)`` unbatched); ``weights (N, L, S)`` averaged over
    heads, ``(N, num_heads, L, S)`` with ``average_attn_weights=False``, None with ``need_weights=False``.
    Masks follow torch's module convention: bool True = NOT attended (``key_padding_mask (N, S)``,
    ``attn_mask (L, S)`` or ``(N * num_heads, L, S)``); float masks are added to the scores. The math is
    :func:`fnml.functional.multi_head_attention_forward` (torch's reference path).

    Parameters (torch's names AND layouts): ``in_proj_weight (3E, E)`` ~ xavier_uniform, or with
    ``kdim`` / ``vdim`` different from ``embed_dim`` separate ``q_proj_weight (E, E)``, ``k_proj_weight
    (E, kdim)``, ``v_proj_weight (E, vdim)`` ~ xavier_uniform; ``in_proj_bias (3E,)`` zeros; ``out_proj``
    a Linear (torch's default init for the weight, ZERO bias; ``out_proj.kernel`` is ``weight.T`` as in
    every fnml Linear); ``bias_k`` / ``bias_v (1, 1, E)`` ~ xavier_normal with ``add_bias_kv=True``.
    Attention dropout (training mode, ``dropout > 0``) draws from the ``'dropout'`` stream of ``rngs``;
    ``model.eval()`` turns it off.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import layers
    >>> mha = layers.MultiheadAttention(8, 2, batch_first=True, rngs=nnx.Rngs(0))
    >>> x = jnp.ones((3, 5, 8))                                 # (N, L, E)
    >>> out, weights = mha(x, x, x)
    >>> out.shape, weights.shape
    ((3, 5, 8), (3, 5, 5))
    """

    torch_facts = TorchFacts(
        "MultiheadAttention",
        slots=CHILDREN,
        layout=CHILDREN,
        settings=("embed_dim", "num_heads", "dropout", "batch_first", "kdim", "vdim", "add_zero_attn"),
        capture=LOWERS_OP_BY_OP,
        autocast=True,  # torch's CPU autocast: in-projection, bmm/baddbmm and out-projection in bfloat16
    )

    _torch_order = (
        "q_proj_weight",
        "k_proj_weight",
        "v_proj_weight",
        "in_proj_weight",
        "in_proj_bias",
        "bias_k",
        "bias_v",
        "out_proj",
    )

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        where = "MultiheadAttention"
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"{where}: rngs must be an nnx.Rngs (keyword-only), got {type(rngs).__name__}")
        check_positive_int("embed_dim", embed_dim, where=where)
        check_positive_int("num_heads", num_heads, where=where)
        if embed_dim % num_heads:
            raise ValueError(f"{where}: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        check_in_interval("dropout", dropout, 0.0, 1.0, closed_high=True, where=where)
        for name, flag in (
            ("bias", bias),
            ("add_bias_kv", add_bias_kv),
            ("add_zero_attn", add_zero_attn),
            ("batch_first", batch_first),
        ):
            check_bool(name, flag, where=where)
        if kdim is not None:
            check_positive_int("kdim", kdim, where=where)
        if vdim is not None:
            check_positive_int("vdim", vdim, where=where)
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = float(dropout)
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        self.dtype = dtype
        self.param_dtype = param_dtype
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nnx.Param(_xavier_uniform(rngs.params(), (3 * embed_dim, embed_dim), param_dtype))
            self.q_proj_weight = self.k_proj_weight = self.v_proj_weight = nnx.data(None)
        else:
            self.q_proj_weight = nnx.Param(_xavier_uniform(rngs.params(), (embed_dim, embed_dim), param_dtype))
            self.k_proj_weight = nnx.Param(_xavier_uniform(rngs.params(), (embed_dim, self.kdim), param_dtype))
            self.v_proj_weight = nnx.Param(_xavier_uniform(rngs.params(), (embed_dim, self.vdim), param_dtype))
            self.in_proj_weight = nnx.data(None)
        self.in_proj_bias = nnx.Param(jnp.zeros((3 * embed_dim,), param_dtype)) if bias else nnx.data(None)
        self.out_proj = NonDynamicallyQuantizableLinear(
            embed_dim, embed_dim, bias=bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        if bias:  # torch: constant_(out_proj.bias, 0.0)
            self.out_proj.bias[...] = jnp.zeros((embed_dim,), param_dtype)
        if add_bias_kv:
            self.bias_k = nnx.Param(_xavier_normal(rngs.params(), (1, 1, embed_dim), param_dtype))
            self.bias_v = nnx.Param(_xavier_normal(rngs.params(), (1, 1, embed_dim), param_dtype))
        else:
            self.bias_k = self.bias_v = nnx.data(None)
        self.add_zero_attn = add_zero_attn
        # flax's train()/eval() toggle this attribute: False == torch's training mode (the default).
        self.deterministic = False
        self.rngs = _dropout_stream(rngs, where)

    def _check_inputs(self, query: jax.Array, key: jax.Array, value: jax.Array) -> None:
        where = "MultiheadAttention"
        for name, array, size, setting in (
            ("query", query, self.embed_dim, "embed_dim"),
            ("key", key, self.kdim, "kdim"),
            ("value", value, self.vdim, "vdim"),
        ):
            if array.ndim not in (2, 3):
                raise ValueError(f"{where}: {name} must be 3-D (batched) or 2-D (unbatched), got shape {array.shape}")
            if array.shape[-1] != size:
                raise ValueError(
                    f"{where}({setting}={size}) got a {name} with {array.shape[-1]} features (shape {array.shape})"
                )

    def _dropout_key(self, rngs: nnx.Rngs | None) -> jax.Array | None:
        if self.deterministic or self.dropout == 0.0:
            return None
        return rngs["dropout"]() if rngs is not None else self.rngs()

    def __call__(
        self,
        query: jax.Array,
        key: jax.Array,
        value: jax.Array,
        key_padding_mask: jax.Array | None = None,
        need_weights: bool = True,
        attn_mask: jax.Array | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
        *,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[jax.Array, jax.Array | None]:
        query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)
        self._check_inputs(query, key, value)
        batched = query.ndim == 3
        if self.batch_first and batched:
            query, key, value = (jnp.swapaxes(x, 0, 1) for x in (query, key, value))  # (N, L, E) -> (L, N, E)
        params = [
            _value(v)
            for v in (
                self.in_proj_weight,
                self.q_proj_weight,
                self.k_proj_weight,
                self.v_proj_weight,
                self.in_proj_bias,
                self.bias_k,
                self.bias_v,
            )
        ]
        out_kernel, out_bias = self.out_proj.kernel[...], _value(self.out_proj.bias)
        dtype = _compute_dtype(self.dtype, query, key, value, out_kernel, *(p for p in params if p is not None))
        in_w, q_w, k_w, v_w, in_b, bias_k, bias_v = (None if p is None else p.astype(dtype) for p in params)
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            projections = (in_w[:e], in_w[e : 2 * e], in_w[2 * e :])  # (3E, E) -> 3 x (E, E)
        else:
            projections = (q_w, k_w, v_w)
        biases = (None, None, None) if in_b is None else (in_b[:e], in_b[e : 2 * e], in_b[2 * e :])
        # Settings checked at construction and the inputs just above; cast once, here: the functional core
        # checks only what the call brings (its flags and masks).
        output, weights = multi_head_attention_unchecked(
            query.astype(dtype),
            key.astype(dtype),
            value.astype(dtype),
            self.num_heads,
            projections,
            biases,
            bias_k,
            bias_v,
            self.add_zero_attn,
            0.0 if self.deterministic else self.dropout,
            out_kernel.astype(dtype).T,  # fnml kernel (in, out) -> torch weight (out, in)
            None if out_bias is None else out_bias.astype(dtype),
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
            separate_projections=not self._qkv_same_embed_dim,
            dropout_key=self._dropout_key(rngs),
        )
        if self.batch_first and batched:
            output = jnp.swapaxes(output, 0, 1)  # (L, N, E) -> (N, L, E)
        return output, weights


# --------------------------------------------------------------------------------------------------
# Encoder and decoder layers
# --------------------------------------------------------------------------------------------------


class TransformerEncoderLayer(_TorchOrdered):
    """Self-attention then a feed-forward block, each with a residual and LayerNorm (torch's reference path).

    PyTorch equivalent: ``torch.nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=2048,
    dropout=0.1, activation=F.relu, layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True)``.

    ``__call__(src, src_mask=None, src_key_padding_mask=None, is_causal=False)``. Post-norm (default):
    ``x = norm1(x + dropout1(self_attn(x))); x = norm2(x + dropout2(linear2(dropout(act(linear1(x))))))``;
    ``norm_first=True``: ``x = x + sa(norm1(x)); x = x + ff(norm2(x))``. ``activation``: "relu", "gelu"
    (exact erf, as torch) or a callable; an fnml layer (e.g. ``layers.GELU()``) shows in ``print`` as in
    torch. Masks as :class:`MultiheadAttention` (bool True = not attended). Torch's fused inference fast
    path is never taken: eval mode computes the same reference math (torch's fast path differs from its
    own reference path by rounding, and returns zeros at padded positions of nested tensors).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import layers
    >>> layer = layers.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((5, 3, 8))).shape                         # (T, N, E)
    (5, 3, 8)
    """

    torch_facts = TorchFacts(
        "TransformerEncoderLayer",
        slots=CHILDREN,
        layout=CHILDREN,
        settings=("norm_first",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _torch_order = (
        "self_attn",
        "linear1",
        "dropout",
        "linear2",
        "norm1",
        "norm2",
        "dropout1",
        "dropout2",
        "activation",
    )

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable[[jax.Array], jax.Array] = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        where = "TransformerEncoderLayer"
        _check_layer_args(
            d_model, nhead, dim_feedforward, dropout, layer_norm_eps, batch_first, norm_first, bias, where
        )
        act = _activation(activation, where)
        kinds = {"dtype": dtype, "param_dtype": param_dtype}
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **kinds, rngs=rngs
        )
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kinds, rngs=rngs)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kinds, rngs=rngs)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kinds)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kinds)
        self.dropout1 = Dropout(dropout, rngs=rngs)
        self.dropout2 = Dropout(dropout, rngs=rngs)
        self.activation = act

    def __call__(
        self,
        src: jax.Array,
        src_mask: jax.Array | None = None,
        src_key_padding_mask: jax.Array | None = None,
        is_causal: bool = False,
    ) -> jax.Array:
        x = jnp.asarray(src)
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x))

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(
            x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False, is_causal=is_causal
        )[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerDecoderLayer(_TorchOrdered):
    """Self-attention, cross-attention over ``memory``, then feed-forward; residuals and LayerNorms.

    PyTorch equivalent: ``torch.nn.TransformerDecoderLayer(d_model, nhead, dim_feedforward=2048,
    dropout=0.1, activation=F.relu, layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True)``.

    ``__call__(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False)``. Post-norm:
    ``x = norm1(x + sa(x)); x = norm2(x + mha(x, memory)); x = norm3(x + ff(x))``; ``norm_first=True``
    applies each norm before its block. Sub-modules ``self_attn``, ``multihead_attn``, ``linear1``,
    ``dropout``, ``linear2``, ``norm1..3``, ``dropout1..3`` as torch.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import layers
    >>> layer = layers.TransformerDecoderLayer(8, 2, dim_feedforward=16, batch_first=True, rngs=nnx.Rngs(0))
    >>> layer.eval()(jnp.ones((3, 4, 8)), jnp.ones((3, 6, 8))).shape     # (N, T, E), memory (N, S, E)
    (3, 4, 8)
    """

    torch_facts = TorchFacts(
        "TransformerDecoderLayer",
        slots=CHILDREN,
        layout=CHILDREN,
        settings=("norm_first",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _torch_order = (
        "self_attn",
        "multihead_attn",
        "linear1",
        "dropout",
        "linear2",
        "norm1",
        "norm2",
        "norm3",
        "dropout1",
        "dropout2",
        "dropout3",
        "activation",
    )

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable[[jax.Array], jax.Array] = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        where = "TransformerDecoderLayer"
        _check_layer_args(
            d_model, nhead, dim_feedforward, dropout, layer_norm_eps, batch_first, norm_first, bias, where
        )
        act = _activation(activation, where)
        kinds = {"dtype": dtype, "param_dtype": param_dtype}
        attention = {"dropout": dropout, "batch_first": batch_first, "bias": bias, **kinds}
        self.self_attn = MultiheadAttention(d_model, nhead, **attention, rngs=rngs)
        self.multihead_attn = MultiheadAttention(d_model, nhead, **attention, rngs=rngs)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kinds, rngs=rngs)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kinds, rngs=rngs)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kinds)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kinds)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kinds)
        self.dropout1 = Dropout(dropout, rngs=rngs)
        self.dropout2 = Dropout(dropout, rngs=rngs)
        self.dropout3 = Dropout(dropout, rngs=rngs)
        self.activation = act

    def __call__(
        self,
        tgt: jax.Array,
        memory: jax.Array,
        tgt_mask: jax.Array | None = None,
        memory_mask: jax.Array | None = None,
        tgt_key_padding_mask: jax.Array | None = None,
        memory_key_padding_mask: jax.Array | None = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> jax.Array:
        x, memory = jnp.asarray(tgt), jnp.asarray(memory)
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal)
            return x + self._ff_block(self.norm3(x))
        x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
        x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal))
        return self.norm3(x + self._ff_block(x))

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(
            x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, is_causal=is_causal, need_weights=False
        )[0]
        return self.dropout1(x)

    def _mha_block(self, x, memory, attn_mask, key_padding_mask, is_causal):
        x = self.multihead_attn(
            x,
            memory,
            memory,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            is_causal=is_causal,
            need_weights=False,
        )[0]
        return self.dropout2(x)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))


# --------------------------------------------------------------------------------------------------
# Stacks and the full model
# --------------------------------------------------------------------------------------------------


def _check_norm(norm: Any, where: str) -> Any:
    if norm is not None and not isinstance(norm, nnx.Module):
        raise TypeError(f"{where}: norm must be an fnml layer (e.g. layers.LayerNorm) or None, got {norm!r}")
    return norm


class TransformerEncoder(_TorchOrdered):
    """A stack of ``num_layers`` copies of an encoder layer, then an optional final ``norm``.

    PyTorch equivalent: ``torch.nn.TransformerEncoder(encoder_layer, num_layers, norm=None,
    enable_nested_tensor=True, mask_check=True)``.

    As torch, the copies are deep copies of ``encoder_layer`` (identical initial weights; each copy gets
    its own dropout random stream). ``__call__(src, mask=None, src_key_padding_mask=None,
    is_causal=None)``: ``is_causal`` is torch's hint (None: treated as False; torch's detection of a causal
    ``mask`` only selects a kernel, the numbers are the same). ``enable_nested_tensor`` / ``mask_check``
    are accepted for signature compatibility and have no effect (no nested tensors in JAX; torch's
    nested fast path returns zeros at padded positions, the reference path used here does not).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import layers
    >>> layer = layers.TransformerEncoderLayer(8, 2, dim_feedforward=16, rngs=nnx.Rngs(0))
    >>> encoder = layers.TransformerEncoder(layer, num_layers=2).eval()
    >>> encoder(jnp.ones((5, 3, 8))).shape
    (5, 3, 8)
    """

    torch_facts = TorchFacts(
        "TransformerEncoder",
        slots=CHILDREN,
        layout=CHILDREN,
        settings=("num_layers",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _torch_order = ("layers", "norm")

    def __init__(
        self,
        encoder_layer: nnx.Module,
        num_layers: int,
        norm: nnx.Module | None = None,
        enable_nested_tensor: bool = True,
        mask_check: bool = True,
    ):
        where = "TransformerEncoder"
        if not isinstance(encoder_layer, nnx.Module):
            raise TypeError(f"{where}: encoder_layer must be an fnml layer, got {type(encoder_layer).__name__}")
        check_bool("enable_nested_tensor", enable_nested_tensor, where=where)
        check_bool("mask_check", mask_check, where=where)
        self.layers = _clones(encoder_layer, num_layers, where)
        self.num_layers = num_layers
        self.norm = _check_norm(norm, where)
        self.enable_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check

    def __call__(
        self,
        src: jax.Array,
        mask: jax.Array | None = None,
        src_key_padding_mask: jax.Array | None = None,
        is_causal: bool | None = None,
    ) -> jax.Array:
        output = jnp.asarray(src)
        for layer in self.layers:
            output = layer(output, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        return output if self.norm is None else self.norm(output)


class TransformerDecoder(_TorchOrdered):
    """A stack of ``num_layers`` copies of a decoder layer, then an optional final ``norm``.

    PyTorch equivalent: ``torch.nn.TransformerDecoder(decoder_layer, num_layers, norm=None)``.

    ``__call__(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False)``. Deep copies as in
    :class:`TransformerEncoder`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import layers
    >>> layer = layers.TransformerDecoderLayer(8, 2, dim_feedforward=16, rngs=nnx.Rngs(0))
    >>> decoder = layers.TransformerDecoder(layer, num_layers=2, norm=layers.LayerNorm(8)).eval()
    >>> decoder(jnp.ones((4, 3, 8)), jnp.ones((6, 3, 8))).shape
    (4, 3, 8)
    """

    torch_facts = TorchFacts(
        "TransformerDecoder",
        slots=CHILDREN,
        layout=CHILDREN,
        settings=("num_layers",),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _torch_order = ("layers", "norm")

    def __init__(self, decoder_layer: nnx.Module, num_layers: int, norm: nnx.Module | None = None):
        where = "TransformerDecoder"
        if not isinstance(decoder_layer, nnx.Module):
            raise TypeError(f"{where}: decoder_layer must be an fnml layer, got {type(decoder_layer).__name__}")
        self.layers = _clones(decoder_layer, num_layers, where)
        self.num_layers = num_layers
        self.norm = _check_norm(norm, where)

    def __call__(
        self,
        tgt: jax.Array,
        memory: jax.Array,
        tgt_mask: jax.Array | None = None,
        memory_mask: jax.Array | None = None,
        tgt_key_padding_mask: jax.Array | None = None,
        memory_key_padding_mask: jax.Array | None = None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
    ) -> jax.Array:
        output = jnp.asarray(tgt)
        for layer in self.layers:
            output = layer(
                output,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                tgt_is_causal=bool(tgt_is_causal),
                memory_is_causal=memory_is_causal,
            )
        return output if self.norm is None else self.norm(output)


class Transformer(_TorchOrdered):
    """The encoder-decoder transformer of "Attention Is All You Need", torch's structure and init.

    PyTorch equivalent: ``torch.nn.Transformer(d_model=512, nhead=8, num_encoder_layers=6,
    num_decoder_layers=6, dim_feedforward=2048, dropout=0.1, activation=F.relu, custom_encoder=None,
    custom_decoder=None, layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True)``.

    ``encoder`` = TransformerEncoder(layer, num_encoder_layers, LayerNorm), ``decoder`` likewise; then,
    as torch's ``_reset_parameters``, every parameter with more than one dimension is redrawn from
    xavier_uniform (symmetric in fan-in / fan-out, so the ``(in, out)`` Linear kernels get torch's
    distribution). ``__call__(src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
    src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
    src_is_causal=None, tgt_is_causal=None, memory_is_causal=False)`` returns the decoder output.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from fnml import layers
    >>> model = layers.Transformer(8, 2, 1, 1, dim_feedforward=16, batch_first=True, rngs=nnx.Rngs(0))
    >>> mask = layers.Transformer.generate_square_subsequent_mask(4)
    >>> model.eval()(jnp.ones((3, 6, 8)), jnp.ones((3, 4, 8)), tgt_mask=mask).shape
    (3, 4, 8)
    """

    torch_facts = TorchFacts(
        "Transformer",
        slots=CHILDREN,
        layout=CHILDREN,
        settings=("d_model", "nhead", "batch_first"),
        capture=LOWERS_OP_BY_OP,
        autocast=False,
    )

    _torch_order = ("encoder", "decoder")

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable[[jax.Array], jax.Array] = "relu",
        custom_encoder: nnx.Module | None = None,
        custom_decoder: nnx.Module | None = None,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        where = "Transformer"
        _check_layer_args(
            d_model, nhead, dim_feedforward, dropout, layer_norm_eps, batch_first, norm_first, bias, where
        )
        settings = (d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first, norm_first, bias)
        kinds = {"dtype": dtype, "param_dtype": param_dtype}
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            encoder_layer = TransformerEncoderLayer(*settings, **kinds, rngs=rngs)
            encoder_norm = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kinds)
            self.encoder = TransformerEncoder(encoder_layer, num_encoder_layers, encoder_norm)
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            decoder_layer = TransformerDecoderLayer(*settings, **kinds, rngs=rngs)
            decoder_norm = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kinds)
            self.decoder = TransformerDecoder(decoder_layer, num_decoder_layers, decoder_norm)
        self._reset_parameters(rngs)
        self.d_model = d_model
        self.nhead = nhead
        self.batch_first = batch_first

    def _reset_parameters(self, rngs: nnx.Rngs) -> None:
        # torch: for p in self.parameters(): if p.dim() > 1: xavier_uniform_(p)
        for _, variable in nnx.iter_graph(self):
            if isinstance(variable, nnx.Param) and variable[...].ndim > 1:
                value = variable[...]
                variable[...] = _xavier_uniform(rngs.params(), value.shape, value.dtype)

    @staticmethod
    def generate_square_subsequent_mask(sz: int, dtype: Any = jnp.float32) -> jax.Array:
        """The causal float mask ``(sz, sz)``: 0 on and below the diagonal, -inf above it.

        PyTorch equivalent: ``torch.nn.Transformer.generate_square_subsequent_mask(sz, device=None,
        dtype=None)``.

        >>> from fnml import layers
        >>> print(layers.Transformer.generate_square_subsequent_mask(3))
        [[  0. -inf -inf]
         [  0.   0. -inf]
         [  0.   0.   0.]]
        """
        check_positive_int("sz", sz, where="generate_square_subsequent_mask")
        return jnp.triu(jnp.full((sz, sz), -jnp.inf, dtype), k=1)

    def __call__(
        self,
        src: jax.Array,
        tgt: jax.Array,
        src_mask: jax.Array | None = None,
        tgt_mask: jax.Array | None = None,
        memory_mask: jax.Array | None = None,
        src_key_padding_mask: jax.Array | None = None,
        tgt_key_padding_mask: jax.Array | None = None,
        memory_key_padding_mask: jax.Array | None = None,
        src_is_causal: bool | None = None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
    ) -> jax.Array:
        src, tgt = jnp.asarray(src), jnp.asarray(tgt)
        batch_axis = 0 if self.batch_first else 1
        if src.ndim == 3 and (tgt.ndim != 3 or src.shape[batch_axis] != tgt.shape[batch_axis]):
            raise ValueError(f"Transformer: the batch size of src {src.shape} and tgt {tgt.shape} must be equal")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ValueError(
                f"Transformer: the feature size of src {src.shape} and tgt {tgt.shape} must equal "
                f"d_model={self.d_model}"
            )
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(
            tgt,
            memory,
            tgt_mask=tgt_mask,
            memory_mask=memory_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
            tgt_is_causal=tgt_is_causal,
            memory_is_causal=memory_is_causal,
        )
