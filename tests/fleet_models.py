"""Tiny models for the build-many tests, as MODULE:FN factories (``tests.fleet_models:mlp_3``):
``mlp_<n>`` / ``conv_<n>`` / ``gru_<n>`` for any n (a zoo of distinct models), and the misbehaving
ones: ``hang`` never returns, ``hog`` allocates memory until stopped, ``crash`` aborts the process,
``gated`` waits for the file named by $FLEET_TEST_GATE (a run that is surely still going)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import torch
from torch import nn


class Mlp(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.a, self.b = nn.Linear(4, width), nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


class Conv(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, channels, 3, padding=1), nn.Linear(channels, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class Gru(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.gru, self.fc = nn.GRU(4, hidden, batch_first=True), nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gru(x)[0][:, -1])


INPUTS = {"mlp": "x:2x4", "conv": "x:1x3x8x8", "gru": "x:1x5x4"}
KINDS = {"mlp": Mlp, "conv": Conv, "gru": Gru}


def __getattr__(name: str):
    kind, _, n = name.partition("_")
    if kind not in KINDS or not n.isdigit():
        raise AttributeError(name)

    def factory() -> nn.Module:
        torch.manual_seed(int(n))
        return KINDS[kind](2 + int(n))

    return factory


def zoo(count: int) -> list[tuple[str, str]]:
    """``count`` distinct (factory, input) pairs, cycling through the kinds."""
    kinds = list(KINDS)
    return [(f"tests.fleet_models:{kinds[i % 3]}_{i}", INPUTS[kinds[i % 3]]) for i in range(count)]


def hang() -> nn.Module:
    threading.Event().wait()
    raise AssertionError("unreachable")


def hog() -> nn.Module:
    import numpy as np

    held = []
    while True:
        held.append(np.ones(8 * 1024 * 1024))  # 64 MB, touched


def crash() -> nn.Module:
    os.abort()


def gated() -> nn.Module:
    gate = Path(os.environ["FLEET_TEST_GATE"])
    while not gate.exists():
        time.sleep(0.05)  # polling a file the test creates: not a timing assumption
    torch.manual_seed(0)
    return Mlp(3)
