"""Visible text of HTML pages (main content only) and of HTML fragments.

selectolax's lexbor parser does the parsing (C, linear, HTML5 error
recovery); the choice over trafilatura is argued in
``docs/evaluations/ioc-extraction.md``.  What counts as boilerplate is decided
here, with rules that are easy to predict:

- never text: scripts, styles, forms, embedded objects, hidden elements, the
  text of ``mailto:`` links (author and contact addresses);
- the main container is the page's only ``<article>``, else its only
  ``<main>``/``[role=main]``, else ``<body>``;
- inside it, navigation, headers/footers/asides (outside an article), ARIA
  landmarks that are not content, blocks whose class or id names boilerplate
  (ads, comments, related posts, share bars, newsletter boxes, ...) and link
  lists (mostly link text) are dropped;
- a table column headed "Version"/"Build"/"Firmware"/"Release" has its cells
  prefixed with ``version`` so that the extractor's version rule sees that a
  ``12.3.0.310`` there is a build number, not an address.

Inputs are cut at ``max_bytes`` before parsing and the text at ``max_chars``;
the tree walk is iterative (a page nested 100,000 deep cannot overflow the
stack).
"""

from __future__ import annotations

import re

from selectolax.lexbor import LexborHTMLParser, LexborNode

__all__ = ["MAX_HTML_BYTES", "MAX_TEXT_CHARS", "decode_html", "html_main_text", "html_text"]

MAX_HTML_BYTES = 4 * 1024 * 1024
MAX_TEXT_CHARS = 1024 * 1024
# lexbor's tree building is quadratic in the nesting depth of block elements (each
# <div> start tag walks the open-element stack); real pages stay far below this.
MAX_DEPTH = 256  # of the elements in _NESTING

_NEVER_TEXT = (
    "head, script, style, noscript, template, svg, math, iframe, object, embed, canvas, "
    "form, button, select, textarea, input, dialog, [hidden], [aria-hidden=true]"
)
_LANDMARKS = (
    "nav, [role=navigation], [role=banner], [role=contentinfo], [role=complementary], "
    "[role=search], [role=dialog], [role=alertdialog]"
)
# Tokens of class/id values (split on space, '-', '_') that name page furniture.
_BOILERPLATE = frozenset(
    "ad ads advert adverts advertisement sponsor sponsored promo banner cookie cookies "
    "consent gdpr newsletter subscribe subscription signup share sharing social related "
    "recommended trending popular sidebar widget comments comment disqus breadcrumb "
    "breadcrumbs nav navbar navigation menu footer masthead skipnav skip tags paywall "
    "modal popup".split()
)
_TOKEN_SPLIT = re.compile(r"[\s_-]+")
_DISPLAY_NONE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_VERSION_HEADER = re.compile(r"\b(?:versions?|builds?|firmware|releases?)\b", re.IGNORECASE)

_BLOCK = frozenset(
    "address article aside blockquote body dd details div dl dt fieldset figcaption figure "
    "footer h1 h2 h3 h4 h5 h6 header hr li main ol p section summary table tbody thead tfoot "
    "tr ul caption".split()
)
_CELL = frozenset(("td", "th"))
# Characters that only change rendering: dropping them joins what a reader sees as one token.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*(?:\n\s*)+")
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([A-Za-z0-9_.:-]{1,40})""", re.IGNORECASE)


def decode_html(data: bytes, encoding: str | None = None) -> str:
    """Text of an HTML document: BOM, then the caller's (HTTP) charset, then <meta>, then UTF-8/cp1252."""
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom) :].decode(codec, errors="replace")
    candidates = [encoding] if encoding else []
    m = _META_CHARSET.search(data, 0, 4096)
    if m:
        candidates.append(m.group(1).decode("ascii"))
    for codec in candidates:
        try:
            return data.decode(codec, errors="replace")
        except LookupError:
            continue
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


_TAG_NAME = re.compile(r"<(/?)([a-z][a-z0-9-]*)")
# The start tags that make lexbor walk the open-element stack (measured: 20,000 nested
# <div>/<section>/<ul>/... take about 1 s, nested <span>/<b>/<table> stay linear).
_NESTING = frozenset(
    "address article aside blockquote center details dialog dir div dl fieldset figcaption "
    "figure footer header hgroup listing main menu nav ol pre section summary ul".split()
)
_RAW_TEXT = frozenset(("script", "style", "textarea", "title", "xmp", "noscript"))


def _cut_deep(html: str, max_depth: int = MAX_DEPTH) -> str:
    """``html`` up to the first tag that would nest deeper than ``max_depth`` (linear scan)."""
    low = html.lower()
    depth = 0
    pos = low.find("<")
    while pos >= 0:
        if low.startswith("<!--", pos):
            end = low.find("-->", pos + 4)
            if end < 0:
                break
            pos = low.find("<", end + 3)
            continue
        m = _TAG_NAME.match(low, pos)
        gt = low.find(">", pos)
        if gt < 0:
            break
        if m:
            closing, name = m.groups()
            if name in _RAW_TEXT and not closing:
                end = low.find("</" + name, gt)
                if end < 0:
                    break
                gt = end
            elif name not in _NESTING:
                pass
            elif closing:
                depth = max(0, depth - 1)
            elif low[gt - 1] != "/":
                depth += 1
                if depth > max_depth:
                    return html[:pos]
        pos = low.find("<", gt + 1)
    return html


