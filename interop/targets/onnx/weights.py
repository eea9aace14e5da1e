"""ONNX models held without their weights: the ONNX target keeps every model as a *weightless*
ModelProto whose tensors over 4 KB are ONNX external data (``data_location = EXTERNAL``, a
location, an offset and a length) in data files in the build's work folder. Shape inference, the
checker, dim naming and metadata work on that structure alone; the artifact is written by
streaming each tensor's bytes from its data file into the .onnx (or, over 2 GB, into the
``.onnx.data`` beside it). interop itself never serializes the weights nor holds a parsed copy
of them (onnxsim's result is stored away as it comes back): what remains are the copies the tools
make for themselves -- torch's exporter folding transposed weights, ONNX Runtime building a
session, onnxsim's working copy (of the tensors it must see: ``passive`` ones it is spared) --
one at a time, each freed (and given back to the OS, interop/memory.py) before the next.

Tensors of 4 KB or less stay in the graph, so shape inference's data propagation still sees
shape-like constants.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from interop import patches

THRESHOLD = 4096  # bytes: larger tensors live in a data file
_CHUNK = 1 << 20  # bytes copied per read when streaming a tensor into a file

# torch dtype name -> onnx.TensorProto data type (the values of onnx's DataType enum)
_ONNX_TYPES = {"float32": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7, "bool": 9,
               "float16": 10, "float64": 11, "uint32": 12, "uint64": 13, "complex64": 14, "complex128": 15,
               "bfloat16": 16}
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data")


class DataFile:
    """An append-only file of tensor bytes in the work folder, referred to as ONNX external data by
    its name (``location``, relative to the folder the models live in)."""

    def __init__(self, path: Path):
        self.path = path
        self.location = path.name
        self.size = 0
        path.write_bytes(b"")

    def append(self, buffer: Any) -> tuple[int, int]:
        """Write ``buffer`` (any bytes-like object) at the end; returns (offset, length)."""
        view = memoryview(buffer).cast("B")
        with open(self.path, "ab") as f:
            f.write(view)
        offset, self.size = self.size, self.size + view.nbytes
        return offset, view.nbytes

    def add(self, tensor: Any, buffer: Any) -> None:
        """Store ``buffer`` as the data of the TensorProto ``tensor`` (which becomes external)."""
        refer(tensor, self.location, *self.append(buffer))


def refer(tensor: Any, location: str, offset: int, length: int) -> None:
    """Make a TensorProto external data at ``location`` [offset, offset + length)."""
    import onnx

    for name in _DATA_FIELDS:
        tensor.ClearField(name)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def reference(tensor: Any) -> tuple[str, int, int] | None:
    """(location, offset, length) of an external TensorProto; None for one held in the graph."""
    import onnx

    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    info = {e.key: e.value for e in tensor.external_data}
    length = int(info["length"]) if "length" in info else tensor_bytes(tensor)
    return info["location"], int(info.get("offset", 0)), length


def tensor_bytes(tensor: Any) -> int:
    """The size of a TensorProto's data from its type and dims (no data is read)."""
    from onnx import helper

    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:  # strings and exotic types: treated as small (they stay in the graph)
        return 0
    return math.prod(tensor.dims) * itemsize


def externals(model: Any) -> list[Any]:
    """The main graph's initializers that live in data files."""
    return [t for t in model.graph.initializer if reference(t) is not None]


# --- the TorchScript exporter, without a serialized copy of the weights --------------------------


@dataclass
class Held:
    """Parameters the TorchScript exporter was told to leave out of the model it serialized, and
    the order of every parameter among the graph's inputs (the order its initializers take)."""

    params: dict[str, Any] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)


@contextlib.contextmanager
def weights_apart(threshold: int = THRESHOLD) -> Iterator[Held]:
    """While torch's TorchScript exporter runs: parameters (after its constant folding and
    de-duplication) over ``threshold`` bytes are left out of the model it serializes -- they stay
    typed graph inputs, exactly as with ``export_params=False`` -- and handed back in the yielded
    ``Held`` for ``attach`` to store, one copy, never serialized. Without the hook (another torch)
    or on a big-endian machine the export runs unchanged and ``Held`` stays empty."""
    held = Held()
    with patches.applying("torch-onnx-export-params", held, threshold):  # the inventory applies it
        yield held


