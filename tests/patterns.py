"""Real-world model patterns interop had not seen (issue 14), built in code with seeded random
weights: what tests/test_patterns.py and scripts/check_vs_build.py build. Each builder returns a
module in eval mode; ``PATTERNS`` lists (name, factory, inputs, dynamic, options, expected
outcome per target)."""

from __future__ import annotations

from typing import Any, NamedTuple

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


class Detection(NamedTuple):
    boxes: torch.Tensor
    scores: torch.Tensor


class GridDetector(nn.Module):
    """FPN/YOLO-style: two feature levels, a 1x1 head per level, grid decode (sigmoid offsets
    plus the cell's grid coordinates, times the stride), concatenated over levels; returns a
    namedtuple."""

    def __init__(self, anchors: int = 2, classes: int = 3):
        super().__init__()
        self.c3 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
        self.c4 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.lat = nn.Conv2d(16, 8, 1)
        self.heads = nn.ModuleList([nn.Conv2d(c, anchors * (4 + classes), 1) for c in (8, 16)])
        self.anchors, self.classes = anchors, classes

    def forward(self, image: torch.Tensor) -> Detection:
        p3 = self.c3(image)
        p4 = self.c4(p3)
        p3 = p3 + nn.functional.interpolate(self.lat(p4), scale_factor=2.0, mode="nearest")  # YOLOv5 upsample
        boxes, scores = [], []
        for feat, head, stride in ((p3, self.heads[0], 4), (p4, self.heads[1], 8)):
            b, _, h, w = feat.shape
            out = head(feat).view(b, self.anchors, 4 + self.classes, h, w).permute(0, 1, 3, 4, 2)
            gy, gx = torch.meshgrid(torch.arange(h, dtype=feat.dtype), torch.arange(w, dtype=feat.dtype), indexing="ij")
            grid = torch.stack([gx, gy], -1)
            xy = (out[..., :2].sigmoid() * 2 - 0.5 + grid) * stride
            wh = out[..., 2:4].exp().clamp(max=50) * stride
            boxes.append(torch.cat([xy, wh], -1).reshape(b, -1, 4))
            scores.append(out[..., 4:].sigmoid().reshape(b, -1, self.classes))
        return Detection(torch.cat(boxes, 1), torch.cat(scores, 1))


def grid_detector() -> nn.Module:
    torch.manual_seed(0)
    return GridDetector().eval()


class Denoiser(nn.Module):
    """diffusers-style: input and output are both called ``sample`` (returned as a dict)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, sample: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sample": sample - self.conv(sample)}


def denoiser() -> nn.Module:
    torch.manual_seed(0)
    return Denoiser().eval()


@torch.library.custom_op("interop_patterns::scaled_tanh", mutates_args=())
def scaled_tanh(x: torch.Tensor, scale: float) -> torch.Tensor:
    """A user op registered with torch.library: neither exporter nor coremltools knows it."""
    return torch.tanh(x) * scale


@scaled_tanh.register_fake
def _(x: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.empty_like(x)


class CustomOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_tanh(self.fc(x), 2.0)


def custom_op() -> nn.Module:
    torch.manual_seed(0)
    return CustomOp().eval()


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def quantized_mlp() -> nn.Module:
    """torch.ao.quantization.quantize_dynamic'd Linear layers (quantized::linear_dynamic)."""
    torch.manual_seed(0)
    return torch.ao.quantization.quantize_dynamic(MLP().eval(), {nn.Linear}, dtype=torch.qint8)


class Whitening(nn.Module):
    """torch.linalg: the inverse of a per-sample covariance."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cov = x.transpose(1, 2) @ x / x.shape[1] + torch.eye(x.shape[2])
        return torch.linalg.inv(cov)


def linalg_inv() -> nn.Module:
    return Whitening().eval()


class Cholesky(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cov = x.transpose(1, 2) @ x + torch.eye(x.shape[2])
        return torch.linalg.cholesky(cov)


def linalg_cholesky() -> nn.Module:
    return Cholesky().eval()


def diffusers_unet() -> nn.Module:
    """diffusers' UNet2DModel (tiny config, random weights): input and output both ``sample``."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    model = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                        block_out_channels=(32, 32), norm_num_groups=8,
                        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))

    class Denoise(nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = model

        def forward(self, sample: torch.Tensor) -> dict[str, torch.Tensor]:
            timestep = torch.full((sample.shape[0],), 10, dtype=torch.long)
            return {"sample": self.unet(sample, timestep).sample}

    return Denoise().eval()


def wav2vec2() -> nn.Module:
    """HF Wav2Vec2 (tiny config, random weights): raw audio in, hidden states out."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=2)  # feat_extract_norm="group": GroupNorm(C, C)

    class Audio(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Wav2Vec2Model(config)

        def forward(self, audio: torch.Tensor) -> torch.Tensor:
            return self.model(audio).last_hidden_state

    return Audio().eval()


class SizeUpsample(nn.Module):
    """FPN top-down path upsampling to the lateral's size (``size=lateral.shape[-2:]``): with
    flexible H/W coremltools cannot map it to a constant-scale upsample."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.lat = nn.Conv2d(3, 8, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        top = self.down(image)
        return self.lat(image) + nn.functional.interpolate(top, size=image.shape[-2:], mode="nearest")


def size_upsample() -> nn.Module:
    torch.manual_seed(0)
    return SizeUpsample().eval()


class GroupNormConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))


