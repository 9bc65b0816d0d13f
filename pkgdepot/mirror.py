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
import collections
import contextlib
import email.utils
import functools
import gzip
import hashlib
import json
import logging
import lzma
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pkgdepot import openpgp
from pkgdepot.config import Config, MirrorConfig, RepoConfig
from pkgdepot.diff import keep_listing
from pkgdepot.diff import prepare as prepare_diff
from pkgdepot.errors import (
    NotFound,
    PkgdepotError,
    UpstreamError,
    VerificationError,
)
from pkgdepot.fetch import Fetcher
from pkgdepot.formats import (
    READ_ORDER,
    Backend,
    Digest,
    Hash,
    Package,
    classify,
    decompress_to,
    read_rank,
    split_compression,
)
from pkgdepot.formats.apt import (
    BY_HASH_DIR,
    AptBackend,
    Release,
    parse_release,
    release_entries,
)
from pkgdepot.formats.rpm import RpmBackend, parse_repomd
from pkgdepot.progress import Progress
from pkgdepot.signing import SigningKey
from pkgdepot.snapshots import FileRef, Snapshot, Snapshots, has_snapshot
from pkgdepot.solve import closure
from pkgdepot.store import Entry, repo_key
from pkgdepot.store.fs import FsStore, is_blob

log = logging.getLogger(__name__)
#: The compression of an index a sync fetches when the Release lists none of
#: the mirror's `index_compressions`: the smallest kind first.
PREFERRED = (".xz", ".zst", ".gz", ".bz2", ".lzma")
SMALL_FILE = 1 << 20  # bodies up to this size are read whole and written in one go


def _stem(name: str) -> str:
    """The index name without the compressions a sync knows how to choose from."""
    stem, suffix = split_compression(name)
    return stem if suffix in PREFERRED else name


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
    helper_files: int = 0  # downloaded by a second process
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.unchanged:
            return f"{self.repo}: upstream unchanged, nothing to do ({self.seconds:.1f} s)"
        state = (f"published snapshot {self.snapshot.stamp}" if self.snapshot
                 else "nothing new to publish")
        return (f"{self.repo}: {state}; {self.packages_total} packages "
                f"({self.packages_reused} already in the store), {self.files_downloaded} files "
                f"/ {self.bytes_downloaded / 1e6:.1f} MB downloaded"
                + (f" ({self.helper_files} by a second process)" if self.helper_files else "")
                + f" in {self.seconds:.1f} s")


def _rpm_evr_match(version: str, wanted: set[tuple[str, str, str]], name: str,
                   arch: str) -> bool:
    """libsolv writes rpm EVRs without a zero epoch, as Package.version does."""
    return (name, version, arch) in wanted or (name, version.removeprefix("0:"), arch) in wanted


def _release_text(upstream: Release, files: dict[str, bytes], m: MirrorConfig,
                  snapshots_url: str | None = None) -> bytes:
    """A Release file (deb822) listing the indices the depot wrote."""
    lines = []
    for key in ("Origin", "Label", "Suite", "Version", "Codename"):
        if key in upstream:
            lines.append(f"{key}: {upstream[key]}")
    lines.append(f"Date: {email.utils.formatdate(time.time(), usegmt=True)}")
    lines.append(f"Architectures: {' '.join(m.architectures)}")
    lines.append(f"Components: {' '.join(m.components)}")
    lines.append("Description: written by pkgdepot and signed with its own key")
    if snapshots_url:
        # apt >= 2.7: `apt update --snapshot YYYYMMDDTHHMMSSZ` fetches that state
        lines.append(f"Snapshots: {snapshots_url}")
    for fld, algo in (("MD5Sum", "md5"), ("SHA256", "sha256")):
        lines.append(f"{fld}:")
        for name, data in sorted(files.items()):
            lines.append(f" {hashlib.new(algo, data).hexdigest()} {len(data):>16} {name}")
    return ("\n".join(lines) + "\n").encode()


class _Placer:
    """Writes small verified downloads into the store in batches, from one
    thread, while the downloads go on: one thread hop per batch instead of
    one per file (the hops, not the writes, were most of a many-file sync's
    cost). `drain` waits for everything queued and raises what failed."""

    def __init__(self, store: FsStore) -> None:
        self._store = store
        self._pending: list[tuple[bytes, str]] = []
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self.queued = 0   # files put so far
        self._written = 0  # of them, written (in order)
        self._wrote = asyncio.Event()

    def put(self, data: bytes, sha256: str) -> None:
        self.queued += 1
        self._pending.append((data, sha256))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await asyncio.to_thread(self._store.place_many, batch)
                self._written += len(batch)
                self._signal()
        except BaseException as e:
            self._failed = e  # kept until drained: nothing queued since counts as placed
            raise
        finally:
            self._task = None  # nothing pending: the next put starts a new run
            self._signal()

    def _signal(self) -> None:
        """Wake whoever waits in `written`, with a fresh event for the next ones."""
        self._wrote.set()
        self._wrote = asyncio.Event()

    async def written(self, mark: int) -> None:
        """Wait until the first `mark` files put are written (not for the
        ones put since, as `drain` does); raises what failed."""
        while self._written < mark and self._failed is None and self._task is not None:
            await self._wrote.wait()
        if self._written < mark:
            await self.drain()  # failed: raises (or, if it ended, nothing is left)

    async def drain(self) -> None:
        while self._task is not None:
            await asyncio.wait([self._task])  # its error is kept in _failed
        failed, self._failed = self._failed, None
        if failed is not None:
            self._pending.clear()
            raise failed


class Advancing(Protocol):
    def advance(self, n: int) -> None: ...


