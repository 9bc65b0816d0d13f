"""Template tree merge: replacement down the tree, list merging, removal, pins."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkgdepot.build.tree import TemplateError, load


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "templates"
    write(t, "config/minimal.list", "# everywhere\nbase-files\nbash\nudev\n")
    write(t, "config/build.toml", "top = true\n")
    write(t, "debian/config/minimal.list", "apt\nlibc-bin\n")
    write(t, "debian/config/default.list", "@minimal\nless\nvim-tiny\n")
    write(t, "debian/config/post-install", "#!/bin/sh\necho debian\n")
    write(t, "debian/config/overlay/etc/motd", "hello\n")
    write(t, "debian/12/config/build.toml", "version = 12\n")
    write(t, "debian/12/amd64/config/minimal.list", "udev-\nbash=5.2.15-2+b2\n")
    write(t, "debian/12/amd64/config/overlay/etc/motd", "amd64\n")
    (t / "debian/12/arm64").mkdir(parents=True)
    return t


def test_files_lower_in_the_tree_win(tree: Path) -> None:
    t = load(tree / "debian/12/amd64")
    assert (t.distro, t.version, t.arch) == ("debian", "12", "amd64")
    assert t.files["build.toml"] == (tree / "debian/12/config/build.toml").resolve()
    assert t.files["post-install"] == (tree / "debian/config/post-install").resolve()
    assert t.overlay["etc/motd"].read_text() == "amd64\n"


def test_lists_merge_with_removal_and_pins(tree: Path) -> None:
    t = load(tree / "debian/12/amd64")
    pkgs = t.packages("minimal")
    assert sorted(pkgs) == ["apt", "base-files", "bash", "libc-bin"]
    assert pkgs["bash"].pin == "5.2.15-2+b2"
    assert pkgs["bash"].origin.path.name == "minimal.list"
    assert pkgs["bash"].origin.line == 2
    assert "udev" in t.removed["minimal"]
    # another arch inherits the full list, udev included
    assert "udev" in load(tree / "debian/12/arm64").packages("minimal")


def test_sets_include_sets(tree: Path) -> None:
    t = load(tree / "debian/12/amd64")
    default = t.packages("default")
    assert {"less", "vim-tiny", "apt", "bash"} <= set(default) and "udev" not in default
    assert t.sets() == ["default", "minimal"]


def test_explain_names_origins(tree: Path) -> None:
    text = load(tree / "debian/12/amd64").explain("minimal")
    assert "bash=5.2.15-2+b2" in text and "debian/12/amd64/config/minimal.list:2" in text
    assert "udev-" in text and "packages (4):" in text


@pytest.mark.parametrize("line", ["bad name", "../etc", "x=ver sion", "-"])
def test_invalid_lines(tree: Path, line: str) -> None:
    write(tree, "debian/12/amd64/config/minimal.list", line + "\n")
    with pytest.raises(TemplateError):
        load(tree / "debian/12/amd64").packages("minimal")


def test_missing_set_and_loops(tree: Path) -> None:
    t = load(tree / "debian/12/amd64")
    with pytest.raises(TemplateError, match=r"no nosuch\.list"):
        t.packages("nosuch")
    write(tree, "config/a.list", "@b\n")
    write(tree, "config/b.list", "@a\n")
    with pytest.raises(TemplateError, match="loop"):
        load(tree / "debian/12/amd64").packages("a")


EXAMPLES = Path(__file__).resolve().parents[2] / "examples/templates"


@pytest.mark.parametrize("leaf", ["debian/12/amd64", "rocky/9/x86_64"])
def test_shipped_examples_explain(leaf: str) -> None:
    """The example trees in the repository load, and both sets merge."""
    from pkgdepot.build.builder import build_config

    t = load(EXAMPLES / leaf)
    assert {"minimal", "default"} <= set(t.sets())
    minimal, default = t.packages("minimal"), t.packages("default")
    assert minimal and set(minimal) < set(default)
    assert "packages (" in t.explain("default") and "build.toml" in t.explain("default")
    cfg = build_config(t, None, None)
    assert cfg.family == ("deb" if leaf.startswith("debian") else "rpm")
    assert cfg.repositories and t.overlay
    assert ("dpkg" if cfg.family == "deb" else "rpm") in minimal or cfg.include_required
