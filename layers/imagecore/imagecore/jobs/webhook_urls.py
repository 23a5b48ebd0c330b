"""Where a task's webhook may be sent: the checks against server-side request forgery.

A ``webhook_url`` is an absolute ``https`` URL of at most 2,048 characters, without credentials, whose host
resolves only to public addresses. It is checked when the task is submitted (a 400 on ``webhook_url`` before
a task exists) and again at each delivery, which then connects to the very address that was checked: a name
that resolves elsewhere a moment later (DNS rebinding) is never asked again between the check and the call.

Refused: loopback, private, link-local (the instance metadata address 169.254.169.254 among them), multicast,
reserved, unspecified and other non-global addresses, IPv4 and IPv6 alike, and IPv6 addresses that carry an
IPv4 one (mapped, 6to4, Teredo, NAT64) when the address they carry is refused. The local stack alone
(``allow_loopback``) also lets a developer receive on their own machine: ``http://`` to a host that resolves
only to loopback; nothing else changes (``https`` still needs public addresses).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from imagecore.domain.errors import InvalidRequest

MAX_URL_CHARS = 2048
DEFAULT_PORTS = {"https": 443, "http": 80}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]


class RefusedUrl(Exception):
    """The URL may not be called; ``reason`` says why (it is shown to the caller and logged)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def as_invalid_request(self) -> InvalidRequest:
        return InvalidRequest(
            f"Invalid value for 'webhook_url': {self.reason}", param="webhook_url", code="invalid_webhook_url"
        )


@dataclass(frozen=True)
class WebhookTarget:
    """A checked URL and the address it is called at."""

    scheme: str
    host: str  # the name, as the certificate and the Host header name it (IDNA, lower case)
    port: int
    path: str  # path and query
    address: IpAddress

    @property
    def connect_url(self) -> str:
        """The URL with the checked address in place of the name: the connection goes there and nowhere else."""
        literal = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{self.scheme}://{literal}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def resolve(host: str, port: int) -> list[str]:
    """Every address the name resolves to (an IP literal resolves to itself)."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    return list(dict.fromkeys(str(answer[4][0]) for answer in answers))


def is_public(address: IpAddress) -> bool:
    """A globally routable unicast address, and so is any IPv4 address an IPv6 one carries."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if carried is None and address in _NAT64:
            carried = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if carried is not None and not is_public(carried):
            return False
    refused = (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )
    return not refused and address.is_global


@dataclass(frozen=True)
class UrlPolicy:
    """``allow_loopback``: the local stack's allowance (a template parameter keeps it off in AWS)."""

    allow_loopback: bool = False
    resolver: Resolver = resolve

    def check(self, url: object) -> WebhookTarget:
        """The target the URL names, checked; ``RefusedUrl`` says what is wrong."""
        scheme, host, port, path = self._parts(url)
        found = self.resolver(host, port)
        if not found:
            raise RefusedUrl(f"the host {host!r} does not resolve.")
        addresses = [ipaddress.ip_address(value.split("%", 1)[0]) for value in found]
        if scheme == "http":  # the local allowance, and nothing else: http to a host that is only loopback
            if not all(address.is_loopback for address in addresses):
                raise RefusedUrl("the URL must use https (http only to a receiver on this machine's loopback).")
        else:
            for address in addresses:
                if not is_public(address):
                    raise RefusedUrl(f"the host {host!r} resolves to {address}, which is not a public address.")
        # IPv4 first: a function outside a VPC has no IPv6 route out.
        chosen = min(addresses, key=lambda address: address.version)
        return WebhookTarget(scheme, host, port, path, chosen)

    def _parts(self, url: object) -> tuple[str, str, int, str]:
        if not isinstance(url, str) or not url:
            raise RefusedUrl("it must be an absolute https URL.")
        if len(url) > MAX_URL_CHARS:
            raise RefusedUrl(f"it must be at most {MAX_URL_CHARS} characters.")
        if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
            raise RefusedUrl("it must not contain spaces or control characters.")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise RefusedUrl("it is not a valid URL.") from None
        scheme = parts.scheme.lower()
        allowed = ("https", "http") if self.allow_loopback else ("https",)
        if scheme not in allowed or not parts.netloc:
            raise RefusedUrl("it must be an absolute https URL.")
        if "@" in parts.netloc:
            raise RefusedUrl("it must not carry a user name or password.")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise RefusedUrl("it has no host.")
        try:
            host = host.encode("idna").decode("ascii").lower() if not host.isascii() else host.lower()
        except UnicodeError:
            raise RefusedUrl("its host is not a valid name.") from None
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        return scheme, host, port or DEFAULT_PORTS[scheme], path
