"""Export a causal LM in its two cache forms: the past/present ONNX model (Optimum /
onnxruntime-genai convention, plus ``genai_config.json``) and the stateful Core ML package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from interop import patches
from interop.errors import ExportError, first_line

from .wrappers import PastPresentLM, StatefulLM, cache_geometry, causal_mask, io_names

ONNX_OPSET = 18
TRACE_PAST, TRACE_QUERY = 3, 2
"""Example sizes the export traces at: a non-empty past and a query longer than one token (the
attention code of transformers takes another branch for a single-token query)."""


def export_onnx(model: Any, path: Path, opset: int | None = None) -> tuple[dict[str, Any], list[Path]]:
    """Write the past/present ONNX model to ``path`` (over 2 GB: its weights in ``<path>.data``);
    returns its report entry and the files beside it. The exporter never serializes the weights
    (``onnx_weights.weights_apart``): they are streamed into the artifact one tensor at a time."""
    import shutil

    import torch

    geo = cache_geometry(model)
    wrapper = PastPresentLM(model).eval()
    ins, outs = io_names(geo["layers"])
    total = TRACE_PAST + TRACE_QUERY
    dtype = model.get_input_embeddings().weight.dtype
    args = (torch.zeros(1, TRACE_QUERY, dtype=torch.int64), torch.ones(1, total, dtype=torch.int64),
            torch.arange(TRACE_PAST, total).unsqueeze(0),
            *[torch.zeros(1, geo["kv_heads"], TRACE_PAST, geo["head_dim"], dtype=dtype) for _ in ins[3:]])
    dyn = {"input_ids": {0: "batch_size", 1: "sequence_length"},
           "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
           "position_ids": {0: "batch_size", 1: "sequence_length"},
           "logits": {0: "batch_size", 1: "sequence_length"}}
    dyn.update({n: {0: "batch_size", 2: "past_sequence_length"} for n in ins[3:]})
    dyn.update({n: {0: "batch_size", 2: "total_sequence_length"} for n in outs[1:]})
    opset = opset or ONNX_OPSET
    raw = path.parent / "raw-onnx" / path.name
    raw.parent.mkdir()
    try:
        _export_raw(wrapper, args, raw, ins, outs, dyn, opset)
        external = _write_artifact(raw, path)
    except Exception as exc:
        raise ExportError(f"the past/present ONNX export failed: {first_line(exc)}",
                          hint="run with --debug for the traceback") from exc
    finally:
        shutil.rmtree(raw.parent, ignore_errors=True)
    entry = {"exporter": "torchscript", "opset": opset, "cache": "past/present", "layers": geo["layers"],
             "external_data": external, "inputs": ins[:3] + ["past_key_values.{i}.key|value"],
             "outputs": ["logits", "present.{i}.key|value"]}
    return entry, [path.with_name(path.name + ".data")] if external else []


def _export_raw(wrapper: Any, args: tuple, raw: Path, ins: list[str], outs: list[str], dyn: dict, opset: int) -> None:
    """The TorchScript export to ``raw``, its weights in ``<raw>.data``."""
    import onnx
    import torch

    from interop.support.memory import release
    from interop.targets.onnx import weights as onnx_weights

    with torch.no_grad(), onnx_weights.weights_apart() as held:
        torch.onnx.export(wrapper, args, str(raw), input_names=ins, output_names=outs, dynamic_axes=dyn,
                          opset_version=opset, dynamo=False)
    if held.params:
        model = onnx.load(str(raw))
        onnx_weights.attach(model, held, onnx_weights.DataFile(raw.with_name(raw.name + ".data")))
        onnx.save_model(model, str(raw))
        del held, model
        release()


def _write_artifact(raw: Path, path: Path) -> bool:
    """One self-contained .onnx, or (over protobuf's 2 GB) .onnx + .onnx.data; True for the latter."""
    import onnx

    from interop.targets.onnx import weights as onnx_weights
    from interop.targets.onnx.target import EXTERNAL_DATA_BYTES

    model = onnx.load(str(raw), load_external_data=False)
    return onnx_weights.write(model, path, raw.parent, path.name + ".data", EXTERNAL_DATA_BYTES)


def write_genai_config(folder: Path, model: Any, onnx_name: str, max_context: int) -> Path:
    """``genai_config.json`` beside the ONNX model, so onnxruntime-genai can load the folder."""
    from .genai_config import genai_type

    geo = cache_geometry(model)
    config = model.config
    eos = getattr(config, "eos_token_id", None)
    bos = getattr(config, "bos_token_id", None)
    data = {"model": {
        "bos_token_id": bos if bos is not None else 0, "context_length": int(max_context),
        "eos_token_id": eos if eos is not None else 0, "pad_token_id": getattr(config, "pad_token_id", None) or 0,
        "type": genai_type(getattr(config, "model_type", None)), "vocab_size": geo["vocab"],
        "decoder": {"session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                    "filename": onnx_name, "head_size": geo["head_dim"], "hidden_size": geo["hidden"],
                    "num_attention_heads": geo["heads"], "num_hidden_layers": geo["layers"],
                    "num_key_value_heads": geo["kv_heads"],
                    "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                               "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                               "past_value_names": "past_key_values.%d.value"},
                    "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                                "present_value_names": "present.%d.value"}}},
        "search": {"do_sample": False, "max_length": int(max_context), "num_beams": 1, "num_return_sequences": 1,
                   "past_present_share_buffer": False, "early_stopping": True, "min_length": 0,
                   "repetition_penalty": 1.0, "temperature": 1.0, "top_k": 1, "top_p": 1.0}}
    path = folder / "genai_config.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def convert_coreml(model: Any, path: Path, max_context: int, precision: str,
                   write_offset: int = 0, fp32_ops: Any = ()) -> dict[str, Any]:
    """Write the stateful (iOS18) Core ML package to ``path``; returns its report entry. ``fp32_ops``:
    ops kept in fp32 in an fp16 package (generation/precision.py)."""
    from interop.targets.coreml.precision import compute_precision

    precision = compute_precision(precision)

    try:
        wrapper, traced = trace_stateful(model, max_context, write_offset)
        mlmodel = _convert(traced, wrapper, max_context, precision, fp32_ops)
        mlmodel.save(str(path))
    except Exception as exc:
        raise ExportError(f"the stateful Core ML conversion failed: {first_line(exc)}",
                          hint="the past/present ONNX form is unaffected; run with --debug for the traceback") from exc
    return {"capture": "torch.jit.trace", "cache": "states", "precision": precision, "deployment_target": "iOS18",
            "max_context": max_context, "states": ["key_cache", "value_cache"],
            "state_shape": list(wrapper.key_cache.shape)}


def trace_stateful(model: Any, max_context: int, write_offset: int = 0) -> tuple[StatefulLM, Any]:
    """The stateful wrapper and its torch.jit.trace (what the Core ML conversion reads)."""
    import torch

    wrapper = StatefulLM(model, max_context, write_offset=write_offset).eval()
    ids = torch.zeros(1, TRACE_QUERY, dtype=torch.int64)
    mask = torch.from_numpy(causal_mask(TRACE_PAST, TRACE_QUERY))
    with torch.no_grad():
        return wrapper, torch.jit.trace(wrapper, (ids, mask), check_trace=False)


def stateless_example(model: Any) -> tuple:
    """The example past/present arguments the stateless form is traced at."""
    import torch

    geo = cache_geometry(model)
    ins, _ = io_names(geo["layers"])
    total = TRACE_PAST + TRACE_QUERY
    return (torch.zeros(1, TRACE_QUERY, dtype=torch.int64), torch.ones(1, total, dtype=torch.int64),
            torch.arange(TRACE_PAST, total).unsqueeze(0),
            *[torch.zeros(1, geo["kv_heads"], TRACE_PAST, geo["head_dim"]) for _ in ins[3:]])


def trace_stateless(model: Any) -> Any:
    """The torch.jit.trace of the past/present wrapper (what the stateless conversion reads)."""
    import torch

    with torch.no_grad():
        return torch.jit.trace(PastPresentLM(model).eval(), stateless_example(model), check_trace=False)


def _convert(traced: Any, wrapper: StatefulLM, max_context: int, precision: str, fp32_ops: Any = ()) -> Any:
    import coremltools as ct
    import numpy as np

    from interop.targets.coreml.precision import coreml_compute_precision

    query = ct.RangeDim(1, max_context, default=TRACE_QUERY)
    total = ct.RangeDim(1, max_context, default=TRACE_PAST + TRACE_QUERY)
    mask_dtype = np.float16 if precision == "fp16" else np.float32
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=tuple(getattr(wrapper, name).shape), dtype=np.float16),
                           name=name) for name in ("key_cache", "value_cache")]
    with patches.applied(*patches.COREML_CONVERSION):  # the same patches as every Core ML conversion
        return ct.convert(
            traced, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
            inputs=[ct.TensorType(name="input_ids", shape=(1, query), dtype=np.int32),
                    ct.TensorType(name="causal_mask", shape=(1, 1, query, total), dtype=mask_dtype)],
            outputs=[ct.TensorType(name="logits", dtype=mask_dtype)], states=states,
            compute_precision=coreml_compute_precision(precision, fp32_ops),
            skip_model_load=True)


