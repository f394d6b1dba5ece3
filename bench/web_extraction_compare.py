"""Compare IoC extractors and HTML main-text extractors on tests/corpus_web.

    pip install iocsearcher trafilatura    # not ctd dependencies: only for this comparison
    python bench/web_extraction_compare.py [--json] [--adversarial]

Part 1 runs each IoC extractor on the same text (ctd's main text of each page,
the raw paste, each feed entry's text) and scores it against the corpus truth
(expected | expected_warninglisted | expected_residual): every value goes
through ctd.canon and the publisher exclusion first, so only what the library
found differs.  Part 2 feeds the main text of each HTML page from selectolax
(ctd's rules) and from trafilatura to ctd's extractor and scores the result.
``--adversarial`` times each library on 200 KB pathological inputs in a child
process with a 60 s limit.  The numbers are in docs/evaluations/ioc-extraction.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ctd.adapters.web.extract import _trim_url, extract
from ctd.adapters.web.html import html_main_text
from ctd.canon import canonicalize, host_of_url
from ctd.errors import InvalidIndicator
from tests.webcorpus import Item, feed_entry_texts, items, text_of

logging.disable(logging.CRITICAL)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import ioc_finder

IOC_FINDER_TYPES = {
    "urls": "url",
    "domains": "domain",
    "ipv4s": "ipv4",
    "ipv6s": "ipv6",
    "ipv4_cidrs": "cidr4",
    "ipv6_cidrs": "cidr6",
    "md5s": "md5",
    "sha1s": "sha1",
    "sha256s": "sha256",
    "email_addresses_complete": "email",
}
IOCSEARCHER_TYPES = {
    "url": "url",
    "fqdn": "domain",
    "ip4": "ipv4",
    "ip6": "ipv6",
    "ip4Net": "cidr4",
    "md5": "md5",
    "sha1": "sha1",
    "sha256": "sha256",
    "email": "email",
}


def _canon(pairs, site: str) -> set[tuple[str, str]]:
    out = set()
    for kind, raw in pairs:
        try:
            kind, value = canonicalize(kind, raw)
        except InvalidIndicator:
            continue
        host = {"url": lambda v: host_of_url(v), "email": lambda v: v.rpartition("@")[2], "domain": lambda v: v}.get(
            kind, lambda v: ""
        )(value)
        if site and (host == site or host.endswith("." + site)):
            continue
        out.add((kind, value))
    return out


def ioc_finder_default(text: str, site: str) -> set:
    found = ioc_finder.find_iocs(text, included_ioc_types=list(IOC_FINDER_TYPES))
    return _canon(((IOC_FINDER_TYPES[k], v) for k, vs in found.items() for v in vs), site)


def ioc_finder_tuned(text: str, site: str) -> set:
    found = ioc_finder.find_iocs(
        text,
        included_ioc_types=list(IOC_FINDER_TYPES),
        parse_domain_from_url=False,
        parse_from_url_path=False,
        parse_domain_from_email_address=False,
        parse_address_from_cidr=False,
    )
    return _canon(
        ((IOC_FINDER_TYPES[k], _trim_url(v) if k == "urls" else v) for k, vs in found.items() for v in vs), site
    )


def _searcher():
    from iocsearcher.searcher import Searcher

    return Searcher()


def iocsearcher_default(text: str, site: str, no_overlaps: bool = False) -> set:
    found = _SEARCHER.search_data(text, targets=list(IOCSEARCHER_TYPES), no_overlaps=no_overlaps)
    return _canon(((IOCSEARCHER_TYPES[i.name], i.value) for i in found), site)


def iocsearcher_no_overlaps(text: str, site: str) -> set:
    return iocsearcher_default(text, site, no_overlaps=True)


def ctd_pipeline(text: str, site: str) -> set:
    return set(extract(text, exclude_domains=[site] if site else []))


def texts(item: Item) -> list[str]:
    return feed_entry_texts(item.path.read_bytes()) if item.kind == "feed" else [text_of(item)]


def score(name: str, fn, corpus: list[Item]) -> dict:
    tp = fp = fn_ = 0
    times = []
    misses: list[str] = []
    for item in corpus:
        truth = item.extractable
        found: set = set()
        t0 = time.perf_counter()
        for text in texts(item):
            found |= fn(text, item.site)
        times.append(time.perf_counter() - t0)
        tp += len(found & truth)
        fp += len(found - truth)
        fn_ += len(truth - found)
        misses += [f"{item.name}: FP {k} {v}" for k, v in sorted(found - truth)]
        misses += [f"{item.name}: FN {k} {v}" for k, v in sorted(truth - found)]
    return {
        "extractor": name,
        "tp": tp,
        "fp": fp,
        "fn": fn_,
        "precision": round(tp / (tp + fp), 3) if tp + fp else 0.0,
        "recall": round(tp / (tp + fn_), 3),
        "ms_per_item": round(statistics.mean(times) * 1000, 1),
        "errors": misses,
    }


def main_text_scores(corpus: list[Item]) -> list[dict]:
    import trafilatura

    pages = [i for i in corpus if i.kind == "html"]
    out = []
    for name, fn in (
        ("selectolax (ctd rules)", html_main_text),
        (
            "trafilatura (tables, no comments)",
            lambda raw: (
                trafilatura.extract(
                    raw.decode("utf-8"),
                    include_tables=True,
                    include_comments=False,
                    include_links=False,
                    favor_recall=True,
                )
                or ""
            ),
        ),
    ):
        tp = fp = fn_ = 0
        times = []
        errors = []
        for item in pages:
            raw = item.path.read_bytes()
            t0 = time.perf_counter()
            text = fn(raw)
            times.append(time.perf_counter() - t0)
            found = set(extract(text, exclude_domains=item.exclude))
            truth = item.extractable
            tp += len(found & truth)
            fp += len(found - truth)
            fn_ += len(truth - found)
            errors += [f"{item.name}: FP {k} {v}" for k, v in sorted(found - truth)]
            errors += [f"{item.name}: FN {k} {v}" for k, v in sorted(truth - found)]
        out.append(
            {
                "extractor": name,
                "tp": tp,
                "fp": fp,
                "fn": fn_,
                "precision": round(tp / (tp + fp), 3) if tp + fp else 0.0,
                "recall": round(tp / (tp + fn_), 3),
                "ms_per_page": round(statistics.mean(times) * 1000, 2),
                "errors": errors,
            }
        )
    return out


ADVERSARIAL = {
    "200k 'a'": "'a' * 200_000",
    "100k 'a.'": "'a.' * 100_000",
    "100k '1.'": "'1.' * 100_000",
    "66k 'ab@'": "'ab@' * 66_000",
    "50k 'a[.]'": "'a[.]' * 50_000",
}


def adversarial() -> list[dict]:
    calls = {  # (set-up, timed call)
        "ioc-finder find_iocs": ("import ioc_finder", "ioc_finder.find_iocs(t)"),
        "iocsearcher search_data": ("from iocsearcher.searcher import Searcher; s = Searcher()", "s.search_data(t)"),
        "ctd extract": ("from ctd.adapters.web.extract import extract", "extract(t)"),
    }
    rows = []
    for label, expr in ADVERSARIAL.items():
        row = {"input": label}
        for name, (setup, call) in calls.items():
            code = (
                f"import time, warnings; warnings.simplefilter('ignore'); {setup}; t = {expr}; "
                f"t0 = time.perf_counter(); {call}; print(time.perf_counter() - t0)"
            )
            try:
                res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
                row[name] = f"{float(res.stdout.strip().splitlines()[-1]):.2f} s"
            except subprocess.TimeoutExpired:
                row[name] = "> 60 s"
        rows.append(row)
    return rows


def main() -> None:
    global _SEARCHER
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--adversarial", action="store_true")
    ap.add_argument("--errors", action="store_true", help="list every false positive/negative")
    args = ap.parse_args()
    _SEARCHER = _searcher()
    corpus = items()
    result = {
        "ioc": [
            score("ioc-finder find_iocs (defaults)", ioc_finder_default, corpus),
            score("ioc-finder find_iocs (no domain-from-url/email, no url paths)", ioc_finder_tuned, corpus),
            score("iocsearcher search_data (defaults)", iocsearcher_default, corpus),
            score("iocsearcher search_data (no_overlaps)", iocsearcher_no_overlaps, corpus),
            score("ctd: ioc-finder parse_* behind ctd's guards", ctd_pipeline, corpus),
        ],
        "main_text": main_text_scores(corpus),
    }
    if args.adversarial:
        result["adversarial"] = adversarial()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for section in ("ioc", "main_text"):
        for r in result[section]:
            speed = r.get("ms_per_item", r.get("ms_per_page"))
            print(
                f"{r['extractor']:64} TP {r['tp']:3} FP {r['fp']:3} FN {r['fn']:3} "
                f"P {r['precision']:.3f} R {r['recall']:.3f} {speed} ms"
            )
            if args.errors:
                for e in r["errors"]:
                    print("    " + e)
    for row in result.get("adversarial", []):
        print(row)


if __name__ == "__main__":
    main()
