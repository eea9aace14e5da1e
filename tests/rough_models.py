"""Models of the classes issue 29 found still tripping interop (each written for its class, seeded
weights): what tests/test_rough_edges.py builds and scripts/check_vs_build.py adds to its table.
``ROUGH`` lists (factory, inputs, dynamic, options) like tests/patterns.py's ``PATTERNS``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TextClassifier(nn.Module):
    """Token ids -> mean embedding -> class logits: a classifier built with --labels and a dynamic batch."""

    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(100, 16), nn.Linear(16, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(ids).mean(dim=1))


def text_classifier() -> nn.Module:
    torch.manual_seed(0)
    return TextClassifier().eval()




class StaticUnpackAttention(nn.Module):
    """ViT-style self-attention: ``q, k, v`` unpacked along a static axis (3) of a fused projection;
    the sequence length is dynamic."""

    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, c))


def static_unpack_attention() -> nn.Module:
    torch.manual_seed(0)
    return StaticUnpackAttention().eval()


class DynamicUnpack(nn.Module):
    """Unpacks along the *dynamic* axis: the trace bakes the number of pieces, wrong at other lengths."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([row * (i + 1) for i, row in enumerate(x)]).sum(dim=0)


def dynamic_unpack() -> nn.Module:
    return DynamicUnpack().eval()


class LengthLoop(nn.Module):
    """A recurrent cell stepped by a Python loop over the (dynamic) sequence length: the trace
    unrolls the example's length, and the outputs stacked from it do not fit another length."""

    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, outs = x.new_zeros(x.shape[0], 8), []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            outs.append(h)
        return torch.stack(outs, dim=1) + x.sum(dim=-1, keepdim=True)


def length_loop() -> nn.Module:
    torch.manual_seed(0)
    return LengthLoop().eval()


ROUGH: dict[str, tuple[str, list[str], list[str], dict[str, Any]]] = {
    "static_unpack_attention": ("tests.rough_models:static_unpack_attention", ["x:2x8x16"], ["x:1=seq:4..32"], {}),
    "dynamic_unpack": ("tests.rough_models:dynamic_unpack", ["x:3x4"], ["x:0=n:2..8"], {}),
    "length_loop": ("tests.rough_models:length_loop", ["x:2x8x4"], ["x:1=length:4..64"], {}),
    "text_classifier": ("tests.rough_models:text_classifier", ["ids:2x8:int64:0..99"], ["ids:0=batch:1..4"], {}),
}
