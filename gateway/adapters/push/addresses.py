"""Which addresses a webhook may reach: global unicast only, seen through every IPv4-in-IPv6 wrapping.

Python 3.11's ``ipaddress.is_global`` calls several disguised internal addresses global (the NAT64 form
of 169.254.169.254, the 6to4 form of 127.0.0.1, IPv4-compatible ``::127.0.0.1``, site-local
``fec0::1``), so the rule here is written out instead of trusted to it:

- an IPv6 address with a zone (``fe80::1%eth0``) is refused;
- the forms that carry an IPv4 address a router or the kernel will use (IPv4-mapped ``::ffff:0:0/96``,
  NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) are judged by that IPv4 address;
- any other IPv6 address must be global unicast: inside ``2000::/3``, not Teredo (``2001::/32``, whose
  relays reach an IPv4 address we cannot vet), not documentation, and ``is_global``. That leaves out
  IPv4-compatible ``::/96``, the NAT64 local-use ``64:ff9b:1::/48``, site-local, unique-local,
  link-local, multicast and the rest of the space outside ``2000::/3``;
- an IPv4 address must be ``is_global`` and not multicast.
"""

import ipaddress
import socket

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the last 32 bits are the IPv4 address
_REFUSED_V6 = (
    ipaddress.IPv6Network("2001::/32"),  # Teredo
    ipaddress.IPv6Network("2001:db8::/32"),  # documentation
    ipaddress.IPv6Network("3fff::/20"),  # documentation (RFC 9637)
)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 or 6to4 address leads to; None for other addresses."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return ip.sixtofour


def is_forbidden_ip(ip: IpAddress) -> bool:
    """True for anything but a global unicast address, after unwrapping IPv4 carried inside IPv6."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            return True
        inner = embedded_ipv4(ip)
        if inner is not None:
            return is_forbidden_ip(inner)
        if ip not in _GLOBAL_UNICAST or any(ip in net for net in _REFUSED_V6):
            return True
    return not ip.is_global or ip.is_multicast


def literal_address(host: str) -> IpAddress | None:
    """The address a URL host spells, also in the legacy numeric IPv4 forms the C library accepts
    (``2130706433``, ``0x7f.1``, ``127.1``); None for a host name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if ":" in host:
        return None
    try:  # what getaddrinfo would make of it: inet_aton's reading
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None
