"""Configuration: defaults, validation errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkgdepot.cli import main
from pkgdepot.config import from_mapping, load
from pkgdepot.errors import ConfigError


def test_defaults() -> None:
    c = from_mapping({})
    assert (c.listen_host, c.listen_port) == ("0.0.0.0", 3142)
    assert c.repos == {}
    assert any(str(n) == "127.0.0.0/8" for n in c.allow_clients)
    assert (c.min_rate, c.min_rate_window) == (1024, 30.0)
    slow = from_mapping({"upstream": {"min_rate": "2K", "min_rate_window": 10}})
    assert (slow.min_rate, slow.min_rate_window) == (2048, 10.0)
    assert from_mapping({"upstream": {"min_rate": 0, "min_rate_window": 0}}).min_rate == 0
    mirror = {"upstreams": ["http://x.example/"], "mirror": {"suites": ["s"],
                                                             "allow_unsigned": True}}
    m = from_mapping({"repos": {"d": mirror}}).repos["d"].mirror
    assert m is not None and m.index_compressions == ("xz", "gz")
    mirror["mirror"]["index_compressions"] = ["gz", "xz", "gz"]  # type: ignore[index]
    m = from_mapping({"repos": {"d": mirror}}).repos["d"].mirror
    assert m is not None and m.index_compressions == ("gz", "xz")


@pytest.mark.parametrize(("doc", "message"), [
    ({"server": {"listen": "nonsense"}}, "server.listen"),
    ({"server": {"lisen": "x"}}, "server.lisen: unknown key"),
    ({"cache": {"revalidate_after": "10"}}, "cache.revalidate_after: expected a number"),
    ({"cache": {"revalidate_after": -1}}, "cache.revalidate_after: must not be negative"),
    ({"upstream": {"allow_networks": ["10.0.0.0/33"]}}, "upstream.allow_networks"),
    ({"upstream": {"min_rate": "fast"}}, "upstream.min_rate: expected a size"),
    ({"upstream": {"min_rate_window": 0.5}}, "upstream.min_rate_window: must be at least 1"),
    ({"nosuch": {}}, "nosuch: unknown section"),
    ({"repos": {"d": {}}}, "repos.d.upstreams: missing"),
    ({"repos": {"d": {"upstreams": ["ftp://x.example/"]}}}, "repos.d.upstreams"),
    ({"repos": {"d": {"upstreams": ["http://x.example/"], "key": 1}}}, "repos.d.key: unknown"),
    ({"repos": {"bad/name": {"upstreams": ["http://x.example/"]}}}, "repos.bad/name"),
    ({"repos": {"d": {"upstreams": ["http://x.example/"], "keyring": "/nonexistent/k.gpg"}}},
     "repos.d.keyring"),
    ({"repos": {"d": {"upstreams": ["http://x.example/"], "mirror": {
        "suites": ["s"], "allow_unsigned": True, "index_compressions": ["xz", "zip"]}}}},
     "repos.d.mirror.index_compressions: 'zip' is not a compression"),
    ({"repos": {"d": {"upstreams": ["http://x.example/"], "mirror": {
        "suites": ["s"], "allow_unsigned": True, "index_compressions": []}}}},
     "repos.d.mirror.index_compressions: needs at least one"),
])
def test_errors_name_the_key(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("/", ".")):
        from_mapping(doc)


def test_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[server\nlisten=1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "c.toml"
    good.write_text('[repos.debian]\nupstreams = ["http://mirror.example/debian"]\n')
    assert main(["check-config", "--config", str(good)]) == 0
    assert "debian: http://mirror.example/debian" in capsys.readouterr().out
    bad = tmp_path / "b.toml"
    bad.write_text('[cache]\nnegative_ttl = "x"\n')
    assert main(["check-config", "--config", str(bad)]) == 2
    assert "cache.negative_ttl" in capsys.readouterr().err


def test_help_explains(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "Acquire::http::Proxy" in out and "revalidate_after" in out


def test_readme_lists_every_key() -> None:
    from pkgdepot.config import keys_help

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert keys_help() in readme, "regenerate the README's key list: pkgdepot config-keys"


def test_a_relative_data_dir_is_made_absolute(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Taken from the current directory once, at load: gpgv and other
    subprocesses run in directories of their own."""
    cfg = tmp_path / "p.toml"
    cfg.write_text('[server]\ndata_dir = "rel/data"\n')
    monkeypatch.chdir(tmp_path)
    assert load(cfg).data_dir == tmp_path / "rel" / "data"


def test_the_data_dir_option_is_taken_like_the_config_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """--data-dir and server.data_dir mean the same: relative to the current
    directory, ~ for the home directory (also when the shell left it alone)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "p.toml"
    cfg.write_text('[server]\ndata_dir = "~/from-config"\n')
    assert load(cfg).data_dir == tmp_path / "home" / "from-config"
    for arg, want in (("~/opt", tmp_path / "home" / "opt"), ("rel", tmp_path / "rel")):
        assert main(["check-config", "--config", str(cfg), "--data-dir", arg]) == 0
        assert f"data in {want}," in capsys.readouterr().out
