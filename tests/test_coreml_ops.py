"""Each translation in interop.targets.coreml.ops, converted through both capture paths
(torch.jit.trace and torch.export) and executed by the Core ML reference runtime, against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from interop.targets.coreml import ops as patches


class Diff(nn.Module):
    def forward(self, x):
        return torch.diff(x, dim=1) * 2


class DiffTwiceWithEnds(nn.Module):
    def forward(self, x):
        return torch.diff(x, n=2, dim=-1, prepend=x[..., :1], append=x[..., -2:])


class NewOnesLike(nn.Module):
    """new_ones with a static size and the input's dtype."""

    def forward(self, x):
        return x + x.new_ones((3, 4)) * 0.5


class NewOnesBoolScalar(nn.Module):
    """transformers' mask functions: ``q_idx.new_ones((), dtype=torch.bool)``."""

    def forward(self, x):
        keep = (x > 0) & x.new_ones((), dtype=torch.bool)
        return torch.where(keep, x, -x)


class NewOnesIntDynamic(nn.Module):
    """new_ones whose size follows a dynamic axis, with an integer dtype."""

    def forward(self, x):
        ones = x.new_ones((x.shape[0], x.shape[1]), dtype=torch.int64)
        return x * ones.cumsum(-1).to(x.dtype)


class BoolAnd(nn.Module):
    """``a & b`` on masks: torch.export records aten.__and__.Tensor."""

    def forward(self, x):
        return torch.where((x > -0.5) & (x < 0.5), x, x * 0.1)


class WhereScalar(nn.Module):
    """torch.where with a Python scalar: torch.export records aten.where.ScalarOther."""

    def forward(self, x):
        return torch.where(x > 0, x * 3.0, -1.5) + torch.where(x < 0.5, 2.0, 0.25)


class AdaptivePools(nn.Module):
    """Swin's pooler (adaptive_avg_pool1d to 1) and unequal bins (7 -> 3), avg and max."""

    def forward(self, x):
        avg = nn.functional.adaptive_avg_pool1d(x, 1).flatten(1)
        return torch.cat([avg, nn.functional.adaptive_avg_pool1d(x, 3).flatten(1),
                          nn.functional.adaptive_max_pool1d(x, 3).flatten(1)], dim=1)


class WindowPartition(nn.Module):
    """Swin's window partition and reverse: views to rank 6 around a transpose (or permute)."""

    def __init__(self, use_permute: bool):
        super().__init__()
        self.use_permute = use_permute

    def forward(self, x):
        b, h, w, c = x.shape
        six = x.view(b, h // 2, 2, w // 2, 2, c)
        moved = six.permute(0, 1, 3, 2, 4, 5) if self.use_permute else six.transpose(2, 3)
        windows = moved.contiguous().view(-1, 2, 2, c) * 2.0
        back = windows.view(b, h // 2, w // 2, 2, 2, c).transpose(2, 3).contiguous().view(b, h, w, c)
        return back + x


# (op, module, example shape, dynamic axes {axis: (min, max)})
CASES = [
    ("diff", Diff().eval(), (2, 5, 7), {}),
    ("diff", DiffTwiceWithEnds().eval(), (2, 3, 6), {0: (1, 8), 2: (3, 16)}),
    ("new_ones", NewOnesLike().eval(), (3, 4), {}),
    ("new_ones", NewOnesBoolScalar().eval(), (2, 6), {0: (1, 8)}),
    ("new_ones", NewOnesIntDynamic().eval(), (3, 5), {0: (1, 8), 1: (2, 9)}),
    ("__and__", BoolAnd().eval(), (2, 7), {0: (1, 8)}),
    ("where", WhereScalar().eval(), (2, 5), {0: (1, 8)}),
    ("adaptive_avg_pool1d", AdaptivePools().eval(), (2, 4, 7), {0: (1, 8)}),
    ("transpose", WindowPartition(use_permute=False).eval(), (2, 4, 6, 3), {0: (1, 8)}),
    ("permute", WindowPartition(use_permute=True).eval(), (2, 4, 6, 3), {0: (1, 8)}),
]
IDS = [f"{op}-{type(m).__name__}" for op, m, _, _ in CASES]


def _convert(module: nn.Module, shape: tuple[int, ...], dynamic: dict, capture: str):
    import coremltools as ct

    patches.register()
    example = torch.randn(*[s + 1 if a in dynamic else s for a, s in enumerate(shape)])
    common = dict(convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                  minimum_deployment_target=ct.target.iOS16)
    if capture == "trace":
        traced = torch.jit.trace(module, (example,))
        dims = [ct.RangeDim(lower_bound=dynamic[a][0], upper_bound=dynamic[a][1], default=s) if a in dynamic else s
                for a, s in enumerate(shape)]
        return ct.convert(traced, inputs=[ct.TensorType(name="x", shape=ct.Shape(dims))], **common), traced.graph
    from torch.export import Dim

    spec = {a: Dim(f"d{a}", min=lo, max=hi) for a, (lo, hi) in dynamic.items()} or None
    program = torch.export.export(module, (example,), dynamic_shapes=({"x": spec} if spec else None))
    program = program.run_decompositions({})
    return ct.convert(program, **common), program.graph


@pytest.mark.parametrize("capture", ["trace", "export"])
@pytest.mark.parametrize("op,module,shape,dynamic", CASES, ids=IDS)
def test_patch_agrees_with_torch(op, module, shape, dynamic, capture, tmp_path):
    from interop.runtimes import mil

    model, graph = _convert(module, shape, dynamic, capture)
    assert op in str(graph), f"the {capture} graph does not use {op}: the test would not exercise the patch"
    path = tmp_path / "m.mlpackage"
    model.save(str(path))
    loaded = mil.load_model(path)
    sizes = [shape] + ([tuple(dynamic[a][1] if a in dynamic else s for a, s in enumerate(shape))] if dynamic else [])
    for size in sizes:
        x = torch.randn(*size, generator=torch.Generator().manual_seed(1))
        want = module(x).numpy()
        (got,) = loaded.predict({"x": x.numpy()}).values()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_high_rank_views_leave_no_rank_6_tensor():
    """The point of the permute/transpose patches: Core ML rejects tensors of rank > 5."""
    model, _ = _convert(WindowPartition(use_permute=False).eval(), (2, 4, 6, 3), {0: (1, 8)}, "trace")
    program = model._mil_program
    ranks = [o.rank for op in program.functions["main"].operations for o in op.outputs]
    assert max(ranks) <= 5


def test_adjacent_groups():
    assert patches._adjacent_groups([0, 1, 3, 2, 4, 5]) == [[0, 1], [3], [2], [4, 5]]
    assert patches._adjacent_groups([5, 4, 3, 2, 1, 0]) == [[5], [4], [3], [2], [1], [0]]


def test_register_is_idempotent_and_covers_every_patch():
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    patches.register()
    patches.register()
    for name in [*patches.PATCHED, *patches.OVERRIDES]:
        assert _TORCH_OPS_REGISTRY.name_to_func_mapping[name].__module__ in (
            patches.__name__, patches.structured_ops.__name__, patches.export_ops.__name__), name
