"""Recurrent layers in every form torch.export records as one ``aten.lstm.input`` /
``aten.gru.input`` node: LSTM and GRU, one or two layers, one or two directions, batch-first or
time-major, with and without initial states. Each returns every result (the sequence, ``h_n``
and for an LSTM ``c_n``), so each translated result is compared. ``RECURRENT`` maps a name to its
``MODULE:FN`` factory (the spec rides on ``interop_spec``) -- tests/test_no_torchscript.py builds
them TorchScript-free."""

from __future__ import annotations

import itertools

import torch
from torch import nn

FEATURES, HIDDEN = 6, 10


class Recurrent(nn.Module):
    def __init__(self, kind: str, layers: int, bidirectional: bool, batch_first: bool, initial: bool):
        super().__init__()
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.kind, self.batch_first, self.initial = kind, batch_first, initial
        self.rnn = cls(FEATURES, HIDDEN, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
        self.states = layers * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.initial:
            out, state = self.rnn(x)
        else:
            batch = x.shape[0] if self.batch_first else x.shape[1]
            h0 = torch.linspace(-0.5, 0.5, HIDDEN).expand(self.states, batch, HIDDEN).contiguous()
            out, state = self.rnn(x, (h0, h0 * 0.5) if self.kind == "lstm" else h0)
        return (out, *state) if self.kind == "lstm" else (out, state)


def _spec(batch_first: bool) -> dict:
    batch, time = (0, 1) if batch_first else (1, 0)
    shape = [0, 0, FEATURES]
    shape[batch], shape[time] = 2, 7
    return {"inputs": [{"name": "x", "shape": shape, "dtype": "float32",
                        "dynamic": {str(batch): {"name": "batch", "min": 1, "max": 8},
                                    str(time): {"name": "time", "min": 2, "max": 20}}}]}


RECURRENT: dict[str, str] = {}
for _kind, _layers, _bi, _bf, _init in itertools.product(("lstm", "gru"), (1, 2), (False, True), (True, False),
                                                        (False, True)):
    _name = f"{_kind}_{_layers}layer_{'bi' if _bi else 'uni'}_{'batch_first' if _bf else 'time_major'}" \
            f"{'_h0' if _init else ''}"

    def _factory(kind=_kind, layers=_layers, bi=_bi, bf=_bf, init=_init) -> nn.Module:
        torch.manual_seed(0)
        return Recurrent(kind, layers, bi, bf, init).eval()

    _factory.__name__ = _name
    _factory.interop_spec = _spec(_bf)
    globals()[_name] = _factory
    RECURRENT[_name] = f"{__name__}:{_name}"
