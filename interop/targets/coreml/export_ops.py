"""Core ML translations of what a ``torch.export`` program holds and coremltools 9's
ExportedProgram frontend lacks (the TorchScript frontend has them): the recurrent layers
``aten.lstm.input`` / ``aten.gru.input``, ``aten.alias``, and the symbolic-size arithmetic
(``sym_not``, ``%``) of the runtime asserts a dynamic-shape capture keeps. Registered by
interop.targets.coreml.ops (``PATCHED``) only while coremltools converts; checked against torch
through the reference runtime in tests/test_no_torchscript.py (multi-layer, bidirectional,
``batch_first``, with and without initial states).

The recurrent translations are coremltools' own TorchScript ones (MIL ``lstm`` / ``gru``, one op
per layer and direction): a TorchScript node has one output per result, a torch.export node one
output holding a tuple that ``getitem`` nodes pick from. The node is shown one name per result
while coremltools' translation runs, and the results are bound as one tuple under the node's name.
"""

from __future__ import annotations

from typing import Any

PATCHED = {"lstm.input": "aten::lstm (torch.export)", "gru.input": "aten::gru (torch.export)",
           "alias": "aten::alias (torch.export)", "sym_not": "sym_not (torch.export runtime asserts)",
           "mod": "% on symbolic sizes (torch.export runtime asserts)"}


def functions() -> dict[str, Any]:
    """name -> translation, for coremltools' torch op registry."""
    return {"lstm.input": _lstm, "gru.input": _gru, "alias": _alias, "sym_not": _sym_not, "mod": _mod}


def _results(context: Any, node: Any, translate: Any, count: int) -> None:
    """Run a TorchScript-style translation producing ``count`` results, bind them as one tuple."""
    names = [f"{node.name}_result{i}" for i in range(count)]
    saved = node.outputs
    node.outputs = names
    try:
        translate(context, node)
    finally:
        node.outputs = saved
    context.add(tuple(context[n] for n in names), torch_name=node.name)


def _shaped_states(context: Any, node: Any) -> None:
    """Give the initial states their static leading size (layers x directions) and hidden size.
    coremltools' translation splits a bidirectional state in two along its first axis, which must
    be known; a state made by a shape-losing translation (``expand`` of a broadcast constant to
    the dynamic batch comes out all-symbolic) would fail with "Unknown value for constant: None".
    States that already have it, and states of unknown rank, are left as they are."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs

    inputs = _get_inputs(context, node, expected=9)
    states, params = inputs[1], inputs[2]
    many = isinstance(states, (list, tuple))
    leading = int(inputs[4].val) * (2 if inputs[7].val else 1)
    hidden = int(params[1].shape[1])  # weight_hh_l0: (gates * hidden, hidden)
    names = []
    for i, state in enumerate(states if many else [states]):
        name = node.inputs[1][i] if many else node.inputs[1]
        if getattr(state, "rank", None) == 3 and not isinstance(state.shape[0], int):
            name = f"{node.name}_state{i}"
            context.add(mb.reshape(x=state, shape=[leading, -1, hidden], name=name), torch_name=name)
        names.append(name)
    node.inputs = [node.inputs[0], tuple(names) if many else names[0], *node.inputs[2:]]


def _lstm(context: Any, node: Any) -> None:
    """aten.lstm.input(x, [h0, c0], params, has_biases, num_layers, dropout, train, bidirectional,
    batch_first) -> (output, h_n, c_n)."""
    from coremltools.converters.mil.frontend.torch import ops as torch_ops

    _shaped_states(context, node)
    _results(context, node, torch_ops.lstm, 3)


def _gru(context: Any, node: Any) -> None:
    """aten.gru.input(x, h0, params, has_biases, num_layers, dropout, train, bidirectional,
    batch_first) -> (output, h_n)."""
    from coremltools.converters.mil.frontend.torch import ops as torch_ops

    _shaped_states(context, node)
    _results(context, node, torch_ops.gru, 2)


def max_pool(context: Any, node: Any) -> None:
    """aten.max_pool{1,2,3}d with its defaults left out (TorchScript's TS2EPConverter records
    ``max_pool2d(x, kernel)``): the stride is the kernel, as torch says; coremltools' own
    translation, which wants the stride given, does the rest."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch import ops as torch_ops
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs

    inputs = _get_inputs(context, node)
    if len(inputs) == 2:
        name = f"{node.name}_stride"
        context.add(mb.const(val=inputs[1].val, name=name), torch_name=name)
        node.inputs = [*node.inputs, name]
    torch_ops.max_pool1d(context, node)


def _alias(context: Any, node: Any) -> None:
    """aten.alias(x): x itself (GPT-2's attention mask path; coremltools knows ``alias_copy``)."""
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs

    context.add(_get_inputs(context, node, expected=1)[0], torch_name=node.name)


def _sym_not(context: Any, node: Any) -> None:
    """torch.sym_not(b): logical not of a symbolic boolean (a runtime assert's condition)."""
    from coremltools.converters.mil.frontend.torch.ops import logical_not

    logical_not(context, node)


def _mod(context: Any, node: Any) -> None:
    """``a % b`` on sizes (Python's floor modulo, as MIL ``mod``); folded when both are known."""
    import numpy as np
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs

    a, b = _get_inputs(context, node, expected=2)
    if a.val is not None and b.val is not None:
        context.add(mb.const(val=np.asarray(np.mod(a.val, b.val)), name=node.name))
        return
    context.add(mb.mod(x=a, y=b, name=node.name))
