"""Third-party noise capture hands every stream back exactly: a logging handler a library creates
inside a captured block (transformers makes its own on first use, on ``sys.stderr``, with
``handler.flush = sys.stderr.flush``) still works after the block, instead of printing
"--- Logging error --- ... I/O operation on closed file" into the next capture."""

from __future__ import annotations

import logging
import subprocess
import sys

from interop.support.quiet import captured
from tests.conftest import ROOT


def test_a_handler_made_inside_a_capture_writes_to_the_real_stream_after(capsys):
    logger = logging.getLogger("interop-test.library")
    with captured() as first:
        handler = logging.StreamHandler()  # on sys.stderr as it is inside the block
        handler.flush = sys.stderr.flush  # as transformers does
        logger.addHandler(handler)
        logger.warning("inside")
    try:
        logger.warning("after")
    finally:
        logger.removeHandler(handler)
    assert "inside" in " ".join(first.other)
    err = capsys.readouterr().err
    assert "after" in err and "Logging error" not in err


_CHILD = """
from interop.support.quiet import captured
with captured():
    from transformers.utils import logging as tlog
    tlog.get_logger("transformers.probe")
with captured() as noise:
    tlog.get_logger("transformers.probe").warning("a transformers warning")
print(noise.other)
"""


def test_transformers_warnings_are_captured_not_logging_errors():
    done = subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "a transformers warning" in done.stdout and "Logging error" not in done.stdout + done.stderr, done.stdout
