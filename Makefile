# The two README commands. Each sets itself up: .venv, torch first (pinned: the local CPU wheel;
# an unpinned torch would pull several GB of CUDA packages), then interop with its test extras.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.interop-installed
TORCH   := torch==2.13.0
# ONNX -> PyTorch for .onnx sources. --no-deps: its metadata requires torchvision (only for its NMS and
# RoiAlign converters), and PyPI's torchvision pulls a CUDA torch of several GB (see pyproject.toml).
ONNX2TORCH := onnx2torch==1.5.15

.PHONY: demo test test-all samples conformance coverage compression optimum clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,coreai]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps $(ONNX2TORCH)
	touch $(STAMP)

samples/mobilenet_v2.pt: $(STAMP) samples/models.py scripts/make_samples.py
	$(BIN)/python scripts/make_samples.py --only-large

samples: $(STAMP)
	$(BIN)/python scripts/make_samples.py --large

demo: $(STAMP) samples/mobilenet_v2.pt
	$(BIN)/interop doctor
	$(BIN)/interop build samples/lstm_sum.pt --out demo-out
	$(BIN)/interop build samples/mobilenet_v2.pt --out demo-out
	@echo "artifacts and reports: demo-out/"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

conformance: $(STAMP)
	$(BIN)/python scripts/coreml_conformance.py --subset full

coverage: $(STAMP)
	$(BIN)/python scripts/coverage.py

optimum: $(STAMP)  # Optimum loads interop's output folders (its own venv: optimum-onnx pins transformers < 4.58)
	$(BIN)/python scripts/check_optimum.py $(OUT)

compression: $(STAMP)
	$(BIN)/python scripts/compression_table.py --write docs/compression.md

clean:
	rm -rf demo-out .pytest_cache
