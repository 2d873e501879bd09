"""``rsckd fetch`` against a local HTTP server started by the test: nothing here reaches the internet.

The server serves a tiny ICBHI-layout zip, the ICBHI text files, a .pth and two weight files, and a fake hub
snapshot (plain files behind the fetch module's hub function). It honours Range requests (416 past the end),
logs every request and the status of its answer, sends an ETag and honours If-Range (or ignores it), and
can cut a transfer short once (and then change the file), answer with an HTTP error, answer a Range request
from the wrong offset, or gzip its answers to clients that accept gzip.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
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
from rsckd.errors import UserError
from rsckd.fetch import dry_run, load_lock

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "configs/paper-inputs.yaml"
HUB_FILES = {"config.json": b'{"model_type": "fake"}', "model.safetensors": b"weights", "vocab.json": b"{}"}


class Server:
    """Files by URL path, each with an ETag of its content; ``cut`` paths send half their body once (and then
    change to ``changed_after_cut``'s body when it has one), ``fail`` paths answer with a status,
    ``from_zero`` paths answer a Range request with the whole body as a 206, ``gzip`` compresses every answer
    to a client that accepts it (as many web servers do)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.changed_after_cut: dict[str, bytes] = {}
        self.ignore_if_range = False
        self.answers: list[tuple[str, int]] = []
        self.fail: dict[str, int] = {}
        self.from_zero: set[str] = set()
        self.gzip = False
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def send_response(self, code: int, message: str | None = None) -> None:
                server.answers.append((self.path, code))
                super().send_response(code, message)

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
                etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
                if self.headers.get("If-Range", etag) != etag and not server.ignore_if_range:
                    rng = None  # changed since the part began: the whole file
                start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
                if path in server.from_zero:
                    start = 0
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if rng else 200)
                self.send_header("ETag", etag)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                if server.gzip and "gzip" in self.headers.get("Accept-Encoding", ""):
                    body, start = gzip.compress(body[start:]), 0
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if path in server.cut:
                    server.cut.discard(path)
                    server.files[path] = server.changed_after_cut.pop(path, server.files[path])
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def bodies_served(self) -> list[str]:
        return [path for path, _ in self.log]


