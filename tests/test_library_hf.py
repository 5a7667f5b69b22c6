"""Hugging Face transformers models ported with ``interop.from_torch``: built from their own classes and
configs (tiny, random init, never a download), checked against the same torch model.

Each model is captured once on a batch of 2 x 7 tokens (ViT: 2 images) and checked, in float64:
- forward on another batch size and sequence length (3 x 9), every output field (``out.logits`` and
  ``out["logits"]``; the ``use_cache=True`` cache as its key/value arrays), relative to the output's scale;
- gradients of a loss over the outputs w.r.t. every parameter (next-token cross entropy for the LMs and
  T5, a masked loss over the hidden states for the encoders, cross entropy for ViT);
- 5 AdamW steps through fnml's own training API (``TrainState.create`` / ``make_train_step(loss_fn=...)``)
  against ``torch.optim.AdamW``: per-step loss and final parameters.

Float32 islands (the rule, stated once, as in the README): T5's RMSNorm computes its variance in float32
inside a float64 model, and Llama / Qwen2 / Mistral cast their RMSNorm and rotary embedding to float32. A
twin keeps those casts, so those models are held to float32 rounding (ISLAND_RTOL, relative) with the islands,
AND to float64 rounding (<= 1e-12) with the islands widened to float64 on both sides (``widened_islands``:
every float32 cast of the forward becomes a float64 one, for torch's run and for the capture alike), which
proves every other op to float64 rounding.

transformers imports torchvision; ``_torchvision`` makes that import work beside the CPU torch. Both are
imported at module top: without them the module fails, never skips.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import _torchvision  # noqa: F401 - before transformers, which imports torchvision
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from flax import nnx

from fnml import interop, losses, optim, parity, train

FORWARD_RTOL = 1e-12  # float64, relative to the output's scale
TRAIN_TOL = 1e-10  # float64 per-step loss and final parameters
ISLAND_RTOL = 1e-5  # float32 rounding: models with float32 islands inside a float64 model
FLOAT32_RTOL = 1e-5  # float32 models at working tolerance
VOCAB = 100
STEPS = 5
LR, WEIGHT_DECAY = 1e-2, 0.1

transformers.logging.set_verbosity_error()  # tiny configs: transformers' notes about special token ids


def _decoder_config(config_class):
    return config_class(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        attention_dropout=0.0,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )


def _encoder_config(config_class):
    return config_class(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=1,
    )


BUILDERS = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=VOCAB,
            n_positions=32,
            n_embd=16,
            n_layer=2,
            n_head=4,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=1,
        )
    ),
    "llama": lambda: transformers.LlamaForCausalLM(_decoder_config(transformers.LlamaConfig)),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(_decoder_config(transformers.Qwen2Config)),
    "mistral": lambda: transformers.MistralForCausalLM(_decoder_config(transformers.MistralConfig)),
    "bert": lambda: transformers.BertModel(_encoder_config(transformers.BertConfig)),
    "roberta": lambda: transformers.RobertaModel(_encoder_config(transformers.RobertaConfig)),
    "distilbert": lambda: transformers.DistilBertModel(
        transformers.DistilBertConfig(
            vocab_size=VOCAB,
            dim=16,
            n_layers=2,
            n_heads=4,
            hidden_dim=32,
            max_position_embeddings=32,
            dropout=0.0,
            attention_dropout=0.0,
            pad_token_id=0,
        )
    ),
    "t5": lambda: transformers.T5ForConditionalGeneration(
        transformers.T5Config(
            vocab_size=VOCAB,
            d_model=16,
            d_kv=4,
            d_ff=32,
            num_layers=2,
            num_heads=4,
            dropout_rate=0.0,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    ),
    "vit": lambda: transformers.ViTForImageClassification(
        transformers.ViTConfig(
            image_size=16,
            patch_size=8,
            num_channels=3,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=32,
            num_labels=5,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
    ),
}
KIND = {
    "gpt2": "lm",
    "llama": "lm",
    "qwen2": "lm",
    "mistral": "lm",
    "bert": "encoder",
    "roberta": "encoder",
    "distilbert": "encoder",
    "t5": "seq2seq",
    "vit": "image",
}
ISLANDS = {"llama", "qwen2", "mistral", "t5"}  # float32 casts inside the float64 forward
MEASURED: dict[str, dict[str, float]] = {}


# ----------------------------------------------------------------------------------------------------
# Inputs and losses (the same on both sides)
# ----------------------------------------------------------------------------------------------------


DIRECTION = np.random.default_rng(9).standard_normal(16)  # the encoders' loss projects hidden states (width 16)


def _inputs(name: str, batch: int, length: int, generator: torch.Generator) -> dict:
    """The model's keyword inputs: tokens with right padding in the first row (mask 0), or images."""
    if KIND[name] == "image":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=generator, dtype=torch.float64)}
    ids = torch.randint(3, VOCAB, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length - 2 :] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if KIND[name] == "seq2seq":
        inputs["decoder_input_ids"] = torch.randint(3, VOCAB, (batch, length - 2), generator=generator)
    return inputs


