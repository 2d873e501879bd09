"""``rsckd fetch`` against a local HTTP server started by the test: nothing here reaches the internet.

The server serves a tiny ICBHI-layout zip, the ICBHI text files, a .pth and two weight files, and a fake hub
snapshot (plain files behind the fetch module's hub function). It honours Range requests, logs every request,
and can cut a transfer short once or answer with an HTTP error.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import torch
import yaml

import rsckd.fetch as fetch
from icbhi_fixtures import RECORDINGS, make_icbhi
from rsckd.cli import main

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "configs/paper-inputs.yaml"
HUB_FILES = {"config.json": b'{"model_type": "fake"}', "model.safetensors": b"weights", "vocab.json": b"{}"}


class Server:
    """Files by URL path; ``cut`` paths send half their body once, ``fail`` paths answer with a status."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.fail: dict[str, int] = {}
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path, rng = self.path.split("?")[0], self.headers.get("Range")
                server.log.append((path, rng))
                if path in server.fail:
                    self.send_error(server.fail[path])
                    return
                if path not in server.files:
                    self.send_error(404)
                    return
                body = server.files[path]
                start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if path in server.cut:
                    server.cut.discard(path)
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def bodies_served(self) -> list[str]:
        return [path for path, _ in self.log]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def server():
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def workdir(tmp_path, monkeypatch, server):
    """A working tree whose sources file is the real one with every URL pointing at the local server."""
    build = tmp_path / "build"
    make_icbhi(build)
    audio = build / "ICBHI_final_database"
    server.files["/ICBHI_final_database.zip"] = _zip(
        {f"ICBHI_final_database/{p.name}": p.read_bytes() for p in sorted(audio.iterdir())}
    )
    for p in build.glob("*.txt"):
        server.files[f"/{p.name}"] = p.read_bytes()
    pth = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(2)}}, pth)
    server.files["/Cnn6_mAP=0.343.pth"] = pth.getvalue()
    server.files["/resnet18.safetensors"] = b"resnet18 weights"
    server.files["/efficientnet_b0.safetensors"] = b"efficientnet weights"
    for name, data in HUB_FILES.items():
        server.files[f"/hub/{name}"] = data

    work = tmp_path / "work"
    (work / "configs").mkdir(parents=True)
    shutil.copy(ROOT / "configs/paper.yaml", work / "configs/paper.yaml")
    sources = yaml.safe_load(SOURCES.read_text())
    for src in sources["sources"]:
        if src["kind"] == "hub":
            src["require"] = ["config.json", "model.safetensors"]
            continue
        src["url"] = f"{server.base}/{Path(src['dest']).name}"
        src["sha256"] = None  # the fixtures are not the real files
        src.pop("md5", None)
    (work / "configs/paper-inputs.yaml").write_text(yaml.safe_dump(sources, sort_keys=False))
    monkeypatch.chdir(work)

    calls = []

    def fake_hub(repo, revision, local_dir, allow):
        calls.append(repo)
        local_dir.mkdir(parents=True, exist_ok=True)
        for name in HUB_FILES:
            (local_dir / name).write_bytes(requests.get(f"{server.base}/hub/{name}", timeout=5).content)
        (local_dir / ".cache").mkdir(exist_ok=True)  # huggingface_hub's bookkeeping, never placed
        return revision

    monkeypatch.setattr(fetch, "hub_snapshot", fake_hub)
    return SimpleNamespace(root=work, hub_calls=calls)


