"""The environment of our Ray processes: the cluster token, derived from the access key."""

from __future__ import annotations

import functools
import hashlib

# Ray's own tokens are 64 hex characters (256 bits); ours are too. scrypt, not a plain hash:
# Ray's traffic is plaintext unless RAY_USE_TLS is set up, so the token may be seen on the
# private network, and a weak access key must not be cheap to find from it.
_SALT = b"vllm-bootstrap: the Ray cluster token"


@functools.cache
def ray_token(access_key: str) -> str:
    """The same for every box given `access_key`; the key cannot be read back from it."""
    derived = hashlib.scrypt(access_key.encode(), salt=_SALT, n=2**14, r=8, p=1, dklen=32)
    return derived.hex()


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
