"""libsolv resolution of template package lists (deb semantics here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkgdepot.build.resolve import Index, ResolveError, read_lock, resolve, write_lock

H = "0" * 64


def stanza(name: str, version: str, **fields: str) -> str:
    extra = "".join(f"{k.replace('_', '-')}: {v}\n" for k, v in fields.items())
    return (f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n{extra}"
            f"Filename: pool/{name}_{version}_amd64.deb\nSize: {size_of(name)}\n"
            f"SHA256: {H}\n\n")


def size_of(name: str) -> int:
    return 1000 + 7 * len(name)


@pytest.fixture
def index(tmp_path: Path) -> Index:
    p = tmp_path / "Packages"
    p.write_text(
        stanza("libc6", "2.36-9")
        + stanza("hello", "1.0", Depends="libc6 (>= 2.34)")
        + stanza("hello", "2.0", Depends="libc6 (>= 2.40)")
        + stanza("udev", "252", Depends="libc6")
        + stanza("fake-udev", "1", Provides="udev", Conflicts="udev")
        + stanza("needs-udev", "1", Depends="udev")
        + stanza("broken", "1", Depends="nonexistent")
        + stanza("a", "1", Conflicts="b")
        + stanza("b", "1"))
    return Index("http://depot.example/deb", p)


def names(locked: list[object]) -> dict[str, str]:
    return {p.name: p.version for p in locked}  # type: ignore[attr-defined]


def test_dependencies_and_versions(index: Index) -> None:
    got = resolve("deb", "amd64", [index], {"hello": None})
    # hello 2.0 needs a libc6 that does not exist: libsolv picks 1.0
    assert names(got) == {"hello": "1.0", "libc6": "2.36-9"}
    assert got[0].repo == "http://depot.example/deb"
    assert got[0].location.startswith("pool/") and got[0].sha256 == H


def test_pin(index: Index) -> None:
    with pytest.raises(ResolveError, match="hello"):
        resolve("deb", "amd64", [index], {"hello": "2.0"})
    assert names(resolve("deb", "amd64", [index], {"hello": "1.0"}))["hello"] == "1.0"


def test_replacement_stands_in(index: Index) -> None:
    got = names(resolve("deb", "amd64", [index], {"needs-udev": None},
                        replacements={"udev": "fake-udev"}))
    assert "fake-udev" in got and "udev" not in got


def test_unsatisfiable_explained(index: Index) -> None:
    with pytest.raises(ResolveError) as e:
        resolve("deb", "amd64", [index], {"broken": None})
    assert "nothing provides nonexistent needed by broken" in e.value.message
    with pytest.raises(ResolveError) as e:
        resolve("deb", "amd64", [index], {"a": None, "b": None})
    assert "conflict" in e.value.message
    with pytest.raises(ResolveError, match="no package in the repositories provides: nosuch"):
        resolve("deb", "amd64", [index], {"nosuch": None})


def test_lock_roundtrip(index: Index, tmp_path: Path) -> None:
    got = resolve("deb", "amd64", [index], {"hello": None})
    write_lock(tmp_path / "lock.json", got, {"template": "x"})
    again, meta = read_lock(tmp_path / "lock.json")
    assert again == got and meta == {"template": "x"}
    # each package's Size from the index (libsolv keeps none for deb repositories)
    assert {p.name: p.size for p in again} == {"hello": size_of("hello"),
                                               "libc6": size_of("libc6")}