def _targets(name: str, inputs: dict) -> torch.Tensor:
    if KIND[name] == "image":
        return torch.arange(inputs["pixel_values"].shape[0]) % 5
    ids = inputs["decoder_input_ids"] if KIND[name] == "seq2seq" else inputs["input_ids"]
    return ids[:, 1:]


def _torch_loss(name: str, out, inputs: dict) -> torch.Tensor:
    """Next-token cross entropy (LMs, T5), a masked loss over the hidden states (encoders), CE (ViT)."""
    target = _targets(name, inputs)
    if KIND[name] == "encoder":
        # The pooler too, when the model has one: torch's AdamW skips a parameter whose grad is None.
        # The hidden states are projected on a fixed direction first: a loss of the LayerNorm output's plain
        # moments (sum(h), sum(h^2)) is constant in exact arithmetic, so the last layer's gradients would be
        # pure rounding noise, which Adam turns into lr-sized steps on each side.
        mask = inputs["attention_mask"].to(out.last_hidden_state.dtype)
        pooled = ((out.pooler_output - 0.5) ** 2).mean() if "pooler_output" in out else 0.0
        projected = out.last_hidden_state @ torch.as_tensor(DIRECTION)
        return (((projected - 0.5) ** 2) * mask).mean() + pooled
    if KIND[name] == "image":
        return F.cross_entropy(out.logits, target)
    logits = out.logits[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def _fnml_loss(name: str, out, inputs: dict, target: jax.Array) -> jax.Array:
    if KIND[name] == "encoder":
        mask = inputs["attention_mask"].astype(out.last_hidden_state.dtype)
        pooled = jnp.mean((out.pooler_output - 0.5) ** 2) if "pooler_output" in out else 0.0
        projected = out["last_hidden_state"] @ jnp.asarray(DIRECTION)
        return jnp.mean(((projected - 0.5) ** 2) * mask) + pooled
    if KIND[name] == "image":
        return losses.cross_entropy(out.logits, target)
    logits = out.logits[:, :-1]
    return losses.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def _jax(tree):
    return jax.tree.map(lambda t: jnp.asarray(t.numpy()), tree)


def _cache_arrays(cache) -> tuple:
    """torch's cache as the twin returns it: per layer (key, value), plus (cross key, cross value)."""
    if hasattr(cache, "cross_attention_cache"):
        own, cross = _cache_arrays(cache.self_attention_cache), _cache_arrays(cache.cross_attention_cache)
        return tuple(a + b for a, b in zip(own, cross))
    return tuple((layer.keys, layer.values) for layer in cache.layers)


def _rel(actual, expected) -> float:
    """max |actual - expected| / max |expected| over two matching trees of arrays."""
    pairs = list(zip(jax.tree.leaves(actual), [np.asarray(t.detach()) for t in jax.tree.leaves(expected)]))
    assert len(pairs) == len(jax.tree.leaves(expected))
    scale = max(float(np.max(np.abs(e))) for _, e in pairs)
    return max(float(np.max(np.abs(np.asarray(a) - e))) for a, e in pairs) / scale


# ----------------------------------------------------------------------------------------------------
# Widening the float32 islands to float64 (test only, both sides)
# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def widened_islands():
    """Every cast to float32 in a forward becomes a cast to float64 (``x.to(torch.float32)``, ``x.float()``):
    for torch's own run and for the capture alike, so a float64 model has no float32 island left."""
    original_to, original_float = torch.Tensor.to, torch.Tensor.float

    def to(self, *args, **kwargs):
        args = tuple(torch.float64 if a is torch.float32 else a for a in args)
        if kwargs.get("dtype") is torch.float32:
            kwargs["dtype"] = torch.float64
        return original_to(self, *args, **kwargs)

    torch.Tensor.to = to
    torch.Tensor.float = torch.Tensor.double
    try:
        yield
    finally:
        torch.Tensor.to, torch.Tensor.float = original_to, original_float


# ----------------------------------------------------------------------------------------------------
# The checks
# ----------------------------------------------------------------------------------------------------


@dataclass
class Ported:
    name: str
    model: torch.nn.Module
    twin: interop.TorchTwin
    widened: bool


def _port(name: str, *, widened: bool = False, dtype=torch.float64) -> Ported:
    torch.manual_seed(0)
    model = BUILDERS[name]().to(dtype)
    example = _inputs(name, 2, 7, torch.Generator().manual_seed(1))
    if dtype == torch.float32 and KIND[name] == "image":
        example = {k: v.float() for k, v in example.items()}
    with widened_islands() if widened else contextlib.nullcontext():
        twin = interop.from_torch(model, **example)
    return Ported(name, model, twin, widened)


def _check_forward(ported: Ported, rtol: float) -> float:
    """Eval forward on 3 x 9 (the example was 2 x 7): every output field, the cache's arrays included."""
    model, twin = ported.model.eval(), ported.twin.eval()
    inputs = _inputs(ported.name, 3, 9, torch.Generator().manual_seed(2))
    dtype = next(model.parameters()).dtype
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    with widened_islands() if ported.widened else contextlib.nullcontext(), torch.no_grad():
        expected = model(**inputs)
    out = nnx.jit(lambda m, batch: m(**batch))(twin, _jax(inputs))  # one compilation, not one per op
    assert type(out) is type(expected)
    assert list(out.keys()) == list(expected.keys())
    worst = 0.0
    for key, value in expected.items():
        value = _cache_arrays(value) if hasattr(value, "layers") or hasattr(value, "cross_attention_cache") else value
        assert out[key] is getattr(out, key)
        rel = _rel(out[key], value)
        assert rel <= rtol, f"{ported.name}: forward {key} rel diff {rel:.3g} > {rtol:g}"
        worst = max(worst, rel)
    return worst


def _check_gradients(ported: Ported, rtol: float) -> float:
    """Gradients of the loss w.r.t. every parameter (torch names; a tied parameter once per name)."""
    name, model, twin = ported.name, ported.model.train(), ported.twin.train()
    inputs = _inputs(name, 3, 9, torch.Generator().manual_seed(3))
    model.zero_grad()
    with widened_islands() if ported.widened else contextlib.nullcontext():
        _torch_loss(name, model(**inputs), inputs).backward()
    expected = {n: p.grad for n, p in model.named_parameters(remove_duplicate=False)}
    batch, target = _jax(inputs), jnp.asarray(_targets(name, inputs).numpy())
    gradient = nnx.grad(lambda m, b, t: _fnml_loss(name, m(**b), b, t), argnums=nnx.DiffState(0, nnx.Param))
    grads = nnx.jit(gradient)(twin, batch, target)  # one compilation, not one per op
    graphdef, _, rest = nnx.split(twin, nnx.Param, ...)
    by_name = interop.state_dict(nnx.merge(graphdef, grads, rest))
    actual = {n: by_name[n] for n in expected}
    rel = _rel(actual, expected)
    assert rel <= rtol, f"{name}: gradient rel diff {rel:.3g} > {rtol:g}"
    return rel


def _check_training(ported: Ported, tol: float) -> tuple[float, float]:
    """5 AdamW steps, torch.optim.AdamW against fnml's TrainState / make_train_step: per-step loss, final params."""
    name, model, twin = ported.name, ported.model.train(), ported.twin.train()
    generator = torch.Generator().manual_seed(4)
    batches = [_inputs(name, 4, 8, generator) for _ in range(STEPS)]
    start = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    torch_losses = []
    with widened_islands() if ported.widened else contextlib.nullcontext():
        for inputs in batches:
            opt.zero_grad()
            loss = _torch_loss(name, model(**inputs), inputs)
            loss.backward()
            opt.step()
            torch_losses.append(loss.item())

    def loss_fn(m, batch, target):
        return _fnml_loss(name, m(**batch), batch, target)

    state = train.TrainState.create(twin, optim.adamw(lr=LR, weight_decay=WEIGHT_DECAY))
    step = train.make_train_step(loss_fn=loss_fn)
    fnml_losses = []
    for inputs in batches:
        state, loss = step(state, _jax(inputs), jnp.asarray(_targets(name, inputs).numpy()))
        fnml_losses.append(float(loss))
    trained = interop.state_dict(state.model())
    loss_diff = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(fnml_losses, torch_losses))
    torch_sd = model.state_dict()
    assert list(trained) == list(torch_sd)
    diffs = {k: float(np.max(np.abs(trained[k] - torch_sd[k].numpy()), initial=0.0)) for k in torch_sd}
    worst = max(diffs, key=diffs.get)
    param_diff = diffs[worst]
    assert any(not torch.equal(start[k], torch_sd[k]) for k in torch_sd)  # the steps did train
    assert loss_diff <= tol, f"{name}: per-step loss diff {loss_diff:.3g} > {tol:g}"
    assert param_diff <= tol, f"{name}: final parameter diff {param_diff:.3g} > {tol:g} at {worst}"
    return loss_diff, param_diff


