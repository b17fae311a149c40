"""Papermill execution that cannot hang: a kernel client that never waits on a lost wake-up, and a watchdog.

Why (measured here, issue #18): under CPU load, about one cell in a hundred of a widget notebook never completes
under papermill. The kernel has finished the cell, published `idle`, and sent `execute_reply`; the reply sits
readable in the client's shell socket (`ZMQ_EVENTS` has `POLLIN`), but the client's `zmq.asyncio` poll with no
timeout waits on the socket's edge-triggered file descriptor, whose edge was already consumed, so it never
wakes. It happens with ipykernel 6.31 and 7.4 alike (the kernel is not the cause), pyzmq 27.3, jupyter_client
8.10, nbclient 0.11. Two changes, both here:

- `LevelCheckedChannel`: waits in bounded slices; when a slice ends pyzmq's poller does a real `zmq_poll`
  (level-triggered), so a message whose wake-up was lost is read within `RECHECK_S` instead of never.
- `WatchedClient`: a watchdog per cell. A cell is *stalled* when the kernel said `idle` and no reply came within
  `reply_grace` seconds, or when the kernel neither sent a message nor used CPU for `stall_after` seconds. Then
  the kernel is stopped, the executed copy keeps what ran, and `NotebookStalled` names the cell.

Kernels are started on the IPC transport (local sockets, not TCP): nothing listens on the network, and the
kernel's "running over TCP without encryption" warning has nothing to warn about.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from queue import Empty  # noqa: F401  (raised by get_msg, as jupyter_client does)
from typing import Any

import nbformat
import psutil
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import DeadKernelError
from nbclient.util import ensure_async, run_sync
from nbformat.sign import NotebookNotary
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger as papermill_logger
from traitlets import Any as AnyTrait
from traitlets import Float, default

RECHECK_S = 0.5
"""Longest a message that arrived without a wake-up waits before it is read."""

ENGINE = "dfx"

#: set when the user stops `dfx run` (Ctrl-C): a kernel's dying words are then noise, not a diagnosis
INTERRUPTED = False
"""The papermill engine name under which `WatchedEngine` is registered."""


class NotebookStalled(RuntimeError):
    """A cell stopped making progress; the kernel was stopped and the executed copy saved."""

    def __init__(self, cell_index: int, first_line: str, reason: str):
        self.cell_index, self.first_line, self.reason = cell_index, first_line, reason
        super().__init__(f"cell {cell_index} ({first_line}) stalled: {reason}")


class LevelCheckedChannel(AsyncZMQSocketChannel):
    """A channel whose `get_msg` waits in slices of `RECHECK_S`, re-reading the socket's level state each time."""

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = RECHECK_S if deadline is None else min(RECHECK_S, max(0.0, deadline - time.monotonic()))
            if await self.socket.poll(max(1, int(left * 1000))):
                return await self._recv()
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty


class LevelCheckedClient(AsyncKernelClient):
    """An async kernel client whose shell and IOPub channels are `LevelCheckedChannel`s."""

    @default("shell_channel_class")
    def _default_shell_channel_class(self) -> type:
        return LevelCheckedChannel

    @default("iopub_channel_class")
    def _default_iopub_channel_class(self) -> type:
        return LevelCheckedChannel


class IpcKernelManager(AsyncKernelManager):
    """A kernel manager that starts kernels on the IPC transport with a `LevelCheckedClient`."""

    @default("client_factory")
    def _default_client_factory(self) -> type:
        return LevelCheckedClient

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc"

    @default("ip")
    def _default_ip(self) -> str:
        # jupyter_client's default is `kernel-ipc` in the working folder: sockets would litter the notebooks
        # folder whenever a kernel is killed. A private folder (mode 0700) keeps them away and unreachable.
        self._ipc_dir = tempfile.mkdtemp(prefix="dfx-kernel-")
        return os.path.join(self._ipc_dir, "ipc")

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        # The kernel's own stderr (its log, not the notebook's output) goes to a file and is passed on when the
        # kernel is cleaned up, unless the user stopped the run: a kernel shut down mid-reply prints a 20-line
        # ZMQError traceback that would bury "dfx run: interrupted".
        self._stderr = tempfile.TemporaryFile(mode="w+b")
        kw.setdefault("stderr", self._stderr)
        await super()._async_launch_kernel(kernel_cmd, **kw)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        relay_stderr(getattr(self, "_stderr", None))
        if not restart and getattr(self, "_ipc_dir", None):
            shutil.rmtree(self._ipc_dir, ignore_errors=True)

    cleanup_resources = _async_cleanup_resources


