"""``rsckd fetch``: download every input of the paper profile from pinned sources, verified, then check them.

The sources (``configs/paper-inputs.yaml``) pin each download by URL + checksum or by hub repository + commit.
A checksum not known in advance is recorded in the lock file next to the sources once a source's whole step
succeeded (download, verification, extraction or placing, DVC registration) and checked ever after, so a
second machine gets the same bytes or a clear error. Downloads go to a ``.partial``
file beside the destination (resumed with an HTTP Range request after an interruption, If-Range so that a file
changed on the server meanwhile starts over instead of being spliced) and are renamed into
place only once verified: the pipeline never reads a half-written file. In a DVC repository every URL download
is a ``dvc import-url`` (frozen, as DVC does for imports): ``dvc update`` re-imports a changed source and
``dvc repro`` itself never goes online. This is the only command that reaches the network.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
import sys
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import requests
from dvc.exceptions import DvcException

from rsckd.atomic import atomic_path, content_digest, file_digest, replace_dir, write_bytes, write_json
from rsckd.config import read_yaml
from rsckd.errors import UserError, read_json
from rsckd.schema import STRINGS, TEXT, Block, choice, hex_digits, validated

SOURCES = "configs/paper-inputs.yaml"
PARAMS = "configs/paper.yaml"


class FileSource(Block):
    """One file over HTTP(S) (``url``), or a zip archive extracted to ``place`` (``zip``)."""

    name: TEXT
    kind: choice("url", "zip")
    url: TEXT
    dest: TEXT
    place: TEXT
    sha256: hex_digits(64) | None = None
    md5: hex_digits(32) | None = None


class HubSource(Block):
    """A Hugging Face model repository at a commit (null: the newest, recorded in the lock)."""

    name: TEXT
    kind: choice("hub")
    repo: TEXT
    revision: hex_digits(40) | None
    dest: TEXT
    allow: STRINGS
    require: STRINGS


SOURCE_KINDS = {"url": FileSource, "zip": FileSource, "hub": HubSource}
CONTENT_RANGE = re.compile(r"bytes (?:(?P<start>\d+)-\d+|\*)/(?P<size>\d+|\*)")
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
# what a broken zip raises while it is listed or read
BAD_ZIP = (zipfile.BadZipFile, zlib.error, EOFError)


def load_sources(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The validated source list: one bad entry is named with its file and what to fix."""
    path = Path(path)
    raw = read_yaml(path, "sources file not found (run from the repository root or pass --sources)")
    sources = raw.get("sources") if isinstance(raw, dict) else None
    if not isinstance(sources, list) or not sources:
        raise UserError(f"{path}: expected a non-empty list under 'sources'")
    checked, names = [], set()
    for i, src in enumerate(sources):
        kind = src.get("kind") if isinstance(src, dict) else None
        if kind not in SOURCE_KINDS:
            raise UserError(
                f"{path}: sources[{i}].kind: expected one of {', '.join(SOURCE_KINDS)}, got {kind!r}"
            )
        entry = validated(SOURCE_KINDS[kind], src, str(path), lambda key, i=i: f"sources[{i}].{key}")
        if entry.name in names:
            raise UserError(f"{path}: sources[{i}].name: duplicate name {entry.name!r}")
        names.add(entry.name)
        checked.append(entry.model_dump())
    return checked


def lock_path(sources: str | os.PathLike[str]) -> Path:
    sources = Path(sources)
    return sources.with_name(f"{sources.stem}.lock.json")


