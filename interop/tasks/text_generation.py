"""The text-generation task: a causal LM built as its prefill + decode forms (interop/generation/),
claimed under ``--task auto`` by any transformers ``*ForCausalLM``."""

from __future__ import annotations

from typing import Any

from interop.tasks import Task, register_task


@register_task
class TextGenerationTask(Task):
    name = "text-generation"
    own_build = True

    def claims(self, config: Any, source: Any) -> bool:
        from interop.generation.build import is_causal_lm

        return is_causal_lm(source.module)

    def build(self, config: Any, source: Any) -> Any:
        from interop.errors import SpecError
        from interop.generation.build import build_generation

        if getattr(config, "no_torchscript", False):  # its stateful Core ML decoders are traced
            raise SpecError("--task text-generation traces its Core ML decoders, which --no-torchscript rules out",
                            hint="build without --no-torchscript, or with --task default (one forward, no generation)")

        return build_generation(config, source)

    def verify(self, report: dict[str, Any], config: Any) -> Any:
        from interop.generation.build import verify_generation

        return verify_generation(report, config)
