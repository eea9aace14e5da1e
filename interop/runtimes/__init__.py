"""Runtimes that execute a model: PyTorch (reference), ONNX Runtime, Core ML (real or reference)."""
