"""Run test commands side by side, one CPU thread each, and fail if any fails.

``make test`` runs the pytest suite and the notebooks (nbval) at the same time. On a small CPU
two one-thread processes do about 1.5x the work of one two-thread process (the course's model is
small, so much of each step is Python overhead that a second thread does not share), while two
processes that each start a thread per core oversubscribe the cores and crawl. The Makefile sets
``OMP_NUM_THREADS=1`` for every job.

Each job's output goes to a log file and is printed whole when the job ends, so the jobs'
lines never interleave; a line says when each job started and ended.

Usage: ``python tests/side_by_side.py LABEL -- CMD ... [-- LABEL -- CMD ...]``, e.g.::

    python tests/side_by_side.py pytest -- python -m pytest tests -- notebooks -- python -m pytest notebooks/
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse(argv: list[str]) -> list[tuple[str, list[str]]]:
    """``LABEL -- CMD ... -- LABEL -- CMD ...`` into ``[(label, cmd), ...]``.

    >>> parse(["a", "--", "echo", "1", "--", "b", "--", "echo", "2"])
    [('a', ['echo', '1']), ('b', ['echo', '2'])]
    """
    parts, current = [], []
    for word in argv:
        if word == "--":
            parts.append(current)
            current = []
        else:
            current.append(word)
    parts.append(current)
    if len(parts) % 2 or not all(parts) or any(len(label) != 1 for label in parts[::2]):
        raise SystemExit("usage: side_by_side.py LABEL -- CMD ... [-- LABEL -- CMD ...]")
    return [(label[0], cmd) for label, cmd in zip(parts[::2], parts[1::2])]


def main(argv: list[str]) -> int:
    jobs = parse(argv)
    logs = Path(tempfile.mkdtemp(prefix="cai-tests-"))
    start = time.monotonic()
    running = {}
    for label, cmd in jobs:
        log = logs / f"{label.replace(' ', '_').replace('/', '_')}.log"
        running[label] = (subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT), log)
        print(f"[{label}] started: {' '.join(cmd)}  (log: {log})", flush=True)
    failed = []
    while running:
        for label, (proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[label]
            seconds = time.monotonic() - start
            print(f"\n===== [{label}] exit {proc.returncode} after {seconds:.0f} s =====", flush=True)
            print(log.read_text(errors="replace"), flush=True)
            if proc.returncode != 0:
                failed.append(label)
        time.sleep(1)
    print(f"side by side: {len(jobs)} jobs in {time.monotonic() - start:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    print(f"jobs: {len(jobs) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
