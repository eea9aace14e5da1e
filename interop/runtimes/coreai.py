"""coreai-core's bundled runtime for ``.aimodel`` assets (Core AI, iOS 27 / macOS 27).

Off macOS 27 the documented route is the only one that runs: ``AIModelAsset.load(path)`` then
``async with asset.executable() as model`` (it lowers the asset's program to the runtime's own
format in a temporary folder); ``AIModel.load(path)`` itself fails off macOS. One ``Session``
holds that context open on a private event loop, so every case and sample runs synchronously
against one loaded model. Inputs are NDArrays; integer inputs must be int32 (int64 is refused).

The packages are beta (coreai-torch 0.4, coreai-core 1.0.0b3): what is used here is pinned in
pyproject.toml and measured in tests/test_coreai.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import numpy as np

from interop.errors import LoadError, first_line

RUNTIME = "coreai-runtime"
PACKAGES = ("coreai-torch", "coreai-core")
INSTALL_HINT = "pip install interop[coreai]  (coreai-torch and coreai-core)"
FUNCTION = "main"
_TYPE = re.compile(r"NDArray \((\w+),\s*(.*)\)")


def versions() -> dict[str, str | None]:
    """The installed coreai packages' versions (None when missing), without importing them."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = _metadata.version(name)
        except _metadata.PackageNotFoundError:
            found[name] = None
    return found


def unavailable(convert: bool = True, modules: tuple[str, ...] = ("coreai.authoring", "coreai.runtime")) -> str | None:
    """Why Core AI cannot be built (``convert``) or run here, or None when it can. ``doctor`` asks
    for ``coreai.runtime`` alone (the bundled runtime library; coreai.authoring takes ~1 s)."""
    import importlib

    missing = [n for n, v in versions().items() if v is None and (convert or n == "coreai-core")]
    if missing:
        return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed"
    try:
        for module in modules:
            importlib.import_module(module)
    except Exception as exc:  # a wheel for another platform, a missing system library
        return f"coreai-core's runtime does not load here ({first_line(exc)})"
    return None


def declared(text: str) -> tuple[str, list[int | None] | None]:
    """``'NDArray (Float32, ? × 3 × 16 × 16)'`` -> ('float32', [None, 3, 16, 16]); a type text of
    another form -> (text, None): nothing is claimed about its shape."""
    match = _TYPE.fullmatch(text.strip())
    if match is None:
        return text, None
    dims = [d.strip() for d in match.group(2).split("×") if d.strip()]
    return match.group(1).lower(), [None if d == "?" else int(d) for d in dims]


def read_metadata(path: Path) -> dict[str, Any]:
    """The asset's metadata.json (plain JSON: read as data, nothing runs)."""
    from interop.support import safe_io

    data = safe_io.read_json(Path(path) / "metadata.json", "the .aimodel's metadata.json", root=path,
                             max_bytes=16 << 20, hint="pass a .aimodel folder built by interop")
    return data if isinstance(data, dict) else {}


def check_integrity(path: Path) -> None:
    """The program's bytecode against the SHA-256 coreai-core stored beside it when saving (the
    runtime itself does not compare them)."""
    from coreai.runtime import _AIModelAsset

    from interop.trust import contained_tree

    contained_tree(Path(path), ".aimodel")  # before the runtime opens anything: no link out, no FIFO
    asset = _AIModelAsset(str(path))
    program, digest = Path(asset._program_bytecode_path), Path(asset._program_hash_path)  # noqa: SLF001 (beta SPI)
    from interop.support import safe_io

    for part in (program, digest):  # coreai-core's save_asset writes both
        if not os.path.lexists(part):
            raise LoadError(f"{path} has no {part.name}", hint="rebuild the .aimodel")
    # read as data inside the asset: a member that is a FIFO or links outside is refused, never read
    code = safe_io.read_bytes(program, "the .aimodel's program", root=path, max_bytes=4 << 30, hint="rebuild the .aimodel")
    if hashlib.sha256(code).digest() != safe_io.read_bytes(digest, "the .aimodel's program hash", root=path,
                                                           max_bytes=1 << 10, hint="rebuild the .aimodel"):
        raise LoadError(f"{program.name} does not match {digest.name}: the program was altered after it was saved",
                        hint="rebuild the .aimodel")


class Session:
    """One ``.aimodel`` loaded by the bundled runtime: ``run(feed)`` -> outputs by name."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: Any = None
        self._entered = False
        self.function: Any = None

    def __enter__(self) -> "Session":
        from coreai.authoring import AIModelAsset

        from interop.support.quiet import captured

        check_integrity(self.path)
        asset = AIModelAsset.load(str(self.path))
        summary = asset.summary(include_statistics=False)
        self.inputs = {n: declared(t) for n, t in summary.function_inputs(FUNCTION)}
        self.outputs = {n: declared(t) for n, t in summary.function_outputs(FUNCTION)}
        self._loop = asyncio.new_event_loop()
        try:
            with captured():  # the runtime prints "Loading function 'main'" on fd 1
                self._context = asset.executable()
                model = self._loop.run_until_complete(self._context.__aenter__())
                self._entered = True
                self.function = model.load_function(FUNCTION)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is None:
            return
        try:
            if self._entered:
                self._loop.run_until_complete(self._context.__aexit__(None, None, None))
        finally:
            self._loop.close()
            self._loop, self._context, self.function, self._entered = None, None, None, False

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from coreai.runtime import NDArray

        arrays = {k: NDArray(np.ascontiguousarray(v)) for k, v in feed.items()}
        out = self._loop.run_until_complete(self.function(arrays))
        return {k: np.array(v.numpy()) for k, v in out.items()}  # a copy: the runtime owns its buffers
