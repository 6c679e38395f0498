"""OIDC bearer tokens: signatures, claims, and the provider's key set, served by a real HTTP server
on 127.0.0.1 (discovery document + JWKS) that counts what it is asked for."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cidade.auth.oidc import KNOWN_ROLES, OidcVerifier, TokenRejected, looks_like_jwt
from cidade.auth.principal import Principal
from cidade.config import Settings, load_settings

T = TypeVar("T")

REALM = "/realms/city"
DISCOVERY = f"{REALM}/.well-known/openid-configuration"
CERTS = f"{REALM}/protocol/openid-connect/certs"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_NEXT = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # after rotation
RSA_FORGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # not the provider's
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, **extra: str) -> dict[str, Any]:
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256", **extra}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    return {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": kid, "use": "sig"}


class Clock:
    """The verifier's monotonic clock, moved by hand (key ages and refetch intervals)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Provider:
    """An identity provider's public face: discovery document and key set, over real HTTP."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": [rsa_jwk(RSA_KEY, "k1"), ec_jwk(EC_KEY, "e1")]}
        self.jwks_status = 200
        self.delay = 0.0
        self.hits: Counter[str] = Counter()
        self.discovery_issuer: str | None = None  # None: the right one
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.hits[self.path] += 1
                if provider.delay:
                    time.sleep(provider.delay)
                status = 200
                if self.path == DISCOVERY:
                    document: Any = {
                        "issuer": provider.discovery_issuer or provider.issuer,
                        "jwks_uri": provider.jwks_url,
                    }
                elif self.path == CERTS:
                    status, document = provider.jwks_status, provider.jwks
                else:
                    status, document = 404, {"error": "not found"}
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.issuer = base + REALM
        self.jwks_url = base + CERTS

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def idp() -> Iterator[Provider]:
    provider = Provider()
    yield provider
    provider.close()


def settings(idp: Provider, **changes: Any) -> Settings:
    base: dict[str, Any] = {
        "oidc_issuer": idp.issuer,
        "oidc_audience": "cidade",
        "oidc_jwks_url": idp.jwks_url,
    }
    return Settings(**(base | changes))


@contextlib.asynccontextmanager
async def verifier(
    idp: Provider, clock: Clock | None = None, **changes: Any
) -> AsyncIterator[OidcVerifier]:
    v = OidcVerifier(settings(idp, **changes), clock=clock or Clock())
    try:
        yield v
    finally:
        await v.aclose()


def claims(idp: Provider, **changes: Any) -> dict[str, Any]:
    """A Keycloak-like access token's claims; a change to None removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": idp.issuer,
        "aud": ["cidade", "account"],
        "sub": "5f0c6a1e-8d4e-4c7a-9a47-6f2b8f1d2c11",
        "iat": now,
        "exp": now + 300,
        "preferred_username": "ana",
        "roles": ["operator"],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def rs256(payload: dict[str, Any], kid: str = "k1", key: Any = RSA_KEY) -> str:
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


async def rejected(v: OidcVerifier, token: str) -> str:
    with pytest.raises(TokenRejected) as caught:
        await v.verify(token)
    return caught.value.reason


# -- accepted tokens ---------------------------------------------------------------------------


def test_rs256_keycloak_realm_roles_through_role_map(idp: Provider) -> None:
    payload = claims(
        idp,
        roles=None,
        realm_access={
            "roles": ["city-admin", "city-ops", "offline_access", "uma_authorization", "admin"]
        },
        tenants=["lisboa", "porto"],
        departments=["mobility", "environment"],
    )

    async def go() -> Principal:
        async with verifier(
            idp,
            oidc_roles_claim="realm_access.roles",
            oidc_role_map="city-admin=admin, city-ops=operator, city-ops=staff",
        ) as v:
            return await v.verify(rs256(payload))

    assert run(go()) == Principal(
        subject="oidc:5f0c6a1e-8d4e-4c7a-9a47-6f2b8f1d2c11",
        kind="token",
        # "admin" as the provider spells it is not in the map, so it grants nothing
        roles=frozenset({"admin", "operator", "staff"}),
        tenants=frozenset({"lisboa", "porto"}),
        departments=frozenset({"mobility", "environment"}),
        account="",
    )


