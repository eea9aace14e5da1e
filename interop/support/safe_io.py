"""The one reader of files interop did not write in this process, and the one writer of files under
``--out``.

Reading (``read_bytes``, ``read_text``, ``read_json``, ``read_toml``): the file is opened with
``O_NONBLOCK`` and judged by ``fstat`` of the open descriptor, so a FIFO, a device, a socket or a
folder is refused at once (never a hang, never a race between a check and the open); with a
``root`` it must lie inside that folder after every symlink is resolved; at most ``max_bytes`` are
read (the limit is in the refusal); structured files are parsed with a nesting limit (checked on the
text before the parser recurses) and, with a ``schema`` (a pydantic model or type), validated into
typed data. Every violation is one ``LoadError`` line (exit 2).

Writing (``write_bytes``, ``write_text``, ``write_json``, ``open_new``): under a ``root`` no folder
on the way may be a symlink; the data goes to a temporary file created with
``O_CREAT | O_EXCL | O_NOFOLLOW`` beside the target, is fsynced and renamed over the target (a
symlink planted at the target is replaced, never followed; its target is never touched), so a crash
leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any, Iterator

from interop.errors import LoadError

MAX_JSON_BYTES = 64 << 20  # reports, summaries, records: far below this
MAX_TOML_BYTES = 4 << 20  # manifests, config files
MAX_DEPTH = 64  # nesting of arrays / objects / tables


def _shown(text: Any) -> str:
    from interop.support.escape import terminal

    return terminal(str(text))


# --- reading ---------------------------------------------------------------------------------------


def _open_regular(path: Path, what: str, hint: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise LoadError(f"{what} {_shown(path)} does not exist", hint=hint) from exc
    except IsADirectoryError as exc:
        raise LoadError(f"{what} {_shown(path)} is a folder, not a file", hint=hint) from exc
    except OSError as exc:
        raise LoadError(f"cannot read {what} {_shown(path)}: {exc.strerror}", hint=hint) from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, device or socket)"
        raise LoadError(f"{what} {_shown(path)} is {kind}", hint=hint)
    return fd


def within(path: Path | str, root: Path | str, what: str, hint: str = "use a file inside it") -> Path:
    """``path`` lies inside ``root`` once every symlink is resolved (else one LoadError line)."""
    real, real_root = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    if real != real_root and real_root not in real.parents:
        raise LoadError(f"{what} {_shown(path)} leads outside {_shown(root)}", hint=hint)
    return Path(path)


def read_bytes(path: Path | str, what: str, root: Path | str | None = None, max_bytes: int = MAX_JSON_BYTES,
               hint: str = "check the path") -> bytes:
    """The bytes of a regular file (inside ``root`` when given), at most ``max_bytes``."""
    path = Path(path)
    if root is not None:
        within(path, root, what, hint)
    fd = _open_regular(path, what, hint)
    try:
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise LoadError(f"cannot read {what} {_shown(path)}: {exc.strerror}", hint=hint) from exc
    if len(data) > max_bytes:
        raise LoadError(f"{what} {_shown(path)} is larger than the limit of {max_bytes >> 20} MiB",
                        hint="pass the file interop wrote; it is far smaller")
    return data


def read_text(path: Path | str, what: str, root: Path | str | None = None, max_bytes: int = MAX_JSON_BYTES,
              hint: str = "check the path") -> str:
    data = read_bytes(path, what, root, max_bytes, hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LoadError(f"{what} {_shown(path)} is not UTF-8 text", hint=hint) from exc


def read_tail(path: Path | str, what: str, root: Path | str | None = None, max_bytes: int = 64 << 10) -> str:
    """The last ``max_bytes`` of a regular file (a log), as text; a FIFO or a link out is refused."""
    path = Path(path)
    if root is not None:
        within(path, root, what)
    fd = _open_regular(path, what, "check the path")
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        fh.seek(max(0, size - max_bytes))
        return fh.read(max_bytes).decode("utf-8", "replace")


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text (strings skipped), without parsing."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def data_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """The nesting of parsed data (dicts and lists), counted up to ``limit + 1``."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack += [(v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def validate(data: Any, schema: Any, what: str, path: Path | str, hint: str) -> Any:
    """``data`` checked against ``schema`` (a pydantic model or any type pydantic validates, strict:
    no coercion), returned unchanged; else one LoadError line naming the first wrong field."""
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(schema).validate_python(data, strict=True)
        return data
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        raise LoadError(f"{what} {_shown(path)} is malformed: {_shown(where)}: {_shown(first['msg'])}",
                        hint=hint) from exc


