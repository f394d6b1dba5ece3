"""The ``webpage`` adapter over loopback, through the real pipeline and the real store: corpus, snapshots, PDFs."""

from __future__ import annotations

import pytest

from tests.pdfgen import pdf_bytes
from tests.webcorpus import items
from tests.webserve import corpus_server, open_pipeline, typed

PAGES = [i for i in items() if i.kind != "feed"]


def page(*urls: str, **keys) -> dict:
    return {"adapter": "webpage", "urls": list(urls), **keys}


class TestCorpus:
    @pytest.mark.parametrize("item", PAGES, ids=[i.name for i in PAGES])
    async def test_stored_set_and_guard(self, item, tmp_path, nursery):
        """Each page stores exactly its expected sets; exactly the warning-listed values are flagged and inactive."""
        with corpus_server() as web:
            p = await open_pipeline(
                nursery, tmp_path / "db", {"web": page(f"{web.base}/{item.file}", exclude_domains=item.exclude)}
            )
            result = await p.pull("web")
        stored = await p.stored()
        flagged = item.expected("expected_warninglisted.txt")
        assert result.error is None
        assert set(stored) == item.extractable
        assert {k for k, v in stored.items() if v["warninglist"]} == flagged
        assert {k for k, v in stored.items() if not v["active"]} == flagged
        assert result.warninglisted == len(flagged)

    async def test_tag_action_and_rules(self, tmp_path, nursery):
        """Under the tag action flagged values are active and tagged; `warninglist` rules select them."""
        item = next(i for i in PAGES if i.name == "news-article")
        with corpus_server() as web:
            table = page(f"{web.base}/{item.file}", exclude_domains=item.exclude, warninglist_action="tag")
            p = await open_pipeline(nursery, tmp_path / "db", {"web": table})
            await p.pull("web")
        stored = await p.stored()
        flagged = item.expected("expected_warninglisted.txt")
        assert flagged and all(v["active"] for v in stored.values())
        assert await p.selected('warninglist != ""') == flagged
        assert await p.selected('not warninglist ~ "?*"') == item.extractable - flagged
        name = stored[sorted(flagged)[0]]["warninglist"]
        assert sorted(flagged)[0] in await p.selected(f'tags has "warninglist:{name}"')

    async def test_several_pages_and_metadata(self, tmp_path, nursery):
        """One plugin reads every page in `urls`; each value's reference is its page and comments its title."""
        a, b = (next(i for i in PAGES if i.name == n) for n in ("cisa-advisory", "paste-plain"))
        with corpus_server() as web:
            table = page(f"{web.base}/{a.file}", f"{web.base}/{b.file}", exclude_domains=[a.site], warninglists="off")
            p = await open_pipeline(nursery, tmp_path / "db", {"web": table})
            await p.pull("web")
        stored = await p.stored()
        assert set(stored) == a.extractable | b.extractable
        some_a = next(iter(a.expected("expected.txt") - b.extractable))
        assert stored[some_a]["reference"] == f"{web.base}/{a.file}"
        assert stored[some_a]["comments"].startswith("#StopRansomware")


