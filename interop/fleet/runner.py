"""The process pool of build-many: every model builds in its own child process
(``python -m interop.fleet.child``) in its own session, at most ``jobs`` at a time, each watched
for its time limit and its memory cap. A hang, a crash or an out-of-memory kill is that model's
result; the whole process group is killed, so nothing is left behind; the others go on.

Memory: the parent polls the resident memory of the child and its descendants (/proc) and kills
the group above the cap (status ``out-of-memory``). A child also gets RLIMIT_DATA at twice the cap
as a backstop against one allocation outgrowing the poll; its MemoryError is reported as
out-of-memory too. (RLIMIT_AS is not used: torch and ONNX Runtime reserve far more address space
than they touch, ~0.9-1 GB of VmPeak for a build whose resident peak is ~0.4 GB.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from interop.fleet import resume
from interop.fleet.manifest import ModelEntry
from interop.fleet.summary import record_from_result

POLL_SECONDS = 0.1
MAX_JOBS = 256
MARKER = "INTEROP_FLEET_RUN"  # in every child's environment: what an orphaned descendant is known by
CHILD_RESULT = ".fleet-child.json"
CHILD_JOB = ".fleet-job.json"
LOG = "build.log"


@dataclass
class Options:
    out: Path
    jobs: int = 1
    timeout: float | None = None
    memory_limit: int | None = None
    resume: bool = False
    trust: bool = False


@dataclass
class Running:
    entry: ModelEntry
    digest: str
    folder: Path
    proc: subprocess.Popen
    started: float
    timeout: float | None
    memory_limit: int | None
    peak_rss: int = 0
    killed_for: str | None = None
    earlier: dict[str, Any] | None = None  # --resume: the record being re-verified


Listener = Callable[[str, str, dict[str, Any] | None], None]


def run(entries: list[ModelEntry], opts: Options, listen: Listener | None = None) -> tuple[list[dict], list[str]]:
    """Build every entry; returns (records of the models that finished, names of those that did not
    run because the run was interrupted). Ctrl-C kills the children and returns what finished."""
    listen = listen or (lambda event, name, record: None)
    listen("total", "", len(entries))
    records: list[dict[str, Any]] = []
    pending: list[tuple[ModelEntry, str, dict[str, Any] | None]] = []
    for entry in entries:  # a reusable record is re-verified in a child first (a cache, not a verdict)
        digest = resume.content_hash(entry)
        earlier = resume.previous(opts.out / entry.name, digest, entry) if opts.resume else None
        pending.append((entry, digest, earlier))
    running: list[Running] = []
    restore = _interrupt_on_sigterm()
    unreap = _subreaper()
    try:
        while pending or running:
            while pending and len(running) < max(1, opts.jobs):
                entry, digest, earlier = pending.pop(0)
                report = _verify_copy(opts.out / entry.name, earlier) if earlier else None
                earlier = earlier if report else None
                job = _start(entry, digest, opts, verify=report)
                job.earlier = earlier
                running.append(job)
                listen("start", entry.name, None)
            for job in [j for j in running if _check(j)]:
                running.remove(job)
                record = _finish(job)
                kill_orphans({j.proc.pid for j in running})
                if job.earlier is not None:
                    if record["status"] != "passed":  # the artifacts no longer verify: rebuild them
                        pending.insert(0, (job.entry, job.digest, None))
                        continue
                    record = {**job.earlier, "status": "resumed", "seconds": record["seconds"], "verified": True,
                              "built_seconds": job.earlier.get("built_seconds", job.earlier.get("seconds"))}
                    _write_record(job.folder, record)
                records.append(record)
                listen("done", job.entry.name, record)
            if running:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        for job in running:
            _kill(job, None)
        return records, [j.entry.name for j in running] + [e.name for e, _, _ in pending]
    finally:
        restore()
        kill_orphans({j.proc.pid for j in running if j.proc.returncode is None})
        unreap()
    return records, []


def _subreaper() -> Callable[[], None]:
    """Linux: this process adopts its orphaned descendants (PR_SET_CHILD_SUBREAPER), so a
    grandchild that calls ``setsid`` and outlives its parent is still ours to find and kill.
    Returns what switches it off again."""
    if not sys.platform.startswith("linux"):
        return lambda: None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        return lambda: None
    return lambda: libc.prctl(36, 0, 0, 0, 0)


def kill_orphans(keep: set[int]) -> None:
    """Kill and reap every child of this process carrying this run's marker (descendants of a
    model's child adopted here, whatever session or group they moved to), except ``keep``."""
    token = f"{MARKER}={os.getpid()}".encode()
    for pid in _own_children():
        if pid in keep:
            continue
        try:
            marked = token in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marked:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError, PermissionError):
                pass


