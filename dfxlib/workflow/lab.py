"""JupyterLab on the project: dfx's environment registered as a kernel, a server on the loopback address with
announcements off, and the latest run's executed notebooks one click away (`dfx lab`, `make lab`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from dfxlib.config import runs_root

#: the kernel that runs dfx's environment, as JupyterLab's launcher and kernel picker show it
KERNEL_NAME = "dfx"
KERNEL_DISPLAY = "dfx (Python 3)"


def register_kernel(prefix: str | None = None) -> Path:
    """Install the `dfx` kernel spec for this interpreter under `prefix` (default: this environment, so only
    its own JupyterLab sees it); returns the spec's folder."""
    from ipykernel.kernelspec import install

    return Path(install(kernel_name=KERNEL_NAME, display_name=KERNEL_DISPLAY, prefix=prefix or sys.prefix))


def latest_run_notebooks(root: Path) -> str:
    """The executed notebooks of the most recently reported run, relative to `root` ("notebooks" when no run
    has finished yet): the folder JupyterLab opens on."""
    reports = sorted(runs_root().glob("*/REPORT.md"), key=lambda p: p.stat().st_mtime, reverse=True)
    for report in reports:
        folder = report.parent / "notebooks"
        if folder.is_dir():
            try:
                return folder.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:  # runs kept outside the project (DFX_RUNS): open the source notebooks
                break
    return "notebooks"


#: JupyterLab setting defaults for dfx's server: no news and no update checks (their first-run question would
#: cover part of the page)
SETTINGS: dict[str, dict] = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                                             "checkForUpdates": False}}


def write_settings(folder: Path) -> Path:
    """Write `SETTINGS` as JupyterLab's `overrides.json` in `folder` (an app settings folder); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "overrides.json").write_text(json.dumps(SETTINGS, indent=2) + "\n")
    return folder


def server_config(root: Path, port: int, settings: Path, open_browser: bool = True) -> str:
    """A jupyter_server configuration: loopback only, `root` as the file browser's root, the dfx kernel by
    default, JupyterLab's setting defaults from `settings` (see `write_settings`), no news fetched."""
    return "\n".join([
        "c.ServerApp.ip = '127.0.0.1'",
        f"c.ServerApp.port = {int(port)}",
        "c.ServerApp.port_retries = 0",  # the port dfx names is the port it serves, or it stops
        f"c.ServerApp.root_dir = {str(root)!r}",
        f"c.ServerApp.open_browser = {bool(open_browser)}",
        f"c.MultiKernelManager.default_kernel_name = {KERNEL_NAME!r}",
        f"c.LabApp.app_settings_dir = {str(settings)!r}",
        "c.LabApp.news_url = None",
        "c.LabApp.check_for_updates_class = 'jupyterlab.NeverCheckForUpdate'",
        "",
    ])


def launch(root: Path, port: int = 8888, open_browser: bool = True, extra: list[str] | None = None) -> int:
    """Register the kernel, write the server configuration under `runs/.lab/` and run JupyterLab in the
    foreground on the latest run's notebooks until it is stopped (Ctrl-C)."""
    if not port_free(port):  # JupyterLab would take another port while dfx named this one
        print(f"dfx lab: port {port} of 127.0.0.1 is in use (another JupyterLab?); choose one with --port",
              file=sys.stderr)
        return 2
    spec = register_kernel()
    folder = runs_root() / ".lab"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "jupyter_server_config.py"
    config.write_text(server_config(root, port, write_settings(folder / "settings"), open_browser))
    start = latest_run_notebooks(root)
    print(f"dfx lab: kernel {KERNEL_DISPLAY!r} ({spec}); opening {start}/ at http://127.0.0.1:{port}/lab")
    cmd = [sys.executable, "-m", "jupyterlab", f"--config={config}", f"--ServerApp.default_url=/lab/tree/{start}",
           *(["--allow-root"] if os.geteuid() == 0 else []), *(extra or [])]
    server = subprocess.Popen(cmd)

    def stop(signum: int, frame: object) -> None:  # a closed terminal, a process manager, `kill`
        server.terminate()

    before = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return server.wait()
    except KeyboardInterrupt:  # JupyterLab got the same Ctrl-C; it is not left behind either way
        server.terminate()
        return 0
    finally:
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        for s, handler in before.items():
            signal.signal(s, handler)


def port_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:`port` (dfx lab's server would get it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