NAMES = list(BUILDERS)
# Also in float32: the twin and the torch model converted with .float(). (GPT-2's `.to(device)` records a
# dtype assertion, so its twin refuses .float(): port the float32 model instead.)
FLOAT32 = {"bert", "roberta", "vit"}


def _check_float32_forward(ported: Ported) -> float:
    """The twin and the torch model converted to float32 (``twin.float()``, torch's ``model.float()``): the
    eval forward at float32's working tolerance (relative to the output's scale). The torch model trained in
    place; it gets the twin's weights back first (the twin's own values did not move: training ran on a
    TrainState)."""
    weights = {k: torch.from_numpy(np.asarray(v)) for k, v in interop.state_dict(ported.twin).items()}
    ported.model.load_state_dict(weights)
    model, twin = ported.model.float().eval(), ported.twin.float().eval()
    inputs = _inputs(ported.name, 3, 9, torch.Generator().manual_seed(5))
    inputs = {k: v.float() if v.is_floating_point() else v for k, v in inputs.items()}
    with torch.no_grad():
        expected = model(**inputs)
    out = nnx.jit(lambda m, batch: m(**batch))(twin, _jax(inputs))
    main = "logits" if "logits" in expected else "last_hidden_state"
    assert out[main].dtype == jnp.float32
    rel = _rel(out[main], expected[main])
    assert rel <= FLOAT32_RTOL, f"{ported.name}: float32 forward rel diff {rel:.3g} > {FLOAT32_RTOL:g}"
    return rel


