"""Temporary files of a killed list write are removed when the sharing starts, and a failed write leaves none."""

from __future__ import annotations

import pytest

from ctd.adapters.file.push import remove_orphans, write_atomically
from ctd.config import parse_config
from ctd.model import now
from ctd.plugins import open_adapter
from ctd.sharing.actor import Sharer
from tests.fakestore import FakeStore
from tests.storeutil import ingest, s


@pytest.fixture
def store(tmp_path):
    st = FakeStore(str(tmp_path / "db"))
    yield st
    st.close()


def test_only_the_targets_own_and_old_unnamed_temp_files_are_removed(tmp_path):
    """`remove_orphans` deletes the list's own and pre-issue-11 temp files; another list's write in progress stays."""
    for name in (".ctd-urls.txt.k2j3h4.tmp", ".ctd-ab_c12z9", ".ctd-other.txt.x1y2z3.tmp", "urls.txt", ".ctd-notes"):
        (tmp_path / name).write_text("x")
    removed = remove_orphans(str(tmp_path / "urls.txt"))
    assert sorted(p.rsplit("/", 1)[1] for p in removed) == [".ctd-ab_c12z9", ".ctd-urls.txt.k2j3h4.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ctd-notes", ".ctd-other.txt.x1y2z3.tmp", "urls.txt"]


def test_a_failed_write_leaves_the_old_list_and_no_temp_file(tmp_path):
    """A write that fails half-way keeps the old file whole and removes its temporary file."""
    target = tmp_path / "urls.txt"
    target.write_text("old\n")

    def chunks():
        yield b"new-1\n"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomically(str(target), chunks())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["urls.txt"] and target.read_text() == "old\n"


def test_temp_files_are_named_after_their_target(tmp_path):
    """A write's temporary file carries the target's name, so a leftover is recognised as this list's."""
    seen = []

    def chunks():
        seen.extend(p.name for p in tmp_path.iterdir() if p.name.startswith(".ctd-"))
        yield b"x\n"

    write_atomically(str(tmp_path / "urls.txt"), chunks())
    assert len(seen) == 1 and seen[0].startswith(".ctd-urls.txt.") and seen[0].endswith(".tmp")


@pytest.mark.parametrize("kind", ["file", "edl"])
async def test_a_restarted_sharing_removes_leftovers_even_when_the_list_is_unchanged(tmp_path, store, kind):
    """The first pass after a (re)start removes a killed write's temp files of its list, for file and edl targets."""
    lists = tmp_path / "lists"
    if kind == "file":
        dest = '[plugins.out]\nadapter = "file"\npull = false\n'
        action, params, path = "write", f'{{ path = "{lists}/urls.txt" }}', lists / "urls.txt"
    else:
        dest = f'[plugins.out]\nadapter = "edl"\npull = false\nlists_dir = "{lists}"\nbind = "127.0.0.1:0"\n'
        action, params, path = "list", '{ name = "urls" }', lists / "urls.txt"
    cfg = parse_config(
        '[plugins.a]\nadapter = "file"\npath = "x"\npull = false\n' + dest + '[rules.r]\nfilter = "type = url"\n'
        f'[sharing.s]\nsources = ["a"]\nrule = "r"\ndestination = "out"\naction = "{action}"\nparams = {params}\n'
    )
    ingest(store.conn, "a", [s("http://x.example/", "url")], now=now())

    async def one_pass():
        async with open_adapter("out", cfg.plugins["out"]) as adapter:
            sh = Sharer("s", cfg.sharing["s"], cfg.rules["r"], cfg.plugins["out"], adapter, store)
            return await sh.share_once()

    await one_pass()
    orphan = lists / f".ctd-{path.name}.abc123.tmp"
    orphan.write_bytes(b"half a list")
    res = await one_pass()  # a restart: a new Sharer
    assert res.unchanged and not orphan.exists() and path.read_text() == "http://x.example/\n"
