"""A zoo of real architectures, all built in code (no downloads), small configs, seeded random
weights: what interop's integration tests (tests/test_zoo.py) and scripts/coverage.py build.

Each zoo function returns ``(module in eval mode, --input strings, --dynamic strings)``::

    module, inputs, dynamic = zoo.bert()
    build(BuildConfig(model="tests.zoo:bert_model", inputs=inputs, dynamic=dynamic))

and each has a ``<name>_model`` factory for the CLI, carrying its spec, so no shape flags are
needed (``Entry.options`` lists any other settings a model needs)::

    interop build tests.zoo:bert_model --allow-trace-warnings --out /tmp/bert

Every model has a dynamic batch axis, and a dynamic sequence axis where the architecture allows
one. ``ZOO`` lists them all (name -> Entry); ``Entry.slow`` marks those left out of the default
test run. Configs keep ``initializer_range`` large enough that random outputs are not degenerate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn


@dataclass(frozen=True)
class Entry:
    """One zoo model: how to make it, and the spec it is built with."""

    name: str
    make: Callable[[], nn.Module]
    inputs: tuple[str, ...]
    dynamic: tuple[str, ...]
    slow: bool = False
    hf: bool = False
    options: tuple[tuple[str, Any], ...] = ()  # extra BuildConfig settings (CLI flags) it needs

    def config(self, **overrides: Any) -> Any:
        """The BuildConfig that builds this model."""
        from interop import BuildConfig

        settings = {"inputs": list(self.inputs), "dynamic": list(self.dynamic), **dict(self.options), **overrides}
        return BuildConfig(model=self.factory, **settings)

    def __call__(self) -> tuple[nn.Module, list[str], list[str]]:
        return self.module(), list(self.inputs), list(self.dynamic)

    def module(self) -> nn.Module:
        torch.manual_seed(0)
        return self.make().eval()

    @property
    def factory(self) -> str:
        """The ``MODULE:FN`` source for ``interop build``."""
        return f"{__name__}:{self.name}_model"

    def spec_json(self) -> dict[str, Any]:
        from interop.stages.spec import InputSpec, apply_dynamic, parse_dynamic, parse_input

        spec = InputSpec([parse_input(t) for t in self.inputs])
        for text in self.dynamic:
            apply_dynamic(spec, *parse_dynamic(text))
        return spec.to_json()


ZOO: dict[str, Entry] = {}


def zoo(inputs: list[str], dynamic: list[str], slow: bool = False, hf: bool = False, **options: Any):
    """Register ``make`` (returns the module) as zoo entry ``make.__name__``; the entry itself is
    the zoo function (returns the triple) and ``<name>_model`` the CLI factory."""

    def register(make: Callable[[], nn.Module]) -> Entry:
        entry = Entry(make.__name__, make, tuple(inputs), tuple(dynamic), slow, hf, tuple(options.items()))
        ZOO[entry.name] = entry

        def factory() -> nn.Module:
            return entry.module()

        factory.__name__ = f"{entry.name}_model"
        factory.interop_spec = entry.spec_json()  # the spec hint interop's loader reads
        globals()[factory.__name__] = factory
        return entry

    return register


# --- hand-written models --------------------------------------------------------------------


class ResidualCNN(nn.Module):
    """Conv-BN-ReLU stem, a residual block, max pool, global average pool, linear head."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(32, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        x = torch.relu(x + self.block(x))
        x = self.down(x)
        return self.head(x.mean(dim=(2, 3)))


@zoo(["image:2x3x32x32"], ["image:0=batch:1..16", "image:2=height:16..64", "image:3=width:16..64"])
def cnn() -> nn.Module:
    return _with_random_bn(ResidualCNN())


