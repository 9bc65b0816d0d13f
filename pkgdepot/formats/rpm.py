"""The rpm-md repository format (dnf, yum, zypper).

`repodata/repomd.xml` (signed by `repomd.xml.asc`) lists the metadata files
with their checksums; with unique file names (`repodata/HEX-primary.xml.gz`)
those are immutable. `primary.xml` lists packages with their checksums.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pkgdepot.errors import FormatError
from pkgdepot.formats import (
    Digest,
    Kind,
    Package,
    PathInfo,
    Role,
    Vouch,
    digest_from_name,
    open_index,
)

ECOSYSTEM = "rpm"
CHECKSUM_NAMED_RE = re.compile(r"(^|/)repodata/([0-9a-f]{32,128})-[A-Za-z0-9_.+-]+$")
PLAIN_REPODATA_RE = re.compile(r"(^|/)repodata/[A-Za-z0-9_.+-]+$")
VOLATILE_NAMES = {"repomd.xml.key", "media", "content", "content.asc", "content.key",
                  ".treeinfo", "treeinfo", "metalink", "mirrorlist", "products"}
ALGOS = {"sha": "sha1", "sha1": "sha1", "sha256": "sha256", "sha512": "sha512", "md5": "md5",
         "sha224": "sha224", "sha384": "sha384"}
NS_REPO = "{http://linux.duke.edu/metadata/repo}"
NS_COMMON = "{http://linux.duke.edu/metadata/common}"
XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


class RpmBackend:
    name = ECOSYSTEM

    def classify(self, path: str) -> PathInfo | None:
        base = _basename(path)
        if base.endswith((".rpm", ".drpm")):
            return PathInfo(ECOSYSTEM, Kind.IMMUTABLE, Role.PACKAGE)
        if base == "repomd.xml" and "/repodata/" in f"/{path}":
            return PathInfo(ECOSYSTEM, Kind.VOLATILE, Role.REPOMD)
        if base == "repomd.xml.asc" and "/repodata/" in f"/{path}":
            return PathInfo(ECOSYSTEM, Kind.VOLATILE, Role.REPOMD_SIG)
        m = CHECKSUM_NAMED_RE.search(path)
        if m:
            digest = digest_from_name(None, m.group(2))
            if digest is not None:
                return PathInfo(ECOSYSTEM, Kind.IMMUTABLE, Role.CHECKSUM_NAMED, digest)
        if PLAIN_REPODATA_RE.search(path):
            role = Role.INDEX if base.startswith("primary.xml") else Role.OTHER_VOLATILE
            return PathInfo(ECOSYSTEM, Kind.VOLATILE, role)
        if base in VOLATILE_NAMES or path.endswith("media.1/media"):
            return PathInfo(ECOSYSTEM, Kind.VOLATILE, Role.OTHER_VOLATILE)
        return None

    def signature_of(self, path: str) -> str | None:
        if _basename(path) == "repomd.xml":
            return path + ".asc"
        return None

    def is_package_index(self, path: str) -> bool:
        return "/repodata/" in f"/{path}" and "primary.xml" in _basename(path)

    def packages(self, path: str, content: Path) -> Iterator[Package]:
        yield from primary_packages(content, _basename(path))

    def compare_versions(self, a: str, b: str) -> int:
        import rpm

        return int(rpm.labelCompare(_evr(a), _evr(b)))

    def scan(self, key: str, info: PathInfo, content: Path
             ) -> tuple[list[Vouch], list[tuple[str, str, str]] | None]:
        name = _basename(key)
        if info.role != Role.REPOMD and "primary.xml" in name:
            packages = list(primary_packages(content, name))
            root = repo_root(key)
            return ([Vouch(root + p.location, p.size, p.digest) for p in packages
                     if p.digest is not None], [(p.name, p.arch, p.version) for p in packages])
        return list(self.vouches(key, info, content)), None

    def vouches(self, key: str, info: PathInfo, content: Path) -> Iterator[Vouch]:
        name = _basename(key)
        if info.role == Role.REPOMD:
            yield from repomd_vouches(repo_root(key), content)
        elif "primary.xml" in name:
            yield from primary_vouches(repo_root(key), content, name)


def repo_root(key: str) -> str:
    i = key.rfind("repodata/")
    return key[:i] if i >= 0 else key.rsplit("/", 1)[0] + "/"


def _safe_href(href: str) -> bool:
    return (bool(href) and not href.startswith("/") and "://" not in href
            and ".." not in href.split("/"))


def _digest(el: object) -> Digest | None:
    typ = getattr(el, "get", lambda _k, _d=None: None)("type", "")
    text = (getattr(el, "text", "") or "").strip().lower()
    algo = ALGOS.get(str(typ).lower())
    if algo is None or not text:
        return None
    return Digest(algo, text)


def parse_repomd(content: Path) -> list[tuple[str, str, int | None, Digest]]:
    """(type, href, size, digest) for each <data> of repomd.xml."""
    from defusedxml import ElementTree as SafeET  # loaded when XML is read (5 ms)

    try:
        root = SafeET.parse(str(content)).getroot()
    except Exception as e:  # defusedxml raises on entities, ET on garbage
        raise FormatError(f"unparsable repomd.xml: {e}") from e
    out = []
    for data in root.iter(f"{NS_REPO}data"):
        loc = data.find(f"{NS_REPO}location")
        ck = data.find(f"{NS_REPO}checksum")
        if loc is None or ck is None:
            continue
        href = loc.get("href", "")
        digest = _digest(ck)
        if digest is None or not _safe_href(href) or loc.get(XML_BASE):
            continue
        size_el = data.find(f"{NS_REPO}size")
        try:
            size = int(size_el.text or "") if size_el is not None else None
        except ValueError:
            size = None
        out.append((data.get("type", ""), href, size, digest))
    return out


def repomd_vouches(root: str, content: Path) -> Iterator[Vouch]:
    for _typ, href, size, digest in parse_repomd(content):
        yield Vouch(root + href, size, digest)


def _evr(v: str) -> tuple[str, str, str]:
    epoch, _, rest = v.rpartition(":")
    version, _, release = rest.partition("-")
    return (epoch or "0", version, release)


def primary_vouches(root: str, content: Path, name: str) -> Iterator[Vouch]:
    for p in primary_packages(content, name):
        if p.digest is not None:
            yield Vouch(root + p.location, p.size, p.digest)


def primary_packages(content: Path, name: str) -> Iterator[Package]:
    from defusedxml import ElementTree as SafeET

    with open_index(content, name) as f:
        try:
            for _ev, el in SafeET.iterparse(f, events=("end",)):
                if el.tag != f"{NS_COMMON}package":
                    continue
                loc = el.find(f"{NS_COMMON}location")
                ck = el.find(f"{NS_COMMON}checksum")
                size_el = el.find(f"{NS_COMMON}size")
                ver = el.find(f"{NS_COMMON}version")
                href = loc.get("href", "") if loc is not None else ""
                if loc is not None and _safe_href(href) and not loc.get(XML_BASE):
                    size = None
                    if size_el is not None:
                        try:
                            size = int(size_el.get("package", ""))
                        except ValueError:
                            size = None
                    evr = ""
                    if ver is not None:
                        e, v, r = ver.get("epoch", "0"), ver.get("ver", ""), ver.get("rel", "")
                        evr = (f"{e}:" if e not in ("", "0") else "") + v + (f"-{r}" if r else "")
                    yield Package(el.findtext(f"{NS_COMMON}name", ""), evr,
                                  el.findtext(f"{NS_COMMON}arch", ""), href, size,
                                  _digest(ck) if ck is not None else None)
                el.clear()
        except FormatError:
            raise
        except Exception as e:
            raise FormatError(f"unparsable {name}: {e}") from e
