"""Failed log-ins lock a name out for the address guessing it, in the store (every worker, and
after a restart), never for the real user elsewhere; the client's address through the reverse
proxies the deployment trusts (CIDADE_TRUSTED_PROXIES), and only through those."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cidade.app import build_app
from cidade.auth.limits import LoginLockout
from cidade.http.clients import ClientAddresses
from cidade.http.egress import parse_networks
from tests.auth.helpers import PASSWORD, account_with_key
from tests.conftest import NGSI, admin_client, make_settings, problem_type

ATTACKER = "203.0.113.7"
USER = "198.51.100.20"


def request_from(client: Any, address: str, method: str, path: str, **kw: Any) -> httpx.Response:
    """A request to the client's app (its lifespan running) from another client address."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            return await http.request(method, path, **kw)

    return client.portal.call(go)


def login_from(client: Any, address: str, name: str, password: str = PASSWORD) -> httpx.Response:
    return request_from(
        client, address, "POST", "/auth/login", json={"name": name, "password": password}
    )


def test_guessing_locks_the_guesser_out_not_the_user(store_url):
    settings = make_settings(store=store_url)
    with admin_client(build_app(settings), raise_server_exceptions=False) as client:
        client.portal.call(lambda: account_with_key(client.app, "ana", ["staff"], [""]))
        for _ in range(5):
            assert login_from(client, ATTACKER, "ana", "guess").status_code == 401
        locked = login_from(client, ATTACKER, "ana")  # the right password, from there
        assert locked.status_code == 429 and problem_type(locked) == "TooManyRequests"
        assert int(locked.headers["retry-after"]) > 0
        # Ana, from where she is, is not locked out by someone else's guessing.
        assert login_from(client, USER, "ana").status_code == 200
    # The count is in the store: another worker, or this one after a restart, sees it.
    with admin_client(build_app(settings), raise_server_exceptions=False) as again:
        assert login_from(again, ATTACKER, "ana").status_code == 429
        assert login_from(again, USER, "ana").status_code == 200


def test_one_address_guessing_many_names_is_locked_out(store_url):
    settings = make_settings(store=store_url)
    with admin_client(build_app(settings), raise_server_exceptions=False) as client:
        client.portal.call(lambda: account_with_key(client.app, "rui", ["staff"], [""]))
        for n in range(20):  # spraying: one guess per name
            assert login_from(client, ATTACKER, f"user{n}", "Summer2026!").status_code == 401
        assert login_from(client, ATTACKER, "rui").status_code == 429
        assert login_from(client, USER, "rui").status_code == 200


def test_a_successful_log_in_forgets_only_its_own_failures(store_url):
    settings = make_settings(store=store_url)
    with admin_client(build_app(settings), raise_server_exceptions=False) as client:
        for name in ("eva", "mine"):
            client.portal.call(lambda n=name: account_with_key(client.app, n, ["staff"], [""]))
        for _ in range(4):
            assert login_from(client, ATTACKER, "eva", "guess").status_code == 401
        # Logging in to an account of one's own does not reset the count of guesses at eva.
        assert login_from(client, ATTACKER, "mine").status_code == 200
        assert login_from(client, ATTACKER, "eva", "guess").status_code == 401
        assert login_from(client, ATTACKER, "eva").status_code == 429


def test_old_failures_no_longer_count(store_url):
    clock = [1_000_000.0]
    settings = make_settings(store=store_url)
    with admin_client(build_app(settings)) as client:
        lockout = LoginLockout(client.app.state.store, clock=lambda: clock[0])

        async def go() -> None:
            for _ in range(5):
                await lockout.failed("ana", ATTACKER)
            assert await lockout.locked_for("ana", ATTACKER) == 901
            assert await lockout.locked_for("ana", USER) == 0
            clock[0] += 600
            assert await lockout.locked_for("ana", ATTACKER) == 301
            clock[0] += 301
            assert await lockout.locked_for("ana", ATTACKER) == 0

        client.portal.call(go)


# -- the client's address behind proxies --------------------------------------------------------


