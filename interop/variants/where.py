"""Where a compressed variant's error first grows past its gate.

The base artifact was verified against PyTorch; a variant is the same graph with compressed
weights (and, for the calibrated variants, quantized activations), and its tensors keep their
names. So every intermediate tensor of the variant is compared with the base artifact's tensor of
the same name on the failing sample, in program order, with the same metric as the gate (PSNR,
peak = max |base value|, and cosine): the first tensor below the gate is named, with the op that
computes it and, for Core ML, the decompression op (``constexpr_*``) its weight comes from.
Built on the localisation of :mod:`interop.stages.localise` (the reference runtime's
intermediate trace; ONNX Runtime with every node output exposed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interop.variants.gates import Gate


def where(target: Any, base: Path, variant: Path, feed: dict[str, np.ndarray], gate: Gate) -> str | None:
    """Best effort: a localisation that fails says nothing rather than failing the build."""
    try:
        return target.locate_departure(base, variant, feed, gate)  # the target's own (its measures module)
    except Exception:
        return None