class TestSnapshot:
    async def test_value_gone_from_the_page_is_retracted(self, tmp_path, nursery):
        """With snapshot = true a value that disappears from the page is retracted for the source."""
        state = {"text": b"C2: evil-one[.]com and evil-two[.]com"}
        extra = {"/p": lambda req: typed(state["text"], "text/plain", req)}
        with corpus_server(extra=extra) as web:
            p = await open_pipeline(nursery, tmp_path / "db", {"web": page(f"{web.base}/p", snapshot=True)})
            await p.pull("web")
            state["text"] = b"C2: evil-two[.]com"
            result = await p.pull("web")
        stored = await p.stored()
        assert result.retracted == 1
        assert (stored[("domain", "evil-one.com")]["active"], stored[("domain", "evil-two.com")]["active"]) == (
            False,
            True,
        )
        assert stored[("domain", "evil-one.com")]["sources"][0]["retracted"]

    async def test_failed_page_retracts_nothing(self, tmp_path, nursery):
        """When one page fails, the pull reports the others, retracts nothing and fails with that page's error."""
        state = {"status": 200}

        def flaky(req):
            code, headers, body = typed(b"evil-three[.]com", "text/plain", req)
            return (state["status"], headers, body) if state["status"] != 200 else (code, headers, body)

        extra = {"/a": lambda req: typed(b"evil-one[.]com", "text/plain", req), "/b": flaky}
        with corpus_server(extra=extra) as web:
            p = await open_pipeline(
                nursery, tmp_path / "db", {"web": page(f"{web.base}/a", f"{web.base}/b", snapshot=True)}
            )
            await p.pull("web")
            state["status"] = 503
            result = await p.pull("web")
        stored = await p.stored()
        assert "HTTP 503" in (result.error or "") and result.retracted == 0
        assert all(v["active"] for v in stored.values()) and len(stored) == 2

    async def test_without_snapshot_a_304_page_reports_nothing(self, tmp_path, nursery):
        """Without snapshot pages are fetched conditionally: an unchanged page answers 304 and nothing is retracted."""
        extra = {"/p": lambda req: typed(b"evil-one[.]com", "text/plain", req)}
        with corpus_server(extra=extra) as web:
            p = await open_pipeline(nursery, tmp_path / "db", {"web": page(f"{web.base}/p")})
            first = await p.pull("web")
            second = await p.pull("web")
            statuses = [r.target for r in web.received]
        assert (first.new, second.new, second.updated, second.retracted) == (1, 0, 0, 0)
        assert len(statuses) == 2 and any(k.lower() == "if-none-match" for k, _ in web.received[1].headers)


class TestDocuments:
    async def test_pdf_page(self, tmp_path, nursery):
        """A URL answering application/pdf is read as a PDF: its IoCs are stored."""
        pdf = pdf_bytes(["Indicators:", "hxxps://pdf-c2[.]com/gate"], ["203.0.113.77 and 8.8.8.8"], compress=True)
        extra = {"/r.pdf": (200, {"Content-Type": "application/pdf"}, pdf)}
        with corpus_server(extra=extra) as web:
            p = await open_pipeline(nursery, tmp_path / "db", {"web": page(f"{web.base}/r.pdf")})
            result = await p.pull("web")
        stored = await p.stored()
        assert result.error is None
        assert set(stored) == {("url", "https://pdf-c2.com/gate"), ("ipv4", "203.0.113.77"), ("ipv4", "8.8.8.8")}
        assert stored[("ipv4", "8.8.8.8")]["warninglist"] == "public-dns-v4"

    async def test_pdf_over_its_caps_is_incomplete_and_retracts_nothing(self, tmp_path, nursery):
        """A PDF with more pages than pdf_max_pages is read in part: values are stored, a snapshot retracts nothing."""
        state = {"pdf": pdf_bytes("evil-one[.]com")}
        extra = {"/r.pdf": lambda req: typed(state["pdf"], "application/pdf", req)}
        with corpus_server(extra=extra) as web:
            table = page(f"{web.base}/r.pdf", snapshot=True, pdf_max_pages=1)
            p = await open_pipeline(nursery, tmp_path / "db", {"web": table})
            await p.pull("web")
            state["pdf"] = pdf_bytes("evil-two[.]com", "evil-three[.]com")
            result = await p.pull("web")
        stored = await p.stored()
        assert result.retracted == 0 and set(stored) == {("domain", "evil-one.com"), ("domain", "evil-two.com")}

    async def test_not_a_document(self, tmp_path, nursery):
        """A URL answering an image is refused as a data error; nothing is stored."""
        extra = {"/x.png": (200, {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n evil-one[.]com")}
        with corpus_server(extra=extra) as web:
            p = await open_pipeline(nursery, tmp_path / "db", {"web": page(f"{web.base}/x.png")})
            result = await p.pull("web")
        assert "not a page or document" in (result.error or "") and await p.stored() == {}

    async def test_reference_drops_userinfo(self, tmp_path, nursery):
        """A page URL with user:password@ is stored as reference without them."""
        extra = {"/p": (200, {"Content-Type": "text/plain"}, b"evil-one[.]com")}
        with corpus_server(extra=extra) as web:
            url = web.base.replace("http://", "http://user:pw@") + "/p#frag"
            p = await open_pipeline(nursery, tmp_path / "db", {"web": page(url, warninglists="off")})
            await p.pull("web")
        assert (await p.stored())[("domain", "evil-one.com")]["reference"] == f"{web.base}/p"
