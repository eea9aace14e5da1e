"""The seed architectures, written here (torchvision cannot be installed on CPU-only machines).

Each ``build_*`` returns ``(module, spec)``: the module in eval mode and the input spec it carries
into its TorchScript archive (``interop.json`` extra file), so ``interop build samples/X.pt`` needs
no flags. ``scripts/make_samples.py`` turns them into the files in this folder.
"""

from __future__ import annotations

import torch
from torch import nn


class LSTMSum(nn.Module):
    """The ONNX/Core ML how-to's sequence classifier: 6 numbers in [0, 10) -> int(sum / 20)."""

    def __init__(self, hidden: int = 50, classes: int = 3):
        super().__init__()
        self.hidden = hidden
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.zeros(1, x.size(0), self.hidden)
        c0 = torch.zeros(1, x.size(0), self.hidden)
        out, _ = self.lstm(x, (h0, c0))
        return self.fc(out[:, -1, :])


class SmallCNN(nn.Module):
    """A small image model: 3x32x32 RGB -> 10 logits."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(image), 1))


class DigitNet(nn.Module):
    """The (1, 28, 28) -> 10 digit-classifier shape (MNIST-style LeNet)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5)
        self.conv2 = nn.Conv2d(8, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, digit: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(digit)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return torch.log_softmax(self.fc2(x), dim=1)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = [ConvBNReLU(cin, hidden, 1)] if expand != 1 else []
        layers += [ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018), the torchvision layout, written out."""

    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, classes: int = 1000, width: float = 1.0):
        super().__init__()
        cin = _make_divisible(32 * width)
        last = _make_divisible(1280 * max(1.0, width))
        layers: list[nn.Module] = [ConvBNReLU(3, cin, stride=2)]
        for t, c, n, s in self.SETTINGS:
            cout = _make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(ConvBNReLU(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(image), 1)
        return self.classifier(torch.flatten(x, 1))


def _batch(example: int, hi: int) -> dict:
    return {"0": {"name": "batch", "min": 1, "max": hi}}


def spec_lstm() -> dict:
    return {"inputs": [{"name": "x", "shape": [1, 6, 1], "dtype": "float32", "range": [0.0, 10.0],
                        "dynamic": _batch(1, 64)}], "outputs": ["logits"]}


def spec_cnn() -> dict:
    return {"inputs": [{"name": "image", "shape": [2, 3, 32, 32], "dtype": "float32", "dynamic": _batch(2, 32)}],
            "outputs": ["logits"]}


def spec_digit() -> dict:
    return {"inputs": [{"name": "digit", "shape": [1, 1, 28, 28], "dtype": "float32", "range": [0.0, 1.0],
                        "dynamic": _batch(1, 64)}], "outputs": ["log_probs"]}


IMAGENET_NORMALISATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "pixel_scale": 255.0}


def spec_mobilenet(labels: list[str]) -> dict:
    """An image classifier: raw RGB pixels in, ImageNet normalisation folded in, class labels."""
    return {"inputs": [{"name": "image", "shape": [1, 3, 224, 224], "dtype": "float32", "dynamic": _batch(1, 16)}],
            "outputs": ["logits"], "image": {"input": "image", **IMAGENET_NORMALISATION}, "labels": labels}
