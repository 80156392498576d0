"""Files the product writes that hold personal data: readable by their owner only.

The SQLite database (and the -wal and -shm files SQLite makes beside it, which it gives
the database file's own mode), backups, subject access and export outputs are created
0600, in directories created 0700, whatever the process's umask. A file to write must
be new: an existing file is never overwritten, and a symbolic link is never followed (a
link planted at the output path could otherwise send a person's record anywhere).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from referral_engine.errors import FieldError, InvalidData

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> None:
    """Make `path` (and missing parents) 0700; an existing directory is left as it is,
    but a symbolic link where the directory should be is refused."""
    if path.is_symlink():
        raise InvalidData(FieldError("output", f"{path} is a symbolic link; give a real directory"))
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=DIR_MODE)
        os.chmod(d, DIR_MODE)  # mkdir's mode is reduced by the umask


def refuse_existing(path: Path, field: str = "output") -> None:
    """An InvalidData naming `field` if something (a file or a link) is at `path`."""
    if os.path.lexists(path):
        kind = "a symbolic link" if path.is_symlink() else "already there"
        raise InvalidData(
            FieldError(field, f"{path} is {kind}; give a new path (nothing is overwritten)")
        )


def create_private(path: Path, field: str = "output") -> int:
    """Create `path` new, 0600, and return its file descriptor open for writing. Never
    replaces a file and never follows a link (O_EXCL refuses both, atomically)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, FILE_MODE)
    except FileExistsError:
        refuse_existing(path, field)
        raise
    os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away; never added them
    return fd


def write_private(path: Path, content: bytes, field: str = "output") -> None:
    with os.fdopen(create_private(path, field), "wb") as f:
        f.write(content)


def ensure_sqlite_file(path: Path) -> None:
    """Create the database file 0600 (and its directory 0700) before SQLite opens it, so
    SQLite never makes it with the umask's 0644; its -wal and -shm then follow its mode."""
    private_dir(path.parent)
    # Already there (an existing database, or another process made it): leave it.
    with contextlib.suppress(FileExistsError, InvalidData):
        os.close(create_private(path, "DATABASE_URL"))
