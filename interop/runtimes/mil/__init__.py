"""The Core ML reference runtime: execute a saved ``.mlpackage`` ML program anywhere.

Core ML itself only predicts on Apple platforms. This runtime reads the package from disk
(spec *and* weight blob, so what is checked is the artifact users ship), rebuilds its MIL program
with coremltools' own proto loader, and interprets the ``main`` function op by op with numpy /
torch-CPU kernels, in the precision each op declares (fp16 ops are rounded to fp16).

    >>> from interop.runtimes import mil
    >>> outputs = mil.predict("model.mlpackage", {"x": x})
    >>> outputs, trace = mil.predict("model.mlpackage", {"x": x}, intermediate=True)
    >>> model = mil.load_model("stateful.mlpackage"); state = model.make_state()
    >>> model.predict({"x": x}, state=state); state.read_state("k_cache")
"""

from __future__ import annotations

from typing import Any

from .loader import LoadedModel, load_model
from .registry import implemented_ops
from .state import ModelState

__all__ = ["predict", "load_model", "LoadedModel", "ModelState", "implemented_ops"]


def predict(model: Any, inputs: dict[str, Any], intermediate: bool = False, function: str = "main",
            state: ModelState | None = None):
    """Run ``model`` (a path to an ``.mlpackage`` or a coremltools ``MLModel``) on ``inputs``.

    Mirrors ``MLModel.predict``: inputs by feature name (numpy arrays, or PIL images for image
    inputs), returns ``{output name: np.ndarray}`` (a classifier's label output is a ``str`` or
    ``int`` and its probability output a ``dict``). With ``intermediate=True`` returns
    ``(outputs, trace)`` where ``trace`` maps every op output var name to its value, in
    execution order. ``state`` (``load_model(path).make_state()``) carries a stateful program's
    states across calls, as ``MLModel.predict(inputs, state=)`` does.
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    return loaded.predict(inputs, intermediate=intermediate, function=function, state=state)
