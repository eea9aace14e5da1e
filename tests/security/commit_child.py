"""Child process for the fault-injection tests: commit a prepared new artifact set into OUT through
the real OutputFolder, with the move primitive (``_move``) and the journal removal patched to stop
the process before step K: ``kill`` ends it at once (os._exit, like SIGKILL), ``sigint`` sends it
SIGINT. K = -1 runs to the end and prints the number of steps.

usage: python -m tests.security.commit_child OUT NEW_SET kill|sigint K onnx[,coreml]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import interop.stages.outdir as outdir


def main() -> int:
    out, new_set, mode, stop, shipped = sys.argv[1:6]
    stop = int(stop)
    count = [0]
    real_move, real_remove = outdir._move, outdir._remove_file

    def step() -> None:
        if count[0] == stop:
            if mode == "kill":
                os._exit(9)
            os.kill(os.getpid(), signal.SIGINT)
        count[0] += 1

    outdir._move = lambda src, dst: (step(), real_move(src, dst))[1]
    outdir._remove_file = lambda path: (step(), real_remove(path))[1]
    folder = outdir.OutputFolder(Path(out), "lstm_sum")
    try:
        with folder.session() as work:
            folder.commit(work, Report(Path(new_set), work, shipped.split(",")))
    except KeyboardInterrupt:
        return 130
    print(count[0])
    return 0


class Report:
    """What OutputFolder.commit uses of interop.report.Report."""

    def __init__(self, new_set: Path, work: Path, shipped: list[str]):
        self.data = json.loads((new_set / "lstm_sum.report.json").read_text())
        self.shipped, self.artifacts, self.companions, self.passed = shipped, {}, {}, True
        self.suffixes: dict[str, str] = {}  # as the built-in targets' own: the artifact's suffix
        for target, suffix in (("onnx", ".onnx"), ("coreml", ".mlpackage")):
            src, dst = new_set / f"lstm_sum{suffix}", work / f"built{suffix}"
            shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
            self.artifacts[target] = dst

    def shippable(self) -> list[str]:
        return self.shipped

    def set_path(self, target: str, path: Path | None) -> None:
        self.data["targets"][target]["path"] = str(path) if path else None

    def to_json_text(self) -> str:
        return json.dumps(self.data)

    def to_markdown(self) -> str:
        return "new report\n"


if __name__ == "__main__":
    sys.exit(main())
