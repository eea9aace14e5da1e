"""Where a trace unrolled Python that runs a size-dependent number of times (a ``for t in
range(x.shape[1])`` loop): trace the model again at another size and compare, per line of the
user's code, how many graph nodes each trace recorded there. The lines whose count changed are the
ones whose Python depends on the size -- the cause to name when the first trace departs there."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

_FRAME = re.compile(r"^(.*)\((\d+)\): \S+$")


def node_lines(graph: Any) -> Counter:
    """(file, line) of the user's code each node of ``graph`` was recorded at -> node count."""
    from interop.support.causes import is_user_file

    counts: Counter = Counter()
    for node in graph.nodes():
        for frame in node.sourceRange().splitlines():
            match = _FRAME.match(frame.strip())
            if match and is_user_file(match.group(1)):
                counts[(match.group(1), int(match.group(2)))] += 1
                break
    return counts


def unrolled_lines(module: Any, traced: Any, sample: dict[str, Any], names: list[str], limit: int = 3) -> list[str]:
    """``file:line `code``` of the user's lines that recorded a different number of nodes when traced
    at ``sample``'s sizes than in ``traced`` (made at the example's); [] when none did or the second
    trace fails itself."""
    import warnings

    import torch

    from interop.runtimes.torch_ref import to_torch
    from interop.support.causes import location

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            other = torch.jit.trace(module, tuple(to_torch(sample, names)), strict=False, check_trace=False)
        before, after = node_lines(traced.inlined_graph), node_lines(other.inlined_graph)
    except Exception:
        return []
    changed = sorted(k for k in set(before) | set(after) if before[k] != after[k])
    return [location(*k) for k in changed[:limit]]