class Downloader:
    """Downloads files of a repository, verifies each against what its index
    says and places it in the store (the catalog is the caller's business)."""

    def __init__(self, repo: RepoConfig, store: FsStore, fetcher: Fetcher,
                 result: SyncResult) -> None:
        self.repo = repo
        self.store = store
        self.fetcher = fetcher
        self.result = result
        self.placer = _Placer(store)

    async def download(self, w: Want, bar: Advancing | None = None) -> tuple[str, int]:
        """Download, verify and place one file as a blob (small ones are queued
        on the placer: the caller drains it, and syncs, before anything names
        them). Its sha256 and size."""
        errors: list[str] = []
        # A by-hash copy first (immune to a publish upstream during the sync),
        # then, as apt does when by-hash fails, the file's own path.
        paths = [w.fetch_path, w.path] if w.fetch_path else [w.path]
        for base in self.repo.upstreams:
            for path in paths:
                url = f"{base}/{path}"
                try:
                    return await self._download_from(url, w, bar)
                except (UpstreamError, VerificationError, NotFound) as e:
                    errors.append(e.message)
                    log.warning("%s", e.message)
        raise SyncError(f"{w.path}: " + "; ".join(errors))

    async def _download_from(self, url: str, w: Want,
                             bar: Advancing | None) -> tuple[str, int]:
        up = await self.fetcher.get(url)
        temp: Path | None = None
        try:
            if up.status == 404:
                raise NotFound(f"{url}: 404")
            if up.status != 200:
                raise UpstreamError(f"{url}: HTTP {up.status}")
            sha = hashlib.sha256()
            extra = hashlib.new(w.digest.algo) if w.digest and w.digest.algo != "sha256" else None
            length = up.response.content_length
            body: bytes | None = None
            if length is not None and length <= SMALL_FILE:
                # small: read whole, hash on the loop (microseconds), one thread hop
                body = await up.body(SMALL_FILE)
                sha.update(body)
                if extra is not None:
                    extra.update(body)
                size = len(body)
            else:
                temp = await asyncio.to_thread(self.store.new_temp)
                size = 0
                with open(temp, "wb") as f, up.watch_rate() as rate, up.large_reads():
                    async for chunk in up.response.content.iter_chunked(1 << 18):
                        rate.got(len(chunk))
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
            if body is not None:
                if bar is not None:
                    bar.advance(size)
                # written in a batch; the caller drains the placer and syncs
                # before it records the blob anywhere
                self.placer.put(body, hexd)
            else:
                assert temp is not None
                await asyncio.to_thread(self.store._place, temp, hexd, True)
                temp = None
            return hexd, size
        except TimeoutError as e:
            raise UpstreamError(f"{url}: timed out") from e
        except OSError as e:
            raise UpstreamError(f"{url}: {e}") from e
        finally:
            up.release()
            if temp is not None:
                temp.unlink(missing_ok=True)