def _zip(members: dict[str | zipfile.ZipInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


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
    # nothing leaves this machine: no DVC analytics, no proxy between the client and the local server
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    # the command lifts the hub's offline switches for its process: restore them after the test; another test
    # module may have imported huggingface_hub offline, which the fake hub below does not need
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    if "huggingface_hub.constants" in sys.modules:
        monkeypatch.setattr(sys.modules["huggingface_hub.constants"], "HF_HUB_OFFLINE", False)

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


def _locked() -> dict:
    lock = Path("configs/paper-inputs.lock.json")
    return json.loads(lock.read_text()) if lock.exists() else {}


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


def test_a_lock_that_is_not_an_object_is_refused(tmp_path):
    lock = tmp_path / "paper-inputs.lock.json"
    for text in ("[]", '{"clap-htsat-unfused": "abc"}'):
        lock.write_text(text)
        with pytest.raises(UserError, match=f"{lock}: malformed lock, expected a JSON object"):
            load_lock(lock)


def test_dry_run_shows_the_checksums_the_lock_holds(capsys):
    sources = yaml.safe_load(SOURCES.read_text())["sources"]
    hub, url = (
        next(s for s in sources if s["kind"] == kind and not s.get("sha256")) for kind in ("hub", "url")
    )
    dry_run(
        sources, {hub["name"]: {"revision": "a" * 40, "sha256": "b" * 64}, url["name"]: {"sha256": "c" * 64}}
    )
    out = capsys.readouterr().out
    assert f"files: sha256 {'b' * 64} (lock)" in out and f"sha256 {'c' * 64} (lock)" in out
    unpinned = [s for s in sources if not s.get("sha256")]
    assert out.count("sha256 recorded at first download") == len(unpinned) - 2


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
    assert [code for path, code in server.answers if path == "/ICBHI_final_database.zip"] == [200, 206]
    assert "resuming" in err
    assert hashlib.sha256(Path("data/downloads/ICBHI_final_database.zip").read_bytes()).hexdigest() == (
        hashlib.sha256(server.files["/ICBHI_final_database.zip"]).hexdigest()
    )


def _changed_during_transfer(server: Server, path: str) -> bytes:
    """Make ``path`` a 4 MiB file (so a cut transfer keeps a part) that the server changes once it has cut
    its first transfer short; returns the new version."""
    server.files[path] = bytes(range(256)) * 16384
    server.cut.add(path)
    server.changed_after_cut[path] = new = server.files[path][::-1] + b" v2"
    return new


def test_a_file_changed_on_the_server_during_a_transfer_starts_over(workdir, server, capsys):
    """Resuming sends the first answer's ETag in If-Range: the new version comes back whole, not spliced onto
    the old one's first half (the file is unpinned here, so no checksum would notice)."""
    new = _changed_during_transfer(server, "/resnet18.safetensors")
    rc, _, err = _fetch(capsys)
    assert rc == 0, err
    assert [rng is not None for path, rng in server.log if path == "/resnet18.safetensors"] == [False, True]
    assert [code for path, code in server.answers if path == "/resnet18.safetensors"] == [200, 200]
    assert Path("models/pretrained/resnet18.safetensors").read_bytes() == new
    assert not list(Path("data/downloads").glob(".*.validator"))


def test_a_server_ignoring_if_range_still_gets_no_splice(workdir, server, capsys):
    """Its part of the new version carries another ETag than the part on disk began with: start over."""
    new = _changed_during_transfer(server, "/resnet18.safetensors")
    server.ignore_if_range = True
    rc, _, err = _fetch(capsys)
    assert rc == 0, err
    assert [code for path, code in server.answers if path == "/resnet18.safetensors"] == [200, 206, 200]
    assert Path("models/pretrained/resnet18.safetensors").read_bytes() == new


def test_an_unreadable_validator_resumes_without_if_range(workdir, server, capsys):
    body = server.files["/Cnn6_mAP=0.343.pth"]
    Path("data/downloads").mkdir(parents=True)
    Path("data/downloads/.Cnn6_mAP=0.343.pth.partial").write_bytes(body[:100])
    Path("data/downloads/.Cnn6_mAP=0.343.pth.partial.validator").write_bytes(b'"\xff\r\nX-Evil: 1"')
    rc, _, err = _fetch(capsys)
    assert rc == 0, err
    assert [code for path, code in server.answers if path == "/Cnn6_mAP=0.343.pth"] == [206]
    assert Path("models/pretrained/Cnn6_mAP=0.343.pth").read_bytes() == body


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


@pytest.mark.parametrize(
    "member",
    ["ICBHI_final_database/../metadata.txt", "/tmp/evil.txt", _symlink("ICBHI_final_database/link")],
    ids=["dotdot-under-top-folder", "absolute", "symlink"],
)
def test_zip_member_that_could_write_elsewhere_refuses_the_archive(workdir, server, capsys, member):
    name = member.filename if isinstance(member, zipfile.ZipInfo) else member
    server.files["/ICBHI_final_database.zip"] = _zip({"ICBHI_final_database/a.txt": b"x", member: b"evil"})
    rc, _, err = _fetch(capsys)
    line = _one_error(err)
    assert rc == 2 and "icbhi-database" in line and "outside" in line and repr(name) in line
    assert not Path("data/raw/ICBHI/metadata.txt").exists()  # where the stripped '..' member would land
    assert not Path("data/raw/ICBHI/ICBHI_final_database").exists()
    assert not Path("/tmp/evil.txt").exists() or Path("/tmp/evil.txt").read_bytes() != b"evil"


def test_gzip_answering_server_gets_the_plain_bytes(workdir, server, capsys):
    server.gzip = True
    server.cut.add("/Cnn6_mAP=0.343.pth")  # the resume offset must count the file's bytes
    rc, _, err = _fetch(capsys)
    assert rc == 0, err
    assert Path("models/pretrained/Cnn6_mAP=0.343.pth").read_bytes() == server.files["/Cnn6_mAP=0.343.pth"]
    assert (
        Path("data/downloads/ICBHI_final_database.zip").read_bytes()
        == (server.files["/ICBHI_final_database.zip"])
    )


def test_a_web_page_instead_of_the_zip_is_one_error_and_not_recorded(workdir, server, capsys):
    archive = server.files["/ICBHI_final_database.zip"]
    server.files["/ICBHI_final_database.zip"] = b"<html>please log in</html>"
    rc, _, err = _fetch(capsys)
    line = _one_error(err)
    assert rc == 2 and "icbhi-database" in line and "not a valid zip" in line
    assert "data/downloads/ICBHI_final_database.zip" in line and "delete it" in line
    assert "icbhi-database" not in _locked()
    assert not Path("data/raw/ICBHI/ICBHI_final_database").exists()

    Path("data/downloads/ICBHI_final_database.zip").unlink()  # as the message says
    server.files["/ICBHI_final_database.zip"] = archive
    server.log.clear()
    rc, out, err = _fetch(capsys)
    assert rc == 0, err
    assert ("/ICBHI_final_database.zip", None) in server.log and "icbhi-database: fetched" in out


def test_extracted_tree_is_checked_by_content_not_size(workdir, server, capsys):
    assert _fetch(capsys)[0] == 0
    wav = sorted(Path("data/raw/ICBHI/ICBHI_final_database").glob("*.wav"))[0]
    original = wav.read_bytes()
    wav.write_bytes(bytes(len(original)))  # same size, other bytes
    stale = Path("data/raw/ICBHI/.ICBHI_final_database.extracting")
    (stale / "junk").mkdir(parents=True)  # left by a crashed run
    rc, out, err = _fetch(capsys)
    assert rc == 0, err
    assert "icbhi-database: fetched" in out and wav.read_bytes() == original
    assert not stale.exists()


def test_fetch_from_a_subdirectory_of_the_repository_is_refused(tmp_path, monkeypatch, capsys):
    """Its paths are relative to the root: from below it, downloads would land where no stage looks."""
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert main(["fetch", "--sources", str(SOURCES)]) == 2
    assert f"inside the DVC repository {tmp_path}; run `rsckd fetch` from its root" in capsys.readouterr().err
    assert list((tmp_path / "sub").iterdir()) == []


def test_a_tree_of_ones_own_is_refused_not_replaced(workdir, server, capsys):
    """An extraction is repaired (above), a directory with other files is not: it may be the user's."""
    assert _fetch(capsys)[0] == 0
    mine = Path("data/raw/ICBHI/ICBHI_final_database/my_notes.txt")
    mine.write_text("mine\n")
    rc, _, err = _fetch(capsys)
    line = _one_error(err)
    assert rc == 2 and "icbhi-database" in line and "is not an extraction of" in line
    assert mine.read_text() == "mine\n"


def test_a_hub_directory_of_ones_own_is_refused_not_replaced(workdir, server, capsys):
    """E.g. a CLAP directory made by `rsckd import-clap`, where the hub source would go."""
    mine = Path("models/pretrained/clap-htsat-unfused")
    mine.mkdir(parents=True)
    (mine / "model.safetensors").write_bytes(b"imported weights")
    rc, _, err = _fetch(capsys)
    line = _one_error(err)
    assert rc == 2 and "clap-htsat-unfused" in line and "is not a snapshot of" in line
    assert (mine / "model.safetensors").read_bytes() == b"imported weights"


def test_complete_partial_answered_with_416_is_kept(workdir, server, capsys):
    body = server.files["/Cnn6_mAP=0.343.pth"]
    Path("data/downloads").mkdir(parents=True)
    Path("data/downloads/.Cnn6_mAP=0.343.pth.partial").write_bytes(body)
    rc, _, err = _fetch(capsys)
    assert rc == 0, err
    assert [rng for path, rng in server.log if path == "/Cnn6_mAP=0.343.pth"] == [f"bytes={len(body)}-"]
    assert Path("models/pretrained/Cnn6_mAP=0.343.pth").read_bytes() == body


def test_answer_from_another_offset_restarts_the_download(workdir, server, capsys):
    body = server.files["/Cnn6_mAP=0.343.pth"]
    server.from_zero.add("/Cnn6_mAP=0.343.pth")
    Path("data/downloads").mkdir(parents=True)
    Path("data/downloads/.Cnn6_mAP=0.343.pth.partial").write_bytes(body[:100])
    rc, _, err = _fetch(capsys)
    assert rc == 0, err
    assert [rng for path, rng in server.log if path == "/Cnn6_mAP=0.343.pth"] == ["bytes=100-", None]
    assert Path("models/pretrained/Cnn6_mAP=0.343.pth").read_bytes() == body


def test_disk_full_while_extracting_names_the_source_and_leaves_nothing(workdir, server, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fetch.shutil, "copyfileobj", full)
    rc, _, err = _fetch(capsys)
    line = _one_error(err)
    assert rc == 2 and "icbhi-database: disk full" in line and "free space" in line
    assert list(Path("data/raw/ICBHI").iterdir()) == []  # no staging folder, no half-extracted tree
    assert "icbhi-database" not in _locked()


def test_permission_denied_while_placing_names_the_source(workdir, server, capsys, monkeypatch):
    def denied(src, dst, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))

    monkeypatch.setattr(fetch.os, "link", denied)
    monkeypatch.setattr(fetch.shutil, "copyfile", denied)
    rc, _, err = _fetch(capsys)
    line = _one_error(err)
    assert rc == 2 and "icbhi-split: no permission to write data/raw/ICBHI/" in line
    assert "fix the permissions" in line
    assert not [p for p in Path("data/raw/ICBHI").iterdir() if p.name != "ICBHI_final_database"]
    assert "icbhi-split" not in _locked()


def test_dvc_failure_is_one_line_naming_the_source():
    src = {"name": "resnet18", "kind": "url", "url": "http://x/y", "dest": "data/downloads/y"}
    error = fetch._describe(fetch.DvcException("output is already tracked"), src)
    assert str(error).startswith("resnet18: DVC could not register data/downloads/y (output is already")


def test_a_different_file_where_the_pipeline_reads_is_not_replaced(workdir, server, capsys):
    mine = Path("data/raw/ICBHI/ICBHI_challenge_train_test.txt")
    mine.parent.mkdir(parents=True)
    mine.write_text("my own split\n")
    rc, _, err = _fetch(capsys)
    line = _one_error(err)
    assert (
        rc == 2
        and "icbhi-split" in line
        and "already exists and is not the download" in line
        and str(mine) in line
    )
    assert mine.read_text() == "my own split\n"


@pytest.mark.parametrize(
    ("kind", "key", "value", "message"),
    [
        ("hub", "sha256", "0" * 64, "sha256: unknown key; expected one of name, kind, repo"),
        ("hub", "allow", "*.json", "allow: expected a list of non-empty strings"),  # not ['*', '.', ...]
        ("url", "md5", "E25E26B84585B14C7754C91E48EFC9BE", "md5: expected 32 lower-case hex digits"),
        ("url", "url", None, "url: expected a non-empty string, got None"),
        ("zip", "kind", "ftp", "kind: expected one of url, zip, hub, got 'ftp'"),
    ],
)
def test_a_bad_source_entry_names_its_key(tmp_path, kind, key, value, message):
    sources = yaml.safe_load(SOURCES.read_text())
    index = next(i for i, s in enumerate(sources["sources"]) if s["kind"] == kind)
    sources["sources"][index][key] = value
    path = tmp_path / "paper-inputs.yaml"
    path.write_text(yaml.safe_dump(sources))
    with pytest.raises(UserError, match=re.escape(f"{path}: sources[{index}].{message}")):
        fetch.load_sources(path)


def test_fetch_lifts_both_offline_switches_before_the_hub_is_imported():
    code = (
        "import rsckd.fetch as fetch; fetch.go_online(); "
        "import huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_hub_already_imported_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub.constants", SimpleNamespace(HF_HUB_OFFLINE=True))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    with pytest.raises(UserError, match="already imported in offline mode"):
        fetch.go_online()
    assert "HF_HUB_OFFLINE" not in os.environ and "TRANSFORMERS_OFFLINE" not in os.environ


def test_dot_member_is_no_file_and_does_not_break_the_top_folder():
    src = {"name": "icbhi-database", "dest": "x.zip", "place": "data/raw/ICBHI/ICBHI_final_database"}
    with zipfile.ZipFile(io.BytesIO(_zip({"./": b"", "ICBHI_final_database/a.wav": b"x"}))) as zf:
        assert [rel.as_posix() for _, rel in fetch._members(zf, src)] == ["a.wav"]
