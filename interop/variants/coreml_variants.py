"""Core ML variants, each through ``coremltools.optimize.coreml`` (no quantizer of interop's own):

* ``int8``: ``linear_quantize_weights``, symmetric int8 per output channel (iOS16
  ``constexpr_affine_dequantize``);
* ``int4``: ``linear_quantize_weights``, symmetric int4 in blocks of 32 along the input axis (iOS18
  ``constexpr_blockwise_shift_scale``; the package's spec version is raised to iOS18). coremltools
  *skips* a weight whose input size is not a multiple of the block, with a log line only: interop
  finds those weights (still uncompressed after the block-wise pass) and quantizes them per
  channel instead, and says which;
* ``palettize4/6/8``: ``palettize_weights``, k-means lookup table of 2^n fp16 values per tensor
  (iOS16 ``constexpr_lut_to_dense``);
* ``int8-static``: ``linear_quantize_activations`` (iOS17 ``quantize`` / ``dequantize`` pairs)
  calibrated on the user's ``--calibration`` samples, then int8 weights. coremltools calibrates
  by running the model in the Core ML framework (macOS only); interop hands that one call
  (``ModelDebugger.predict_intermediate_outputs``) to its reference runtime instead.

Which weights: every constant of rank >= 2 with at least ``MIN_WEIGHT_ELEMENTS`` values (small
ones save nothing and cost accuracy), chosen by name (``op_name_configs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interop.errors import ExportError
from interop.variants import VariantContext, register_variant

MIN_WEIGHT_ELEMENTS = 512
IOS18_SPEC = 9


def _load(base: Path, min_spec: int | None = None) -> Any:
    """The base package as an MLModel (not compiled); its spec version raised to ``min_spec``."""
    import coremltools as ct

    from interop.support.quiet import captured

    with captured():
        model = ct.models.MLModel(str(base), skip_model_load=True)
        if min_spec and model.get_spec().specificationVersion < min_spec:
            spec = model.get_spec()
            spec.specificationVersion = min_spec
            model = ct.models.MLModel(spec, weights_dir=model.weights_dir, skip_model_load=True)
    return model


def weights(model: Any) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the constants a variant compresses (see the module doc)."""
    import coremltools.optimize.coreml as cto

    from interop.support.quiet import captured

    with captured():
        meta = cto.get_weights_metadata(model, weight_threshold=0)
    return {name: tuple(m.val.shape) for name, m in meta.items()
            if np.ndim(m.val) >= 2 and np.size(m.val) >= MIN_WEIGHT_ELEMENTS and np.asarray(m.val).dtype.kind == "f"}


def _compress(model: Any, configs: dict[str, Any], how: str) -> Any:
    import coremltools.optimize.coreml as cto

    from interop.support.quiet import captured

    config = cto.OptimizationConfig(op_name_configs=configs)
    with captured():
        if how == "palettize":
            return cto.palettize_weights(model, config)
        return cto.linear_quantize_weights(model, config)


def _save(model: Any, out: Path) -> None:
    from interop.support.quiet import captured

    with captured():
        model.save(str(out))


def _uncompressed(model: Any, names: list[str]) -> list[str]:
    """Those of ``names`` still stored as plain float constants in ``model``."""
    left = weights(model)
    return [n for n in names if n in left]


def _linear(dtype: str, granularity: str = "per_channel", block_size: int | None = None) -> Any:
    import coremltools.optimize.coreml as cto

    extra = {"block_size": block_size} if block_size else {}
    return cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype=dtype, granularity=granularity,
                                       weight_threshold=0, **extra)


def _summary(model: Any, chosen: dict[str, tuple[int, ...]], key: str) -> dict[str, Any]:
    total = sum(int(np.prod(s)) for s in chosen.values())
    left = _uncompressed(model, list(chosen))
    done = total - sum(int(np.prod(chosen[n])) for n in left)
    info: dict[str, Any] = {key: round(done / total, 4) if total else None, "weights": len(chosen)}
    if left:
        info["uncompressed"] = left
    if not chosen:
        info["note"] = f"no weight has {MIN_WEIGHT_ELEMENTS} values or more: nothing to compress"
    return info


