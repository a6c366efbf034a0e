"""The outbound network guard: private, loopback and metadata addresses are refused after DNS
resolution, in every textual form, and again on every redirect."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

import pytest

from activities._network import is_blocked
from tests.fixtures.actions import ActionHarness, failure_of
from tests.fixtures.http_target import HttpTarget

BLOCKED = [
    "127.0.0.1",
    "127.9.9.9",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.170.2",
    "100.64.0.1",
    "100.100.100.200",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1",
    "2002:7f00:1::1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", BLOCKED)
def test_private_and_special_addresses_are_blocked(address: str) -> None:
    assert is_blocked(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert not is_blocked(ipaddress.ip_address(address))


def test_allowed_networks_are_an_explicit_exception() -> None:
    allowed = [ipaddress.ip_network("10.0.0.0/8")]
    assert not is_blocked(ipaddress.ip_address("10.2.3.4"), allowed)
    assert not is_blocked(ipaddress.ip_address("::ffff:10.2.3.4"), allowed)
    assert is_blocked(ipaddress.ip_address("192.168.0.1"), allowed)


def _get(url: str) -> dict[str, object]:
    return {"type": "webhook", "config": {"url": url, "method": "GET"}}


async def test_webhook_to_local_addresses_is_refused(
    harness: ActionHarness, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    port = target.port
    for url in (
        f"http://127.0.0.1:{port}/ok/{key}",
        f"http://localhost:{port}/ok/{key}",
        f"http://[::1]:{port}/ok/{key}",
        f"http://[::ffff:127.0.0.1]:{port}/ok/{key}",
        f"http://0x7f000001:{port}/ok/{key}",
        "http://169.254.169.254/latest/meta-data/",
    ):
        error = await failure_of(harness, _get(url), allow_private_networks=False)
        assert (error.type, error.non_retryable) == ("BlockedAddress", True), url
        assert "CRONPILOT_ALLOW_PRIVATE_NETWORKS" in error.message
    assert target.hits(key) == 0


async def test_every_redirect_is_checked_again(harness: ActionHarness, target: HttpTarget) -> None:
    key = uuid.uuid4().hex
    allow_first_hop: dict[str, Any] = {
        "allow_private_networks": False,
        "allowed_networks": "127.0.0.1/32",
    }
    ok = await harness.run(_get(f"{target.url}/ok/{key}"), **allow_first_hop)
    assert ok.result["status_code"] == 200

    hop = f"http://127.0.0.2:{target.port}/ok/{key}-second"
    error = await failure_of(
        harness, _get(f"{target.url}/redirect/{key}?to={hop}"), **allow_first_hop
    )
    assert (error.type, error.non_retryable) == ("BlockedAddress", True)
    assert "127.0.0.2" in error.message
    assert target.hits(key) == 2 and target.hits(f"{key}-second") == 0
