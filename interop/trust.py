"""The one trust boundary: whether code from outside interop may run.

A model file is data unless the user passes ``--trust``. Every loader that could execute code
from a file asks this module first:

* pickles (``torch.save``d modules, every pickle inside a ``.pt2`` archive): unpickled only by
  torch's ``weights_only`` unpickler (tensors, containers, no imports); anything else needs trust;
* TorchScript programs and ``torch.export`` graphs: interop runs them to compute the reference, so
  their ops are checked first — only tensor computation (the ``aten``, ``prim``, ``prims`` and
  ``quantized`` namespaces) runs untrusted; ops with effects outside the tensor world (files,
  printing, custom-op libraries, collective communication, Python callbacks) need trust;
* ``MODULE:FN`` entry points and ``--factory`` import code from the current folder: the user named
  that code on the command line, which is trusting it (said in ``--help`` and the README).

Reports, config files, Manifest.json files and sidecars are data: nothing here lets them switch
trust on. The module also holds the checks that keep interop's reads inside the files it was given
(regular files only, packages and external data read only inside their own folder, archives whose
declared size is bounded).
"""

from __future__ import annotations

import contextlib
import io
import os
import pickletools
import re
import stat
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from interop.errors import LoadError

TRUST_HINT = "pass --trust if you trust this file (it runs code with your permissions)"

# Namespaces whose ops only compute on tensors; inside them, the ops that reach outside.
TENSOR_NAMESPACES = frozenset({"aten", "prim", "prims", "quantized", "_quantized", "rngprims"})
SIDE_EFFECT_OPS = frozenset({"aten::from_file", "aten::save", "aten::_print", "prim::Print", "prim::PythonOp",
                             "prim::CallFunction", "prim::CallMethod"})
# ``prim::CallFunction``/``CallMethod`` remain in an inlined graph only where TorchScript cannot
# see the callee (interfaces): refused because what they run cannot be checked.

ZIP_MAX_RATIO = 100  # declared decompressed bytes per archive byte
ZIP_MAX_BYTES = 1 << 30  # ... above which the ratio applies
ZIP_INFLATE_BYTES = 256 << 20  # compressed members may inflate this much before the ratio applies
PICKLE_SCAN_BYTES = 256 << 20  # members larger than this are not scanned as pickles (torch stores tensors there)


class Untrusted(LoadError):
    """Running this would execute code from the file; the user did not pass --trust."""

    kind = "untrusted"


# --- files -------------------------------------------------------------------------------------


def regular_file(path: Path | str, what: str) -> Path:
    """``path`` is an existing regular file (FIFOs, devices and sockets are refused: reading them
    can hang or never end)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        raise LoadError(f"{what} {shown(path)} does not exist", hint="check the path") from exc
    except OSError as exc:
        raise LoadError(f"cannot read {what} {shown(path)}: {exc.strerror}", hint="check the path") from exc
    if stat.S_ISDIR(mode):
        raise LoadError(f"{what} {shown(path)} is a folder, not a file", hint="pass a file")
    if not stat.S_ISREG(mode):
        raise LoadError(f"{what} {shown(path)} is not a regular file (a FIFO, device or socket)",
                        hint="pass a regular file")
    return path


def shown(path: Any) -> str:
    """A path or name as printed: control characters escaped, so a file name cannot forge a line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(path))


def inside(root: Path, relative: str, what: str) -> Path:
    """``root / relative``, refused when it leaves ``root`` (``..``, an absolute path, a symlink
    pointing out); symlinks that stay inside are followed."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise LoadError(f"{what} in {shown(root)} names no valid path ({relative!r})", hint="rebuild it")
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise LoadError(f"{what} in {shown(root)} points outside it ({shown(relative)})",
                        hint="interop reads an artifact only inside its own folder; rebuild it")
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(root / candidate))
    if real != real_root and real_root not in real.parents:
        raise LoadError(f"{what} in {shown(root)} is a link leaving it ({shown(relative)})",
                        hint="interop reads an artifact only inside its own folder; rebuild it")
    return root / candidate


def contained_tree(root: Path, what: str) -> None:
    """No symlink anywhere under ``root`` resolves outside it; no FIFO or device inside."""
    real_root = Path(os.path.realpath(root))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            if full.is_symlink():
                inside(root, rel, what)
            elif name in filenames and not stat.S_ISREG(os.lstat(full).st_mode):
                raise LoadError(f"{what} {shown(real_root)} holds {shown(rel)}, which is not a regular file",
                                hint="rebuild it")


def check_zip(path: Path) -> None:
    """Refuse archives whose declared decompressed size is absurd for their size (zip bombs).
    Files that are no zip pass (their own reader judges them)."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise LoadError(f"{shown(path)} is a damaged archive: {exc}", hint="re-save it") from exc
    check_zip_members(infos, shown(path), path.stat().st_size)


