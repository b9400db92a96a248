"""Atomic writes: a user's file is either the old one or the complete new one, never half-written.

Everything is written to a hidden temporary beside the target (same filesystem, so the final rename is
atomic) named `.NAME.PID.RANDOM.tmp` — PID being the writing process. A process killed with SIGKILL (or
a power cut) cannot remove its temporary; it never shadows anything, because the target is only ever
reached by rename and every temporary has a fresh random name. The next write to the same target sweeps
the leftovers whose PID no longer runs (`sweep_leftovers`); a live PID's temporary is left alone, since
another process may be writing it right now.

An existing directory is replaced by exchanging the two names in one `renameat2(RENAME_EXCHANGE)` call
(Linux >= 3.15, glibc >= 2.28), so no instant exists at which the target is missing; where that call is
unavailable, two renames are used and a kill between them leaves the old tree as `.NAME.PID.RANDOM.old`,
which the next sweep puts back if the target is still missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

LEFTOVER_SUFFIXES = (".tmp", ".old")
_PID_PART = re.compile(r"(\d+)(?:\.[A-Za-z0-9_]+)?")  # PID, then mkstemp's random part if any


def _prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(target)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `target`; swap it in as `target` only if the block succeeds.

    An existing `target` is kept until the new one is complete, then exchanged with it in one step.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(target)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if target.exists():
            if exchange(tmp, target):  # tmp now holds the old tree
                shutil.rmtree(tmp, ignore_errors=True)
                return
            old = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".old", dir=target.parent))
            old.rmdir()
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE); False where the OS or filesystem cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def leftovers(target: str | os.PathLike, extra: tuple[tuple[str, str], ...] = ()) -> list[tuple[Path, int]]:
    """Hidden temporaries beside `target` with the PID that made them: `.NAME.PID.*.tmp|.old`, plus
    `extra` (prefix, suffix) patterns such as the saved video's `.STEM.` + `.partial.avi`."""
    target = Path(target)
    patterns = [(f".{target.name}.", s) for s in LEFTOVER_SUFFIXES] + list(extra)
    found: list[tuple[Path, int]] = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return found
    for path in entries:
        for prefix, suffix in patterns:
            name = path.name
            if name.startswith(prefix) and name.endswith(suffix):
                match = _PID_PART.fullmatch(name[len(prefix) : len(name) - len(suffix)])
                if match:
                    found.append((path, int(match.group(1))))
                break
    return found


def sweep_leftovers(target: str | os.PathLike, extra: tuple[tuple[str, str], ...] = ()) -> list[Path]:
    """Remove the temporaries of writers that no longer run (killed, crashed, power cut); return them.

    A `.old` tree left between the two renames of the fallback swap is put back when `target` is
    missing (it is the last complete version); a `.tmp` is never promoted (it may be incomplete).
    """
    target = Path(target)
    dead = [(p, pid) for p, pid in leftovers(target, extra) if not _pid_alive(pid)]
    olds = sorted((p for p, _ in dead if p.name.endswith(".old")), key=lambda p: p.stat().st_mtime)
    if olds and not target.exists() and not target.is_symlink():
        with contextlib.suppress(OSError):
            os.replace(olds[-1], target)
    removed = []
    for path, _ in dead:
        if not path.exists() and not path.is_symlink():
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def _umask() -> int:
    """The process umask (mkstemp/mkdtemp create private 0600/0700 entries; users expect the usual modes)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
