"""FileVersion: `SQLiteStore.version()`, a value that changes whenever anyone commits to the file.

In WAL mode every commit rewrites the wal-index header at the start of the `-shm` file (its
`iChange` counter, `mxFrame`, salts and checksums: https://www.sqlite.org/walformat.html §2.1),
which every connection of every process maps. This process maps it too, read-only, and reads
its first 48 bytes from memory, with no system call: a fraction of a microsecond, where a
`pread` cost 2-3 µs of an authenticated request. SQLite writes that copy of the header last, so
a value read there belongs to a commit that readers can already see (a read torn by a commit in
progress differs from the value before it, so the cache reads again). Should the file not look
like a wal-index of that format (`iVersion` 3007000), `PRAGMA data_version` on a connection of
its own says the same at a few µs more (three system calls and a statement).

The connection stays open either way: while it is, the `-shm` file is neither recreated nor
truncated under the mapping (SQLite does that only when it finds no other connection). So does
the descriptor the header is read through: POSIX locks belong to the process, and closing any
descriptor of the file drops every lock this process's connections hold on it. Another process
would then find none, take the file as its own and truncate it, and a read of the mapping would
die of SIGBUS. It is closed last, after the connections (`SQLiteStore.close`).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sqlite3
import sys
from pathlib import Path

__all__ = ["FileVersion"]

_HEADER = 48
_WAL_INDEX_VERSION = 3007000


class FileVersion:
    def __init__(self, path: Path) -> None:
        """Blocking (it opens the file): call it off the event loop."""
        # Busy timeout 0: the PRAGMA never waits for a lock (a busy file answers None).
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            path, timeout=0, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA data_version").fetchone()  # attaches the -shm file
        self._shm: mmap.mmap | None = None
        self._fd: int | None = None  # open until `close`: closing it would drop SQLite's locks
        with contextlib.suppress(OSError, ValueError):
            self._fd = os.open(f"{path}-shm", os.O_RDONLY)
            if int.from_bytes(os.pread(self._fd, 4, 0), sys.byteorder) == _WAL_INDEX_VERSION:
                self._shm = mmap.mmap(self._fd, _HEADER, prot=mmap.PROT_READ)

    @property
    def reads_header(self) -> bool:
        """Whether the wal-index header is read (else the PRAGMA is asked)."""
        return self._shm is not None

    def version(self) -> int | None:
        """The current value, or None when it cannot be told (closed, or the file is busy)."""
        try:
            if self._shm is not None:
                return int.from_bytes(self._shm[:_HEADER])
            if self._conn is not None:
                value: int = self._conn.execute("PRAGMA data_version").fetchone()[0]
                return value
        except (OSError, ValueError, sqlite3.Error):  # ValueError: unmapped by close()
            pass
        return None

    def close(self) -> None:
        """After this, `version()` is None. Safe to call from another thread than the loop's. The
        process's other connections to the file must be closed first (see above)."""
        shm, self._shm = self._shm, None
        conn, self._conn = self._conn, None
        fd, self._fd = self._fd, None
        if shm is not None:
            shm.close()
        if conn is not None:
            conn.close()
        if fd is not None:
            os.close(fd)