def read_json(path: Path | str, what: str, root: Path | str | None = None, schema: Any = None,
              max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH, hint: str = "check the file") -> Any:
    """A JSON file interop did not write here: regular, inside ``root``, bounded in size and depth,
    and (with ``schema``) of the right types."""
    text = read_text(path, what, root, max_bytes, hint)
    depth = json_depth(text)
    if depth > max_depth:
        raise LoadError(f"{what} {_shown(path)} nests {depth} levels deep (the limit is {max_depth})", hint=hint)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise LoadError(f"{what} {_shown(path)} is not valid JSON ({_shown(str(exc)[:120])})", hint=hint) from exc
    return validate(data, schema, what, path, hint) if schema is not None else data


def read_toml(path: Path | str, what: str, root: Path | str | None = None, max_bytes: int = MAX_TOML_BYTES,
              max_depth: int = MAX_DEPTH, hint: str = "fix the file") -> dict[str, Any]:
    import tomllib

    text = read_text(path, what, root, max_bytes, hint)
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise LoadError(f"{what} {_shown(path)} is not valid TOML: {_shown(str(exc)[:160])}", hint=hint) from exc
    if data_depth(data, max_depth) > max_depth:
        raise LoadError(f"{what} {_shown(path)} nests deeper than {max_depth} levels", hint=hint)
    return data


# --- writing ---------------------------------------------------------------------------------------


def no_symlink_on_the_way(path: Path, root: Path | str) -> None:
    """No folder between ``root`` and ``path`` (``path`` itself excluded) is a symlink."""
    root = Path(root)
    try:
        rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    except ValueError as exc:
        raise LoadError(f"{_shown(path)} is outside {_shown(root)}", hint="interop writes only inside --out") from exc
    current = Path(os.path.abspath(root))
    for part in rel.parts[:-1]:
        current = current / part
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISLNK(os.lstat(current).st_mode):
                raise LoadError(f"{_shown(current)} is a symlink; interop never writes through one",
                                hint="remove the link (or pass another --out)")


def real_folder(path: Path | str, root: Path | str | None = None) -> Path:
    """``path`` as a real folder (created when absent): a symlink or a file there is refused."""
    path = Path(path)
    if root is not None:
        no_symlink_on_the_way(path / "x", root)
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except OSError as exc:
        raise LoadError(f"cannot create {_shown(path)}: {exc.strerror}", hint="check --out") from exc
    mode = os.lstat(path).st_mode
    if not stat.S_ISDIR(mode):
        what = "a symlink" if stat.S_ISLNK(mode) else "not a folder"
        raise LoadError(f"{_shown(path)} is {what}; interop writes only into folders of its own",
                        hint="remove it, or pass another --out")
    return path


def _exclusive_temp(path: Path, root: Path | str | None, mode: int) -> tuple[Path, int]:
    """A fresh temp file beside ``path`` (O_EXCL|O_NOFOLLOW: never an existing file or a symlink),
    after checking no symlink lies between ``root`` and ``path``."""
    if root is not None:
        no_symlink_on_the_way(path, root)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)


def open_new(path: Path | str, root: Path | str | None = None, mode: int = 0o644) -> int:
    """A new file at ``path`` open for writing: created exclusively beside it, never following a
    symlink, then renamed into place (whatever was there, a symlink too, is replaced, not followed)."""
    path = Path(path)
    tmp, fd = _exclusive_temp(path, root, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return fd


def write_bytes(path: Path | str, data: bytes, root: Path | str | None = None, mode: int = 0o644) -> None:
    """``data`` at ``path``, atomically (temp created with O_EXCL|O_NOFOLLOW, fsynced, renamed)."""
    path = Path(path)
    tmp, fd = _exclusive_temp(path, root, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: Path | str, text: str, root: Path | str | None = None) -> None:
    write_bytes(path, text.encode("utf-8"), root)


def write_json(path: Path | str, data: Any, root: Path | str | None = None) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n", root)


@contextlib.contextmanager
def folder_lock(folder: Path, name: str, what: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder/name`` (opened with O_NOFOLLOW, never truncated) for the
    duration; held by another process: one line naming ``what``."""
    import fcntl

    path = Path(folder) / name
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        extra = " (it is a symlink)" if exc.errno == errno.ELOOP else ""
        raise LoadError(f"cannot open the lock file {_shown(path)}: {exc.strerror}{extra}",
                        hint="remove it if nothing is running, or pass another --out") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LoadError(f"the lock file {_shown(path)} is not a regular file", hint="remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise LoadError(f"another {what} is writing {_shown(folder)}",
                            hint="wait for it to finish, or pass another --out") from exc
        yield
    finally:
        os.close(fd)
