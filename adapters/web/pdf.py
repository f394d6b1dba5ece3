"""Text of a PDF document, read by pypdf in a child process with hard caps (see ``worker``).

Why a child: pypdf is pure Python and cannot be interrupted; one hostile page
(a 400 KB compressed content stream of 100,000 text operators) keeps it busy
for over ten seconds. The child is killed when ``time_budget`` is spent.

Inside the child the document is bounded too: at most ``max_pages`` pages, a
page whose decoded content stream is over ``MAX_CONTENT_BYTES`` is skipped
(its text is not read), the text is cut at ``max_chars``, and pypdf's own
decompression limits (75 MB per stream) apply. ``complete`` is False when any
of these cut the document short. An encrypted PDF is refused.
"""

from __future__ import annotations

import io
import warnings
from typing import NamedTuple

from .worker import WorkerError, child_main, run_child

MAX_PAGES = 50
MAX_CONTENT_BYTES = 512 * 1024  # decoded content stream of one page (~2.5 s of pypdf at worst)
MAX_CHARS = 1024 * 1024


class PdfText(NamedTuple):
    text: str
    complete: bool


class PdfError(Exception):
    """The document could not be read (not a PDF, broken, encrypted, over its time budget)."""


def pdf_text_sync(data: bytes, max_pages: int = MAX_PAGES, max_chars: int = MAX_CHARS) -> PdfText:
    """The text of a PDF, in this process (the child calls it; tests may too)."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    out: list[str] = []
    size = 0
    complete = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pypdf warns about every quirk of a real-world PDF
        try:
            reader = PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted:
                raise PdfError("the PDF is encrypted")
            pages = reader.pages
            complete = len(pages) <= max_pages
            for n in range(min(len(pages), max_pages)):
                contents = pages[n].get_contents()
                if contents is not None and len(contents.get_data()) > MAX_CONTENT_BYTES:
                    complete = False
                    continue
                text = pages[n].extract_text() or ""
                out.append(text)
                size += len(text)
                if size > max_chars:
                    complete = False
                    break
        except PdfError:
            raise
        except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
            raise PdfError(f"unreadable PDF ({type(exc).__name__})") from None
    return PdfText("\n\n".join(out)[:max_chars], complete)


async def pdf_text(
    data: bytes, *, time_budget: float, max_pages: int = MAX_PAGES, max_chars: int = MAX_CHARS
) -> PdfText:
    """The text of a PDF, read in a child process killed after ``time_budget`` seconds (PdfError if it fails)."""
    try:
        reply = await run_child(
            __name__, [str(max_pages), str(max_chars)], data, time_budget=time_budget, max_reply=8 * max_chars
        )
    except WorkerError as exc:
        raise PdfError(f"PDF: {exc}") from None
    return PdfText(str(reply["text"])[:max_chars], bool(reply["complete"]))


def _work(data: bytes, args: list[str]) -> dict:
    got = pdf_text_sync(data, int(args[0]), int(args[1]))
    return {"text": got.text, "complete": got.complete}


if __name__ == "__main__":
    child_main(_work, (PdfError,))
