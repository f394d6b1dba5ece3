"""MISP warning lists as fast matchers: does an indicator hit a list of known-benign values?

The lists are the ones ``pymispwarninglists`` ships (``data/misp-warninglists/lists/NAME/list.json``);
only the data files are read, the package's own API is not used.  A list is
named by its directory (``rfc1918``, ``tranco10k``, ...).  Matching follows
MISP (``app/Model/Warninglist.php``):

- a list applies to the indicator types its ``matching_attributes`` name (all
  types when it names none); ctd's types map to MISP's in ``_MISP_TYPES``;
- ``cidr``: the address is inside a listed network (a ctd ``cidr4``/``cidr6``
  value when the whole network is inside the lists);
- ``hostname``: the host (of a url: its host) or one of its parent domains is
  listed, **except** across a public suffix: an entry that is itself a public
  suffix (``github.io``, ``duckdns.org``, ``trycloudflare.com``, from the
  ``second-level-tlds`` and ``tlds`` lists) only matches itself, since its
  subdomains belong to unrelated owners;
- ``string``: exact match (hashes, domains and hostnames compared lower-case);
- ``substring``: a listed string occurs in the value;
- ``regex``: the list's PCRE ``/pattern/flags`` matches (patterns Python's
  ``re`` cannot compile are skipped and reported in ``skipped``).

ctd extension: a url whose host is an IP literal is also checked against the
``cidr`` lists that apply to IP addresses (``http://192.168.1.1/`` hits
``rfc1918``).

When several lists hit, the one earliest in the loaded order wins, so the
order of ``DEFAULT_LISTS`` (specific before general) is the order of report.

Structures: one dict per matching family (exact strings, hostnames) mapping an
entry to the ids of the lists holding it; lists over ``COMPACT_OVER`` entries
are kept instead as a sorted ``array('q')`` of ``hash(entry)`` searched with
bisect (8 bytes an entry; a 64-bit hash collision, odds ~2**-64 per lookup,
would only flag a value); per address family a sorted array of segment starts
with the id of the best list covering each segment; substring lists compile to
one regex per type.  See ``bench/warninglists.py`` for load time, memory and
throughput.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import socket
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import msgspec

from ctd.canon import host_of_url
from ctd.errors import ConfigError
from ctd.warninglists_structs import NO_HIT, Compact, network, pcre, segments, trie_regex

__all__ = ["COMPACT_OVER", "DEFAULT_LISTS", "ListInfo", "WarningLists", "available", "lists_dir"]

# Ordered: the first list that hits is the one reported.
DEFAULT_LISTS: tuple[str, ...] = (
    # special-use address space
    "rfc1918",
    "rfc6598",
    "rfc3849",
    "ipv6-linklocal",
    "rfc5735",
    "multicast",
    # public DNS resolvers, CDN edges (shared by many sites: never block them by address)
    "public-dns-v4",
    "public-dns-v6",
    "cloudflare",
    "fastly",
    "akamai",
    # hashes of empty, test and common benign files
    "empty-hashes",
    "eicar.com",
    "common-ioc-false-positive",
    "ti-falsepositives",
    "nioc-filehash",
    # names cited by articles: documentation domains, public suffixes, vendors, sandboxes, top sites
    "rfc6761",
    "second-level-tlds",
    "security-provider-blogpost",
    "automated-malware-analysis",
    "tranco10k",
    # role addresses (security@, abuse@, ...)
    "common-contact-emails",
)
COMPACT_OVER = 250_000  # entries; only the million-entry top lists are this big
_PUBLIC_SUFFIX_LISTS = ("second-level-tlds", "tlds")
_IP_TYPES = frozenset(("ipv4", "ipv6", "cidr4", "cidr6"))
_HASH_LEN = {32: "md5", 40: "sha1", 64: "sha256"}
_MISP_TYPES: dict[str, frozenset[str]] = {
    "url": frozenset(("url", "uri", "link")),
    "domain": frozenset(("domain", "hostname", "domain|ip", "hostname|port")),
    "hostname": frozenset(("domain", "hostname", "domain|ip", "hostname|port")),
    # "domain|ip" is left to the domain types: the lists naming it are domain lists that
    # MISP also tries on a domain|ip attribute's address half, where they never hit.
    "ipv4": frozenset(("ip-src", "ip-dst", "ip-src|port", "ip-dst|port")),
    "ipv6": frozenset(("ip-src", "ip-dst", "ip-src|port", "ip-dst|port")),
    "cidr4": frozenset(("ip-src", "ip-dst")),
    "cidr6": frozenset(("ip-src", "ip-dst")),
    "md5": frozenset(("md5", "filename|md5")),
    "sha1": frozenset(("sha1", "filename|sha1")),
    "sha256": frozenset(("sha256", "filename|sha256")),
    "email": frozenset(("email", "email-src", "email-dst", "target-email", "whois-registrant-email")),
}
_CASELESS = frozenset(("domain", "hostname", "md5", "sha1", "sha256"))


class _ListFile(msgspec.Struct):
    name: str
    type: str
    entries: list[str] = msgspec.field(name="list")
    version: int = 0
    description: str = ""
    matching_attributes: list[str] = []


class ListInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What ``ctdctl`` shows about a loaded list."""

    name: str  # the directory name: what configs and hits use
    title: str  # the list's own "name" field
    kind: str  # cidr | hostname | string | substring | regex
    entries: int
    version: int
    types: tuple[str, ...]  # the ctd indicator types it applies to


