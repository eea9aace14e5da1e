"""Language models: KV-cache ONNX and stateful Core ML from one causal LM, verified by generation
(``--task text-generation``; see docs/generation.md)."""
