"""The environment of our Ray processes: the cluster token, derived from the access key."""

from __future__ import annotations

import hashlib

# Ray's own tokens are 64 hex characters (256 bits); ours are too.
_PERSON = b"vb-ray-cluster"


def ray_token(access_key: str) -> str:
    """The same for every box given `access_key`; the key cannot be read back from it."""
    return hashlib.blake2b(access_key.encode(), digest_size=32, person=_PERSON).hexdigest()


def ray_environment(access_key: str) -> dict[str, str]:
    """What a Ray process of ours (a node, the head's driver) runs with: the token that lets
    it in, and none of Ray's guesses for a laptop: started under `uv run`, a driver would
    ship its working directory to every node and start Ray's workers through `uv run`,
    where each box has the package installed already."""
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": ray_token(access_key),
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
