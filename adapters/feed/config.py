"""The ``feed`` adapter's options, and how they resolve to a parsing spec: the operator's keys, a preset's, defaults."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from ctd.adapters.feed import formats as ff
from ctd.adapters.feed.presets import PRESETS
from ctd.adapters.http import HttpOptions, parse_origins
from ctd.model import Duration, Secret, Severity

_Col = str | int
_Cols = str | int | list[str | int]
_ROLES_SINGLE = ("type", "severity", "first_seen", "last_seen", "comments", "reference", "reputation")
_TYPE = Literal["url", "domain", "hostname", "ipv4", "ipv6", "cidr4", "cidr6", "md5", "sha1", "sha256", "email", "ip"]
_MAP_TARGETS = frozenset(
    ("url", "domain", "hostname", "ipv4", "ipv6", "cidr4", "cidr6", "md5", "sha1", "sha256", "email", "ip", "")
)


class FeedConfig(HttpOptions, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``feed`` adapter's ``[plugins.NAME]`` keys; parsing keys left unset come from the preset."""

    url: str = ""  # required when pulling; for misp the feed's base URL (manifest.json is under it)
    format: Literal["text", "csv", "json", "jsonl", "ndjson", "misp"] | None = None
    preset: Literal["urlhaus", "threatfox", "malwarebazaar", "feodo"] | None = None
    snapshot: bool | None = None  # default: true, false for misp
    max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 256 << 20
    headers: dict[str, str] = {}
    auth_key: Secret | None = None  # a secret: sent as the Auth-Key header (abuse.ch)
    # Other origins (https://cdn.example) a redirect may lead to; followed without
    # Auth-Key, custom headers or credentials. Any other cross-origin redirect fails the pull.
    allow_redirects_to: list[str] = []
    # One transaction per batch: bigger batches write fewer index pages per IoC.
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 20_000
    refetch_after: Duration = Duration(86400)
    # parsing (all formats)
    type: _TYPE | None = None
    severity: Severity | None = None
    comment_prefix: str | None = None
    tag_separator: str | None = None
    null_values: list[str] | None = None
    type_map: dict[str, str] | None = None
    reputation_scale: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # the value built from several columns (csv) or fields (json): "{Start}/{Netblock}"
    value_template: str | None = None
    # strptime formats of the time columns/fields, for what is not ISO 8601, epoch or RFC 2822
    time_format: str | None = None  # every time column
    first_seen_format: str | None = None
    last_seen_format: str | None = None
    # csv
    delimiter: str | None = None
    quotechar: str | None = None
    header: bool | None = None
    skip_initial_space: bool | None = None
    value_column: _Cols | None = None
    type_column: _Col | None = None
    severity_column: _Col | None = None
    tags_column: _Cols | None = None
    first_seen_column: _Col | None = None
    last_seen_column: _Col | None = None
    comments_column: _Col | None = None
    reference_column: _Col | None = None
    reputation_column: _Col | None = None
    # a row with more than column_count cells has the delimiter inside overflow_column (free text)
    column_count: Annotated[int, msgspec.Meta(ge=1)] | None = None
    overflow_column: Annotated[int, msgspec.Meta(ge=0)] | None = None
    # json
    json_path: str | None = None
    value_field: str | list[str] | None = None
    type_field: str | None = None
    severity_field: str | None = None
    tags_field: str | list[str] | None = None
    first_seen_field: str | None = None
    last_seen_field: str | None = None
    comments_field: str | None = None
    reference_field: str | None = None
    reputation_field: str | None = None

    def __post_init__(self) -> None:
        resolve(self)  # msgspec reports a ValueError here as a validation error of the table
        parse_origins(self.allow_redirects_to)

    @property
    def effective_format(self) -> str:
        fmt = self.format or PRESETS.get(self.preset or "", {}).get("format", "text")
        return "jsonl" if fmt == "ndjson" else fmt

    @property
    def effective_snapshot(self) -> bool:
        return self.snapshot if self.snapshot is not None else self.effective_format != "misp"


def _tuple(v: Any) -> tuple[Any, ...]:
    return () if v is None else tuple(v) if isinstance(v, list) else (v,)


