"""A Hugging Face model folder (``save_pretrained``): ``config.json`` + ``model.safetensors``
(or shards with ``model.safetensors.index.json``, or ``pytorch_model.bin`` read weights-only).

Nothing in the folder runs: the architecture is a class transformers ships, named by
``architectures`` in ``config.json`` and built from that config; the weights come from
safetensors or from torch's weights-only unpickler (each pickle's globals are scanned first, by
opcode, so a pickle that would import code is refused with its names). A config with ``auto_map``
(custom modelling code in the folder) is refused without ``--trust``; only ``--trust`` turns on
transformers' ``trust_remote_code``. ``config.json`` and ``preprocessor_config.json`` are read as
data only: regular files (no FIFO), at most :data:`MAX_JSON_BYTES`, nested at most
:data:`MAX_JSON_DEPTH` deep.

What the folder says becomes the build's hints (stages/resolve.py, stages/prepare.py): inputs
named as Optimum names them (``input_ids``, ``attention_mask`` as a ``mask`` kind,
``token_type_ids``, ``pixel_values``) with dynamic batch and sequence axes, outputs (``logits``,
``last_hidden_state``, ...), ``id2label`` as the classifier's labels, and the image processor's
rescale / mean / std as the image input. A causal LM is handed over as the transformers module
itself, so the text-generation build takes it (generation/build.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from interop.errors import LoadError, SpecError, first_line
from interop.sources import SourceKind, register_source

CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
MAX_JSON_BYTES = 16 << 20  # config.json of the largest public models is well under 1 MB
MAX_JSON_DEPTH = 32
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")
FOLDER_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "vocab.txt",
                "tokenizer.model", "chat_template.jinja", "preprocessor_config.json")
"""The files a consumer of the ONNX folder reads beside the model (Optimum, onnxruntime-genai)."""

PROBS = "classLabelProbs"  # stages/preprocess.PROBS (a layer above: not imported)
BATCH = {"name": "batch_size", "min": 1, "max": 8}
EXAMPLE_BATCH, EXAMPLE_SEQUENCE, MAX_SEQUENCE = 2, 16, 512

# architecture-name suffix -> (task, output names, id2label are the classes of the first output)
TASKS = (
    ("ForCausalLM", "text-generation", None, False), ("LMHeadModel", "text-generation", None, False),
    ("ForSequenceClassification", "classification", ["logits"], True),
    ("ForImageClassification", "classification", ["logits"], True),
    ("ForAudioClassification", "classification", ["logits"], True),
    ("ForTokenClassification", "token-classification", ["logits"], False),
    ("ForMaskedLM", "fill-mask", ["logits"], False),
    ("ForQuestionAnswering", "question-answering", ["start_logits", "end_logits"], False),
)


def model_folder(model: str) -> Path | None:
    """The Hugging Face folder ``model`` names: the folder itself, or the folder of a weights file
    (``*.safetensors``, ``pytorch_model*.bin``) with a ``config.json`` beside it."""
    path = Path(model)
    try:
        if path.is_dir():
            return path if os.path.lexists(path / CONFIG) else None
        name = path.name.lower()
        weights = name.endswith(".safetensors") or (name.startswith("pytorch_model") and name.endswith(".bin"))
        if weights and os.path.lexists(path) and os.path.lexists(path.parent / CONFIG):
            return path.parent
    except OSError:
        return None
    return None


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A small JSON object from the folder, read as data: a regular file, bounded in size and depth."""
    from interop import trust as boundary

    boundary.regular_file(path, what)
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise LoadError(f"{what} {boundary.shown(path)} is {size} bytes (more than {MAX_JSON_BYTES >> 20} MB)",
                        hint="a config is a few kilobytes; this is not one")
    with open(path, "rb") as fh:
        text = fh.read(MAX_JSON_BYTES + 1).decode("utf-8", "replace")
    from interop.support.safe_io import json_depth  # before parsing: json recurses per level

    if json_depth(text) > MAX_JSON_DEPTH:
        raise LoadError(f"{what} {boundary.shown(path)} is nested more than {MAX_JSON_DEPTH} levels deep",
                        hint="a config is a flat object; this is not one")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise LoadError(f"{what} {boundary.shown(path)} is not valid JSON: {first_line(exc)}",
                        hint="re-save it with save_pretrained") from exc
    if not isinstance(data, dict):
        raise LoadError(f"{what} {boundary.shown(path)} is not a JSON object", hint="re-save it with save_pretrained")
    return data


