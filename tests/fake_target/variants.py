"""numpy-mlp's one compressed variant: its weights stored in fp16 (executed in fp32)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interop.variants import VariantContext, register_variant


@register_variant("numpy-mlp", "fp16", "numpy astype(float16)")
def fp16(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
    with np.load(base) as data:
        arrays = {k: (data[k] if k == "ops" else data[k].astype(np.float16)) for k in data.files}
    with open(out, "wb") as f:  # np.savez would append .npz to a name that does not end in it
        np.savez(f, **arrays)
    return {"note": "weights in fp16"}
