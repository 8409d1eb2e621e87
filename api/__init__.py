"""OpenAI-compatible HTTP API over the jobs Backend (api -> jobs -> engine)."""

from .app import create_app
from .deps import ApiConfig
from .store import LocalStore, RedisStore

__all__ = ["ApiConfig", "LocalStore", "RedisStore", "create_app"]