def weight_files(folder: Path) -> list[Path]:
    """The weight files the folder holds (an index's shards, checked to stay inside the folder)."""
    from interop import trust as boundary

    for name in WEIGHT_FILES:
        path = folder / name
        if not os.path.lexists(path):
            continue
        if not name.endswith(".index.json"):
            return [boundary.regular_file(path, "weights file")]
        index = read_json(path, "weights index")
        shards = sorted({str(v) for v in (index.get("weight_map") or {}).values()})
        if not shards:
            raise LoadError(f"weights index {boundary.shown(path)} lists no shards", hint="re-save with save_pretrained")
        return [boundary.regular_file(boundary.inside(folder, s, "weights shard"), "weights shard") for s in shards]
    raise LoadError(f"{boundary.shown(folder)} has a config.json but no weights (model.safetensors, its sharded "
                    "index, or pytorch_model.bin)", hint="save the model with save_pretrained")


def check_pickles(files: list[Path], trust: bool) -> None:
    """``pytorch_model.bin`` files that would import anything beyond torch's tensor rebuilders are
    refused (scanned by opcode, nothing executed) before transformers' weights-only load."""
    if trust:
        return
    from interop import trust as boundary
    from interop.sources.torch_files import _SAFE_PREFIXES

    for path in files:
        if path.suffix == ".bin":
            risky = boundary.risky_globals(path, _SAFE_PREFIXES)
            if risky:
                boundary.refuse_pickle(path, risky)


def check_remote_code(config: dict[str, Any], folder: Path, trust: bool) -> None:
    from interop import trust as boundary

    if config.get("auto_map") and not trust:
        raise boundary.Untrusted(f"{boundary.shown(folder)} declares custom modelling code (auto_map in config.json); "
                                 "loading it runs that code, so it was not loaded", hint=boundary.TRUST_HINT)


SUPPORTED = ("decoder-only causal LMs (text generation), and encoders (text, image, audio input_values) with a "
             "sequence/token/image/audio classification, masked-LM or question-answering head or none")


def check_supported(config: dict[str, Any], folder: Path) -> None:
    """An encoder-decoder (Whisper, T5, BART, ...) is refused in one line naming what is built."""
    from interop import trust as boundary

    if config.get("is_encoder_decoder"):
        kind = str(config.get("model_type") or "encoder-decoder")
        raise LoadError(f"{boundary.shown(folder)} is an encoder-decoder model ({boundary.shown(kind)}), which interop "
                        f"does not build from a folder; it builds {SUPPORTED}",
                        hint="export one half with a MODULE:FN factory returning it (e.g. model.get_encoder()) and --trust")


def task_of(architecture: str) -> tuple[str, list[str] | None, bool]:
    for suffix, task, outputs, labelled in TASKS:
        if architecture.endswith(suffix):
            return task, outputs, labelled
    return "feature-extraction", None, False


