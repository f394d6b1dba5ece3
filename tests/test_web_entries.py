"""Pure parts of the web adapters: feed entries as read from the parser, publisher domains, references."""

from __future__ import annotations

from ctd.adapters.rss.entries import MAX_TAGS, MAX_TITLE, link_of, read_feed
from ctd.adapters.web.options import ExtractOptions, one_line, publisher, reference_of
from ctd.config import parse_config


def entry(**kw) -> dict:
    base = {"id": "g1", "link": "https://blog.example/a", "title": ["text/plain", "T"], "summary": None}
    base.update(kw)
    return base


def test_links_must_be_absolute_http_and_pass_the_gate():
    """Relative links resolve against the feed; other schemes, control characters and huge links are dropped."""
    base = "https://feeds.example/x/feed.xml"
    assert link_of("/post/1", base) == "https://feeds.example/post/1"
    assert link_of("javascript:alert(1)", base) == ""
    assert link_of("file:///etc/passwd", base) == ""
    assert link_of("https://a.example/x\u202ey", base) == ""
    assert link_of("https://a.example/" + "x" * 5000, base) == ""
    assert link_of(42, base) == ""


def test_titles_and_tags_are_one_printable_line_with_caps():
    """A title is one line of printable text cut at MAX_TITLE; tags are trimmed, distinct and at most MAX_TAGS."""
    raw = {
        "entries": [
            entry(
                title=["text/html", "<b>Evil</b>\n\tcampaign\u0007 " + "x" * 1000],
                tags=[" Malware ", "Malware", "", 7, *[f"t{i}" for i in range(40)]],
            )
        ]
    }
    [e] = read_feed(raw, "https://blog.example/feed").entries
    assert e.title.startswith("Evil campaign x") and len(e.title) == MAX_TITLE and e.title.isprintable()
    assert e.tags[0] == "Malware" and len(e.tags) == MAX_TAGS


def test_key_changes_with_the_update_time():
    """An entry updated by its publisher (same guid, new updated time) is a new entry to read."""
    a = read_feed({"entries": [entry(updated=1)]}, "https://b.example/").entries[0]
    b = read_feed({"entries": [entry(updated=2)]}, "https://b.example/").entries[0]
    c = read_feed({"entries": [entry(updated=2)]}, "https://b.example/").entries[0]
    assert a.key != b.key and b.key == c.key and len(a.key) == 32


def test_entry_text_joins_title_summary_and_content_as_text():
    """Title, summary and content are joined; HTML fragments become their visible text."""
    e = entry(
        summary=["text/html", "<p>C2 <a href='https://x.example/'>here</a></p><script>bad.example</script>"],
        content=[["text/plain", "plain 1.2.3[.]4"]],
    )
    [got] = read_feed({"entries": [e]}, "https://b.example/").entries
    assert got.text == "T\n\nC2 here\n\nplain 1.2.3[.]4"


def test_garbage_from_the_parser_is_ignored():
    """Entries that are not objects and fields of the wrong type are skipped, not fatal."""
    feed = read_feed({"entries": ["x", entry(title=["text/plain"], published="yesterday")], "link": 5}, "https://b/")
    assert feed.link == "" and len(feed.entries) == 1 and feed.entries[0].published is None


def test_publisher_and_exclusions():
    """The publisher is a URL's host without www.; exclude_publisher adds it to exclude_domains."""
    assert publisher("https://www.cert-ornis.org/alerts/") == "cert-ornis.org"
    assert publisher("not a url") is None
    opts = ExtractOptions(exclude_domains=[" Corp.Example. "])
    assert opts.excluded("https://www.cert-ornis.org/a", "") == ["corp.example", "cert-ornis.org"]
    assert ExtractOptions(exclude_publisher=False).excluded("https://www.x.example/") == []


def test_reference_without_userinfo_or_fragment():
    """A reference keeps the page's URL and query but never user:password or a fragment."""
    assert reference_of("https://u:p@x.example/a?id=1#top") == "https://x.example/a?id=1"
    assert reference_of("https://x.example/a?id=1") == "https://x.example/a?id=1"


def test_one_line():
    """one_line collapses whitespace and drops unprintable characters."""
    assert one_line(" a\n\tb\u200b c ", 10) == "a b c"


def test_headers_are_secret():
    """The web adapters' headers are secrets: never in a repr of the config."""
    cfg = parse_config(
        '[plugins.n]\nadapter = "rss"\nurl = "https://b.example/f"\nwarninglists = "off"\n'
        'headers = { Authorization = "Bearer s3cret" }\n'
        '[plugins.w]\nadapter = "webpage"\nurls = ["https://b.example/p"]\nwarninglists = "off"\n'
        'headers = { "X-Key" = "s3cret" }\n'
    )
    assert "s3cret" not in repr(cfg)


def test_config_errors():
    """rss needs an http(s) url; webpage needs distinct http(s) urls; article_origins are origins or "*"."""
    import pytest

    from ctd.errors import ConfigError

    bad = [
        ('adapter = "rss"', "needs `url`"),
        ('adapter = "rss"\nurl = "ftp://x.example/f"', "http"),
        ('adapter = "rss"\nurl = "https://x.example/f"\narticle_origins = ["https://x.example/path"]', "origin"),
        ('adapter = "webpage"', "needs `urls`"),
        ('adapter = "webpage"\nurls = ["https://x.example/a", "https://x.example/a"]', "twice"),
        ('adapter = "webpage"\nurls = ["file:///etc/passwd"]', "http"),
        ('adapter = "webpage"\nurls = ["https://x.example/a"]\ntypes = ["hostname"]', "hostname"),
    ]
    for table, message in bad:
        with pytest.raises(ConfigError, match=message):
            parse_config(f"[plugins.p]\n{table}\n")
    ok = parse_config('[plugins.p]\nadapter = "rss"\nurl = "https://x.example/f"\narticle_origins = ["*"]\n')
    assert ok.plugins["p"].options.article_origins == ["*"]
