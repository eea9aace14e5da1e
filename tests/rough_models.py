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


ROUGH: dict[str, tuple[str, list[str], list[str], dict[str, Any]]] = {}
