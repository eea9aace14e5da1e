"""What a Hugging Face folder's output folder needs so its clients load it as they are, beyond
the files copied beside the model (sources/hf_folder.ship_folder_files):

* **Optimum's classifier output.** ``ORTModelFor*Classification`` reads the ONNX output named
  ``logits``; interop's labelled classifier outputs ``classLabelProbs`` (softmax folded in, the
  Core ML classifier's probabilities). The softmax's input *is* the model's logits, so it is
  added as a second graph output named ``logits`` (the graph is otherwise unchanged).
* **The processor, as the ONNX model takes its input.** With the image processor's rescale and
  normalisation folded into the model, the copied ``preprocessor_config.json`` says
  ``do_rescale: false, do_normalize: false`` (resizing stays), so Optimum's pipeline feeds raw
  0..255 pixels instead of normalising twice.
* **License and description** from the folder's model card (``README.md`` front matter:
  ``license``, ``description``; else the card's first paragraph) or ``config.json``, for the
  artifacts' metadata when no flag gives them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PROBS = "classLabelProbs"  # stages/preprocess.PROBS (a layer above: not imported)
MAX_CARD_BYTES = 1 << 20
MAX_DESCRIPTION = 500


def expose_logits(path: Path) -> bool:
    """Add ``logits`` (the input of the Softmax producing ``classLabelProbs``) as a graph output of
    the ONNX model at ``path``; False when the graph has no such Softmax (left untouched)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    names = [o.name for o in graph.output]
    if PROBS not in names or "logits" in names:
        return False
    softmax = next((n for n in graph.node if PROBS in n.output and n.op_type == "Softmax"), None)
    if softmax is None:
        return False
    tensor = softmax.input[0]
    if tensor in {i.name for i in graph.input} or tensor in {i.name for i in graph.initializer}:
        return False
    for node in graph.node:  # the tensor is renamed "logits" wherever it is made or read
        node.input[:] = ["logits" if n == tensor else n for n in node.input]
        node.output[:] = ["logits" if n == tensor else n for n in node.output]
    probs = graph.output[names.index(PROBS)]
    out = graph.output.add()
    out.CopyFrom(probs)
    out.name = "logits"
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return True


def unfold_processor(path: Path) -> None:
    """The copied ``preprocessor_config.json`` at ``path``, its rescale and normalisation off
    (they run inside the model now)."""
    data = json.loads(path.read_text())
    data.update({"do_rescale": False, "do_normalize": False})
    path.write_text(json.dumps(data, indent=2) + "\n")


def card_metadata(folder: Path, config: dict[str, Any]) -> dict[str, str]:
    """``license`` and ``description`` the folder states (model card front matter, then its first
    paragraph; ``config.json``'s own fields), as short strings; nothing the folder does not say."""
    found: dict[str, str] = {}
    front, body = _card(folder / "README.md")
    for key in ("license", "description"):
        value = front.get(key, config.get(key))
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        if isinstance(value, (str, int, float)) and str(value).strip():
            found[key] = str(value).strip()[:MAX_DESCRIPTION]
    if "description" not in found and body:
        found["description"] = body[:MAX_DESCRIPTION]
    return found


def _card(path: Path) -> tuple[dict[str, Any], str]:
    """(front matter, first prose paragraph) of a model card; a missing, oversized, special or
    unparsable card is ({}, "")."""
    import stat

    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CARD_BYTES:
            return {}, ""
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}, ""
    front: dict[str, Any] = {}
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end > 0:
            front = _yaml(text[3:end])
            text = text[end + 4:]
    for block in text.split("\n\n"):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        prose = " ".join(ln for ln in lines if ln and not ln.startswith(("#", "<", "!", "|", "```", "-", "*")))
        if prose:
            return front, prose
    return front, ""


def _yaml(text: str) -> dict[str, Any]:
    import yaml  # PyYAML (a transformers dependency): safe_load builds plain data only

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}