def check_zip_members(infos: Iterable[zipfile.ZipInfo], what: str, size: int) -> None:
    """The archive-size rules on a zip's central directory (nothing is inflated): the declared total
    is bounded against the file's size, and the members stored compressed may not inflate to more
    than ``ZIP_MAX_RATIO`` times their compressed bytes beyond ``ZIP_INFLATE_BYTES`` — torch.save
    stores its members uncompressed, so only a bomb gets there."""
    infos = list(infos)
    declared = sum(max(0, i.file_size) for i in infos)
    size = max(1, size)
    if declared > ZIP_MAX_BYTES and declared > ZIP_MAX_RATIO * size:
        raise LoadError(f"{what} declares {declared / 2**30:.1f} GiB decompressed from a "
                        f"{size / 2**20:.1f} MiB file (limit: {ZIP_MAX_RATIO}x the file above "
                        f"{ZIP_MAX_BYTES >> 30} GiB)", hint="this looks like a zip bomb; re-save the archive")
    packed = [i for i in infos if i.compress_type != zipfile.ZIP_STORED]
    inflated = sum(max(0, i.file_size) for i in packed)
    compressed = max(1, sum(max(0, i.compress_size) for i in packed))
    if inflated > ZIP_INFLATE_BYTES and inflated > ZIP_MAX_RATIO * compressed:
        worst = max(packed, key=lambda i: i.file_size)
        raise LoadError(f"{what}'s compressed members inflate to {inflated / 2**20:.0f} MiB from "
                        f"{compressed / 2**20:.1f} MiB ({shown(worst.filename)}: {worst.file_size / 2**20:.0f} MiB; "
                        f"limit: {ZIP_MAX_RATIO}x above {ZIP_INFLATE_BYTES >> 20} MiB)",
                        hint="this looks like a zip bomb; re-save the archive")


# --- pickles -----------------------------------------------------------------------------------


def pickle_globals(blob: bytes) -> list[str]:
    """The ``module.name`` globals a pickle would import, read from its opcodes (nothing runs)."""
    out: list[str] = []
    strings: list[str] = []
    stream = io.BytesIO(blob)
    while stream.tell() < len(blob):  # legacy torch.save files hold several pickles back to back
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name in ("GLOBAL", "INST"):
                    out.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    out.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:
            break
    return out


