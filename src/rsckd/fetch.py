"""``rsckd fetch``: download every input of the paper profile from pinned sources, verified, then check them.

The sources (``configs/paper-inputs.yaml``) pin each download by URL + checksum or by hub repository + commit.
A checksum not known in advance is recorded in the lock file next to the sources at the first download and
checked ever after, so a second machine gets the same bytes or a clear error. Downloads go to a ``.partial``
file beside the destination (resumed with an HTTP Range request after an interruption) and are renamed into
place only once verified: the pipeline never reads a half-written file. In a DVC repository every URL download
is a ``dvc import-url`` (frozen, as DVC does for imports): ``dvc update`` re-imports a changed source and
``dvc repro`` itself never goes online. This is the only command that reaches the network.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml

from rsckd.atomic import write_json
from rsckd.errors import UserError

SOURCES = "configs/paper-inputs.yaml"
PARAMS = "configs/paper.yaml"
KEYS = {
    "url": {"name", "kind", "url", "dest", "place"},
    "zip": {"name", "kind", "url", "dest", "place"},
    "hub": {"name", "kind", "repo", "revision", "dest", "allow", "require"},
}
OPTIONAL = {"sha256", "md5"}
COMMIT = re.compile(r"[0-9a-f]{40}")
CHUNK = 1 << 16  # a broken transfer loses at most one chunk
ATTEMPTS = 3  # per file; each attempt resumes where the previous one stopped
TIMEOUT = (30, 120)  # connect, read (seconds)
# a broken connection or a short body: retried, resuming where the part ends (a proxy failure is not retried)
RETRY = (
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.Timeout,
    ConnectionError,
)


def load_sources(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The validated source list: one bad entry is named with its file and what to fix."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{path}: sources file not found (run from the repository root or pass --sources)"
        ) from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from None
    sources = raw.get("sources") if isinstance(raw, dict) else None
    if not isinstance(sources, list) or not sources:
        raise UserError(f"{path}: expected a non-empty list under 'sources'")
    names = set()
    for i, src in enumerate(sources):
        where = f"{path}: sources[{i}]"
        kind = src.get("kind") if isinstance(src, dict) else None
        if kind not in KEYS:
            raise UserError(f"{where}: kind must be one of {', '.join(KEYS)}, got {kind!r}")
        missing = sorted(KEYS[kind] - set(src))
        unknown = sorted(set(src) - KEYS[kind] - OPTIONAL)
        if missing or unknown:
            raise UserError(f"{where} ({kind}): missing keys {missing}, unknown keys {unknown}")
        if src["name"] in names:
            raise UserError(f"{where}: duplicate name {src['name']!r}")
        names.add(src["name"])
        if kind == "hub" and src["revision"] is not None and not COMMIT.fullmatch(str(src["revision"])):
            raise UserError(f"{where}: revision must be a full 40-character commit hash or null")
    return sources


def lock_path(sources: str | os.PathLike[str]) -> Path:
    sources = Path(sources)
    return sources.with_name(f"{sources.stem}.lock.json")


def load_lock(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err}); restore it from git") from None


def digests(path: Path) -> dict[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def _mismatch(src: dict[str, Any], lock: dict[str, Any], got: dict[str, str]) -> str | None:
    """Which pinned checksum ``got`` contradicts (sources first, then the lock), or None."""
    for algo in ("sha256", "md5"):
        want = src.get(algo) or lock.get(src["name"], {}).get(algo)
        if want and want != got[algo]:
            return f"{algo} {got[algo]}, expected {want}"
    return None


def _describe(err: BaseException, src: dict[str, Any], partial: Path) -> UserError:
    """One line naming the source and what to do, for every way a transfer can fail."""
    name, url = src["name"], src.get("url") or src.get("repo")
    if isinstance(err, requests.exceptions.ProxyError):
        return UserError(
            f"{name}: the proxy refused or failed ({err}); check HTTPS_PROXY / HTTP_PROXY / NO_PROXY"
        )
    if isinstance(err, requests.exceptions.HTTPError):
        code = err.response.status_code if err.response is not None else "?"
        return UserError(
            f"{name}: HTTP {code} from {url}; check the URL in the sources file or try again later"
        )
    if isinstance(err, RETRY):
        return UserError(
            f"{name}: cannot reach {url} or the transfer broke off ({err}); check the network or proxy and "
            "run the command again (the partial download is kept and resumes)"
        )
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return UserError(
            f"{name}: disk full while writing {err.filename or partial}; free space and run again "
            "(it resumes)"
        )
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(
            f"{name}: no permission to write {err.filename or partial}; fix the folder's permissions"
        )
    if isinstance(err, OSError):
        return UserError(f"{name}: {err.strerror or err} ({err.filename or partial})")
    return UserError(f"{name}: {err}")


def _transfer(session: Any, src: dict[str, Any], partial: Path) -> None:
    """Append the rest of ``src`` to ``partial`` (Range request when a part is there), with a progress bar."""
    from tqdm import tqdm

    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(src["url"], stream=True, headers=headers, timeout=TIMEOUT) as resp:
        if resp.status_code == 416:  # the part is already complete (or longer than the file): start over
            partial.unlink()
            return _transfer(session, src, partial)
        resp.raise_for_status()
        if offset and resp.status_code != 206:  # the server ignores Range: the body is the whole file
            offset = 0
        size = resp.headers.get("Content-Length")
        total = offset + int(size) if size is not None else None
        with (
            open(partial, "ab" if offset else "wb") as f,
            tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=src["name"]
            ) as bar,
        ):
            for block in resp.iter_content(CHUNK):
                f.write(block)
                bar.update(len(block))
    if total is not None and partial.stat().st_size != total:
        raise ConnectionError(f"transfer stopped at {partial.stat().st_size} of {total} bytes")


def download(session: Any, src: dict[str, Any], lock: dict[str, Any]) -> bool:
    """Make ``dest`` hold the verified content of ``src``; return whether anything was downloaded."""
    dest = Path(src["dest"])
    if dest.is_file():
        got = digests(dest)
        problem = _mismatch(src, lock, got)
        if problem is None:
            lock.setdefault(src["name"], {}).setdefault("sha256", got["sha256"])
            return False
        raise UserError(
            f"{src['name']}: {dest} does not match its pinned checksum ({problem}); "
            "delete it to download again"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _transfer(session, src, partial)
            break
        except (requests.exceptions.RequestException, OSError) as err:
            if (
                not isinstance(err, RETRY)
                or isinstance(err, requests.exceptions.ProxyError)
                or attempt == ATTEMPTS
            ):
                raise _describe(err, src, partial) from None
            print(f"{src['name']}: transfer interrupted ({err}); resuming", file=sys.stderr)
    got = digests(partial)
    problem = _mismatch(src, lock, got)
    if problem is not None:
        partial.unlink()
        raise UserError(
            f"{src['name']}: checksum mismatch for {src['url']} ({problem}); the download was discarded. Run "
            "again; if the source changed on purpose, update its checksum in the sources/lock file"
        )
    os.replace(partial, dest)
    lock.setdefault(src["name"], {})["sha256"] = got["sha256"]
    return True


def _inside(root: Path, member: str) -> bool:
    target = (root / member).resolve()
    return not os.path.isabs(member) and target.is_relative_to(root.resolve())


def extract(src: dict[str, Any]) -> bool:
    """Unpack the verified zip into ``place`` as a whole; refuse members that would land outside it."""
    archive, place = Path(src["dest"]), Path(src["place"])
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        bad = [m.filename for m in members if not _inside(place, m.filename)]
        if bad:
            raise UserError(
                f"{src['name']}: {archive} has members that would land outside {place} ({bad[0]!r}); "
                "refusing the archive (delete it and check the source)"
            )
        top = {Path(m.filename).parts[0] for m in members}
        strip = top == {place.name}  # the archive holds one folder named like the target: unpack its content
        files = [(m, Path(*Path(m.filename).parts[strip:])) for m in members if not m.is_dir()]
        if place.is_dir() and all(  # extracted before: every member there with its size
            (place / rel).is_file() and (place / rel).stat().st_size == m.file_size for m, rel in files
        ):
            return False
        tmp = place.with_name(f".{place.name}.extracting")
        shutil.rmtree(tmp, ignore_errors=True)
        for member, rel in files:
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout, CHUNK)
    old = place.with_name(f".{place.name}.old")
    if place.exists():
        os.replace(place, old)
    os.replace(tmp, place)
    shutil.rmtree(old, ignore_errors=True)
    return True


def place_file(src: dict[str, Any]) -> None:
    """Put the verified download where the pipeline reads it (a hard link, or a copy across file systems)."""
    dest, place = Path(src["dest"]), Path(src["place"])
    if place.is_file() and os.path.samefile(dest, place):
        return
    place.parent.mkdir(parents=True, exist_ok=True)
    tmp = place.with_name(f".{place.name}.placing")
    tmp.unlink(missing_ok=True)
    try:
        os.link(dest, tmp)
    except OSError:
        shutil.copyfile(dest, tmp)
    os.replace(tmp, place)


def hub_snapshot(repo: str, revision: str | None, local_dir: Path, allow: list[str]) -> str:
    """Download ``repo`` at ``revision`` into ``local_dir``; return the commit it resolved to.

    The only place the hub is asked: HF_HUB_OFFLINE, set everywhere else, is lifted for this call.
    """
    os.environ.pop("HF_HUB_OFFLINE", None)
    from huggingface_hub import HfApi, snapshot_download

    commit = revision or HfApi().model_info(repo, revision="main").sha
    snapshot_download(repo, revision=commit, local_dir=local_dir, allow_patterns=allow)
    return commit


def _tree_digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): digests(p)["sha256"]
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(root).parts
    }


def snapshot(src: dict[str, Any], lock: dict[str, Any], fetch_hub: Callable[..., str]) -> bool:
    """Make ``dest`` the verified snapshot of a hub repository at its pinned (or recorded) commit."""
    dest, entry = Path(src["dest"]), lock.get(src["name"], {})
    revision = src["revision"] or entry.get("revision")
    if entry.get("revision") not in (None, revision):
        raise UserError(
            f"{src['name']}: the lock records commit {entry['revision']} but the sources pin {revision}; "
            f"delete its entry from the lock file to accept the new commit"
        )
    if dest.is_dir() and entry.get("files") and _tree_digests(dest) == entry["files"]:
        return False
    partial = dest.with_name(f".{dest.name}.partial")
    try:
        commit = fetch_hub(src["repo"], revision, partial, list(src["allow"]))
    except UserError:
        raise
    except Exception as err:  # hub client errors (HTTP, proxy, network, disk) -> one line
        raise UserError(
            f"{src['name']}: downloading {src['repo']}@{revision or 'main'} failed "
            f"({type(err).__name__}: {err}); check the network, proxy (HTTPS_PROXY) and disk space, "
            "then run again (it resumes)"
        ) from None
    shutil.rmtree(partial / ".cache", ignore_errors=True)
    absent = [f for f in src["require"] if not (partial / f).is_file()]
    if absent:
        raise UserError(f"{src['name']}: {src['repo']}@{commit} has no {', '.join(absent)}; check 'allow'")
    files = _tree_digests(partial)
    if entry.get("files") and files != entry["files"]:
        changed = sorted(
            k for k in files.keys() | entry["files"].keys() if files.get(k) != entry["files"].get(k)
        )
        raise UserError(
            f"{src['name']}: {src['repo']}@{commit} differs from the lock ({', '.join(changed)}); "
            f"the snapshot was left at {partial}. Delete its lock entry only if the change is intended"
        )
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(partial, dest)
    lock[src["name"]] = {"revision": commit, "files": files}
    return True


def track(repo: Any, src: dict[str, Any]) -> None:
    """Register a URL download with DVC once: ``dvc import-url --no-download``, then ``dvc commit``."""
    from dvc.exceptions import DvcException

    dest = Path(src["dest"])
    if Path(f"{dest}.dvc").is_file():
        return
    aside = dest.with_name(f".{dest.name}.tracking")
    os.replace(dest, aside)  # import-url --force removes an existing output
    try:
        repo.imp_url(src["url"], out=str(dest), no_download=True, force=True)
    except DvcException as err:
        raise UserError(f"{src['name']}: dvc import-url {src['url']} failed ({err})") from None
    finally:
        os.replace(aside, dest)
    repo.commit(f"{dest}.dvc", force=True)


def dry_run(sources: list[dict[str, Any]], lock: dict[str, Any]) -> None:
    for src in sources:
        entry = lock.get(src["name"], {})
        if src["kind"] == "hub":
            revision = src["revision"] or entry.get("revision") or "main (commit recorded at first download)"
            pin = f"{src['repo']}@{revision}"
            check = "files: " + (
                "sha256 in lock" if entry.get("files") else "sha256 recorded at first download"
            )
        else:
            pin = src["url"]
            sums = [f"{a} {src[a]}" for a in ("sha256", "md5") if src.get(a)]
            if not src.get("sha256"):
                sums.append(
                    f"sha256 {entry['sha256']} (lock)"
                    if entry.get("sha256")
                    else "sha256 recorded at first download"
                )
            check = ", ".join(sums)
        target = src["dest"] + (f" -> {src['place']}" if src.get("place") else "")
        print(f"{src['name']} [{src['kind']}]\n  source: {pin}\n  check: {check}\n  to: {target}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sources", default=SOURCES, help=f"pinned source list (default: {SOURCES})")
    parser.add_argument(
        "--params", default=PARAMS, help=f"profile whose inputs are checked at the end ({PARAMS})"
    )
    parser.add_argument("--dry-run", action="store_true", help="list every source, its pin and destination")


def run(args: argparse.Namespace) -> None:
    from rsckd.config import load_params, require_inputs
    from rsckd.data.icbhi import DATA_DEFAULTS, read_dataset
    from rsckd.data.summary import format_summary, summarize
    from rsckd.data.table import cycle_rows

    sources, lock_file = load_sources(args.sources), lock_path(args.sources)
    lock = load_lock(lock_file)
    if args.dry_run:
        dry_run(sources, lock)
        return
    params = load_params(args.params)
    with contextlib.ExitStack() as stack:
        session = stack.enter_context(requests.Session())  # honours HTTPS_PROXY / HTTP_PROXY / NO_PROXY
        dvc = None
        if Path(".dvc").is_dir():  # a DVC repository: URL downloads become imports
            from dvc.repo import Repo

            dvc = stack.enter_context(Repo())
        try:
            for src in sources:
                if src["kind"] == "hub":
                    fetched = snapshot(src, lock, hub_snapshot)
                else:
                    fetched = download(session, src, lock)
                    if dvc is not None:
                        track(dvc, src)
                    if src["kind"] == "zip":
                        fetched = extract(src) or fetched
                    else:
                        place_file(src)
                where = src.get("place", src["dest"])
                print(f"{src['name']}: {'fetched' if fetched else 'present, verified'} -> {where}")
        finally:
            if lock != load_lock(lock_file):
                write_json(lock_file, lock)
    require_inputs(params)
    print(f"{args.params}: every input is in place")
    cfg = {key: params["data"][key] for key in DATA_DEFAULTS}
    dataset = read_dataset(cfg)
    print(format_summary(summarize(dataset, cycle_rows(dataset, cfg["val_fraction"], cfg["val_seed"]))))