def _own_children() -> list[int]:
    pids: list[int] = []
    try:
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    except (OSError, ValueError):
        pass
    return pids


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = [int(c) for c in (task / "children").read_text().split()]
                found += kids
                stack += kids
        except (OSError, ValueError):
            continue
    return found


def _interrupt_on_sigterm() -> Callable[[], None]:
    """SIGTERM (a cancelled CI job, a deleted pod) stops the run as Ctrl-C does: children killed,
    finished results kept, a summary of what ran written. Returns what puts the old handler back."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _start(entry: ModelEntry, digest: str, opts: Options, verify: str | None = None) -> Running:
    """Start the child of one model: a build, or (``verify``: a report path) the re-verification
    of a resumed model's artifacts. Its folder, job file and log are written by the one writer
    (never through a symlink); the child runs ``python -P`` so neither the current folder nor the
    model's folder is on ``sys.path`` ahead of the standard library."""
    from interop.support import safe_io

    folder = safe_io.real_folder(opts.out / entry.name, opts.out)
    (folder / CHILD_RESULT).unlink(missing_ok=True)
    config = {**entry.settings, "out": str(folder.resolve()), "trust": opts.trust}
    job_file = folder / CHILD_JOB
    limit = entry.memory_limit or opts.memory_limit
    safe_io.write_json(job_file, {"config": config, "result": str((folder / CHILD_RESULT).resolve()),
                                  "parent": os.getpid(), "rlimit_data": 2 * limit if limit else None,
                                  "verify": verify, "trust": opts.trust or _names_code(entry),
                                  "from_manifest": sorted(entry.settings),
                                  "paths": _child_paths(entry, opts.trust)}, root=opts.out)
    log = safe_io.open_new(folder / LOG, root=opts.out)
    try:
        proc = subprocess.Popen([sys.executable, "-P", "-m", "interop.fleet.child", str(job_file.resolve())],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=_child_env(entry, opts.jobs), start_new_session=True)
    finally:
        os.close(log)
    return Running(entry, digest, folder, proc, time.monotonic(), entry.timeout or opts.timeout, limit)


def _verify_copy(folder: Path, earlier: dict[str, Any]) -> str | None:
    from interop.errors import InteropError

    try:
        return str(resume.verify_copy(folder, earlier))
    except (InteropError, OSError, ValueError, TypeError):
        return None  # unreadable now: rebuilt


def _names_code(entry: ModelEntry) -> bool:
    """The manifest's model is MODULE:FN: its build runs that code, so re-verifying it (a report
    resume.previous matched to this very entry) may run it too, as the build did."""
    from interop.fleet.manifest import is_factory

    model = str(entry.settings.get("model", ""))
    return is_factory(model) and not Path(model).exists()


def _child_paths(entry: ModelEntry, trust: bool) -> dict[str, list[str]]:
    """Folders the child adds to ``sys.path``: the manifest's folder only for a MODULE:FN model
    (code the manifest names on purpose), and then *after* the standard library and installed
    packages, so a ``json.py`` there shadows nothing; ahead of them only with ``--trust``."""
    from interop.fleet.manifest import is_factory

    wanted = trust or is_factory(str(entry.settings.get("model", "")))
    return {"prepend" if trust else "append": [str(entry.base)] if wanted else []}


def _child_env(entry: ModelEntry, jobs: int) -> dict[str, str]:
    """The parent's environment; interop's own folder importable (the manifest's folder only as
    _child_paths says); one share of the cores for each child's thread pools unless set."""
    from interop import _version

    env = dict(os.environ)
    env[MARKER] = str(os.getpid())
    paths = [str(Path(_version.__file__).resolve().parent.parent)]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, jobs))))
    return env


