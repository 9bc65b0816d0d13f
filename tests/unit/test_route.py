"""The router: every accepted URL form, and every hostile form refused."""

from __future__ import annotations

import pytest

from pkgdepot.config import from_mapping
from pkgdepot.errors import BadRequest, Forbidden, NotFound
from pkgdepot.formats import Kind, Role
from pkgdepot.proxy.route import OwnPage, Router

CONFIG = from_mapping({
    "repos": {
        "debian": {"upstreams": ["http://mirror.example/debian", "https://b.example/debian"]},
        "fedora": {"upstreams": ["http://mirror.example/fedora/releases"]},
    }
})


@pytest.fixture
def router() -> Router:
    return Router(CONFIG)


def test_named_repo_with_failover(router: Router) -> None:
    r = router.route("/debian/dists/bookworm/InRelease")
    assert r is not None
    assert r.key == "repo/debian/dists/bookworm/InRelease"
    assert r.urls == ("http://mirror.example/debian/dists/bookworm/InRelease",
                      "https://b.example/debian/dists/bookworm/InRelease")
    assert r.kind is Kind.VOLATILE and r.info.role is Role.RELEASE_INLINE


def test_host_in_path(router: Router) -> None:
    r = router.route("/deb.example:8080/debian/pool/main/h/hello/hello_1.0_all.deb")
    assert r is not None
    assert r.key == "http/deb.example:8080/debian/pool/main/h/hello/hello_1.0_all.deb"
    assert r.urls == ("http://deb.example:8080/debian/pool/main/h/hello/hello_1.0_all.deb",)
    assert r.kind is Kind.IMMUTABLE


def test_absolute_form_maps_to_named_repo(router: Router) -> None:
    """A proxy request for a named repository's upstream shares its cache and failover."""
    r = router.route("http://mirror.example/debian/pool/main/h/hello/hello_1.0_all.deb")
    assert r is not None and r.repo is not None and r.repo.name == "debian"
    assert r.key == "repo/debian/pool/main/h/hello/hello_1.0_all.deb"
    assert len(r.urls) == 2


def test_absolute_form_other_host(router: Router) -> None:
    r = router.route("http://OTHER.example:80/ubuntu/dists/jammy/Release")
    assert r is not None and r.repo is None
    assert r.key == "http/other.example/ubuntu/dists/jammy/Release"
    assert r.urls == ("http://other.example/ubuntu/dists/jammy/Release",)


def test_percent_encoding_is_normalized(router: Router) -> None:
    """apt encodes ':' of epochs as %3a; the key is the decoded path, the upstream
    URL is encoded again."""
    r = router.route("/debian/pool/main/f/foo/foo_1%3a2.0_amd64.deb")
    assert r is not None
    assert r.key == "repo/debian/pool/main/f/foo/foo_1:2.0_amd64.deb"
    assert r.urls[0].endswith("/foo_1:2.0_amd64.deb")


def test_own_pages(router: Router) -> None:
    """The status page, metrics and /_pkgdepot/...: never a repository or a host."""
    assert router.route("/") == OwnPage("")
    assert router.route("/metrics") == OwnPage("metrics")
    assert router.route("/_pkgdepot/status.json") == OwnPage("_pkgdepot/status.json")
    assert router.route("/_pkgdepot/diff/debian/a/b") == OwnPage("_pkgdepot/diff/debian/a/b")
    with pytest.raises(BadRequest):
        router.route("/_pkgdepot/status.json?x=1")


@pytest.mark.parametrize("target", [
    "/debian/../../etc/passwd",
    "/debian/pool/%2e%2e/%2e%2e/etc/passwd",
    "/debian/pool/%2E%2E/x.deb",
    "/debian/pool/..%2fx.deb",
    "/debian/pool/%2fetc/x.deb",
    "/debian//pool/x.deb",
    "/debian/./pool/x.deb",
    "/debian/pool/x\\..\\y.deb",
    "/debian/pool/%5c..%5cx.deb",
    "/debian/pool/x%00.deb",
    "/debian/pool/x\x00.deb",
    "/debian/pool/x%0d%0aSet-Cookie:a.deb",
    "//etc/passwd",
    "etc/passwd",
    "http://user:pw@mirror.example/debian/pool/x.deb",
    "http://mirror.example/debian/../x.deb",
    "http://mirror.example/debian/pool/x.deb#frag",
    "/debian/pool/x.deb?q=1",
    "/debian/pool/%ff%fe.deb",
])
def test_hostile_paths_are_bad_requests(router: Router, target: str) -> None:
    with pytest.raises(BadRequest):
        router.route(target)


@pytest.mark.parametrize("target", [
    "/debian/etc/passwd",
    "/debian/pool/main/",
    "/mirror.example/cgi-bin/admin",
    "http://mirror.example/index.html",
])
def test_unknown_paths_are_refused(router: Router, target: str) -> None:
    with pytest.raises(Forbidden):
        router.route(target)


def test_unknown_paths_allowed_by_config() -> None:
    cfg = from_mapping({"cache": {"allow_unknown_paths": True}})
    r = Router(cfg).route("/mirror.example/some/file.txt")
    assert r is not None and r.kind is Kind.VOLATILE


def test_unknown_repo_name(router: Router) -> None:
    with pytest.raises(NotFound, match="no repository named 'nosuch'"):
        router.route("/nosuch/dists/x/InRelease")


def test_metalink_query_is_kept(router: Router) -> None:
    r = router.route("/mirror.example/metalink?repo=fedora-40&arch=x86_64")
    assert r is not None
    assert r.urls == ("http://mirror.example/metalink?repo=fedora-40&arch=x86_64",)
    assert r.key.endswith("?repo=fedora-40&arch=x86_64")


def test_host_form_of_a_named_upstream_shares_its_cache(router: Router) -> None:
    r = router.route("/mirror.example/debian/dists/bookworm/InRelease")
    assert r is not None and r.key == "repo/debian/dists/bookworm/InRelease"