def relay_stderr(fh: Any) -> None:
    """Pass what a kernel wrote to its stderr file on to ours (nothing after an interrupt), and close it."""
    if fh is None or fh.closed:
        return
    try:
        fh.seek(0)
        text = fh.read().decode(errors="replace")
        if text and not INTERRUPTED:
            sys.stderr.write(text)
            sys.stderr.flush()
    except (OSError, ValueError):
        pass
    finally:
        fh.close()


class WatchedClient(PapermillNotebookClient):
    """Papermill's client with level-checked channels, IPC kernels and a per-cell stall watchdog."""

    stall_after = Float(600.0, help="seconds with no kernel message and no kernel CPU use (0: never)").tag(config=True)
    reply_grace = Float(60.0, help="seconds to wait for the reply after the kernel said idle").tag(config=True)
    heartbeat = Float(0.0, help="say which cell is running every this many seconds (0: never)").tag(config=True)
    announce = AnyTrait(None, help="callable taking one line of progress (the heartbeat's)")

    @default("kernel_manager_class")
    def _default_kernel_manager_class(self) -> type:
        return IpcKernelManager

    def process_message(self, msg: dict, cell: Any, cell_index: int) -> Any:
        self._last_message = time.monotonic()
        if msg.get("msg_type") == "status" and msg["content"].get("execution_state") == "idle":
            self._idle_at = time.monotonic()
        return super().process_message(msg, cell, cell_index)

    async def async_execute_cell(self, cell: Any, cell_index: int, execution_count: int | None = None,
                                 store_history: bool = True) -> Any:
        self._last_message, self._idle_at, self._stall = time.monotonic(), None, None
        first = next((s for s in cell.source.splitlines() if s.strip()), "")[:80]
        watchdog = asyncio.ensure_future(self._watch(cell_index, first))
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        except DeadKernelError:
            if self._stall is None:
                raise
            raise NotebookStalled(cell_index, first, self._stall) from None
        finally:
            watchdog.cancel()

    execute_cell = run_sync(async_execute_cell)  # nbclient binds its own coroutine here; rebind to ours

    def _kernel_cpu(self) -> float | None:
        """CPU seconds used so far by the kernel process and its children (None if it cannot be read)."""
        pid = getattr(getattr(self.km, "provisioner", None), "pid", None)
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
            return sum(sum(p.cpu_times()[:2]) for p in procs)
        except (psutil.Error, TypeError, ValueError):
            return None

    async def _watch(self, cell_index: int, first: str) -> None:
        """Stop the kernel when the cell is stalled; announce a long cell every `heartbeat` seconds."""
        cpu, cpu_at = self._kernel_cpu(), time.monotonic()
        started = beat = cpu_at
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if self.heartbeat and self.announce is not None and now - beat >= self.heartbeat:
                beat = now
                self.announce(f"cell {cell_index + 1}/{len(self.nb.cells)} running for {now - started:.0f} s: {first}")
            used = self._kernel_cpu()
            if used is not None and cpu is not None and used - cpu > 0.05:
                cpu, cpu_at = used, now
            quiet = now - max(self._last_message, cpu_at)
            if self._idle_at is not None and now - self._idle_at > self.reply_grace:
                self._stall = f"the kernel finished it but its reply did not come within {self.reply_grace:.0f} s"
            elif self.stall_after and quiet > self.stall_after:
                self._stall = f"no output and no kernel CPU use for {quiet:.0f} s (limit {self.stall_after:.0f} s)"
            else:
                continue
            self.log.error("stall in cell %d: %s", cell_index, self._stall)
            # Killed, not asked (it is not listening); nbclient's liveness poll then ends the reply wait.
            await ensure_async(self.km.shutdown_kernel(now=True))
            return


class WatchedEngine(NBClientEngine):
    """Papermill's nbclient engine, executing with `WatchedClient`."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None, stderr_file=None,
                                 start_timeout=60, execution_timeout=None, **kwargs):
        kwargs.pop("input_path", None)
        client = WatchedClient(nb_man, kernel_name=kernel_name, log=kwargs.pop("log", None) or papermill_logger,
                               log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file,
                               startup_timeout=start_timeout, timeout=execution_timeout, **kwargs)
        return client.execute()


papermill_engines.register(ENGINE, WatchedEngine)


def trust(path: str | os.PathLike) -> str | None:
    """Sign an executed notebook as trusted with Jupyter's notary (as JupyterLab signs a notebook its user
    saves), so that it opens with its widgets and HTML drawn rather than as text. Returns why it could not be
    signed (a read-only Jupyter data folder, a bad file), or None."""
    try:
        nb = nbformat.read(path, as_version=4)
        with NotebookNotary() as notary:
            notary.sign(nb)
    except Exception as exc:  # the notebook ran; an unsigned copy only shows its widgets as text
        return f"{path}: not signed as trusted ({type(exc).__name__}: {exc})"
    return None
