"""A vLLM server's address: one type that knows its root and its routes, so no URL is built
by string concatenation anywhere else.

    ServerUrl.parse("http://127.0.0.1:8000/v1")   # or without /v1
    url.v1 -> "http://127.0.0.1:8000/v1" (what the OpenAI client takes; how runs record it)
    url.models, url.health, url.version, url.metrics
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from core.defaults import HOST, PORT

API = "/v1"


@dataclass(frozen=True, order=True)
class ServerUrl:
    root: str  # scheme://host:port[/prefix], no trailing slash and no /v1

    @classmethod
    def parse(cls, value: str | ServerUrl) -> ServerUrl:
        """`http(s)://HOST[:PORT][/prefix][/v1]` as a ServerUrl; ValueError saying the accepted forms."""
        if isinstance(value, ServerUrl):
            return value
        parts = urlsplit(value.strip())
        path = parts.path.rstrip("/").removesuffix(API)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{value!r}: use http://HOST:PORT or http://HOST:PORT/v1, e.g. http://127.0.0.1:8000/v1")
        try:
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            raise ValueError(f"{value!r}: the port is not a number from 0 to 65535") from None
        return cls(f"{parts.scheme}://{parts.netloc}{path}")

    @classmethod
    def local(cls, port: int = PORT, host: str = HOST) -> ServerUrl:
        return cls(f"http://{host}:{port}")

    @property
    def v1(self) -> str:
        return self.root + API

    @property
    def models(self) -> str:
        return self.v1 + "/models"

    @property
    def health(self) -> str:
        return self.root + "/health"

    @property
    def version(self) -> str:
        return self.root + "/version"

    @property
    def metrics(self) -> str:
        return self.root + "/metrics"

    @property
    def hostname(self) -> str:
        return urlsplit(self.root).hostname or ""

    @property
    def port(self) -> int | None:
        return urlsplit(self.root).port

    def __str__(self) -> str:
        return self.v1


DEFAULT_URL = ServerUrl.local()