def test_es256_client_roles_as_a_string_and_default_tenant(idp: Provider) -> None:
    payload = claims(
        idp,
        sub="ana@camara.example",
        roles=None,
        resource_access={"cidade-web": {"roles": "operator citizen,stranger  publisher"}},
    )
    token = jwt.encode(payload, EC_KEY, algorithm="ES256", headers={"kid": "e1"})

    async def go() -> Principal:
        async with verifier(idp, oidc_roles_claim="resource_access.cidade-web.roles") as v:
            return await v.verify(token)

    principal = run(go())
    assert principal.subject == "oidc:ana@camara.example"
    assert principal.kind == "token"
    assert principal.roles == {"operator", "citizen", "publisher"}  # "stranger" is unknown
    assert principal.tenants == {""}  # no tenants claim: the default tenant only
    assert principal.member_of("") and not principal.member_of("porto")
    assert principal.departments == frozenset()
    assert principal.account == ""


def test_claim_names_with_dots_and_comma_separated_tenants(idp: Provider) -> None:
    payload = claims(
        idp,
        roles=None,
        **{"https://camara.example/roles": ["staff", "admin"]},
        tenants="lisboa, porto",
        departments="Public Works,Mobility",
    )

    async def go() -> Principal:
        async with verifier(idp, oidc_roles_claim="https://camara.example/roles") as v:
            return await v.verify(rs256(payload))

    principal = run(go())
    assert principal.roles == {"staff", "admin"}
    assert principal.tenants == {"lisboa", "porto"}
    assert principal.departments == {"Public Works", "Mobility"}


def test_empty_tenants_claim_gives_no_tenant(idp: Provider) -> None:
    async def go() -> Principal:
        async with verifier(idp) as v:
            return await v.verify(rs256(claims(idp, tenants=[])))

    assert run(go()).tenants == frozenset()


def test_unknown_roles_are_dropped_without_a_map(idp: Provider) -> None:
    payload = claims(idp, roles=["operator", "superuser", 42, "anonymous"])

    async def go() -> Principal:
        async with verifier(idp) as v:
            return await v.verify(rs256(payload))

    assert run(go()).roles == {"operator"}
    assert "anonymous" not in KNOWN_ROLES


# -- time claims -------------------------------------------------------------------------------


def test_expired_beyond_leeway_refused_within_leeway_accepted(idp: Provider) -> None:
    now = int(time.time())

    async def go() -> None:
        async with verifier(idp, oidc_leeway=60.0) as v:
            assert await rejected(v, rs256(claims(idp, exp=now - 120, iat=now - 400))) == "expired"
            principal = await v.verify(rs256(claims(idp, exp=now - 30, iat=now - 400)))
            assert principal.roles == {"operator"}

    run(go())


def test_not_yet_valid(idp: Provider) -> None:
    now = int(time.time())

    async def go() -> None:
        async with verifier(idp, oidc_leeway=60.0) as v:
            assert await rejected(v, rs256(claims(idp, nbf=now + 300))) == "not yet valid"
            await v.verify(rs256(claims(idp, nbf=now + 30)))  # within the leeway

    run(go())


# -- audience, issuer, required claims ---------------------------------------------------------


def test_wrong_or_missing_audience(idp: Provider) -> None:
    async def go() -> None:
        async with verifier(idp) as v:
            wrong = rs256(claims(idp, aud=["account", "other-app"]))
            assert await rejected(v, wrong) == "wrong audience"
            assert await rejected(v, rs256(claims(idp, aud=None))) == "missing aud"
            await v.verify(rs256(claims(idp, aud="cidade")))  # a single string will do

    run(go())


def test_wrong_issuer(idp: Provider) -> None:
    async def go() -> None:
        async with verifier(idp) as v:
            other = rs256(claims(idp, iss=idp.issuer.replace("/city", "/master")))
            assert await rejected(v, other) == "wrong issuer"
            assert await rejected(v, rs256(claims(idp, iss=None))) == "missing iss"

    run(go())


