"""The output folder: one build at a time (a lock), artifacts assembled in a temporary folder
inside it and moved into place only when complete, so a failed or killed build leaves the previous
good artifacts byte-identical and nothing half-written at a final path."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import SpecError

TMP_PREFIX = ".interop-tmp-"


class OutputFolder:
    def __init__(self, folder: Path, stem: str):
        self.folder = folder
        self.stem = stem

    @classmethod
    def for_model(cls, model: str, out: str | None) -> "OutputFolder":
        path = Path(model)
        is_file = path.exists()
        stem = path.stem if is_file else model.rpartition(":")[2]  # MODULE:FN -> FN
        folder = Path(out) if out else (path.parent if is_file else Path.cwd())
        if folder.exists() and not folder.is_dir():
            raise SpecError(f"--out {folder} is a file, not a folder", hint="pass a folder (it is created if missing)")
        return cls(folder, stem)

    def final(self, suffix: str) -> Path:
        return self.folder / f"{self.stem}{suffix}"

    @contextlib.contextmanager
    def session(self) -> Iterator[Path]:
        """Lock the folder for this stem and yield a fresh temporary work folder inside it."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpecError(f"cannot create output folder {self.folder}: {exc.strerror}",
                            hint="pass a writable --out") from exc
        lock_path = self.folder / f".{self.stem}.interop.lock"
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise SpecError(f"another interop build is writing {self.stem} in {self.folder}",
                                hint="wait for it to finish, or pass another --out") from exc
            self._remove_stale()
            work = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{self.stem}-", dir=self.folder))
            try:
                yield work
            finally:
                shutil.rmtree(work, ignore_errors=True)
                fcntl.flock(lock, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            lock_path.unlink()

    def _remove_stale(self) -> None:
        """Work folders of killed builds of this stem (we hold its lock, so none is live)."""
        for stale in self.folder.glob(f"{TMP_PREFIX}{self.stem}-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def commit(self, work: Path, report: Any, keep_failed: bool = False) -> None:
        """Move the built artifacts and the report into place. A failed build keeps the previous
        good artifacts; its report goes to ``<stem>.failed.report.*`` and its rejected artifacts
        to ``<stem>.FAILED.*`` only with ``keep_failed``."""
        passed = report.passed
        for target, path in list(report.artifacts.items()):
            if passed:
                final = self.final(path.suffix)
            elif keep_failed:
                final = self.final(".FAILED" + path.suffix)
            else:
                report.set_path(target, None)
                continue
            report.set_path(target, final)
            _place(path, final)
            data = path.parent / f"{self.stem}{path.suffix}.data"  # ONNX external data (models over 2 GB)
            if data.exists():
                _place(data, final.parent / data.name)
        tag = "" if passed else ".failed"
        for suffix, text in ((".report.json", report.to_json_text()), (".report.md", report.to_markdown())):
            tmp = work / f"report{suffix}"
            tmp.write_text(text)
            _place(tmp, self.final(f"{tag}{suffix}"))
        if passed:
            for stale in (self.final(".failed.report.json"), self.final(".failed.report.md")):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()


def _place(src: Path, dst: Path) -> None:
    """Atomic for files (os.replace); for package folders, swap via a backup name."""
    if src.is_dir():
        backup = dst.with_name(dst.name + ".interop-old")
        shutil.rmtree(backup, ignore_errors=True)
        if dst.exists():
            os.replace(dst, backup)
        os.replace(src, dst)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(src, dst)
