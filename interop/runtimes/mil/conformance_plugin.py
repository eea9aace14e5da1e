"""pytest plugin: run coremltools' own MIL op tests against the Core ML reference runtime.

coremltools' op tests (``coremltools/converters/mil/mil/ops/tests``) build a tiny program per
case, convert it to an ML program and compare Core ML's prediction with numpy-computed expected
values -- but only on macOS. This plugin, loaded with
``pytest -p interop.runtimes.mil.conformance_plugin``:

* makes coremltools' test utilities believe they run on a recent macOS (``_IS_MACOS``,
  ``_is_macos``, ``_macos_version``), while never loading the macOS-only Core ML bridge
  (``_MLModelProxy``);
* routes ``MLModel.predict`` to :func:`interop.runtimes.mil.predict`, executing the ML program
  from the package the converter wrote to disk (``MLModel.package_path``);
* skips NeuralNetwork-format cases (reason prefixed ``[mil-conformance]``); stateful cases run
  with the runtime's own state (``MLModel.make_state`` -> ``LoadedModel.make_state``);
* classifies every failure (``unsupported`` kernel missing, ``mismatch`` wrong numbers or shapes,
  ``fp16-rounding`` an fp32 case that passes when its fp16-typed ops are computed in fp32,
  ``kernel-error`` the runtime raised, ``load-error`` the package could not be read back,
  ``timeout``, ``test-error`` failed before reaching the runtime) and names the op at fault;
* with ``--mil-record FILE`` writes one JSON line per case (read by
  ``scripts/coreml_conformance.py``); ``--mil-subset fast`` keeps a few cases per test function.
"""

from __future__ import annotations

import functools
import gc
import json
import re
import shutil
import signal
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MACOS_VERSION = (15, 5)
"""The macOS version reported to coremltools: new enough to run every opset (iOS18 needs 15)."""

SKIP_PREFIX = "[mil-conformance] "
NEURALNETWORK_REASON = SKIP_PREFIX + "neuralnetwork: the reference runtime executes ML programs only"
TESTS_PACKAGE = "coremltools/converters/mil/mil/ops/tests/"
MESSAGE_CHARS = 400


class ConformanceTimeout(Exception):
    """A case ran longer than ``--mil-timeout`` seconds."""


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("mil-conformance", "Core ML reference runtime conformance")
    group.addoption("--mil-subset", choices=("full", "fast"), default="full",
                    help="fast: keep --mil-per-function evenly spread ML-program cases per test function")
    group.addoption("--mil-per-function", type=int, default=2, help="cases per test function in the fast subset")
    group.addoption("--mil-precision", choices=("fp16", "fp32", "both"), default="fp16",
                    help="which ML-program precisions to run (coremltools runs fp16 only by default)")
    group.addoption("--mil-record", default=None, help="append one JSON line per case to this file")
    group.addoption("--mil-timeout", type=float, default=120.0, help="seconds before a case is failed")


def pytest_configure(config: Any) -> None:
    import os

    if config.getoption("mil_precision") != "fp16":
        # read by coremltools.converters.mil.testing_reqs when the test packages are imported
        os.environ["INCLUDE_MIL_FP32_UNIT_TESTS"] = "1"
    patch_coremltools()
    config.pluginmanager.register(Recorder(config), "mil-conformance-recorder")


# --- making coremltools' test utilities run predictions here ---------------------------------


def patch_coremltools() -> None:
    """Pretend to be macOS for the test utilities; send predictions to the reference runtime:
    interop.patches' ``conformance-*`` entries, installed for the session through the inventory."""
    from interop import patches

    for name in ("conformance-macos", "conformance-predict", "conformance-fusion-patterns"):
        patches.install(name)


