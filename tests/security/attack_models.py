"""Models that misbehave on purpose, named as MODULE:FN by the attack tests (trusted code the
test itself names: what they attack is interop's containment around them, not the trust boundary).

* ``setsid_grandchild``: starts a grandchild that calls ``setsid`` (leaving the child's session
  and process group, so a kill of that group misses it) and sleeps for a day; its pid goes to the
  file ``$INTEROP_TEST_PIDFILE`` before the factory returns (no timing: the test reads the file).
* ``masked``: two inputs ``x`` and ``m``, output ``y = 2x``: with ``--compare-where y:m`` and ``m``
  drawn all zeros, the mask selects nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

ESCAPE = "import os, signal\nos.setsid()\nsignal.pause()\n"  # waits for a signal, not on the clock


def setsid_grandchild() -> nn.Module:
    proc = subprocess.Popen([sys.executable, "-c", ESCAPE], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    Path(os.environ["INTEROP_TEST_PIDFILE"]).write_text(str(proc.pid))
    from tests.fleet_models import Mlp

    torch.manual_seed(0)
    return Mlp(3).eval()


class Masked(nn.Module):
    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return x * 2 + m.float() * 0


def masked() -> nn.Module:
    return Masked().eval()