class Mirror:
    def __init__(self, config: Config, repo: RepoConfig, store: FsStore, snapshots: Snapshots,
                 fetcher: Fetcher, forked: Forked | None = None) -> None:
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
        self._suites: list[tuple[str, Release]] = []
        self._kept: dict[str, str] = {}  # package location -> sha256 in the store
        self._downloads = Downloader(repo, store, fetcher, self.result)
        #: a download helper started before the package list is known (`_expect`)
        self._early_helper: _Child | None = None
        self._forked = forked  # one forked before the event loop, if the caller did

    async def sync(self) -> SyncResult:
        try:
            return await self._sync()
        finally:
            if self._early_helper is not None:  # started, then not needed
                await _Helper.stop(self._early_helper)
                self._early_helper = None

    async def _sync(self) -> SyncResult:
        t0 = time.monotonic()
        if self.repo.keyring is not None:
            self.keyring = await asyncio.to_thread(
                openpgp.binary_keyring, self.repo.keyring, self.store.root / "keyrings")
        latest = await self.snapshots.latest(self.repo.name)
        published = (await self.snapshots.manifest(self.repo.name, latest.id)
                     if latest is not None else {})
        # what the store has of this mirror, read while the indices are fetched
        known = asyncio.create_task(self.store.shas_with_prefix(self._prefix))
        try:
            if self.mirror.format == "apt":
                manifest, packages = await self._apt(published)
            else:
                manifest, packages = await self._rpm(published)
            if manifest is None:
                self.result.unchanged = True
                self.result.snapshot = latest
                self.result.seconds = time.monotonic() - t0
                return self.result
            entries = await known
        finally:
            if not known.done():  # unchanged, or failed: not needed
                known.cancel()
                await asyncio.gather(known, return_exceptions=True)
        if self.mirror.rewrites:
            packages = await asyncio.to_thread(self._select, packages, manifest)
            await self._packages(packages, entries)
            manifest = await self._rewrite(manifest, packages)
        else:
            await self._packages(packages, entries)
        changes: dict[str, FileRef | None] = dict(manifest)
        for path in published.keys() - manifest.keys():
            changes[path] = None
        # every blob the state names durable first (packages were, batch by batch)
        await asyncio.to_thread(self.store.sync_blobs, {ref[0] for ref in manifest.values()})
        snap = await self.snapshots.record(self.repo.name, changes, "mirror")
        await prepare_diff(self.store, changes)
        self.result.snapshot = snap or latest
        self.result.seconds = time.monotonic() - t0
        return self.result

    # -- apt -----------------------------------------------------------------

    async def _apt(self, published: dict[str, FileRef]
                   ) -> tuple[dict[str, FileRef] | None, list[Package]]:
        manifest: dict[str, FileRef] = {}
        wants: list[Want] = []
        aliases: dict[str, list[str]] = {}
        plain_wants: dict[str, tuple[int, Digest]] = {}
        unchanged = True
        releases: list[tuple[str, Path]] = []
        for suite in self.mirror.suites:
            base = f"dists/{suite}/"
            rel_paths, text_path = await self._apt_release(base)
            for p, ref in rel_paths.items():
                manifest[p] = ref
                if published.get(self._upstream_name(p)) != ref:
                    unchanged = False
            releases.append((base, text_path))
        if self.mirror.rewrites:
            settings = await self._settings_blob()
            if published.get("_upstream/settings.json") != settings:
                unchanged = False
        if unchanged and published:
            for _b, t in releases:
                t.unlink(missing_ok=True)
            return None, []
        for base, text_path in releases:
            try:
                rel = parse_release(text_path.read_text("utf-8", "replace"))
            finally:
                text_path.unlink(missing_ok=True)
            self._suites.append((base, rel))
            by_hash = str(rel.get("Acquire-By-Hash", "")).strip().lower() == "yes"
            entries = release_entries(rel)
            names = self._apt_index_names(entries.keys())
            if not published:  # a first sync: the Release says how big the lists are
                await self._expect(self._listed_bytes(names, entries))
            for name in names:
                size, digests = entries[name]
                path = base + name
                directory = path.rsplit("/", 1)[0]
                sha = next((d for d in digests if d.algo == "sha256"), None)
                aliases[path] = [f"{directory}/by-hash/{BY_HASH_DIR[d.algo]}/{d.hexdigest}"
                                 for d in digests]
                if _stem(name) != name and not self._fetches(name, entries):
                    continue  # not a compression of this index that the mirror keeps
                if _stem(name) == name and self._has_compressed(name, entries):
                    plain_wants[path] = (size, sha or digests[0])  # derived locally
                    continue
                fetch = (f"{directory}/by-hash/SHA256/{sha.hexdigest}"
                         if by_hash and sha is not None else None)
                wants.append(Want(path, size, sha or digests[0], fetch))
        refs = await self._metadata(wants)
        refs.update(await asyncio.to_thread(self._derive_plain, refs, plain_wants))
        manifest.update(refs)
        for path, names in aliases.items():  # by-hash copies are the same blob
            if path in refs:
                for alias in names:
                    manifest[alias] = refs[path]
        packages = await asyncio.to_thread(self._apt_packages, refs)
        return manifest, packages

    @staticmethod
    def _listed_bytes(names: Iterable[str], entries: Mapping[str, tuple[int, object]]) -> int:
        """The uncompressed size of the package lists among `names`, as the
        Release gives it (or guessed from a compressed one's)."""
        sizes: dict[str, int] = {}
        for n in names:
            stem = _stem(n)
            if stem.rsplit("/", 1)[-1] == "Packages":
                size = entries[n][0] * (1 if stem == n else 4)
                sizes[stem] = max(sizes.get(stem, 0), size)
        return sum(sizes.values())

    @staticmethod
    def _has_compressed(stem: str, entries: Mapping[str, object]) -> bool:
        return any(stem + c in entries for c in PREFERRED)

    def _fetches(self, name: str, entries: Mapping[str, object]) -> bool:
        """Whether the sync fetches `name`, a compressed form of an index: one
        of the mirror's `index_compressions`, or if the Release lists none of
        those for this index, the smallest kind it lists."""
        stem = _stem(name)
        kept = ["." + c for c in self.mirror.index_compressions]
        if name[len(stem):] in kept:
            return True
        if any(stem + c in entries for c in kept):
            return False
        return name == next(stem + c for c in PREFERRED if stem + c in entries)

    @staticmethod
    def _to_read(paths: Iterable[str]) -> dict[str, str]:
        """For each index among `paths`, the form of it to read (READ_ORDER)."""
        out: dict[str, str] = {}
        for path in sorted(paths, key=read_rank):
            out.setdefault(_stem(path), path)
        return out

    def _derive_plain(self, refs: dict[str, FileRef],
                      plain_wants: dict[str, tuple[int, Digest]]) -> dict[str, FileRef]:
        """Uncompressed indices, made from the compressed ones fetched, kept only
        when they match the size and hash the Release gives for them."""
        out: dict[str, FileRef] = {}
        for path, (size, digest) in plain_wants.items():
            src = next((path + c for c in READ_ORDER[1:] if path + c in refs), None)
            if src is None:
                continue
            sha = hashlib.sha256()
            h = sha if digest.algo == "sha256" else hashlib.new(digest.algo)
            plain = self._plain_copy(refs[src][0], src, (sha,) if h is sha else (sha, h))
            if plain.stat().st_size != size or h.hexdigest() != digest.hexdigest:
                log.warning("%s: decompressed %s does not match the Release; not served",
                            self.repo.name, src)
                plain.unlink(missing_ok=True)
                continue
            self.store._place(plain, sha.hexdigest(), True)
            out[path] = (sha.hexdigest(), size)
        return out

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
            stem = _stem(base)
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
        sig = await self._check_detached(base + "Release", temp)
        if sig is not None:
            out[base + "Release.gpg"] = sig
        out[base + "Release"] = await self._keep(temp, release)
        return out, plain

    async def _check_detached(self, path: str, temp: Path) -> FileRef | None:
        """Fetch the detached signature of `path` (already in `temp`) and check it
        with the keyring; its blob, or None for an unsigned repository."""
        found = classify(path)
        sig_path = found[0].signature_of(path) if found else None
        if sig_path is None:
            raise VerificationError(f"{path}: no detached signature is known for it")
        try:
            sig = await self._get_bytes(sig_path)
        except NotFound as e:
            if self.keyring is not None:
                raise VerificationError(f"{self.repo.name}: {path} has no signature "
                                        f"({sig_path}): nothing to check it with") from e
            return None
        sig_temp = await self._temp(sig)
        if self.keyring is not None:
            await asyncio.to_thread(openpgp.verify_detached, self.keyring, sig_temp, temp)
        return await self._keep(sig_temp, sig)

    def _apt_packages(self, refs: dict[str, FileRef]) -> list[Package]:
        backend = AptBackend()
        seen: dict[str, Package] = {}
        lists = self._to_read(p for p in refs if backend.is_package_index(p) or "/Sources" in p)
        for stem in sorted(lists):
            path = lists[stem]
            blob = self.store.blob_path(refs[path][0])
            if "/Sources" in path:
                from pkgdepot.formats.apt import archive_root, sources_vouches

                for v in sources_vouches(archive_root("x/" + path)[2:], blob,
                                         path.rsplit("/", 1)[-1]):
                    seen.setdefault(v.key, Package(v.key, "", "source", v.key, v.size, v.digest))
                continue
            listed = list(backend.packages(path, blob))
            for p in listed:
                seen.setdefault(p.location, p)
            self._keep_listing(refs[path][0], listed)
        return list(seen.values())

    def _keep_listing(self, sha256: str, packages: list[Package]) -> None:
        """The package list of an index just read, kept for `snapshot diff`
        (which `prepare_diff` would otherwise read the index again for)."""
        try:
            keep_listing(self.store, sha256, ((p.name, p.arch, p.version) for p in packages))
        except (PkgdepotError, OSError) as e:
            log.warning("package list of index %s not kept: %s", sha256, e)

    # -- rpm -----------------------------------------------------------------

    async def _rpm(self, published: dict[str, FileRef]
                   ) -> tuple[dict[str, FileRef] | None, list[Package]]:
        repomd = await self._get_bytes("repodata/repomd.xml")
        manifest: dict[str, FileRef] = {}
        temp = await self._temp(repomd)
        sig = await self._check_detached("repodata/repomd.xml", temp)
        if sig is not None:
            manifest["repodata/repomd.xml.asc"] = sig
        data = await asyncio.to_thread(parse_repomd, temp)
        manifest["repodata/repomd.xml"] = await self._keep(temp, repomd)
        same = published.get(self._upstream_name("repodata/repomd.xml")) == manifest[
            "repodata/repomd.xml"]
        if self.mirror.rewrites:
            same = same and published.get("_upstream/settings.json") == (
                await self._settings_blob())
        if same:
            return None, []
        try:
            key = await self._get_bytes("repodata/repomd.xml.key")
            manifest["repodata/repomd.xml.key"] = await self._keep(await self._temp(key), key)
        except NotFound:
            pass
        if not published:  # a first sync: repomd.xml says how big the lists are
            await self._expect(sum((size or 0) * 5 for typ, _h, size, _d in data
                                   if typ == "primary"))
        wants = [Want(href, size, digest) for _typ, href, size, digest in data]
        refs = await self._metadata(wants)
        manifest.update(refs)
        backend = RpmBackend()

        def read() -> list[Package]:
            out: list[Package] = []
            for typ, href, _s, _d in data:
                if typ == "primary":
                    listed = list(backend.packages(href, self.store.blob_path(refs[href][0])))
                    self._keep_listing(refs[href][0], listed)
                    out.extend(listed)
            return out

        return manifest, await asyncio.to_thread(read)

    # -- filtered mirrors: the depot writes and signs the metadata -------------

    def _upstream_name(self, path: str) -> str:
        """Where the published manifest keeps upstream's own release file: under
        its own path, or for a rewritten mirror under _upstream/."""
        return f"_upstream/{path}" if self.mirror.rewrites else path

    async def _settings_blob(self) -> FileRef:
        m = self.mirror
        data = json.dumps({"filter": list(m.filter), "with_deps": m.filter_with_deps,
                           "keep_versions": m.keep_versions, "archs": list(m.architectures),
                           "components": list(m.components)}, sort_keys=True).encode()
        return (await self.store.put_bytes(data), len(data))

    def _plain_indexes(self, manifest: dict[str, FileRef], arch: str) -> list[Path]:
        """Uncompressed package indices for one architecture (temporary files)."""
        paths = [p for p in manifest if not p.startswith("_upstream/") and "/by-hash/" not in p]
        if self.mirror.format == "apt":
            backend = AptBackend()
            paths = sorted(self._to_read(
                p for p in paths if backend.is_package_index(p)
                and (f"/binary-{arch}/" in p or "/binary-all/" in p)).values())
        else:
            paths = sorted(p for p in paths if "primary.xml" in p)
        return [self._plain_copy(manifest[p][0], p) for p in paths]

    def _select(self, packages: list[Package], manifest: dict[str, FileRef]) -> list[Package]:
        m = self.mirror
        backend: Backend = AptBackend() if m.format == "apt" else RpmBackend()
        chosen = packages
        if m.filter:
            wanted: set[tuple[str, str, str]] = set()
            archs = m.architectures if m.format == "apt" else ("x86_64",)
            for arch in archs:
                files = self._plain_indexes(manifest, arch)
                try:
                    sel, warnings = closure("deb" if m.format == "apt" else "rpm", files,
                                            m.filter, arch, m.filter_with_deps)
                finally:
                    for f in files:
                        f.unlink(missing_ok=True)
                for w in warnings:
                    log.warning("%s: %s", self.repo.name, w)
                    self.result.notes.append(w)
                wanted |= sel
            names = {(n, a) for n, _v, a in wanted}
            chosen = [p for p in chosen if (p.name, p.version, p.arch) in wanted
                      or (m.format == "rpm" and (p.name, p.arch) in names
                          and _rpm_evr_match(p.version, wanted, p.name, p.arch))]
        if m.keep_versions is not None:
            by_name: dict[tuple[str, str], list[Package]] = {}
            for p in chosen:
                by_name.setdefault((p.name, p.arch), []).append(p)
            chosen = []
            for group in by_name.values():
                group.sort(key=functools.cmp_to_key(
                    lambda a, b: backend.compare_versions(a.version, b.version)), reverse=True)
                chosen.extend(group[: m.keep_versions])
        return chosen

    async def _rewrite(self, upstream: dict[str, FileRef],
                       packages: list[Package]) -> dict[str, FileRef]:
        manifest: dict[str, FileRef] = {}
        for path, ref in upstream.items():
            if path.endswith(("InRelease", "Release", "Release.gpg", "repomd.xml",
                              "repomd.xml.asc")):
                manifest[f"_upstream/{path}"] = ref
        manifest["_upstream/settings.json"] = await self._settings_blob()
        keep = {p.location for p in packages}
        signer = SigningKey(self.store.root)
        if self.mirror.format == "apt":
            for base, rel in self._suites:
                files = await asyncio.to_thread(self._apt_indices, base, upstream, keep)
                snapshots_url = (f"{self.config.public_url.rstrip('/')}/snapshot/"
                                 f"{self.repo.name}/@SNAPSHOTID@/"
                                 if self.config.public_url else None)
                release = _release_text(rel, files, self.mirror, snapshots_url)
                inline, detached = await asyncio.to_thread(signer.sign, release)
                for name, data in [*files.items(), ("Release", release), ("InRelease", inline),
                                   ("Release.gpg", detached)]:
                    manifest[base + name] = (await self.store.put_bytes(data), len(data))
        else:
            files = await asyncio.to_thread(self._createrepo, packages, signer)
            for name, data in files.items():
                manifest[name] = (await self.store.put_bytes(data), len(data))
        return manifest

    def _apt_indices(self, base: str, upstream: dict[str, FileRef],
                     keep: set[str]) -> dict[str, bytes]:
        import apt_pkg

        files: dict[str, bytes] = {}
        lists: list[str] = []
        for path in sorted(upstream):
            if not path.startswith(base) or "/by-hash/" in path:
                continue
            name = path[len(base):]
            if name in ("InRelease", "Release", "Release.gpg"):
                continue
            if _stem(name).endswith("/Packages"):
                lists.append(path)
                continue
            with open(self.store.blob_path(upstream[path][0]), "rb") as f:
                files[name] = f.read()  # translations etc.: unchanged
        for full_stem, path in sorted(self._to_read(lists).items()):
            stem = full_stem[len(base):]
            plain = self._plain_copy(upstream[path][0], path)
            try:
                parts = []
                with open(plain, "rb") as f:
                    for sec in apt_pkg.TagFile(f):
                        if sec.get("Filename", "") in keep:
                            parts.append(str(sec).rstrip("\n") + "\n")
                text = "\n".join(parts).encode()
            finally:
                plain.unlink(missing_ok=True)
            files[stem] = text
            files[stem + ".xz"] = lzma.compress(text)
            files[stem + ".gz"] = gzip.compress(text, mtime=0)
        return files

    def _plain_copy(self, sha: str, name: str, hashes: Sequence[Hash] = ()) -> Path:
        """A decompressed temporary copy of the blob `sha` (an index called
        `name`), fed to `hashes` on the way."""
        return decompress_to(self.store.blob_path(sha), name, self.store.tmp, hashes)

    def _createrepo(self, packages: list[Package], signer: SigningKey) -> dict[str, bytes]:
        """rpm-md metadata for the kept packages, written by createrepo_c from
        the packages themselves, signed with the depot's key."""
        if shutil.which("createrepo_c") is None:
            raise SyncError("createrepo_c is not installed (needed to filter rpm mirrors)",
                            hint="apt-get install createrepo-c")
        work = Path(tempfile.mkdtemp(prefix="repo-", dir=self.store.tmp))
        try:
            for p in packages:
                entry_path = self.store.blob_path(self._entry_sha(p))
                dest = work / p.location
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.link(entry_path, dest)
            proc = subprocess.run(["createrepo_c", "--no-database", "--simple-md-filenames",
                                   "--checksum", "sha256", str(work)],
                                  capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise SyncError(f"createrepo_c failed: {proc.stderr.strip()[-500:]}")
            out: dict[str, bytes] = {}
            for f in (work / "repodata").iterdir():
                out[f"repodata/{f.name}"] = f.read_bytes()
            out["repodata/repomd.xml.asc"] = signer.detach_sign(out["repodata/repomd.xml"])
            out["repodata/repomd.xml.key"] = signer.public_key()
            return out
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _entry_sha(self, p: Package) -> str:
        sha = self._kept.get(p.location)
        if sha is None:
            raise SyncError(f"{p.location}: not in the store after download")
        return sha

    # -- downloads -----------------------------------------------------------

    async def _metadata(self, wants: list[Want]) -> dict[str, FileRef]:
        """Index files: reuse a blob we already have with the right sha256, else
        download and verify."""
        out: dict[str, FileRef] = {}

        async def one(w: Want) -> None:
            if w.digest is not None and w.digest.algo == "sha256" and w.size is not None \
                    and is_blob(self.store.blob_path(w.digest.hexdigest)):
                out[w.path] = (w.digest.hexdigest, w.size)
                return
            sha, size = await self._downloads.download(w)
            out[w.path] = (sha, size)

        try:
            await self._gather(wants, one, "metadata")
        finally:
            await self._downloads.placer.drain()
        return out

    def _processes(self, files: int) -> int:
        """How many processes download `files` files (`mirror.processes`)."""
        if self.mirror.concurrency < 2 or files < 2:
            return 1
        return self.mirror.processes or (
            2 if files >= SPLIT_AT and len(os.sched_getaffinity(0)) >= 2 else 1)

    async def _expect(self, index_bytes: int) -> None:
        """Package lists of `index_bytes` (uncompressed) are coming: if they
        likely list enough files for a second process, start it now, so that
        it has loaded its modules (a third of a second) by the time the lists
        are read and the downloads start."""
        if self._early_helper is None and self._forked is None and \
                self._processes(index_bytes // STANZA_BYTES) == 2:
            self._early_helper = await _Helper.spawn(self.repo.name)

    @property
    def _prefix(self) -> str:
        """The catalog keys of this mirror's packages start with this."""
        return repo_key(self.repo.name)

    async def _packages(self, packages: list[Package], known: dict[str, str]) -> None:
        """Download what `packages` lists and the store lacks (`known`: key ->
        sha256 of the catalog's entries under `_prefix`)."""
        self.result.packages_total = len(packages)
        prefix = self._prefix
        todo: list[Want] = []
        existing: list[Entry] = []
        now = time.time()
        for p in packages:
            key = prefix + p.location
            sha = known.get(key)
            if sha is not None and (p.digest is None or p.digest.algo != "sha256"
                                    or p.digest.hexdigest == sha):
                self.result.packages_reused += 1
                self._kept[p.location] = sha
                continue
            if p.digest is not None and p.digest.algo == "sha256" and p.size is not None \
                    and is_blob(self.store.blob_path(p.digest.hexdigest)):
                # verified and kept by an earlier (interrupted) sync, or shared
                existing.append(Entry(key, p.digest.hexdigest, p.size, now, now))
                self.result.packages_reused += 1
                self._kept[p.location] = p.digest.hexdigest
                continue
            todo.append(Want(p.location, p.size, p.digest))
        if existing:
            await self.store.commit_entries(existing, refresh=True)
        total = sum(w.size or 0 for w in todo)
        if not todo:
            return
        batch: list[Entry] = []

        async def flush() -> None:
            entries, batch[:] = list(batch), []
            await self._downloads.placer.drain()
            if entries:
                # the batch made durable (a few files one by one, many by one
                # sync of the file system), then one transaction: a blob is
                # durable before the catalog names it
                await asyncio.to_thread(self.store.sync_blobs, [e.sha256 for e in entries])
                await self.store.commit_entries(entries)

        # Many files: a second process takes a share of the downloads, so that
        # the sync uses two cores (one event loop spends about half a
        # millisecond of CPU on each small file). Both take files from one
        # queue, the helper a few at a time, so that they finish together.
        concurrency = self.mirror.concurrency
        helping = self._processes(len(todo)) == 2
        early, self._early_helper = self._early_helper, None
        if early is not None and not helping:
            await _Helper.stop(early)
            early = None
        if self._forked is not None and helping and early is None:
            early = await self._forked.child()
        queue = collections.deque(todo)
        errors: list[BaseException] = []

        async def done(path: str, sha: str, size: int) -> None:
            self._kept[path] = sha
            t = time.time()
            batch.append(Entry(prefix + path, sha, size, t, t))
            if len(batch) >= 500:
                await flush()

        with Progress(f"{self.repo.name}: {len(todo)} packages", total) as bar:
            async def worker() -> None:
                while queue:
                    w = queue.popleft()
                    try:
                        sha, size = await self._downloads.download(w, bar=bar)
                    except Exception as e:
                        errors.append(e)
                        continue
                    await done(w.path, sha, size)

            # the sync's own process also records what both fetch
            ours = concurrency - concurrency // 2 if helping else concurrency
            helper = _Helper(self.config, self.repo.name, queue, concurrency - ours, bar, done,
                             self.result)
            jobs = [worker() for _ in range(ours)]
            if helping:
                jobs.append(helper.run(early))
            await asyncio.gather(*jobs)
            if helper.unfinished:  # the helper failed: its files are done here
                log.warning("%s: the download helper process stopped; %d of its files are "
                            "fetched by the sync itself", self.repo.name, len(helper.unfinished))
                queue.extend(helper.unfinished)
                await asyncio.gather(*(worker() for _ in range(concurrency)))
            await flush()
        errors += helper.errors
        if errors:
            for e in errors[:5]:
                log.error("%s", e)
            raise SyncError(f"{self.repo.name}: {len(errors)} of {len(todo)} packages failed "
                            f"(first: {errors[0]}); nothing was published",
                            hint="run the sync again: what was verified is kept and not "
                                 "downloaded again")

    async def _gather(self, wants: list[Want], fn: Callable[[Want], Awaitable[None]],
                      what: str) -> None:
        sem = asyncio.Semaphore(self.mirror.concurrency)

        async def guarded(w: Want) -> None:
            async with sem:
                await fn(w)

        results = await asyncio.gather(*(guarded(w) for w in wants), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise SyncError(f"{self.repo.name}: {len(errors)} {what} file(s) failed "
                            f"(first: {errors[0]}); nothing was published")

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
                return await up.body(limit)
            except UpstreamError as e:
                errors.append(e.message)  # cut or too large: the next upstream
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


#: a sync with at least this many files to download shares them with a helper process
SPLIT_AT = 1000
#: the least an index says of a package: how a count is guessed from a size
STANZA_BYTES = 300


class _Child(Protocol):
    """What `_Helper` uses of its process: asyncio's, or a `Forked` one."""

    @property
    def stdin(self) -> asyncio.StreamWriter | None: ...
    @property
    def stdout(self) -> asyncio.StreamReader | None: ...
    @property
    def returncode(self) -> int | None: ...
    def kill(self) -> None: ...
    async def wait(self) -> int: ...


class Forked:
    """A download helper forked before a sync's event loop starts, while the
    process has one thread: it has every module loaded already, so it is
    ready at once (a helper started later loads them first, a third of a
    second). It waits for its work on a pipe and ends if the pipe closes
    unused (`discard`). A command line sync forks one; the server, whose
    threads forbid forking, starts one with `_Helper.spawn` instead."""

    def __init__(self) -> None:
        stdin_r, self._stdin = os.pipe()
        self._stdout, stdout_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:
            for fd in (stdin_r, self._stdin, self._stdout, stdout_w):
                os.close(fd)
            raise
        if pid == 0:  # the helper: never returns into the caller's code
            try:
                os.close(self._stdin)
                os.close(self._stdout)
                os.dup2(stdin_r, 0)
                os.dup2(stdout_w, 1)
                helper_entry()
            finally:
                os._exit(1)
        os.close(stdin_r)
        os.close(stdout_w)
        self.pid = pid
        self._used = False

    @classmethod
    def for_sync(cls, config: Config, name: str) -> Forked | None:
        """A forked helper for the first sync of the mirror `name`, if it may
        use a second process and forking is safe (this process has no other
        thread). Later syncs fetch what changed, rarely enough files for a
        second process (one then starts by exec): forking costs them 20 ms."""
        import threading

        repo = config.repos.get(name)
        if repo is None or repo.mirror is None or repo.mirror.processes == 1 \
                or repo.mirror.concurrency < 2 or len(os.sched_getaffinity(0)) < 2 \
                or threading.active_count() > 1 or has_snapshot(FsStore(config.data_dir), name):
            return None
        try:
            return cls()
        except OSError as e:  # out of processes or memory: the sync starts one later
            log.warning("%s: no download helper forked: %s", name, e)
            return None

    async def child(self) -> _Child | None:
        """The helper as a process `_Helper` can talk to (once)."""
        if self._used:
            return None
        self._used = True
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20, loop=loop)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
                                     os.fdopen(self._stdout, "rb", buffering=0))
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.streams.FlowControlMixin(loop=loop),
            os.fdopen(self._stdin, "wb", buffering=0))
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        return _ForkedChild(self.pid, writer, reader)

    def discard(self) -> None:
        """Not used (or used up): close its pipes, so that it ends, and reap it."""
        if not self._used:
            self._used = True
            os.close(self._stdin)
            os.close(self._stdout)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)