class LSTMClassifier(nn.Module):
    """Token ids -> embedding -> 2-layer bidirectional LSTM -> mean over time -> logits."""

    def __init__(self, vocab: int = 100, classes: int = 5):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.lstm = nn.LSTM(16, 24, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(48, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out.mean(dim=1))


@zoo(["tokens:2x12:int64:0..99"], ["tokens:0=batch:1..16", "tokens:1=seq:2..64"])
def lstm() -> nn.Module:
    return LSTMClassifier()


@zoo(["x:1x6x1:float32:0..10"], ["x:0=batch:1..64"])
def lstm_sum() -> nn.Module:
    """The ONNX/Core ML how-to's LSTM (samples/lstm_sum.pt's architecture), example batch 1:
    the dynamo exporter alone would specialise that axis to 1."""
    from samples.models import LSTMSum

    return LSTMSum()


@zoo(["image:2x3x64x64"], ["image:0=batch:1..8"], slow=True)
def mobilenet_v2() -> nn.Module:
    """samples/models.py's MobileNetV2 (the torchvision layout), narrow (width 0.35), 10 classes."""
    from samples.models import MobileNetV2

    return _with_random_bn(MobileNetV2(classes=10, width=0.35))


class GRUClassifier(nn.Module):
    """Float features (batch, time, 8) -> GRU -> last step -> logits."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.gru = nn.GRU(8, 32, batch_first=True)
        self.head = nn.Linear(32, classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(features)
        return self.head(out[:, -1])


@zoo(["features:2x10x8"], ["features:0=batch:1..16", "features:1=time:2..64"])
def gru() -> nn.Module:
    return GRUClassifier()


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    """Two-level U-Net: encoder, bottleneck, transposed-conv decoder with skip concatenations."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.enc1, self.enc2 = _double_conv(3, 8), _double_conv(8, 16)
        self.mid = _double_conv(16, 32)
        self.up2, self.dec2 = nn.ConvTranspose2d(32, 16, 2, stride=2), _double_conv(32, 16)
        self.up1, self.dec1 = nn.ConvTranspose2d(16, 8, 2, stride=2), _double_conv(16, 8)
        self.out = nn.Conv2d(8, classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(image)
        e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
        m = self.mid(nn.functional.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out(d1)


@zoo(["image:2x3x32x32"], ["image:0=batch:1..8"])
def unet() -> nn.Module:
    return _with_random_bn(UNet())


class MultiIO(nn.Module):
    """Two inputs (an image and a feature vector), two named outputs (a dict)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.mlp = nn.Sequential(nn.Linear(5, 8), nn.Tanh())
        self.classify = nn.Linear(16, 4)
        self.embed = nn.Linear(16, 6)

    def forward(self, image: torch.Tensor, extra: torch.Tensor) -> dict[str, torch.Tensor]:
        joint = torch.cat([self.conv(image).flatten(1), self.mlp(extra)], dim=1)
        return {"scores": self.classify(joint), "embedding": nn.functional.normalize(self.embed(joint), dim=-1)}


@zoo(["image:2x3x16x16", "extra:2x5"], ["image:0=batch:1..16", "extra:0=batch:1..16"])
def multi_io() -> nn.Module:
    return MultiIO()


class ScaledSwish(torch.autograd.Function):
    """A custom autograd Function whose forward is plain torch ops: x * sigmoid(beta x)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, beta: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.beta = beta
        return x * torch.sigmoid(beta * x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.beta * x)
        return grad * (s + ctx.beta * x * s * (1 - s)), None


class CustomFunctionMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 32), nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(ScaledSwish.apply(self.fc1(x), 1.5))


@zoo(["x:2x12"], ["x:0=batch:1..32"])
def custom_function() -> nn.Module:
    return CustomFunctionMLP()


class DiffSignal(nn.Module):
    """A signal model using torch.diff: first differences -> Conv1d -> pooled features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 8, 5, padding=2)
        self.head = nn.Linear(8, 3)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        d = torch.diff(signal, dim=-1)
        feats = torch.relu(self.conv(torch.cat([d, torch.diff(d, dim=-1, prepend=d[..., :1])], dim=1)))
        return self.head(feats.amax(dim=-1))


@zoo(["signal:2x1x32"], ["signal:0=batch:1..16", "signal:2=length:8..128"])
def diff() -> nn.Module:
    return DiffSignal()


def _with_random_bn(module: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so eval-mode BN is not the identity."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return module


# --- transformers models from small configs ------------------------------------------------


class TextLogits(nn.Module):
    """forward(input_ids, attention_mask) -> logits (or the field ``pick``) of a HF model."""

    def __init__(self, model: nn.Module, pick: str = "logits"):
        super().__init__()
        self.model, self.pick = model, pick

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(input_ids=input_ids, attention_mask=attention_mask), self.pick)


class IdsLogits(nn.Module):
    """forward(input_ids) -> logits of a HF causal LM."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


class PixelsLogits(nn.Module):
    """forward(pixel_values) -> logits (or ``pick``) of a HF vision model."""

    def __init__(self, model: nn.Module, pick: str = "logits"):
        super().__init__()
        self.model, self.pick = model, pick

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(pixel_values=pixel_values), self.pick)


TEXT = ["input_ids:2x8:int64:0..99", "attention_mask:2x8:int64:1..1"]
TEXT_DYN = ["input_ids:0=batch:1..8", "input_ids:1=seq:2..32", "attention_mask:0=batch:1..8",
            "attention_mask:1=seq:2..32"]
PIXELS_DYN = ["pixel_values:0=batch:1..8"]
SMALL_TEXT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@zoo(TEXT, TEXT_DYN, hf=True)
def bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(**SMALL_TEXT, max_position_embeddings=64, num_labels=3, initializer_range=0.2)
    return TextLogits(BertForSequenceClassification(config))


@zoo(["input_ids:2x8:int64:0..99"], ["input_ids:0=batch:1..8", "input_ids:1=seq:2..32"], hf=True)
def gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2, initializer_range=0.2)
    return IdsLogits(GPT2LMHeadModel(config))