@pytest.mark.parametrize("name", NAMES)
def test_float64_forward_gradients_training(name):
    """Forward, gradients and 5 AdamW steps in float64 (models with float32 islands: to float32 rounding)."""
    started = time.perf_counter()
    ported = _port(name)
    forward_tol = ISLAND_RTOL if name in ISLANDS else FORWARD_RTOL
    train_tol = ISLAND_RTOL if name in ISLANDS else TRAIN_TOL
    MEASURED.setdefault(name, {})["forward"] = _check_forward(ported, forward_tol)
    MEASURED[name]["grad"] = _check_gradients(ported, forward_tol)
    MEASURED[name]["loss"], MEASURED[name]["params"] = _check_training(ported, train_tol)
    if name in FLOAT32:
        MEASURED[name]["float32"] = _check_float32_forward(ported)
    MEASURED[name]["seconds"] = time.perf_counter() - started


# `make test` widens Llama's islands (the rule proved on the decoder family: Qwen2 and Mistral share its code
# path); the other widened runs (T5 alone costs ~20 s: two more exports of an encoder-decoder) are in
# `make test-full`.
@pytest.mark.parametrize(
    "name", [n if n == "llama" else pytest.param(n, marks=pytest.mark.slow) for n in sorted(ISLANDS)]
)
def test_widened_islands_float64(name):
    """The same models with their float32 islands widened to float64 on both sides: float64 rounding."""
    ported = _port(name, widened=True)
    MEASURED.setdefault(f"{name} widened", {})["forward"] = _check_forward(ported, FORWARD_RTOL)
    MEASURED[f"{name} widened"]["grad"] = _check_gradients(ported, FORWARD_RTOL)
    loss, params = _check_training(ported, TRAIN_TOL)
    MEASURED[f"{name} widened"]["loss"], MEASURED[f"{name} widened"]["params"] = loss, params


