"""Parsing presets for well-known feeds (``preset = "urlhaus"``).

A preset only fills parsing keys the operator left unset; ``url`` is never
part of a preset (abuse.ch has several exports per feed and now asks for an
``auth_key``). Columns are taken by header name, so a column added later (as
ThreatFox once added ``is_compromised``) does not shift anything. The header
of these CSV exports is the last ``#`` comment line (URLhaus, ThreatFox,
MalwareBazaar) or the first plain line (Feodo Tracker); the CSV parser finds
either. ThreatFox and MalwareBazaar separate fields with ``", "``, hence
``skip_initial_space``.
"""

from __future__ import annotations

from typing import Any

_ABUSE_CH: dict[str, Any] = {
    "format": "csv",
    "header": True,
    "skip_initial_space": True,
    "tag_separator": ",",
    "null_values": ["None", "n/a"],
}

PRESETS: dict[str, dict[str, Any]] = {
    # id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter
    "urlhaus": {
        **_ABUSE_CH,
        "type": "url",
        "value_column": "url",
        "first_seen_column": "dateadded",
        "tags_column": ["threat", "tags"],
        "reference_column": "urlhaus_link",
    },
    # first_seen_utc,ioc_id,ioc_value,ioc_type,threat_type,fk_malware,malware_alias,
    # malware_printable,last_seen_utc,confidence_level,[is_compromised,]reference,tags,anonymous,reporter
    "threatfox": {
        **_ABUSE_CH,
        "value_column": "ioc_value",
        "type_column": "ioc_type",
        # ip:port is a C2 endpoint: the IP is what a firewall can block (the port is dropped).
        "type_map": {
            "ip:port": "ip",
            "domain": "domain",
            "url": "url",
            "md5_hash": "md5",
            "sha1_hash": "sha1",
            "sha256_hash": "sha256",
        },
        "first_seen_column": "first_seen_utc",
        "last_seen_column": "last_seen_utc",
        "reputation_column": "confidence_level",
        "reputation_scale": 100,
        "tags_column": ["threat_type", "malware_printable", "tags"],
        "reference_column": "reference",
    },
    # first_seen_utc,sha256_hash,md5_hash,sha1_hash,reporter,file_name,file_type_guess,
    # mime_type,signature,clamav,vtpercent,imphash,ssdeep,tlsh
    "malwarebazaar": {
        **_ABUSE_CH,
        # One sample, three IoCs: destinations differ in the hash they accept.
        "value_column": ["sha256_hash", "md5_hash", "sha1_hash"],
        "first_seen_column": "first_seen_utc",
        "tags_column": ["signature"],
    },
    # first_seen_utc,dst_ip,dst_port,c2_status,last_online,malware
    "feodo": {
        **_ABUSE_CH,
        "type": "ipv4",
        "value_column": "dst_ip",
        "first_seen_column": "first_seen_utc",
        "last_seen_column": "last_online",
        # Offline C2s stay in the list (Feodo keeps them while they may come back); the
        # status becomes a tag so a rule can leave them out: `not tags has "offline"`.
        "tags_column": ["malware", "c2_status"],
    },
}
