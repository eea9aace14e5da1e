"""Core ML variants, each through ``coremltools.optimize.coreml`` (no quantizer of interop's own):

* ``int8``: ``linear_quantize_weights``, symmetric int8 per output channel (iOS16
  ``constexpr_affine_dequantize``);
* ``int4``: ``linear_quantize_weights``, symmetric int4 in blocks of 32 (``int4:block=N``) along the
  input axis (iOS18 ``constexpr_blockwise_shift_scale``; the package's spec version is raised to
  iOS18). coremltools *skips* a weight whose input size is not a multiple of the block, with a log
  line only: interop gives those weights int4 per channel instead, and says which;
* ``palettize4/6/8``: ``palettize_weights``, k-means lookup table of 2^n fp16 values per tensor
  (iOS16 ``constexpr_lut_to_dense``), or one table per group of output channels (iOS18 grouped
  ``constexpr_lut_to_dense``) with ``palettize4:group=N`` or ``--deployment-target iOS18``;
* a gate-driven recipe (:mod:`interop.variants.recipe`) may keep named weights of int4 and
  palettize4/6 at int8 (``VariantContext.keep``);
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


def weights(model: Any, only: tuple[str, ...] = ()) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the constants a variant compresses (see the module doc); with ``only``
    (a recipe's probe), just those."""
    import coremltools.optimize.coreml as cto

    from interop.support.quiet import captured

    with captured():
        meta = cto.get_weights_metadata(model, weight_threshold=0)
    return {name: tuple(m.val.shape) for name, m in meta.items()
            if np.ndim(m.val) >= 2 and np.size(m.val) >= MIN_WEIGHT_ELEMENTS and np.asarray(m.val).dtype.kind == "f"
            and (not only or name in only)}


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


@register_variant("coreml", "int8", "coremltools.optimize.coreml.linear_quantize_weights (int8, per channel)",
                  recipe=True)
def int8(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
    """Weights a recipe keeps stay at the base package's precision."""
    model = _load(base)
    chosen = {n: s for n, s in weights(model, vctx.only).items() if n not in vctx.keep}
    compressed = _compress(model, {n: _linear("int8") for n in chosen}, "linear")
    _save(compressed, out)
    info = _summary(compressed, chosen, "fraction_int8")
    if vctx.keep:
        info["kept_float"] = sorted(vctx.keep)
    return info


def _ios(target: str) -> int:
    """``iOS17`` -> 17 (0 for anything else: an older form)."""
    text = str(target or "")
    return int(text[3:]) if text.startswith("iOS") and text[3:].isdigit() else 0


def _int4_config(shape: tuple[int, ...], block: int) -> Any:
    """Block-wise along the input axis when the blocks fit; coremltools *skips* a weight whose input
    size is not a multiple of the block (a log line only), so those are int4 per channel."""
    return _linear("int4", "per_channel") if shape_misfits(shape, block) else _linear("int4", "per_block", block)


@register_variant("coreml", "int4", "coremltools.optimize.coreml.linear_quantize_weights (int4, block 32, iOS18)",
                  recipe=True, smaller_blocks=(16, 8))
def int4(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
    block = vctx.options.get("block", 32)
    model = _load(base, IOS18_SPEC)
    chosen = weights(model, vctx.only)
    kept = [n for n in chosen if n in vctx.keep]
    configs = {n: _linear("int8") if n in kept else _int4_config(chosen[n], block) for n in chosen}
    compressed = _compress(model, configs, "linear")
    skipped = _uncompressed(compressed, [n for n in chosen if n not in kept])
    fallback = [n for n in chosen if n not in kept and shape_misfits(chosen[n], block)]
    if skipped:  # anything coremltools still skipped: int4 per channel
        configs.update({n: _linear("int4", "per_channel") for n in skipped})
        compressed = _compress(model, configs, "linear")
        fallback = sorted(set(fallback) | set(skipped))
    _save(compressed, out)
    info = _summary(compressed, chosen, "fraction_int4")
    info.update(deployment_target="iOS18", block_size=block)
    if kept:
        info["kept_int8"] = kept
    if fallback:
        info["per_channel_fallback"] = fallback
        info["note"] = (f"{len(fallback)} weight(s) whose input size is not a multiple of {block} are int4 per channel "
                        "(coremltools' block-wise pass skips them)")
    return info


def shape_misfits(shape: tuple[int, ...], block: int) -> bool:
    return len(shape) < 2 or shape[1] % block != 0


def _palettize(nbits: int):
    def make(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
        """Per tensor on older targets; grouped-channel lookup tables (iOS18) with ``group=N`` or a
        deployment target of iOS18 or later (16 output channels per table by default). Weights a
        recipe keeps are int8 (linear, per channel) instead."""
        import coremltools.optimize.coreml as cto

        group = vctx.options.get("group") or (16 if _ios(vctx.deployment_target) >= 18 else None)
        model = _load(base, IOS18_SPEC if group else None)
        chosen = weights(model, vctx.only)
        kept = [n for n in chosen if n in vctx.keep]
        if group:
            cfg = cto.OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_grouped_channel",
                                         group_size=group, channel_axis=0, weight_threshold=0)
        else:
            cfg = cto.OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_tensor", weight_threshold=0)
        compressed = _compress(model, {n: None if n in kept else cfg for n in chosen}, "palettize")
        if kept:
            compressed = _compress(compressed, {n: _linear("int8") if n in kept else None for n in chosen}, "linear")
        _save(compressed, out)
        info = _summary(compressed, chosen, f"fraction_{nbits}bit")
        if group:
            info.update(deployment_target="iOS18", group_size=group)
        if kept:
            info["kept_int8"] = kept
        return info

    return make


for _bits in (4, 6, 8):
    register_variant("coreml", f"palettize{_bits}",
                     f"coremltools.optimize.coreml.palettize_weights (k-means, {_bits} bits, per tensor; "
                     "grouped channels on iOS18)", recipe=_bits < 8)(_palettize(_bits))


@register_variant("coreml", "int8-static",
                  "coremltools.optimize.coreml.linear_quantize_activations (int8, iOS17) + linear_quantize_weights (int8)")
def int8_static(base: Path, out: Path, vctx: VariantContext) -> dict[str, Any]:
    import coremltools.optimize.coreml as cto

    from interop.support.quiet import captured
    from interop.targets.coreml.target import coreml_feed

    if not vctx.calibration:
        raise ExportError("int8-static needs calibration samples", hint="pass --calibration FILE.npz")
    model = _load(base)
    feeds = [coreml_feed(vctx.spec, s) for s in vctx.calibration]
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