class _ForkedChild:
    def __init__(self, pid: int, stdin: asyncio.StreamWriter,
                 stdout: asyncio.StreamReader) -> None:
        self.pid, self.stdin, self.stdout = pid, stdin, stdout
        self.returncode: int | None = None

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    async def wait(self) -> int:
        if self.returncode is None:
            _pid, status = await asyncio.to_thread(os.waitpid, self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
            self.stdin.close()
        return self.returncode


class _Helper:
    """A second process for part of a sync's downloads. It downloads,
    verifies and places files in the store as the sync does (it never touches
    the catalog). Its stdin: the pickled arguments (after their length, 8
    bytes), then one JSON array a line: ["W", id, path, size, algo, digest,
    fetch_path]... files to fetch, ["Z"] no more. Its stdout: ["R", n] asks
    for up to n more files, ["P", bytes] progress, ["K", [id, sha256, size]...]
    placed, ["E", id, why] failed, ["X", why] gave up, ["D"] done. A file
    counts only once placed; the sync syncs the file system before it
    records any. Files go out a batch at a time, smaller as the queue runs
    out, so that both processes finish together."""

    def __init__(self, config: Config, name: str, queue: collections.deque[Want],
                 concurrency: int, bar: Advancing,
                 done: Callable[[str, str, int], Awaitable[None]], result: SyncResult) -> None:
        self.config, self.name, self.queue = config, name, queue
        self.concurrency = max(1, concurrency)
        self.bar, self.done, self.result = bar, done, result
        self.errors: list[BaseException] = []
        #: files it was given and did not finish (placed or failed), if it died
        self.unfinished: list[Want] = []

    @staticmethod
    async def spawn(name: str) -> _Child | None:
        """Start a helper process; it loads its modules, then waits for its
        arguments on stdin (or exits when stdin closes). None if it cannot start."""
        try:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from pkgdepot.mirror import helper_entry; helper_entry()",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20)
        except OSError as e:
            log.warning("%s: no download helper process: %s", name, e)
            return None

    @staticmethod
    async def stop(proc: _Child) -> None:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    async def run(self, proc: _Child | None = None) -> None:
        """Share the queue with a helper process: `proc`, started earlier by
        `spawn`, or a new one."""
        given: dict[int, Want] = {}
        ids = iter(range(1 << 62))
        ended = False
        if proc is None:
            proc = await self.spawn(self.name)
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        stdin = proc.stdin

        def feed(n: int) -> None:
            nonlocal ended
            n = min(n, max(self.concurrency, len(self.queue) // 4))
            files = []
            while n > 0 and self.queue:
                w, i = self.queue.pop(), next(ids)
                given[i] = w
                digest = w.digest
                files.append([i, w.path, w.size, digest.algo if digest else None,
                              digest.hexdigest if digest else None, w.fetch_path])
                n -= 1
            out = [["W", *files]] if files else []
            if not self.queue and not ended:
                out.append(["Z"])
                ended = True
            if out and not stdin.is_closing():
                stdin.write(b"".join(json.dumps(x).encode() + b"\n" for x in out))

        # What the helper placed is recorded by a task of its own: recording
        # waits for syncs of the file system, and meanwhile the helper's
        # requests for more files must still be answered.
        placed: asyncio.Queue[tuple[str, str, int] | None] = asyncio.Queue()

        async def record() -> None:
            while (item := await placed.get()) is not None:
                await self.done(*item)

        recorder = asyncio.create_task(record())
        finished = False
        try:
            args = pickle.dumps((self.config, self.name, self.concurrency, os.getpid()))
            stdin.write(len(args).to_bytes(8, "big") + args)
            async for line in proc.stdout:
                msg = json.loads(line)
                kind = msg[0]
                if kind == "P":
                    self.bar.advance(int(msg[1]))
                elif kind == "R":
                    feed(int(msg[1]))
                elif kind == "K":
                    for i, sha, size in msg[1:]:
                        w = given.pop(i)
                        self.result.files_downloaded += 1
                        self.result.helper_files += 1
                        self.result.bytes_downloaded += int(size)
                        placed.put_nowait((w.path, sha, int(size)))
                elif kind == "E" and msg[1] in given:
                    w = given.pop(msg[1])
                    self.errors.append(SyncError(f"{w.path}: {msg[2]}"))
                elif kind == "X":
                    self.errors.append(SyncError(str(msg[1])))
                elif kind == "D":
                    finished = True
            await proc.wait()
        except (OSError, ValueError, KeyError) as e:  # a broken pipe, or garbled output
            log.warning("%s: the download helper process failed: %s", self.name, e)
        finally:
            await self.stop(proc)
            placed.put_nowait(None)
            await recorder  # raises what recording raised
        if not finished and given:
            self.unfinished = list(given.values())


class _Ticker:
    """Progress of a helper process, sent to its parent at most ten times a second."""

    def __init__(self, emit: Callable[..., None]) -> None:
        self.emit, self.bytes, self.at = emit, 0, time.monotonic()

    def advance(self, n: int) -> None:
        self.bytes += n
        if time.monotonic() - self.at > 0.1:
            self.flush()

    def flush(self) -> None:
        if self.bytes:
            self.emit("P", self.bytes)
        self.bytes, self.at = 0, time.monotonic()


def helper_entry() -> None:
    """A sync's download helper (`_Helper`)."""
    size = int.from_bytes(_read_exactly(0, 8), "big")
    config, name, concurrency, parent = pickle.loads(_read_exactly(0, size))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sync decides, and stops us
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s sync helper: %(message)s")
    code = asyncio.run(_helper_main(config, name, concurrency, parent))
    logging.shutdown()
    os._exit(code)  # without the interpreter's teardown, which the sync would wait for


def _read_exactly(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise SystemExit(1)  # the sync went away
        buf += chunk
    return buf


async def _helper_main(config: Config, name: str, concurrency: int, parent: int) -> int:
    out = sys.stdout.buffer

    def emit(*msg: object) -> None:
        out.write(json.dumps(msg).encode() + b"\n")
        out.flush()

    loop = asyncio.get_running_loop()

    def watch() -> None:  # the sync went away (even by SIGKILL): so do we
        if os.getppid() != parent:
            os._exit(1)
        loop.call_later(0.5, watch)

    watch()
    work: asyncio.Queue[tuple[int, Want] | None] = asyncio.Queue()
    reader = asyncio.StreamReader(limit=1 << 20)
    # the transport owns this file object (fd 0 stays open) until the loop ends
    stdin = open(0, "rb", buffering=0, closefd=False)  # noqa: SIM115
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)

    asked = False

    def ask() -> None:  # more files before these run out
        nonlocal asked
        if not asked and work.qsize() < 8 * concurrency:
            emit("R", 32 * concurrency)
            asked = True

    async def read() -> None:
        nonlocal asked
        async for line in reader:
            msg = json.loads(line)
            if msg[0] == "W":
                for i, path, size, algo, hexdigest, fetch_path in msg[1:]:
                    digest = Digest(algo, hexdigest) if algo else None
                    work.put_nowait((i, Want(path, size, digest, fetch_path)))
                asked = False
                ask()
            elif msg[0] == "Z":
                break
        asked = True  # nothing more to ask for
        for _ in range(concurrency):
            work.put_nowait(None)

    store = FsStore(config.data_dir)  # blobs only: the catalog is the sync's
    fetcher = Fetcher(config)
    await fetcher.start()
    downloads = Downloader(config.repos[name], store, fetcher, SyncResult(name, None))
    ticker = _Ticker(emit)
    placed: list[tuple[int, str, int]] = []

    async def report() -> None:
        ready = list(placed)
        placed.clear()
        await downloads.placer.written(downloads.placer.queued)  # those in `ready` too
        if ready:
            emit("K", *ready)
        ticker.flush()

    async def worker() -> None:
        while (item := await work.get()) is not None:
            ask()
            i, w = item
            try:
                sha, size = await downloads.download(w, ticker)
            except PkgdepotError as e:
                emit("E", i, e.message)
                continue
            placed.append((i, sha, size))
            if len(placed) >= 100:
                await report()

    ask()
    reading = asyncio.create_task(read())
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await report()
    except PkgdepotError as e:  # the store failed (a full disk): nothing more can go
        emit("X", e.message)
        return 1
    finally:
        reading.cancel()
        await fetcher.close()
    emit("D")
    return 0


async def run_sync(config: Config, name: str, forked: Forked | None = None) -> SyncResult:
    """Sync the mirror `name`; `forked`: a helper the caller forked for it
    (and discards afterwards)."""
    repo = config.repos.get(name)
    if repo is None:
        known = ", ".join(sorted(r.name for r in config.repos.values() if r.mirror)) or "none"
        raise SyncError(f"no repository named {name!r} in the configuration (mirrors: {known})")
    store = FsStore(config.data_dir).open(recover=False)
    fetcher = Fetcher(config)
    await fetcher.start()
    try:
        snapshots = await Snapshots(store).open()
        return await Mirror(config, repo, store, snapshots, fetcher, forked).sync()
    finally:
        await fetcher.close()
        await store.close()
