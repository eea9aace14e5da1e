"""Real-world model patterns interop had not seen (issue 14), built in code with seeded random
weights: what tests/test_patterns.py and scripts/check_vs_build.py build. Each builder returns a
module in eval mode; ``PATTERNS`` lists (name, factory, inputs, dynamic, options, expected
outcome per target)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Bicubic(nn.Module):
    """Bicubic upsampling: ONNX Resize(cubic) has it, coremltools has no translation."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(self.conv(x), scale_factor=2.0, mode="bicubic", align_corners=False)


def bicubic() -> nn.Module:
    torch.manual_seed(0)
    return Bicubic().eval()
