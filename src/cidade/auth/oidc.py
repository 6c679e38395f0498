"""Bearer tokens (JWT) from the city's OpenID Connect provider, verified into a ``Principal``.

PyJWT checks signatures and the registered claims; this module decides which key and which
algorithm a token may use, and keeps the provider's signing keys (its JWKS). The keys are
fetched with httpx on the event loop, never with PyJWT's ``PyJWKClient``, whose urllib call would
block every other request while the provider answers.

Only asymmetric algorithms are ever accepted: with ``none`` anyone could write a token, and with
HMAC anyone holding the published public key could (sign HS256 with the PEM as the secret).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms

from cidade.auth.principal import Principal
from cidade.auth.roles import ASSIGNABLE
from cidade.config import Settings

log = logging.getLogger("cidade.auth.oidc")

# The roles Cidade gives meaning to; any other role a provider hands out is dropped.
KNOWN_ROLES = ASSIGNABLE

# Anyone can send tokens naming invented key ids: a refetch for an unknown kid happens at most
# this often, so such a flood costs the provider one request per interval.
MIN_REFRESH_INTERVAL = 30.0
# A key set older than this is fetched again, so a key the provider withdrew stops working.
MAX_KEY_AGE = 600.0
FETCH_TIMEOUT = 5.0
MAX_DOCUMENT_BYTES = 1024 * 1024
# Far above a real token with many roles; bounds the work a junk Authorization header costs.
MAX_TOKEN_CHARS = 32 * 1024

_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES = {
    "ES256": "P-256",
    "ES384": "P-384",
    "ES512": "P-521",
    "ES521": "P-521",
    "ES256K": "secp256k1",
}
_OKP_CURVES = {"EdDSA": frozenset({"Ed25519", "Ed448"})}
_ASYMMETRIC = _RSA_ALGORITHMS | _EC_CURVES.keys() | _OKP_CURVES.keys()


class TokenRejected(Exception):
    """A bearer token that does not authenticate anyone; ``reason`` is safe to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments: a JWT rather than an API key (nothing is verified).

    An empty third segment still counts, so an unsigned token is refused as one.
    """
    return _JWT_SHAPE.fullmatch(token) is not None


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    key: Any  # a cryptography public key

    def fits(self, alg: str) -> bool:
        # A key that names its algorithm is used with that one only (RFC 7517 §4.4).
        if self.alg is not None and self.alg != alg:
            return False
        if alg in _RSA_ALGORITHMS:
            return self.kty == "RSA"
        if alg in _EC_CURVES:
            return self.kty == "EC" and self.crv == _EC_CURVES[alg]
        if alg in _OKP_CURVES:
            return self.kty == "OKP" and self.crv in _OKP_CURVES[alg]
        return False


class OidcVerifier:
    """Verifies the provider's bearer tokens; holds its signing keys (one per process)."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not settings.oidc_issuer:
            raise ValueError("CIDADE_OIDC_ISSUER is empty: there is no provider to trust")
        if not settings.oidc_audience:
            # Without one, a token the provider issued to any of its clients (another city
            # application, a test client) would be accepted here.
            raise ValueError(
                "CIDADE_OIDC_AUDIENCE is empty: name this platform's client id at the provider,"
                " the `aud` its tokens must carry"
            )
        if not settings.oidc_leeway >= 0:
            raise ValueError("CIDADE_OIDC_LEEWAY must be zero or a positive number of seconds")
        self._issuer = settings.oidc_issuer
        self._audience = settings.oidc_audience
        self._algorithms = _parse_algorithms(settings.oidc_algorithms)
        self._leeway = settings.oidc_leeway
        self._roles_claim = settings.oidc_roles_claim
        self._role_map = _parse_role_map(settings.oidc_role_map)
        self._tenants_claim = settings.oidc_tenants_claim
        self._departments_claim = settings.oidc_departments_claim
        self._configured_jwks_url = settings.oidc_jwks_url or None
        self._jwks_url = self._configured_jwks_url
        self._clock = clock
        self._keys: tuple[_Key, ...] = ()
        self._fetched_at: float | None = None  # last fetch that brought keys
        self._attempted_at: float | None = None  # last fetch tried, whatever came of it
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None

    async def verify(self, token: str) -> Principal:
        """The principal a bearer token names; ``TokenRejected`` when it names no one."""
        if len(token) > MAX_TOKEN_CHARS or not looks_like_jwt(token):
            raise TokenRejected("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed token") from None
        alg = header.get("alg")
        # The header is the sender's choice, so it is checked against our list before any key is
        # looked at; "none" and HS* can never be in that list.
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise TokenRejected("algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("malformed token")
        # Header fields that point at keys (jku, x5u, jwk, x5c) are ignored: keys come only
        # from the provider's key set.
        key = await self._key_for(kid, alg)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "sub", "aud"], "verify_aud": True},
            )
        except jwt.PyJWTError as exc:
            raise TokenRejected(_reason(exc)) from None
        return self._principal(claims)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- keys -----------------------------------------------------------------------------

    async def _key_for(self, kid: str | None, alg: str) -> _Key:
        found = self._find(kid, alg)
        stale = self._fetched_at is None or self._clock() - self._fetched_at >= MAX_KEY_AGE
        # A fetch in flight is waited for even when it is too soon for another: the token may
        # name a key it is bringing (the first tokens after start-up all do).
        if (stale or found is None) and (self._may_fetch() or self._lock.locked()):
            await self._refresh()
            found = self._find(kid, alg)
        if found is None:
            raise TokenRejected("unknown key")
        return found

    def _find(self, kid: str | None, alg: str) -> _Key | None:
        if kid is None:
            # Without a kid only an unambiguous key will do; providers with several keys name them.
            fitting = [k for k in self._keys if k.fits(alg)]
            return fitting[0] if len(fitting) == 1 else None
        return next((k for k in self._keys if k.kid == kid and k.fits(alg)), None)

    def _may_fetch(self) -> bool:
        return self._attempted_at is None or (
            self._clock() - self._attempted_at >= MIN_REFRESH_INTERVAL
        )

    async def _refresh(self) -> None:
        async with self._lock:
            # Whoever held the lock before us has just fetched (or failed to): that answer
            # serves every token that was waiting, so one burst makes one request.
            if not self._may_fetch():
                return
            self._attempted_at = self._clock()
            try:
                keys = await self._fetch_keys()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning(
                    "signing keys of %s not refreshed, keeping the %d known: %s",
                    self._issuer,
                    len(self._keys),
                    exc,
                )
                if self._configured_jwks_url is None:
                    self._jwks_url = None  # the provider may have moved them: discover again
                return
            self._keys = keys
            self._fetched_at = self._clock()

    async def _fetch_keys(self) -> tuple[_Key, ...]:
        if self._jwks_url is None:
            url = self._issuer.rstrip("/") + "/.well-known/openid-configuration"
            discovery = await self._get_json(url)
            jwks_uri = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
            if not isinstance(jwks_uri, str) or not jwks_uri:
                raise ValueError(f"{url} names no jwks_uri")
            # OpenID Connect Discovery §4.3: a document for another issuer must not be used.
            if discovery.get("issuer") != self._issuer:
                raise ValueError(f"{url} is for issuer {discovery.get('issuer')!r}")
            self._jwks_url = jwks_uri
        return _parse_jwks(await self._get_json(self._jwks_url))

    async def _get_json(self, url: str) -> Any:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=FETCH_TIMEOUT)
        async with self._client.stream(
            "GET", url, headers={"Accept": "application/json"}
        ) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ValueError(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
        return json.loads(body)

    # -- claims ---------------------------------------------------------------------------

    def _principal(self, claims: dict[str, Any]) -> Principal:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise TokenRejected("missing sub")
        granted = _split(_claim(claims, self._roles_claim), r"[\s,]+")
        if self._role_map:
            granted = frozenset().union(*(self._role_map.get(r, ()) for r in granted))
        tenants = _claim(claims, self._tenants_claim)
        return Principal(
            # sub is the provider's identifier for the person (possibly an e-mail address it
            # chose); it is what the audit log can trace back with the provider.
            subject=f"oidc:{sub}",
            kind="token",
            roles=granted & KNOWN_ROLES,
            # No claim: the default tenant. A claim (even an empty one) is taken as it is.
            tenants=frozenset({""}) if tenants is None else _split(tenants, ","),
            departments=_split(_claim(claims, self._departments_claim), ","),
            account="",  # a token has no local account behind it
        )


def _parse_algorithms(text: str) -> frozenset[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError("CIDADE_OIDC_ALGORITHMS is empty")
    supported = get_default_algorithms()
    for name in names:
        if name.lower() == "none" or name.upper().startswith("HS"):
            raise ValueError(
                f"CIDADE_OIDC_ALGORITHMS: {name} is never accepted (only public-key signatures)"
            )
        if name not in _ASYMMETRIC or name not in supported:
            raise ValueError(f"CIDADE_OIDC_ALGORITHMS: unknown algorithm {name}")
    return frozenset(names)


def _parse_role_map(text: str) -> dict[str, frozenset[str]]:
    """``provider=cidade,...``; one provider role may appear more than once to give several."""
    mapping: dict[str, set[str]] = {}
    for entry in text.split(","):
        if not entry.strip():
            continue
        provider, sep, ours = (part.strip() for part in entry.partition("="))
        if not sep or not provider or not ours:
            raise ValueError(f"CIDADE_OIDC_ROLE_MAP: {entry.strip()!r} is not provider=cidade")
        if ours not in KNOWN_ROLES:
            raise ValueError(
                f"CIDADE_OIDC_ROLE_MAP: {ours!r} is not a Cidade role ({', '.join(sorted(KNOWN_ROLES))})"
            )
        mapping.setdefault(provider, set()).add(ours)
    return {provider: frozenset(roles) for provider, roles in mapping.items()}


def _parse_jwks(document: Any) -> tuple[_Key, ...]:
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the key set has no 'keys' list")
    keys = []
    for jwk in entries:
        if not isinstance(jwk, dict):
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        ops = jwk.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            continue
        if "d" in jwk:
            continue  # private material has no business in a published key set
        kty = jwk.get("kty")
        # "oct" (a shared secret) is never read: it could only serve HMAC.
        loader = {"RSA": RSAAlgorithm, "EC": ECAlgorithm, "OKP": OKPAlgorithm}.get(kty)  # type: ignore[arg-type]
        if loader is None:
            continue
        try:
            key = loader.from_jwk(jwk)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            log.warning("signing key %r left out of the key set: %s", jwk.get("kid"), exc)
            continue
        kid, crv, alg = jwk.get("kid"), jwk.get("crv"), jwk.get("alg")
        keys.append(
            _Key(
                kid=kid if isinstance(kid, str) else None,
                kty=kty,  # type: ignore[arg-type]
                crv=crv if isinstance(crv, str) else None,
                alg=alg if isinstance(alg, str) else None,
                key=key,
            )
        )
    if entries and not keys:
        # A set we cannot use at all looks like a broken answer rather than a rotation.
        raise ValueError("the key set holds no usable signing key")
    return tuple(keys)


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``realm_access.roles``), or None."""
    return _at(claims, path.split(".")) if path else None


def _at(node: Any, parts: list[str]) -> Any:
    if not parts:
        return node
    if not isinstance(node, Mapping):
        return None
    # Longest name first: claim names may hold dots themselves (https://city.example/roles,
    # or a client id in resource_access.<client>.roles).
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        if name in node:
            found = _at(node[name], parts[i:])
            if found is not None:
                return found
    return None


def _split(value: Any, separators: str) -> frozenset[str]:
    """A claim as a set of names: a list of strings, or one string of separated names."""
    if isinstance(value, str):
        items: list[Any] = re.split(separators, value)
    elif isinstance(value, list):
        items = value
    else:
        return frozenset()
    return frozenset(item.strip() for item in items if isinstance(item, str) and item.strip())


_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not yet valid"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "bad signature"),  # before DecodeError, its base class
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.DecodeError, "malformed token"),
)


def _reason(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing {exc.claim}"
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "invalid token"