def export_params_apart(held: Held, threshold: int) -> patches.Undo:
    """The ``torch-onnx-export-params`` patch: ``torch._C.Graph._export_onnx`` wrapped to leave
    parameters over ``threshold`` bytes out and hand them to ``held`` (its undo returned; a no-op
    without the hook or on a big-endian machine)."""
    import torch

    graph_type = torch._C.Graph
    original = getattr(graph_type, "_export_onnx", None)
    if original is None or sys.byteorder != "little":
        return lambda: None

    def export_onnx(graph: Any, params: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        keep_as_inputs = args[5] if len(args) > 5 else kwargs.get("keep_initializers_as_inputs", False)
        if keep_as_inputs or not isinstance(params, dict):
            return original(graph, params, *args, **kwargs)
        apart = {name: t for name, t in params.items() if _separable(t, threshold)}
        held.params = apart
        held.order = [v.debugName() for v in graph.inputs() if v.debugName() in params]
        return original(graph, {k: v for k, v in params.items() if k not in apart}, *args, **kwargs)

    return patches.swap(graph_type, "_export_onnx", export_onnx)


def _separable(tensor: Any, threshold: int) -> bool:
    import torch

    return (isinstance(tensor, torch.Tensor) and not tensor.is_quantized and tensor.layout == torch.strided
            and str(tensor.dtype).removeprefix("torch.") in _ONNX_TYPES
            and tensor.numel() * tensor.element_size() > threshold)


def attach(model: Any, held: Held, data: DataFile) -> None:
    """Turn the graph inputs the exporter left for ``held``'s parameters into initializers whose
    bytes go to ``data``, in the order the exporter gives initializers; then drop the tensors."""
    import onnx

    if not held.params:
        return
    graph = model.graph
    inline = {t.name: t for t in graph.initializer}
    ordered = []
    for name in held.order + [n for n in inline if n not in held.order]:
        if name in held.params:
            tensor = held.params.pop(name).detach()
            proto = onnx.TensorProto(name=name, data_type=_ONNX_TYPES[str(tensor.dtype).removeprefix("torch.")],
                                     dims=list(tensor.shape))
            data.add(proto, _raw(tensor))
            ordered.append(proto)
        elif name in inline:
            ordered.append(inline.pop(name))
    if held.params:
        raise RuntimeError(f"the exporter left parameters out that are not graph inputs: {sorted(held.params)[:3]}")
    stored = {t.name for t in ordered if reference(t) is not None}
    inputs = [i for i in graph.input if i.name not in stored]
    del graph.input[:]
    graph.input.extend(inputs)
    del graph.initializer[:]
    graph.initializer.extend(ordered)


def _raw(tensor: Any) -> Any:
    """A tensor's bytes as ONNX raw_data holds them (little-endian, row-major), without a copy
    when it is contiguous."""
    import torch

    flat = tensor.contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy() if flat.dtype != torch.uint8 else flat.numpy()


# --- loading and normalising --------------------------------------------------------------------


def load(path: Path) -> Any:
    """The weightless model of an .onnx file: tensors over THRESHOLD bytes external data (those
    the file holds itself are moved to ``<path>.weights``), smaller ones in the graph, whatever
    split the file has."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if any(_large(t) and reference(t) is None for t in model.graph.initializer):
        model = store_weights(model, DataFile(path.with_name(path.name + ".weights")))
    for tensor in externals(model):
        location, offset, length = reference(tensor)
        if length <= THRESHOLD:
            with open(path.parent / location, "rb") as f:
                f.seek(offset)
                raw = f.read(length)
            for name in ("external_data", "data_location"):
                tensor.ClearField(name)
            tensor.raw_data = raw
    return model


def store_weights(model: Any, data: DataFile) -> Any:
    """A weightless copy of a model held with its weights in memory: main-graph initializers over
    THRESHOLD bytes are written to ``data`` (one tensor's bytes at a time) and become external."""
    from onnx import numpy_helper

    light = _skeleton(model)
    for tensor in model.graph.initializer:
        if not _large(tensor) or reference(tensor) is not None:
            light.graph.initializer.append(tensor)
            continue
        meta = light.graph.initializer.add()
        _copy_fields(tensor, meta, skip=_DATA_FIELDS)
        raw = tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()
        data.add(meta, raw)
        del raw
    return light


def lifted(model: Any) -> Any:
    """A copy in which every initializer over THRESHOLD bytes (external or held) is a typed graph
    input instead: what ONNX shape inference and the checker are shown (shape inference never
    reads large tensors' values, and cannot read external ones). Costs no copy of the weights."""
    from onnx import helper

    view = _skeleton(model)
    names = {i.name for i in view.graph.input}
    for tensor in model.graph.initializer:
        if not _large(tensor) and reference(tensor) is None:
            view.graph.initializer.append(tensor)
        elif tensor.name not in names:
            view.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return view


def _large(tensor: Any) -> bool:
    return tensor_bytes(tensor) > THRESHOLD  # strings count as small: they stay in the graph


def _skeleton(model: Any) -> Any:
    """A copy of the model without the main graph's initializers (nothing large is copied)."""
    import onnx

    out = onnx.ModelProto()
    _copy_fields(model, out, skip=("graph",))
    _copy_fields(model.graph, out.graph, skip=("initializer",))
    return out


def _copy_fields(src: Any, dst: Any, skip: tuple[str, ...]) -> None:
    for desc, value in src.ListFields():
        if desc.name in skip:
            continue
        if desc.is_repeated:
            getattr(dst, desc.name).extend(value)
        elif desc.message_type is not None:
            getattr(dst, desc.name).CopyFrom(value)
        else:
            setattr(dst, desc.name, value)


# --- writing -------------------------------------------------------------------------------------


def write(model: Any, path: Path, base: Path, data_name: str, limit: int) -> bool:
    """Write ``model`` (external tensors resolved against ``base``) as one self-contained file, the
    tensors' bytes streamed from their data files; when the model would exceed ``limit`` bytes
    (protobuf's 2 GB), as ``path`` plus ``data_name`` beside it instead. Returns True for the
    latter."""
    stored = externals(model)
    if sum(reference(t)[2] for t in stored) + model.ByteSize() > limit:
        _write_external(model, path, base, data_name)
        return True
    _write_inline(model, path, base)
    return False


def _write_external(model: Any, path: Path, base: Path, data_name: str) -> None:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    data = DataFile(path.parent / data_name)
    with open(data.path, "ab") as dst:
        for tensor in externals(out):
            location, offset, length = reference(tensor)
            refer(tensor, data_name, data.size, length)
            _copy(base / location, offset, length, dst)
            data.size += length
    onnx.save_model(out, str(path))


def _write_inline(model: Any, path: Path, base: Path) -> None:
    """Protobuf's encoding of the model, written piecewise: the model's fields, then the graph
    (field 7) as its fields followed by one record per initializer (field 5); an external tensor's
    record is its metadata followed by its bytes as raw_data (field 9), copied from the data file."""
    import onnx

    head = onnx.ModelProto()
    head.CopyFrom(model)
    head.ClearField("graph")
    rest = onnx.GraphProto()
    rest.CopyFrom(model.graph)
    del rest.initializer[:]
    body = rest.SerializeToString()
    records = []
    for tensor in model.graph.initializer:
        ref = reference(tensor)
        if ref is None:
            records.append((tensor.SerializeToString(), None))
            continue
        meta = onnx.TensorProto()
        meta.CopyFrom(tensor)
        for name in ("external_data", "data_location"):
            meta.ClearField(name)
        records.append((meta.SerializeToString() + _TAG_RAW + _varint(ref[2]), ref))
    sizes = [len(head_bytes) + (ref[2] if ref else 0) for head_bytes, ref in records]
    graph_size = len(body) + sum(1 + len(_varint(n)) + n for n in sizes)
    with open(path, "wb") as f:
        f.write(head.SerializeToString())
        f.write(_TAG_GRAPH + _varint(graph_size))
        f.write(body)
        for (head_bytes, ref), size in zip(records, sizes):
            f.write(_TAG_INITIALIZER + _varint(size))
            f.write(head_bytes)
            if ref is not None:
                _copy(base / ref[0], ref[1], ref[2], f)


_TAG_GRAPH, _TAG_INITIALIZER, _TAG_RAW = bytes([7 << 3 | 2]), bytes([5 << 3 | 2]), bytes([9 << 3 | 2])


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _copy(src: Path, offset: int, length: int, dst: Any) -> None:
    """Append ``length`` bytes of ``src`` from ``offset`` to the open file ``dst``: in the kernel
    (copy_file_range, Linux) when it can, else a chunk at a time."""
    with open(src, "rb") as f:
        if hasattr(os, "copy_file_range"):
            dst.flush()
            try:
                while length:
                    copied = os.copy_file_range(f.fileno(), dst.fileno(), length, offset)
                    if not copied:
                        raise OSError(f"{src} ends before offset {offset} + {length}")
                    offset, length = offset + copied, length - copied
                return
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise
        f.seek(offset)
        while length:
            chunk = f.read(min(_CHUNK, length))
            if not chunk:
                raise OSError(f"{src} ends before offset {offset} + {length}")
            dst.write(chunk)
            length -= len(chunk)


_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


def same_data(a: Any, b: Any, base: Path) -> bool:
    """Whether two external tensors hold the same bytes (read a chunk at a time)."""
    (la, oa, na), (lb, ob, nb) = reference(a), reference(b)
    if na != nb:
        return False
    with open(base / la, "rb") as fa, open(base / lb, "rb") as fb:
        fa.seek(oa)
        fb.seek(ob)
        left = na
        while left:
            n = min(_CHUNK, left)
            if fa.read(n) != fb.read(n):
                return False
            left -= n
    return True


# --- what onnxsim need not be shown ---------------------------------------------------------------

_SHAPE_ONLY = {"Shape", "Size"}  # outputs depend on an input's shape, which may be static: foldable


def passive(model: Any, base: Path) -> set[str]:
    """External initializers onnxsim can only pass through unchanged, so it may be shown them as
    typed graph inputs instead of their bytes: each is used only as the data (input 0) of Gather
    nodes whose indices depend on a graph input's *values* (never foldable, whatever the shapes:
    an embedding table indexed by token ids), and holds different bytes from every other
    initializer of its type and shape (onnxsim merges duplicate initializers). A graph with
    subgraphs gets none. tests/test_onnx_weights.py checks onnxsim's result is the same either way."""
    import onnx

    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return set()
    stored = externals(model)
    initialized = {t.name for t in graph.initializer}
    varying = {i.name for i in graph.input if i.name not in initialized}
    uses: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type not in _SHAPE_ONLY and any(x in varying for x in node.input):
            varying.update(o for o in node.output if o)
        for position, name in enumerate(node.input):
            uses.setdefault(name, []).append((node, position))
    outputs = {o.name for o in graph.output}
    found = set()
    for tensor in stored:
        used = uses.get(tensor.name, [])
        if not used or tensor.name in outputs:
            continue
        if not all(n.op_type == "Gather" and n.domain in ("", "ai.onnx") and position == 0 and len(n.input) > 1
                   and n.input[1] in varying for n, position in used):
            continue
        twins = [o for o in stored
                 if o is not tensor and o.data_type == tensor.data_type and list(o.dims) == list(tensor.dims)]
        if not any(same_data(tensor, o, base) for o in twins):
            found.add(tensor.name)
    return found


def shown_as_inputs(model: Any, names: set[str]) -> Any:
    """A copy in which the named initializers are typed graph inputs."""
    import onnx
    from onnx import helper

    view = onnx.ModelProto()
    view.CopyFrom(model)
    graph = view.graph
    keep = [t for t in graph.initializer if t.name not in names]
    graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for t in graph.initializer if t.name in names)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return view


def restore(model: Any, source: Any, names: set[str]) -> None:
    """Turn the graph inputs ``shown_as_inputs`` made of ``names`` back into ``source``'s
    initializers (external, the same data), where ``model`` still uses them, each at its place in
    ``source``'s order (onnxsim keeps the order of the initializers it keeps)."""
    graph = model.graph
    used = {x for node in graph.node for x in node.input}
    rank = {t.name: i for i, t in enumerate(source.graph.initializer)}
    back = sorted((t for t in source.graph.initializer if t.name in names and t.name in used),
                  key=lambda t: rank[t.name])
    inputs = [i for i in graph.input if i.name not in names]
    del graph.input[:]
    graph.input.extend(inputs)
    if not back:
        return
    merged = list(graph.initializer)
    for tensor in back:
        at = next((i for i, t in enumerate(merged) if rank.get(t.name, -1) > rank[tensor.name]), len(merged))
        merged.insert(at, tensor)
    del graph.initializer[:]
    graph.initializer.extend(merged)