def lists_dir() -> Path:
    """The directory of list directories; ConfigError if the optional extra is missing."""
    # find_spec locates the package without importing it (its __init__ pulls in
    # jsonschema and requests when installed: seconds of import for nothing).
    spec = importlib.util.find_spec("pymispwarninglists")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("warning lists need the optional dependency: pip install 'ctd[warninglists]'")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "misp-warninglists" / "lists"


def available() -> tuple[str, ...]:
    """Names of every list the installed package ships."""
    return tuple(sorted(p.parent.name for p in lists_dir().glob("*/list.json")))


def _read(name: str) -> _ListFile:
    path = lists_dir() / name / "list.json"
    if "/" in name or not path.is_file():
        raise ConfigError(f"unknown warning list {name!r} ({len(available())} lists are installed)")
    return msgspec.json.decode(path.read_bytes(), type=_ListFile)


def _types_of(lf: _ListFile) -> tuple[str, ...]:
    attrs = set(lf.matching_attributes)
    types = [t for t, misp in _MISP_TYPES.items() if not attrs or attrs & misp]
    if lf.type == "cidr":
        # a cidr list only ever holds addresses: its "domain|ip" means the address half
        if "domain|ip" in attrs:
            types += ["ipv4", "ipv6"]
        types = [t for t in _MISP_TYPES if t in _IP_TYPES and t in types]
    return tuple(types)


