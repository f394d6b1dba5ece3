"""Parsing presets for well-known feeds (``preset = "urlhaus"``).

A preset only fills parsing keys the operator left unset; ``url`` is never
part of a preset (abuse.ch has several exports per feed and now asks for an
``auth_key``). Columns are taken by header name, so a column added later (as
ThreatFox once added ``is_compromised``) does not shift anything, and each
preset matches every published variant of its export: a column a variant
lacks is simply empty (a preset's columns are optional; of its value
columns, the ones present are read), and where a variant renamed a column
the preset lists both names (the first one present and not empty is read).
The header of these CSV exports is the last ``#`` comment line (URLhaus,
ThreatFox, MalwareBazaar, Feodo Tracker until 2019) or the first plain line
(Feodo Tracker now); the CSV parser finds either. ThreatFox and MalwareBazaar
separate fields with ``", "``, hence ``skip_initial_space``. ``variants``
holds the keys of an export in another format (``format = "json"`` with
``preset = "threatfox"`` reads ThreatFox's JSON export).
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

# ip:port is a C2 endpoint: the IP is what a firewall can block (the port is dropped).
_THREATFOX_TYPES = {
    "ip:port": "ip",
    "domain": "domain",
    "url": "url",
    "md5_hash": "md5",
    "sha1_hash": "sha1",
    "sha256_hash": "sha256",
}

PRESETS: dict[str, dict[str, Any]] = {
    # csv_recent/csv_online: id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter
    # (2019-2020 without last_online); per-country/TLD/ASN feeds:
    # Dateadded (UTC),URL,URL_status,Threat,Host,IPaddress,ASnumber,Country
    "urlhaus": {
        **_ABUSE_CH,
        "type": "url",
        "value_column": "url",
        "first_seen_column": ["dateadded", "dateadded (utc)"],
        "tags_column": ["threat", "tags"],
        "reference_column": "urlhaus_link",
    },
    # first_seen_utc,ioc_id,ioc_value,ioc_type,threat_type,fk_malware,malware_alias,
    # malware_printable,last_seen_utc,confidence_level,[is_compromised,]reference,tags,anonymous,reporter
    # The JSON export (export/json/recent/): {"<ioc id>": [{ioc_value, ioc_type, ...}], ...}.
    "threatfox": {
        **_ABUSE_CH,
        "value_column": "ioc_value",
        "type_column": "ioc_type",
        "type_map": _THREATFOX_TYPES,
        "first_seen_column": "first_seen_utc",
        "last_seen_column": "last_seen_utc",
        "reputation_column": "confidence_level",
        "reputation_scale": 100,
        "tags_column": ["threat_type", "malware_printable", "tags"],
        "reference_column": "reference",
        "variants": {
            "json": {
                "format": "json",
                "tag_separator": ",",
                "value_field": "ioc_value",
                "type_field": "ioc_type",
                "type_map": _THREATFOX_TYPES,
                "first_seen_field": "first_seen_utc",
                "last_seen_field": "last_seen_utc",
                "reputation_field": "confidence_level",
                "reputation_scale": 100,
                "tags_field": ["threat_type", "malware_printable", "tags"],
                "reference_field": "reference",
            },
        },
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
    # first_seen_utc,dst_ip,dst_port,c2_status,last_online,malware (until 2019: # Firstseen,DstIP,DstPort,Malware)
    # The JSON download (ipblocklist.json): [{ip_address, port, status, ..., first_seen, last_online, malware}]
    "feodo": {
        **_ABUSE_CH,
        "type": "ipv4",
        "value_column": ["dst_ip", "dstip"],
        "first_seen_column": ["first_seen_utc", "firstseen"],
        "last_seen_column": "last_online",
        # Offline C2s stay in the list (Feodo keeps them while they may come back); the
        # status becomes a tag so a rule can leave them out: `not tags has "offline"`.
        "tags_column": ["malware", "c2_status"],
        "variants": {
            "json": {
                "format": "json",
                "type": "ipv4",
                "value_field": "ip_address",
                "first_seen_field": "first_seen",
                "last_seen_field": "last_online",
                "tags_field": ["malware", "status"],
            },
        },
    },
}