def pretend_macos() -> Any:
    """The ``conformance-macos`` patch (its undo returned)."""
    import coremltools._deps as deps
    import coremltools.converters.mil.testing_utils as testing_utils
    import coremltools.models._compiled_model as compiled_model
    import coremltools.models.model as model
    import coremltools.models.utils as utils

    from interop.patches import swap

    def is_macos() -> bool:
        return True

    def macos_version() -> tuple[int, int]:
        return MACOS_VERSION

    undos = [swap(deps, "_IS_MACOS", True), swap(testing_utils, "_IS_MACOS", True)]
    for module in (utils, model, compiled_model):
        if hasattr(module, "_is_macos"):
            undos.append(swap(module, "_is_macos", is_macos))
        undos.append(swap(module, "_macos_version", macos_version))
    undos.append(swap(model, "_MLModelProxy", None))  # MLModel(...) must never try to load Core ML.framework
    return lambda: [undo() for undo in reversed(undos)]


def predict_here() -> Any:
    """The ``conformance-predict`` patch (its undo returned)."""
    import coremltools.converters._converters_entry as converters_entry
    import coremltools.converters.mil.mil.ops.tests.testing_utils as op_testing_utils
    import coremltools.models.model as model

    from interop.patches import swap

    undos = [swap(model.MLModel, "predict", reference_predict),
             swap(model, "_create_mlpackage", _tracked(model._create_mlpackage)),
             swap(model.MLModel, "make_state", reference_make_state),
             swap(converters_entry, "gc", YoungGC()),
             swap(op_testing_utils, "compare_backend", classify_mismatches(op_testing_utils.compare_backend))]
    return lambda: [undo() for undo in reversed(undos)]


PACKAGES: list[str] = []
"""Temporary packages the converter wrote for the running case (removed when it finishes)."""


def _tracked(create_mlpackage: Any) -> Any:
    """Wrap ``_create_mlpackage`` to note each temporary package: coremltools only deletes them at
    exit, which leaves ~20k folders in the temp dir by the end of a full run."""

    @functools.wraps(create_mlpackage)
    def create(*args: Any, **kwargs: Any) -> str:
        path = create_mlpackage(*args, **kwargs)
        PACKAGES.append(path)
        return path

    return create


class YoungGC:
    """Stands in for ``gc`` in ``ct.convert``, whose full ``gc.collect()`` per conversion costs more
    per case the longer the session runs (6 ms at first, 90 ms after 250 cases); a young-generation
    collection frees a conversion's garbage, and Python's own full collections still run."""

    def __getattr__(self, name: str) -> Any:
        return getattr(gc, name)

    @staticmethod
    def collect(generation: int = 1) -> int:
        return gc.collect(min(generation, 1))


def cache_fusion_patterns() -> Any:
    """Build the pattern programs of coremltools' gelu / prelu fusion passes once, not per case.

    Rebuilding them is about a third of converting a one-op test program. They are only matched
    against, never changed (coremltools' own generic passes reuse theirs the same way), so the
    converted programs are unaffected.
    """
    from coremltools.converters.mil.mil.passes.defs import optimize_activation as act

    from interop.patches import swap

    undos = []
    for owner, name in ((act.fuse_gelu_tanh_approximation, "get_gelu_pattern1"),
                        (act.fuse_gelu_tanh_approximation, "get_gelu_pattern2"),
                        (act.FusePreluPattern1, "get_prelu_pattern"),
                        (act.FusePreluPattern2, "get_prelu_pattern")):
        undos.append(swap(owner, name, staticmethod(functools.cache(getattr(owner, name)))))
    return lambda: [undo() for undo in reversed(undos)]


class ValueMismatch(AssertionError):
    """The runtime's outputs miss coremltools' expected values (raised by ``compare_backend``)."""


class Fp16RoundingMismatch(ValueMismatch):
    """An fp32 case that passes only when its fp16-typed ops are computed in fp32."""


