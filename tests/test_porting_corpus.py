"""The porting corpus: models written the way PyTorch users write them, ported with ``interop.from_torch``.

Each model is our own small rewrite of a well-known public design (nanoGPT, BERT, UNet, DCGAN, MobileNetV2,
DenseNet, word_language_model, VAE, ResNet, GCN, super_resolution, fast_neural_style, ...), keeping the
constructs that stop a symbolic tracer: asserts, Python branches on sizes and flags, buffers sliced by
sizes, ``len``, factories with sizes, ``.to(device)``, ``view(*shape)``, modules built in forward,
``torch.fx.wrap`` helpers, tied and frozen parameters, named nested Sequentials.

For each model: the twin is captured on a batch of 3 and checked on a batch of 5 in eval mode (float64,
relative to the output's scale, <= 1e-12), then trained 5 steps side by side with torch (float64 per-step
loss and final parameters and buffers <= 1e-10; dropout p=0 where masks would differ).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from fnml import interop, optim, parity, train

FORWARD_RTOL = 1e-12
TRAIN_TOL = 1e-10


# ----------------------------------------------------------------------------------------------------
# Helpers the models call (a torch.fx.wrap-ed function and a plain user function)
# ----------------------------------------------------------------------------------------------------


def scaled_residual(x, y, alpha):
    """A user function called from forward."""
    return x + alpha * y


@torch.fx.wrap
def wrapped_norm(x):
    """A torch.fx.wrap-ed helper (fx keeps it opaque; the capture runs it)."""
    return x / (x.pow(2).mean(dim=-1, keepdim=True) + 1e-6).sqrt()


# ----------------------------------------------------------------------------------------------------
# 1. nanoGPT-style GPT: asserts, tied head, causal mask buffer sliced by T, arange(T), .device
# ----------------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, block_size, dropout):
        super().__init__()
        assert n_embd % n_head == 0
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head, self.n_embd = n_head, n_embd
        self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = self.attn_dropout(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size, dropout):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.ModuleDict(
            dict(c_fc=nn.Linear(n_embd, 4 * n_embd), c_proj=nn.Linear(4 * n_embd, n_embd), act=nn.GELU())
        )

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        m = self.mlp
        return x + m.c_proj(m.act(m.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.0):
        super().__init__()
        self.block_size = block_size
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab_size, n_embd),
                wpe=nn.Embedding(block_size, n_embd),
                drop=nn.Dropout(dropout),
                h=nn.ModuleList([Block(n_embd, n_head, block_size, dropout) for _ in range(n_layer)]),
                ln_f=nn.LayerNorm(n_embd),
            )
        )
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT

    def forward(self, idx):
        device = idx.device
        b, t = idx.size()
        assert t <= self.block_size, f"Cannot forward sequence of length {t}, block size is only {self.block_size}"
        pos = torch.arange(0, t, dtype=torch.long, device=device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


# ----------------------------------------------------------------------------------------------------
# 2. BERT-style encoder: attention mask, view(*new_shape), position_ids buffer sliced, pooler
# ----------------------------------------------------------------------------------------------------


class BertSelfAttention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.num_attention_heads, self.attention_head_size = heads, hidden // heads
        self.all_head_size = hidden
        self.query, self.key, self.value = (
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, hidden),
        )

    def transpose_for_scores(self, x):
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        return x.view(*new_x_shape).permute(0, 2, 1, 3)

    def forward(self, hidden_states, attention_mask):
        q = self.transpose_for_scores(self.query(hidden_states))
        k = self.transpose_for_scores(self.key(hidden_states))
        v = self.transpose_for_scores(self.value(hidden_states))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        probs = nn.Softmax(dim=-1)(scores + attention_mask)  # a module built inside forward
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        new_shape = context.size()[:-2] + (self.all_head_size,)
        return context.view(*new_shape)


class BertLayer(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.attention = BertSelfAttention(hidden, heads)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, 2 * hidden)
        self.output = nn.Linear(2 * hidden, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x, mask):
        x = self.attn_norm(x + self.attention(x, mask))
        return self.out_norm(x + self.output(F.gelu(self.intermediate(x))))


class BertEncoder(nn.Module):
    def __init__(self, vocab=13, hidden=8, heads=2, layers=1, max_positions=10):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(max_positions).expand((1, -1)), persistent=False)
        self.layer = nn.ModuleList([BertLayer(hidden, heads) for _ in range(layers)])
        self.pooler = nn.Linear(hidden, hidden)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        seq_length = input_ids.size(1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros(input_ids.size(), dtype=torch.long, device=input_ids.device)
        position_ids = self.position_ids[:, :seq_length]
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        x = self.norm(x + self.token_type_embeddings(token_type_ids))
        extended = attention_mask[:, None, None, :].to(dtype=x.dtype)
        extended = (1.0 - extended) * -10000.0
        for layer in self.layer:
            x = layer(x, extended)
        return x, torch.tanh(self.pooler(x[:, 0]))


# ----------------------------------------------------------------------------------------------------
# 3. UNet: F.pad computed from sizes, cat of skip connections, ConvTranspose2d, BatchNorm2d
# ----------------------------------------------------------------------------------------------------


class DoubleConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.double_conv = nn.Sequential(  # one conv-BN-ReLU of the two (keeps the test's compile short)
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.double_conv(x)


class Up(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(cin, cout)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        diffY = x2.size()[2] - x1.size()[2]
        diffX = x2.size()[3] - x1.size()[3]
        x1 = F.pad(x1, [diffX // 2, diffX - diffX // 2, diffY // 2, diffY - diffY // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class UNet(nn.Module):
    def __init__(self, n_channels=2, n_classes=3):
        super().__init__()
        self.inc = DoubleConv(n_channels, 4)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(4, 8))
        self.up1 = Up(8, 4)
        self.outc = nn.Conv2d(4, n_classes, kernel_size=1)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        return self.outc(self.up1(x2, x1))


# ----------------------------------------------------------------------------------------------------
# 4. DCGAN generator: ConvTranspose2d stack, `if input.is_cuda and self.ngpu > 1`
# ----------------------------------------------------------------------------------------------------


class DCGANGenerator(nn.Module):
    def __init__(self, ngpu=1, nz=4, ngf=4, nc=2):
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 2, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, input):
        if input.is_cuda and self.ngpu > 1:
            output = nn.parallel.data_parallel(self.main, input, range(self.ngpu))
        else:
            output = self.main(input)
        return output


# ----------------------------------------------------------------------------------------------------
# 5. MobileNetV2 inverted residual blocks with ReLU6 and depthwise convs
# ----------------------------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetTiny(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.features = nn.Sequential(InvertedResidual(3, 4, 2, 1), InvertedResidual(4, 4, 1, 2))
        self.classifier = nn.Sequential(nn.Dropout(0.0), nn.Linear(4, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ----------------------------------------------------------------------------------------------------
# 6. DenseNet: named nested Sequential(OrderedDict), add_module, ModuleDict block, cat of features
# ----------------------------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.add_module("norm1", nn.BatchNorm2d(cin))
        self.add_module("relu1", nn.ReLU(inplace=True))
        self.add_module("conv1", nn.Conv2d(cin, growth, 3, padding=1, bias=False))

    def forward(self, features):
        prev = torch.cat(features, 1)
        return self.conv1(self.relu1(self.norm1(prev)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers, cin, growth):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth))

    def forward(self, init_features):
        features = [init_features]
        for name, layer in self.items():  # noqa: B007 - as DenseNet writes it
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNetTiny(nn.Module):
    def __init__(self, growth=2, num_classes=3):
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict([("conv0", nn.Conv2d(2, 4, 3, padding=1, bias=False)), ("norm0", nn.BatchNorm2d(4))])
        )
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("denseblock1", DenseBlock(2, 4, growth))
        self.features.add_module(
            "transition1",
            nn.Sequential(
                OrderedDict(
                    [
                        ("norm", nn.BatchNorm2d(8)),
                        ("relu", nn.ReLU(inplace=True)),
                        ("conv", nn.Conv2d(8, 4, 1, bias=False)),
                        ("pool", nn.AvgPool2d(2, stride=2)),
                    ]
                )
            ),
        )
        self.classifier = nn.Linear(4, num_classes)

    def forward(self, x):
        out = F.relu(self.features(x), inplace=True)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.classifier(torch.flatten(out, 1))


# ----------------------------------------------------------------------------------------------------
# 7. word_language_model RNNModel: LSTM, tied decoder, carried hidden state, weight.new_zeros
# ----------------------------------------------------------------------------------------------------


class RNNModel(nn.Module):
    def __init__(self, ntoken=12, ninp=6, nhid=6, nlayers=2, dropout=0.0, tie_weights=True):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        self.nhid, self.nlayers = nhid, nlayers

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output).view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))


# ----------------------------------------------------------------------------------------------------
# 8. Fine-tuning: frozen backbone (requires_grad=False), new head
# ----------------------------------------------------------------------------------------------------


class FineTune(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        for p in self.backbone.parameters():
            p.requires_grad = False
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.backbone(x))


# ----------------------------------------------------------------------------------------------------
# 9. VAE: randn_like reparameterisation, several outputs, view(-1, 16)
# ----------------------------------------------------------------------------------------------------


class VAE(nn.Module):
    def __init__(self, noise=1.0):
        super().__init__()
        self.noise = noise
        self.fc1, self.fc21, self.fc22 = nn.Linear(16, 8), nn.Linear(8, 2), nn.Linear(8, 2)
        self.fc3, self.fc4 = nn.Linear(2, 8), nn.Linear(8, 16)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + self.noise * eps * std

    def forward(self, x):
        h1 = F.relu(self.fc1(x.view(-1, 16)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = self.reparameterize(mu, logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


# ----------------------------------------------------------------------------------------------------
# 10. ResNet BasicBlocks: downsample Sequential, out += identity, AdaptiveAvgPool2d, torch.flatten
# ----------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNetTiny(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        down = nn.Sequential(nn.Conv2d(4, 8, 1, 2, bias=False), nn.BatchNorm2d(8))
        self.layer2 = nn.Sequential(BasicBlock(4, 8, 2, down))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * BasicBlock.expansion, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ----------------------------------------------------------------------------------------------------
# 11. GCN: own nn.Parameter weights, torch.mm with an adjacency input, dropout in F form
# ----------------------------------------------------------------------------------------------------


class GraphConvolution(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        stdv = 1.0 / math.sqrt(out_features)
        self.weight.data.uniform_(-stdv, stdv)
        self.bias.data.uniform_(-stdv, stdv)

    def forward(self, input, adj):
        return torch.mm(adj, torch.mm(input, self.weight)) + self.bias


class GCN(nn.Module):
    def __init__(self, nfeat=5, nhid=4, nclass=3, dropout=0.0):
        super().__init__()
        self.gc1, self.gc2 = GraphConvolution(nfeat, nhid), GraphConvolution(nhid, nclass)
        self.dropout = dropout

    def forward(self, x, adj):
        x = F.relu(self.gc1(x, adj))
        x = F.dropout(x, self.dropout, training=self.training)
        return F.log_softmax(self.gc2(x, adj), dim=1)


# ----------------------------------------------------------------------------------------------------
# 13. super_resolution: PixelShuffle
# ----------------------------------------------------------------------------------------------------


class SuperResolutionNet(nn.Module):
    def __init__(self, upscale_factor=2):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(1, 8, (5, 5), (1, 1), (2, 2))
        self.conv2 = nn.Conv2d(8, 4, (3, 3), (1, 1), (1, 1))
        self.conv3 = nn.Conv2d(4, upscale_factor**2, (3, 3), (1, 1), (1, 1))
        self.pixel_shuffle = nn.PixelShuffle(upscale_factor)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        return self.pixel_shuffle(self.conv3(x))


# ----------------------------------------------------------------------------------------------------
# 14. pytorch/examples mnist CNN: F.max_pool2d, dropout modules, torch.flatten, log_softmax
# ----------------------------------------------------------------------------------------------------


class MnistNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, 1)
        self.conv2 = nn.Conv2d(4, 4, 3, 1)
        self.dropout1 = nn.Dropout(0.0)
        self.dropout2 = nn.Dropout(0.0)
        self.fc1 = nn.Linear(4 * 4 * 4, 8)
        self.fc2 = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


# ----------------------------------------------------------------------------------------------------
# 15. mnist_rnn: LSTM over image rows, reshape(-1, 12, 12), output[:, -1, :]
# ----------------------------------------------------------------------------------------------------


class MnistRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(input_size=12, hidden_size=8, batch_first=True)
        self.batchnorm = nn.BatchNorm1d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, input):
        input = input.reshape(-1, 12, 12)
        output, hidden = self.rnn(input)
        return F.log_softmax(self.fc(self.batchnorm(output[:, -1, :])), dim=1)


# ----------------------------------------------------------------------------------------------------
# 16. time_sequence_prediction: LSTMCell loop over input.split, zeros(B, 51)-style state, future steps
# ----------------------------------------------------------------------------------------------------


class Sequence(nn.Module):
    def __init__(self, hidden=6):
        super().__init__()
        self.hidden = hidden
        self.lstm1 = nn.LSTMCell(1, hidden)
        self.lstm2 = nn.LSTMCell(hidden, hidden)
        self.linear = nn.Linear(hidden, 1)

    def forward(self, input, future=0):
        outputs = []
        h_t = torch.zeros(input.size(0), self.hidden, dtype=input.dtype)
        c_t = torch.zeros(input.size(0), self.hidden, dtype=input.dtype)
        h_t2 = torch.zeros(input.size(0), self.hidden, dtype=input.dtype)
        c_t2 = torch.zeros(input.size(0), self.hidden, dtype=input.dtype)
        for input_t in input.split(1, dim=1):
            h_t, c_t = self.lstm1(input_t, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        for i in range(future):  # noqa: B007 - as time_sequence_prediction writes it
            h_t, c_t = self.lstm1(output, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        return torch.cat(outputs, dim=1)


# ----------------------------------------------------------------------------------------------------
# 17. fast_neural_style TransformerNet: ReflectionPad2d, InstanceNorm2d, interpolate(scale_factor)
# ----------------------------------------------------------------------------------------------------


class ConvLayer(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(cin, cout, kernel_size, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class UpsampleConvLayer(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride, upsample=None):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(cin, cout, kernel_size, stride)

    def forward(self, x):
        if self.upsample:
            x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class StyleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = ConvLayer(2, 4, 3, 1)
        self.in1 = nn.InstanceNorm2d(4, affine=True)
        self.conv2 = ConvLayer(4, 4, 3, 2)
        self.in2 = nn.InstanceNorm2d(4, affine=True)
        self.deconv1 = UpsampleConvLayer(4, 2, 3, 1, upsample=2)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        return self.deconv1(y)


# ----------------------------------------------------------------------------------------------------
# 18. SqueezeNet Fire modules: cat of two expands, MaxPool2d(ceil_mode=True)
# ----------------------------------------------------------------------------------------------------


class Fire(nn.Module):
    def __init__(self, inplanes, squeeze, expand1x1, expand3x3):
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNetTiny(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(2, 4, kernel_size=3, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(4, 2, 2, 2),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.0), nn.Conv2d(4, num_classes, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


# ----------------------------------------------------------------------------------------------------
# 19. EfficientNet MBConv: SiLU, squeeze-excitation, stochastic depth with bernoulli_ (p=0 here)
# ----------------------------------------------------------------------------------------------------


def stochastic_depth(x, p, training):
    if not training or p == 0.0:
        return x
    survival = 1.0 - p
    noise = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(survival)
    return x * noise.div_(survival)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels, squeeze):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
        self.activation, self.scale_activation = nn.SiLU(), nn.Sigmoid()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class MBConv(nn.Module):
    def __init__(self, channels=4, expand=2, p=0.0):
        super().__init__()
        hidden = channels * expand
        self.block = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.SiLU(),
            SqueezeExcitation(hidden, 2),
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.p = p

    def forward(self, x):
        return x + stochastic_depth(self.block(x), self.p, self.training)


class EfficientTiny(nn.Module):
    def __init__(self, p=0.0):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.SiLU())
        self.blocks = nn.Sequential(MBConv(p=p))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


# ----------------------------------------------------------------------------------------------------
# 20. An MLP written with Python: len, ModuleList loop, branch on an index, .dtype, .to, fx.wrap, helper
# ----------------------------------------------------------------------------------------------------


class PythonicMLP(nn.Module):
    def __init__(self, sizes=(4, 6, 6, 3)):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("scale", torch.ones(sizes[-1]), persistent=False)

    def forward(self, x):
        n = x.shape[0]  # len(x) would fix the batch size: Python's len() must return an int
        x = x.to(self.layers[0].weight.dtype).to(x.device)
        for i, layer in enumerate(self.layers):
            y = layer(x)
            if i % 2 == 0 and y.shape[-1] == x.shape[-1]:
                y = scaled_residual(y, x, 0.5)
            x = torch.tanh(wrapped_norm(y)) if i < len(self.layers) - 1 else y
        if self.training:
            self.steps += 1
        bias = torch.zeros(n, x.size(1), dtype=x.dtype) + 0.1
        return x * self.scale + bias


# ----------------------------------------------------------------------------------------------------
# 21. Conv1d + GRU classifier: an (x, h0) input, batch-first GRU, Conv1d over time
# ----------------------------------------------------------------------------------------------------


class ConvGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, padding=1)
        self.gru = nn.GRU(4, 5, batch_first=True)
        self.out = nn.Linear(5, 2)

    def forward(self, x, h0):
        features = F.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)  # (B, T, C) -> (B, C, T) -> (B, T, C)
        output, h_n = self.gru(features, h0)
        return self.out(output[:, -1]), h_n


# ----------------------------------------------------------------------------------------------------
# 22. VGG-style: Sequential features, AdaptiveAvgPool2d((2, 2)), Dropout/Linear classifier
# ----------------------------------------------------------------------------------------------------


class VGGTiny(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.ReLU(True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.ReLU(True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(16, 8), nn.ReLU(True), nn.Dropout(0.0), nn.Linear(8, num_classes))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# ----------------------------------------------------------------------------------------------------
# The corpus table
# ----------------------------------------------------------------------------------------------------


def _images(channels, size):
    return lambda b, g: ((torch.randn(b, channels, size, size, generator=g, dtype=torch.float64),), {})


def _tokens(vocab, length):
    return lambda b, g: ((torch.randint(0, vocab, (b, length), generator=g),), {})


def _bert_inputs(b, g):
    ids = torch.randint(1, 13, (b, 6), generator=g)
    mask = torch.ones(b, 6, dtype=torch.long)
    mask[:, -2:] = 0
    return (ids,), {"attention_mask": mask}


def _lm_inputs(b, g):
    tokens = torch.randint(0, 12, (5, b), generator=g)  # (T, B): sequence first, as word_language_model
    hidden = (
        torch.randn(2, b, 6, generator=g, dtype=torch.float64),
        torch.randn(2, b, 6, generator=g, dtype=torch.float64),
    )
    return (tokens, hidden), {}


def _gcn_inputs(b, g):
    nodes = b + 3
    adj = torch.rand(nodes, nodes, generator=g, dtype=torch.float64)
    adj = adj / adj.sum(dim=1, keepdim=True)
    return (torch.randn(nodes, 5, generator=g, dtype=torch.float64), adj), {}


def _gru_inputs(b, g):
    return (
        torch.randn(b, 6, 3, generator=g, dtype=torch.float64),
        torch.randn(1, b, 5, generator=g, dtype=torch.float64),
    ), {}


def _sequence_inputs(b, g):
    return (torch.randn(b, 4, generator=g, dtype=torch.float64),), {"future": 2}


@dataclass
class Case:
    id: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int, torch.Generator], tuple[tuple, dict]]
    constructs: str
    optimizer: str = "sgd"
    expect_training_reads: bool | None = None
    extra: dict = field(default_factory=dict)


CORPUS = [
    Case(
        "gpt",
        GPT,
        _tokens(11, 6),
        "assert on T, tied lm_head, mask buffer sliced [:T,:T], arange(T), .device, ModuleDict",
    ),
    Case(
        "bert",
        BertEncoder,
        _bert_inputs,
        "attention-mask kwarg, view(*new_shape), position_ids[:, :T] (non-persistent), nn.Softmax built in forward",
    ),
    Case("unet", UNet, _images(2, 9), "F.pad from sizes (odd 9x9 input), cat skips, ConvTranspose2d, BatchNorm2d"),
    Case(
        "dcgan_generator",
        DCGANGenerator,
        lambda b, g: ((torch.randn(b, 4, 1, 1, generator=g, dtype=torch.float64),), {}),
        "ConvTranspose2d stack, `if input.is_cuda and self.ngpu > 1`",
    ),
    Case(
        "mobilenet_v2_blocks", MobileNetTiny, _images(3, 8), "ReLU6, depthwise groups, residual branch on a Python flag"
    ),
    Case(
        "densenet_block",
        DenseNetTiny,
        _images(2, 8),
        "Sequential(OrderedDict), add_module, ModuleDict block, cat(features)",
    ),
    Case("lstm_lm_tied", RNNModel, _lm_inputs, "2-layer LSTM, tied decoder, (x, (h0, c0)) input, view(-1, ntoken)"),
    Case(
        "frozen_backbone",
        FineTune,
        _images(2, 6),
        "requires_grad=False backbone, AdamW(weight_decay=0.1)",
        optimizer="adamw",
    ),
    Case(
        "vae",
        lambda: VAE(noise=0.0),
        lambda b, g: ((torch.rand(b, 1, 4, 4, generator=g, dtype=torch.float64),), {}),
        "randn_like reparameterisation (noise 0 for parity), 3 outputs",
    ),
    Case(
        "resnet_basicblock",
        ResNetTiny,
        _images(2, 8),
        "BasicBlock, downsample Sequential, out += identity, flatten(x, 1)",
    ),
    Case("gcn", GCN, _gcn_inputs, "own nn.Parameter, torch.mm with adjacency input, F.dropout(training=self.training)"),
    # 12. word_language_model's TransformerModel: in tests/test_library_vision.py, as written (causal mask).
    Case("super_resolution", SuperResolutionNet, _images(1, 6), "PixelShuffle"),
    Case("mnist_cnn", MnistNet, _images(1, 12), "F.max_pool2d, Dropout modules, torch.flatten, log_softmax"),
    Case("mnist_rnn", MnistRNN, _images(1, 12), "batch-first LSTM, reshape(-1, 12, 12), output[:, -1, :], BatchNorm1d"),
    Case(
        "time_sequence",
        Sequence,
        _sequence_inputs,
        "LSTMCell loop over split(1, dim=1), zeros(B, H), future kwarg loop",
    ),
    Case(
        "fast_neural_style",
        StyleNet,
        _images(2, 8),
        "ReflectionPad2d, InstanceNorm2d(affine), interpolate(scale_factor=2)",
    ),
    Case("squeezenet_fire", SqueezeNetTiny, _images(2, 13), "Fire modules, MaxPool2d(ceil_mode=True), conv classifier"),
    Case(
        "efficientnet_mbconv",
        EfficientTiny,
        _images(2, 6),
        "SiLU, squeeze-excitation, stochastic depth (bernoulli_) off at p=0",
    ),
    Case(
        "pythonic_mlp",
        PythonicMLP,
        lambda b, g: ((torch.randn(b, 4, generator=g, dtype=torch.float64),), {}),
        "len(self.layers), ModuleList loop, branch on index/shape, .to(dtype/device), fx.wrap, user function, "
        "buffer += 1 in training, non-persistent buffer",
    ),
    Case("conv1d_gru", ConvGRU, _gru_inputs, "Conv1d, batch-first GRU with h0 input, (out, h_n) outputs"),
    Case("vgg", VGGTiny, _images(2, 8), "Sequential features, AdaptiveAvgPool2d((2, 2)), classifier"),
]


# ----------------------------------------------------------------------------------------------------
# The checks
# ----------------------------------------------------------------------------------------------------


def _torch_loss(out):
    """A loss over every float output: sum of mean((y - 0.5)^2)."""
    leaves = [t for t in _torch_leaves(out) if t.is_floating_point()]
    return sum(((t - 0.5) ** 2).mean() for t in leaves)


def _torch_leaves(out):
    if isinstance(out, (tuple, list)):
        return [leaf for item in out for leaf in _torch_leaves(item)]
    return [out]


def _fnml_loss(out):
    leaves = [t for t in jax.tree.leaves(out) if jnp.issubdtype(t.dtype, jnp.floating)]
    return sum(jnp.mean((t - 0.5) ** 2) for t in leaves)


def _to_jax(tree):
    if isinstance(tree, dict):
        return {k: _to_jax(v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_to_jax(v) for v in tree)
    if isinstance(tree, torch.Tensor):
        return jnp.asarray(tree.numpy())
    return tree


def _optimizers(case, model):
    if case.optimizer == "adamw":
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=0.01, weight_decay=0.1), optim.adamw(lr=0.01, weight_decay=0.1)
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), optim.sgd(lr=0.05, momentum=0.9)


def _build(case):
    torch.manual_seed(0)
    model = case.build().double()
    generator = torch.Generator().manual_seed(1)
    example_args, example_kwargs = case.inputs(3, generator)
    return model, interop.from_torch(model, *example_args, **example_kwargs), generator


def _forward_rel_diff(model, twin, args, kwargs):
    report = parity.compare_forward(model, twin, args, kwargs=kwargs)
    return report.max_rel_diff


def _train_side_by_side(case, model, twin, generator, steps=5):
    """5 steps of the same loop in torch and fnml; returns (max per-step loss diff, max final tensor diff)."""
    batches = [case.inputs(4, generator) for _ in range(steps)]
    model.train()
    twin.train()
    torch_opt, fnml_tx = _optimizers(case, model)
    torch_losses = []
    for args, kwargs in batches:
        torch_opt.zero_grad()
        loss = _torch_loss(model(*args, **kwargs))
        loss.backward()
        torch_opt.step()
        torch_losses.append(loss.item())

    def loss_fn(m, args, kwargs):
        return _fnml_loss(m(*args, **kwargs))

    state = train.TrainState.create(twin, fnml_tx)
    step = train.make_train_step(loss_fn=loss_fn)
    fnml_losses = []
    for args, kwargs in batches:
        state, loss = step(state, _to_jax(args), _to_jax(kwargs))
        fnml_losses.append(float(loss))
    trained = state.model()
    loss_diff = max(abs(a - b) for a, b in zip(torch_losses, fnml_losses))
    torch_sd = model.state_dict()
    fnml_sd = interop.state_dict(trained)
    assert list(torch_sd) == list(fnml_sd)
    tensor_diff = max(float(np.max(np.abs(fnml_sd[k] - torch_sd[k].numpy()), initial=0.0)) for k in torch_sd)
    return loss_diff, tensor_diff, trained


MEASURED: dict[str, tuple[float, float, float]] = {}


@pytest.mark.parametrize("case", CORPUS, ids=[case.id for case in CORPUS])
def test_port(case):
    model, twin, generator = _build(case)
    # The twin prints like the torch model: same child names, in torch's order.
    assert [name for name, _ in model.named_children()] == [
        line.split(")")[0].strip(" (") for line in str(twin).splitlines()[1:-1] if line.startswith("  (")
    ]
    # Eval mode, another batch size than the example's (5 vs 3), float64.
    model.eval()
    twin.eval()
    args, kwargs = case.inputs(5, generator)
    rel = _forward_rel_diff(model, twin, args, kwargs)
    assert rel <= FORWARD_RTOL, f"{case.id}: eval forward rel diff {rel:.3g}"
    # 5 training steps side by side.
    loss_diff, tensor_diff, _ = _train_side_by_side(case, model, twin, generator)
    MEASURED[case.id] = (rel, loss_diff, tensor_diff)
    assert loss_diff <= TRAIN_TOL, f"{case.id}: per-step loss diff {loss_diff:.3g}"
    assert tensor_diff <= TRAIN_TOL, f"{case.id}: final parameter/buffer diff {tensor_diff:.3g}"