def folder_sha256(folder: Path, files: list[Path]) -> str:
    """One digest over config.json and the weights (verify notices either changing)."""
    from interop.sources.torch_files import file_sha256

    digest = hashlib.sha256()
    for path in [folder / CONFIG, *files]:
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def load_folder(folder: Path, trust: bool) -> Any:
    """The folder as a ``torch_files.Source``: format ``huggingface`` (``huggingface-remote-code``
    with ``--trust`` on an ``auto_map`` folder)."""
    from interop.sources.torch_files import Source

    config_data = read_json(folder / CONFIG, "config.json")
    check_remote_code(config_data, folder, trust)
    check_supported(config_data, folder)
    files = weight_files(folder)
    check_pickles(files, trust)
    model = _instantiate(folder, config_data, trust)
    architecture = type(model).__name__
    task, outputs, labelled = task_of(architecture)
    fmt = "huggingface-remote-code" if config_data.get("auto_map") else "huggingface"
    source = Source(model, fmt, os.path.abspath(folder), folder_sha256(folder, files))
    source.folder_files = _companion_files(folder)  # type: ignore[attr-defined]
    from interop.sources.hf_ship import card_metadata

    source.card = card_metadata(folder, config_data)  # type: ignore[attr-defined]  # license, description
    source.hf_task = task  # type: ignore[attr-defined]
    if task == "text-generation":
        from interop.sources.torch_files import forward_names

        source.forward_names = forward_names(model)
        source.as_single_shot = lambda: _single_shot(source, model, folder)  # type: ignore[attr-defined]
        return source
    hints, names = _hints(model, folder, outputs, labelled)
    source.module = NamedIO(model, names, hints["outputs"]).eval()
    source.hints, source.forward_names = hints, names
    return source


def _single_shot(source: Any, model: Any, folder: Path) -> None:
    """A causal LM built as one forward (``--task default``): ``input_ids``, ``attention_mask`` in,
    ``logits`` out, no cache (Optimum's ``ORTModelForCausalLM(use_cache=False)`` form)."""
    hints, names = _hints(model, folder, ["logits"], False)
    source.module = NamedIO(model, names, ["logits"], use_cache=False).eval()
    source.hints, source.forward_names = hints, names


def _companion_files(folder: Path) -> list[Path]:
    """The consumer files present as regular files (a symlink or FIFO is not followed or read)."""
    import stat

    found = []
    for name in FOLDER_FILES:
        try:
            if stat.S_ISREG(os.lstat(folder / name).st_mode):
                found.append(folder / name)
        except OSError:
            continue
    return found


def _instantiate(folder: Path, config_data: dict[str, Any], trust: bool) -> Any:
    """The transformers model: the class ``architectures`` names (one transformers ships), built
    from the config, weights loaded by transformers (safetensors, or ``torch.load(weights_only=True)``)."""
    import transformers

    from interop import trust as boundary
    from interop.support.quiet import captured

    archs = config_data.get("architectures") or []
    name = str(archs[0]) if archs else "AutoModel"
    auto_map = config_data.get("auto_map") or {}
    if auto_map and trust:
        key = next((k for k, v in auto_map.items() if k.startswith("AutoModel") and str(v).endswith("." + name)),
                   next((k for k in auto_map if k.startswith("AutoModel")), "AutoModel"))
        cls, kwargs = getattr(transformers, key, transformers.AutoModel), {"trust_remote_code": True}
    else:
        cls, kwargs = getattr(transformers, name, None) if name.isidentifier() else None, {"trust_remote_code": False}
        if cls is None or not (name == "AutoModel" or _is_model_class(cls)):
            raise LoadError(f"config.json in {boundary.shown(folder)} names the architecture {boundary.shown(name)}, "
                            f"which transformers {transformers.__version__} does not ship",
                            hint="upgrade transformers, or fix `architectures` in config.json")
    try:
        with captured():
            model = cls.from_pretrained(str(folder), local_files_only=True, weights_only=True, **kwargs)
    except (LoadError, SpecError):
        raise
    except Exception as exc:
        raise LoadError(f"transformers cannot load {boundary.shown(folder)} as {name}: {first_line(exc)}",
                        hint="check that config.json and the weights were saved together (save_pretrained)") from exc
    return model.eval()


def _is_model_class(cls: Any) -> bool:
    from transformers import PreTrainedModel

    return isinstance(cls, type) and issubclass(cls, PreTrainedModel)