def test_missing_exp_or_sub(idp: Provider) -> None:
    async def go() -> None:
        async with verifier(idp) as v:
            assert await rejected(v, rs256(claims(idp, exp=None))) == "missing exp"
            assert await rejected(v, rs256(claims(idp, sub=None))) == "missing sub"
            assert await rejected(v, rs256(claims(idp, sub=""))) == "missing sub"

    run(go())


# -- signatures and algorithms -----------------------------------------------------------------


def test_signed_by_another_key_with_the_same_kid(idp: Provider) -> None:
    async def go() -> None:
        async with verifier(idp) as v:
            forged = rs256(claims(idp, roles=["admin"]), kid="k1", key=RSA_FORGER)
            assert await rejected(v, forged) == "bad signature"
            assert await rejected(v, forged) == "bad signature"

    run(go())
    assert idp.hits[CERTS] == 1  # a bad signature is no reason to ask the provider again


def test_alg_none_refused(idp: Provider) -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps(claims(idp, roles=["admin"])).encode())
    for alg_none in (f"{header}.{body}.", f"{header}.{body}.c2ln"):
        assert looks_like_jwt(alg_none)

        async def go(token: str = alg_none) -> str:
            async with verifier(idp) as v:
                return await rejected(v, token)

        assert run(go()) == "algorithm not allowed"


def test_hs256_signed_with_the_public_key_refused(idp: Provider) -> None:
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps(claims(idp, roles=["admin"])).encode())
    signing_input = f"{header}.{body}".encode()
    signature = b64(hmac.new(public_pem, signing_input, hashlib.sha256).digest())

    async def go() -> str:
        async with verifier(idp) as v:
            return await rejected(v, f"{header}.{body}.{signature}")

    assert run(go()) == "algorithm not allowed"
    assert idp.hits[CERTS] == 0  # refused on its header, before any key was looked for


def test_algorithm_outside_the_configured_list_refused(idp: Provider) -> None:
    token = jwt.encode(claims(idp), EC_KEY, algorithm="ES256", headers={"kid": "e1"})

    async def go() -> str:
        async with verifier(idp, oidc_algorithms="RS256") as v:
            return await rejected(v, token)

    assert run(go()) == "algorithm not allowed"


def test_key_must_fit_the_algorithm(idp: Provider) -> None:
    idp.jwks["keys"].append(rsa_jwk(RSA_NEXT, "enc1", use="enc", alg="RSA-OAEP"))
    idp.jwks["keys"].append(rsa_jwk(RSA_NEXT, "ps1", alg="PS256"))
    payload = claims(idp)

    async def go() -> None:
        async with verifier(idp) as v:
            # an ES256 token naming the RSA key
            es_on_rsa = jwt.encode(payload, EC_KEY, algorithm="ES256", headers={"kid": "k1"})
            assert await rejected(v, es_on_rsa) == "unknown key"
            # an encryption key is not a signing key
            assert await rejected(v, rs256(payload, kid="enc1", key=RSA_NEXT)) == "unknown key"
            # a key published for PS256 does not verify RS256
            assert await rejected(v, rs256(payload, kid="ps1", key=RSA_NEXT)) == "unknown key"
            ps = jwt.encode(payload, RSA_NEXT, algorithm="PS256", headers={"kid": "ps1"})
            assert (await v.verify(ps)).subject.startswith("oidc:")

    run(go())


@pytest.mark.parametrize(
    "token",
    [
        "",
        "secret-api-key",
        "a.b",
        "a.b.c.d",
        "!!!.###.$$$",
        "bm90IGpzb24.e30.c2ln",  # header is not JSON
        b64(b"[1,2]") + ".e30.c2ln",  # header is not an object
        b64(b'{"alg":"RS256","kid":"k1"}') + "." + b64(b"not json") + ".c2ln",
        b64(b'{"alg":"RS256","kid":"k1"}') + ".e30." + "A" * 40_000,  # oversized
        b64(b'{"alg":["RS256"],"kid":"k1"}') + ".e30.c2ln",
        b64(b'{"alg":"RS256","kid":7}') + ".e30.c2ln",
    ],
)
def test_garbage_refused(idp: Provider, token: str) -> None:
    async def go() -> str:
        async with verifier(idp) as v:
            return await rejected(v, token)

    assert run(go()) in {"malformed token", "algorithm not allowed", "bad signature"}


