"""Text and indicator extraction for the rss/webpage adapters (adapters/web), on the corpus and unit cases.

The corpus contract (tests/corpus_web/corpus.toml): the extractor returns exactly
expected.txt | expected_warninglisted.txt | expected_residual.txt; which of them
the warning lists flag is tests/test_warninglists.py's business.
"""

from __future__ import annotations

import pytest

from ctd.adapters.web.extract import (
    CHUNK_CHARS,
    MAX_AT_PER_TOKEN,
    MAX_TOKEN_CHARS,
    extract,
    extract_detailed,
    refang,
)
from ctd.adapters.web.html import MAX_DEPTH, decode_html, html_main_text, html_text
from ctd.canon import canonicalize
from tests.webcorpus import EXPECTED_FILES, ROOT, feed_entry_texts, items, text_of

ITEMS = items()


def _extracted(item) -> set[tuple[str, str]]:
    if item.kind == "feed":
        texts = feed_entry_texts(item.path.read_bytes())
    else:
        texts = [text_of(item)]
    return {pair for text in texts for pair in extract(text, exclude_domains=item.exclude)}


class TestCorpus:
    @pytest.mark.parametrize("item", ITEMS, ids=[i.name for i in ITEMS])
    def test_exact_set(self, item):
        """Each page and feed yields exactly its wanted, warning-listed and residual values."""
        assert _extracted(item) == item.extractable

    def test_corpus_size(self):
        """The corpus has 8-12 pages and the four feed dialects."""
        pages = [i for i in ITEMS if i.kind != "feed"]
        feeds = sorted(i.path.suffix + ":" + i.name for i in ITEMS if i.kind == "feed")
        assert 8 <= len(pages) <= 12
        assert [f.split(":")[1] for f in feeds] == ["feed-rss10", "feed-atom", "feed-rss091", "feed-rss20"]

    @pytest.mark.parametrize("item", ITEMS, ids=[i.name for i in ITEMS])
    def test_expected_files_are_canonical_sorted_disjoint(self, item):
        """Expected files are sorted canonical "type value" lines; residual values are neither wanted nor flagged."""
        for which in EXPECTED_FILES:
            path = ROOT / item.name / which
            if not path.exists():
                continue
            lines = [line for line in path.read_text().splitlines() if line]
            assert lines == sorted(set(lines)), which
            for line in lines:
                kind, value = line.split(" ", 1)
                assert canonicalize(kind, value) == (kind, value), line
        residual = item.expected("expected_residual.txt")
        assert not residual & item.expected("expected.txt")
        assert not residual & item.expected("expected_warninglisted.txt")


class TestRefang:
    @pytest.mark.parametrize(
        ("text", "want"),
        [
            ("hxxps://evil[.]com/a", ("url", "https://evil.com/a")),
            ("hXXp://evil[.]com/a", ("url", "http://evil.com/a")),
            ("https[:]//evil[.]com/a", ("url", "https://evil.com/a")),
            ("hxxp[://]evil[.]com/a", ("url", "http://evil.com/a")),
            ("evil[dot]com", ("domain", "evil.com")),
            ("evil(.)com", ("domain", "evil.com")),
            ("evil{.}com", ("domain", "evil.com")),
            ("evil [dot] com", ("domain", "evil.com")),
            ("1.2.3[.]4", ("ipv4", "1.2.3.4")),
            ("user[@]evil.com", ("email", "user@evil.com")),
            ("user[at]evil[.]com", ("email", "user@evil.com")),
            ("user [at] evil [dot] com", ("email", "user@evil.com")),
        ],
    )
    def test_styles(self, text, want):
        """Each common defang style is undone."""
        assert extract(text) == [want]

    def test_prose_brackets_untouched(self):
        """Bracketed words in prose are not turned into '@' (ioc-fanger would write 'c@a tabby)')."""
        text = "the cat (a tabby) sat at (noon) near evil.com"
        assert refang(text) == text
        assert extract(text) == [("domain", "evil.com")]


