"""The outbound network guard every HTTP-making action (and the IMAP poll of email triggers,
through ``checked_addresses``) goes through.

With private networks disallowed, a connection is refused unless every address the host
resolves to is globally routable (not loopback, private, link-local, multicast,
unspecified, shared, reserved or a cloud metadata address, with IPv4-mapped and NAT64
forms unwrapped). The check runs at connect time, on the addresses actually connected to,
so every redirect hop is checked again and a DNS answer cannot change between the check
and the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing
from collections.abc import Iterable, Sequence

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
    ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
}
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddress(Exception):
    """The destination is on a private network (or is a metadata service) and is refused."""


def _unwrapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def is_blocked(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> bool:
    """Whether a private-networks-off guard refuses this address (``allowed`` excepted)."""
    inner = _unwrapped(address)
    if any(inner in network or address in network for network in allowed):
        return False
    if inner in METADATA_ADDRESSES or address in METADATA_ADDRESSES:
        return True
    # is_global alone lets multicast through, so every category is named.
    return (
        not inner.is_global
        or inner.is_multicast
        or inner.is_private
        or inner.is_loopback
        or inner.is_link_local
        or inner.is_reserved
        or inner.is_unspecified
    )


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in resolver order, without duplicates."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return [literal]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: dict[IPAddress, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        found[ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
    return list(found)


async def checked_addresses(
    host: str, port: int, *, allow_private: bool, allowed: Sequence[IPNetwork] = ()
) -> list[IPAddress]:
    """What ``host`` resolves to, for a connection made outside httpx (IMAP): refused with
    ``BlockedAddress`` as the HTTP guard refuses it. Connect to these addresses, not to a
    fresh lookup of ``host``."""
    addresses = await resolve(host, port)
    if not allow_private:
        blocked = [a for a in addresses if is_blocked(a, allowed)]
        if blocked:
            raise BlockedAddress(
                f"{host} resolves to {blocked[0]}, a private or reserved address; "
                "set CRONPILOT_ALLOW_PRIVATE_NETWORKS=true to allow it"
            )
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the address check in ``connect_tcp``."""

    def __init__(self, allow_private: bool, allowed: Sequence[IPNetwork] = ()) -> None:
        self.allow_private = allow_private
        self.allowed = list(allowed)
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        checking = checked_addresses(
            host, port, allow_private=self.allow_private, allowed=self.allowed
        )
        try:
            addresses = await asyncio.wait_for(checking, timeout)
        except socket.gaierror as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
        last_error: Exception | None = None
        for address in addresses:  # connect to the checked address, not a fresh lookup
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last_error = error
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over the guarded backend."""

    def __init__(
        self, allow_private: bool, allowed: Sequence[IPNetwork] = (), **kwargs: typing.Any
    ) -> None:
        super().__init__(**kwargs)
        # httpx does not expose httpcore's network_backend; rebuild its pool with ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=self._pool._ssl_context,
            max_connections=self._pool._max_connections,
            max_keepalive_connections=self._pool._max_keepalive_connections,
            keepalive_expiry=self._pool._keepalive_expiry,
            http1=self._pool._http1,
            http2=self._pool._http2,
            network_backend=GuardedBackend(allow_private, allowed),
        )
