"""One writer per workdir: an exclusive lock held for as long as a run writes the folder.

``fcntl.flock`` on ``<workdir>/.jad.lock``: the kernel holds it for the process and drops it when
the process ends, however it ends (``kill -9`` too), so a lock file left by a dead run is simply
taken over; the file's text (pid, host, command, start time) only serves the message a second run
prints. (flock is per host: on a shared network file system two hosts' runs are not excluded.)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from jad.utils.errors import UserError

LOCK_FILE = ".jad.lock"


@contextlib.contextmanager
def workdir_lock(workdir: Path, what: str = "") -> Iterator[None]:
    """Holds ``workdir``'s lock (creating the folder) or raises :class:`UserError` naming the
    process that holds it."""
    import fcntl

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            who = (
                f"process {holder.get('pid', '?')} on {holder.get('host', '?')} "
                f"({holder.get('what') or 'a jad run'}, since {holder.get('started', '?')})"
            )
            raise UserError(
                f"workdir {workdir} is in use by {who}; wait for it to finish or choose another "
                "--workdir"
            ) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "what": what or os.path.basename(sys.argv[0] if sys.argv else ""),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        os.close(fd)  # drops the lock; the file stays (a later run takes it over)
