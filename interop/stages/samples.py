"""One place draws the seeded samples of a build: every route (PyTorch sources, ONNX sources,
verify, bench) gets the same inputs for the same spec, case and seed. Value kinds (stages/value_kinds.py)
hold at every case; a ``--sampler`` (kinds.Sampler) replaces the inputs it returns."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from interop.errors import SpecError
from interop.stages.spec import Case, InputSpec, case_shape, make_sample


def sample_seed(seed: int, case: str, index: int) -> int:
    """The seed of sample ``index`` of ``case``: stable across runs, routes and platforms."""
    return seed + 1000 * index + zlib.crc32(case.encode()) % 997


def draw(spec: InputSpec, case: Case, seed: int, count: int, pixels: set[str] | frozenset = frozenset(),
         sampler: Any = None) -> list[dict[str, np.ndarray]]:
    """``count`` seeded samples of ``case`` (image inputs as whole-number pixels)."""
    samples = [make_sample(spec, case, sample_seed(seed, case.name, i), sampler) for i in range(count)]
    for sample in samples:
        for name in pixels:
            sample[name] = np.round(sample[name])
    return samples


def example_sample(spec: InputSpec, seed: int) -> dict[str, Any]:
    """The example case's first sample (what ``bench`` times)."""
    from interop.stages.spec import cases

    return draw(spec, cases(spec)[0], seed, 1)[0]


# --- --samples FILE.npz, per shape case ----------------------------------------------------------


def read_samples(path: str, spec: InputSpec, all_cases: list[Case]) -> dict[str, list[dict[str, np.ndarray]]]:
    """``{case name: samples}`` from an .npz whose arrays are named ``<input>`` (the example case)
    or ``<input>@<case>`` (the case as the report's cases[] name it, e.g. ``x@batch=3``); each one
    sample, or a leading axis of samples when every array of the case has the input's rank + 1.
    Cases the file does not name are absent (drawn by the kinds or the sampler)."""
    arrays = _read_npz(path)
    groups = _group_by_case(arrays, spec, [c.name for c in all_cases], path)
    by_name = {c.name: c for c in all_cases}
    return {case: _case_samples(spec, by_name[case], group, path) for case, group in groups.items()}


def _read_npz(path: str) -> dict[str, np.ndarray]:
    from interop.errors import InteropError
    from interop.support.limits import check_user_arrays
    from interop.trust import check_zip, regular_file

    try:
        check_zip(regular_file(path, "samples file"))  # no FIFO / device; no zip bomb
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError as exc:
        raise SpecError(f"samples file {path} does not exist", hint="check the --samples path") from exc
    except InteropError:
        raise
    except Exception as exc:
        raise SpecError(f"samples file {path} is not a readable .npz ({type(exc).__name__})",
                        hint="write it with numpy.savez(path, x=array, ...)") from exc
    check_user_arrays(arrays, path)  # strings, NaN, empty, absurd sizes: exit 2
    return arrays


def _group_by_case(arrays: dict[str, np.ndarray], spec: InputSpec, case_names: list[str], path: str
                   ) -> dict[str, dict[str, np.ndarray]]:
    """``{case: {input: array}}``; every case the file names has an array for every input."""
    names = spec.names()
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in arrays.items():
        name, at, case = key.partition("@")
        if not at and name not in names:
            continue  # extra arrays without a case are ignored, as always
        case = case if at else "example"
        if name not in names or case not in case_names:
            raise SpecError(f"samples file {path} has an array {key!r}: no input {name!r} or no case {case!r} "
                            f"(inputs: {', '.join(names)}; cases: {', '.join(case_names)})",
                            hint="name arrays <input> for the example case or <input>@<case>")
        if name in groups.setdefault(case, {}):
            raise SpecError(f"samples file {path} holds {name!r} for the example case twice ({name} and "
                            f"{name}@example)", hint="keep one of them")
        groups[case][name] = arr
    if not groups:
        raise SpecError(f"samples file {path} has no array for input(s) {', '.join(names)} "
                        f"(it has {', '.join(arrays) or 'none'})", hint="name the arrays after the inputs")
    for case, group in groups.items():
        missing = [n for n in names if n not in group]
        if missing:
            label = "" if case == "example" else f" at case {case}"
            raise SpecError(f"samples file {path} has no array for input(s) {', '.join(missing)}{label} "
                            f"(it has {', '.join(arrays)})", hint="give every input of a case an array")
    return groups


def _case_samples(spec: InputSpec, case: Case, arrays: dict[str, np.ndarray], path: str
                  ) -> list[dict[str, np.ndarray]]:
    from interop.support.limits import MAX_SAMPLES

    stacked = all(arrays[t.name].ndim == len(t.shape) + 1 for t in spec.inputs)
    count = len(arrays[spec.inputs[0].name]) if stacked else 1
    if count > MAX_SAMPLES:  # a file's stacked samples are bounded as --num-samples is
        raise SpecError(f"samples file {path} stacks {count} samples for case {case.name}; the limit is {MAX_SAMPLES}",
                        hint=f"keep at most {MAX_SAMPLES} samples per case")
    for t in spec.inputs:
        _check_fits(t, arrays[t.name], path)
    out = []
    for i in range(count):
        sample = {}
        for t in spec.inputs:
            arr = arrays[t.name][i] if stacked else arrays[t.name]
            _check_sample_shape(t, arr, path, None if case.name == "example" else case_shape(t, case))
            sample[t.name] = np.ascontiguousarray(arr.astype(t.dtype))
        out.append(sample)
    return out


def _check_fits(t: Any, arr: np.ndarray, path: str) -> None:
    """Values an integer input's dtype holds: a cast that would wrap (300 into int8) is refused."""
    dtype = np.dtype(t.dtype)
    if dtype.kind not in "iu" or arr.size == 0 or arr.dtype.kind not in "biuf":
        return
    info = np.iinfo(dtype)
    low, high = arr.min(), arr.max()
    if low < info.min or high > info.max:
        raise SpecError(f"sample {t.name!r} in {path} holds values {low}..{high}, outside {dtype} "
                        f"({info.min}..{info.max}); casting would wrap them", hint=f"give values that fit {dtype}")


def _check_sample_shape(t: Any, arr: np.ndarray, path: str, exact: tuple[int, ...] | None = None) -> None:
    if exact is not None:
        if tuple(arr.shape) != exact:
            raise SpecError(f"sample {t.name!r} in {path} has shape {arr.shape}, its case needs {exact}",
                            hint="give each case's arrays that case's shapes (the report lists the cases)")
        return
    ok = arr.ndim == len(t.shape) and all(
        (a in t.dynamic and t.dynamic[a].min <= s <= t.dynamic[a].max) or s == t.shape[a]
        for a, s in enumerate(arr.shape))
    if not ok:
        raise SpecError(f"sample {t.name!r} in {path} has shape {arr.shape}, the spec says {t.shape}",
                        hint="match the input spec (dynamic axes may vary inside their range)")
