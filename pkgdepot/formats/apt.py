"""The apt (Debian, Ubuntu) repository format.

Paths: `dists/SUITE/{InRelease,Release,Release.gpg}` are signed release files;
`dists/SUITE/COMP/binary-ARCH/Packages*` and `source/Sources*` list packages;
`.../by-hash/ALGO/HEX` are immutable copies named by their hash; `pool/...`
holds packages and source files, immutable.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pkgdepot.errors import FormatError
from pkgdepot.formats import (
    HEX_RE,
    Digest,
    Kind,
    Package,
    PathInfo,
    Role,
    Vouch,
    digest_from_name,
    plain_index,
)

ECOSYSTEM = "apt"
_COMP = r"(\.(gz|xz|bz2|lzma|zst|lz4))?"
BY_HASH_RE = re.compile(r"(^|/)by-hash/(MD5Sum|SHA1|SHA256|SHA512)/([0-9a-fA-F]+)$")
INDEX_RE = re.compile(rf"(^|/)(Packages|Sources){_COMP}$")
OTHER_VOLATILE_RE = re.compile(
    rf"(^|/)(Contents-[A-Za-z0-9_-]+{_COMP}|Contents-(udeb-)?[a-z0-9-]+{_COMP}"
    rf"|Translation-[A-Za-z_@.0-9-]+{_COMP}|Index|Components-[a-z0-9-]+\.yml{_COMP}"
    rf"|icons-[0-9x@]+\.tar{_COMP}|Commands-[a-z0-9-]+{_COMP}|i18n/Index)$"
)
PACKAGE_RE = re.compile(r"\.(deb|udeb|ddeb)$")
SOURCE_RE = re.compile(
    r"(^|/)pool/.+\.(dsc|tar\.(gz|xz|bz2|zst|lzma)|diff\.gz|asc)$"
    r"|[^/]+_[^/]+\.(dsc|orig[^/]*\.tar\.[a-z0-9]+|debian\.tar\.[a-z0-9]+|diff\.gz)$"
)
ALGO_FIELDS = (("SHA256", "sha256"), ("SHA512", "sha512"), ("SHA1", "sha1"),
               ("MD5Sum", "md5"), ("MD5sum", "md5"))
BY_HASH_ALGO = {"MD5Sum": "md5", "SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


class AptBackend:
    name = ECOSYSTEM

    def classify(self, path: str) -> PathInfo | None:
        m = BY_HASH_RE.search(path)
        if m:
            digest = digest_from_name(BY_HASH_ALGO[m.group(2)], m.group(3))
            if digest is None:
                return None
            return PathInfo(ECOSYSTEM, Kind.IMMUTABLE, Role.BY_HASH, digest)
        base = _basename(path)
        if base == "InRelease":
            return PathInfo(ECOSYSTEM, Kind.VOLATILE, Role.RELEASE_INLINE)
        if base == "Release":
            return PathInfo(ECOSYSTEM, Kind.VOLATILE, Role.RELEASE)
        if base == "Release.gpg":
            return PathInfo(ECOSYSTEM, Kind.VOLATILE, Role.RELEASE_SIG)
        if INDEX_RE.search(path):
            return PathInfo(ECOSYSTEM, Kind.VOLATILE, Role.INDEX)
        if OTHER_VOLATILE_RE.search(path):
            return PathInfo(ECOSYSTEM, Kind.VOLATILE, Role.OTHER_VOLATILE)
        if PACKAGE_RE.search(base):
            return PathInfo(ECOSYSTEM, Kind.IMMUTABLE, Role.PACKAGE)
        if SOURCE_RE.search(path):
            return PathInfo(ECOSYSTEM, Kind.IMMUTABLE, Role.SOURCE)
        return None

    def signature_of(self, path: str) -> str | None:
        if _basename(path) == "Release":
            return path + ".gpg"
        return None

    def is_package_index(self, path: str) -> bool:
        return bool(re.search(rf"(^|/)Packages{_COMP}$", path)) and "/by-hash/" not in path

    def packages(self, path: str, content: Path) -> Iterator[Package]:
        yield from packages_in(content, _basename(path))

    def compare_versions(self, a: str, b: str) -> int:
        return int(_apt_pkg().version_compare(a, b))

    def scan(self, key: str, info: PathInfo, content: Path
             ) -> tuple[list[Vouch], list[tuple[str, str, str]] | None]:
        name = _basename(key)
        if info.role == Role.INDEX and name.startswith("Packages"):
            return scan_packages(archive_root(key), content, name)
        return list(self.vouches(key, info, content)), None

    def vouches(self, key: str, info: PathInfo, content: Path) -> Iterator[Vouch]:
        if info.role in (Role.RELEASE, Role.RELEASE_INLINE):
            yield from release_vouches(key, content)
        elif info.role == Role.INDEX:
            # A by-hash copy of an index has no name of its own: never parsed here.
            name = _basename(key)
            if name.startswith("Packages"):
                yield from packages_vouches(archive_root(key), content, name)
            elif name.startswith("Sources"):
                yield from sources_vouches(archive_root(key), content, name)


@functools.cache
def _apt_pkg() -> Any:
    import apt_pkg

    apt_pkg.init_system()
    return apt_pkg


def archive_root(key: str) -> str:
    """The key prefix that `Filename:` fields are relative to: the directory
    above `dists/`, or for a flat repository the index's own directory."""
    i = key.rfind("/dists/")
    if i >= 0:
        return key[: i + 1]
    return key.rsplit("/", 1)[0] + "/"


