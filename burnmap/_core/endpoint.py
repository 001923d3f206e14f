"""Which API a request speaks, and which provider serves it.

The provider comes from the host where it is a known one; otherwise the API shape (the
path) decides, so a corporate gateway or a loopback server speaking the Anthropic or
OpenAI API is priced by model name the same way. Requests that cost nothing (token
counting, listings, anything that is not a POST to a generation endpoint) are not
identified and pass untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "Endpoint",
    "identify",
    "provider_for_host",
]


@dataclass(frozen=True, slots=True)  # the transport caches them: shared between calls
class Endpoint:
    shape: str
    """Wire format: ``"anthropic"`` or ``"openai"``."""
    kind: str
    """``messages``, ``chat``, ``responses``, ``embeddings`` or ``completions``."""
    provider: str | None
    """genai-prices provider id known from the host, else ``None`` (resolved by model)."""
    model_in_url: str | None = None
    """Azure deployments and Vertex put the model in the path."""


_KNOWN_HOSTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), provider)
    for pattern, provider in (
        (r"(^|\.)api\.anthropic\.com$", "anthropic"),
        (r"(^|\.)api\.openai\.com$", "openai"),
        (r"(^|\.)openrouter\.ai$", "openrouter"),
        (r"(^|\.)api\.deepseek\.com$", "deepseek"),
        (
            r"\.(openai\.azure\.com|azure-api\.net|cognitiveservices\.azure\.com"
            r"|services\.ai\.azure\.com)$",
            "azure",
        ),
        (r"(^|\.)api\.groq\.com$", "groq"),
        (r"(^|\.)api\.mistral\.ai$", "mistral"),
        (r"(^|\.)api\.together\.xyz$", "together"),
        (r"(^|\.)api\.x\.ai$", "x-ai"),
        (r"(^|\.)api\.fireworks\.ai$", "fireworks"),
        (r"(^|\.)api\.cerebras\.ai$", "cerebras"),
        (r"(^|\.)api\.perplexity\.ai$", "perplexity"),
        (r"(^|\.)api\.moonshot\.(ai|cn)$", "moonshotai"),
        (r"^bedrock-runtime\.[a-z0-9-]+\.amazonaws\.com$", "aws"),
    )
)


@lru_cache(maxsize=256)
def provider_for_host(host: str) -> str | None:
    """The genai-prices provider id of a known API host.

    >>> provider_for_host("api.anthropic.com"), provider_for_host("127.0.0.1")
    ('anthropic', None)
    """
    host = host.lower()
    for pattern, provider in _KNOWN_HOSTS:
        if pattern.search(host):
            return provider
    return None


_AZURE_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/")
_VERTEX_MODEL = re.compile(r"/publishers/anthropic/models/([^/:]+):(?:stream)?[rR]awPredict$")
_BEDROCK_MODEL = re.compile(r"/model/([^/]+)/invoke$")


def identify(method: str, host: str, path: str) -> Endpoint | None:
    """The endpoint a request calls, or ``None`` when it is free or not a model call.

    >>> identify("POST", "api.anthropic.com", "/v1/messages").kind
    'messages'
    >>> identify("POST", "api.anthropic.com", "/v1/messages/count_tokens") is None
    True
    >>> identify("POST", "x.openai.azure.com", "/openai/deployments/gpt4o/chat/completions")
    Endpoint(shape='openai', kind='chat', provider='azure', model_in_url='gpt4o')
    """
    if method != "POST":
        return None
    path = path.rstrip("/")
    provider = provider_for_host(host)
    if path.endswith("/messages") and "/threads/" not in path:
        # (OpenAI Assistants' /threads/{id}/messages only stores a message: free.)
        return Endpoint("anthropic", "messages", provider)
    if path.endswith("/chat/completions"):
        return Endpoint("openai", "chat", provider, _deployment(path))
    if path.endswith("/responses"):
        return Endpoint("openai", "responses", provider, _deployment(path))
    if path.endswith("/embeddings"):
        return Endpoint("openai", "embeddings", provider, _deployment(path))
    if path.endswith("/completions"):
        return Endpoint("openai", "completions", provider, _deployment(path))
    match = _VERTEX_MODEL.search(path)
    if match:
        return Endpoint("anthropic", "messages", "anthropic", match.group(1).split("@")[0])
    match = _BEDROCK_MODEL.search(path)
    if match and "anthropic" in match.group(1):
        return Endpoint("anthropic", "messages", "aws", match.group(1))
    return None


def _deployment(path: str) -> str | None:
    match = _AZURE_DEPLOYMENT.search(path)
    return match.group(1) if match else None
