"""Check that interop's output folders load in Optimum (optimum-onnx) and agree with PyTorch.

optimum-onnx 0.1 pins transformers < 4.58 while interop runs transformers 5, so this runs in its
own virtual environment (default /tmp/optimum-venv, created on first use with pip from the
configured registry) and is not part of `make test`.

    python scripts/check_optimum.py CLASSIFIER_OUT_DIR [CAUSAL_LM_OUT_DIR]

Each OUT_DIR is the `--out` of `interop build <hf-folder>` (model.onnx + config.json + tokenizer
files beside it). Prints, for each, whether ORTModelFor<Task> loaded it and the worst difference
from the PyTorch model transformers builds from the same config.json.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VENV = Path(os.environ.get("OPTIMUM_VENV", "/tmp/optimum-venv"))
PACKAGES = ["optimum-onnx==0.1.*", "onnxruntime", "torch", "transformers<4.58"]

CHECK = r'''
import json, sys
import numpy as np, torch
from pathlib import Path
out = Path(sys.argv[1])
config = json.loads((out / "config.json").read_text())
arch = (config.get("architectures") or [""])[0]
import transformers
from optimum.onnxruntime import ORTModelForCausalLM, ORTModelForSequenceClassification, ORTModelForFeatureExtraction
if arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel"):
    ort = ORTModelForCausalLM.from_pretrained(str(out), use_cache=True)
    ref = getattr(transformers, arch).from_pretrained(sys.argv[2]).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    a = ort.generate(ids, max_new_tokens=12, do_sample=False)[0].tolist()
    b = ref.generate(ids, max_new_tokens=12, do_sample=False)[0].tolist()
    print(json.dumps({"folder": str(out), "client": "ORTModelForCausalLM", "loaded": True, "tokens_match": a == b}))
else:
    cls = ORTModelForSequenceClassification if arch.endswith("ForSequenceClassification") else ORTModelForFeatureExtraction
    ort = cls.from_pretrained(str(out))
    ref = getattr(transformers, arch).from_pretrained(sys.argv[2]).eval()
    ids = torch.randint(0, config["vocab_size"], (2, 12))
    mask = torch.ones_like(ids)
    got = ort(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
    want = ref(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
    key = "logits" if hasattr(got, "logits") and got.logits is not None else "last_hidden_state"
    g, w = np.asarray(getattr(got, key)), getattr(want, key).detach().numpy()
    if key == "logits" and np.allclose(g.sum(-1), 1, atol=1e-3):  # interop folds softmax into a labelled classifier
        w = torch.softmax(torch.from_numpy(w), -1).numpy()
    print(json.dumps({"folder": str(out), "client": cls.__name__, "loaded": True,
                      "max_abs": float(np.abs(g - w).max())}))
'''


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return python


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    python = ensure_venv()
    failed = 0
    for out in argv:
        data = (Path(out) / "model.report.json")
        source = __import__("json").loads(data.read_text())["model"]["source"]
        done = subprocess.run([str(python), "-c", CHECK, out, source], capture_output=True, text=True)
        print(done.stdout.strip() or f"{out}: FAILED\n{done.stderr.strip().splitlines()[-1:]}")
        failed += done.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
