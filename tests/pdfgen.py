"""Small PDFs for tests, written with pypdf: one page of text lines per list of lines."""

from __future__ import annotations

import io

from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject


def pdf_bytes(*pages: list[str] | str, compress: bool = False) -> bytes:
    """A PDF with one page per argument (a list of lines, or one string), Helvetica text."""
    w = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    fref = w._add_object(font)
    for lines in pages:
        lines = [lines] if isinstance(lines, str) else lines
        page = w.add_blank_page(612, 792)
        ops = ["BT /F1 10 Tf 50 750 Td 12 TL"]
        for ln in lines:
            esc = ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({esc}) Tj T*")
        ops.append("ET")
        stream = DecodedStreamObject()
        stream.set_data("\n".join(ops).encode("latin-1"))
        page[NameObject("/Contents")] = w._add_object(stream.flate_encode() if compress else stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): fref})}
        )
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()