def test_looks_like_jwt(idp: Provider) -> None:
    assert looks_like_jwt(rs256(claims(idp)))
    assert not looks_like_jwt("ck_3f9a2b_sekrit")
    assert not looks_like_jwt("a.b")
    assert not looks_like_jwt("a.b.c.d")
    assert not looks_like_jwt("a b.c.d")
    assert not looks_like_jwt("a.b.c\n")


# -- the key set -------------------------------------------------------------------------------


def test_key_rotation_needs_one_refetch(idp: Provider) -> None:
    clock = Clock()

    async def go() -> None:
        async with verifier(idp, clock) as v:
            await v.verify(rs256(claims(idp)))
            assert idp.hits[CERTS] == 1
            idp.jwks = {"keys": [rsa_jwk(RSA_NEXT, "k2")]}
            clock.now += 31
            principal = await v.verify(rs256(claims(idp), kid="k2", key=RSA_NEXT))
            assert principal.roles == {"operator"}
            assert idp.hits[CERTS] == 2
            # the withdrawn key is gone, and asking about it again is too soon
            assert await rejected(v, rs256(claims(idp))) == "unknown key"
            await v.verify(rs256(claims(idp), kid="k2", key=RSA_NEXT))
            assert idp.hits[CERTS] == 2

    run(go())


def test_new_kid_within_30_s_waits_for_the_interval(idp: Provider) -> None:
    clock = Clock()

    async def go() -> None:
        async with verifier(idp, clock) as v:
            await v.verify(rs256(claims(idp)))
            idp.jwks["keys"].append(rsa_jwk(RSA_NEXT, "k2"))
            clock.now += 10
            new = rs256(claims(idp), kid="k2", key=RSA_NEXT)
            assert await rejected(v, new) == "unknown key"
            assert idp.hits[CERTS] == 1
            clock.now += 21
            await v.verify(new)
            assert idp.hits[CERTS] == 2

    run(go())


def test_burst_of_unknown_kids_makes_at_most_one_fetch(idp: Provider) -> None:
    clock = Clock()
    idp.delay = 0.05  # keeps the first fetch in flight while the others arrive

    async def go() -> None:
        async with verifier(idp, clock) as v:
            await v.verify(rs256(claims(idp)))
            assert idp.hits[CERTS] == 1
            clock.now += 31

            async def unknown() -> str:
                return await rejected(v, rs256(claims(idp), kid=uuid.uuid4().hex))

            reasons = await asyncio.gather(*(unknown() for _ in range(50)))
            assert set(reasons) == {"unknown key"}
            assert idp.hits[CERTS] == 2
            clock.now += 29
            await asyncio.gather(*(unknown() for _ in range(20)))
            assert idp.hits[CERTS] == 2
            clock.now += 1
            await unknown()
            assert idp.hits[CERTS] == 3

    run(go())


def test_concurrent_first_tokens_share_one_fetch(idp: Provider) -> None:
    idp.delay = 0.1

    async def go() -> list[Principal]:
        async with verifier(idp) as v:
            return await asyncio.gather(*(v.verify(rs256(claims(idp))) for _ in range(30)))

    principals = run(go())
    assert len(principals) == 30 and all(p.roles == {"operator"} for p in principals)
    assert idp.hits[CERTS] == 1


def test_keys_older_than_ten_minutes_are_fetched_again(idp: Provider) -> None:
    clock = Clock()

    async def go() -> None:
        async with verifier(idp, clock) as v:
            token = rs256(claims(idp))
            await v.verify(token)
            clock.now += 599
            await v.verify(token)
            assert idp.hits[CERTS] == 1
            idp.jwks = {"keys": [rsa_jwk(RSA_NEXT, "k2")]}  # k1 withdrawn, same kid never asked
            clock.now += 2
            assert await rejected(v, token) == "unknown key"
            assert idp.hits[CERTS] == 2

    run(go())


