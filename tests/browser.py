"""A headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: commands
on fd 3, replies on fd 4, NUL-separated JSON): real mouse clicks and typed text, no network, no
extra packages. ``Page(path)`` opens a local file; ``eval``, ``click``, ``type`` act on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-pipe"]


def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


class Page:
    def __init__(self, path: Path):
        self.profile = tempfile.mkdtemp(prefix="fleet-chromium-")
        to_chrome, self._out = os.pipe()
        self._in, from_chrome = os.pipe()

        def fds() -> None:  # chromium reads commands on fd 3 and writes on fd 4
            a, b = os.dup(to_chrome), os.dup(from_chrome)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={self.profile}", path.as_uri()],
                                     preexec_fn=fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer, self._id = b"", 0
        target = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        self._wait_for_document(path.as_uri())

    def _wait_for_document(self, uri: str) -> None:
        """Until the page's own document has loaded: a promise in the page resolves on its load
        event (no clock). Asked in the blank document chromium starts with, the navigation destroys
        that context and the question is asked again in the new one."""
        loaded = ("new Promise(r => { const ok = () => location.href === %s && document.readyState === 'complete';"
                  " if (ok()) r(true); else addEventListener('load', () => r(ok())); })" % json.dumps(uri))
        for _ in range(100):  # navigations, not seconds
            try:
                reply = self.send("Runtime.evaluate", self.session, expression=loaded, awaitPromise=True,
                                  returnByValue=True)
            except RuntimeError:  # the context was destroyed by the navigation
                continue
            if reply["result"].get("value") is True:
                return
        raise RuntimeError(f"chromium never loaded {uri}")

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def eval(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", self.session, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real left click (pressed + released) at the middle of the element."""
        box = self.eval(f"(function(){{var r=document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                        "return [r.x + r.width / 2, r.y + r.height / 2];})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", self.session, type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)

    def type(self, selector: str, text: str) -> None:
        self.click(selector)
        for char in text:
            self.send("Input.insertText", self.session, text=char)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self._in)
        os.close(self._out)
        shutil.rmtree(self.profile, ignore_errors=True)
