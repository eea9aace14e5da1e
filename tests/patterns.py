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


class StrideUNet(nn.Module):
    """A three-level U-Net whose skip concatenations need H and W to be multiples of 8."""

    def __init__(self):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())

        self.e1, self.e2, self.e3, self.mid = block(3, 8), block(8, 16), block(16, 16), block(16, 16)
        self.u3, self.d3 = nn.ConvTranspose2d(16, 16, 2, stride=2), block(32, 16)
        self.u2, self.d2 = nn.ConvTranspose2d(16, 16, 2, stride=2), block(32, 8)
        self.u1, self.d1 = nn.ConvTranspose2d(8, 8, 2, stride=2), block(16, 8)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pool = nn.functional.max_pool2d
        a = self.e1(image)
        b = self.e2(pool(a, 2))
        c = self.e3(pool(b, 2))
        m = self.mid(pool(c, 2))
        c = self.d3(torch.cat([self.u3(m), c], 1))
        b = self.d2(torch.cat([self.u2(c), b], 1))
        return self.out(self.d1(torch.cat([self.u1(b), a], 1)))


def stride_unet() -> nn.Module:
    torch.manual_seed(0)
    return StrideUNet().eval()