@pytest.fixture(autouse=True, scope="module")
def _report_measured():
    """Print the measured differences at the end of the module (pytest -s shows them; the README cites them)."""
    yield
    for name, figures in MEASURED.items():
        print(f"\n{name:18s} " + "  ".join(f"{key} {value:.3g}" for key, value in figures.items()), end="")
    print()


# ----------------------------------------------------------------------------------------------------
# The lowering entries these models needed, each against torch in float64 (forward and gradient)
# ----------------------------------------------------------------------------------------------------


class MaskAndDiff(torch.nn.Module):
    """``&`` / ``|`` / ``^`` on bool tensors (aten.__and__ / __or__ / __xor__), ``torch.diff`` with prepend
    and append (aten.diff), and ``F.cross_entropy`` with its options (aten.cross_entropy_loss)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, x, a, b, target):
        h = self.proj(x)
        both, either, one = (a > 0) & (b > 0), (a > 0) | (b < 0), (a > 0) ^ (b > 0)
        h = h * both + 2 * h * either - 3 * h * one
        d1 = torch.diff(h, dim=-1, prepend=h[..., :1])
        d2 = torch.diff(h, n=2, dim=0, append=h[:1])
        loss = F.cross_entropy(h, target, ignore_index=2, label_smoothing=0.1)
        return d1, d2, loss, F.cross_entropy(h, target, reduction="sum")


def test_new_lowering_entries_match_torch_float64():
    torch.manual_seed(0)
    model = MaskAndDiff().double()
    generator = torch.Generator().manual_seed(5)

    def inputs(n):
        x = torch.randn(n, 4, generator=generator, dtype=torch.float64)
        a, b = torch.randn(n, 4, generator=generator), torch.randn(n, 4, generator=generator)
        return x, a, b, torch.randint(0, 4, (n,), generator=generator)

    twin = interop.from_torch(model, *inputs(3))
    names = {n for n, _ in twin.named_parameters()}
    assert {"proj.weight", "proj.bias"} <= names
    x, a, b, target = inputs(6)  # another batch size
    x.requires_grad_(True)
    expected = model(x, a, b, target)
    torch_total = sum(t.sum() for t in expected)
    torch_total.backward()
    out = twin(*_jax((x.detach(), a, b, target)))
    assert _rel(out, tuple(t.detach() for t in expected)) <= FORWARD_RTOL

    def total(m, xj):
        return sum(jnp.sum(t) for t in m(xj, *_jax((a, b, target))))

    grad_x = jax.grad(lambda xj: total(twin, xj))(jnp.asarray(x.detach().numpy()))
    assert _rel(grad_x, x.grad) <= FORWARD_RTOL
    grads = nnx.grad(lambda m: total(m, jnp.asarray(x.detach().numpy())), argnums=nnx.DiffState(0, nnx.Param))(twin)
    graphdef, _, rest = nnx.split(twin, nnx.Param, ...)
    by_name = interop.state_dict(nnx.merge(graphdef, grads, rest))
    assert _rel([by_name["proj.weight"], by_name["proj.bias"]], [model.proj.weight.grad, model.proj.bias.grad]) <= 1e-12


# ----------------------------------------------------------------------------------------------------
# Calling conventions: optional arguments, positional or by name, new structures captured on first use
# ----------------------------------------------------------------------------------------------------


def test_a_twin_takes_the_forwards_calling_conventions():
    ported = _port("gpt2")
    model, twin = ported.model.eval(), ported.twin.eval()
    inputs = _inputs("gpt2", 3, 9, torch.Generator().manual_seed(6))
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    params_before = [id(v) for _, v in nnx.iter_graph(twin) if isinstance(v, nnx.Param)]
    with torch.no_grad():
        cases = [
            ((ids,), {"attention_mask": mask}, model(ids, attention_mask=mask)),  # positional, as captured
            ((), {"input_ids": ids, "attention_mask": mask}, model(input_ids=ids, attention_mask=mask)),  # by name
            ((ids,), {}, model(ids)),  # the mask left out: no padding, as in torch
            ((ids,), {"attention_mask": None}, model(ids)),  # None: the forward's default
            ((ids,), {"labels": ids}, model(ids, labels=ids)),  # an argument the example lacked
        ]
    call = nnx.jit(lambda m, args, kwargs: m(*args, **kwargs))  # one compilation per structure, not per op
    for args, kwargs, expected in cases:
        out = call(twin, _jax(args), {k: None if v is None else _jax(v) for k, v in kwargs.items()})
        assert list(out.keys()) == list(expected.keys())
        assert _rel(out.logits, expected.logits) <= FORWARD_RTOL
        if "loss" in expected:
            assert abs(float(out.loss) - expected.loss.item()) <= 1e-12 * abs(expected.loss.item())
    # The same parameters throughout (the new captures read the twin's own nnx.Param objects).
    assert [id(v) for _, v in nnx.iter_graph(twin) if isinstance(v, nnx.Param)] == params_before
    # Tied embeddings: GPT-2's lm_head and wte are one parameter.
    assert twin.lm_head.weight is twin.transformer.wte.weight
    assert len(list(twin.parameters())) == len(list(model.parameters()))
    # The parity tools take the library's outputs (a ModelOutput holding a cache) and keyword inputs.
    report = parity.compare_forward(model, twin, (ids,), kwargs={"attention_mask": mask})
    assert [row.name for row in report.outputs][:2] == ["['logits']", "['cache'][0][0]"]
    assert max(row.max_rel_diff for row in report.outputs) <= FORWARD_RTOL
    batches = [({"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}, b["input_ids"][:, 1:])
               for b in (_inputs("gpt2", 4, 8, torch.Generator().manual_seed(s)) for s in (7, 8))]  # fmt: skip

    def next_token(out, target, cross_entropy):
        logits = out.logits[:, :-1]
        return cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

    trained = parity.compare_training(
        model.train(),
        torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY),
        lambda out, y: next_token(out, y, F.cross_entropy),
        twin.train(),
        optim.adamw(lr=LR, weight_decay=WEIGHT_DECAY),
        lambda out, y: next_token(out, y, losses.cross_entropy),
        batches,
    )
    assert trained.passed, trained


class OptionalMask(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, x, mask=None):
        if mask is not None:
            x = x * torch.linalg.svdvals(mask).sum()  # no lowering: capturing this call structure fails
        return self.proj(x)


def test_an_uncapturable_call_structure_lists_the_captured_signatures():
    twin = interop.from_torch(OptionalMask().double(), torch.ones(2, 4, dtype=torch.float64))
    assert twin(jnp.ones((3, 4))).shape == (3, 4)
    with pytest.raises(TypeError, match=r"captured for forward\(x\) and was called as forward\(x, mask\).*svdvals"):
        twin(jnp.ones((3, 4)), mask=jnp.ones((4, 4)))
    with pytest.raises(TypeError, match=r"forward\(x\).*called as forward\(x, mask\)"):
        twin(jnp.ones((3, 4)), jnp.ones((4, 4)))  # positional alike


def test_a_call_that_does_not_bind_names_the_captured_call():
    twin = interop.from_torch(OptionalMask().double(), torch.ones(2, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"captured for a call with 1 positional argument\(s\) and keyword\(s\) \[\]"):
        twin(jnp.ones((3, 4)), jnp.ones((3, 4)), jnp.ones((3, 4)))