def classify_mismatches(compare_backend: Any) -> Any:
    """Wrap coremltools' ``compare_backend``: its failures become :class:`ValueMismatch` (other
    assertions of a test are not the runtime's values), and fp16 rounding is told apart.

    coremltools checks fp32 cases at ``atol=1e-4, rtol=1e-5`` even when the program holds fp16
    values (fp16 inputs, weights or lookup tables, iOS16+), often against expected values computed
    from the unrounded data; its own CI runs fp16 cases only (``INCLUDE_MIL_FP32_UNIT_TESTS``).
    The reference runtime rounds every fp16-typed op to fp16, so such a case can miss the
    tolerance with correct kernels. On a mismatch, the case is compared again with fp16-typed ops
    computed in fp32 (``promote_fp16``); if that passes, it fails as :class:`Fp16RoundingMismatch`.
    """

    @functools.wraps(compare_backend)
    def compare(mlmodel: Any, input_key_values: Any, expected_outputs: Any, dtype: str = "fp32",
                *args: Any, **kwargs: Any) -> Any:
        try:
            return compare_backend(mlmodel, dict(input_key_values), expected_outputs, dtype, *args, **kwargs)
        except AssertionError as exc:
            case = CURRENT.get("case") or {}
            if dtype != "fp32" or not case.get("has_fp16"):
                raise ValueMismatch(str(exc)) from None
            CURRENT["promote"] = True
            try:
                compare_backend(mlmodel, input_key_values, expected_outputs, dtype, *args, **kwargs)
            except AssertionError:
                raise ValueMismatch(str(exc)) from None
            finally:
                CURRENT.pop("promote", None)
            raise Fp16RoundingMismatch(f"passes with fp16-typed ops computed in fp32; as declared: {exc}") from None

    return compare


def reference_make_state(self: Any) -> Any:
    """``MLModel.make_state`` replacement: the reference runtime's state of the saved package."""
    from interop.runtimes import mil

    if self.package_path is None:
        raise RuntimeError("an ML program MLModel without a package on disk has no state")
    return mil.load_model(self.package_path).make_state(self.function_name or "main")


def reference_predict(self: Any, data: Any, state: Any = None) -> Any:
    """``MLModel.predict`` replacement: execute the saved package with the reference runtime."""
    if self._spec.WhichOneof("Type") != "mlProgram":
        pytest.skip(NEURALNETWORK_REASON)
    if isinstance(data, list):
        return [reference_predict(self, item, state) for item in data]
    if self.package_path is None:
        raise RuntimeError("an ML program MLModel without a package on disk cannot be executed")
    self._verify_input_dict(data)
    self._convert_tensor_to_numpy(data)
    return _run_package(self.package_path, data, self.function_name or "main", state)


def _run_package(path: str, data: dict[str, Any], function: str, state: Any = None) -> Any:
    from interop.errors import InteropError
    from interop.runtimes import mil

    case = CURRENT.get("case")
    try:
        loaded = mil.load_model(path)
        main = loaded.program.functions[function]
        if case is not None:
            case["ops"] = sorted(set(program_op_types(main)))
            case["has_fp16"] = has_fp16_values(main)
            case["runtime_called"] = True
            case["culprit"] = output_op_type(main)
        return loaded.predict(data, function=function, promote_fp16=CURRENT.get("promote", False), state=state)
    except Exception as exc:
        if case is not None:
            case["runtime_error"] = True
            case["culprit"] = failing_op_type(exc) or case.get("culprit") or "<load>"
        if isinstance(exc, InteropError):
            raise  # a missing kernel or an unreadable package: not an error of the model's own
        # what MLModel.predict raises when Core ML fails at run time (e.g. on invalid indices)
        raise RuntimeError(f"Unable to compute the prediction using ML Program (reference runtime): "
                           f"{type(exc).__name__}: {exc}") from exc


CURRENT: dict[str, Any] = {}
"""The record of the case being run (a module global: predictions happen deep in coremltools)."""


# --- attributing failures to ops ------------------------------------------------------------