class Release:
    """The fields of a Release file, looked up as apt looks them up (names
    are case-insensitive); values are their text, continuation lines
    included."""

    def __init__(self, fields: dict[str, str]) -> None:
        self._fields = {k.lower(): v for k, v in fields.items()}

    def get(self, name: str, default: str = "") -> str:
        return self._fields.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields


SIGNED_BEGIN = "-----BEGIN PGP SIGNED MESSAGE-----"
SIGNATURE_BEGIN = "-----BEGIN PGP SIGNATURE-----"


def cleartext(text: str) -> str:
    """The signed text of an inline-signed file (OpenPGP's cleartext
    framework: armor headers, a blank line, dash-escaped lines, then the
    signature), other text as it is. For reading fields only: whether the
    signature holds is gpgv's to say."""
    lines = text.lstrip("\r\n").split("\n")
    if not lines or lines[0].rstrip() != SIGNED_BEGIN:
        return text
    try:
        start = next(i for i, line in enumerate(lines) if not line.strip()) + 1
    except StopIteration:
        return ""
    body = []
    for line in lines[start:]:
        if line.rstrip() == SIGNATURE_BEGIN:
            break
        body.append(line[2:] if line.startswith("- ") else line)
    return "\n".join(body)


def parse_release(text: str) -> Release:
    """Parse (In)Release text with apt's own parser (python-apt); an inline
    signature's armor is stripped. (python-debian's deb822, which did this
    before, took 17-20 ms to import: a tenth of a small sync.)"""
    body = cleartext(text).lstrip("\r\n")
    if not body.strip():
        return Release({})
    if not body.endswith("\n"):
        body += "\n"
    try:
        section = _apt_pkg().TagSection(body)
        return Release({k: section[k] for k in section.keys()})  # noqa: SIM118 (not iterable)
    except (ValueError, SystemError, KeyError, UnicodeError) as e:
        raise FormatError(f"unparsable Release file: {e}") from e


BY_HASH_DIR = {"md5": "MD5Sum", "sha1": "SHA1", "sha256": "SHA256", "sha512": "SHA512"}


def release_entries(rel: Release) -> dict[str, tuple[int, list[Digest]]]:
    """name -> (size, digests, strongest first) from a Release's checksum
    fields (lines of HASH SIZE NAME)."""
    out: dict[str, tuple[int, list[Digest]]] = {}
    for fld, algo in ALGO_FIELDS:  # strongest first
        for line in rel.get(fld).splitlines():
            parts = line.split()
            if len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit()):
                continue
            hexd, size, name = parts[0].lower(), int(parts[1]), parts[2]
            if ".." in name.split("/") or name.startswith("/") or not HEX_RE.match(hexd):
                continue
            entry = out.setdefault(name, (size, []))
            if all(d.algo != algo for d in entry[1]):
                entry[1].append(Digest(algo, hexd))
    return out


def release_vouches(key: str, content: Path) -> Iterator[Vouch]:
    """The files a Release lists, with their strongest hash; and, for each hash,
    the by-hash copy apt may ask for instead (an alias of the named file)."""
    text = content.read_bytes().decode("utf-8", "replace")
    rel = parse_release(text)
    base = key.rsplit("/", 1)[0] + "/"
    for name, (size, digests) in release_entries(rel).items():
        canonical = base + name
        yield Vouch(canonical, size, digests[0])
        directory = canonical.rsplit("/", 1)[0]
        for d in digests:
            yield Vouch(f"{directory}/by-hash/{BY_HASH_DIR[d.algo]}/{d.hexdigest}", size, d,
                        canonical)


