"""Read a saved ML program (``.mlpackage`` or ``MLModel``) back into a pymil ``Program``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import LoadError
from .interpreter import Interpreter
from .state import ModelState


def _package_paths(path: Path) -> tuple[Path, Path]:
    """(model spec file, weights folder) of an ``.mlpackage``, read from its Manifest.json. The
    package is read only inside its own folder: an entry with ``..``, an absolute path or a
    symlink leading out is refused, as is a malformed Manifest (interop.trust.check_package)."""
    from ... import trust

    spec_file = trust.check_package(path)
    return spec_file, spec_file.parent / "weights"


def _read_spec(spec_file: Path) -> Any:
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(spec_file.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError, OSError on unreadable files
        raise LoadError(f"cannot parse the model spec {spec_file}: {exc}", hint="rebuild the package") from exc
    return spec


class LoadedModel:
    """A parsed ML program plus its interface description, ready to predict repeatedly."""

    def __init__(self, spec: Any, weights_dir: str):
        from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

        if spec.WhichOneof("Type") != "mlProgram":
            raise LoadError(
                f"the reference runtime executes ML programs only; this model is {spec.WhichOneof('Type')!r}",
                hint="convert with convert_to='mlprogram'",
            )
        self.spec = spec
        try:
            self.program = load_milproto(spec, spec.specificationVersion, weights_dir)
        except Exception as exc:
            raise LoadError(
                f"cannot load the ML program and its weights from {weights_dir}: {exc}",
                hint="the package is damaged; rebuild it",
            ) from exc
        self.input_types = {f.name: f.type.WhichOneof("Type") for f in spec.description.input}
        self.image_inputs = {
            f.name: f.type.imageType for f in spec.description.input if f.type.WhichOneof("Type") == "imageType"
        }
        self._plans: dict[str, dict] = {}  # function name -> its compiled blocks, reused by every predict

    def make_state(self, function: str = "main") -> ModelState:
        """A new state (zeros) for ``predict(..., state=)``, as ``MLModel.make_state()``."""
        return ModelState(self.program.functions[function], function)

    def is_stateful(self, function: str = "main") -> bool:
        return bool(ModelState(self.program.functions[function], function).states)

    def predict(self, inputs: dict[str, Any], intermediate: bool = False, function: str = "main",
                promote_fp16: bool = False, state: ModelState | None = None):
        """``state`` (from :meth:`make_state`) is read and updated in place; without it every
        state input starts at zero and its updates are dropped."""
        func = self.program.functions[function]
        feeds = {name: self._feed(name, value) for name, value in inputs.items()}
        interp = Interpreter(func, record=intermediate, promote_fp16=promote_fp16,
                             plans=self._plans.setdefault(function, {}))
        outputs = interp.run(feeds, states=None if state is None else state.states)
        outputs = {name: _as_output(v) for name, v in outputs.items()}
        if intermediate:
            return outputs, interp.trace
        return outputs

    def _feed(self, name: str, value: Any) -> np.ndarray:
        if name in self.image_inputs:
            return _image_to_array(value, self.image_inputs[name])
        return np.asarray(value)


def _image_to_array(value: Any, image_type: Any) -> np.ndarray:
    """A PIL image (or HWC / CHW array) -> float32 (1, C, H, W) as Core ML feeds it."""
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None, None]
    elif arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3):
        arr = arr[..., :3].transpose(2, 0, 1)[None] if arr.shape[-1] != 1 else arr.transpose(2, 0, 1)[None]
    elif arr.ndim == 3:
        arr = arr[None]
    return arr


def _as_output(value: Any) -> Any:
    """An output as ``predict`` hands it over: strings as ``str``; arrays as the caller's own
    copy (a kernel may return a view of a program constant or of the runtime's cached fp32 copy
    of one, which a caller writing into its result must not change for later predictions)."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "U":
        return value.item() if value.ndim == 0 else value
    if isinstance(value, np.ndarray) and not value.flags.owndata:
        return value.copy()
    return value


def load_model(model: Any) -> LoadedModel:
    """Load a path to an ``.mlpackage`` or a coremltools ``MLModel``."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_dir():
            raise LoadError(f"{path} is not an .mlpackage folder", hint="pass the path of a saved .mlpackage")
        spec_file, weights = _package_paths(path)
        return LoadedModel(_read_spec(spec_file), str(weights))
    spec = model.get_spec()
    return LoadedModel(spec, str(getattr(model, "weights_dir", "") or ""))