class TestFalsePositives:
    def test_versions_after_keyword(self):
        """IPv4-shaped numbers in a version list are versions, an address after prose is not."""
        text = (
            "firmware 7.2.4.1 and earlier; versions 1.0.0.2 through 1.3.2.5; bot_version=3.2.1.7; "
            '"ver":"2.1.0.4"; firmware 2.4.2.0 (PLC-400) and 1.3.3.0 (PLC-410). '
            "GhostPipe version 2.1.0.5 beacons to 193.149.176.44."
        )
        assert extract(text) == [("ipv4", "193.149.176.44")]

    def test_defanged_version_shaped_address_kept(self):
        """A value the author defanged is an indicator even after a version keyword."""
        assert extract("version 7.2.4[.]1") == [("ipv4", "7.2.4.1")]

    def test_code_identifiers(self):
        """Dotted code identifiers (System.Net.WebClient, System.IO) are not domains."""
        text = "New-Object System.Net.WebClient; System.IO.Compression.ZipFile; System.Net.Http.HttpClient()"
        assert extract(text) == []

    def test_file_names_with_tld_extensions(self):
        """ChromeSetup.zip, README.md, install.sh are files; the defanged payload[.]zip is a domain."""
        text = "The archive ChromeSetup.zip, the kit's README.md and install.sh; C2 payload[.]zip."
        assert extract(text) == [("domain", "payload.zip")]

    def test_url_host_and_email_domain_not_counted_twice(self):
        """A URL's host and an address's domain are not reported as separate domains."""
        text = "hxxp://evil[.]com/gate.php and ops[@]evil-mail.net"
        assert extract(text) == [("email", "ops@evil-mail.net"), ("url", "http://evil.com/gate.php")]

    def test_url_trailing_punctuation(self):
        """Sentence punctuation and unbalanced brackets are trimmed; balanced parentheses stay."""
        text = "See https://x.example.org/a/b. (and https://evil.com/c/) or https://en.wikipedia.org/wiki/Foo_(bar)."
        assert extract(text) == [
            ("url", "https://en.wikipedia.org/wiki/Foo_(bar)"),
            ("url", "https://evil.com/c/"),
            ("url", "https://x.example.org/a/b"),
        ]

    def test_hash_in_url_path_not_counted(self):
        """A hash inside a URL's path (a commit, a sandbox report) is part of the URL only."""
        sha1 = "0986aa7e8feda5e849fd6c420542e96430cb1f40"
        assert extract(f"https://github.com/o/r/commit/{sha1}") == [("url", f"https://github.com/o/r/commit/{sha1}")]


class TestNonAscii:
    def test_idn_host_is_whole(self):
        """An internationalised name reads as its punycode, never as its ASCII tail (bücher.com is not cher.com)."""
        assert extract("hosted on bücher.com today") == [("domain", "xn--bcher-kva.com")]

    def test_url_path_is_percent_encoded(self):
        """A URL with non-ASCII text is its wire form (punycode host, UTF-8 percent-encoded), not cut at it."""
        assert extract("get hxxps://bücher[.]com/päth?q=ü now") == [
            ("url", "https://xn--bcher-kva.com/p%C3%A4th?q=%C3%BC")
        ]

    def test_prose_with_accents_is_not_a_value(self):
        """Accented words and an address on an IDN domain yield nothing rather than a cut value."""
        assert extract("café, naïve résumé; write to bob@bücher.com") == []

    def test_gate_still_applies(self):
        """A bidi override inside a URL token is percent-encoded (one printable line), never stored raw."""
        [(kind, value)] = extract("https://evil-site.com/a\u202eb.exe")
        assert (kind, value) == ("url", "https://evil-site.com/a%E2%80%AEb.exe") and value.isascii()


class TestOptions:
    TEXT = "evil[.]com 1.2.3[.]4 hxxp://evil[.]com/a d41d8cd98f00b204e9800998ecf8427e me[@]evil.com 10.0.0.0/8"

    def test_types(self):
        """Only the enabled types are extracted."""
        assert extract(self.TEXT, types={"ipv4", "md5"}) == [
            ("ipv4", "1.2.3.4"),
            ("md5", "d41d8cd98f00b204e9800998ecf8427e"),
        ]

    def test_exclude_domains(self):
        """Values on an excluded domain or its subdomains are dropped (the publisher's own)."""
        text = "report@cisa.gov https://www.cisa.gov/report evil.com"
        assert extract(text, exclude_domains=["cisa.gov"]) == [("domain", "evil.com")]

    def test_defanged_only(self):
        """defanged_only keeps the values the author defanged."""
        text = "evil[.]com and fanged.com and hxxp://bad[.]net/x and http://plain.org/y"
        assert extract(text, defanged_only=True) == [("domain", "evil.com"), ("url", "http://bad.net/x")]