SOURCE_FIELDS = ("Directory", "Checksums-Sha256", "Checksums-Sha512", "Checksums-Sha1", "Files")


def _tagfile_sections(content: Path, name: str,
                      fields: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """Iterate deb822 paragraphs (only `fields`) fast with apt_pkg's TagFile,
    or portably with python-debian."""
    with plain_index(content, name) as plain:
        try:
            import apt_pkg
        except ImportError:  # pragma: no cover - python3-apt is installed by install.sh
            with open(plain, "rb") as f:
                from debian import deb822

                for p in deb822.Deb822.iter_paragraphs(f, use_apt_pkg=False):
                    yield dict(p)
            return
        with open(plain, "rb") as f:
            try:
                for s in apt_pkg.TagFile(f):
                    yield {k: v for k in fields if (v := s.get(k)) is not None}
            except (SystemError, UnicodeDecodeError) as e:  # garbage, or not UTF-8
                raise FormatError(f"unparsable index {name}: {e}") from e


def _safe_rel(path: str) -> bool:
    return bool(path) and not path.startswith("/") and (
        ".." not in path or ".." not in path.split("/"))


def packages_vouches(root: str, content: Path, name: str) -> Iterator[Vouch]:
    for p in packages_in(content, name):
        if p.digest is not None:
            yield Vouch(root + p.location, p.size, p.digest)


def packages_in(content: Path, name: str) -> Iterator[Package]:
    """The packages of a Packages index (stanzas with a name and a safe
    Filename), reading only the fields needed, in one pass with apt_pkg."""
    with plain_index(content, name) as plain, open(plain, "rb") as f:
        try:
            for s in _apt_pkg().TagFile(f):
                yield from _package(s.get)
        except (SystemError, UnicodeDecodeError) as e:  # garbage, or not UTF-8
            raise FormatError(f"unparsable index {name}: {e}") from e


def _package(get: Callable[[str], str | None]) -> Iterator[Package]:
    """The package of one stanza (read through its `get`), if it is one."""
    name, filename = get("Package"), get("Filename")
    if name is None or filename is None or not _safe_rel(filename):
        return
    digest = None
    for fld, algo in ALGO_FIELDS:
        value = get(fld)
        if value is not None:
            digest = Digest(algo, value.strip().lower())
            break
    try:
        size: int | None = int(get("Size") or "")
    except ValueError:
        size = None
    yield Package(name, get("Version") or "", get("Architecture") or "", filename, size, digest)


def scan_packages(root: str, content: Path, name: str
                  ) -> tuple[list[Vouch], list[tuple[str, str, str]]]:
    """What a Packages index vouches for and its (name, architecture,
    version) entries, in one pass that reads only the fields needed (the
    same stanzas as `packages_in`; for a large index, the Python per
    stanza is what costs)."""
    vouches: list[Vouch] = []
    entries: list[tuple[str, str, str]] = []
    add_vouch, add_entry = vouches.append, entries.append
    with plain_index(content, name) as plain, open(plain, "rb") as f:
        try:
            for s in _apt_pkg().TagFile(f):
                get = s.get
                pkg, filename = get("Package"), get("Filename")
                if pkg is None or filename is None or not _safe_rel(filename):
                    continue
                add_entry((pkg, get("Architecture") or "", get("Version") or ""))
                for fld, algo in ALGO_FIELDS:
                    value = get(fld)
                    if value is not None:
                        try:
                            size: int | None = int(get("Size") or "")
                        except ValueError:
                            size = None
                        add_vouch(Vouch(root + filename, size,
                                        Digest(algo, value.strip().lower())))
                        break
        except (SystemError, UnicodeDecodeError) as e:  # garbage, or not UTF-8
            raise FormatError(f"unparsable index {name}: {e}") from e
    return vouches, entries


def sources_vouches(root: str, content: Path, name: str) -> Iterator[Vouch]:
    fields = (("Checksums-Sha256", "sha256"), ("Checksums-Sha512", "sha512"),
              ("Checksums-Sha1", "sha1"), ("Files", "md5"))
    for sec in _tagfile_sections(content, name, SOURCE_FIELDS):
        directory = sec.get("Directory", "")
        if not _safe_rel(directory):
            continue
        for fld, algo in fields:
            if fld not in sec:
                continue
            for line in sec[fld].strip().splitlines():
                parts = line.split()
                if len(parts) != 3 or not _safe_rel(parts[2]) or "/" in parts[2]:
                    continue
                try:
                    size = int(parts[1])
                except ValueError:
                    continue
                yield Vouch(f"{root}{directory}/{parts[2]}", size, Digest(algo, parts[0].lower()))
            break