def convert_coreml_stateless(model: Any, path: Path, max_context: int, precision: str,
                             fp32_ops: Any = ()) -> dict[str, Any]:
    """The fallback Core ML form (iOS17) for a model that cannot be made stateful: the ONNX model's
    past/present interface, names with ``_`` for ``.`` (``past_key_values_0_key``,
    ``present_0_key``), past length 1..max_context -- the prefill gets a 1-long past masked out by
    a 0 in front of its ``attention_mask``. ``fp32_ops``: ops kept in fp32 in an fp16 package."""
    import coremltools as ct
    import numpy as np

    from interop.targets.coreml.precision import compute_precision, coreml_compute_precision

    precision = compute_precision(precision)
    geo = cache_geometry(model)
    ins, outs = io_names(geo["layers"])
    total = TRACE_PAST + TRACE_QUERY
    query = ct.RangeDim(1, max_context, default=TRACE_QUERY)
    dtype = np.float16 if precision == "fp16" else np.float32
    inputs = [ct.TensorType(name="input_ids", shape=(1, query), dtype=np.int32),
              ct.TensorType(name="attention_mask", shape=(1, ct.RangeDim(2, max_context, default=total)), dtype=np.int32),
              ct.TensorType(name="position_ids", shape=(1, query), dtype=np.int32)]
    past = ct.RangeDim(1, max_context, default=TRACE_PAST)
    inputs += [ct.TensorType(name=coreml_name(n), shape=(1, geo["kv_heads"], past, geo["head_dim"]), dtype=dtype)
               for n in ins[3:]]
    try:
        traced = trace_stateless(model)
        with patches.applied(*patches.COREML_CONVERSION):
            mlmodel = ct.convert(traced, inputs=inputs, outputs=[ct.TensorType(name=coreml_name(n), dtype=dtype) for n in outs],
                                 convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17, skip_model_load=True,
                                 compute_precision=coreml_compute_precision(precision, fp32_ops))
        mlmodel.save(str(path))
    except Exception as exc:
        raise ExportError(f"the stateless Core ML conversion failed too: {first_line(exc)}",
                          hint="the ONNX form is unaffected; run with --debug for the traceback") from exc
    return {"capture": "torch.jit.trace", "cache": "past/present", "precision": precision,
            "deployment_target": "iOS17", "max_context": max_context}


def coreml_name(name: str) -> str:
    """A past/present tensor's name in Core ML (which allows no ``.`` in feature names)."""
    return name.replace(".", "_")
