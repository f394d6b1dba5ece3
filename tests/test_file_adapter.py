"""The ``file`` adapter: text, csv and jsonl parsing, batching, resuming, errors."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from ctd.adapters.file.adapter import FileAdapter
from ctd.errors import SourceUnavailable, UpstreamDataError
from ctd.model import Batch, PullContext
from tests.configutil import decode_options

FIXTURES = Path(__file__).parent / "fixtures" / "file"
SAMPLES = Path(__file__).parents[1] / "etc" / "samples"
NOW = 1_796_000_000
NOV_1 = 1_793_491_200  # 2026-11-01T00:00:00Z
NOV_26 = 1_795_651_200  # 2026-11-26T00:00:00Z
JAN_1 = 1_798_761_600  # 2027-01-01T00:00:00Z


def adapter(path: Path | str, **options: object) -> FileAdapter:
    config = decode_options({"path": str(path), **options}, FileAdapter.Config)
    return FileAdapter("test", config, None)


async def pull(a: FileAdapter, sub_checkpoint: dict | None = None) -> list[Batch]:
    ctx = PullContext(since=0, now=NOW, sub_checkpoint=sub_checkpoint)
    return [batch async for batch in a.pull(ctx)]


async def values(a: FileAdapter, sub_checkpoint: dict | None = None) -> list[tuple[str, str]]:
    return [(s.type, s.value) for b in await pull(a, sub_checkpoint) for s in b.sightings]


def write(tmp_path: Path, text: str, name: str = "feed.txt") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


FIVE = "192.0.2.1\n192.0.2.2\n192.0.2.3\n192.0.2.4\n192.0.2.5\n"


# --------------------------------------------------------------------------- text


async def test_text_auto_detects_and_canonicalizes_each_value():
    """Text lines are auto-typed and canonicalized (case, defanging, IPv6)."""
    assert await values(adapter(FIXTURES / "mixed.txt")) == [
        ("url", "http://login.example.com/Path?A=1"),
        ("domain", "evil.example.net"),
        ("ipv4", "192.0.2.7"),
        ("ipv6", "2001:db8::1"),
        ("md5", "d41d8cd98f00b204e9800998ecf8427e"),
        ("sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ]


async def test_text_fixed_type_rejects_values_of_other_types(tmp_path):
    """With ``type`` set every value must validate as that type."""
    p = write(tmp_path, "bad.example\n192.0.2.1\n")
    (batch,) = await pull(adapter(p, type="domain"))
    assert [(s.type, s.value) for s in batch.sightings] == [("domain", "bad.example")]
    assert [r.where for r in batch.rejected] == ["line 2"]


async def test_text_skips_comments_blank_lines_and_inline_comments(tmp_path):
    """Comment and blank lines are skipped; `` # note`` after a value is cut off."""
    p = write(tmp_path, "# head\n\n   \nbad.example  # note\n\t# indented\nhttp://x.example/#frag\n")
    (batch,) = await pull(adapter(p))
    assert [s.value for s in batch.sightings] == ["bad.example", "http://x.example/#frag"]
    assert batch.rejected == []


async def test_text_custom_comment_prefix(tmp_path):
    """``comment_prefix`` picks the comment marker."""
    p = write(tmp_path, "; comment\nbad.example ; note\n")
    assert await values(adapter(p, comment_prefix=";")) == [("domain", "bad.example")]


async def test_text_crlf_and_utf8_bom_are_handled(tmp_path):
    """Windows line endings and a UTF-8 byte-order mark do not leak into values."""
    p = tmp_path / "feed.txt"
    p.write_bytes(b"\xef\xbb\xbfbad.example\r\n192.0.2.1\r\n")
    assert await values(adapter(p)) == [("domain", "bad.example"), ("ipv4", "192.0.2.1")]


async def test_records_get_now_and_configured_severity(tmp_path):
    """Without times in the record, first and last seen are the pull's ``now``."""
    p = write(tmp_path, "bad.example\n")
    (batch,) = await pull(adapter(p, severity="high"))
    (s,) = batch.sightings
    assert (s.first_seen, s.last_seen, s.severity) == (NOW, NOW, "high")


