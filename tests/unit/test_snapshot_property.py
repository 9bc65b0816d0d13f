"""Property: whatever the sequence of syncs, tags, untags, prunes and garbage
collections, no blob referenced by a live snapshot is ever deleted, and no
live snapshot's view ever changes."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pkgdepot.snapshots import FileRef, Snapshots
from pkgdepot.store.fs import FsStore

PATHS = ["dists/s/InRelease", "dists/s/main/binary-amd64/Packages.xz",
         "dists/s/main/binary-amd64/Packages", "dists/t/InRelease"]

op = st.one_of(
    st.tuples(st.just("sync"), st.dictionaries(st.sampled_from(PATHS),
                                               st.one_of(st.none(), st.integers(0, 5)),
                                               min_size=1, max_size=4)),
    st.tuples(st.just("tag"), st.integers(0, 20), st.sampled_from(["a", "b", "prod"])),
    st.tuples(st.just("untag"), st.sampled_from(["a", "b", "prod"])),
    st.tuples(st.just("prune"), st.integers(0, 30), st.integers(1, 3)),
    st.tuples(st.just("gc")),
)


async def scenario(root: Path, ops: list[tuple[object, ...]]) -> None:
    store = FsStore(root).open()
    snaps = await Snapshots(store).open()
    views: dict[int, dict[str, FileRef]] = {}  # the model: what each live snapshot shows
    clock = 1_000_000
    try:
        for o in ops:
            clock += 1
            if o[0] == "sync":
                changes: dict[str, FileRef | None] = {}
                for path, content in o[1].items():  # type: ignore[attr-defined]
                    if content is None:
                        changes[path] = None
                    else:
                        data = f"{path}:{content}".encode()
                        changes[path] = (await store.put_bytes(data), len(data))
                s = await snaps.record("r", changes, "mirror", when=clock)
                if s is not None:
                    views[s.id] = await snaps.manifest("r", s.id)
            elif o[0] == "tag":
                history = await snaps.history("r")
                if history:
                    target = history[int(o[1]) % len(history)]  # type: ignore[call-overload]
                    await snaps.tag("r", str(o[2]), target.stamp)
            elif o[0] == "untag":
                with contextlib.suppress(Exception):
                    await snaps.untag("r", str(o[1]))
            elif o[0] == "prune":
                removed = await snaps.prune("r", clock - int(o[1]),  # type: ignore[call-overload]
                                            int(o[2]))  # type: ignore[call-overload]
                tagged = {t for s in await snaps.history("r") for t in s.tags}
                for s in removed:
                    assert not s.tags and s.id in views
                    del views[s.id]
                assert tagged == {t for s in await snaps.history("r") for t in s.tags}
            else:
                await store.collect_garbage(grace=0)
            live = {s.id for s in await snaps.history("r")}
            assert live == set(views)
            for sid, expected in views.items():
                assert await snaps.manifest("r", sid) == expected
                for sha, _size in expected.values():
                    assert store.blob_path(sha).exists(), "a live snapshot lost a blob"
    finally:
        await store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=25))
def test_no_live_blob_is_ever_deleted(ops: list[tuple[object, ...]]) -> None:
    root = Path(tempfile.mkdtemp(prefix="pkgdepot-prop-"))
    try:
        asyncio.run(scenario(root, ops))
    finally:
        shutil.rmtree(root, ignore_errors=True)