def load_lock(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    lock = read_json(path, "lock", "`rsckd fetch`")
    if not isinstance(lock, dict) or not all(isinstance(pins, dict) for pins in lock.values()):
        raise UserError(f"{path}: malformed lock, expected a JSON object of source name -> pins")
    return lock


def _repin(sources: Path) -> str:
    return (
        f"if the source changed upstream, update its pin in {sources} (or, for a recorded one, delete its "
        f"entry in {lock_path(sources)})"
    )


def _check(path: Path, src: dict[str, Any], entry: dict[str, Any]) -> tuple[str, str | None]:
    """The sha256 of ``path`` and the pin it contradicts (the sources' sha256/md5, else the lock's sha256)."""
    got = {"sha256": file_digest(path)}
    pins = {"sha256": src.get("sha256") or entry.get("sha256"), "md5": src.get("md5")}
    if pins["md5"]:
        with open(path, "rb") as f:
            got["md5"] = hashlib.file_digest(f, "md5").hexdigest()
    for algo, want in pins.items():
        if want and want != got[algo]:
            return got["sha256"], f"{algo} {got[algo]}, expected {want}"
    return got["sha256"], None


def _describe(err: BaseException, src: dict[str, Any]) -> UserError:
    """One line naming the source and what to do, for every way fetching it can fail outside our checks."""
    name, url = src["name"], src.get("url") or src.get("repo")
    path = getattr(err, "filename", None) or src.get("place") or src["dest"]
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
    if isinstance(err, DvcException):
        return UserError(
            f"{name}: DVC could not register {src['dest']} ({err}); check `dvc status` and run again"
        )
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return UserError(f"{name}: disk full while writing {path}; free space and run again")
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(
            f"{name}: no permission to write {path}; fix the permissions of {path} (or its folder) "
            "and run again"
        )
    return UserError(f"{name}: {getattr(err, 'strerror', None) or err} ({path}); check it and run again")


def validator_path(partial: Path) -> Path:
    """Where the server's validator of a partial download is kept, so that a later run resumes it safely."""
    return partial.with_name(f"{partial.name}.validator")


def _validator(resp: Any) -> str | None:
    """What If-Range takes to resume only the same version of a file: a strong ETag, else Last-Modified."""
    etag = resp.headers.get("ETag")
    return etag if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified")


def _stored_validator(tag: Path) -> str | None:
    """The validator a part began with; None when there is none or it is unreadable (resumed without)."""
    try:
        value = tag.read_bytes().decode("latin-1")  # what HTTP header values are
    except OSError:
        return None
    return value if value and value.isprintable() else None


def _ignored_if_range(resp: Any, stored: str) -> bool:
    """A part whose own validator is not the one ours began with: a server that ignored If-Range."""
    now = resp.headers.get("ETag" if stored.startswith('"') else "Last-Modified")
    return now is not None and now != stored


def _transfer(session: Any, src: dict[str, Any], partial: Path) -> None:
    """Append the rest of ``src`` to ``partial``, with a progress bar.

    A part is resumed with a Range request carrying the validator of the answer that began it (If-Range: its
    strong ETag, else Last-Modified), so a file changed on the server since comes back whole (200) and starts
    over, as does a part whose validator differs (a server that ignores If-Range); an unpinned file is then
    never two versions spliced. Without a validator (none sent, or a part from an older run) the part is
    resumed as it is. An answer starting elsewhere starts the file over, and a 416 giving the part's own size
    means it is complete (verification decides). The body is asked for unencoded: a gzip answer would make
    Content-Length and resume offsets count other bytes than the file's.
    """
    from tqdm import tqdm

    tag = validator_path(partial)
    while True:
        offset = partial.stat().st_size if partial.exists() else 0
        headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={offset}-"} if offset else {})
        stored = _stored_validator(tag) if offset else None
        if stored is not None:
            headers["If-Range"] = stored
        with session.get(src["url"], stream=True, headers=headers, timeout=TIMEOUT) as resp:
            span = CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
            if offset and resp.status_code == 416:
                if span and span["start"] is None and span["size"] == str(offset):
                    return
                partial.unlink()
                continue
            resp.raise_for_status()
            if resp.headers.get("Content-Encoding", "identity") != "identity":
                raise UserError(
                    f"{src['name']}: {src['url']} sent {resp.headers['Content-Encoding']}-encoded content "
                    f"although none was asked for; download it by hand to {src['dest']}, then run again"
                )
            if resp.status_code == 206 and (span is None or span["start"] != str(offset)):
                if not offset:
                    raise UserError(f"{src['name']}: {src['url']} answered a part to a whole-file request")
                partial.unlink()  # not the part that follows ours
                continue
            resumed = resp.status_code == 206
            if resumed and stored is not None and _ignored_if_range(resp, stored):
                partial.unlink()  # the rest of another version
                continue
            if not resumed:
                tag.unlink(missing_ok=True)  # until the part it describes is begun
            size = resp.headers.get("Content-Length")
            if span and span["size"] != "*":
                total = int(span["size"])
            else:
                total = (offset if resumed else 0) + int(size) if size is not None else None
            with (
                open(partial, "ab" if resumed else "wb") as f,
                tqdm(
                    total=total,
                    initial=offset if resumed else 0,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=src["name"],
                ) as bar,
            ):
                if not resumed and (validator := _validator(resp)) is not None:
                    write_bytes(tag, validator.encode("latin-1"))
                for block in resp.iter_content(CHUNK):
                    f.write(block)
                    bar.update(len(block))
        if total is not None and partial.stat().st_size != total:
            raise ConnectionError(f"transfer stopped at {partial.stat().st_size} of {total} bytes")
        return


def download(session: Any, src: dict[str, Any], entry: dict[str, Any], sources: Path) -> tuple[bool, str]:
    """Make ``dest`` hold the verified content of ``src``; return whether it was downloaded, its sha256."""
    dest = Path(src["dest"])
    if dest.is_file():
        sha256, problem = _check(dest, src, entry)
        if problem is None:
            return False, sha256
        raise UserError(
            f"{src['name']}: {dest} does not match its pinned checksum ({problem}); {_repin(sources)}; "
            "if the file is a corrupt download, delete it and run again"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _transfer(session, src, partial)
            break
        except RETRY as err:
            if isinstance(err, requests.exceptions.ProxyError) or attempt == ATTEMPTS:
                raise
            print(f"{src['name']}: transfer interrupted ({err}); resuming", file=sys.stderr)
    validator_path(partial).unlink(missing_ok=True)
    sha256, problem = _check(partial, src, entry)
    if problem is not None:
        partial.unlink()
        raise UserError(
            f"{src['name']}: checksum mismatch for {src['url']} ({problem}); the download was discarded. "
            f"Run again; {_repin(sources)}"
        )
    os.replace(partial, dest)
    return True, sha256


def _members(zf: zipfile.ZipFile, src: dict[str, Any]) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The archive's files and their paths inside ``place`` (a top folder named like ``place`` stripped).

    Any member that could be written elsewhere (absolute, with a ``..`` part, a symbolic link) refuses the
    whole archive: checked on the name itself, so it holds whatever folder the extraction happens in.
    """
    place = Path(src["place"])
    members = [(m, PurePosixPath(m.filename)) for m in zf.infolist()]
    for m, name in members:
        if name.is_absolute() or ".." in name.parts or stat.S_ISLNK(m.external_attr >> 16):
            raise UserError(
                f"{src['name']}: {src['dest']} has a member that could land outside {place} "
                f"({m.filename!r}); refusing the archive (delete it and check the source)"
            )
    strip = int({n.parts[0] for _, n in members if n.parts} == {place.name})
    return [(m, PurePosixPath(*n.parts[strip:])) for m, n in members if not m.is_dir() and n.parts[strip:]]


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            crc = zlib.crc32(block, crc)
    return crc


def _same_names(place: Path, files: list[tuple[zipfile.ZipInfo, PurePosixPath]]) -> bool:
    """Whether ``place`` holds exactly the archive's file names (an extraction of it, intact or not)."""
    if not place.is_dir():
        return False
    present = sorted(p.relative_to(place).as_posix() for p in place.rglob("*") if not p.is_dir())
    return present == sorted(rel.as_posix() for _, rel in files)


def _extracted(place: Path, files: list[tuple[zipfile.ZipInfo, PurePosixPath]]) -> bool:
    """Whether ``place`` holds exactly the archive's files, each with the CRC-32 the archive gives it."""
    return _same_names(place, files) and all(_crc32(place / rel) == m.CRC for m, rel in files)


def extract(src: dict[str, Any]) -> bool:
    """Unpack the verified zip into ``place`` as a whole (staged beside it, then swapped in); return whether
    it was unpacked, i.e. ``place`` did not already hold exactly the archive's files."""
    archive, place = Path(src["dest"]), Path(src["place"])
    staging = place.with_name(f".{place.name}.extracting")
    shutil.rmtree(staging, ignore_errors=True)  # left by a crashed run
    try:
        with zipfile.ZipFile(archive) as zf:
            files = _members(zf, src)
            if _extracted(place, files):
                return False
            if not _same_names(place, files):  # a damaged extraction is repaired, another tree refused
                refuse_other(src, place, f"an extraction of {archive}")
            staging.mkdir(parents=True)
            root = staging.resolve()
            for member, rel in files:
                out = staging / rel
                if not out.resolve().is_relative_to(root):
                    raise UserError(f"{src['name']}: {archive} member {member.filename!r} escapes {place}")
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as fin, open(out, "wb") as fout:
                    shutil.copyfileobj(fin, fout, CHUNK)
        replace_dir(staging, place)
    except BAD_ZIP as err:
        raise UserError(
            f"{src['name']}: {archive} is not a valid zip archive ({err}); delete it and run again (if it "
            f"fails again, check that {src['url']} serves the archive itself, not a web page)"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def refuse_other(src: dict[str, Any], path: Path, expected: str) -> None:
    """What is at ``path`` but is not ``expected`` is refused rather than replaced: it may be the user's."""
    if path.exists() or path.is_symlink():
        raise UserError(
            f"{src['name']}: {path} already exists and is not {expected}; move it away (or delete it) and "
            "run again"
        )


def place_file(src: dict[str, Any]) -> None:
    """Put the verified download where the pipeline reads it (a hard link, or a copy across file systems).

    A different file already there is refused rather than replaced: it may be the user's own.
    """
    dest, place = Path(src["dest"]), Path(src["place"])
    if place.is_file() and (os.path.samefile(dest, place) or file_digest(place) == file_digest(dest)):
        return
    refuse_other(src, place, f"the download {dest}")
    with atomic_path(place) as tmp:
        try:
            os.link(dest, tmp)
        except OSError:
            shutil.copyfile(dest, tmp)


def go_online() -> None:
    """Let huggingface_hub download in this process only (the fetch command is its own process).

    Everything else runs with HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set, and huggingface_hub reads either
    one once, when it is first imported: both are cleared before that, and an earlier import is an error.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(var, None)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and constants.HF_HUB_OFFLINE:
        raise UserError(
            "huggingface_hub was already imported in offline mode, so the hub sources cannot be downloaded; "
            "run `rsckd fetch` (make paper-inputs) as a command of its own"
        )


def hub_snapshot(repo: str, revision: str | None, local_dir: Path, allow: list[str]) -> str:
    """Download ``repo`` at ``revision`` into ``local_dir`` (resuming what is there); return the commit."""
    import httpx
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    try:
        commit = revision or HfApi().model_info(repo, revision="main").sha
        snapshot_download(repo, revision=commit, local_dir=local_dir, allow_patterns=allow)
    except (HfHubHTTPError, EntryNotFoundError, httpx.HTTPError, ConnectionError) as err:
        raise UserError(
            f"{repo}@{revision or 'main'}: the hub download failed ({type(err).__name__}: "
            f"{' '.join(str(err).split())}); check the network, the proxy (HTTPS_PROXY) and that the "
            "repository and commit exist, then run again (it resumes)"
        ) from None
    return commit


def snapshot(src: dict[str, Any], entry: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Make ``dest`` the verified snapshot of a hub repository at its pinned (or recorded) commit; return
    whether it was downloaded, and its lock entry (commit, content digest)."""
    dest = Path(src["dest"])
    revision = src["revision"] or entry.get("revision")
    if entry.get("revision") not in (None, revision):
        raise UserError(
            f"{src['name']}: the lock records commit {entry['revision']} but the sources pin {revision}; "
            f"delete its entry from the lock file to accept the new commit"
        )
    if entry.get("sha256") and dest.is_dir() and content_digest(dest) == entry["sha256"]:
        return False, entry
    if not entry.get("sha256"):  # a snapshot the lock records is repaired, another directory refused
        refuse_other(src, dest, f"a snapshot of {src['repo']} recorded in the lock")
    partial = dest.with_name(f".{dest.name}.partial")  # a stable name: huggingface_hub resumes it
    commit = hub_snapshot(src["repo"], revision, partial, list(src["allow"]))
    shutil.rmtree(partial / ".cache", ignore_errors=True)
    absent = [f for f in src["require"] if not (partial / f).is_file()]
    if absent:
        raise UserError(f"{src['name']}: {src['repo']}@{commit} has no {', '.join(absent)}; check 'allow'")
    digest = content_digest(partial)
    if entry.get("sha256") not in (None, digest):
        raise UserError(
            f"{src['name']}: {src['repo']}@{commit} differs from the lock; the snapshot was left at "
            f"{partial}. Delete its lock entry only if the change is intended"
        )
    replace_dir(partial, dest)
    return True, {"revision": commit, "sha256": digest}


def track(repo: Any, src: dict[str, Any]) -> None:
    """Register a URL download with DVC once: ``dvc import-url --no-download``, then ``dvc commit``."""
    dest = Path(src["dest"])
    if Path(f"{dest}.dvc").is_file():
        return
    aside = dest.with_name(f".{dest.name}.tracking")
    os.replace(dest, aside)  # import-url --force removes an existing output
    try:
        repo.imp_url(src["url"], out=str(dest), no_download=True, force=True)
    finally:
        os.replace(aside, dest)
    repo.commit(f"{dest}.dvc", force=True)


def fetch_source(
    session: Any, dvc: Any, src: dict[str, Any], entry: dict[str, Any], sources: Path
) -> tuple[bool, dict[str, Any]]:
    """One source's whole step; return whether anything was fetched, and its lock entry."""
    if src["kind"] == "hub":
        return snapshot(src, entry)
    fetched, sha256 = download(session, src, entry, sources)
    if dvc is not None:
        track(dvc, src)
    if src["kind"] == "zip":
        fetched = extract(src) or fetched
    else:
        place_file(src)
    return fetched, {**entry, "sha256": sha256}


def dry_run(sources: list[dict[str, Any]], lock: dict[str, Any]) -> None:
    for src in sources:
        entry = lock.get(src["name"], {})
        locked = (
            f"sha256 {entry['sha256']} (lock)" if entry.get("sha256") else "sha256 recorded at first download"
        )
        if src["kind"] == "hub":
            revision = src["revision"] or entry.get("revision") or "main (commit recorded at first download)"
            pin = f"{src['repo']}@{revision}"
            check = f"files: {locked}"
        else:
            pin = src["url"]
            sums = [f"{a} {src[a]}" for a in ("sha256", "md5") if src.get(a)]
            check = ", ".join(sums if src.get("sha256") else [*sums, locked])
        target = src["dest"] + (f" -> {src['place']}" if src.get("place") else "")
        print(f"{src['name']} [{src['kind']}]\n  source: {pin}\n  check: {check}\n  to: {target}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sources", default=SOURCES, help=f"pinned source list (default: {SOURCES})")
    parser.add_argument(
        "--params", default=PARAMS, help=f"profile whose inputs are checked at the end ({PARAMS})"
    )
    parser.add_argument("--dry-run", action="store_true", help="list every source, its pin and destination")


def run(args: argparse.Namespace) -> None:
    from rsckd.config import load_params
    from rsckd.data.summary import format_summary, summarize_root
    from rsckd.inputs import require_inputs

    above = next((p for p in Path.cwd().parents if (p / ".dvc").is_dir()), None)
    if above is not None and not Path(".dvc").is_dir():
        raise UserError(
            f"{Path.cwd()}: inside the DVC repository {above}; run `rsckd fetch` from its root, where the "
            "sources' paths lead"
        )
    sources_file = Path(args.sources)
    sources, lock_file = load_sources(sources_file), lock_path(sources_file)
    lock = load_lock(lock_file)
    if args.dry_run:
        dry_run(sources, lock)
        return
    params = load_params(args.params)
    go_online()
    with contextlib.ExitStack() as stack:
        session = stack.enter_context(requests.Session())  # honours HTTPS_PROXY / HTTP_PROXY / NO_PROXY
        dvc = None
        if Path(".dvc").is_dir():  # a DVC repository: URL downloads become imports
            from dvc.repo import Repo

            dvc = stack.enter_context(Repo())
        for src in sources:
            try:
                fetched, entry = fetch_source(session, dvc, src, lock.get(src["name"], {}), sources_file)
            except (OSError, DvcException) as err:
                raise _describe(err, src) from None
            if entry != lock.get(src["name"]):  # recorded only once the whole step succeeded
                lock[src["name"]] = entry
                write_json(lock_file, lock)
            where = src.get("place", src["dest"])
            print(f"{src['name']}: {'fetched' if fetched else 'present, verified'} -> {where}")
    require_inputs(params)
    print(f"{args.params}: every input is in place")
    print(format_summary(summarize_root(params.data)))
