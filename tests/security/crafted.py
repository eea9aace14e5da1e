"""Real hostile files, made on the spot: each would do something outside tensor computation
(touch a marker file, overwrite a victim file, read outside its folder) if interop let it."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

from tests.conftest import SAMPLES


class Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def evil_pickle(path: Path, marker: Path) -> Path:
    """A ``torch.save``d object whose unpickling runs a shell command."""
    import torch

    torch.save(Evil(marker), path)
    return path


def _torch_save_bytes(obj) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes], add: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            rel = info.filename[len(root) + 1:]
            zout.writestr(info, replace.get(rel, zin.read(info)))
        for rel, data in (add or {}).items():
            zout.writestr(f"{root}/{rel}", data)
    return dst


def good_pt2(path: Path) -> Path:
    """A small torch.export program with one weight (a Linear)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    torch.export.save(torch.export.export(model, (torch.randn(2, 4),)), path)
    return path


def evil_pt2(kind: str, path: Path, marker: Path) -> Path:
    """A ``.pt2`` whose inner pickle runs ``touch marker``: in its sample inputs, a weight stored
    as a pickle, or an opaque constant (plain ``pickle.loads`` in torch's reader)."""
    import pickle

    good = good_pt2(path.with_name(path.stem + ".good.pt2"))
    payload = _torch_save_bytes(Evil(marker))
    if kind == "sample_inputs":
        return _rewrite_zip(good, path, {"data/sample_inputs/model.pt": payload})
    with zipfile.ZipFile(good) as zf:
        root = zf.namelist()[0].split("/")[0]
        weights = json.loads(zf.read(f"{root}/data/weights/model_weights_config.json"))
    if kind == "weight":
        fqn = next(iter(weights["config"]))
        weights["config"][fqn]["use_pickle"] = True
        weights["config"][fqn]["path_name"] = "weight_evil"
        return _rewrite_zip(good, path, {"data/weights/model_weights_config.json": json.dumps(weights).encode()},
                            {"data/weights/weight_evil": payload})
    constants = {"config": {"evil": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                     "tensor_meta": None}}}
    return _rewrite_zip(good, path, {"data/constants/model_constants_config.json": json.dumps(constants).encode()},
                        {"data/constants/opaque_obj_0": pickle.dumps(Evil(marker))})


def native_pt2(path: Path) -> Path:
    """A ``.pt2`` carrying an AOTInductor shared library (torch.export.load dlopens those)."""
    good = good_pt2(path.with_name(path.stem + ".good.pt2"))
    return _rewrite_zip(good, path, {}, {"data/aotinductor/model/model.so": b"\x7fELF not really"})


def scripted(kind: str, path: Path, victim: Path) -> Path:
    """A TorchScript module whose forward (or, for ``setstate``, whose loading) writes ``victim``
    through ``torch.from_file(..., shared=True)``, or prints (``print``)."""
    import torch

    source = {
        "from_file": f'''
import torch
class M(torch.nn.Module):
    def forward(self, x):
        s = torch.from_file({str(victim)!r}, shared=True, size=4, dtype=torch.uint8)
        s.fill_(88)
        return x + s.sum().float() * 0
''',
        "print": '''
import torch
class M(torch.nn.Module):
    def forward(self, x):
        print("hello from the model")
        return x + 1
''',
        "setstate": f'''
import torch
from typing import Tuple
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.k = 1
    def forward(self, x):
        return x * self.k
    @torch.jit.export
    def __getstate__(self) -> Tuple[int, bool]:
        return (self.k, self.training)
    @torch.jit.export
    def __setstate__(self, state: Tuple[int, bool]) -> None:
        s = torch.from_file({str(victim)!r}, shared=True, size=4, dtype=torch.uint8)
        s.fill_(88)
        self.k = state[0] + int(s.sum()) * 0
        self.training = state[1]
''',
    }[kind]
    module_file = path.with_suffix(".py")
    module_file.write_text(source)
    namespace: dict = {}
    exec(compile(source, str(module_file), "exec"), namespace)  # noqa: S102 - the test's own code
    import linecache

    linecache.cache[str(module_file)] = (len(source), None, source.splitlines(True), str(module_file))
    torch.jit.save(torch.jit.script(namespace["M"]()), str(path))
    return path