def _hints(model: Any, folder: Path, outputs: list[str] | None, labelled: bool) -> tuple[dict[str, Any], list[str]]:
    """Input spec, output names, labels and image preprocessing from the config and processor."""
    import inspect

    params = inspect.signature(model.forward).parameters
    config = model.config
    if "pixel_values" in params:
        inputs, image = [_pixel_values(config, folder)], _image_hint(folder, config)
    elif "input_values" in params:
        inputs, image = [{"name": "input_values", "shape": [EXAMPLE_BATCH, 16000], "dtype": "float32",
                          "range": [-1.0, 1.0], "dynamic": {"0": BATCH, "1": {"name": "sequence_length",
                                                                              "min": 4000, "max": 32000}}}], None
    elif "input_ids" in params:
        inputs, image = _text_inputs(config, params), None
    else:
        raise LoadError(f"{type(model).__name__} takes none of input_ids, pixel_values, input_values",
                        hint="pass --input for each of its inputs")
    if labelled:  # a classifier's example is one sample (Core ML's classifier labels one at a time)
        for t in inputs:
            t["shape"][0] = 1
    names = [t["name"] for t in inputs]
    if outputs is None:
        outputs = _output_keys(model, inputs)
    hints: dict[str, Any] = {"inputs": inputs, "outputs": outputs}
    id2label = getattr(config, "id2label", None) or {}
    if labelled and id2label:
        hints["labels"] = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if image:
        hints["image"] = image
    return hints, names


def _text_inputs(config: Any, params: Any) -> list[dict[str, Any]]:
    longest = int(getattr(config, "max_position_embeddings", None) or MAX_SEQUENCE)
    seq = {"name": "sequence_length", "min": 1, "max": min(longest, MAX_SEQUENCE)}
    shape = [EXAMPLE_BATCH, min(EXAMPLE_SEQUENCE, seq["max"])]
    axes = {"0": BATCH, "1": seq}
    inputs = [{"name": "input_ids", "shape": shape, "dtype": "int64", "range": [0, int(config.vocab_size) - 1],
               "dynamic": axes}]
    if "attention_mask" in params:
        inputs.append({"name": "attention_mask", "shape": shape, "dtype": "int64", "kind": "mask", "dynamic": axes})
    types = int(getattr(config, "type_vocab_size", 0) or 0)
    if "token_type_ids" in params and types > 0:
        inputs.append({"name": "token_type_ids", "shape": shape, "dtype": "int64", "range": [0, types - 1],
                       "dynamic": axes})
    return inputs


def _pixel_values(config: Any, folder: Path) -> dict[str, Any]:
    height, width = _image_size(config, folder)
    channels = int(getattr(config, "num_channels", 3) or 3)
    return {"name": "pixel_values", "shape": [1, channels, height, width], "dtype": "float32",
            "range": [-1.0, 1.0], "dynamic": {"0": BATCH}}


def _processor(folder: Path) -> dict[str, Any]:
    path = folder / PREPROCESSOR
    return read_json(path, PREPROCESSOR) if os.path.lexists(path) else {}


def _image_size(config: Any, folder: Path) -> tuple[int, int]:
    proc = _processor(folder)
    size = proc.get("crop_size") if proc.get("do_center_crop") else None
    size = size or proc.get("size")
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        edge = size.get("shortest_edge") or size.get("longest_edge")
        if edge:
            return int(edge), int(edge)
    if isinstance(size, (int, float)) and size > 0:
        return int(size), int(size)
    side = getattr(config, "image_size", None) or 224
    side = side[0] if isinstance(side, (list, tuple)) else side
    return int(side), int(side)


def _image_hint(folder: Path, config: Any) -> dict[str, Any] | None:
    """The image processor's rescale and normalisation as interop's image input (raw 0..255 pixels
    in; ``(pixels * rescale_factor - mean) / std`` folded into both artifacts)."""
    proc = _processor(folder)
    if not proc:
        return None
    channels = int(getattr(config, "num_channels", 3) or 3)
    normalise = proc.get("do_normalize", True)
    mean = proc.get("image_mean") if normalise else None
    std = proc.get("image_std") if normalise else None
    rescale = float(proc.get("rescale_factor", 1 / 255)) if proc.get("do_rescale", True) else 1.0
    if rescale <= 0:
        raise LoadError(f"{PREPROCESSOR} has rescale_factor {rescale}", hint="it is positive (1/255 for 8-bit pixels)")
    as_list = (lambda v, d: [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v if v is not None else d)] * channels)
    return {"input": "pixel_values", "mean": as_list(mean, 0.0), "std": as_list(std, 1.0), "pixel_scale": 1.0 / rescale}