@zoo(TEXT, TEXT_DYN, slow=True, hf=True)
def distilbert() -> nn.Module:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64,
                              num_labels=3, initializer_range=0.2)
    return TextLogits(DistilBertForSequenceClassification(config))


@zoo(TEXT, TEXT_DYN, slow=True, hf=True)
def t5_encoder() -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                      initializer_factor=1.0)
    return TextLogits(T5EncoderModel(config), pick="last_hidden_state")


@zoo(["pixel_values:2x3x32x32"], PIXELS_DYN, slow=True, hf=True)
def vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=32, patch_size=8, **{k: v for k, v in SMALL_TEXT.items() if k != "vocab_size"},
                       num_labels=10, initializer_range=0.2)
    return PixelsLogits(ViTForImageClassification(config))


@zoo(["pixel_values:2x3x32x32"], PIXELS_DYN, slow=True, hf=True)
def swin() -> nn.Module:
    from transformers import SwinConfig, SwinForImageClassification

    config = SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 2], num_heads=[2, 4], window_size=4,
                        num_labels=10, initializer_range=0.2)
    return PixelsLogits(SwinForImageClassification(config))


@zoo(["pixel_values:2x3x64x64"], PIXELS_DYN, slow=True, hf=True)
def segformer() -> nn.Module:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1],
                             hidden_sizes=[8, 16, 32, 64], num_attention_heads=[1, 1, 2, 4], decoder_hidden_size=32,
                             num_labels=4, initializer_range=0.2)
    return PixelsLogits(SegformerForSemanticSegmentation(config))


@zoo(["pixel_values:2x3x32x32"], PIXELS_DYN, slow=True, hf=True)
def convnext() -> nn.Module:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    config = ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10, initializer_range=0.2)
    return PixelsLogits(ConvNextForImageClassification(config))


@zoo(["pixel_values:2x3x32x32"], PIXELS_DYN, slow=True, hf=True)
def resnet() -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=10)
    return _with_random_bn(PixelsLogits(ResNetForImageClassification(config)))


class WhisperEncoderOnly(nn.Module):
    """forward(input_features) -> last_hidden_state of a Whisper encoder (log-mel frames)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_features).last_hidden_state


@zoo(["input_features:2x16x32"], ["input_features:0=batch:1..8"], slow=True, hf=True)
def whisper_encoder() -> nn.Module:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = WhisperConfig(num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=2,
                           encoder_ffn_dim=64, max_source_positions=16, init_std=0.2)
    return WhisperEncoderOnly(WhisperEncoder(config))


def names(fast_only: bool = False) -> list[str]:
    return [n for n, e in ZOO.items() if not (fast_only and e.slow)]
