"""Atomic file writes: a temporary file beside the target, renamed onto it once complete.

- The target is always either the old file or the complete new one, never half of one.
- An interrupted write (an exception, Ctrl-C, or SIGTERM) removes its temporary file.
  SIGTERM is turned into `KeyboardInterrupt` during the write when the process has no SIGTERM
  handler of its own, so the clean-up runs. The CLI installs that handler for whole commands.
- A write killed outright (kill -9, power loss) leaves its temporary file behind. The next
  write of the same target removes it. Temporary files are named `.NAME.XXXXXXXX.tmp`, and
  each writer holds an exclusive `flock` on its own file while it writes. The kernel releases
  the locks of dead processes, so a file of that name whose lock can be taken is stale. A
  locked one belongs to a live writer and is left alone.

This module is deliberately low-level: it imports nothing of maelens but `maelens.errors`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from maelens.errors import MaelensError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS: no locks, no stale clean-up
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# mkstemp's random part: 8 characters of this alphabet.
_RANDOM_PART = r"[a-z0-9_]{8}"


def temp_name_pattern(path: str | os.PathLike) -> re.Pattern[str]:
    """The names of this module's temporary files for `path`: `.NAME.XXXXXXXX.tmp`."""
    return re.compile(rf"^\.{re.escape(Path(path).name)}\.{_RANDOM_PART}\.tmp$")


def remove_stale(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of earlier writes of `path` whose writer is dead (their lock
    is free); returns the files removed. Temporary files of live writers are left alone."""
    path = Path(path)
    folder = path.parent
    if fcntl is None or not folder.is_dir():
        return []
    pattern = temp_name_pattern(path)
    removed = []
    for name in sorted(os.listdir(folder)):
        if pattern.match(name) and _remove_if_unlocked(folder / name):
            removed.append(folder / name)
    for stale in removed:
        log.info("removed %s, left by an interrupted write of %s", stale, path)
    return removed


def _remove_if_unlocked(tmp: Path) -> bool:
    try:
        fd = os.open(tmp, os.O_RDONLY)
    except OSError:
        return False  # gone meanwhile, or not ours to read
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False  # a live writer holds it
    try:
        os.unlink(tmp)  # unlinked while locked: its writer cannot be between mkstemp and flock
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _locked_temp(path: Path) -> tuple[int, Path]:
    """A new temporary file beside `path`, exclusively locked by the returned descriptor."""
    while True:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        if fcntl is None:
            return fd, Path(name)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return fd, Path(name)
        os.close(fd)  # another process took it for stale before we locked it: take a new one


def _cannot_write(path: Path, exc: OSError, name: str | None) -> MaelensError:
    label = f"`{name}` {path}" if name else f"{path}"
    reason = exc.strerror or type(exc).__name__
    return MaelensError(
        f"cannot write {label}: {reason} (in folder {path.parent}); fix: choose a folder you "
        "can write to, with enough free space."
    )


def check_writable(path: str | os.PathLike, name: str | None = None) -> Path:
    """Raise `MaelensError` (naming `name`, e.g. "--out", and `path`) unless `path` can be
    written atomically: its folder exists, it is not a folder itself, and a file can be created
    beside it. Stale temporary files of `path` are removed on the way."""
    path = Path(path)
    label = f"`{name}` {path}" if name else f"{path}"
    if path.is_dir():
        raise MaelensError(f"{label} is a folder; expected a file name, e.g. {path / 'out'}.")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise MaelensError(f"{label}: the output folder {folder} {what}; fix: create it first.")
    remove_stale(path)
    try:
        fd, tmp = _locked_temp(path)
    except OSError as exc:
        raise _cannot_write(path, exc, name) from None
    os.unlink(tmp)
    os.close(fd)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it onto `path`.

    The temporary file is removed if `write` raises or the process is interrupted (SIGINT,
    SIGTERM); stale ones of earlier, killed writes are removed first. An unwritable folder or
    a full disk raises `MaelensError` naming `path`, not the temporary file.
    """
    path = Path(path)
    check_writable(path)
    with sigterm_as_interrupt():
        try:
            fd, tmp = _locked_temp(path)
        except OSError as exc:
            raise _cannot_write(path, exc, None) from None
        try:
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; honour the user's umask
            os.replace(tmp, path)
        except OSError as exc:
            raise _cannot_write(path, exc, None) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.close(fd)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """A signal handler that turns the signal into `KeyboardInterrupt`, as Ctrl-C is."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `KeyboardInterrupt` in the main thread, so `finally`
    clauses run. Only when SIGTERM still has its default action: a handler that the program
    installed itself is respected. Elsewhere than in the main thread this does nothing."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