def _parse(html: bytes | str, max_bytes: int, encoding: str | None) -> LexborHTMLParser:
    if isinstance(html, bytes):
        html = decode_html(html[:max_bytes], encoding)
    else:
        html = html[:max_bytes]
    return LexborHTMLParser(_cut_deep(html))


def _is_boilerplate(node: LexborNode) -> bool:
    attrs = node.attributes
    names = f"{attrs.get('class') or ''} {attrs.get('id') or ''}".lower()
    if names.strip() and not _BOILERPLATE.isdisjoint(_TOKEN_SPLIT.split(names)):
        return True
    style = attrs.get("style")
    return bool(style and _DISPLAY_NONE.search(style))


def _is_link_list(node: LexborNode) -> bool:
    """A list whose text is mostly link text: menus, "previous/next", tag clouds."""
    links = node.css("a")
    if len(links) < 2:
        return False
    total = len(node.text(deep=True, separator=" ").split())
    linked = sum(len(a.text(deep=True, separator=" ").split()) for a in links)
    return total > 0 and linked / total >= 0.7


def _container(root: LexborNode) -> LexborNode:
    for selector in ("article", "main, [role=main]", "[itemprop=articleBody]"):
        found = root.css(selector)
        if len(found) == 1:
            return found[0]
    return root


def _dropped(root: LexborNode, *, page: bool) -> tuple[LexborNode, set[int]]:
    """The container to read and the mem_ids of the subtrees to skip in it.

    Nothing is removed from the tree: a selector's matches can nest (a <form>
    and its <input>), and destroying a node whose ancestor was destroyed first
    would touch freed memory in lexbor.
    """
    skip = {n.mem_id for n in root.css(_NEVER_TEXT)}
    skip.update(n.mem_id for n in root.css('a[href^="mailto:" i]'))
    if not page:
        return root, skip
    main = _container(root)
    inside_article = main.tag == "article"
    skip.update(n.mem_id for n in main.css(_LANDMARKS))
    skip.update(n.mem_id for n in main.css("header, footer, aside") if n.tag == "footer" or not inside_article)
    skip.update(n.mem_id for n in main.css("[class], [id], [style]") if _is_boilerplate(n))
    skip.update(n.mem_id for n in main.css("ul, ol") if _is_link_list(n))
    return main, skip


def _version_cells(root: LexborNode) -> set[int]:
    """mem_ids of the cells under a column headed Version/Build/Firmware/Release."""
    marked: set[int] = set()
    for table in root.css("table"):
        columns: frozenset[int] = frozenset()
        for row in table.css("tr"):
            cells = [c for c in row.iter() if c.tag in _CELL]
            if not columns and any(c.tag == "th" for c in cells):
                columns = frozenset(
                    i for i, c in enumerate(cells) if _VERSION_HEADER.search(c.text(deep=True, separator=" "))
                )
                if not columns:
                    break
                continue
            marked.update(c.mem_id for i, c in enumerate(cells) if i in columns)
    return marked


def _serialize(root: LexborNode, skip: set[int], max_chars: int) -> str:
    """Text of a tree minus the ``skip`` subtrees: blocks on their own lines, cells apart, <pre> verbatim."""
    version_cells = _version_cells(root)
    out: list[str] = []
    size = 0
    stack: list[LexborNode | None] = [root]  # None marks the end of a block
    while stack and size < max_chars:
        node = stack.pop()
        if node is None:
            out.append("\n")
            continue
        tag = node.tag
        if node.mem_id in skip:
            continue
        if tag == "-text":
            piece = node.text_content or ""
        elif tag == "pre":
            piece = "\n" + node.text(deep=True) + "\n"
        elif tag == "br":
            piece = "\n"
        elif not tag or tag.startswith("-"):  # comments, doctype
            continue
        else:
            if tag in _BLOCK:
                out.append("\n")
                stack.append(None)
            elif tag in _CELL:
                out.append(" \t version " if node.mem_id in version_cells else " \t ")
            stack.extend(reversed(list(node.iter(include_text=True))))
            continue
        out.append(piece)
        size += len(piece)
    text = "".join(out)[:max_chars].translate(_INVISIBLE)
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def html_main_text(
    html: bytes | str,
    *,
    max_bytes: int = MAX_HTML_BYTES,
    max_chars: int = MAX_TEXT_CHARS,
    encoding: str | None = None,
) -> str:
    """The main text of a whole page: its article, without navigation, ads, comments or footer."""
    tree = _parse(html, max_bytes, encoding)
    root = tree.body or tree.root
    if root is None:
        return ""
    return _serialize(*_dropped(root, page=True), max_chars)


def html_text(
    html: bytes | str,
    *,
    max_bytes: int = MAX_HTML_BYTES,
    max_chars: int = MAX_TEXT_CHARS,
    encoding: str | None = None,
) -> str:
    """All visible text of an HTML fragment (a feed entry's summary or content)."""
    tree = _parse(html, max_bytes, encoding)
    root = tree.body or tree.root
    if root is None:
        return ""
    return _serialize(*_dropped(root, page=False), max_chars)