async def test_malformed_lines_are_rejected_with_line_numbers(tmp_path):
    """Bad records are reported with their line number while the rest ingests."""
    p = write(tmp_path, "# c\nbad.example\nnope nope\n\n192.0.2.999\n192.0.2.1\n")
    (batch,) = await pull(adapter(p))
    assert [s.value for s in batch.sightings] == ["bad.example", "192.0.2.1"]
    assert [r.where for r in batch.rejected] == ["line 3", "line 5"]
    assert "nope nope" in batch.rejected[0].reason


async def test_invalid_utf8_line_is_rejected(tmp_path):
    """A line that is not UTF-8 is rejected alone."""
    p = tmp_path / "feed.txt"
    p.write_bytes(b"bad.example\n\xff\xfe.example\n192.0.2.1\n")
    (batch,) = await pull(adapter(p))
    assert len(batch.sightings) == 2
    assert [(r.where, r.reason) for r in batch.rejected] == [("line 2", "not valid UTF-8")]


# --------------------------------------------------------------------------- csv

CSV_ALL = {
    "format": "csv",
    "type_column": "type",
    "severity_column": "severity",
    "tags_column": "tags",
    "first_seen_column": "first_seen",
    "last_seen_column": "last_seen",
    "comments_column": "comments",
    "reference_column": "reference",
}


async def test_csv_columns_by_header_name():
    """CSV columns are found by header name, after leading comment lines."""
    (batch,) = await pull(adapter(FIXTURES / "indicators.csv", **CSV_ALL))
    assert batch.rejected == []
    first, second, third = batch.sightings
    assert (first.type, first.value, first.severity) == ("md5", "0cc175b9c0f1b6a831c399e269772661", "high")
    assert first.tags == ("ransomware", "loader")
    assert (first.first_seen, first.last_seen) == (NOV_1, NOV_26)
    assert (first.comments, first.reference) == ("seen on 3 hosts", "https://edr.example.com/alerts/1")
    assert (second.type, second.severity, second.tags, second.first_seen) == ("sha256", "low", (), NOW)
    assert (third.value, third.comments) == ("http://bad.example.org/x", "comma, inside")


async def test_csv_columns_by_index_without_header():
    """With ``header = false`` columns are 0-based indexes and the first row is data."""
    a = adapter(
        FIXTURES / "noheader.tsv", format="csv", header=False, delimiter="\t", value_column=0, severity_column=1
    )
    (batch,) = await pull(a)
    assert [(s.type, s.severity) for s in batch.sightings] == [("md5", "high"), ("ipv4", "low")]


async def test_csv_custom_delimiter_and_quotechar(tmp_path):
    """``delimiter`` and ``quotechar`` configure the CSV dialect."""
    p = write(tmp_path, "value;comments\nbad.example;'a;b'\n", "feed.csv")
    a = adapter(p, format="csv", delimiter=";", quotechar="'", comments_column="comments")
    (batch,) = await pull(a)
    assert [(s.value, s.comments) for s in batch.sightings] == [("bad.example", "a;b")]


async def test_csv_row_without_value_column_is_rejected(tmp_path):
    """A row too short to have the value column is rejected with its line number."""
    p = write(tmp_path, "severity,value\nhigh,bad.example\nlow\nlow,192.0.2.1\n", "feed.csv")
    (batch,) = await pull(adapter(p, format="csv"))
    assert [s.value for s in batch.sightings] == ["bad.example", "192.0.2.1"]
    assert [r.where for r in batch.rejected] == ["line 3"]


async def test_csv_unknown_type_or_severity_is_rejected(tmp_path):
    """Unknown type or severity strings reject the row, not the file."""
    p = write(
        tmp_path, "type,value,severity\nfoo,bad.example,high\ndomain,bad.example,huge\ndomain,ok.example,\n", "feed.csv"
    )
    (batch,) = await pull(adapter(p, format="csv", type_column="type", severity_column="severity"))
    assert [(s.value, s.severity) for s in batch.sightings] == [("ok.example", "unknown")]
    assert [r.where for r in batch.rejected] == ["line 2", "line 3"]
    assert "foo" in batch.rejected[0].reason and "huge" in batch.rejected[1].reason


async def test_csv_header_without_configured_column_is_upstream_error(tmp_path):
    """A header lacking a configured column fails the pull with UpstreamDataError."""
    p = write(tmp_path, "indicator\nbad.example\n", "feed.csv")
    with pytest.raises(UpstreamDataError, match="no column 'value'"):
        await pull(adapter(p, format="csv"))


# --------------------------------------------------------------------------- jsonl


