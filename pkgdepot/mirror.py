"""Mirror sync from signed metadata.

`pkgdepot mirror sync NAME` checks the repository's signed release file
(InRelease / Release+Release.gpg, or repomd.xml+repomd.xml.asc) against its
keyring, works out from the indices which files are needed, downloads what
the store lacks (concurrently, each file checked against the hash its index
gives), and only when everything is in, publishes the new state as a
snapshot in one transaction. Until then clients keep getting the previous
state. An interrupted sync publishes nothing; the next one finds the packages
already verified and kept, and downloads only the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pkgdepot import openpgp
from pkgdepot.config import Config, RepoConfig
from pkgdepot.errors import (
    FormatError,
    NotFound,
    PkgdepotError,
    UpstreamError,
    VerificationError,
)
from pkgdepot.fetch import Fetcher
from pkgdepot.formats import Digest, Package
from pkgdepot.formats.apt import BY_HASH_DIR, AptBackend, parse_release, release_entries
from pkgdepot.formats.rpm import RpmBackend, parse_repomd
from pkgdepot.progress import Progress
from pkgdepot.snapshots import FileRef, Snapshot, Snapshots
from pkgdepot.store import Entry
from pkgdepot.store.fs import FsStore

log = logging.getLogger(__name__)
COMPRESSIONS = ("", ".xz", ".gz", ".bz2", ".lzma", ".zst")


class SyncError(PkgdepotError):
    """A sync could not complete; nothing was published."""

    status = 502


@dataclass
class Want:
    """A file the sync needs, with what its index says of it."""

    path: str                  # relative to the repository root
    size: int | None
    digest: Digest | None
    fetch_path: str | None = None  # where to get it (e.g. its by-hash copy)


@dataclass
class SyncResult:
    repo: str
    snapshot: Snapshot | None
    unchanged: bool = False
    files_downloaded: int = 0
    bytes_downloaded: int = 0
    packages_total: int = 0
    packages_reused: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.unchanged:
            return f"{self.repo}: upstream unchanged, nothing to do ({self.seconds:.1f} s)"
        state = (f"published snapshot {self.snapshot.stamp}" if self.snapshot
                 else "nothing new to publish")
        return (f"{self.repo}: {state}; {self.packages_total} packages "
                f"({self.packages_reused} already in the store), {self.files_downloaded} files "
                f"/ {self.bytes_downloaded / 1e6:.1f} MB downloaded in {self.seconds:.1f} s")


class Mirror:
    def __init__(self, config: Config, repo: RepoConfig, store: FsStore, snapshots: Snapshots,
                 fetcher: Fetcher) -> None:
        if repo.mirror is None:
            raise SyncError(f"repository {repo.name!r} is not a mirror",
                            hint=f"add a [repos.{repo.name}.mirror] table to the config")
        self.config = config
        self.repo = repo
        self.mirror = repo.mirror
        self.store = store
        self.snapshots = snapshots
        self.fetcher = fetcher
        self.keyring: Path | None = None
        self.result = SyncResult(repo.name, None)

    async def sync(self) -> SyncResult:
        t0 = time.monotonic()
        if self.repo.keyring is not None:
            self.keyring = await asyncio.to_thread(
                openpgp.binary_keyring, self.repo.keyring, self.store.root / "keyrings")
        latest = await self.snapshots.latest(self.repo.name)
        published = (await self.snapshots.manifest(self.repo.name, latest.id)
                     if latest is not None else {})
        if self.mirror.format == "apt":
            manifest, packages = await self._apt(published)
        else:
            manifest, packages = await self._rpm(published)
        if manifest is None:
            self.result.unchanged = True
            self.result.snapshot = latest
            self.result.seconds = time.monotonic() - t0
            return self.result
        await self._packages(packages)
        changes: dict[str, FileRef | None] = dict(manifest)
        for path in published.keys() - manifest.keys():
            changes[path] = None
        snap = await self.snapshots.record(self.repo.name, changes, "mirror")
        self.result.snapshot = snap or latest
        self.result.seconds = time.monotonic() - t0
        return self.result

    # -- apt -----------------------------------------------------------------

    async def _apt(self, published: dict[str, FileRef]
                   ) -> tuple[dict[str, FileRef] | None, list[Package]]:
        manifest: dict[str, FileRef] = {}
        wants: list[Want] = []
        aliases: dict[str, list[str]] = {}
        unchanged = True
        releases: list[tuple[str, Path]] = []
        for suite in self.mirror.suites:
            base = f"dists/{suite}/"
            rel_paths, text_path = await self._apt_release(base)
            for p, ref in rel_paths.items():
                manifest[p] = ref
                if published.get(p) != ref:
                    unchanged = False
            releases.append((base, text_path))
        if unchanged and published:
            for _b, t in releases:
                t.unlink(missing_ok=True)
            return None, []
        for base, text_path in releases:
            try:
                rel = parse_release(text_path.read_text("utf-8", "replace"))
            finally:
                text_path.unlink(missing_ok=True)
            by_hash = str(rel.get("Acquire-By-Hash", "")).strip().lower() == "yes"
            entries = release_entries(rel)
            for name in self._apt_index_names(entries.keys()):
                size, digests = entries[name]
                path = base + name
                directory = path.rsplit("/", 1)[0]
                sha = next((d for d in digests if d.algo == "sha256"), None)
                fetch = (f"{directory}/by-hash/SHA256/{sha.hexdigest}"
                         if by_hash and sha is not None else None)
                wants.append(Want(path, size, sha or digests[0], fetch))
                aliases[path] = [f"{directory}/by-hash/{BY_HASH_DIR[d.algo]}/{d.hexdigest}"
                                 for d in digests]
        refs = await self._metadata(wants)
        manifest.update(refs)
        for path, names in aliases.items():  # by-hash copies are the same blob
            for alias in names:
                manifest[alias] = refs[path]
        packages = await asyncio.to_thread(self._apt_packages, refs)
        return manifest, packages

    def _apt_index_names(self, names: Iterable[str]) -> list[str]:
        m = self.mirror
        dirs = set()
        for comp in m.components:
            for arch in (*m.architectures, "all"):
                dirs.add(f"{comp}/binary-{arch}/")
                if m.udebs:
                    dirs.add(f"{comp}/debian-installer/binary-{arch}/")
            if m.sources:
                dirs.add(f"{comp}/source/")
            dirs.add(f"{comp}/i18n/")
        out = []
        for name in names:
            d, _, base = name.rpartition("/")
            if d + "/" not in dirs:
                continue
            stem = base
            for c in COMPRESSIONS[1:]:
                stem = stem.removesuffix(c)
            if stem in ("Packages", "Sources", "Release") or (
                    d.endswith("/i18n") and (stem == "Index" or stem == "Translation-en")):
                out.append(name)
        return sorted(out)

    async def _apt_release(self, base: str) -> tuple[dict[str, FileRef], Path]:
        """Fetch and verify a suite's release file. Returns its manifest entries
        and a temporary file with the verified text."""
        try:
            body = await self._get_bytes(base + "InRelease")
        except NotFound:
            body = None
        if body is not None:
            temp = await self._temp(body)
            plain = temp.with_name(temp.name + ".txt")
            if self.keyring is not None:
                await asyncio.to_thread(openpgp.verify_inline, self.keyring, temp, plain)
            else:
                plain.write_bytes(body)
            ref = await self._keep(temp, body)
            return {base + "InRelease": ref}, plain
        release = await self._get_bytes(base + "Release")
        out: dict[str, FileRef] = {}
        temp = await self._temp(release)
        plain = temp.with_name(temp.name + ".txt")
        plain.write_bytes(release)
        try:
            sig = await self._get_bytes(base + "Release.gpg")
        except NotFound as e:
            if self.keyring is not None:
                raise VerificationError(f"{self.repo.name}: {base}Release has no Release.gpg "
                                        "and no InRelease: nothing to check it with") from e
            sig = None
        if sig is not None:
            sig_temp = await self._temp(sig)
            if self.keyring is not None:
                await asyncio.to_thread(openpgp.verify_detached, self.keyring, sig_temp, temp)
            out[base + "Release.gpg"] = await self._keep(sig_temp, sig)
        out[base + "Release"] = await self._keep(temp, release)
        return out, plain

    def _apt_packages(self, refs: dict[str, FileRef]) -> list[Package]:
        backend = AptBackend()
        seen: dict[str, Package] = {}
        chosen: dict[str, str] = {}
        for path in sorted(refs):
            if not (backend.is_package_index(path) or "/Sources" in path):
                continue
            stem = path
            for c in COMPRESSIONS[1:]:
                stem = stem.removesuffix(c)
            if stem in chosen:
                continue  # the same list in another compression
            chosen[stem] = path
            blob = self.store.blob_path(refs[path][0])
            if "/Sources" in path:
                from pkgdepot.formats.apt import archive_root, sources_vouches

                for v in sources_vouches(archive_root("x/" + path)[2:], blob,
                                         path.rsplit("/", 1)[-1]):
                    seen.setdefault(v.key, Package(v.key, "", "source", v.key, v.size, v.digest))
                continue
            for p in backend.packages(path, blob):
                seen.setdefault(p.location, p)
        return list(seen.values())

    # -- rpm -----------------------------------------------------------------

    async def _rpm(self, published: dict[str, FileRef]
                   ) -> tuple[dict[str, FileRef] | None, list[Package]]:
        repomd = await self._get_bytes("repodata/repomd.xml")
        manifest: dict[str, FileRef] = {}
        temp = await self._temp(repomd)
        try:
            sig = await self._get_bytes("repodata/repomd.xml.asc")
        except NotFound as e:
            if self.keyring is not None:
                raise VerificationError(f"{self.repo.name}: repodata/repomd.xml has no "
                                        "repomd.xml.asc: nothing to check it with") from e
            sig = None
        if sig is not None:
            sig_temp = await self._temp(sig)
            if self.keyring is not None:
                await asyncio.to_thread(openpgp.verify_detached, self.keyring, sig_temp, temp)
            manifest["repodata/repomd.xml.asc"] = await self._keep(sig_temp, sig)
        data = await asyncio.to_thread(parse_repomd, temp)
        manifest["repodata/repomd.xml"] = await self._keep(temp, repomd)
        if published.get("repodata/repomd.xml") == manifest["repodata/repomd.xml"]:
            return None, []
        try:
            key = await self._get_bytes("repodata/repomd.xml.key")
            manifest["repodata/repomd.xml.key"] = await self._keep(await self._temp(key), key)
        except NotFound:
            pass
        wants = [Want(href, size, digest) for _typ, href, size, digest in data]
        refs = await self._metadata(wants)
        manifest.update(refs)
        backend = RpmBackend()

        def read() -> list[Package]:
            out: list[Package] = []
            for typ, href, _s, _d in data:
                if typ == "primary":
                    out.extend(backend.packages(href, self.store.blob_path(refs[href][0])))
            return out

        return manifest, await asyncio.to_thread(read)

    # -- downloads -----------------------------------------------------------

    async def _metadata(self, wants: list[Want]) -> dict[str, FileRef]:
        """Index files: reuse a blob we already have with the right sha256, else
        download and verify."""
        out: dict[str, FileRef] = {}

        async def one(w: Want) -> None:
            if w.digest is not None and w.digest.algo == "sha256" and w.size is not None \
                    and os.path.exists(self.store.blob_path(w.digest.hexdigest)):
                out[w.path] = (w.digest.hexdigest, w.size)
                return
            sha, size = await self._download(w, keep_entry=False)
            out[w.path] = (sha, size)

        await self._gather(wants, one, "metadata", unit="files")
        return out

    async def _packages(self, packages: list[Package]) -> None:
        self.result.packages_total = len(packages)
        todo: list[Want] = []
        for p in packages:
            key = f"repo/{self.repo.name}/{p.location}"
            entry = await self.store.load(key)
            if entry is not None and (p.digest is None or p.digest.algo != "sha256"
                                      or p.digest.hexdigest == entry.sha256):
                self.result.packages_reused += 1
                continue
            if p.digest is not None and p.digest.algo == "sha256" and p.size is not None \
                    and os.path.exists(self.store.blob_path(p.digest.hexdigest)):
                now = time.time()
                await self.store.commit_existing(Entry(key, p.digest.hexdigest, p.size, now, now))
                self.result.packages_reused += 1
                continue
            todo.append(Want(p.location, p.size, p.digest))
        total = sum(w.size or 0 for w in todo)
        if not todo:
            return
        with Progress(f"{self.repo.name}: {len(todo)} packages", total) as bar:
            sem = asyncio.Semaphore(self.mirror.concurrency)

            async def one(w: Want) -> None:
                async with sem:
                    await self._download(w, keep_entry=True, bar=bar)

            results = await asyncio.gather(*(one(w) for w in todo), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            for e in errors[:5]:
                log.error("%s", e)
            raise SyncError(f"{self.repo.name}: {len(errors)} of {len(todo)} packages failed "
                            f"(first: {errors[0]}); nothing was published",
                            hint="run the sync again: what was verified is kept and not "
                                 "downloaded again")

    async def _gather(self, wants: list[Want], fn: object, what: str, unit: str) -> None:
        sem = asyncio.Semaphore(self.mirror.concurrency)

        async def guarded(w: Want) -> None:
            async with sem:
                await fn(w)  # type: ignore[operator]

        results = await asyncio.gather(*(guarded(w) for w in wants), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise SyncError(f"{self.repo.name}: {len(errors)} {what} file(s) failed "
                            f"(first: {errors[0]}); nothing was published")

    async def _download(self, w: Want, keep_entry: bool,
                        bar: Progress | None = None) -> tuple[str, int]:
        errors: list[str] = []
        for base in self.repo.upstreams:
            url = f"{base}/{w.fetch_path or w.path}"
            try:
                return await self._download_from(url, w, keep_entry, bar)
            except (UpstreamError, VerificationError, NotFound) as e:
                errors.append(e.message)
                log.warning("%s", e.message)
        raise SyncError(f"{w.path}: " + "; ".join(errors))

    async def _download_from(self, url: str, w: Want, keep_entry: bool,
                             bar: Progress | None) -> tuple[str, int]:
        up = await self.fetcher.get(url)
        temp = await asyncio.to_thread(self.store.new_temp)
        try:
            if up.status == 404:
                raise NotFound(f"{url}: 404")
            if up.status != 200:
                raise UpstreamError(f"{url}: HTTP {up.status}")
            sha = hashlib.sha256()
            extra = hashlib.new(w.digest.algo) if w.digest and w.digest.algo != "sha256" else None
            size = 0
            with open(temp, "wb") as f:
                async for chunk in up.response.content.iter_chunked(1 << 18):
                    await asyncio.to_thread(f.write, chunk)
                    sha.update(chunk)
                    if extra is not None:
                        extra.update(chunk)
                    size += len(chunk)
                    if bar is not None:
                        bar.advance(len(chunk))
            if w.size is not None and size != w.size:
                raise VerificationError(f"{url}: {size} bytes, the index says {w.size}")
            if w.digest is not None:
                got = (extra or sha).hexdigest()
                if got != w.digest.hexdigest:
                    raise VerificationError(f"{url}: {w.digest.algo} {got} does not match "
                                            f"the index ({w.digest.hexdigest})")
            hexd = sha.hexdigest()
            self.result.files_downloaded += 1
            self.result.bytes_downloaded += size
            now = time.time()
            if keep_entry:
                await self.store.commit(temp, Entry(f"repo/{self.repo.name}/{w.path}", hexd,
                                                    size, now, now))
            else:
                await asyncio.to_thread(self.store._place, temp, hexd)
            return hexd, size
        except TimeoutError as e:
            raise UpstreamError(f"{url}: timed out") from e
        except OSError as e:
            raise UpstreamError(f"{url}: {e}") from e
        finally:
            up.release()
            temp.unlink(missing_ok=True)

    async def _get_bytes(self, path: str, limit: int = 64 << 20) -> bytes:
        errors: list[str] = []
        notfound = 0
        for base in self.repo.upstreams:
            url = f"{base}/{path}"
            try:
                up = await self.fetcher.get(url)
            except UpstreamError as e:
                errors.append(e.message)
                continue
            try:
                if up.status == 404:
                    notfound += 1
                    errors.append(f"{url}: 404")
                    continue
                if up.status != 200:
                    errors.append(f"{url}: HTTP {up.status}")
                    continue
                body = await up.response.content.read(limit + 1)
                if len(body) > limit:
                    raise FormatError(f"{url}: larger than {limit} bytes")
                return bytes(body)
            finally:
                up.release()
        if notfound == len(self.repo.upstreams):
            raise NotFound(f"{path}: not found upstream")
        raise SyncError(f"{self.repo.name}: cannot fetch {path}: " + "; ".join(errors))

    async def _temp(self, data: bytes) -> Path:
        temp = await asyncio.to_thread(self.store.new_temp)
        await asyncio.to_thread(temp.write_bytes, data)
        return temp

    async def _keep(self, temp: Path, data: bytes) -> FileRef:
        sha = hashlib.sha256(data).hexdigest()
        await asyncio.to_thread(self.store._place, temp, sha)
        return (sha, len(data))


async def run_sync(config: Config, name: str) -> SyncResult:
    repo = config.repos.get(name)
    if repo is None:
        known = ", ".join(sorted(r.name for r in config.repos.values() if r.mirror)) or "none"
        raise SyncError(f"no repository named {name!r} in the configuration (mirrors: {known})")
    store = FsStore(config.data_dir).open(recover=False)
    fetcher = Fetcher(config)
    await fetcher.start()
    try:
        snapshots = await Snapshots(store).open()
        return await Mirror(config, repo, store, snapshots, fetcher).sync()
    finally:
        await fetcher.close()
        await store.close()
