"""PDF text for the web adapters (adapters/web/pdf.py): pypdf in a child process with page, size and time caps."""

from __future__ import annotations

import pytest

from ctd.adapters.web import pdf as pdfmod
from ctd.adapters.web.pdf import PdfError, pdf_text, pdf_text_sync
from tests.pdfgen import pdf_bytes


def test_text_of_every_page():
    """Each page's text is read, in order."""
    got = pdf_text_sync(pdf_bytes(["C2 hxxps://evil-site[.]com/gate"], "185.242.226[.]3"))
    assert got.complete and "evil-site[.]com/gate" in got.text and got.text.index("gate") < got.text.index("185")


def test_page_cap():
    """Pages past max_pages are not read and the text is incomplete."""
    got = pdf_text_sync(pdf_bytes("one.example", "two.example", "three.example"), max_pages=2)
    assert not got.complete and "two.example" in got.text and "three" not in got.text


def test_huge_content_stream_is_skipped(monkeypatch):
    """A page whose decoded content stream is over MAX_CONTENT_BYTES is skipped (pypdf would take seconds)."""
    monkeypatch.setattr(pdfmod, "MAX_CONTENT_BYTES", 2000)
    big = [f"line {i} filler-{i}.example" for i in range(200)]
    got = pdf_text_sync(pdf_bytes("small.example", big, compress=True))
    assert not got.complete and "small.example" in got.text and "filler" not in got.text


def test_char_cap():
    """The text is cut at max_chars and marked incomplete."""
    got = pdf_text_sync(pdf_bytes("a" * 50, "b" * 50), max_chars=60)
    assert not got.complete and len(got.text) == 60


@pytest.mark.parametrize("data", [b"not a pdf at all", b"%PDF-1.4\n" + b"A" * 2000, b""])
def test_garbage_is_refused(data):
    """What is not a readable PDF raises PdfError (never another exception)."""
    with pytest.raises(PdfError):
        pdf_text_sync(data)


def test_encrypted_is_refused():
    """An encrypted PDF is refused."""
    from io import BytesIO

    from pypdf import PdfReader, PdfWriter

    w = PdfWriter(clone_from=PdfReader(BytesIO(pdf_bytes("secret.example"))))
    w.encrypt("pw")
    out = BytesIO()
    w.write(out)
    with pytest.raises(PdfError, match="encrypted"):
        pdf_text_sync(out.getvalue())


async def test_child_process_reads_it():
    """pdf_text runs the reader in a child and returns its text."""
    got = await pdf_text(pdf_bytes("child.example"), time_budget=30)
    assert got.complete and "child.example" in got.text


async def test_child_error_is_a_pdf_error():
    """A broken PDF in the child comes back as PdfError with the child's reason."""
    with pytest.raises(PdfError, match="unreadable PDF"):
        await pdf_text(b"%PDF-1.4 broken", time_budget=30)


async def test_child_over_its_time_budget_is_killed():
    """A PDF the reader cannot finish within time_budget is given up: the child is killed, PdfError says why."""
    slow = pdf_bytes([f"line {i} 10.0.{i % 256}.1 " * 3 for i in range(4000)], compress=True)  # ~1 s of pypdf
    with pytest.raises(PdfError, match="took longer than 0.3 s"):
        await pdf_text(slow, time_budget=0.3)
