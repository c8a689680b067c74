"""The student notebooks open in a real JupyterLab.

A headless JupyterLab is started on a free loopback port with a random token and
throw-away Jupyter directories (the user's own settings, kernels and workspaces
play no part). The tests then talk to it through its REST API, as the browser
does: the lessons tree, every lesson notebook (a notebook with cells and the
`python3` kernelspec), the kernelspecs and the `/lab` page. The server is
stopped (terminate, then kill after a timeout) when the module is done.

Only the standard library speaks HTTP here, and only to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
LESSONS = REPO / "lessons"
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
# Notebooks found on disk when the tests are collected; the REST API must serve
# the same set. Lesson notebooks live in lessons/<NN_topic>/<NN_topic>.ipynb.
LESSON_NOTEBOOKS = sorted(
    path.relative_to(REPO).as_posix()
    for path in LESSONS.glob("*/*.ipynb")
    if ".ipynb_checkpoints" not in path.parts
)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class LabServer:
    """A running `jupyter lab` process and how to talk to it."""

    def __init__(self, process: subprocess.Popen, port: int, token: str, log: Path):
        self.process = process
        self.port = port
        self.token = token
        self.log = log
        self.base_url = f"http://{HOST}:{port}"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-6000:]
        except OSError:
            return "<no server log>"

    def request(self, path: str, *, token: bool = True, accept: str = "application/json"):
        """GET `path`; returns `(status, content_type, body_bytes)` (HTTP errors too)."""
        headers = {"Accept": accept}
        if token:
            headers["Authorization"] = f"token {self.token}"
        req = urllib.request.Request(self.base_url + path, headers=headers, method="GET")
        # No proxy, whatever the environment says: the server is on loopback.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=REQUEST_TIMEOUT_S) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Content-Type", ""), error.read()

    def get_json(self, path: str):
        status, content_type, body = self.request(path)
        assert status == 200, (
            f"GET {path} answered HTTP {status}: {body[:500]!r}\n"
            f"server log:\n{self.log_text()}"
        )
        assert "json" in content_type, f"GET {path} answered {content_type!r}, expected JSON"
        return json.loads(body)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)


def _start_lab(home: Path, port: int, token: str) -> LabServer:
    for name in ("config", "data", "runtime", "ipython", "lab-settings", "lab-workspaces"):
        (home / name).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        IPYTHONDIR=str(home / "ipython"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "lab-workspaces"),
        JUPYTER_PLATFORM_DIRS="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        TF_ENABLE_ONEDNN_OPTS="0",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.pop("JUPYTER_TOKEN", None)
    env.pop("JUPYTER_PORT", None)
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ServerApp.open_browser=False",
        f"--ServerApp.ip={HOST}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",  # the chosen port or nothing
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={REPO}",
        "--ServerApp.allow_remote_access=False",
        # Offline: no news feed, no update check, no PyPI extension manager.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI often run as root
    log = home / "jupyter-lab.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=log_file, stderr=subprocess.STDOUT,
        )
    return LabServer(process, port, token, log)


def _wait_until_up(server: LabServer) -> bool:
    """Poll `/api/status` until it answers 200; False if the process died."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            status, _, _ = server.request("/api/status")
            if status == 200:
                return True
        except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
            pass
        time.sleep(0.25)
    server.stop()
    pytest.fail(
        f"JupyterLab did not answer /api/status within {STARTUP_TIMEOUT_S:.0f} s.\n"
        f"server log:\n{server.log_text()}"
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running JupyterLab whose root is the repository; stopped afterwards."""
    token = secrets.token_hex(24)
    server = None
    try:
        for attempt in range(3):  # the free port can be taken in between: retry
            home = tmp_path_factory.mktemp(f"jupyter-home-{attempt}")
            server = _start_lab(home, _free_port(), token)
            if _wait_until_up(server):
                break
            server.stop()
            if "already in use" not in server.log_text():
                break  # a real failure, not a port race: do not retry
        if server.process.poll() is not None:
            pytest.fail(
                f"JupyterLab exited with code {server.process.returncode} before "
                f"answering /api/status.\nserver log:\n{server.log_text()}"
            )
        yield server
    finally:
        if server is not None:
            server.stop()


def test_server_status_answers_on_loopback(lab):
    status = lab.get_json("/api/status")
    assert "started" in status, status
    # The server records where it listens in its runtime file: loopback only.
    info_files = list(lab.log.parent.joinpath("runtime").glob("jpserver-*.json"))
    assert info_files, f"no jpserver-*.json in the runtime dir\n{lab.log_text()}"
    info = json.loads(info_files[0].read_text())
    assert info["port"] == lab.port
    assert urllib.parse.urlsplit(info["url"]).hostname == HOST, info["url"]


def test_api_needs_the_token(lab):
    status, _, _ = lab.request("/api/contents", token=False)
    assert status == 403, f"the REST API answered HTTP {status} without the token"
    status, _, _ = lab.request("/api/contents")
    assert status == 200


def test_python3_kernelspec_is_available(lab):
    specs = lab.get_json("/api/kernelspecs")
    assert "python3" in specs["kernelspecs"], sorted(specs["kernelspecs"])
    assert specs["kernelspecs"]["python3"]["spec"]["language"] == "python"


def _list_notebooks(lab: LabServer, path: str) -> list[str]:
    """Every notebook under `path`, walking the tree through the contents API."""
    model = lab.get_json(f"/api/contents/{urllib.parse.quote(path)}?content=1")
    assert model["type"] == "directory", model["type"]
    found = []
    for entry in model["content"]:
        if entry["type"] == "directory" and entry["name"] != ".ipynb_checkpoints":
            found += _list_notebooks(lab, entry["path"])
        elif entry["type"] == "notebook":
            found.append(entry["path"])
    return found


def test_lessons_tree_is_listed(lab):
    root = lab.get_json("/api/contents?content=1")
    listed = {entry["name"]: entry["type"] for entry in root["content"]}
    if not LESSONS.is_dir():
        assert "lessons" not in listed
        status, _, _ = lab.request("/api/contents/lessons")
        assert status == 404, f"lessons/ is not on disk but the server answered HTTP {status}"
        pytest.skip("lessons/ does not exist yet (generate it from solutions/ with nbgrader)")
    assert listed.get("lessons") == "directory", "the root listing has no lessons/ directory"
    served = _list_notebooks(lab, "lessons")
    on_disk = [
        path.relative_to(REPO).as_posix() for path in LESSONS.rglob("*.ipynb")
        if ".ipynb_checkpoints" not in path.parts
    ]
    assert sorted(served) == sorted(on_disk)


@pytest.mark.parametrize(
    "notebook_path",
    LESSON_NOTEBOOKS
    or [pytest.param(None, marks=pytest.mark.skip(
        reason="no lesson notebook yet: lessons/*/*.ipynb is empty "
        "(generate them from solutions/ with nbgrader)"))],
)
def test_lesson_notebook_is_served(lab, notebook_path):
    model = lab.get_json(f"/api/contents/{urllib.parse.quote(notebook_path)}?content=1")
    assert model["type"] == "notebook"
    assert model["format"] == "json"
    notebook = model["content"]
    assert notebook["nbformat"] == 4
    assert notebook["cells"], f"{notebook_path} has no cells"
    kernelspec = notebook["metadata"].get("kernelspec", {})
    assert kernelspec.get("name") == "python3", kernelspec
    # What the server sends is what is on disk.
    on_disk = nbformat.read(REPO / notebook_path, as_version=4)
    assert [cell["source"] for cell in notebook["cells"]] == [
        cell["source"] for cell in on_disk.cells
    ]


def test_lab_page_is_html(lab):
    status, content_type, body = lab.request("/lab", accept="text/html")
    assert status == 200, f"/lab answered HTTP {status}\n{lab.log_text()}"
    assert content_type.startswith("text/html"), content_type
    page = body.decode("utf-8", errors="replace")
    assert "<html" in page.lower()
    assert "jupyter-config-data" in page  # the page JupyterLab boots from
    config = json.loads(
        page.split('id="jupyter-config-data"', 1)[1].split(">", 1)[1].split("</script>", 1)[0]
    )
    assert config.get("appName") == "JupyterLab", config.get("appName")
