"""Repository metadata and packages for a build, all through the depot."""

from __future__ import annotations

import concurrent.futures
import hashlib
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pkgdepot.build.resolve import Index, Locked
from pkgdepot.errors import PkgdepotError
from pkgdepot.formats import decompress_to
from pkgdepot.formats.apt import parse_release, release_entries
from pkgdepot.formats.rpm import parse_repomd

TIMEOUT = 120


class FetchError(PkgdepotError):
    status = 502


@dataclass(frozen=True)
class RepoSpec:
    """One repository of a template: a depot repository, maybe pinned to a
    snapshot, and for apt its suite and components."""

    depot: str
    name: str
    suite: str = ""
    components: tuple[str, ...] = ("main",)
    snapshot: str | None = None

    @property
    def base(self) -> str:
        if self.snapshot:
            return f"{self.depot.rstrip('/')}/snapshot/{self.name}/{self.snapshot}"
        return f"{self.depot.rstrip('/')}/{self.name}"


def get(url: str, dest: Path | None = None) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
            if dest is None:
                return bytes(r.read())
            with open(dest, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
            return b""
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", "replace").strip()
        raise FetchError(f"{url}: HTTP {e.code}: {body}") from e
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(f"{url}: {e}",
                         hint="is the depot running, and its URL right in build.toml?") from e


def apt_indexes(repo: RepoSpec, arch: str, workdir: Path) -> list[Index]:
    """Uncompressed Packages files of the repository for `arch` (and all)."""
    rel = parse_release(get(f"{repo.base}/dists/{repo.suite}/InRelease").decode(
        "utf-8", "replace"))
    entries = release_entries(rel)
    out = []
    for comp in repo.components:
        for a in (arch, "all"):
            stem = f"{comp}/binary-{a}/Packages"
            for ext in (".xz", ".gz", ""):
                if stem + ext in entries:
                    raw = workdir / f"{repo.name}-{comp}-{a}{ext}"
                    get(f"{repo.base}/dists/{repo.suite}/{stem}{ext}", raw)
                    size, digests = entries[stem + ext]
                    _check(raw, size, digests[0].algo, digests[0].hexdigest, stem + ext)
                    out.append(Index(repo.base, decompress_to(raw, stem + ext, workdir)))
                    break
    if not out:
        raise FetchError(f"{repo.base}: no Packages for {arch} in {', '.join(repo.components)}")
    return out


def rpm_indexes(repo: RepoSpec, workdir: Path) -> list[Index]:
    repomd = workdir / f"{repo.name}-repomd.xml"
    get(f"{repo.base}/repodata/repomd.xml", repomd)
    for typ, href, size, digest in parse_repomd(repomd):
        if typ == "primary":
            raw = workdir / f"{repo.name}-{href.rsplit('/', 1)[-1]}"
            get(f"{repo.base}/{href}", raw)
            _check(raw, size, digest.algo, digest.hexdigest, href)
            return [Index(repo.base, decompress_to(raw, href, workdir))]
    raise FetchError(f"{repo.base}: repomd.xml lists no primary metadata")


def _check(path: Path, size: int | None, algo: str, hexdigest: str, what: str,
           source: str = "its release file") -> None:
    got = path.stat().st_size
    if size is not None and got != size:
        raise FetchError(f"{what}: does not match: {got} bytes, {source} says {size}")
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    if h.hexdigest() != hexdigest:
        raise FetchError(f"{what}: does not match the {algo} {source} gives")


def required_debs(indexes: Iterable[Index]) -> list[str]:
    """Essential and Priority: required packages, as debootstrap and
    mmdebstrap's minbase take them."""
    from pkgdepot.formats.apt import _apt_pkg

    names: set[str] = set()
    for idx in indexes:
        with open(idx.path, "rb") as f:
            for s in _apt_pkg().TagFile(f):
                if s.get("Essential") == "yes" or s.get("Priority") == "required":
                    names.add(s.get("Package", ""))
    names.discard("")
    return sorted(names)


def download(packages: list[Locked], cache: Path,
             progress: Callable[[int], None] | None = None) -> dict[Locked, Path]:
    """Every package through the depot, in parallel, each checked against the
    lock's sha256; files already in `cache` with the right hash are reused."""
    cache.mkdir(parents=True, exist_ok=True)

    def one(p: Locked) -> tuple[Locked, Path]:
        dest = cache / f"{p.sha256}-{p.location.rsplit('/', 1)[-1]}"
        if not dest.exists():
            tmp = dest.with_name(dest.name + ".part")
            try:
                get(f"{p.repo}/{p.location}", tmp)
                _check(tmp, p.size or None, "sha256", p.sha256, p.location, "the lock")
            except FetchError:
                tmp.unlink(missing_ok=True)
                raise
            tmp.replace(dest)
        if progress is not None:
            progress(p.size)
        return p, dest

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, packages))