def _output_keys(model: Any, inputs: list[dict[str, Any]]) -> list[str]:
    """The tensor outputs the model returns (``last_hidden_state``, ``pooler_output``, ...), found
    by one forward pass at a small size."""
    import torch

    args = {}
    for t in inputs:
        shape = [1] + [min(int(d), 8) if t["name"] != "pixel_values" else int(d) for d in t["shape"][1:]]
        args[t["name"]] = torch.ones(shape, dtype=torch.int64 if t["dtype"] == "int64" else torch.float32)
    with torch.no_grad():
        out = model(**args, return_dict=True)
    keys = [k for k, v in out.items() if isinstance(v, torch.Tensor)]
    if not keys:
        raise LoadError(f"{type(model).__name__} returns no tensor outputs", hint="pass --output-name")
    return keys


def _named_io_class() -> type:
    import torch

    class NamedIO(torch.nn.Module):
        """A transformers model called with keyword inputs, returning its named outputs as a tuple."""

        def __init__(self, model: Any, inputs: list[str], outputs: list[str], **options: Any):
            super().__init__()
            self.model, self.input_names, self.output_names = model, list(inputs), list(outputs)
            self.config, self.options = model.config, options

        def forward(self, *args: Any) -> tuple:
            out = self.model(**dict(zip(self.input_names, args)), return_dict=True, **self.options)
            return tuple(out[n] for n in self.output_names)

    return NamedIO


def NamedIO(model: Any, inputs: list[str], outputs: list[str], **options: Any) -> Any:  # noqa: N802 (made on use: torch loads late)
    return _named_io_class()(model, inputs, outputs, **options)


def ship_folder_files(source: Any, work: Path, out_folder: Path, report: Any, target: str | None = None) -> None:
    """Copy the folder's config, tokenizer and processor files into the work folder as companions
    of the ONNX artifact, so the output folder loads in Optimum / onnxruntime-genai as it is (not
    when the output folder is the model folder itself: they are there already); a labelled
    classifier's ONNX model also outputs ``logits`` (sources/hf_ship.py)."""
    from interop import targets
    from interop.sources import hf_ship

    files = getattr(source, "folder_files", None)
    if target is None:  # the target whose artifact the folder's clients load (Target.carries_folder_files)
        target = next((t.name for t in targets.registered().values() if t.carries_folder_files), None)
    if not files or target not in report.companions:
        return
    artifact = report.artifacts.get(target)
    if artifact is not None and target in targets.registered():
        notes = targets.registered()[target].ship_for_clients(Path(artifact))
        if notes:
            report.data["targets"][target].setdefault("notes", []).extend(notes)
    try:
        if out_folder.resolve() == Path(source.path).resolve():
            return
    except OSError:
        return
    for path in files:
        copy = work / path.name
        shutil.copyfile(path, copy)
        if path.name == PREPROCESSOR and (getattr(source, "hints", None) or {}).get("image"):
            hf_ship.unfold_processor(copy)  # rescale/normalise run inside the model
        report.companions[target].append(copy)


@register_source
class HuggingFaceFolder(SourceKind):
    """A ``save_pretrained`` folder, or a weights file beside its ``config.json``."""

    name = "huggingface"
    formats = {"huggingface": False, "huggingface-remote-code": True}

    def claims(self, model: str) -> bool:
        return model_folder(model) is not None

    def load(self, model: str, factory: str | None, trust: bool) -> Any:
        if factory is not None and not Path(model).is_dir():  # a state_dict into the user's factory
            from interop.sources.torch_files import load_source

            return load_source(model, factory=factory, trust=trust)
        folder = model_folder(model)
        if folder is None:
            raise LoadError(f"{model} is not a Hugging Face model folder", hint="pass a folder with config.json")
        return load_folder(folder, trust)
