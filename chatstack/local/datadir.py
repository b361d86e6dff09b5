"""What `chatstack up` keeps in its data directory besides the servers' own files.

`run/up.lock` is held (flock) for the life of `up`: the kernel drops it when `up` dies, however it
dies, so a stale lock cannot block the next start, and a second `up` on the same directory is told
which one holds it. `runtime.json` says where the running service and its children are; it is
replaced atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, TextIO


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "run" / "up.lock"
        self.file: TextIO | None = None

    def acquire(self) -> None:
        """Takes the lock or exits with one sentence naming the `up` that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115  (held open for the life of `up`)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                holder = json.loads(f.read() or "{}")
            except ValueError:
                holder = {}
            f.close()
            port = holder.get("port")
            where = f"port {port}" if port else "still starting"
            raise SystemExit(
                f"chatstack up is already running on {self.data_dir} (pid {holder.get('pid', '?')}, "
                f"{where}); stop it first or use another --data-dir."
            ) from None
        self.file = f
        self.record(pid=os.getpid())

    def record(self, **holder: Any) -> None:
        assert self.file is not None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(json.dumps(holder))
        self.file.flush()

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing the descriptor drops the flock
            self.file = None
