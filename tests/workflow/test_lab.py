"""JupyterLab for real: the executed notebooks open in a browser with their widgets, and `07_inspect` runs inside
JupyterLab, where picking an image through the widget shows its prediction.

The browser is Debian's `chromium` (apt) driven by the `playwright` package through its executable path (never
`playwright install`); JupyterLab is started on a free loopback port with dfx's own server configuration
(`dfxlib.workflow.lab`) plus the test helpers JupyterLab ships (`jupyterlab.galata`). Screenshots are kept under
$DFX_TEST_ARTIFACTS (default runs/test-artifacts/lab/).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from conftest import REPO
from nbformat.sign import NotebookNotary

from dfxlib.predict import complete
from dfxlib.workflow import lab

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on show


def artifacts() -> Path:
    folder = Path(os.environ.get("DFX_TEST_ARTIFACTS") or REPO / "runs" / "test-artifacts") / "lab"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.notebook
def test_every_widget_output_has_its_state_saved(smoke_run):
    """The cheap check: a widget shown by an executed notebook renders later only if its model's state was
    saved in the notebook's metadata and the notebook is trusted (signed by the run, as JupyterLab signs what
    its user saves); otherwise JupyterLab shows the widget's text, e.g. `VBox(children=...)`."""
    shown = 0
    for path in sorted((smoke_run / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        with NotebookNotary() as notary:
            assert notary.check_signature(nb), f"{path.name} is not signed as trusted"
        state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                view = out.get("data", {}).get(WIDGET_VIEW)
                if view:
                    shown += 1
                    assert view["model_id"] in state, f"{path.name}: widget {view['model_id']} has no saved state"
    assert shown > 0  # notebook 07 shows widgets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_url(smoke_run, tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium): the browser test needs a real browser")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install playwright)")
    port = _free_port()
    folder = tmp_path_factory.mktemp("lab")
    root = folder / "root"  # copies: JupyterLab saves what it runs, and the run's notebooks stay as executed
    shutil.copytree(smoke_run / "notebooks", root / "notebooks")
    config = folder / "jupyter_server_config.py"
    config.write_text("from jupyterlab.galata import configure_jupyter_server\nconfigure_jupyter_server(c)\n"
                      + lab.server_config(root, port, lab.write_settings(folder / "settings"), open_browser=False))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(folder / "config"), "JUPYTER_RUNTIME_DIR": str(folder / "rt")}
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", f"--config={config}", "--allow-root"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"JupyterLab did not answer on {url}: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(lab_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, url: str, name: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/lab/tree/notebooks/{name}?reset")  # reset: only this notebook open, not the last layout
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=60_000)
    page.wait_for_selector(f"{PANEL} .jp-Cell", timeout=60_000)
    return page


def _shows_widgets(path: Path) -> bool:
    """Whether an executed notebook has a widget among its outputs."""
    return any(WIDGET_VIEW in out.get("data", {}) for cell in nbformat.read(path, as_version=4).cells
               for out in cell.get("outputs", []))


def _errors(page) -> list[str]:
    """Texts JupyterLab shows for broken output: widget errors and tracebacks."""
    body = page.inner_text(PANEL)
    return [w for w in ("Error displaying widget", "Traceback (most recent call last)", "model not found")
            if w in body]


@pytest.mark.notebook
def test_every_notebook_opens_in_jupyterlab(browser, lab_url, smoke_run):
    """Each executed notebook opens as a reader sees it, all in one JupyterLab page: its outputs drawn (HTML and
    widgets too: the run signed it as trusted) and no error shown. Only a notebook with widgets gets a kernel:
    JupyterLab's widget manager draws their saved state once a kernel is connected; the others open as
    "Notebook (no kernel)"."""
    shots = artifacts()
    names = sorted(p.name for p in (smoke_run / "notebooks").glob("*.ipynb"))
    assert len(names) == 8
    widgets = {name: _shows_widgets(smoke_run / "notebooks" / name) for name in names}
    assert widgets["07_inspect.ipynb"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{lab_url}/lab?reset")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.serviceManager", timeout=60_000)
    page.evaluate("() => window.jupyterapp.restored.then(() => true)")  # every plugin (and command) is there
    ids = page.evaluate("""opens => Promise.all(opens.map(([path, kernel]) => window.jupyterapp.commands.execute(
                               'docmanager:open', {path, factory: 'Notebook',
                                                   kernelPreference: {shouldStart: kernel, shouldReuse: false}})))
                               .then(panels => panels.map(p => p.id))""",
                        [[f"notebooks/{name}", widgets[name]] for name in names])  # together: seconds each alone
    for name, panel in zip(names, ids):
        page.evaluate("id => window.jupyterapp.shell.activateById(id)", panel)
        assert page.evaluate("() => window.jupyterapp.shell.currentWidget.context.path") == f"notebooks/{name}"
        page.wait_for_selector(f"{PANEL} .jp-OutputArea-output", state="attached", timeout=30_000)
        if widgets[name]:
            page.wait_for_selector(f"{PANEL} .jupyter-widgets", state="attached", timeout=60_000)  # any widget view
            page.locator(f"{PANEL} .jupyter-widgets").first.scroll_into_view_if_needed()  # in the screenshot
        page.wait_for_timeout(500)  # figures and widgets settle after the outputs are attached
        page.screenshot(path=str(shots / f"{Path(name).stem}.png"))
        assert _errors(page) == [], name
        assert page.locator(f"{PANEL} .jp-OutputArea-output:has-text('Loading widget...')").count() == 0, name
    assert page.locator("text=official Jupyter news").count() == 0  # announcements are off
    running = page.evaluate("() => window.jupyterapp.serviceManager.sessions.refreshRunning()"
                            ".then(() => Array.from(window.jupyterapp.serviceManager.sessions.running(), s => s.path))")
    assert sorted(running) == [f"notebooks/{n}" for n in names if widgets[n]]  # the others started no kernel
    page.evaluate("() => window.jupyterapp.serviceManager.sessions.shutdownAll()")  # before the next test
    page.close()


@pytest.mark.notebook
def test_inspect_runs_in_jupyterlab_and_its_widget_predicts(browser, lab_url, smoke_run):
    """Run 07_inspect (the executed copy: its parameters point at the smoke run) in JupyterLab's own kernel,
    pick another test image in the dropdown, and see that image's prediction appear."""
    shots = artifacts()
    page = _open(browser, lab_url, "07_inspect.ipynb")
    page.wait_for_function("""() => { const w = window.jupyterapp.shell.currentWidget;
                                      return w && w.sessionContext && w.sessionContext.session
                                             && w.sessionContext.session.kernel
                                             && w.sessionContext.session.kernel.status === 'idle'; }""",
                           timeout=120_000)  # the kernel is up before anything runs
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    dropdown = page.locator(f"{PANEL} .widget-dropdown select").first
    try:
        dropdown.wait_for(timeout=180_000)
    except Exception:
        page.screenshot(path=str(shots / "07_inspect_failed.png"), full_page=True)
        raise AssertionError(f"no dropdown after running 07_inspect: {page.inner_text(PANEL)[-3000:]}")
    table = page.locator(f"{PANEL} .widget-output table").first
    table.wait_for(timeout=180_000)
    page.wait_for_function("""() => { const s = window.jupyterapp.shell.currentWidget.sessionContext;
                                      return s.session && s.session.kernel.status === 'idle'; }""",
                           timeout=180_000)
    assert _errors(page) == []
    options = dropdown.locator("option").all_inner_texts()
    assert len(options) > 2
    chosen = options[2]
    dropdown.select_option(label=chosen)
    # the output widget redraws with the chosen image's row: wait for its probabilities
    pred = complete.load_predictor(smoke_run, "", "", "cpu")
    rows, _ = complete.inspect(pred, [(str(smoke_run_image(smoke_run, chosen)), None)])
    page.wait_for_function(
        """([want, chosen]) => [...document.querySelectorAll('.widget-output table tr')].some(tr => {
               const th = tr.querySelector('th'), tds = [...tr.querySelectorAll('td')];
               return th && th.innerText.trim().endsWith(chosen)
                      && tds.some(td => Math.abs(parseFloat(td.innerText) - want) < 1e-4); })""",
        arg=[float(rows[0]["p_real"]), chosen], timeout=120_000)  # that image's row, with its p_real
    page.screenshot(path=str(shots / "07_inspect_prediction.png"), full_page=True)
    assert _errors(page) == []
    page.close()


def smoke_run_image(run_dir: Path, rel: str) -> Path:
    """The file of a test-split image named by its relative path, as notebook 07 resolves it."""
    import dfxlib

    run = dfxlib.start("smoke", run_dir=str(run_dir))  # the settings the run was made with: config.json unchanged
    return run.index().abspath(rel)


def test_lab_registers_the_kernel_and_serves_loopback_only(tmp_path, monkeypatch):
    import json

    spec = lab.register_kernel(prefix=str(tmp_path / "env"))
    kernel = json.loads((spec / "kernel.json").read_text())
    assert spec.name == lab.KERNEL_NAME and kernel["display_name"] == lab.KERNEL_DISPLAY
    assert kernel["argv"][0] == sys.executable  # this environment's Python, whatever is on PATH
    settings = lab.write_settings(tmp_path / "settings")
    overrides = json.loads((settings / "overrides.json").read_text())
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    c = type("C", (), {})()  # a stand-in for traitlets' config object: attribute paths
    for part in ("ServerApp", "MultiKernelManager", "LabApp"):
        setattr(c, part, type(part, (), {})())
    exec(lab.server_config(tmp_path, 9999, settings, open_browser=False), {"c": c})
    assert c.ServerApp.ip == "127.0.0.1" and c.ServerApp.port == 9999 and c.ServerApp.open_browser is False
    assert c.MultiKernelManager.default_kernel_name == "dfx" and c.LabApp.news_url is None
    assert c.LabApp.app_settings_dir == str(settings)


def test_lab_opens_the_latest_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DFX_RUNS", str(tmp_path / "runs"))
    assert lab.latest_run_notebooks(tmp_path) == "notebooks"  # no run yet: the source notebooks
    for name, age in (("mini", 100), ("smoke", 10)):
        (tmp_path / "runs" / name / "notebooks").mkdir(parents=True)
        report = tmp_path / "runs" / name / "REPORT.md"
        report.write_text("#")
        os.utime(report, (time.time() - age, time.time() - age))
    assert lab.latest_run_notebooks(tmp_path) == "runs/smoke/notebooks"


def test_dfx_lab_on_a_busy_port_says_so_instead_of_naming_another(tmp_path, monkeypatch, capsys):
    """#32 item 14: on a busy port JupyterLab took the next one while dfx's line named the busy one."""
    from dfxlib.workflow.cli import main

    monkeypatch.setenv("DFX_RUNS", str(tmp_path / "runs"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["lab", "--port", str(port), "--no-browser"]) == 2
    assert f"dfx lab: port {port} of 127.0.0.1 is in use" in capsys.readouterr().err
    assert not (tmp_path / "runs" / ".lab").exists()  # nothing written before the refusal
    c = type("C", (), {"ServerApp": type("S", (), {})(), "MultiKernelManager": type("M", (), {})(),
                       "LabApp": type("L", (), {})()})()
    exec(lab.server_config(tmp_path, port, tmp_path, open_browser=False), {"c": c})
    assert c.ServerApp.port_retries == 0  # and JupyterLab itself never moves to another port


def test_dfx_lab_stopped_by_sigterm_stops_its_server(tmp_path):
    """#32 item 16: `dfx lab` killed by SIGTERM (a closed terminal, a process manager) left its JupyterLab server
    running on the port, so the next `dfx lab` landed elsewhere."""
    import psutil

    port = _free_port()
    env = {**os.environ, "DFX_RUNS": str(tmp_path / "runs"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    dfx = subprocess.Popen([sys.executable, "-m", "dfxlib.workflow.cli", "lab", "--port", str(port), "--no-browser"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 90
    while True:
        try:  # the server listens (its API wants a token: a connection is enough)
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            break
        except OSError:
            assert dfx.poll() is None and time.monotonic() < deadline, "dfx lab did not start its server"
            time.sleep(0.5)
    servers = psutil.Process(dfx.pid).children(recursive=True)
    assert servers
    dfx.terminate()
    dfx.wait(60)  # dfx itself ends (a TimeoutExpired here fails the test)
    gone, alive = psutil.wait_procs(servers, timeout=30)
    assert alive == [] and lab.port_free(port)
