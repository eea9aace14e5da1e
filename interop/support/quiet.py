"""Capture third-party noise (coremltools' proxy-loading lines, tqdm bars, exporter chatter,
warnings) at the file-descriptor level, and summarise what matters as report warnings."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from typing import Iterator

# (pattern, summary or None to drop)
_KNOWN = [
    (re.compile(r"Failed to load _MLModelProxy|Failed to load _ML\w+Proxy|libcoremlpython"),
     "coremltools: the native Core ML framework is not available on this platform; the Core ML artifact is "
     "executed by interop's reference runtime instead"),
    (re.compile(r"Torch version [\w.+]+ has not been tested with coremltools"),
     "coremltools has not been tested with this torch version; interop's agreement checks are what make the "
     "artifact trusted"),
    (re.compile(r"(Converting PyTorch Frontend|Running MIL|Running compression|it/s\]|passes/s\]|ops/s\])"), None),
    (re.compile(r"^\s*\[torch\.onnx\]"), None),
    (re.compile(r"^\s*(Applied \d+ of general pattern rewrite rules|✅|❌)"), None),
    (re.compile(r"^\s*$"), None),
]


class Noise:
    """What a captured block printed, sorted into summaries and other lines."""

    def __init__(self) -> None:
        self.summaries: list[str] = []
        self.other: list[str] = []

    def feed(self, text: str) -> None:
        for raw in re.split(r"[\r\n]+", text):
            line = raw.strip()
            for pattern, summary in _KNOWN:
                if pattern.search(line):
                    if summary and summary not in self.summaries:
                        self.summaries.append(summary)
                    break
            else:
                if line and line not in self.other:
                    self.other.append(line[:300])


@contextlib.contextmanager
def captured(noise: Noise | None = None) -> Iterator[Noise]:
    """Redirect fds 1 and 2 and Python warnings into ``noise`` for the duration of the block."""
    noise = noise or Noise()
    sys.stdout.flush()
    sys.stderr.flush()
    handler = _ListHandler()
    loggers = [logging.getLogger(n) for n in ("coremltools", "torch.onnx", "onnxscript", "torch.export")]
    saved_state = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        # where sys.std* were replaced (pytest, notebooks); one object per stream, so that a
        # logging handler created on either inside the block can be handed back its real stream
        real = {"out": sys.stdout, "err": sys.stderr}
        text = {k: open(sink.fileno(), "w", closefd=False, buffering=1) for k in real}
        try:
            with contextlib.redirect_stdout(text["out"]), contextlib.redirect_stderr(text["err"]):
                yield noise
        finally:
            for k, stream in text.items():
                stream.flush()
                _repoint_handlers(stream, real[k])
                stream.close()
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            noise.feed(sink.read().decode("utf-8", "replace"))
            for w in caught:
                noise.feed(f"{w.category.__name__}: {w.message}")
            for lg, (level, propagate) in zip(loggers, saved_state):
                lg.removeHandler(handler)
                lg.setLevel(level)
                lg.propagate = propagate
            for record in handler.records:
                noise.feed(record)


def _repoint_handlers(stream: object, real: object) -> None:
    """Every logging handler made inside a captured block on ``sys.stdout``/``sys.stderr`` (e.g.
    transformers' library handler, created on first use) holds the block's stream, closed when the
    block ends: give it the stream it would have had outside, so later warnings are not lost to a
    "Logging error ... I/O operation on closed file". Methods of the stream bound onto the handler
    (transformers sets ``handler.flush = sys.stderr.flush``) are rebound too."""
    loggers = [logging.getLogger()] + [lg for lg in list(logging.Logger.manager.loggerDict.values())
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for handler in list(lg.handlers):
            if not isinstance(handler, logging.StreamHandler):
                continue
            for name, value in list(vars(handler).items()):
                if getattr(value, "__self__", None) is stream:
                    setattr(handler, name, getattr(real, name))
            if handler.stream is stream:
                handler.setStream(real)  # type: ignore[arg-type]


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()}")
