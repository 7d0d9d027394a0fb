"""A credential for the replay: a fixed token, never asks anyone for anything."""
from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken

REPLAY_TOKEN = "replay-token"   # what the signed-in identity's token is on the replay

# --- credential ---------------------------------------------------------------------------

class FakeCredential:
    """A ``TokenCredential`` with a fixed token; never asks anyone for anything."""

    def __init__(self, token: str = REPLAY_TOKEN, expires_in: int = 3600):
        self.token, self.expires_in = token, expires_in
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(tuple(scopes))
        return AccessToken(self.token, int(time.time()) + self.expires_in)

    def get_token_info(self, *scopes: str, options: Any = None):
        from azure.core.credentials import AccessTokenInfo
        self.scopes.append(tuple(scopes))
        return AccessTokenInfo(self.token, int(time.time()) + self.expires_in)

    def close(self) -> None:
        pass