def scope(peer: str, *headers: tuple[str, str]) -> dict[str, Any]:
    return {
        "client": (peer, 5000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }


def test_forwarding_headers_are_believed_from_trusted_proxies_only():
    none = ClientAddresses(())
    proxies = ClientAddresses(parse_networks("10.0.0.0/8, fd00::/8"))
    xff = ("X-Forwarded-For", "198.51.100.1")
    # No trusted proxy, or a peer that is not one: the peer, whatever the headers say.
    assert none.of(scope("10.0.0.1", xff)) == "10.0.0.1"
    assert proxies.of(scope("192.0.2.5", xff)) == "192.0.2.5"
    # Through a trusted proxy: the rightmost hop that is not a trusted proxy.
    assert proxies.of(scope("10.0.0.1", xff)) == "198.51.100.1"
    forged = ("X-Forwarded-For", "1.1.1.1, 198.51.100.1, 10.0.0.9")
    assert proxies.of(scope("10.0.0.1", forged)) == "198.51.100.1"
    two_lines = scope("10.0.0.1", ("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "192.0.2.9"))
    assert proxies.of(two_lines) == "192.0.2.9"
    assert proxies.of(scope("10.0.0.1", ("X-Forwarded-For", "198.51.100.1:4711"))) == (
        "198.51.100.1"
    )
    # RFC 7239, when there is no X-Forwarded-For.
    forwarded = ("Forwarded", 'for=1.1.1.1, for="[2001:db8::1]:4711";proto=https, for=10.0.0.3')
    assert proxies.of(scope("fd00::1", forwarded)) == "2001:db8::1"
    assert proxies.of(scope("::ffff:10.0.0.1", forwarded)) == "2001:db8::1"
    # Only proxies all along: the farthest one; nothing forwarded: the peer.
    assert proxies.of(scope("10.0.0.1", ("X-Forwarded-For", "10.1.1.1, 10.2.2.2"))) == "10.1.1.1"
    assert proxies.of(scope("10.0.0.1")) == "10.0.0.1"


@pytest.mark.parametrize("trusted", ["", "10.0.0.0/8"])
def test_the_anonymous_rate_limit_counts_clients_behind_a_trusted_proxy(store_url, trusted):
    settings = make_settings(store=store_url, rate_limit_anonymous=2, trusted_proxies=trusted or "")
    with admin_client(build_app(settings)) as client:

        def health(peer: str, forwarded_for: str) -> int:
            headers = {"X-Forwarded-For": forwarded_for}
            return request_from(client, peer, "GET", "/health", headers=headers).status_code

        first = [health("10.0.0.1", "198.51.100.1") for _ in range(3)]
        assert first == [200, 200, 429]
        # Another client behind the proxy, and a forged hop on the left of the first one.
        other = health("10.0.0.1", "198.51.100.2")
        forged = health("10.0.0.1", "1.2.3.4, 198.51.100.1")
        if trusted:
            assert (other, forged) == (200, 429)
        else:  # the headers are not believed: everyone behind the proxy is one client
            assert (other, forged) == (429, 429)
        # A peer that is not a proxy cannot choose its bucket with the header.
        direct = [health("192.0.2.5", f"198.51.100.{n}") for n in range(10, 13)]
        assert direct == [200, 200, 429]


def test_trusted_proxies_setting_is_checked():
    from cidade.config import load_settings

    assert load_settings({"CIDADE_TRUSTED_PROXIES": "10.0.0.0/8"}).trusted_proxies == "10.0.0.0/8"
    with pytest.raises(SystemExit, match="CIDADE_TRUSTED_PROXIES"):
        load_settings({"CIDADE_TRUSTED_PROXIES": "the proxy"})


def test_the_anonymous_limit_still_applies_to_reads_of_entities(store_url):
    """The address found through the proxy is the one the gate counts (as /health above)."""
    settings = make_settings(
        store=store_url,
        rate_limit_anonymous=1,
        trusted_proxies="10.0.0.0/8",
        public_types="Building",
    )
    with admin_client(build_app(settings)) as client:
        path = f"{NGSI}/entities?type=Building"
        headers = {"X-Forwarded-For": "198.51.100.1"}
        codes = [
            request_from(client, "10.0.0.1", "GET", path, headers=headers).status_code
            for _ in range(2)
        ]
        assert codes == [200, 429]
