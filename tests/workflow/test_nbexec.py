"""`dfx run` cannot hang: a silent cell is stopped and named; widget cells complete under CPU load (issue #18)."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import nbformat
import papermill as pm
import pytest
from fixture import write_notebook

from dfxlib.workflow import execute
from dfxlib.workflow.notebooks import NotebookFailure, run_notebooks

WIDGET_CELL = """import ipywidgets as widgets
from concurrent.futures import ThreadPoolExecutor
from IPython.display import display
choice = widgets.Dropdown(options=["a", "b", "c"], description="pick")
out = widgets.Output()
with ThreadPoolExecutor(2) as pool:
    sums = list(pool.map(lambda i: sum(j * j for j in range(20000)), range(8)))
out.clear_output(wait=True)
with out:
    display(sums[:2])
display(widgets.VBox([choice, out]))"""



@pytest.mark.notebook
def test_silent_cell_is_stopped_named_and_resumable(tmp_path):
    books = tmp_path / "nbs"
    books.mkdir()
    write_notebook(books / "01_silent.ipynb", "print('before the stall')", "import time\ntime.sleep(120)")
    run_dir = tmp_path / "run"
    with pytest.raises(NotebookFailure) as exc:
        run_notebooks("smoke", {"run_dir": str(run_dir)}, folder=books, log=lambda *_: None, stall_timeout=3)
    msg = str(exc.value)
    assert "01_silent.ipynb" in msg and "stalled" in msg and "(import time)" in msg
    assert f"dfx run --profile smoke --from 01 -p run_dir={run_dir}`" in msg  # the hint resumes this run, not another
    executed = nbformat.read(run_dir / "notebooks" / "01_silent.ipynb", as_version=4)
    printed = next(c for c in executed.cells if c.source.startswith("print"))
    assert printed.outputs[0]["text"] == "before the stall\n"  # what ran is kept


@pytest.mark.notebook
def test_long_cells_are_announced_in_batch_logs(tmp_path):
    """Off a terminal there is no progress bar: a cell running longer than `heartbeat` is announced, and
    each notebook still ends in one line with its time."""
    books = tmp_path / "nbs"
    books.mkdir()
    write_notebook(books / "01_busy.ipynb", "x = 1", "import time\nt = time.time()\nwhile time.time() - t < 3.5:\n    pass")
    lines: list[str] = []
    run_notebooks("smoke", {"run_dir": str(tmp_path / "run")}, folder=books, log=lines.append, heartbeat=1)
    beats = [ln for ln in lines if "running for" in ln]
    assert beats and all(re.fullmatch(r"    01_busy: cell (\d+)/\1 running for \d+ s: import time", ln)
                         for ln in beats)  # the last cell, named by its first line
    assert lines[0] == "[1/1] 01_busy ..." and lines[-2].startswith("[1/1] 01_busy done in ")


@pytest.mark.notebook
def test_widget_cells_complete_under_cpu_load(tmp_path):
    """Sixty widget cells, twice, beside two busy processes. Before the fix about one such cell in a hundred
    lost its reply under load and waited forever; here a lost reply becomes a NotebookStalled within seconds."""
    nb = tmp_path / "widgets.ipynb"
    write_notebook(nb, *[WIDGET_CELL] * 60)
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for run in range(2):
            done = pm.execute_notebook(str(nb), str(tmp_path / f"out{run}.ipynb"), kernel_name="python3",
                                       progress_bar=False, engine_name=execute.ENGINE, stall_after=60,
                                       reply_grace=10)
            assert all(c.metadata.papermill.status == "completed" for c in done.cells)
            assert all(any("VBox" in o.get("data", {}).get("text/plain", "") for o in c.outputs)
                       for c in done.cells[1:])
    finally:
        for p in load:
            p.kill()


def test_channel_reads_a_message_whose_wakeup_was_consumed():
    """The level check: a message already queued is read even when the fd's edge was consumed beforehand."""
    import asyncio

    import zmq
    import zmq.asyncio
    from jupyter_client.session import Session

    async def scenario():
        ctx = zmq.asyncio.Context()
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.bind("inproc://dfx-level")
        b.connect("inproc://dfx-level")
        session = Session(key=b"")
        channel = execute.LevelCheckedChannel(b, session)
        session.send(a, "execute_reply", {"status": "ok"})
        await asyncio.sleep(0.05)
        b.getsockopt(zmq.EVENTS)  # consumes the edge: an edge-only wait would now sleep forever
        msg = await asyncio.wait_for(channel.get_msg(), timeout=5)
        with pytest.raises(execute.Empty):
            await channel.get_msg(timeout=0.2)
        a.close(), b.close(), ctx.term()
        return msg

    assert asyncio.run(scenario())["msg_type"] == "execute_reply"


def test_kernel_sockets_live_in_a_private_folder_not_the_working_one():
    """jupyter_client's IPC default is `kernel-ipc-N` in the working folder, so a killed run left sockets in
    notebooks/. dfx's kernels use a private temporary folder (0700), removed when the kernel is cleaned up."""
    import asyncio
    import os
    import stat

    km = execute.IpcKernelManager()
    folder = os.path.dirname(km.ip)
    assert os.path.isabs(km.ip) and os.path.isdir(folder)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    asyncio.run(km.cleanup_resources())
    assert not os.path.exists(folder)


def test_an_executed_notebook_is_signed_or_says_why_not(tmp_path, monkeypatch):
    """`trust` signs with Jupyter's notary in the Jupyter data folder; where it cannot (here the data folder would
    lie under a file), it returns a line naming the notebook instead of failing the run."""
    from nbformat.sign import NotebookNotary

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    path = tmp_path / "executed.ipynb"
    nbformat.write(nb, path)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    assert execute.trust(path) is None
    with NotebookNotary() as notary:
        assert notary.check_signature(nbformat.read(path, as_version=4))
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "a-file" / "data"))
    why = execute.trust(path)
    assert why is not None and why.startswith(f"{path}: not signed as trusted")


INTERRUPT = """import sys
from pathlib import Path
from dfxlib.workflow.cli import _stop
from dfxlib.workflow.notebooks import run_notebooks
try:
    run_notebooks("smoke", {"run_dir": sys.argv[2]}, folder=Path(sys.argv[1]), log=lambda line: print(line, flush=True))
except KeyboardInterrupt as exc:
    sys.exit(_stop("run", exc))
"""


@pytest.mark.notebook
def test_ctrl_c_stops_a_run_in_one_line(tmp_path):
    """#32 item 9: Ctrl-C during `dfx run` printed the kernel's 20-line ZMQError traceback (and nbclient's "Kernel
    died", an unretrieved task) before "dfx run: interrupted". A terminal's Ctrl-C reaches the whole process
    group, as killpg does here; what is left on stderr is the one line."""
    import os
    import signal

    books = tmp_path / "nbs"
    books.mkdir()
    write_notebook(books / "01_long.ipynb", "print('started', flush=True)", "import time\ntime.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", INTERRUPT, str(books), str(tmp_path / "run")], text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert p.stdout.readline().startswith("[1/1] 01_long ...")
    time.sleep(8)  # into the sleeping cell
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and err == "dfx run: interrupted\n", err