def _fetch(capsys, *extra: str) -> tuple[int, str, str]:
    rc = main(["fetch", "--sources", "configs/paper-inputs.yaml", "--params", "configs/paper.yaml", *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def _edit_sources(edit) -> None:
    path = Path("configs/paper-inputs.yaml")
    sources = yaml.safe_load(path.read_text())
    for src in sources["sources"]:
        edit(src)
    path.write_text(yaml.safe_dump(sources, sort_keys=False))


def _one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_dry_run_lists_every_source_with_pin_and_destination(capsys):
    assert main(["fetch", "--sources", str(SOURCES), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for src in yaml.safe_load(SOURCES.read_text())["sources"]:
        assert src["name"] in out and src["dest"] in out
        assert (src.get("url") or f"{src['repo']}@{src['revision']}") in out
        assert src.get("place", src["dest"]) in out
    assert "694f673df6520a3158624e8a89af086f59923ee4cd7436fe5bc3bc71d295ad81" in out  # pinned sha256
    assert "md5 e25e26b84585b14c7754c91e48efc9be" in out
    assert "recorded at first download" in out


def test_whole_fetch_then_second_run_downloads_nothing(workdir, server, capsys):
    rc, out, err = _fetch(capsys)
    assert rc == 0, err
    raw = Path("data/raw/ICBHI")
    assert len(list((raw / "ICBHI_final_database").glob("*.wav"))) == len(RECORDINGS)
    assert (raw / "metadata.txt").read_bytes() == server.files["/metadata.txt"]
    assert Path("models/pretrained/resnet18.safetensors").read_bytes() == b"resnet18 weights"
    assert sorted(p.name for p in Path("models/pretrained/clap-htsat-unfused").iterdir()) == sorted(HUB_FILES)
    assert not list(Path(".").rglob("*.partial"))
    lock = yaml.safe_load(Path("configs/paper-inputs.lock.json").read_text())
    assert lock["resnet18"]["sha256"] == hashlib.sha256(b"resnet18 weights").hexdigest()
    assert lock["ast-audioset"]["revision"] == "f826b80d28226b62986cc218e5cec390b1096902"
    assert "every input is in place" in out
    summary = out[
        out.index("root: data/raw/ICBHI") :
    ]  # `rsckd data summary` of the download closes the output
    assert f"files: {len(RECORDINGS)}" in summary and "cycles:" in summary and "every input" not in summary

    server.log.clear()
    rc, out, err = _fetch(capsys)
    assert rc == 0, err
    assert server.log == [] and workdir.hub_calls == [
        "laion/clap-htsat-unfused",
        "MIT/ast-finetuned-audioset-10-10-0.4593",
    ]
    assert "fetched" not in out and out.count("present, verified") == 10


def test_interrupted_transfer_resumes_with_a_range_request(workdir, server, capsys):
    server.cut.add("/ICBHI_final_database.zip")
    rc, out, err = _fetch(capsys)
    assert rc == 0, err
    ranges = [rng for path, rng in server.log if path == "/ICBHI_final_database.zip"]
    assert (
        ranges[0] is None and int(ranges[1].removeprefix("bytes=").rstrip("-")) > 0
    )  # resumed, not restarted
    assert "resuming" in err
    assert hashlib.sha256(Path("data/downloads/ICBHI_final_database.zip").read_bytes()).hexdigest() == (
        hashlib.sha256(server.files["/ICBHI_final_database.zip"]).hexdigest()
    )


def test_partial_file_from_an_earlier_run_is_resumed(workdir, server, capsys):
    body = server.files["/Cnn6_mAP=0.343.pth"]
    Path("data/downloads").mkdir(parents=True)
    Path("data/downloads/.Cnn6_mAP=0.343.pth.partial").write_bytes(body[:100])
    rc, _, err = _fetch(capsys)
    assert rc == 0, err
    assert ("/Cnn6_mAP=0.343.pth", "bytes=100-") in server.log
    assert Path("models/pretrained/Cnn6_mAP=0.343.pth").read_bytes() == body


def test_corrupted_download_is_refused_and_nothing_is_placed(workdir, server, capsys):
    _edit_sources(lambda s: s.update(sha256="0" * 64) if s["name"] == "resnet18" else None)
    rc, _, err = _fetch(capsys)
    line = _one_error(err)
    assert rc == 2 and "resnet18" in line and "checksum mismatch" in line
    assert not Path("data/downloads/resnet18.safetensors").exists()
    assert not Path("models/pretrained/resnet18.safetensors").exists()
    assert not list(Path("data/downloads").glob(".*partial"))


def test_changed_file_against_the_lock_is_refused(workdir, server, capsys):
    assert _fetch(capsys)[0] == 0
    Path("data/downloads/metadata.txt").write_text("tampered\n")
    rc, _, err = _fetch(capsys)
    line = _one_error(err)
    assert rc == 2 and "bts-metadata" in line and "does not match its pinned checksum" in line


def test_zip_member_escaping_the_target_is_refused(workdir, server, capsys):
    server.files["/ICBHI_final_database.zip"] = _zip(
        {"ICBHI_final_database/a.txt": b"x", "../evil.txt": b"x"}
    )
    rc, _, err = _fetch(capsys)
    line = _one_error(err)
    assert rc == 2 and "icbhi-database" in line and "outside" in line and "../evil.txt" in line
    assert not Path("data/raw/ICBHI/ICBHI_final_database").exists()
    assert not list(Path("..").glob("evil.txt")) and not list(Path(".").rglob("evil.txt"))


@pytest.mark.parametrize("status", [404, 500])
def test_server_error_is_one_clear_line(workdir, server, capsys, status):
    server.fail["/ICBHI_challenge_train_test.txt"] = status
    rc, _, err = _fetch(capsys)
    line = _one_error(err)
    assert rc == 2 and f"icbhi-split: HTTP {status}" in line and "ICBHI_challenge_train_test.txt" in line
    assert not Path("data/raw/ICBHI/ICBHI_challenge_train_test.txt").exists()


def test_proxy_failure_names_the_proxy_settings(workdir, server, capsys, monkeypatch):
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # discard port: nothing listens
    rc, _, err = _fetch(capsys)
    line = _one_error(err)
    assert rc == 2 and "icbhi-database" in line and "HTTP_PROXY" in line
    assert server.log == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside dvc
def test_dvc_imports_record_each_url_source(workdir, server, capsys):
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, check=True)
    rc, _, err = _fetch(capsys)
    assert rc == 0, err
    imported = yaml.safe_load(Path("data/downloads/resnet18.safetensors.dvc").read_text())
    assert imported["frozen"] is True
    assert imported["deps"][0]["path"] == f"{server.base}/resnet18.safetensors"
    assert imported["outs"][0]["md5"] == hashlib.md5(b"resnet18 weights").hexdigest()
    assert len(list(Path("data/downloads").glob("*.dvc"))) == 8
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "-q"], capture_output=True)
    assert status.returncode == 0