async def test_jsonl_maps_every_field():
    """A JSONL object maps all its fields, times in ISO 8601 or epoch seconds."""
    (batch,) = await pull(adapter(FIXTURES / "full.jsonl", format="jsonl"))
    assert batch.rejected == []
    full, bare = batch.sightings
    assert (full.type, full.value) == ("url", "https://intel.example.com/a?b=C")
    assert (full.severity, full.reputation, full.tags) == ("critical", 9, ("c2", "apt-demo"))
    assert (full.comments, full.reference) == ("beacon endpoint", "https://intel.example.com/r/1")
    assert (full.first_seen, full.last_seen, full.expires_at) == (NOV_1 + 8 * 3600, NOV_26, JAN_1)
    assert full.retracted is False
    assert (bare.type, bare.retracted, bare.first_seen, bare.last_seen) == ("ipv4", True, NOW, NOW)


async def test_jsonl_bad_lines_are_rejected(tmp_path):
    """Broken JSON, a missing value, a bad time or reputation reject only that line."""
    p = write(
        tmp_path,
        '{"value": "bad.example"}\n{"value": \n{"type": "url"}\n'
        '{"value": "x.example", "first_seen": "yesterday"}\n'
        '{"value": "y.example", "reputation": 11}\n[1]\n',
        "feed.jsonl",
    )
    (batch,) = await pull(adapter(p, format="jsonl"))
    assert [s.value for s in batch.sightings] == ["bad.example"]
    assert [r.where for r in batch.rejected] == ["line 2", "line 3", "line 4", "line 5", "line 6"]


# --------------------------------------------------------------------------- batching


async def test_batches_split_by_batch_size_and_mark_the_last(tmp_path):
    """Five records at batch_size=2 give 2+2+1, only the last with snapshot_end."""
    batches = await pull(adapter(write(tmp_path, FIVE), batch_size=2))
    assert [len(b.sightings) for b in batches] == [2, 2, 1]
    assert [b.snapshot_end for b in batches] == [False, False, True]


