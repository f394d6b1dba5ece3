"""The ``rss`` adapter over loopback, through the real pipeline and the real store: corpus, guard, articles."""

from __future__ import annotations

import pytest

from ctd.adapters.rss.parse import FeedError, parse_sync
from tests.pdfgen import pdf_bytes
from tests.webcorpus import items
from tests.webserve import corpus_server, open_pipeline, typed

FEEDS = [i for i in items() if i.kind == "feed"]
LONG_AGO = "3650d"  # the corpus entries are from 2025: an initial_range that reaches them


def rss(url: str, **keys) -> dict:
    return {"adapter": "rss", "url": url, "initial_range": LONG_AGO, **keys}


def feed_xml(*entries: tuple[str, str, str], channel_link: str = "https://news.example/") -> bytes:
    """An RSS 2.0 feed of (title, link, description) entries."""
    items_xml = "".join(
        f"<item><title>{t}</title><link>{link}</link><guid>{link}</guid><description>{d}</description></item>"
        for t, link, d in entries
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>n</title><link>{channel_link}</link>'
        f"<category>News</category>{items_xml}</channel></rss>"
    ).encode()


class TestCorpus:
    @pytest.mark.parametrize("item", FEEDS, ids=[i.name for i in FEEDS])
    async def test_stored_set_and_guard(self, item, tmp_path, nursery):
        """The stored set is the feed's expected sets; exactly the warning-listed ones are flagged and inactive."""
        with corpus_server() as web:
            p = await open_pipeline(nursery, tmp_path / "db", {"news": rss(f"{web.base}/{item.file}")})
            result = await p.pull("news")
        stored = await p.stored()
        flagged = item.expected("expected_warninglisted.txt")
        assert set(stored) == item.extractable
        assert {k for k, v in stored.items() if v["warninglist"]} == flagged
        assert {k for k, v in stored.items() if not v["active"]} == flagged
        assert result.error is None and result.new == len(item.extractable)
        assert result.warninglisted == len(flagged)

    async def test_tag_action_keeps_hits_active_and_rules_filter_them(self, tmp_path, nursery):
        """Under warninglist_action = "tag" hits are active and tagged; rules select them by warninglist and tag."""
        item = next(i for i in FEEDS if i.name == "feed-atom")
        with corpus_server() as web:
            p = await open_pipeline(
                nursery, tmp_path / "db", {"news": rss(f"{web.base}/{item.file}", warninglist_action="tag")}
            )
            await p.pull("news")
        stored = await p.stored()
        flagged = item.expected("expected_warninglisted.txt")
        assert all(v["active"] for v in stored.values())
        assert {k for k, v in stored.items() if f"warninglist:{v['warninglist']}" in v["tags"]} == flagged
        assert await p.selected('warninglist != ""') == flagged
        assert await p.selected('warninglist = ""') == item.extractable - flagged
        assert await p.selected('tags has "warninglist:public-dns-v4"') == {("ipv4", "8.8.8.8")}
        assert await p.selected('warninglist = "rfc1918"') == {("ipv4", "10.66.0.1")}

    async def test_inactive_hits_are_never_selected(self, tmp_path, nursery):
        """With the default action no rule can select a warning-listed value for sharing (it is inactive)."""
        item = next(i for i in FEEDS if i.name == "feed-atom")
        with corpus_server() as web:
            p = await open_pipeline(nursery, tmp_path / "db", {"news": rss(f"{web.base}/{item.file}")})
            await p.pull("news")
        assert await p.selected("type in (ipv4, domain)") & item.expected("expected_warninglisted.txt") == set()
        assert await p.selected('warninglist != ""') == set()

    async def test_guard_off(self, tmp_path, nursery):
        """warninglists = "off" stores everything unflagged and active."""
        item = next(i for i in FEEDS if i.name == "feed-atom")
        with corpus_server() as web:
            p = await open_pipeline(
                nursery, tmp_path / "db", {"news": rss(f"{web.base}/{item.file}", warninglists="off")}
            )
            await p.pull("news")
        stored = await p.stored()
        assert set(stored) == item.extractable and all(v["active"] and not v["warninglist"] for v in stored.values())

    async def test_metadata(self, tmp_path, nursery):
        """Each IoC has the article URL as reference, the entry title as comments, feed and entry categories as tags."""
        item = next(i for i in FEEDS if i.name == "feed-rss20")
        with corpus_server() as web:
            p = await open_pipeline(nursery, tmp_path / "db", {"news": rss(f"{web.base}/{item.file}")})
            await p.pull("news")
        ind = (await p.stored())[("domain", "bq-files.xyz")]
        assert ind["reference"] == "https://corvid-labs.net/research/blackquill-stealer/"
        assert ind["comments"] == "BlackQuill: a .NET stealer sold as a service"
        assert ind["tags"] == ["Malware", "Stealer", "Threat Research"]
        assert ind["first_seen"] == "2025-03-06T14:00:00Z"