class WarningLists:
    """Loaded lists and their matchers.  Build with ``WarningLists.load(...)``; immutable after."""

    def __init__(self, files: list[tuple[str, _ListFile]]) -> None:
        self.names: tuple[str, ...] = tuple(name for name, _ in files)
        self.skipped: tuple[str, ...] = ()  # "list: entry" that could not be compiled
        self._info: list[ListInfo] = []
        self._mask: dict[str, int] = dict.fromkeys(_MISP_TYPES, 0)
        self._exact_ci: dict[str, tuple[int, ...]] = {}
        self._exact_cs: dict[str, tuple[int, ...]] = {}
        self._hosts: dict[str, tuple[int, ...]] = {}
        self._compact_exact: list[tuple[int, Compact]] = []
        self._compact_hosts: list[tuple[int, Compact]] = []
        self._regex: dict[str, list[tuple[int, re.Pattern[str]]]] = {t: [] for t in _MISP_TYPES}
        self._psl: frozenset[str] = frozenset()
        ids_cache: dict[tuple[int, ...], tuple[int, ...]] = {}
        needles: dict[str, dict[str, int]] = {t: {} for t in _MISP_TYPES}
        nets: dict[int, list[tuple[int, int, int]]] = {32: [], 128: []}
        skipped: list[str] = []

        def add(table: dict[str, tuple[int, ...]], key: str, lid: int) -> None:
            old = table.get(key, ())
            if lid not in old:
                new = old + (lid,)
                table[key] = ids_cache.setdefault(new, new)

        for lid, (name, lf) in enumerate(files):
            types = _types_of(lf)
            for t in types:
                self._mask[t] |= 1 << lid
            self._info.append(
                ListInfo(
                    name=name, title=lf.name, kind=lf.type, entries=len(lf.entries), version=lf.version, types=types
                )
            )
            if lf.type == "cidr":
                for entry in lf.entries:
                    net = network(entry)
                    if net is None:
                        skipped.append(f"{name}: {entry[:80]}")
                    elif ("ipv4" if net[0] == 32 else "ipv6") in types:
                        nets[net[0]].append((net[1], net[2], lid))
            elif lf.type == "hostname":
                hosts = (e.strip().strip(".").lower() for e in lf.entries)
                if len(lf.entries) > COMPACT_OVER:
                    self._compact_hosts.append((lid, Compact(hosts)))
                else:
                    for h in hosts:
                        add(self._hosts, h, lid)
            elif lf.type == "string":
                caseless = any(t not in ("url", "email") for t in types)
                casefull = "url" in types or "email" in types
                if len(lf.entries) > COMPACT_OVER:
                    keys = {e.strip().lower() if caseless else e.strip() for e in lf.entries}
                    self._compact_exact.append((lid, Compact(keys)))
                    continue
                for e in lf.entries:
                    if caseless:
                        add(self._exact_ci, e.strip().lower(), lid)
                    if casefull:
                        add(self._exact_cs, e.strip(), lid)
            elif lf.type == "substring":
                for t in types:
                    for e in lf.entries:
                        if e:
                            needles[t].setdefault(e.lower() if t in _CASELESS else e, lid)
            elif lf.type == "regex":
                for e in lf.entries:
                    rx = pcre(e)
                    if rx is None:
                        skipped.append(f"{name}: {e[:80]}")
                        continue
                    for t in types:
                        self._regex[t].append((lid, rx))
        self.skipped = tuple(skipped)
        self._needles = {t: n for t, n in needles.items() if n}
        self._substr = {t: trie_regex(n) for t, n in self._needles.items()}
        starts4, ids4 = segments(nets[32])
        self._v4 = (starts4, ids4)  # lists, not arrays: bisect on a list does not box every probe
        self._v6 = segments(nets[128])
        if self._hosts or self._compact_hosts:
            self._psl = frozenset(self._public_suffixes())
        self._plans = {t: p for t in _MISP_TYPES if (p := self._plan(t)) is not None}
        self._name_of = dict(enumerate(self.names))  # NO_HIT is not a key: .get() gives None

    @staticmethod
    def _public_suffixes() -> Iterator[str]:
        for name in _PUBLIC_SUFFIX_LISTS:
            for e in _read(name).entries:
                yield e.strip().strip(".").lower()

    @classmethod
    def load(cls, names: str | Iterable[str] = "default") -> WarningLists:
        """Load ``"default"``, ``"all"`` or the named lists (in that order of priority)."""
        if isinstance(names, str):
            if names == "default":
                names = DEFAULT_LISTS
            elif names == "all":
                names = available()
            else:
                raise ConfigError(f'warninglists must be "default", "all", "off" or a list of names, not {names!r}')
        return _load_cached(tuple(dict.fromkeys(names)))

    def info(self) -> tuple[ListInfo, ...]:
        return tuple(self._info)

    # --- matching --------------------------------------------------------------------------
    def match(self, type_: str, value: str) -> str | None:
        """The name of the first loaded list that ``(type_, value)`` (canonical) hits, or None."""
        plan = self._plans.get(type_)
        return None if plan is None else self._name_of.get(plan(value))

    def _plan(self, type_: str) -> Callable[[str], int] | None:
        """A matcher for one type; it only runs the steps some loaded list needs for that type."""
        mask = self._mask[type_]
        has_cidr = len(self._v4[0]) > 1 or len(self._v6[0]) > 1
        if not mask and not (type_ == "url" and has_cidr):
            return None
        ip_hit, first = self._ip_hit, self._first
        by_host = type_ in ("url", "domain", "hostname")
        hosts, psl = self._hosts, self._psl
        compact_hosts = tuple((lid, keys) for lid, keys in self._compact_hosts if mask >> lid & 1)
        exact = self._exact_cs if type_ in ("url", "email") else self._exact_ci
        if all(first(ids, mask) == NO_HIT for ids in set(exact.values())):
            exact = {}
        compact = tuple((lid, keys) for lid, keys in self._compact_exact if mask >> lid & 1)
        substr, needles = self._substr.get(type_), self._needles.get(type_, {})
        regexes = tuple(self._regex[type_])
        if type_ in _IP_TYPES and not (exact or compact or substr or regexes):
            return ip_hit

        is_url, is_ip = type_ == "url", type_ in _IP_TYPES
        hosts_get = hosts.get
        exact_get = exact.get if exact else None
        substr_search = substr.search if substr is not None else None

        def plan(value: str) -> int:  # hot path: no helper calls, no min()
            best = NO_HIT
            if by_host:
                host = host_of_url(value) if is_url else value
                if ":" in host or host[-1:].isdigit():
                    best = ip_hit(host)
                else:
                    # the host and its parent domains; a parent counts only if it is not a public suffix
                    s = host
                    while True:
                        ids = hosts_get(s)
                        if ids is not None and (s is host or s not in psl):
                            lid = ids[0] if mask >> ids[0] & 1 else first(ids, mask)
                            if lid < best:
                                best = lid
                        if compact_hosts and (s is host or s not in psl):
                            for lid, keys in compact_hosts:
                                if lid < best and s in keys:
                                    best = lid
                        dot = s.find(".")
                        if dot < 0:
                            break
                        s = s[dot + 1 :]
            elif is_ip:
                best = ip_hit(value)
            if exact_get is not None:
                ids = exact_get(value)
                if ids is not None:
                    lid = first(ids, mask)
                    if lid < best:
                        best = lid
            for lid, keys in compact:
                if lid < best and value in keys:
                    best = lid
            if substr_search is not None:
                m = substr_search(value)  # caseless types are lower-case once canonical
                if m is not None:
                    lid = needles[m.group(0)]
                    if lid < best:
                        best = lid
            for lid, pattern in regexes:
                if lid < best and pattern.search(value):
                    best = lid
            return best

        return plan

    @staticmethod
    def _first(ids: tuple[int, ...], mask: int) -> int:
        for lid in ids:
            if mask >> lid & 1:
                return lid
        return NO_HIT

    def _ip_hit(self, value: str) -> int:
        """Best list covering an address, or (for ``a/n``) every address of a network."""
        if "/" in value:
            return self._net_hit(value)
        try:
            if ":" in value:
                x = int.from_bytes(socket.inet_pton(socket.AF_INET6, value), "big")
                starts, ids = self._v6
            else:
                x = int.from_bytes(socket.inet_aton(value), "big")
                starts, ids = self._v4
        except (OSError, ValueError):
            return NO_HIT
        i = bisect_right(starts, x) - 1
        return ids[i] if i >= 0 else NO_HIT

    def _net_hit(self, value: str) -> int:
        net = network(value)
        if net is None:
            return NO_HIT
        bits, first_addr, last_addr = net
        starts, ids = self._v4 if bits == 32 else self._v6
        i = bisect_right(starts, first_addr) - 1
        if i < 0:
            return NO_HIT
        j = bisect_right(starts, last_addr) - 1
        if j != i and NO_HIT in ids[i : j + 1]:
            return NO_HIT  # part of the network is on no list
        return ids[i]


@functools.lru_cache(maxsize=1)
def _load_cached(names: tuple[str, ...]) -> WarningLists:
    # The data is the installed package's: loading the same names twice gives the same lists.
    # The daemon shares copies between plugins through ctd.guard (as long as a plugin holds
    # one); this cache keeps only the last, so a selection a reload dropped does not stay.
    return WarningLists([(name, _read(name)) for name in names])
