"""Rebuild the sample models deterministically (seeded init and training, no downloads).

    python scripts/make_samples.py            # the small, committed samples
    python scripts/make_samples.py --large    # also MobileNetV2 (~14 MB, built on first use)

Each sample is a traced TorchScript archive carrying its input spec as the ``interop.json`` extra file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from samples import models  # noqa: E402

SAMPLES = ROOT / "samples"
LABELS = ["tench", "goldfish", "great_white_shark", "tiger_shark", "hammerhead", "electric_ray", "stingray",
          "cock", "hen", "ostrich"]


def sum_dataset(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The how-to's data: 6 numbers in [0, 10); class int(sum / 20)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 6, 1, generator=g) * 10
    y = (x.sum(dim=(1, 2)) / 20).long().clamp(max=2)
    return x, y


def train_lstm(steps: int = 3000, seed: int = 0) -> tuple[torch.nn.Module, float]:
    torch.manual_seed(seed)
    model = models.LSTMSum()
    x, y = sum_dataset(4000, seed)
    xt, yt = sum_dataset(1000, seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(xt).argmax(1) == yt).float().mean())
    return model, accuracy


def save(model: torch.nn.Module, spec: dict, name: str, example: torch.Tensor) -> Path:
    torch.manual_seed(0)
    scripted = torch.jit.trace(model.eval(), example, check_trace=False)
    path = SAMPLES / f"{name}.pt"
    torch.jit.save(scripted, str(path), _extra_files={"interop.json": json.dumps(spec)})
    return path


def build_small() -> None:
    torch.set_num_threads(1)
    lstm, acc = train_lstm()
    save(lstm, models.spec_lstm() | {"test_accuracy": round(acc, 4)}, "lstm_sum", torch.rand(2, 6, 1) * 10)
    print(f"lstm_sum.pt: test accuracy {acc:.3f} on 1000 held-out sequences")
    torch.manual_seed(1)
    cnn = models.SmallCNN()
    _randomise_bn(cnn)
    save(cnn, models.spec_cnn(), "small_cnn", torch.rand(2, 3, 32, 32))
    torch.manual_seed(2)
    save(models.DigitNet(), models.spec_digit(), "digit_net", torch.rand(1, 1, 28, 28))
    print("small_cnn.pt, digit_net.pt: seeded random weights")


def build_large() -> None:
    torch.manual_seed(3)
    net = models.MobileNetV2(classes=len(LABELS))
    _randomise_bn(net)
    save(net, models.spec_mobilenet(LABELS), "mobilenet_v2", torch.rand(1, 3, 224, 224))
    (SAMPLES / "mobilenet_v2.labels.txt").write_text("\n".join(LABELS) + "\n")
    print("mobilenet_v2.pt: seeded random weights; an image classifier (ImageNet normalisation, 10 labels)")


def _randomise_bn(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so folding them is actually exercised."""
    g = torch.Generator().manual_seed(7)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", action="store_true", help="also build MobileNetV2")
    parser.add_argument("--only-large", action="store_true", help="build only MobileNetV2")
    args = parser.parse_args()
    if not args.only_large:
        build_small()
    if args.large or args.only_large:
        build_large()


if __name__ == "__main__":
    main()