class TestPulls:
    async def test_conditional_get_and_seen_entries(self, tmp_path, nursery):
        """The next pull is a conditional GET (304: nothing); a changed feed yields only its new entries."""
        state = {"feed": feed_xml(("one", "https://news.example/1", "C2 at 198.51.100.7 is evil-one[.]com"))}
        extra = {"/feed": lambda req: typed(state["feed"], "application/rss+xml", req)}
        with corpus_server(extra=extra) as web:
            p = await open_pipeline(nursery, tmp_path / "db", {"news": rss(f"{web.base}/feed", warninglists="off")})
            first = await p.pull("news")
            second = await p.pull("news")
            assert second.batches == 0
            assert any(k.lower() == "if-none-match" for k, _ in web.received[-1].headers)
            state["feed"] = feed_xml(
                ("two", "https://news.example/2", "new: evil-two[.]com"),
                ("one", "https://news.example/1", "C2 at 198.51.100.7 is evil-one[.]com"),
            )
            third = await p.pull("news")
        assert (first.new, second.new + second.updated, third.new, third.updated) == (2, 0, 1, 0)
        assert set(await p.stored()) == {
            ("ipv4", "198.51.100.7"),
            ("domain", "evil-one.com"),
            ("domain", "evil-two.com"),
        }

    async def test_initial_range_skips_old_entries_on_the_first_pull(self, tmp_path, nursery):
        """On the first pull, entries published before initial_range are not read (the corpus is from 2025)."""
        item = next(i for i in FEEDS if i.name == "feed-rss20")
        with corpus_server() as web:
            p = await open_pipeline(
                nursery, tmp_path / "db", {"news": {**rss(f"{web.base}/{item.file}"), "initial_range": "7d"}}
            )
            result = await p.pull("news")
        assert result.new == 0 and await p.stored() == {}

    async def test_not_a_feed(self, tmp_path, nursery):
        """An HTML page where the feed should be fails the pull as a data error."""
        with corpus_server() as web:
            p = await open_pipeline(nursery, tmp_path / "db", {"news": rss(f"{web.base}/news-article/index.html")})
            result = await p.pull("news")
        assert result.error is not None and "not an RSS or Atom feed" in result.error

    def test_parser_never_opens_a_local_file(self, tmp_path):
        """A body that names a local file is parsed as a document, never read from disk (feedparser would)."""
        secret = tmp_path / "feed.xml"
        secret.write_bytes(feed_xml(("local", "https://x.example/1", "local-secret[.]com")))
        with pytest.raises(FeedError):
            parse_sync(str(secret).encode(), 10)

    async def test_slow_parse_is_killed(self, tmp_path, nursery):
        """A feed that takes longer than parse_time_budget to parse fails the pull; the parser is stopped."""
        deep = (
            b"<rss version='2.0'><channel><item><description>"
            + b"<div>" * 200_000
            + b"</description></item></channel></rss>"
        )
        extra = {"/deep": (200, {"Content-Type": "application/rss+xml"}, deep)}
        with corpus_server(extra=extra) as web:
            p = await open_pipeline(
                nursery, tmp_path / "db", {"news": rss(f"{web.base}/deep", parse_time_budget="0.5s")}
            )
            result = await p.pull("news")
        assert result.error is not None and "took longer than 0.5 s" in result.error

    async def test_oversized_feed(self, tmp_path, nursery):
        """A feed over max_bytes fails the pull; nothing is stored."""
        item = next(i for i in FEEDS if i.name == "feed-rss20")
        with corpus_server() as web:
            p = await open_pipeline(nursery, tmp_path / "db", {"news": rss(f"{web.base}/{item.file}", max_bytes=1000)})
            result = await p.pull("news")
        assert "max_bytes" in (result.error or "") and await p.stored() == {}