async def test_sub_checkpoint_offsets_and_lines_increase(tmp_path):
    """Each sub-checkpoint holds the byte offset and line after its batch plus the signature."""
    p = write(tmp_path, FIVE)
    batches = await pull(adapter(p, batch_size=2))
    cps = [b.sub_checkpoint for b in batches]
    assert [cp["offset"] for cp in cps] == [20, 40, 50]
    assert [cp["line"] for cp in cps] == [2, 4, 5]
    st = os.stat(p)
    assert {cp["sig"] for cp in cps} == {f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"}


async def test_trailing_comments_do_not_add_an_empty_batch(tmp_path):
    """Blank and comment lines after the last record end the last full batch."""
    p = write(tmp_path, "192.0.2.1\n192.0.2.2\n\n# end\n")
    batches = await pull(adapter(p, batch_size=2))
    assert [(len(b.sightings), b.snapshot_end) for b in batches] == [(2, True)]


async def test_resume_from_sub_checkpoint_yields_only_the_rest(tmp_path):
    """A pull given a matching sub-checkpoint continues after the committed batch."""
    a = adapter(write(tmp_path, FIVE), batch_size=2)
    first = (await pull(a))[0]
    assert await values(a, first.sub_checkpoint) == [
        ("ipv4", "192.0.2.3"),
        ("ipv4", "192.0.2.4"),
        ("ipv4", "192.0.2.5"),
    ]


async def test_resume_keeps_line_numbers(tmp_path):
    """Rejections after a resume still carry the file's real line numbers."""
    a = adapter(write(tmp_path, "192.0.2.1\n192.0.2.2\nbroken value\n"), batch_size=2)
    first = (await pull(a))[0]
    (batch,) = await pull(a, first.sub_checkpoint)
    assert [r.where for r in batch.rejected] == ["line 3"]


async def test_resume_csv_rereads_the_header(tmp_path):
    """Resuming a CSV pull still maps columns from the header at the top."""
    p = write(tmp_path, "severity,value\nhigh,a.example\nlow,b.example\n", "feed.csv")
    a = adapter(p, format="csv", batch_size=1, severity_column="severity")
    first = (await pull(a))[0]
    (batch,) = await pull(a, first.sub_checkpoint)
    assert [(s.value, s.severity) for s in batch.sightings] == [("b.example", "low")]


async def test_changed_file_restarts_from_the_beginning(tmp_path):
    """A sub-checkpoint whose signature no longer matches the file is ignored."""
    p = write(tmp_path, FIVE)
    a = adapter(p, batch_size=2)
    first = (await pull(a))[0]
    p.write_text(FIVE + "192.0.2.6\n")
    assert len(await values(a, first.sub_checkpoint)) == 6


async def test_finished_snapshot_checkpoint_restarts(tmp_path):
    """The last batch's sub-checkpoint says done, so the next pull reads everything again."""
    a = adapter(write(tmp_path, FIVE), batch_size=2)
    last = (await pull(a))[-1]
    assert last.sub_checkpoint["done"] is True
    assert len(await values(a, last.sub_checkpoint)) == 5


async def test_empty_file_yields_one_empty_snapshot_batch(tmp_path):
    """An empty file is an empty snapshot: one batch, no sightings, snapshot_end."""
    (batch,) = await pull(adapter(write(tmp_path, "")))
    assert (batch.sightings, batch.rejected, batch.snapshot_end) == ([], [], True)


async def test_csv_with_only_a_header_yields_one_empty_snapshot_batch(tmp_path):
    """A CSV file with a header and no rows is an empty snapshot."""
    (batch,) = await pull(adapter(write(tmp_path, "value\n", "feed.csv"), format="csv"))
    assert (batch.sightings, batch.snapshot_end) == ([], True)


# --------------------------------------------------------------------------- errors


async def test_missing_file_raises_source_unavailable(tmp_path):
    """A missing file is SourceUnavailable naming the path and the OS reason."""
    with pytest.raises(SourceUnavailable, match=r"nope\.txt: No such file"):
        await pull(adapter(tmp_path / "nope.txt"))


async def test_directory_raises_source_unavailable(tmp_path):
    """A directory is not a feed file."""
    with pytest.raises(SourceUnavailable, match="directory"):
        await pull(adapter(tmp_path))


async def test_binary_file_raises_source_unavailable(tmp_path):
    """A file that is not UTF-8 text as a whole (NUL bytes, UTF-16) is SourceUnavailable."""
    p = tmp_path / "feed.txt"
    p.write_bytes("bad.example\n".encode("utf-16"))
    with pytest.raises(SourceUnavailable, match="not a UTF-8 text file"):
        await pull(adapter(p))


async def test_check_reports_size(tmp_path):
    """``check`` reports a readable file and its size."""
    assert (await adapter(write(tmp_path, FIVE)).check()).startswith("readable, 50 bytes")


async def test_check_missing_file_raises(tmp_path):
    """``check`` on a missing file raises SourceUnavailable."""
    with pytest.raises(SourceUnavailable):
        await adapter(tmp_path / "nope.txt").check()


# --------------------------------------------------------------------------- config and registry


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 0},
        {"batch_size": 100_001},
        {"format": "xml"},
        {"type": "ip"},
        {"tags": ["x"]},
        {"format": "csv", "header": False},  # value_column "value" needs a header
        {"delimiter": "::"},
        {"value_column": -1},
    ],
)
def test_config_rejects_bad_options(options):
    """Invalid or unknown options fail validation when the config is decoded."""
    with pytest.raises(msgspec.ValidationError):
        decode_options({"path": "/x", **options}, FileAdapter.Config)


def test_adapter_is_registered_as_file():
    """The ``file`` entry point loads this class."""
    from ctd import plugins

    assert plugins.load("file") is FileAdapter
    assert (FileAdapter.can_pull, FileAdapter.can_push) == (True, True)


# --------------------------------------------------------------------------- shipped samples


@pytest.mark.parametrize(
    ("name", "options", "expected_rejects"),
    [
        ("osint-urls.txt", {}, 1),
        (
            "edr-hashes.csv",
            {
                "format": "csv",
                "type_column": "type",
                "severity_column": "severity",
                "tags_column": "tags",
                "first_seen_column": "first_seen",
            },
            0,
        ),
        ("partner.jsonl", {"format": "jsonl"}, 0),
    ],
)
async def test_shipped_samples_parse(name, options, expected_rejects):
    """The demo samples parse; only the deliberately malformed line is rejected."""
    (batch,) = await pull(adapter(SAMPLES / name, **options))
    assert len(batch.rejected) == expected_rejects, batch.rejected
    assert len(batch.sightings) >= 20