def _preset(cfg: FeedConfig) -> dict[str, Any]:
    """The preset's keys for the format in use (a preset may describe a JSON export beside its CSV)."""
    preset = PRESETS.get(cfg.preset or "", {})
    fmt = cfg.effective_format
    if preset and fmt != preset.get("format"):
        if fmt not in preset.get("variants", {}):
            raise ValueError(f"preset {cfg.preset!r} has no {fmt} variant (it reads {preset.get('format')})")
        return preset["variants"][fmt]
    return preset


def resolve(cfg: FeedConfig) -> ff.Spec:
    """The parsing spec: the operator's keys, else the preset's, else the defaults (raises ValueError)."""
    preset = _preset(cfg)
    from_preset: set[str] = set()

    def get(key: str, default: Any = None) -> Any:
        v = getattr(cfg, key)
        if v is None and key in preset:
            from_preset.add(key)
            return preset[key]
        return default if v is None else v

    fmt = cfg.effective_format
    delimiter, quotechar = get("delimiter", ","), get("quotechar", '"')
    if len(delimiter) != 1 or delimiter in "\r\n" or len(quotechar) != 1 or quotechar in "\r\n":
        raise ValueError("delimiter and quotechar must be one character (not a newline)")
    prefix, sep = get("comment_prefix", "#"), get("tag_separator", ";")
    if prefix != prefix.strip() or not sep:
        raise ValueError("comment_prefix must not have surrounding spaces; tag_separator must not be empty")
    type_map = get("type_map", {})
    if bad := sorted(set(type_map.values()) - _MAP_TARGETS):
        raise ValueError(f"type_map targets must be ctd types, 'ip' or '' (skip): {bad!r}")
    header = get("header", True)
    fields: dict[str, tuple[_Col, ...]] = {}
    template_text = get("value_template")
    template = ff.parse_template(template_text) if template_text is not None else ()
    kind = "column" if fmt == "csv" else "field"
    if template and fmt not in ("csv", "json", "jsonl"):
        raise ValueError("value_template needs format csv, json or jsonl")
    if template and getattr(cfg, f"value_{kind}") is not None:
        raise ValueError(f"give value_template or value_{kind}, not both")
    optional: set[_Col] = set()
    if fmt in ("csv", "json", "jsonl"):
        fields["value"] = () if template else _tuple(get(f"value_{kind}", "value"))
        fields["tags"] = _tuple(get(f"tags_{kind}"))
        fields.update({r: _tuple(get(f"{r}_{kind}")) for r in _ROLES_SINGLE})
        if not template and not fields["value"]:
            raise ValueError(f"value_{kind} must name at least one {kind}")
        # A preset's columns may be missing from one of the export's variants; the operator's may not.
        for role, named in fields.items():
            if f"{role}_{kind}" in from_preset:
                optional.update(named)
    if fmt == "csv":
        cols = [c for cs in fields.values() for c in cs] + [c for _, c in template if c is not None]
        if any(isinstance(c, int) and c < 0 for c in cols):
            raise ValueError("column numbers are 0-based indices >= 0")
        if not header and any(isinstance(c, str) for c in cols):
            raise ValueError("columns given by name need header = true")
    count, overflow = get("column_count"), get("overflow_column")
    if (count is None) != (overflow is None) or (count is not None and (fmt != "csv" or overflow >= count)):
        raise ValueError("column_count and overflow_column go together, for csv, with overflow_column < column_count")
    time_formats = {
        role: f
        for role in ("first_seen", "last_seen")
        if (f := get(f"{role}_format") or get("time_format")) is not None
    }
    if any("%" not in f for f in time_formats.values()):
        raise ValueError("time formats are strptime formats, e.g. '%d-%m-%Y'")
    path = get("json_path", "")
    return ff.Spec(
        format=fmt,
        type=get("type"),
        severity=get("severity", "unknown"),
        comment_prefix=prefix,
        tag_separator=sep,
        null_values=frozenset(get("null_values", [])),
        type_map=dict(type_map),
        reputation_scale=get("reputation_scale", 10),
        delimiter=delimiter,
        quotechar=quotechar,
        header=header,
        skip_initial_space=get("skip_initial_space", False),
        json_path=tuple(path.split(".")) if path else (),
        fields=fields,
        optional=frozenset(optional),
        template=template,
        time_formats=time_formats,
        column_count=count,
        overflow_column=overflow,
    )
