"""scripts/install.sh chooses the torch build: the machine's wheel folder, PyPI's CUDA build with an NVIDIA GPU,
PyTorch's CPU index when it answers (probed once, briefly), the torch already installed, or a one-line refusal.

Each case runs the real script with --dry-run (it prints its choice and the pip commands, installs nothing) under
a stock pip configuration (PIP_CONFIG_FILE=/dev/null) whose wheel folder, `nvidia-smi` and CPU index are the
test's own: a folder with or without a torch wheel, a stand-in `nvidia-smi` that lists a GPU or none, and an index
on 127.0.0.1 that answers, or accepts connections and never answers.
"""
from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
VERSION = str(next(iter(Requirement((ROOT / "scripts/torch.txt").read_text().split("#")[0]).specifier)).version)


def fake_nvidia_smi(bin_dir: Path, gpu: bool) -> None:
    """`nvidia-smi -L` as the driver's tool answers with one GPU, or with none (exit 6)."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n" if gpu
                      else "#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    script.chmod(0o755)


def wheel_folder(root: Path, version: str | None) -> Path:
    """A find-links folder, holding a minimal (metadata-only) torch wheel of `version` unless None."""
    folder = root / "wheels"
    folder.mkdir()
    if version:
        info = f"torch-{version}.dist-info"
        with zipfile.ZipFile(folder / f"torch-{version}-py3-none-any.whl", "w") as whl:
            whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
            whl.writestr(f"{info}/WHEEL",
                         "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
            whl.writestr(f"{info}/RECORD", "")
    return folder


class Index(http.server.SimpleHTTPRequestHandler):
    """Serves the test's index folder and counts the requests (a probe is one HEAD)."""
    requests: list[str] = []

    def do_HEAD(self):
        Index.requests.append(self.command)
        super().do_HEAD()

    def do_GET(self):
        Index.requests.append(self.command)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def cpu_index(tmp_path):
    """A wheel index on 127.0.0.1 that answers (a folder torch/ served over HTTP); yields (its URL, its requests)."""
    (tmp_path / "index" / "torch").mkdir(parents=True)
    Index.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             lambda *a: Index(*a, directory=str(tmp_path / "index")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Index.requests
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_index():
    """An address on 127.0.0.1 that accepts connections and never answers; yields (its URL, its connections)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    held = []

    def accept():
        with contextlib.suppress(OSError):
            while True:
                held.append(sock.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", held
    sock.close()
    for conn in held:
        conn.close()


def choose(tmp_path: Path, *, gpu: bool, wheel: str | None, index: str, repo: Path = ROOT):
    """Run `bash scripts/install.sh --dry-run` of `repo`; returns the finished process and its wall seconds."""
    fake_nvidia_smi(tmp_path / "bin", gpu)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "PIP_CONFIG_FILE": os.devnull,
           "PIP_FIND_LINKS": str(wheel_folder(tmp_path, wheel)), "TORCH_CPU_INDEX": index}
    env.pop("PIP_INDEX_URL", None), env.pop("PIP_EXTRA_INDEX_URL", None)
    start = time.monotonic()
    done = subprocess.run(["bash", str(repo / "scripts/install.sh"), "--dry-run"], env=env, capture_output=True,
                          text=True, timeout=120)
    return done, time.monotonic() - start


def test_the_wheel_folder_wins_without_asking_an_index(tmp_path, silent_index):
    url, connections = silent_index
    done, _ = choose(tmp_path, gpu=True, wheel=f"{VERSION}+cpu", index=url)
    assert done.returncode == 0, done.stderr
    assert f"offers torch {VERSION}+cpu" in done.stdout
    assert f"pip install --quiet torch=={VERSION}+cpu -r requirements.lock\n" in done.stdout
    assert connections == []  # the index was not asked


def test_an_nvidia_gpu_gets_pypis_cuda_build(tmp_path, silent_index):
    url, connections = silent_index
    done, _ = choose(tmp_path, gpu=True, wheel=None, index=url)
    assert done.returncode == 0, done.stderr
    assert "NVIDIA GPU is present" in done.stdout
    assert f"pip install --quiet torch=={VERSION} -r requirements.lock\n" in done.stdout
    assert connections == []


def test_no_gpu_gets_the_cpu_build_from_pytorchs_index_probed_once(tmp_path, cpu_index):
    url, requests = cpu_index
    done, _ = choose(tmp_path, gpu=False, wheel=None, index=url)
    assert done.returncode == 0, done.stderr
    assert f"pip install --quiet torch=={VERSION}+cpu --extra-index-url {url} -r requirements.lock\n" in done.stdout
    assert "pip install --quiet --no-deps -e .\n" in done.stdout
    assert requests == ["HEAD"]


def test_an_index_that_does_not_answer_is_given_up_after_one_short_try(tmp_path, silent_index):
    """The suite's python has torch of the pinned version (installed by this script): it stays."""
    url, connections = silent_index
    done, seconds = choose(tmp_path, gpu=False, wheel=None, index=url)
    assert done.returncode == 0, done.stderr
    assert "keeps the torch" in done.stdout and "pip install --quiet -r requirements.lock\n" in done.stdout
    assert len(connections) == 1 and seconds > 4  # one try of 5 s, no retry (pip's own: 180 s, with retries)


def test_nothing_to_install_from_is_one_line_naming_what_to_do(tmp_path):
    """A torch version nobody offers here (a copy of the scripts pinning 9.9.9): refused, nothing installed."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("scripts/install.sh", "requirements.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    (repo / "scripts/torch.txt").write_text("torch==9.9.9\n")
    with socket.socket() as closed:  # a port nothing listens on: the probe is refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done, _ = choose(tmp_path, gpu=False, wheel=None, index=f"http://127.0.0.1:{port}", repo=repo)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert "no torch==9.9.9 in pip's wheel folder, no NVIDIA GPU" in line and "allowed: install torch==9.9.9" in line


def test_every_module_imports_as_the_other_python_check_runs_it():
    """scripts/import_all.py (the check run on Python 3.12, docs/operations.md) imports every module here."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts/import_all.py")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    files = [p for d in ("models", "sweep", "analysis", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    assert done.stdout.startswith(f"imported {len(files) + 2} modules on Python 3.11")  # + plan, metrics
