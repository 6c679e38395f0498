"""Who is calling: the principal every way in (account, API key, OIDC token) ends in."""

from __future__ import annotations

from dataclasses import dataclass, field

# The tenant a principal holds when it may act in every tenant (a platform administrator).
EVERY_TENANT = "*"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller, or the anonymous public.

    ``subject`` names it in the audit log and in rate limits without personal data:
    ``account:<name>``, ``key:<key id>``, ``oidc:<issuer sub>`` or ``anonymous``.
    ``tenants`` holds tenant names ("" is the default tenant, ``*`` every tenant).
    """

    subject: str
    kind: str  # "account" | "api_key" | "token" | "anonymous"
    roles: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()
    departments: frozenset[str] = frozenset()
    # A device's own entities: ids, or prefixes ending in "*"; empty for other roles.
    entities: tuple[str, ...] = ()
    # An API key's scope: the permissions it is narrowed to (None: all its roles give).
    scope: frozenset[str] | None = None
    # The account behind a session, a key or a token ("" when none): who owns what it creates.
    account: str = ""
    # A session's CSRF token: unsafe requests authenticated by cookie must repeat it.
    csrf: str | None = field(default=None, compare=False)

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"

    def member_of(self, tenant: str) -> bool:
        return EVERY_TENANT in self.tenants or tenant in self.tenants


ANONYMOUS = Principal(subject="anonymous", kind="anonymous", roles=frozenset({"anonymous"}))