def program_op_types(block: Any) -> list[str]:
    """Op types of ``block`` and its nested blocks, consts excluded."""
    types: list[str] = []
    for op in block.operations:
        if op.op_type != "const":
            types.append(op.op_type)
        for inner in op.blocks:
            types.extend(program_op_types(inner))
    return types


def has_fp16_values(block: Any) -> bool:
    """Whether any input or op output of ``block`` (nested blocks included) is typed fp16."""
    from .values import numpy_dtype

    inputs = block.inputs.values() if isinstance(block.inputs, dict) else block.inputs
    outputs = (var for op in block.operations for var in op.outputs)
    return any(numpy_dtype(var) == np.float16 for var in (*inputs, *outputs)) or any(
        has_fp16_values(inner) for op in block.operations for inner in op.blocks)


def output_op_type(function: Any) -> str | None:
    """The op producing the first output, looking through the casts fp16 conversion appends."""
    var = function.outputs[0] if function.outputs else None
    op = var.op if var is not None else None
    while op is not None and op.op_type == "cast" and op.x.op is not None and op.x.op.op_type != "const":
        op = op.x.op
    return op.op_type if op is not None else None


def failing_op_type(exc: BaseException) -> str | None:
    """The MIL op whose kernel raised ``exc`` (the innermost interpreter frame running an op)."""
    op_type = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_name == "_run_op" and "op" in frame.f_locals:
            op_type = getattr(frame.f_locals["op"], "op_type", op_type)
    if op_type is None:
        match = re.search(r"MIL op '([^']+)'", str(exc))
        op_type = match.group(1) if match else None
    return op_type


def failure_kind(exc: BaseException, case: dict[str, Any]) -> str:
    """``unsupported`` / ``load-error`` / ``timeout`` / ``fp16-rounding`` / ``kernel-error`` /
    ``mismatch`` / ``test-error``."""
    from interop.errors import LoadError, UnsupportedOpError

    if isinstance(exc, UnsupportedOpError):
        return "unsupported"
    if isinstance(exc, LoadError):
        return "load-error"
    if isinstance(exc, ConformanceTimeout):
        return "timeout"
    if isinstance(exc, Fp16RoundingMismatch):
        return "fp16-rounding"
    if case.get("runtime_error"):
        return "kernel-error"
    if isinstance(exc, ValueMismatch):
        return "mismatch"
    return "test-error"  # failed before reaching the runtime, or on something else than its values


def short_message(exc: BaseException) -> str:
    """One compact line: the exception type and the start of its message (hints dropped)."""
    text = getattr(exc, "message", None) or str(exc)
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text}"[:MESSAGE_CHARS]


# --- collection: what runs -----------------------------------------------------------------


def backend_of(item: Any) -> tuple[str | None, str | None, str | None]:
    """(backend, precision, opset) of a parametrized coremltools case, Nones if not parametrized."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    config = params.get("backend")
    if isinstance(config, tuple) and len(config) == 2:
        return config[0], config[1], None
    if not hasattr(config, "opset_version"):
        return None, None, None
    opset = getattr(config.opset_version, "name", str(config.opset_version))
    return config.backend, config.precision, opset


def _precision_kept(item: Any, precision: str) -> bool:
    """Whether ``item`` survives ``--mil-precision``: NeuralNetwork cases always do (to be counted)."""
    backend, item_precision, _ = backend_of(item)
    return backend != "mlprogram" or item_precision == precision


def fast_subset(items: list[Any], per_function: int) -> list[Any]:
    """``per_function`` evenly spread ML-program cases of every test function."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for item in items:
        if backend_of(item)[0] == "mlprogram":
            groups.setdefault((str(item.path), item.originalname), []).append(item)
    keep: list[Any] = []
    for group in groups.values():
        if len(group) <= per_function:
            keep.extend(group)
            continue
        step = (len(group) - 1) / max(per_function - 1, 1)
        keep.extend(group[round(i * step)] for i in range(per_function))
    return keep


