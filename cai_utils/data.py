"""JSONL records, resumable writing, manifests and prompt files.

Records on disk are one JSON object per line. Writers append whole lines and flush and fsync
per batch, so a run killed at any moment loses at most the batch in flight; a partial last line
left by an older crash is cut off (and reported) before appending, never parsed as data.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path


class DataError(ValueError):
    """Bad input data: one line naming the file and, where it applies, the line."""


def project_root() -> Path:
    """The course checkout: ``$CAI_ROOT``, else the nearest folder above the working directory
    (or above this package) that holds ``constitutions/`` and ``data/``."""
    if os.environ.get("CAI_ROOT"):
        return Path(os.environ["CAI_ROOT"]).resolve()
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / "constitutions").is_dir() and (folder / "data").is_dir():
                return folder
    raise DataError(
        "cannot find the course folder (with constitutions/ and data/): run from inside the "
        "checkout or set CAI_ROOT"
    )


def content_id(obj) -> str:
    """A short stable id from an object's canonical JSON.

    >>> content_id({"prompt": "hi"})
    'p-bbab304eadd0'
    """
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return "p-" + hashlib.sha256(blob).hexdigest()[:12]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)``; a malformed line is a DataError naming file and line.

    A last line without a newline is taken as cut off by a crash: it is skipped with a warning
    when it does not parse, and an error when any earlier line does not.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 (byte {err.start})") from None
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):  # no newline after it: a line cut off by a crash
                warnings.warn(f"{path}:{number}: ignoring a partial last line (an interrupted write)")
                return
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        yield number, record


def read_jsonl(path: str | Path) -> list[dict]:
    """All records of a JSONL file (see ``iter_jsonl`` for errors)."""
    return [record for _, record in iter_jsonl(path)]


def repair_partial_line(path: Path) -> bool:
    """Cut a partial last line (no trailing newline) left by a crash; True if one was cut."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return False
        keep = data.rfind(b"\n") + 1
        handle.truncate(keep)
    warnings.warn(f"{path}: removed a partial last line left by an interrupted run")
    return True


class JsonlAppender:
    """Append records to a JSONL file, resuming a previous run.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "x.jsonl"
    >>> with JsonlAppender(out) as w: n = w.write([{"id": "a"}])
    >>> JsonlAppender(out).done_ids
    {'a'}
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_partial_line(self.path)
        self.done_ids: set[str] = (
            {str(r.get("id")) for r in read_jsonl(self.path)} if self.path.exists() else set()
        )
        self._handle = None

    def write(self, records: Iterable[dict]) -> int:
        """Append whole lines, then flush and fsync; returns the number written."""
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
        if not lines:
            return 0
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write("".join(lines))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        for line in lines:
            self.done_ids.add(str(json.loads(line).get("id")))
        return len(lines)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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


def _publish(tmp: str, path: Path) -> None:
    """Rename a finished temporary file into place with the usual permissions (mkstemp
    creates files only their owner can read)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, obj) -> Path:
    """Write JSON through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False, default=str)
        handle.write("\n")
    _publish(tmp, path)
    return path


def write_jsonl_atomic(path: str | Path, records: Iterable[dict]) -> Path:
    """Write a whole JSONL file at once through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    _publish(tmp, path)
    return path


def manifest_path(data_path: str | Path) -> Path:
    """``runs/x/sft.jsonl`` -> ``runs/x/sft.manifest.json``."""
    data_path = Path(data_path)
    return data_path.with_name(data_path.stem + ".manifest.json")


def package_versions() -> dict[str, str]:
    """Versions of the packages the pipeline depends on (missing ones are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "accelerate",
             "gguf", "lm_eval", "cai_utils"]
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def write_manifest(data_path: str | Path, **fields) -> Path:
    """Write the manifest beside a data file: the fields given plus time and versions."""
    manifest = {
        "file": Path(data_path).name,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "versions": package_versions(),
        **fields,
    }
    return write_json_atomic(manifest_path(data_path), manifest)


def read_manifest(data_path: str | Path) -> dict | None:
    path = manifest_path(data_path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def check_resume(out: Path, provenance: dict) -> None:
    """Refuse to append to a file whose manifest records other provenance (constitution,
    models, settings): one line saying which, and what to do."""
    manifest = read_manifest(out)
    if not Path(out).exists() or manifest is None:
        return
    for key, value in provenance.items():
        if manifest.get(key) != value:
            raise DataError(f"{out}: was made with a different {key} "
                            f"({manifest.get(key)!r}); use a new --out or delete the file")


def _check_messages(messages, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise DataError(f"{where}: messages[{i}] needs a 'role' and a string 'content'")
        if message.get("role") not in ("system", "user", "assistant"):
            raise DataError(f"{where}: messages[{i}].role must be system, user or assistant")
    if messages[-1]["role"] != "user":
        raise DataError(f"{where}: the last message must be from the user")


def load_prompts(path: str | Path, limit: int | None = None) -> list[dict]:
    """Read a prompt file: lines ``{"id", "prompt"}`` or ``{"id", "messages"}``, where a
    ``prompt`` is a string or, as in TRL's conversational records (stage-1 and stage-2 files), a
    conversation that ends with the user's turn; such a record's answer is not part of the prompt.

    Every record comes back with ``id`` (derived from a hash of the content when missing),
    ``messages`` (a one-turn conversation for a plain ``prompt``) and its other fields kept.
    Duplicate ids and malformed lines are DataErrors naming file and line.
    """
    records, seen = [], {}
    for number, raw in iter_jsonl(path):
        where = f"{path}:{number}"
        if isinstance(raw.get("prompt"), list):  # a TRL conversational record: its prompt only
            messages = raw["prompt"]
            _check_messages(messages, where)
        elif "messages" in raw:
            messages = raw["messages"]
            _check_messages(messages, where)
        elif isinstance(raw.get("prompt"), str) and raw["prompt"].strip():
            messages = [{"role": "user", "content": raw["prompt"]}]
        else:
            raise DataError(f"{where}: needs a non-empty string 'prompt', a 'prompt' conversation "
                            "or a 'messages' list")
        record = dict(raw)
        record.pop("prompt", None)
        record["messages"] = messages
        record["id"] = str(raw.get("id") or content_id(messages))
        if record["id"] in seen:
            raise DataError(f"{where}: duplicate id {record['id']!r} (first on line {seen[record['id']]})")
        seen[record["id"]] = number
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    if not records:
        raise DataError(f"{path}: no prompts in the file")
    if limit is not None and len(records) < limit:
        warnings.warn(f"{path}: {limit} prompts asked for, the file holds {len(records)}: "
                      f"using {len(records)}", stacklevel=2)
    return records
