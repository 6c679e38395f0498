"""The egress policy: which addresses URLs that callers give may make the server connect to."""

from __future__ import annotations

import asyncio
import socket

import pytest

from cidade.config import load_settings
from cidade.http.egress import EgressPolicy, TargetRefused, is_public, parse_networks

NOT_PUBLIC = [
    "127.0.0.1",  # loopback
    "127.8.9.10",
    "10.1.2.3",  # private
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # link-local: the cloud's metadata service
    "100.64.0.1",  # shared address space (CGNAT)
    "0.0.0.0",  # unspecified (reaches this host)
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "192.0.2.1",  # documentation
    "::1",
    "::",
    "fe80::1",  # link-local
    "fe80::1%lo",
    "fc00::1",  # unique local
    "fd12:3456::1",
    "fec0::1",  # site-local (deprecated)
    "ff02::1",  # multicast
    "::ffff:127.0.0.1",  # IPv4-mapped forms of the above
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",
    "2001:db8::1",  # documentation
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "151.101.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_global_addresses_are_refused(address):
    policy = EgressPolicy()
    assert not policy.permits(address)
    addr_info = (socket.AF_INET6 if ":" in address else socket.AF_INET, 1, 6, "", (address, 80))
    with pytest.raises(TargetRefused):
        policy.socket_factory(addr_info)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_permitted(address):
    assert EgressPolicy().permits(address)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    EgressPolicy().socket_factory((family, socket.SOCK_STREAM, 6, "", (address, 80))).close()


def test_listed_networks_are_permitted_and_nothing_else():
    policy = EgressPolicy.from_text(" 127.0.0.0/8, 10.20.0.0/16 ,fd00::/8")
    assert policy.permits("127.0.0.1") and policy.permits("::ffff:127.0.0.1")
    assert policy.permits("10.20.3.4") and policy.permits("fd00::5")
    assert not policy.permits("10.21.0.1")
    assert not policy.permits("169.254.169.254")
    assert not policy.permits("::1")  # IPv6 loopback is not in 127.0.0.0/8
    assert not policy.permits("not an address")
    assert is_public(parse_networks("8.8.8.8")[0].network_address)


def test_resolution_checks_every_address():
    async def go() -> None:
        with pytest.raises(TargetRefused):
            await EgressPolicy().resolve("localhost", 80)
        with pytest.raises(TargetRefused):
            await EgressPolicy().resolve("127.0.0.1", 80)
        with pytest.raises(TargetRefused):
            await EgressPolicy().check_host("localhost")
        assert "127.0.0.1" in await EgressPolicy.from_text("127.0.0.0/8").resolve("localhost", 1)
        # A name that does not resolve now passes the early check (connections check again).
        await EgressPolicy().check_host("nowhere.invalid")

    asyncio.run(go())


def test_private_networks_setting():
    settings = load_settings({"CIDADE_PRIVATE_NETWORKS": "127.0.0.0/8,10.0.0.0/8"})
    assert settings.private_networks == "127.0.0.0/8,10.0.0.0/8"
    assert load_settings({}).private_networks == ""
    with pytest.raises(SystemExit, match="CIDADE_PRIVATE_NETWORKS"):
        load_settings({"CIDADE_PRIVATE_NETWORKS": "127.0.0.0/8,intranet"})