# --- the recorder -------------------------------------------------------------------------


class Recorder:
    """pytest hooks that classify each case and append it to ``--mil-record``."""

    def __init__(self, config: Any):
        self.config = config
        path = config.getoption("mil_record")
        self.path = Path(path) if path else None
        self.timeout = config.getoption("mil_timeout")

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session: Any, config: Any, items: list[Any]) -> None:
        precision = config.getoption("mil_precision")
        selected = [item for item in items if precision == "both" or _precision_kept(item, precision)]
        if config.getoption("mil_subset") == "fast":
            selected = fast_subset(selected, config.getoption("mil_per_function"))
        kept = set(map(id, selected))
        deselected = [item for item in items if id(item) not in kept]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        items[:] = selected
        for item in items:
            if backend_of(item)[0] == "neuralnetwork":
                item.add_marker(pytest.mark.skip(reason=NEURALNETWORK_REASON))

    def pytest_collection_finish(self, session: Any) -> None:
        # torch and every test module are imported now: keep them out of all later collections
        gc.collect()
        gc.freeze()

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        CURRENT["case"] = {"nodeid": nodeid, "outcome": "passed", "runtime_called": False, "start": time.time()}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: Any):
        previous = signal.signal(signal.SIGALRM, self._on_timeout)
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def _on_timeout(self, signum: int, frame: Any) -> None:
        raise ConformanceTimeout(f"the case ran longer than {self.timeout:g} s")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: Any, call: Any):
        outcome = yield
        report = outcome.get_result()
        case = CURRENT.get("case")
        if case is None:
            return
        case.update(_describe_item(item))
        if report.skipped and report.when != "teardown":
            case["outcome"] = "skipped"
            case["kind"] = "xfail" if hasattr(report, "wasxfail") else _skip_kind(report)
            case["message"] = _skip_reason(report)[:MESSAGE_CHARS]
        elif report.passed and report.when == "call" and hasattr(report, "wasxfail"):
            case["kind"] = "xpass"  # coremltools expects Core ML to fail here; the runtime passes
        elif report.failed and case["outcome"] != "failed":
            case["outcome"] = "failed"
            exc = call.excinfo.value if call.excinfo is not None else None
            case["kind"] = failure_kind(exc, case) if exc is not None else "test-error"
            case["message"] = short_message(exc) if exc is not None else str(report.longrepr)[:MESSAGE_CHARS]
            item.user_properties.append(("mil_failure_kind", case["kind"]))
            item.user_properties.append(("mil_op", str(case.get("culprit"))))

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        while PACKAGES:
            shutil.rmtree(PACKAGES.pop(), ignore_errors=True)
        case = CURRENT.pop("case", None)
        if case is None or self.path is None:
            return
        case["seconds"] = round(time.time() - case.pop("start"), 3)
        case.setdefault("kind", case["outcome"])
        with self.path.open("a") as out:
            out.write(json.dumps(case, default=str) + "\n")


def _describe_item(item: Any) -> dict[str, Any]:
    backend, precision, opset = backend_of(item)
    path = str(item.path)
    file = path.split(TESTS_PACKAGE, 1)[-1]
    cls = item.cls.__name__ if item.cls is not None else ""
    return {"file": file, "class": cls, "function": item.originalname, "op": class_op_name(cls),
            "backend": backend, "precision": precision, "opset": opset}


def class_op_name(cls: str) -> str:
    """``TestConvTranspose`` -> ``conv_transpose``: the op a coremltools test class is about."""
    name = cls[4:] if cls.startswith("Test") else cls
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower() or "<module>"


def _skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _skip_kind(report: Any) -> str:
    reason = _skip_reason(report)
    if reason.startswith(NEURALNETWORK_REASON):
        return "skip-neuralnetwork"
    return "skip-coremltools"
