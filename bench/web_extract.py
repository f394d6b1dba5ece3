"""Worst cases of the web text/IoC extraction: 5 MB adversarial pages through html_main_text and extract.

    python bench/web_extract.py [--mb 5] [--json] [--only NAME,...]

Each input is built to hit a known super-linear path: in lexbor (deeply nested
blocks), in ioc-finder's grammars (dense '@', dotted runs, long URLs) or in
regexes (long runs without separators).  Limits are raised to the input size
(max_bytes/max_chars) and the time budget to 10 minutes so that the figures
show the unbudgeted cost; ``complete`` is False only where a result cap hit.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ctd.adapters.web.extract import extract_detailed
from ctd.adapters.web.html import html_main_text


def _tokens(piece: str, length: int, total: int) -> str:
    token = (piece * (length // len(piece) + 1))[:length] + " "
    return token * (total // len(token))


def texts(n: int) -> dict[str, str]:
    rnd = random.Random(7)
    page = (Path(__file__).resolve().parent.parent / "tests/corpus_web/paste-plain/paste.txt").read_text()
    return {
        "letters (one 5 MB token)": "a" * n,
        "dotted run 'a.a.a...'": "a." * (n // 2),
        "2 KB tokens of 'a.'": _tokens("a.", 2000, n),
        "2 KB tokens of '1.'": _tokens("1.", 2000, n),
        "2 KB tokens of 'ab@'": _tokens("ab@", 2000, n),
        "2 KB tokens of 'x@a.b'": _tokens("x@a.b", 2000, n),
        "2 KB URLs of '/a'": _tokens("http://a.co/" + "a/" * 994, 2000, n),
        "2 KB URLs of ')'": _tokens("http://a.co/" + ")" * 1988, 2000, n),
        "defang markers 'a[.]'": "a[.]" * (n // 4),
        "version lists": "version 1.2.3.4 and " * (n // 20),
        "distinct e-mails": " ".join(f"u{i}@d{i}.com" for i in range(n // 16)),
        "random punctuation": "".join(rnd.choice("abc.:/@[]()01 \n-_") for _ in range(n)),
        "a real paste, repeated": (page * (n // len(page) + 1))[:n],
    }


def pages(n: int) -> dict[str, str]:
    return {
        "nested <div>": "<div>" * (n // 5),
        "unclosed <b><i><u>": "<b><i><u>" * (n // 9),
        "many <p> with IoCs": "<p>1.2.3[.]4</p>" * (n // 16),
        "many version tables": "<table><tr><th>Version</th></tr><tr><td>1.2.3.4</td></tr></table>" * (n // 70),
        "one huge attribute": '<div class="' + "a " * (n // 2) + '">x</div>',
        "one big <pre>": "<pre>" + "x y\n" * (n // 4) + "</pre>",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    n = int(args.mb * 1_000_000)
    only = {s for s in args.only.split(",") if s}
    rows = []
    for name, text in texts(n).items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        r = extract_detailed(text, max_chars=n, time_budget=600)
        rows.append(
            {
                "input": name,
                "step": "extract",
                "mb": round(len(text) / 1e6, 1),
                "seconds": round(time.perf_counter() - t0, 2),
                "values": len(r.values),
                "complete": r.complete,
            }
        )
    for name, html in pages(n).items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        text = html_main_text(html, max_bytes=n, max_chars=n)
        t1 = time.perf_counter()
        r = extract_detailed(text, max_chars=n, time_budget=600)
        rows.append(
            {
                "input": name,
                "step": "html_main_text + extract",
                "mb": round(len(html) / 1e6, 1),
                "seconds": round(time.perf_counter() - t0, 2),
                "html_seconds": round(t1 - t0, 2),
                "values": len(r.values),
                "complete": r.complete,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(
            f"{r['input']:28} {r['step']:26} {r['mb']:4} MB {r['seconds']:6.2f} s  "
            f"values={r['values']} complete={r['complete']}"
        )


if __name__ == "__main__":
    main()