def test_failed_fetch_keeps_the_old_keys_and_logs_no_token(
    idp: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    token = rs256(claims(idp))

    async def go() -> None:
        async with verifier(idp, clock) as v:
            await v.verify(token)
            idp.jwks_status = 503
            clock.now += 601
            with caplog.at_level(logging.WARNING, logger="cidade.auth.oidc"):
                await v.verify(token)  # stale keys still serve while the provider is down
            assert idp.hits[CERTS] == 2
            # the failure counts as an attempt: no retry before the interval
            clock.now += 10
            await v.verify(token)
            assert idp.hits[CERTS] == 2
            clock.now += 20
            idp.jwks_status = 200
            await v.verify(token)
            assert idp.hits[CERTS] == 3

    run(go())
    assert "503" in caplog.text
    for segment in token.split("."):
        assert segment not in caplog.text


def test_provider_down_from_the_start_rejects_as_unknown_key(idp: Provider) -> None:
    idp.jwks_status = 500

    async def go() -> str:
        async with verifier(idp) as v:
            return await rejected(v, rs256(claims(idp)))

    assert run(go()) == "unknown key"


def test_unusable_key_set_keeps_the_old_keys(idp: Provider) -> None:
    clock = Clock()

    async def go() -> None:
        async with verifier(idp, clock) as v:
            token = rs256(claims(idp))
            await v.verify(token)
            idp.jwks = {"keys": [{"kty": "oct", "k": b64(b"shared secret"), "kid": "k1"}]}
            clock.now += 601
            await v.verify(token)
            assert idp.hits[CERTS] == 2

    run(go())


def test_discovery_when_no_jwks_url(idp: Provider) -> None:
    async def go() -> Principal:
        async with verifier(idp, oidc_jwks_url="") as v:
            await v.verify(rs256(claims(idp)))
            es = jwt.encode(claims(idp), EC_KEY, algorithm="ES256", headers={"kid": "e1"})
            return await v.verify(es)

    assert run(go()).kind == "token"
    assert idp.hits[DISCOVERY] == 1
    assert idp.hits[CERTS] == 1


def test_discovery_document_of_another_issuer_is_not_used(idp: Provider) -> None:
    idp.discovery_issuer = "https://evil.example/realms/city"

    async def go() -> str:
        async with verifier(idp, oidc_jwks_url="") as v:
            return await rejected(v, rs256(claims(idp)))

    assert run(go()) == "unknown key"
    assert idp.hits[DISCOVERY] == 1
    assert idp.hits[CERTS] == 0


# -- construction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithms", ["none", "HS256", "RS256,HS512", "RS256, none", "hs384", "", "RS257"]
)
def test_construction_refuses_algorithms(idp: Provider, algorithms: str) -> None:
    with pytest.raises(ValueError):
        OidcVerifier(settings(idp, oidc_algorithms=algorithms))


@pytest.mark.parametrize("role_map", ["city-admin", "city-admin=root", "=admin", "x=admin,y"])
def test_construction_refuses_bad_role_maps(idp: Provider, role_map: str) -> None:
    with pytest.raises(ValueError):
        OidcVerifier(settings(idp, oidc_role_map=role_map))


def test_construction_needs_an_issuer_and_an_audience() -> None:
    with pytest.raises(ValueError):
        OidcVerifier(Settings(oidc_issuer="", oidc_audience="cidade"))
    # Without an audience, tokens the provider issued to its other clients would do here too.
    with pytest.raises(ValueError, match="CIDADE_OIDC_AUDIENCE"):
        OidcVerifier(Settings(oidc_issuer="https://id.camara.example/realms/city"))
    with pytest.raises(SystemExit, match="CIDADE_OIDC_AUDIENCE"):
        load_settings({"CIDADE_OIDC_ISSUER": "https://id.camara.example/realms/city"})
    OidcVerifier(  # and that is all
        Settings(oidc_issuer="https://id.camara.example/realms/city", oidc_audience="cidade")
    )
