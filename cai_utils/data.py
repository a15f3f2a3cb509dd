"""JSONL records, resumable and atomic writing, and prompt files (manifests: ``manifest.py``;
one writer per output: ``locks.py``).

Records on disk are one JSON object per line. Writers append whole lines and flush and fsync
per batch, so a run killed at any moment loses at most the batch in flight; a partial last line
left by an older crash is cut off (and reported) before appending, never parsed as data.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
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
