"""Times as real feeds write them (issue 12 finding 5): every published format reads to the same instant."""

from __future__ import annotations

import pytest

from ctd.times import iso, parse_time

AT = "2026-01-02T03:04:05Z"


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-02T03:04:05Z",  # ISO 8601 (STIX, TAXII)
        "2026-01-02T03:04:05.000Z",
        "2026-01-02T04:04:05+01:00",  # with an offset (PhishTank)
        "2026-01-02T03:04:05",  # no zone: UTC
        "2026-01-02 03:04:05",  # abuse.ch, DataPlane: no T
        "2026-01-02 03:04:05 UTC",  # "... UTC" (URLhaus feeds, DShield)
        "1767323045",  # epoch seconds (MISP)
        "1767323045000",  # epoch milliseconds
        "Fri, 02 Jan 2026 03:04:05 +0000",  # RFC 2822 (VX Vault, IPsum, RSS)
        "Fri, 02 Jan 2026 03:04:05 GMT",
    ],
)
def test_published_formats_read(text: str) -> None:
    """ISO 8601 with or without T and zone, YYYY-MM-DD HH:MM:SS, epoch s and ms, and RFC 2822 all read."""
    assert iso(parse_time(text)) == AT


def test_date_alone_is_midnight_utc() -> None:
    """A date without a time is its midnight, UTC."""
    assert iso(parse_time("2026-01-02")) == "2026-01-02T00:00:00Z"


def test_declared_format_reads_day_first_dates() -> None:
    """A declared strptime format reads what no guess may (01-06-2019 is the 1st of June with %d-%m-%Y)."""
    assert iso(parse_time("01-06-2019", "%d-%m-%Y")) == "2019-06-01T00:00:00Z"
    with pytest.raises(ValueError):
        parse_time("01-06-2019")  # ambiguous: never guessed


@pytest.mark.parametrize("text", ["someday", "", "pipe", "32-13-2026", "2026-13-45"])
def test_garbage_is_a_value_error(text: str) -> None:
    """What is no time raises ValueError (callers drop the field)."""
    with pytest.raises(ValueError):
        parse_time(text)
