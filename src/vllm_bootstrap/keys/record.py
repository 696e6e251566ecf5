"""A scoped API key as the server keeps it: who it is, what it may reach, its limits.

The secret itself is never kept: only its BLAKE2b hash (secrets are 192 random bits, so a
fast hash is as good as a slow one) and its first characters, to tell keys apart in a listing.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field

# What a key may reach: the inference routes under /v1 (and /proxy/{id}/v1/... of launches
# serving its models); the Files and Batches API; everything, as the access key does.
INFERENCE = "inference"
BATCHES = "batches"
ADMIN = "admin"
SCOPES = (INFERENCE, BATCHES, ADMIN)

SECRET_PREFIX = "vbk_"
SHOWN_PREFIX_CHARACTERS = 12  # "vbk_" and 8 random characters


def new_secret() -> str:
    """192 random bits, with a prefix that says what it is (and secret scanners can find)."""
    return SECRET_PREFIX + secrets.token_urlsafe(24)


def digest_of(secret: bytes) -> bytes:
    """The secret's BLAKE2b: what the lookup uses. CPython's own implementation: OpenSSL's
    SHA-256 looks its algorithm up under a lock at every use, which cost a server with
    threads microseconds per request."""
    return hashlib.blake2b(secret, digest_size=32).digest()


def hash_of(secret: bytes) -> str:
    """What the database keeps: the digest, in hex."""
    return digest_of(secret).hex()


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    secret_hash: str = field(repr=False)
    scopes: frozenset[str]
    models: frozenset[str] | None  # None: every model
    max_concurrency: int | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    priority: int = 0
    expires_at: int | None = None  # Unix seconds; None: never
    created_at: int = 0
    # The scopes whose routes it reaches (all of them with `admin`; "" is every key's own
    # usage), worked out once: the check every request makes is one set lookup.
    reach: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        reach = frozenset(SCOPES) if ADMIN in self.scopes else self.scopes
        object.__setattr__(self, "reach", reach | {""})

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    def to_public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "api_key",
            "name": self.name,
            "prefix": self.prefix,
            "scopes": sorted(self.scopes),
            "models": sorted(self.models) if self.models is not None else None,
            "max_concurrency": self.max_concurrency,
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "priority": self.priority,
            "expires_at": self.expires_at,
            "created_at": self.created_at,
        }


# Where the access check leaves the scoped key a request came with (absent: the access key,
# or an open server), and where the key's traffic layer leaves its meter.
KEY_IN_SCOPE = "vllm_bootstrap.key"
METER_IN_SCOPE = "vllm_bootstrap.meter"


def key_of(scope: dict[str, object]) -> ApiKey | None:
    return scope.get(KEY_IN_SCOPE)  # type: ignore[return-value]
