"""Where a signed callback may go (issue #22, item 3): the rules the ingest checks at intake and
the worker checks again, with the addresses, right before it connects.

An SSRF guard: a callback URL is a request the service makes on a client's behalf, from inside
the cluster. So
- the scheme is https (http only where ORDERFLOW_CALLBACK_ALLOW_HTTP says so),
- the host must match ORDERFLOW_CALLBACK_HOSTS (`hooks.example.com`, or `*.example.com` for any
  name below it); an empty list refuses every callback,
- every address the host resolves to must be public: no loopback, private, link-local, shared
  (CGNAT), multicast, reserved or unspecified address unless ORDERFLOW_CALLBACK_ALLOW_PRIVATE says
  so, and never a cloud metadata address, whatever the settings,
- the worker connects to the address it checked (not to the name again), so a DNS answer that
  changes between the check and the connect (rebinding) cannot swap it.
No userinfo (`user:pass@`) and no fragment: a secret in a URL would be logged and stored."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL = 2048
FIELD = "callback_url"

# Cloud instance metadata endpoints: refused even where private addresses are allowed.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "168.63.129.16", "fd00:ec2::254")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not public, not is_private


@dataclass(frozen=True)
class Target:
    """A callback URL taken apart: what to connect to and what to ask for."""

    scheme: str
    host: str  # lowercase, no brackets
    port: int
    path: str  # path and query, at least "/"


class Refused(ValueError):
    """A callback URL or address the rules refuse; str() is safe to show (no secret in it)."""


def parse(url: object, allow_http: bool, hosts: tuple[str, ...]) -> Target:
    """The intake's check: scheme, length, form and the host allow-list (no DNS here)."""
    if not isinstance(url, str) or not url:
        raise Refused("must be a non-empty string")
    if len(url) > MAX_URL:
        raise Refused(f"must be at most {MAX_URL} characters")
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise Refused("must be an ASCII URL without spaces or control characters")
    if not hosts:
        raise Refused("callbacks are not enabled on this service")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and allow_http):
        raise Refused("must be an https URL" if not allow_http else "must be an http or https URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise Refused("must not carry credentials (user:password@)")
    if parts.fragment:
        raise Refused("must not carry a fragment")
    host = (parts.hostname or "").lower()
    if not host:
        raise Refused("must name a host")
    if not host_allowed(host, hosts):
        raise Refused(f"host {host} is not in the callback allow-list")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port or (443 if scheme == "https" else 80), path)


def host_allowed(host: str, hosts: tuple[str, ...]) -> bool:
    """`name` matches itself; `*.name` matches any host below `name` (not `name` itself)."""
    host = host.rstrip(".").lower()
    for pattern in hosts:
        pattern = pattern.lower()
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def address_problem(address: str, allow_private: bool) -> str | None:
    """Why a resolved address may not be called, or None. An IPv4-mapped IPv6 address is judged
    as the IPv4 address it carries (`::ffff:127.0.0.1` is loopback)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA:
        return f"{ip} is a cloud metadata address"
    if ip.is_unspecified or ip.is_multicast:
        return f"{ip} is not a unicast address"
    if allow_private:
        return None
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return f"{ip} is a shared (carrier-grade NAT) address"
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return f"{ip} is a private or reserved address"
    return None
