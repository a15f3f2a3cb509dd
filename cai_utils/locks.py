"""One writer per output: a lock file under ``flock`` beside each JSONL file or model folder.

A second live writer gets a one-line DataError; a lock left by a killed run is taken over.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from .data import DataError


def lock_path(target: str | Path) -> Path:
    """The lock file of an output: ``runs/x/sft.jsonl`` -> ``runs/x/sft.jsonl.lock``, a model
    folder ``runs/x/sft`` -> ``runs/x/sft.lock``."""
    target = Path(target)
    return target.with_name(target.name + ".lock")


@contextmanager
def exclusive(target: str | Path):
    """Hold an output (a JSONL file or a model folder) for one writer at a time.

    The lock is ``lock_path(target)``, holding the writer's pid under an exclusive ``flock``,
    which the system drops when the process dies: a lock file left by a killed run is taken
    over, while a second live writer gets a one-line DataError (never interleaved lines).

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "x.jsonl"
    >>> with exclusive(out):
    ...     with exclusive(out): pass
    Traceback (most recent call last):
    ...
    cai_utils.data.DataError: ...x.jsonl: another process (pid ...) is writing it right now; wait for it to finish or stop it, then rerun
    """
    from .devices import is_main_process

    if not is_main_process():  # under accelerate launch only rank 0 writes, and holds the lock
        yield None
        return
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one writer is the user's to ensure
        yield None
        return
    lock = lock_path(target)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataError(f"{target}: another process (pid {holder}) is writing it right now; "
                            "wait for it to finish or stop it, then rerun") from None
        try:  # the file we locked may have been removed by a writer finishing meanwhile
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield lock
    finally:
        try:
            os.unlink(lock)
        finally:
            os.close(fd)


def writes_to(parameter: str = "out"):
    """Decorate a function that writes the output named by ``parameter``: it runs under
    ``exclusive`` on that output."""
    import functools
    import inspect

    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with exclusive(signature.bind(*args, **kwargs).arguments[parameter]):
                return fn(*args, **kwargs)
        return wrapper
    return decorate
