"""The output folder: one build of a stem at a time (a lock), artifacts assembled in a work
folder inside it, and the artifact set replaced *as a set*.

Crash safety of the final move: the new set is staged in the work folder under its final names,
then a journal (``.<stem>.interop-commit.json``, written atomically) records the move; the old
items go into the work folder's ``previous/``, the new ones into place, and deleting the journal is
the commit point. A build killed at any instant before that leaves the journal, and the next
interop command that opens the folder (a build, inspect, bench, verify) rolls the move back under
the stem's lock: the folder shows the complete previous set, or, after the commit point, the
complete new set — never a mix, never a missing package.

Files interop creates here are created with ``O_EXCL``/``O_NOFOLLOW`` (never through a symlink);
interop deletes only what it created: its lock file (removed before the lock is released), its
own work folders (exact names carrying the owner's pid, removed only when that process is gone),
and the artifacts the previous report in this folder says it shipped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

from interop.errors import SpecError
from interop.support import interrupts

TMP_PREFIX = ".interop-tmp-"
JOURNAL = ".{stem}.interop-commit.json"
LOCK = ".{stem}.interop.lock"


class OutputFolder:
    def __init__(self, folder: Path, stem: str):
        self.folder = Path(os.path.abspath(folder))  # reports record absolute artifact paths
        self.stem = stem

    @classmethod
    def for_model(cls, model: str, out: str | None) -> "OutputFolder":
        path = Path(model)
        is_file = os.path.lexists(path)
        stem = path.stem if is_file else model.rpartition(":")[2]  # MODULE:FN -> FN
        folder = Path(out) if out else (path.parent if is_file else Path.cwd())
        if is_file and path.is_dir():  # a model folder (Hugging Face): model.onnx, ... inside it, Optimum's names
            stem, folder = "model", Path(out) if out else path
        if folder.exists() and not folder.is_dir():
            raise SpecError(f"--out {_shown(folder)} is a file, not a folder",
                            hint="pass a folder (it is created if missing)")
        made = cls(folder, stem)
        made.check_writable()
        return made

    @property
    def work_stem(self) -> str:
        """The stem of files inside the work folder: onnx.checker takes any external-data
        location containing ``..`` for a path leaving the folder (``resnet..v2``)."""
        return self.stem.replace("..", "_")

    def final(self, suffix: str) -> Path:
        return self.folder / f"{self.stem}{suffix}"

    def check_writable(self) -> None:
        """Before any work: the folder (or the nearest existing parent it would be made in) takes a
        new file. A probe file is created exclusively and removed again."""
        probe_dir = self.folder
        while not probe_dir.exists() and probe_dir.parent != probe_dir:
            probe_dir = probe_dir.parent
        probe = probe_dir / f".interop-probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise SpecError(f"cannot write to output folder {_shown(self.folder)}: {exc.strerror}",
                            hint="pass a writable --out") from exc
        os.close(fd)
        os.unlink(probe)

    @contextlib.contextmanager
    def session(self) -> Iterator[Path]:
        """Lock the folder for this stem, finish any interrupted commit, clean this stem's dead
        work folders, and yield a fresh work folder (also the process's temp folder meanwhile)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpecError(f"cannot create output folder {_shown(self.folder)}: {exc.strerror}",
                            hint="pass a writable --out") from exc
        with interrupts.recorded(), _locked(self.folder, self.stem, wait_hint=True):
            recover(self.folder, self.stem)
            self._remove_stale()
            work = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{self.stem}-{os.getpid()}-", dir=self.folder))
            try:
                with _temp_inside(work):
                    yield work
            finally:
                with interrupts.deferred():
                    shutil.rmtree(work, ignore_errors=True)

    def _remove_stale(self) -> None:
        """Work folders of killed builds of exactly this stem whose process is gone."""
        for entry in os.scandir(self.folder):
            pid = _work_pid(entry.name, self.stem)
            if pid is not None and pid != os.getpid() and not _alive(pid) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)

    def commit(self, work: Path, report: Any, keep_failed: bool = False, all_or_nothing: bool = False) -> None:
        """Replace the artifact set, each target on its own verdict: a target that passed ships
        even when another failed (exit 1 says so), unless ``all_or_nothing``. When at least one
        target ships, the new set replaces the previous one (artifacts of the previous build that
        this build did not ship are removed, so the folder never pairs a new artifact with an old
        one); when none ships, the previous set is left untouched and the report goes to
        ``<stem>.failed.report.*``. Rejected artifacts are kept as ``<stem>.FAILED.*`` only with
        ``keep_failed``. The move is one transaction (see the module docstring)."""
        interrupts.check()
        ship = [] if all_or_nothing and not report.passed else report.shippable()
        staged = work / "commit"
        staged.mkdir()
        names = self._stage_artifacts(report, ship, staged, keep_failed)
        removals: list[str] = []
        from interop.variants.commit import stage_variants  # compressed variants (--compress)

        more, gone = stage_variants(self, report, ship, staged, keep_failed)
        names += more
        removals += gone
        if ship:
            for target, old in self._previous_artifacts().items():
                if target not in ship and old.startswith(self.stem + ".") and ".FAILED." not in old:
                    removals += [old, old + ".data"]
            removals += [f"{self.stem}.failed.report.json", f"{self.stem}.failed.report.md"]
        tag = "" if ship else ".failed"
        for suffix, text in ((".report.json", report.to_json_text()), (".report.md", report.to_markdown())):
            name = f"{self.stem}{tag}{suffix}"
            (staged / name).write_text(text)
            names.append(name)
        self._swap(work, names, [r for r in removals if r not in names])

    def _stage_artifacts(self, report: Any, ship: list[str], staged: Path, keep_failed: bool) -> list[str]:
        names = []
        for target, path in list(report.artifacts.items()):
            report.data["targets"][target]["shipped"] = target in ship
            suffix = report.suffixes.get(target, path.suffix)  # the target's whole suffix (.mlp.npz, not .npz)
            if target in ship:
                final = self.final(suffix)
            elif keep_failed:
                final = self.final(".FAILED" + suffix)
            else:
                report.set_path(target, None)
                continue
            report.set_path(target, final)
            os.replace(path, staged / final.name)
            names.append(final.name)
            for companion in report.companions.get(target, []):  # ONNX external data
                if companion.exists():  # named as the model's external-data location says
                    renamed = companion.name.endswith(".onnx.data") and self.work_stem == self.stem
                    name = final.name + ".data" if renamed else companion.name
                    os.replace(companion, staged / name)
                    names.append(name)
        return names

    def _swap(self, work: Path, names: list[str], removals: list[str]) -> None:
        journal = self.folder / JOURNAL.format(stem=self.stem)
        _write_atomic(journal, json.dumps({"work": work.name, "names": names, "remove": removals}), work)
        previous = work / "previous"
        previous.mkdir()
        try:
            for name in names + removals:
                if os.path.lexists(self.folder / name):
                    _move(self.folder / name, previous / name)
            for name in names:
                _move(work / "commit" / name, self.folder / name)
            _fsync_dir(self.folder)
            _remove_file(journal)  # the commit point
        except BaseException:
            with interrupts.deferred():
                recover(self.folder, self.stem)
            raise
        _fsync_dir(self.folder)

    def _previous_artifacts(self) -> dict[str, str]:
        """File names of the artifacts the previous report here says it shipped (only those are
        ours to replace; a path pointing elsewhere is reduced to its name in this folder)."""
        try:
            data = json.loads(self.final(".report.json").read_text())
            entries = data["targets"].items()
            return {t: Path(e["path"]).name for t, e in entries if isinstance(e, dict) and isinstance(e.get("path"), str)}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}


