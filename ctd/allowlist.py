"""The allowlist: values that must never be active or shared, whoever reports them.

Lookups run for every ingested indicator, so each check is a few set probes:
CIDRs are grouped by prefix length (at most 33/129 distinct lengths, however
many networks), and domains are matched by walking the value's label suffixes.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import ip_network
from socket import AF_INET, AF_INET6, inet_pton

from ctd.canon import canonicalize, host_of_url, is_ip
from ctd.errors import InvalidIndicator
from ctd.valuegate import value_problem

__all__ = ["Allowlist"]


def _show(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "...")


class _Nets:
    """Networks of one IP version as {prefixlen: {network int >> host bits}}."""

    __slots__ = ("bits", "by_len", "lens")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.by_len: dict[int, set[int]] = {}
        self.lens: tuple[int, ...] = ()

    def add(self, network_int: int, prefixlen: int) -> None:
        self.by_len.setdefault(prefixlen, set()).add(network_int >> (self.bits - prefixlen))
        self.lens = tuple(sorted(self.by_len))

    def contains(self, addr_int: int, prefixlen: int) -> bool:
        """Whether the network addr_int/prefixlen lies inside any stored network."""
        bits = self.bits
        for plen in self.lens:
            if plen > prefixlen:  # lens is sorted: no wider network remains
                return False
            if addr_int >> (bits - plen) in self.by_len[plen]:
                return True
        return False


class Allowlist:
    """Exact values, CIDRs and domains (with subdomains) that are never active."""

    __slots__ = ("_values", "_raw", "_v4", "_v6", "_domains", "_cidr_text")

    def __init__(
        self,
        values: Iterable[str] = (),
        cidrs: Iterable[str] = (),
        domains: Iterable[str] = (),
    ) -> None:
        self._values: set[str] = set()
        # Entries no type fits still match verbatim, case-insensitively, so a
        # typo'd or exotic value in the config is not silently ignored.
        self._raw: set[str] = set()
        for value in values:
            try:
                self._values.add(canonicalize(None, value)[1])
            except InvalidIndicator:
                raw = value.strip()
                # What the value gate refuses can never be stored, so it could never
                # match: say so rather than keep a raw entry that silently never does.
                if problem := value_problem(raw):
                    raise ValueError(f"invalid allowlist value: {problem}") from None
                if raw:
                    self._raw.add(raw.lower())
        self._v4 = _Nets(32)
        self._v6 = _Nets(128)
        self._cidr_text: set[str] = set()
        for cidr in cidrs:
            try:
                net = ip_network(cidr.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(f"invalid allowlist CIDR {_show(cidr)}: {exc}") from None
            (self._v4 if net.version == 4 else self._v6).add(int(net.network_address), net.prefixlen)
            self._cidr_text.add(net.with_prefixlen)
        self._domains: set[str] = set()
        for domain in domains:
            # "*.example.com" and ".example.com" mean what "example.com" already does
            bare = domain.strip().removeprefix("*").removeprefix(".")
            try:
                self._domains.add(canonicalize("domain", bare)[1])
            except InvalidIndicator as exc:
                raise ValueError(f"invalid allowlist domain {_show(domain)}: {exc}") from None

    def __bool__(self) -> bool:
        return bool(self._values or self._raw or self._cidr_text or self._domains)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Allowlist):
            return NotImplemented
        return (
            self._values == other._values
            and self._raw == other._raw
            and self._cidr_text == other._cidr_text
            and self._domains == other._domains
        )

    __hash__ = None  # type: ignore[assignment]  # equality is by content, so no identity hash

    def __repr__(self) -> str:
        return (
            f"Allowlist(values={sorted(self._values | self._raw)!r}, "
            f"cidrs={sorted(self._cidr_text)!r}, domains={sorted(self._domains)!r})"
        )

    def matches(self, type_: str, value: str) -> bool:
        """Whether the canonical indicator ``(type_, value)`` is allow-listed."""
        if value in self._values or (self._raw and value.lower() in self._raw):
            return True
        if type_ == "ipv4" or type_ == "ipv6":
            return self._ip_allowed(value)
        if type_ == "domain" or type_ == "hostname":
            return self._domain_allowed(value)
        if type_ == "email":
            return self._domain_allowed(value.rpartition("@")[2])
        if type_ == "url":
            host = host_of_url(value)
            if host in self._values:
                return True
            if is_ip(host):
                return self._ip_allowed(host)
            return self._domain_allowed(host)
        if type_ == "cidr4" or type_ == "cidr6":
            return self._cidr_allowed(value)
        return False

    def _ip_allowed(self, ip: str) -> bool:
        # inet_pton is much cheaper than ipaddress and the value is already valid
        if ":" in ip:
            nets, family, plen = self._v6, AF_INET6, 128
        else:
            nets, family, plen = self._v4, AF_INET, 32
        if not nets.lens:
            return False
        return nets.contains(int.from_bytes(inet_pton(family, ip), "big"), plen)

    def _cidr_allowed(self, cidr: str) -> bool:
        net = ip_network(cidr, strict=False)
        nets = self._v4 if net.version == 4 else self._v6
        return nets.contains(int(net.network_address), net.prefixlen)

    def _domain_allowed(self, domain: str) -> bool:
        domains = self._domains
        if not domains:
            return False
        while True:
            if domain in domains:
                return True
            dot = domain.find(".")
            if dot < 0:
                return False
            domain = domain[dot + 1 :]
