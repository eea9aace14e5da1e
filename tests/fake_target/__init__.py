"""A fourth target that lives in this folder alone: the worked example of docs/contributing.md.

``numpy-mlp`` translates a model made of ``Linear`` layers and ``tanh`` / ``relu`` into an ``.npz``
(the op list and the weights) and executes it with numpy. Nothing outside this folder names it:
registering it is one line, ``interop.targets.register_target(NumpyMlpTarget)`` (the test does
that in a fixture; a package would put its module in ``interop.targets.BUILTIN`` or register on
import). tests/test_fake_target.py drives it through build, check, inspect, verify, bench, doctor
and ``--compress``.
"""

from tests.fake_target.target import NumpyMlpTarget  # noqa: F401
