"""Check that interop's output folders load in Optimum (optimum-onnx) as they are and agree with
the transformers model they were built from.

optimum-onnx 0.1 pins transformers < 4.58 while interop runs transformers 5, so this runs in its
own virtual environment (default /tmp/optimum-venv, or $OPTIMUM_VENV; created on first use with
pip from the configured registry) and is not part of `make test`.

    python scripts/check_optimum.py OUT_DIR...

Each OUT_DIR is the `--out` of `interop build <hf-folder>` (model.onnx + config.json + tokenizer /
processor files beside it). The ORTModelFor<Task> class is the one the folder's `architectures`
names (Optimum's own choice); a causal LM is generated greedily with and without the cache (a
folder without past inputs -- `--task default` -- without only) and its tokens compared; any
other kind runs on seeded inputs at batch 2 (one row padded) and every output Optimum returns
(logits, last_hidden_state, start_logits, ...) is compared with the transformers model's. Prints
one JSON line per folder; exit 1 if any folder did not load or disagreed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

VENV = Path(os.environ.get("OPTIMUM_VENV", "/tmp/optimum-venv"))
PACKAGES = ["optimum-onnx==0.1.*", "onnxruntime", "transformers<4.58"]
TORCH = "torch==2.13.0"  # CPU wheel, installed first so optimum does not pull a CUDA build

CHECK = r'''
import json, sys
import numpy as np, torch, transformers
from pathlib import Path
import optimum.onnxruntime as ortm
out, source = Path(sys.argv[1]), Path(sys.argv[2])
config = json.loads((out / "config.json").read_text())
arch = (config.get("architectures") or [""])[0]
SUFFIX = [("ForCausalLM", "CausalLM"), ("LMHeadModel", "CausalLM"), ("ForSequenceClassification", "SequenceClassification"),
          ("ForTokenClassification", "TokenClassification"), ("ForMaskedLM", "MaskedLM"),
          ("ForQuestionAnswering", "QuestionAnswering"), ("ForImageClassification", "ImageClassification"),
          ("ForAudioClassification", "AudioClassification")]
task = next((t for s, t in SUFFIX if arch.endswith(s)), "FeatureExtraction")
ort_cls = getattr(ortm, "ORTModelFor" + task)
auto = getattr(transformers, "AutoModelFor" + task) if task != "FeatureExtraction" else transformers.AutoModel
ref = auto.from_pretrained(str(source)).eval()
result = {"folder": str(out), "client": ort_cls.__name__, "architecture": arch}
g = torch.Generator().manual_seed(0)
if task == "CausalLM":
    ids = torch.randint(3, int(config["vocab_size"]), (1, 6), generator=g)
    want = ref.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False)[0].tolist()
    import onnx
    has_past = any(i.name.startswith("past_key_values") for i in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.input)
    modes = [True, False] if has_past else [False]
    result["past_inputs"] = has_past
    ok = True
    for use_cache in modes:
        ort = ort_cls.from_pretrained(str(out), use_cache=use_cache)
        got = ort.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False)[0].tolist()
        result[f"tokens_match_use_cache_{use_cache}"] = got == want
        ok = ok and got == want
    result["distinct_tokens"] = len(set(want[6:]))
    result["passed"] = ok
else:
    ort = ort_cls.from_pretrained(str(out))
    names = set(ort.input_names)
    feed = {}
    if "input_ids" in names:
        feed["input_ids"] = torch.randint(0, int(config["vocab_size"]), (2, 12), generator=g)
        mask = torch.ones_like(feed["input_ids"]); mask[1, 8:] = 0
        feed["attention_mask"] = mask
        if "token_type_ids" in names:
            feed["token_type_ids"] = torch.zeros_like(feed["input_ids"])
        ref_feed = dict(feed)
    else:
        key = "pixel_values" if "pixel_values" in names else "input_values"
        shape = ort.model.get_inputs()[0].shape
        if key == "pixel_values":
            c, h, w = [int(s) for s in shape[1:]]
            raw = torch.randint(0, 256, (2, c, h, w), generator=g).float()
            meta = ort.model.get_modelmeta().custom_metadata_map
            image = json.loads(meta.get("interop.image", "null") or "null")
            feed[key] = raw
            if image:  # interop folded (pixels / scale - mean) / std into the model: the reference gets it done
                mean = torch.tensor(image["mean"]).view(1, -1, 1, 1); std = torch.tensor(image["std"]).view(1, -1, 1, 1)
                ref_feed = {key: (raw / image["pixel_scale"] - mean) / std}
            else:
                ref_feed = dict(feed)
        else:
            feed[key] = torch.rand((2, 16000), generator=g) * 2 - 1
            ref_feed = dict(feed)
    got = ort(**feed)
    with torch.no_grad():
        want = ref(**ref_feed)
    diffs = {}
    for name in ("logits", "last_hidden_state", "pooler_output", "start_logits", "end_logits"):
        a = getattr(got, name, None) if hasattr(got, name) else None
        b = want.get(name) if hasattr(want, "get") else None
        if a is None or b is None:
            continue
        a, b = np.asarray(a, dtype=np.float64), b.detach().numpy().astype(np.float64)
        diffs[name] = float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))
    result["relative_max_diff"] = diffs
    result["passed"] = bool(diffs) and all(d < 1e-3 for d in diffs.values())
result["loaded"] = True
print(json.dumps(result))
sys.exit(0 if result["passed"] else 1)
'''


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", TORCH,
                        "--index-url", "https://download.pytorch.org/whl/cpu"], check=False)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return python


def check(python: Path, out: str) -> dict:
    """One output folder in Optimum: the JSON line the check printed, or why it did not."""
    report = Path(out) / "model.report.json"
    if not report.is_file():
        return {"folder": out, "loaded": False, "passed": False, "error": "no model.report.json (not an interop --out)"}
    source = json.loads(report.read_text())["model"]["source"]
    done = subprocess.run([str(python), "-c", CHECK, out, source], capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"folder": out, "loaded": False, "passed": False, "error": tail}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    python = ensure_venv()
    results = [check(python, out) for out in argv]
    for result in results:
        print(json.dumps(result))
    passed = sum(bool(r.get("passed")) for r in results)
    print(f"optimum: {passed}/{len(results)} folders loaded and agreed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
