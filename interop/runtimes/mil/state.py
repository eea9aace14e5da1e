"""The state of a stateful (iOS18) ML program, carried across predictions.

Mirrors coremltools' ``MLModel.make_state()`` / ``predict(inputs, state=state)``: a
:class:`ModelState` holds one :class:`~.values.State` per state input of a function, zeros when
made (as a new Core ML state is); ``coreml_update_state`` ops replace their content during a
prediction, and the next prediction given the same object sees it. Unlike Core ML's opaque
``MLState``, the content is readable (``read_state``) and writable (``write_state``) for checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .values import State, is_state, zero_state


class ModelState:
    """The states of one function of a stateful program, by state input name."""

    def __init__(self, function: Any, function_name: str = "main"):
        self.function_name = function_name
        self.states: dict[str, State] = {
            name: zero_state(var) for name, var in function.inputs.items() if is_state(var)
        }

    def names(self) -> list[str]:
        return list(self.states)

    def read_state(self, name: str) -> np.ndarray:
        """A copy of the current content of state ``name``."""
        return np.array(self._get(name).value)

    def write_state(self, name: str, value: Any) -> None:
        """Replace the content of state ``name`` (cast to its dtype; the shape must match)."""
        state = self._get(name)
        value = np.asarray(value)
        if value.shape != state.value.shape:
            raise ValueError(f"state {name!r} has shape {state.value.shape}, not {value.shape}")
        state.value = value.astype(state.value.dtype)

    def _get(self, name: str) -> State:
        if name not in self.states:
            raise KeyError(f"no state named {name!r}; states: {', '.join(self.states) or 'none'}")
        return self.states[name]

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}{tuple(s.value.shape)}:{s.value.dtype}" for n, s in self.states.items())
        return f"ModelState({shapes})"
