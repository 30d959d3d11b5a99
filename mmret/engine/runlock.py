"""One training process per run folder: ``run_dir/run.lock``.

:func:`acquire_run_lock` takes an exclusive ``flock`` on ``run.lock`` and writes
``{"pid", "host", "started"}`` into it. A second run started into the same folder while the
first is alive fails with a :class:`~mmret.errors.ConfigError` naming the holder's pid.
The lock dies with its process (the kernel drops a ``flock`` on exit, SIGKILL included), so
a lock file left by a killed run is stale: the next run takes it over and says so. Where
``flock`` is unavailable (some network file systems) the pid in the file is checked
instead (same host: is that process alive?).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import IO

from mmret.errors import ConfigError

LOCK_FILE = "run.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


class RunLock:
    """A held run lock; :meth:`release` (or process exit) frees it."""

    def __init__(self, path: Path, handle: IO[str] | None, previous: dict) -> None:
        self.path = path
        self.handle = handle
        #: the stale holder taken over (empty when the lock was free)
        self.previous = previous

    def release(self) -> None:
        if self.handle is not None:
            try:
                self.path.unlink(missing_ok=True)
            finally:
                self.handle.close()
                self.handle = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_run_lock(run_dir: str | os.PathLike) -> RunLock:
    """Lock ``run_dir`` for this process (see the module docstring)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    previous = _read(path) if path.exists() else {}
    handle = open(path, "a+")
    try:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        holder = _read(path)
        raise ConfigError(
            f"{run_dir} is in use by another training run (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}, started {holder.get('started', '?')}); wait for it "
            "to finish or choose another hydra.run.dir"
        ) from None
    except (ImportError, OSError):  # no flock here: fall back to the pid in the file
        pid = previous.get("pid")
        same_host = previous.get("host") == socket.gethostname()
        if isinstance(pid, int) and pid != os.getpid() and same_host and _pid_alive(pid):
            handle.close()
            raise ConfigError(
                f"{run_dir} is in use by another training run (pid {pid}); wait for it to "
                "finish or choose another hydra.run.dir"
            ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
    handle.flush()
    return RunLock(path, handle, previous)