class TestArticles:
    async def test_article_pages_are_read(self, tmp_path, nursery):
        """With fetch_articles each entry's linked page (same origin) is read: its main text's IoCs are stored too."""
        page = next(i for i in items() if i.name == "vendor-blog-tables")
        extra: dict = {}
        with corpus_server(extra=extra) as web:
            extra["/feed"] = (
                200,
                {"Content-Type": "application/rss+xml"},
                feed_xml(("tables", f"{web.base}/{page.file}", "see the post")),
            )
            p = await open_pipeline(
                nursery,
                tmp_path / "db",
                {"news": rss(f"{web.base}/feed", fetch_articles=True, exclude_domains=[page.site])},
            )
            result = await p.pull("news")
        stored = await p.stored()
        assert result.error is None and set(stored) == page.extractable
        assert {k for k, v in stored.items() if v["warninglist"]} == page.expected("expected_warninglisted.txt")
        assert {v["reference"] for v in stored.values()} == {f"{web.base}/{page.file}"}

    async def test_articles_on_other_origins(self, tmp_path, nursery):
        """An article on another origin is fetched only if listed in article_origins, never with the feed's headers."""
        extra: dict = {}
        other_pages = {"/a": (200, {"Content-Type": "text/plain"}, b"payload at other-origin-c2[.]com")}
        with corpus_server(extra=extra) as web, corpus_server("127.0.0.2", extra=other_pages) as other:
            extra["/feed"] = (
                200,
                {"Content-Type": "application/rss+xml"},
                feed_xml(("x", f"{other.base}/a", "entry text")),
            )
            table = rss(
                f"{web.base}/feed", fetch_articles=True, warninglists="off", headers={"X-Api-Key": "s3cret-key"}
            )
            p = await open_pipeline(
                nursery, tmp_path / "db", {"refused": table, "listed": {**table, "article_origins": [other.base]}}
            )
            refused = await p.pull("refused")
            assert other.received == [] and refused.invalid == 1
            listed = await p.pull("listed")
        assert listed.error is None and ("domain", "other-origin-c2.com") in await p.stored()
        assert len(other.received) == 1 and "s3cret-key" not in other.everything()
        assert "s3cret-key" in web.everything()  # the feed's own origin gets its headers

    async def test_transient_article_failure_is_retried(self, tmp_path, nursery):
        """An article answering 503 leaves its entry to be retried next pull, up to article_retries times."""
        extra: dict = {"/a": (503, {"Content-Type": "text/plain"}, b"busy")}
        with corpus_server(extra=extra) as web:
            extra["/feed"] = (
                200,
                {"Content-Type": "application/rss+xml"},
                feed_xml(("x", f"{web.base}/a", "evil-entry[.]com")),
            )
            p = await open_pipeline(
                nursery, tmp_path / "db", {"news": rss(f"{web.base}/feed", fetch_articles=True, article_retries=2)}
            )
            results = [await p.pull("news") for _ in range(3)]
            tries = [r.target for r in web.received].count("/a")
        assert [r.invalid for r in results] == [1, 1, 0] and tries == 2
        assert ("domain", "evil-entry.com") in await p.stored()

    async def test_pdf_article(self, tmp_path, nursery):
        """An entry linking to a PDF gets the PDF's IoCs."""
        pdf = pdf_bytes(["C2 hxxps://pdf-c2[.]com/gate and 203.0.113.77"])
        extra: dict = {"/report.pdf": (200, {"Content-Type": "application/pdf"}, pdf)}
        with corpus_server(extra=extra) as web:
            extra["/feed"] = (
                200,
                {"Content-Type": "application/rss+xml"},
                feed_xml(("report", f"{web.base}/report.pdf", "our report")),
            )
            p = await open_pipeline(
                nursery, tmp_path / "db", {"news": rss(f"{web.base}/feed", fetch_articles=True, warninglists="off")}
            )
            result = await p.pull("news")
        assert result.error is None
        assert set(await p.stored()) == {("url", "https://pdf-c2.com/gate"), ("ipv4", "203.0.113.77")}