def archive_pickles(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every pickle in a file: the file itself, or each ``.pkl`` member of a zip
    and each member that is itself a ``torch.save`` zip (a ``.pt2``'s sample inputs, weights).
    Each archive's central directory is checked before any member is read (check_zip_members),
    a nested archive's too, and a member is read whole only once its first bytes say pickle."""
    if not zipfile.is_zipfile(path):
        yield str(path), path.read_bytes()
        return
    check_zip(path)
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.filename.endswith(".pkl"):
                yield info.filename, zf.read(info)
            elif 0 < info.file_size < PICKLE_SCAN_BYTES:
                with zf.open(info) as fh:
                    head = fh.read(4)
                if head == b"PK\x03\x04":
                    yield from _nested_pickles(zf, info, f"{shown(path)}'s member {shown(info.filename)}")
                elif head[:1] == b"\x80":
                    yield info.filename, zf.read(info)


def _nested_pickles(zf: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> Iterator[tuple[str, bytes]]:
    with zf.open(info) as fh, contextlib.suppress(zipfile.BadZipFile), zipfile.ZipFile(fh) as inner:
        check_zip_members(inner.infolist(), what, info.file_size)
        for entry in inner.infolist():
            if entry.filename.endswith(".pkl"):
                yield f"{info.filename}/{entry.filename}", inner.read(entry)


def risky_globals(path: Path, safe: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for _, blob in archive_pickles(path):
        for name in pickle_globals(blob):
            if not name.startswith(safe) and name not in found:
                found.append(name)
    return found


def refuse_pickle(path: Path, risky: list[str]) -> None:
    listed = ", ".join(risky[:12]) + (" ..." if len(risky) > 12 else "")
    raise Untrusted(f"{shown(path)} is a pickle that would import {listed or 'arbitrary code'}; "
                    "unpickling runs code, so it was not loaded",
                    hint=f"{TRUST_HINT}, or save it with torch.jit.save / torch.export.save, or save its "
                         "state_dict and pass --factory")


class _NoPickle:
    """Stands in for the ``pickle`` module inside torch's .pt2 reader: plain unpickling refused."""

    def __init__(self, what: str):
        self.what = what

    def loads(self, *_: Any, **__: Any) -> Any:
        raise Untrusted(f"{self.what} holds a pickled Python object; unpickling runs code, so it was not loaded",
                        hint=TRUST_HINT)

    load = loads


@contextlib.contextmanager
def no_code_unpickling(what: str) -> Iterator[None]:
    """While loading a ``.pt2``: every ``torch.load`` inside torch's reader runs with
    ``weights_only=True`` (its fallback to unrestricted unpickling is gone), plain ``pickle.loads``
    of opaque constants and TorchScript-pickled custom objects are refused."""
    import torch
    from torch.export.pt2_archive import _package

    real_load, real_pickle = torch.load, _package.pickle
    real_obj = getattr(torch._C, "_pickle_load_obj", None)

    def safe_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        try:
            return real_load(*args, **kwargs)
        except Untrusted:
            raise
        except Exception as exc:
            if "weights_only" in str(exc) or "Unsupported" in str(exc):
                found = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
                raise Untrusted(f"{what} holds a pickle that would import {', '.join(found) or 'code'}; "
                                "unpickling runs code, so it was not loaded", hint=TRUST_HINT) from exc
            raise

    def no_obj(*_: Any, **__: Any) -> Any:
        raise Untrusted(f"{what} holds a TorchScript-pickled custom object; loading it runs code",
                        hint=TRUST_HINT)

    torch.load, _package.pickle = safe_load, _NoPickle(what)
    if real_obj is not None:
        torch._C._pickle_load_obj = no_obj
    try:
        yield
    finally:
        torch.load, _package.pickle = real_load, real_pickle
        if real_obj is not None:
            torch._C._pickle_load_obj = real_obj


def _first(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:160]


# --- programs ----------------------------------------------------------------------------------


def refused_ops(kinds: Iterable[str]) -> list[str]:
    """The ops among ``kinds`` that reach outside the tensor world (sorted, unique)."""
    bad = set()
    for kind in kinds:
        base = kind.split(".")[0] if "::" in kind else kind
        namespace = base.partition("::")[0]
        if namespace not in TENSOR_NAMESPACES or base in SIDE_EFFECT_OPS or "from_file" in base:
            bad.add(base)
    return sorted(bad)


def check_program(kinds: Iterable[str], what: Path | str, trust: bool) -> None:
    bad = refused_ops(kinds)
    if bad and not trust:
        raise Untrusted(f"{shown(what)} runs op(s) with effects outside tensor computation ({', '.join(bad[:8])}); "
                        "interop runs only tensor computation from an untrusted model", hint=TRUST_HINT)


NATIVE_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia")  # compiled code torch.export.load would load


def check_pt2_archive(path: Path, trust: bool) -> None:
    """A ``.pt2`` may carry compiled native code (AOTInductor shared libraries, which
    ``torch.export.load`` dlopens): refused without trust."""
    if trust:
        return
    with zipfile.ZipFile(path) as zf:
        native = [n for n in zf.namelist() if n.partition("/")[2].startswith(NATIVE_DIRS) or n.endswith((".so", ".dylib", ".dll"))]
    if native:
        raise Untrusted(f"{shown(path)} holds compiled native code ({shown(native[0])}); loading it runs that code",
                        hint=TRUST_HINT)


_CODE_CALL = re.compile(r"\b(?:torch\.(from_file|save)\b|print\s*\(|ops\.([A-Za-z_][A-Za-z0-9_]*)\.)")


def check_torchscript_archive(path: Path, trust: bool) -> None:
    """Before ``torch.jit.load`` (which already runs a module's ``__setstate__``): the archive's
    TorchScript source calls nothing outside tensor computation."""
    if trust:
        return
    kinds: set[str] = set()
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if "/code/" in info.filename and info.filename.endswith(".py"):
                text = zf.read(info).decode("utf-8", "replace")
                for match in _CODE_CALL.finditer(text):
                    if match.group(1):
                        kinds.add(f"aten::{match.group(1)}")
                    elif match.group(2):
                        kinds.add(f"{match.group(2)}::op")
                    else:
                        kinds.add("prim::Print")
    check_program(kinds, path, trust)


def torchscript_ops(module: Any) -> set[str]:
    """Node kinds of every method of ``module`` and its submodules, calls inlined."""
    kinds: set[str] = set()
    for sub in [module, *module.modules()]:
        for name in sub._c._method_names():
            method = sub._c._get_method(name)
            graph = getattr(method, "inlined_graph", None) or method.graph
            kinds |= _graph_kinds(graph.nodes())
    return kinds


def _graph_kinds(nodes: Iterable[Any]) -> set[str]:
    kinds: set[str] = set()
    for node in nodes:
        kinds.add(node.kind())
        for block in node.blocks():
            kinds |= _graph_kinds(block.nodes())
    return kinds


def exported_ops(program: Any) -> set[str]:
    """Op names of every call in an ExportedProgram's graphs (higher-order ops' subgraphs too)."""
    kinds: set[str] = set()
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in getattr(graph, "nodes", ()):
            if node.op != "call_function":
                continue
            name = getattr(node.target, "name", None)
            if type(node.target).__name__ == "HigherOrderOperator" or "higher_order" in str(node.target):
                continue  # cond / map / scan: their subgraphs are scanned as modules
            if callable(name):
                kinds.add(name())
            elif getattr(node.target, "__module__", "").startswith(("_operator", "operator")):
                continue  # symbolic-size arithmetic
            else:
                kinds.add(f"python::{getattr(node.target, '__qualname__', node.target)}")
    return kinds


# --- artifacts on disk -------------------------------------------------------------------------


def check_onnx(path: Path) -> None:
    """An ONNX file is a regular file whose external data (every tensor stored outside it) lies
    inside its own folder, in regular files."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    regular_file(path, "ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise LoadError(f"{shown(path)} is not a valid ONNX model ({type(exc).__name__})",
                        hint="re-export it, or build from the PyTorch model") from exc
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        data = inside(path.parent, location, f"the external data of tensor {shown(tensor.name)}")
        regular_file(data, "ONNX external data")


def check_package(path: Path) -> Path:
    """An ``.mlpackage`` holds nothing that leads outside it (no symlink out, no FIFO or device)
    and its Manifest names its model spec inside ``Data/``. Returns that spec file."""
    import json

    if not path.is_dir():
        raise LoadError(f"{shown(path)} is not an .mlpackage folder", hint="pass the path of a saved .mlpackage")
    contained_tree(path, "package")
    manifest_path = inside(path, "Manifest.json", "the Manifest")
    try:
        manifest = json.loads(regular_file(manifest_path, "package Manifest").read_text())
        entry = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
        relative = entry["path"]
        if not isinstance(relative, str):
            raise TypeError(f"the root entry's path is a {type(relative).__name__}")
    except (OSError, KeyError, ValueError, TypeError, LoadError) as exc:
        raise LoadError(f"{shown(path)} is not a readable .mlpackage ({exc.__class__.__name__}: {shown(exc)})",
                        hint="rebuild it with `interop build`") from exc
    return regular_file(inside(path / "Data", relative, "a Manifest entry"), "model spec")


def check_artifact(path: Path) -> None:
    """The read-containment checks of a built artifact, by kind (before any library opens it)."""
    name = path.name.lower()
    if name.endswith(".onnx"):
        check_onnx(path)
    elif name.endswith((".mlpackage", ".mlpackage/")):
        check_package(path)
    elif path.is_dir() and not path.is_symlink():  # a folder artifact (.aimodel): nothing in it leads out
        contained_tree(path, "artifact")
    else:
        regular_file(path, "artifact")  # any other kind: never a FIFO or a device


def import_entry_point(text: str, what: str, error: type, fn_hint: str) -> tuple[Any, Any]:
    """Import ``MODULE:FN`` for ``what`` (a model factory, a --sampler): this runs the module's
    code, from the current folder or an installed package -- the one place interop does that.
    Returns (module, fn); a bad name, a failing import or a missing callable is ``error`` (exit 2)."""
    import importlib
    import sys

    from interop.errors import first_line

    mod_name, _, fn_name = text.partition(":")
    if not (mod_name and fn_name and all(p.isidentifier() for p in mod_name.split(".")) and fn_name.isidentifier()):
        raise error(f"bad {what} {text!r}", hint="write MODULE:FN, e.g. mypkg.models:build")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:
        raise error(f"cannot import {mod_name!r} for {what} {text}: {first_line(exc)}",
                    hint="run from the folder that holds it, or install it") from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise error(f"{mod_name} has no callable {fn_name!r} for {what}", hint=fn_hint)
    return module, fn
