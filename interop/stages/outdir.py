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

from interop.errors import SpecError

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

    def commit(self, work: Path, report: Any, keep_failed: bool = False, all_or_nothing: bool = False) -> None:
        """Move the built artifacts and the report into place, each target on its own verdict:
        a target that passed ships even when another failed (exit 1 says so), unless
        ``all_or_nothing``. When at least one target ships, the new set replaces the previous one
        (artifacts of the previous build that this build did not ship are removed, so the folder
        never pairs a new artifact with an old one); when none ships, the previous set is left
        untouched and the report goes to ``<stem>.failed.report.*``. Rejected artifacts are kept as
        ``<stem>.FAILED.*`` only with ``keep_failed``."""
        ship = report.shippable()
        if all_or_nothing and not report.passed:
            ship = []
        previous = self._previous_artifacts() if ship else {}
        for target, path in list(report.artifacts.items()):
            entry = report.data["targets"][target]
            entry["shipped"] = target in ship
            if target in ship:
                final = self.final(path.suffix)
            elif keep_failed:
                final = self.final(".FAILED" + path.suffix)
            else:
                report.set_path(target, None)
                continue
            report.set_path(target, final)
            _place(path, final)
            for companion in report.companions.get(target, []):  # ONNX external data
                if companion.exists():
                    _place(companion, final.parent / (final.name + ".data" if companion.name.endswith(".onnx.data")
                                                      else companion.name))
        from interop.variants.commit import place_variants  # compressed variants (--compress)

        place_variants(self, report, ship, keep_failed)
        if ship:
            for target, old in previous.items():
                old = self.folder / old.name  # only ever inside this folder
                if target not in ship and old.name.startswith(self.stem + ".") and ".FAILED." not in old.name:
                    _remove(old)
                    _remove(old.with_name(old.name + ".data"))
        tag = "" if ship else ".failed"
        for suffix, text in ((".report.json", report.to_json_text()), (".report.md", report.to_markdown())):
            tmp = work / f"report{suffix}"
            tmp.write_text(text)
            _place(tmp, self.final(f"{tag}{suffix}"))
        if ship:
            for stale in (self.final(".failed.report.json"), self.final(".failed.report.md")):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()

    def _previous_artifacts(self) -> dict[str, Path]:
        """The artifacts the previous report in this folder says it shipped (only those are ours to replace)."""
        import json

        try:
            data = json.loads(self.final(".report.json").read_text())
            entries = data["targets"].items()
            return {t: Path(e["path"]) for t, e in entries if isinstance(e, dict) and isinstance(e.get("path"), str)}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


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