def recover(folder: Path, stem: str) -> bool:
    """Roll back an interrupted commit of ``stem`` (the caller holds its lock). Idempotent: each
    step can itself be interrupted and redone. Returns whether there was one."""
    journal = folder / JOURNAL.format(stem=stem)
    if not os.path.lexists(journal):
        return False
    try:
        data = json.loads(journal.read_text())
        work = _checked_name(data["work"], stem, work=True)
        names = [_checked_name(n, stem) for n in data["names"]]
        removals = [_checked_name(n, stem) for n in data["remove"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"{_shown(journal)} is not a commit journal interop wrote ({type(exc).__name__})",
                        hint="remove it by hand after checking the folder's artifacts") from exc
    staged, previous = folder / work / "commit", folder / work / "previous"
    for name in names:  # a new item in place (no longer staged) goes back
        if os.path.lexists(folder / name) and not os.path.lexists(staged / name) and staged.is_dir():
            _move(folder / name, staged / name)
    for name in names + removals:  # the previous item comes back
        if os.path.lexists(previous / name) and not os.path.lexists(folder / name):
            _move(previous / name, folder / name)
    _fsync_dir(folder)
    _remove_file(journal)
    return True


def recover_folder(folder: Path) -> None:
    """For commands that read a folder (inspect, bench, verify): roll back any interrupted
    commit there whose build is gone (its lock free). Read-only folders are left as they are."""
    try:
        entries = [e.name for e in os.scandir(folder)]
    except OSError:
        return
    for name in entries:
        match = re.fullmatch(r"\.(.+)\.interop-commit\.json", name)
        if not match:
            continue
        with contextlib.suppress(SpecError, OSError), _locked(folder, match.group(1), wait_hint=False):
            recover(folder, match.group(1))


# --- primitives --------------------------------------------------------------------------------


def _move(src: Path, dst: Path) -> None:
    """The one move primitive of a commit (tests inject faults here)."""
    os.rename(src, dst)


@contextlib.contextmanager
def _locked(folder: Path, stem: str, wait_hint: bool) -> Iterator[None]:
    """Hold ``.<stem>.interop.lock``: opened without following symlinks and never truncated; the
    lock file is removed *before* the lock is released, and a lock taken on a file that was
    meanwhile removed is retried (so two processes never both hold it)."""
    path = folder / LOCK.format(stem=stem)
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SpecError(f"cannot open the lock file {_shown(path)}: {exc.strerror}"
                            + (" (it is a symlink)" if exc.errno == errno.ELOOP else ""),
                            hint="remove it if no interop build is running, or pass another --out") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SpecError(f"the lock file {_shown(path)} is not a regular file", hint="remove it")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise SpecError(f"another interop build is writing {_shown(stem)} in {_shown(folder)}",
                            hint="wait for it to finish, or pass another --out") from exc
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            break
        os.close(fd)  # locked a file another process removed meanwhile: take the new one
    else:
        raise SpecError(f"cannot take the lock {_shown(path)}", hint="retry")
    try:
        yield
    finally:
        with interrupts.deferred():
            if _same_file(fd, path):
                os.unlink(path)
            os.close(fd)  # releases the lock, after the file is gone


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@contextlib.contextmanager
def _temp_inside(work: Path) -> Iterator[None]:
    """Point tempfile (and $TMPDIR for child processes) at the work folder meanwhile, so what
    libraries leave in temp (coremltools' temporary .mlpackage, whose cleanup the CLI's fast exit
    skips) goes with the work folder. Main thread only: the setting is process-wide, and builds
    running in threads would swap it under each other."""
    import threading

    tmp = work / "tmp"
    tmp.mkdir()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(tmp), str(tmp)
    try:
        yield
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]


def _write_atomic(path: Path, text: str, scratch: Path) -> None:
    tmp = scratch / (path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    _move(tmp, path)
    _fsync_dir(path.parent)


def _remove_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _work_pid(name: str, stem: str) -> int | None:
    match = re.fullmatch(re.escape(TMP_PREFIX + stem) + r"-(\d+)-[A-Za-z0-9_]+", name)
    return int(match.group(1)) if match else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _checked_name(name: Any, stem: str, work: bool = False) -> str:
    """A name from a journal is one entry of this folder belonging to this stem."""
    if not isinstance(name, str) or "/" in name or "\x00" in name or name in (".", ".."):
        raise ValueError(f"bad name {name!r}")
    if work and _work_pid(name, stem) is None:
        raise ValueError(f"bad work folder {name!r}")
    if not work and not name.startswith(stem + "."):
        raise ValueError(f"bad name {name!r}")
    return name


def _shown(value: Any) -> str:
    from interop.trust import shown

    return shown(value)

