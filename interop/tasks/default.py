"""The default task: the pipeline exports each chosen target once and compares it with PyTorch
(stages/pipeline.py); it has no build of its own."""

from __future__ import annotations

from interop.tasks import DEFAULT, Task, register_task


@register_task
class DefaultTask(Task):
    name = DEFAULT
