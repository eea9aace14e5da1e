"""The Core ML target's ``interop bench``: interop's reference runtime per sample everywhere, the
Core ML framework's latency on macOS, and the artifact's metadata."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from interop.errors import first_line
from interop.support.timing import measure


def coreml_metadata(path: Path) -> dict[str, str]:
    from interop.support.quiet import captured
    from interop.runtimes.mil.loader import _package_paths, _read_spec

    with captured():
        spec = _read_spec(_package_paths(path)[0])
    return dict(spec.description.metadata.userDefined)


def bench_coreml(path: Path, spec: Any, sample: dict[str, Any], warmup: int, runs: int, slow_runs: int) -> dict[str, Any]:
    """interop-mil's time per sample everywhere; the Core ML framework's latency on macOS."""
    from interop.support.quiet import captured
    from interop.runtimes.coreml import native_available

    feed = _coreml_feed(path, spec, sample)
    out: dict[str, Any] = {"path": str(path)}
    try:
        from interop.runtimes import mil

        with captured():
            loaded = mil.load_model(path)
        out["interop-mil"] = measure(lambda: loaded.predict(feed), min(warmup, 1), slow_runs).to_json()
    except Exception as exc:
        out["interop-mil"] = {"skipped": f"cannot run: {first_line(exc)}"}
    if native_available():
        try:
            import coremltools as ct

            model = ct.models.MLModel(str(path))  # Core ML's default compute units (all)
            native = _native_feed(path, feed)
            out["coreml"] = {"compute_units": "all", **measure(lambda: model.predict(native), warmup, runs).to_json()}
        except Exception as exc:
            out["coreml"] = {"skipped": f"Core ML cannot run it: {first_line(exc)}"}
    else:
        out["coreml"] = {"skipped": f"the Core ML framework runs on macOS only (this is {platform.system()})"}
    return out


def _coreml_feed(path: Path, spec: Any, sample: dict[str, Any]) -> dict[str, Any]:
    """What Core ML is fed: integer inputs as int32; an image input one picture (batch 1)."""
    import numpy as np

    meta = coreml_metadata(path)
    image = json.loads(meta["interop.image"])["input"] if meta.get("interop.image") else None
    feed = {}
    for t in spec.inputs:
        value = sample[t.name]
        if t.dtype.startswith(("int", "uint")):
            value = value.astype(np.int32)
        if t.name == image:
            value = value[:1]
        feed[t.name] = value
    return feed


def _native_feed(path: Path, feed: dict[str, Any]) -> dict[str, Any]:
    """Core ML takes an image input as a picture: (1, C, H, W) pixels -> PIL image."""
    meta = coreml_metadata(path)
    image = json.loads(meta["interop.image"])["input"] if meta.get("interop.image") else None
    if image is None:
        return feed
    import numpy as np
    from PIL import Image

    pixels = np.clip(np.round(feed[image][0]), 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels.transpose(1, 2, 0) if pixels.shape[0] == 3 else pixels[0])
    return {**feed, image: picture}