class TestBounds:
    def test_max_chars(self):
        """Text past max_chars is not read, and the result says it is incomplete."""
        r = extract_detailed("evil[.]com " + "x " * 100 + "late[.]com", max_chars=50)
        assert r.values == [("domain", "evil.com")]
        assert r.complete is False

    def test_time_budget_stops_between_chunks(self):
        """With no time budget, only the first chunk is scanned and the result is marked incomplete."""
        filler = "word " * (CHUNK_CHARS // 5 + 10)
        r = extract_detailed("first[.]com " + filler + " second[.]com", time_budget=0)
        assert r.values == [("domain", "first.com")]
        assert r.complete is False

    def test_long_tokens_dropped(self):
        """A token longer than MAX_TOKEN_CHARS is never an indicator."""
        url = "http://evil.com/" + "a" * MAX_TOKEN_CHARS
        assert extract(url + " ok[.]com") == [("domain", "ok.com")]

    def test_at_dense_tokens_skipped(self):
        """A token with more than MAX_AT_PER_TOKEN '@' is not searched for addresses (each costs a grammar run)."""
        assert extract(",".join(f"u{i}@evil.com" for i in range(MAX_AT_PER_TOKEN))) != []
        assert extract(",".join(f"u{i}@evil.com" for i in range(MAX_AT_PER_TOKEN + 1))) == []

    def test_adversarial_text(self):
        """Inputs that run ioc-finder's grammars quadratic are cut or skipped before they reach them."""
        text = " ".join(
            [
                "ab@" * 700,  # one 2,100-char token of '@'
                ("x@a.b" * 400 + " ") * 20,
                "a." * 1000,
                "1." * 1000,
                "a[.]" * 500,
                "http://a.co/" + "a/" * 900,
                "real[.]com",
            ]
        )
        r = extract_detailed(text * 8)
        assert r.complete is True
        assert r.values == [("domain", "real.com")]


PAGE = """<html><head><title>T</title><script>var c2 = "script.example.com";</script></head><body>
<header><nav><a href="/">Home</a> navhost.com</nav></header>
<aside class="sidebar">Related: sidebar-evil.com</aside>
<article>
<h1>Report</h1>
<p>C2 at main-evil[.]com. Contact <a href="mailto:a@b.com">author@blog.com</a>.</p>
<div class="share-bar">Share: sharehost.com</div>
<div style="display:none">hidden-evil.com</div>
<table><tr><th>Product</th><th>Fixed version</th></tr><tr><td>Agent</td><td>6.1.2.145</td></tr></table>
<pre>line one
   1.2.3[.]4</pre>
<footer>Tags: footerhost.com</footer>
</article>
<section class="comments">commenter-evil.com</section>
<footer>copyright footer.com</footer>
</body></html>"""


class TestHtml:
    def test_main_text_keeps_article_only(self):
        """Only the article's text counts: no script, nav, sidebar, share bar, hidden text, comments, footer."""
        text = html_main_text(PAGE)
        assert extract(text) == [("domain", "main-evil.com"), ("ipv4", "1.2.3.4")]
        assert "author@blog.com" not in text  # mailto: link text

    def test_nested_drops(self):
        """Dropped elements nested in dropped elements (a form's inputs, a share bar's links) are skipped once."""
        html = (
            '<article><form><input value="x"><button>in-form.com</button></form>'
            '<div class="share"><div class="social"><a href="/s">share.com</a></div></div><p>keep[.]com</p></article>'
        )
        assert html_main_text(html) == "keep[.]com"

    def test_version_column(self):
        """Cells under a Version/Build/Firmware header are read as versions."""
        assert "version 6.1.2.145" in html_main_text(PAGE)

    def test_pre_keeps_lines(self):
        """A <pre> block keeps its line breaks."""
        assert "line one\n1.2.3[.]4" in html_main_text(PAGE)

    def test_fragment_keeps_everything_visible(self):
        """html_text (feed entries) keeps all visible text, even outside an article."""
        assert "sidebar-evil.com" in html_text('<aside class="sidebar">sidebar-evil.com</aside>')

    def test_body_without_article(self):
        """Without an article or main element, the body minus navigation is the main text."""
        html = "<body><ul><li><a href=1>one</a></li><li><a href=2>two</a></li></ul><pre>evil[.]com</pre></body>"
        assert html_main_text(html) == "evil[.]com"

    def test_zero_width_characters_removed(self):
        """Zero-width characters and soft hyphens inside a value do not split it."""
        assert html_text("<p>evil\u200b[.]\u00adcom</p>") == "evil[.]com"

    def test_deep_nesting_cut(self):
        """Text after a block nesting deeper than MAX_DEPTH is dropped before lexbor parses it."""
        html = "<div>" * (MAX_DEPTH - 1) + "kept[.]com" + "<div>" * 10 + "dropped[.]com"
        assert extract(html_text(html)) == [("domain", "kept.com")]

    def test_max_bytes(self):
        """Input past max_bytes is not parsed."""
        assert html_text(b"<p>a[.]com</p>" + b"<p>b[.]com</p>", max_bytes=14) == "a[.]com"

    @pytest.mark.parametrize(
        ("data", "encoding", "want"),
        [
            ('<meta charset="iso-8859-1"><p>caf\u00e9</p>'.encode("latin-1"), None, "caf\u00e9"),
            ("<p>caf\u00e9</p>".encode("latin-1"), "iso-8859-1", "caf\u00e9"),
            (b"\xef\xbb\xbf<p>caf\xc3\xa9</p>", "iso-8859-1", "caf\u00e9"),
            ("<p>caf\u00e9</p>".encode("cp1252"), None, "caf\u00e9"),
        ],
    )
    def test_decoding(self, data, encoding, want):
        """Bytes decode by BOM, then the HTTP charset, then <meta>, then UTF-8 with a cp1252 fallback."""
        assert html_text(decode_html(data, encoding)) == want