def zip_bomb(src: Path, dst: Path, declared: int = 0xFFFFFFF0) -> Path:
    """``src`` (a zip) with every member's declared decompressed size in the central directory
    raised to ``declared`` (4 GiB): what a zip bomb announces, without the bytes."""
    data = bytearray(src.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        struct.pack_into("<I", data, pos + 24, declared)
        pos = data.find(b"PK\x01\x02", pos + 4)
    dst.write_bytes(bytes(data))
    return dst


def onnx_with_external(folder: Path, location: str) -> Path:
    """A one-Add ONNX model whose weight lives in external data at ``location``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((1, 6, 1), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "24")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 1])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def copy_sample(name: str, dst: Path) -> Path:
    shutil.copy(SAMPLES / name, dst)
    return dst


def _deflated_zeros(size: int) -> bytes:
    """A raw deflate stream that inflates to ``size`` zero bytes, made without holding them: one
    compressed MiB repeated (each segment ends on a full flush, so segments are independent)."""
    import zlib

    mib = 1 << 20
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = comp.compress(bytes(mib)) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.compress(bytes(size % mib)) + comp.flush()
    return segment * (size // mib) + tail


def _deflated_member(zf: zipfile.ZipFile, name: str, size: int) -> None:
    """Writes ``name`` as a deflated member inflating to ``size`` zeros (CRC left wrong: a bomb
    does its damage while inflating, before any CRC is checked)."""
    raw = _deflated_zeros(size)
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_STORED
    zf.writestr(info, raw)
    info.compress_type, info.file_size = zipfile.ZIP_DEFLATED, size  # patched below in the bytes


def _patch_deflated(data: bytearray, sizes: dict[str, int]) -> bytes:
    """Marks the named members deflated with the given inflated size, in local and central headers."""
    for sig, method_at, size_at, name_len_at, name_at in ((b"PK\x03\x04", 8, 22, 26, 30), (b"PK\x01\x02", 10, 24, 28, 46)):
        pos = data.find(sig)
        while pos != -1:
            (name_len,) = struct.unpack_from("<H", data, pos + name_len_at)
            name = bytes(data[pos + name_at: pos + name_at + name_len]).decode()
            if name in sizes:
                struct.pack_into("<H", data, pos + method_at, zipfile.ZIP_DEFLATED)
                struct.pack_into("<I", data, pos + size_at, sizes[name])
            pos = data.find(sig, pos + 4)
    return bytes(data)


def deflate_bomb(src: Path, dst: Path, size: int = 3 << 30, nested: bool = False) -> Path:
    """``src`` (a torch.save zip) plus one member of zeros that really inflates to ``size`` bytes
    (3 GiB from about 3 MB on disk): added as ``<prefix>/data/bomb`` or, with ``nested``, inside a
    zip stored as a member (``<prefix>/extra/inner.pt``, holding ``archive/data.pkl``)."""
    with zipfile.ZipFile(src) as zf:
        prefix = zf.namelist()[0].split("/")[0]
    shutil.copyfile(src, dst)
    if nested:
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as izf:
            _deflated_member(izf, "archive/data.pkl", size)
        blob = _patch_deflated(bytearray(inner.getvalue()), {"archive/data.pkl": size})
        with zipfile.ZipFile(dst, "a") as zf:
            zf.writestr(f"{prefix}/extra/inner.pt", blob)
        return dst
    name = f"{prefix}/data/bomb"
    with zipfile.ZipFile(dst, "a") as zf:
        _deflated_member(zf, name, size)
    dst.write_bytes(_patch_deflated(bytearray(dst.read_bytes()), {name: size}))
    return dst