def _check(job: Running) -> bool:
    """True when the child has ended (it is not reaped yet); kills it when over its limits."""
    if _ended(job):
        return True
    rss = tree_rss(job.proc.pid)
    job.peak_rss = max(job.peak_rss, rss)
    if job.memory_limit and rss > job.memory_limit:
        _kill(job, "out-of-memory")
        return True
    if job.timeout and time.monotonic() - job.started > job.timeout:
        _kill(job, "timeout")
        return True
    return False


def _ended(job: Running) -> bool:
    """Has the child exited? Peeked at without reaping it where the OS allows (so its process
    group cannot be recycled before the group is killed); else reaped here."""
    if hasattr(os, "waitid") and hasattr(os, "WNOWAIT"):
        try:
            return os.waitid(os.P_PID, job.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True
    try:
        pid, status, usage = os.wait4(job.proc.pid, os.WNOHANG)
    except ChildProcessError:
        return True
    if pid == 0:
        return False
    job.proc.returncode = os.waitstatus_to_exitcode(status)
    job.peak_rss = max(job.peak_rss, _maxrss(usage))
    return True


def _kill(job: Running, why: str | None) -> None:
    job.killed_for = job.killed_for or why
    _kill_tree(job.proc.pid)
    if why is None:
        _reap(job)


def _reap(job: Running) -> int:
    """Kill what is left of the child's process group, then collect the child's exit status."""
    _kill_tree(job.proc.pid)
    if job.proc.returncode is not None:
        return job.proc.returncode
    try:
        _, status, usage = os.wait4(job.proc.pid, 0)
    except ChildProcessError:
        return 0
    job.peak_rss = max(job.peak_rss, _maxrss(usage))
    job.proc.returncode = os.waitstatus_to_exitcode(status)
    return job.proc.returncode


def _kill_tree(pid: int) -> None:
    """SIGKILL the child's process group and every descendant by pid (one that called ``setsid``
    left the group; it is still a descendant, or, once orphaned, ours: ``kill_orphans``)."""
    for p in _descendants(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _maxrss(usage: Any) -> int:
    return usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024  # bytes there, KiB here


def _finish(job: Running) -> dict[str, Any]:
    code = _reap(job)
    seconds = time.monotonic() - job.started
    from interop.errors import InteropError
    from interop.fleet.records import ChildResult
    from interop.support import safe_io

    try:  # the child ran a model: what it wrote is checked as data
        result = safe_io.read_json(job.folder / CHILD_RESULT, "child result", root=job.folder, schema=ChildResult)
    except InteropError:
        result = None
    record = record_from_result(job.entry, job.folder, result, exit_code=code, killed_for=job.killed_for,
                                limits={"timeout": job.timeout, "memory_limit": job.memory_limit},
                                log_tail=_tail(job.folder / LOG))
    record.update({"hash": job.digest, "seconds": round(seconds, 3), "built_seconds": round(seconds, 3),
                   "peak_rss_bytes": job.peak_rss, "report": _report_name(job.folder, job.entry.name),
                   "artifact_sha256": {a: resume.artifact_sha256(job.folder / a) for a in record["artifacts"]}})
    _write_record(job.folder, record)
    return record


def _report_name(folder: Path, name: str) -> str | None:
    found = sorted(p.name for p in folder.glob("*.report.json") if not p.is_symlink())
    return f"{name}.report.json" if f"{name}.report.json" in found else (found[0] if len(found) == 1 else None)


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    from interop.support import safe_io

    safe_io.write_json(folder / resume.RECORD, record, root=folder.parent)


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (Linux /proc; 0 elsewhere)."""
    total, stack, page = 0, [pid], os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    while stack:
        p = stack.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def _tail(path: Path, lines: int = 20) -> list[str]:
    from interop.errors import InteropError
    from interop.support import safe_io

    try:  # the log was written by the model's child: a FIFO or a link there is never followed
        return safe_io.read_tail(path, "build log", root=path.parent).splitlines()[-lines:]
    except (OSError, InteropError):
        return []


def default_jobs(memory_limit: int | None) -> int:
    """One job per core, at most as many as free memory holds at the cap (or ~1.5 GB each)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_job = memory_limit or int(1.5 * 1024 ** 3)
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return max(1, cores)
    return max(1, min(cores, available // per_job))
