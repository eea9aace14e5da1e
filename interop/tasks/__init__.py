"""Tasks: what a build makes of a model. ``default`` exports each target once and compares it with
PyTorch on seeded samples; ``text-generation`` builds a causal LM's prefill + decode forms and
compares generated tokens. A task is a plugin: a ``Task`` subclass with ``@register_task`` in its
own module, listed in ``BUILTIN`` (imported on first use). The front end (stages/front.py) picks
the task -- ``--task NAME``, or under ``--task auto`` the first task that claims the model, else
``default`` -- and the build, verify and check never branch on a task's name."""

from __future__ import annotations

from typing import Any

from interop.errors import SpecError
from interop.support.registry import Registry

BUILTIN = ("interop.tasks.text_generation", "interop.tasks.default")
DEFAULT = "default"
_REGISTRY = Registry("a task named", BUILTIN)


class Task:
    name: str = ""
    own_build = False  # True: the task builds, verifies and reports the model its own way

    def claims(self, config: Any, source: Any) -> bool:
        """Under ``--task auto``: whether this task is the one for ``source``."""
        return False

    def build(self, config: Any, source: Any) -> Any:
        """The whole build of an ``own_build`` task (returns the Report)."""
        raise NotImplementedError

    def verify(self, report: dict[str, Any], config: Any) -> Any:
        """``interop verify`` of a report this task wrote (an ``own_build`` task)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<task {self.name}>"


def register_task(cls: type) -> type:
    task = cls()
    _REGISTRY.add(task.name, task)
    return cls


def unregister_task(name: str) -> None:
    _REGISTRY.remove(name)


def registered() -> dict[str, Any]:
    return _REGISTRY.all()


def names() -> list[str]:
    return list(registered())


def get(name: str) -> Any:
    tasks = registered()
    if name not in tasks:
        raise SpecError(f"unknown --task {name!r}", hint=f"use one of auto, {', '.join(tasks)}")
    return tasks[name]


def for_build(config: Any, source: Any) -> Any:
    """The task a build runs: the one ``--task`` names, or the first that claims ``source``."""
    if config.task != "auto":
        return get(config.task)
    for task in registered().values():
        if task.name != DEFAULT and task.claims(config, source):
            return task
    return get(DEFAULT)


def for_report(config: Any) -> Any:
    """The task a report was built as (its settings' ``task``; older reports: default)."""
    name = config.task if config.task in registered() else DEFAULT
    return get(name)