@register_variant("coreml", "int8", "coremltools.optimize.coreml.linear_quantize_weights (int8, per channel)")
def int8(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
    model = _load(base)
    chosen = weights(model)
    compressed = _compress(model, {n: _linear("int8") for n in chosen}, "linear")
    _save(compressed, out)
    return _summary(compressed, chosen, "fraction_int8")


@register_variant("coreml", "int4", "coremltools.optimize.coreml.linear_quantize_weights (int4, block 32, iOS18)")
def int4(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
    model = _load(base, IOS18_SPEC)
    chosen = weights(model)
    blockwise = _compress(model, {n: _linear("int4", "per_block", 32) for n in chosen}, "linear")
    skipped = _uncompressed(blockwise, list(chosen))
    compressed = blockwise
    if skipped:  # coremltools skipped them (input size not a multiple of 32): per channel instead
        configs = {n: _linear("int4", "per_channel") if n in skipped else _linear("int4", "per_block", 32)
                   for n in chosen}
        compressed = _compress(model, configs, "linear")
    _save(compressed, out)
    info = _summary(compressed, chosen, "fraction_int4")
    info["deployment_target"] = "iOS18"
    if skipped:
        info["per_channel_fallback"] = skipped
        info["note"] = (f"{len(skipped)} weight(s) whose input size is not a multiple of 32 are int4 per channel "
                        "(coremltools' block-wise pass skips them)")
    return info


def _palettize(nbits: int):
    def make(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
        import coremltools.optimize.coreml as cto

        model = _load(base)
        chosen = weights(model)
        cfg = cto.OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_tensor", weight_threshold=0)
        compressed = _compress(model, {n: cfg for n in chosen}, "palettize")
        _save(compressed, out)
        return _summary(compressed, chosen, f"fraction_{nbits}bit")

    return make


for _bits in (4, 6, 8):
    register_variant("coreml", f"palettize{_bits}",
                     f"coremltools.optimize.coreml.palettize_weights (k-means, {_bits} bits, per tensor)")(_palettize(_bits))


@register_variant("coreml", "int8-static",
                  "coremltools.optimize.coreml.linear_quantize_activations (int8, iOS17) + linear_quantize_weights (int8)")
def int8_static(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
    import coremltools.optimize.coreml as cto

    from interop.support.quiet import captured
    from interop import targets

    if not vctx.calibration:
        raise ExportError("int8-static needs calibration samples", hint="pass --calibration FILE.npz")
    model = _load(base)
    feeds = [targets.get("coreml").feed(vctx.spec, s) for s in vctx.calibration]
    config = cto.OptimizationConfig(global_config=cto.experimental.OpActivationLinearQuantizerConfig(
        mode="linear_symmetric"))
    with captured(), _calibrate_with_reference_runtime(base):
        activated = cto.linear_quantize_activations(model, config, feeds)
    chosen = weights(activated)
    compressed = _compress(activated, {n: _linear("int8") for n in chosen}, "linear")
    _save(compressed, out)
    info = _summary(compressed, chosen, "fraction_int8")
    info.update(deployment_target="iOS17", calibration_samples=len(feeds))
    return info


def _calibrate_with_reference_runtime(base: Path):
    """coremltools' calibration runs the model in Core ML with its intermediate tensors as extra
    outputs; the reference runtime records every op output anyway: answer from there."""
    from unittest import mock

    from coremltools.optimize.coreml.experimental._model_debugger import ModelDebugger

    from interop.runtimes import mil

    loaded = mil.load_model(base)

    def predict_intermediate_outputs(self, inputs, intermediate_output_names, compute_units=None):
        outputs, trace = loaded.predict(inputs, intermediate=True)
        found = {n: np.asarray(trace[n]) for n in intermediate_output_names
                 if n in trace and isinstance(trace[n], np.ndarray) and trace[n].dtype.kind in "fiu"}
        return {**found, **outputs}

    return mock.patch.object(ModelDebugger, "predict_intermediate_outputs", predict_intermediate_outputs)
