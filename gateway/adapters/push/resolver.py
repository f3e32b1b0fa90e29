"""The push session's only resolver: one look-up per connection, every answer vetted by the address policy.

aiohttp connects to exactly the addresses its connector's resolver returns. With this resolver as the
only one, a host name is looked up once per connection and the connection goes to an address that
passed the policy: there is no second look-up an attacker's DNS server could answer differently (DNS
rebinding). IP literals never reach a resolver (aiohttp connects to them directly); the webhook provider
checks those itself before sending.

Where the answers come from is a port of its own: the system's resolver (``getaddrinfo``) by default,
or the DNS servers in ``push.nameservers`` asked directly.
"""

import asyncio
import ipaddress
import socket

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from gateway.adapters.push.addresses import is_forbidden_ip


class AddressForbidden(OSError):
    """A host name resolved to an address the policy refuses (loopback, private, link-local …)."""


class VettedResolver(AbstractResolver):
    """Resolves through ``source`` once and refuses the whole answer when any address is forbidden."""

    def __init__(self, source: AbstractResolver, *, allow_private: bool) -> None:
        self._source = source
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The vetted addresses of ``host``; AddressForbidden or OSError otherwise."""
        try:
            answers = await self._source.resolve(host, port, family)
        except UnicodeError:  # a label IDNA cannot encode (empty, over 63 characters): no such name
            raise OSError(f"{host!r} is not a name DNS can spell") from None
        if not answers:
            raise OSError(f"{host!r} has no address")
        if not self._allow_private:
            for answer in answers:
                # The threaded resolver writes a zone into the address ("fe80::1%eth0"): it is kept,
                # and the policy refuses zones.
                ip = ipaddress.ip_address(answer["host"])
                if is_forbidden_ip(ip):
                    # All or nothing: a name that also points inside is not a receiver we talk to.
                    raise AddressForbidden(f"{host!r} resolves to the forbidden address {ip}")
        return answers

    async def close(self) -> None:
        """Closes the source."""
        await self._source.close()


class DnsResolver(AbstractResolver):
    """Asks the given DNS servers directly (A and AAAA), bypassing the system's resolver and its cache."""

    def __init__(self, servers: list[tuple[str, int]], timeout_s: float) -> None:
        self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
        self._resolver.lifetime = timeout_s

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Every A and AAAA answer for ``host`` (only those of ``family`` when it is set)."""
        kinds = {socket.AF_INET: ["A"], socket.AF_INET6: ["AAAA"]}.get(family, ["A", "AAAA"])
        answers = await asyncio.gather(*(self._query(host, kind) for kind in kinds))
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for addresses in answers
            for address in addresses
        ]

    async def _query(self, host: str, kind: str) -> list[str]:
        try:
            answer = await self._resolver.resolve(host, kind, search=False)
        except dns.resolver.NoAnswer:
            return []
        except dns.exception.DNSException as exc:  # NXDOMAIN, no servers, timeout …
            raise OSError(f"{host!r} does not resolve ({type(exc).__name__})") from exc
        return [rdata.to_text() for rdata in answer]

    async def close(self) -> None:
        """Nothing to close: every query opens its own socket."""


def vetted_resolver(
    nameservers: list[tuple[str, int]], *, timeout_s: float, allow_private: bool
) -> VettedResolver:
    """The resolver of the push session: the system's, or the configured DNS servers, vetted."""
    source: AbstractResolver = DnsResolver(nameservers, timeout_s) if nameservers else ThreadedResolver()
    return VettedResolver(source, allow_private=allow_private)