def group_norm() -> nn.Module:
    torch.manual_seed(0)
    return GroupNormConv().eval()


class PaddedEncoder(nn.Module):
    """nn.TransformerEncoder with src_key_padding_mask: in eval, PyTorch's fast path returns
    zeros at padded positions; a traced or exported graph computes values there."""

    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=True)

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        return self.encoder(tokens, src_key_padding_mask=padding)


def padded_encoder() -> nn.Module:
    torch.manual_seed(0)
    return PaddedEncoder().eval()


class ScriptedLoop(nn.Module):
    """For torch.jit.script: a loop appending inside a branch, which coremltools cannot read."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        for i in range(int(x.shape[0])):
            if bool(x[i].sum() > 0):
                parts.append(self.fc(x[i]))
            else:
                parts.append(x[i])
        return torch.stack(parts)


# name -> (MODULE:FN, --input, --dynamic, other settings): what scripts/check_vs_build.py builds
PATTERNS: dict[str, tuple[str, list[str], list[str], dict[str, Any]]] = {
    "stride_unet": ("tests.patterns:stride_unet", ["image:1x3x32x32"], ["image:2=height:16..128/8", "image:3=width:16..128/8"], {}),
    "grid_detector": ("tests.patterns:grid_detector", ["image:1x3x64x64"],
                      ["image:2=height:32..256/8", "image:3=width:32..256/8"], {}),
    "diffusers_unet": ("tests.patterns:diffusers_unet", ["sample:2x3x16x16"], ["sample:0=batch:1..4"],
                       {"allow_trace_warnings": True}),
    "wav2vec2": ("tests.patterns:wav2vec2", ["audio:2x1600"], ["audio:0=batch:1..4", "audio:1=samples:800..3200"], {}),
    "padded_encoder": ("tests.patterns:padded_encoder", ["tokens:2x6x16", "padding:2x6:bool"], [], {}),
    "fp16_overflow": ("tests.fixtures.models:explodes", ["x:2x4:float32:1..3"], [], {}),
    "custom_op": ("tests.patterns:custom_op", ["x:2x8"], ["x:0=batch:1..8"], {}),
    "quantized_mlp": ("tests.patterns:quantized_mlp", ["x:2x16"], [], {}),
    "linalg_inv": ("tests.patterns:linalg_inv", ["x:2x6x3"], [], {}),
    "linalg_cholesky": ("tests.patterns:linalg_cholesky", ["x:2x6x3"], [], {}),
    "bicubic": ("tests.patterns:bicubic", ["x:1x3x8x8"], [], {}),
    "size_upsample": ("tests.patterns:size_upsample", ["image:1x3x32x32"], ["image:2=height:16..64/16"], {}),
    "group_norm": ("tests.patterns:group_norm", ["x:2x3x8x8"], ["x:0=batch:1..4"], {}),
    "denoiser": ("tests.patterns:denoiser", ["sample:1x4x8x8"], [], {}),
    "vit_interpolated": ("tests.patterns:vit_interpolated", ["pixel_values:1x3x32x32"],
                         ["pixel_values:2=height:16..64/8", "pixel_values:3=width:16..64/8"], {}),
}


def vit_interpolated() -> nn.Module:
    """HF ViT with interpolate_pos_encoding=True: the position embeddings are resized (bicubic)
    to the image's patch grid, so H and W may vary."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, initializer_range=0.2)

    class Interpolated(nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = ViTModel(config, add_pooling_layer=False)

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.vit(pixel_values, interpolate_pos_encoding=True).last_hidden_state

    return Interpolated().eval()
