"""pytest plugin for the notebook runs: read a cell's output while the cell runs, not after.

nbval waits for a cell's reply on the shell channel and reads the output channel (IOPub) only
afterwards. A cell that runs for minutes and prints a lot (notebook 07 runs the whole pipeline)
fills the kernel's and the client's ZeroMQ queues (1000 messages each); the kernel then drops
messages, among them the "idle" that ends the cell, and nbval fails the cell with "Timeout of 5
seconds exceeded waiting for output" although it passed. Reproduced with a cell that prints
100,000 flushed lines; `tests/test_notebooks.py` keeps that check.

Used by the Makefile: ``python -m pytest -p tests.nbval_output --nbval-lax notebooks/``.
"""
from __future__ import annotations

import collections
import time
from queue import Empty

from nbval.kernel import RunningKernel

_POLL_SECONDS = 0.5
_get_message = RunningKernel.get_message


def _read_so_far(kernel: RunningKernel) -> collections.deque:
    if not hasattr(kernel, "_output_read_early"):
        kernel._output_read_early = collections.deque()
    return kernel._output_read_early


def _drain_output(kernel: RunningKernel) -> None:
    buffer = _read_so_far(kernel)
    while True:
        try:
            buffer.append(kernel.kc.get_iopub_msg(timeout=0))
        except Empty:
            return


def get_message(self: RunningKernel, stream: str, timeout: float | None = None) -> dict:
    """The output read while the cell ran comes first, in order; then the channel itself."""
    if stream == "iopub" and _read_so_far(self):
        return _read_so_far(self).popleft()
    return _get_message(self, stream, timeout=timeout)


def await_reply(self: RunningKernel, msg_id: str, timeout: float | None = None) -> None:
    """nbval's ``await_reply`` (same timeout, same errors) that keeps the output queue empty."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        _drain_output(self)
        wait = _POLL_SECONDS if deadline is None else min(_POLL_SECONDS, deadline - time.monotonic())
        if wait <= 0:
            raise Empty
        try:
            msg = self.kc.get_shell_msg(timeout=wait)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            if msg["content"]["status"] == "aborted":
                raise RuntimeError("Kernel aborted execution request")
            _drain_output(self)
            return


RunningKernel.get_message = get_message
RunningKernel.await_reply = await_reply
