"""Which API a request speaks, and which provider serves it.

The provider comes from the host where it is a known one; otherwise the API shape (the
path) decides, so a corporate gateway or a loopback server speaking the Anthropic or
OpenAI API is priced by model name the same way. Requests that cost nothing (token
counting, listings, anything that is not a POST to a generation endpoint) are not
identified and pass untouched. POSTs that cost money but report no usage burnmap can
price (images, audio, batches, fine-tuning, Assistants runs…) are identified as
``unmetered``: they are charged the price the user declared for them, or refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = [
    "Endpoint",
    "identify",
    "provider_for_host",
    "template_pattern",
]


@dataclass(frozen=True, slots=True)  # the transport caches them: shared between calls
class Endpoint:
    shape: str
    """Wire format: ``"anthropic"`` or ``"openai"``."""
    kind: str
    """``messages``, ``chat``, ``responses``, ``embeddings``, ``completions``, or
    ``unmetered`` (a paid call whose cost burnmap cannot read)."""
    provider: str | None
    """genai-prices provider id known from the host, else ``None`` (resolved by model)."""
    model_in_url: str | None = None
    """Azure deployments and Vertex put the model in the path."""
    path: str = field(default="", repr=False)
    """The request path, for an ``unmetered`` endpoint (its declared price is looked up
    by it)."""
    template: str = field(default="", repr=False)
    """An ``unmetered`` endpoint's path template (``/threads/{id}/runs``): what to declare
    a price for, and what its report rows name."""
    what: str = field(default="", repr=False)
    """What an ``unmetered`` endpoint does, in words, for error messages."""
    streams: bool = field(default=False, repr=False)
    """The path itself asks for a stream (Bedrock's ``invoke-with-response-stream``)."""
    regional: bool = field(default=False, repr=False)
    """A Bedrock or Vertex endpoint that keeps Claude in a region or geography (not the
    global one): newer Claude models cost 10% more there."""


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


# POSTs that cost money but whose responses carry no usage burnmap can price, or whose cost
# comes later or elsewhere (a batch, a fine-tuning job, a realtime session's WebSocket), as
# path templates ({id}: any one segment), matched on the end of the path. A declared price
# is looked up with the same templates (see PriceBook.register_endpoint).
_UNMETERED_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("/images/generations", "image generation"),
    ("/images/edits", "image generation"),
    ("/images/variations", "image generation"),
    ("/audio/speech", "audio"),
    ("/audio/transcriptions", "audio"),
    ("/audio/translations", "audio"),
    ("/batches", "a batch job"),
    ("/fine_tuning/jobs", "a fine-tuning job"),
    ("/threads/runs", "an Assistants run"),
    ("/threads/{id}/runs", "an Assistants run"),
    ("/threads/{id}/runs/{id}/submit_tool_outputs", "an Assistants run"),
    ("/evals/{id}/runs", "an eval run"),
    ("/videos", "video generation"),
    ("/videos/{id}/remix", "video generation"),
    ("/videos/edits", "video generation"),
    ("/videos/extensions", "video generation"),
    ("/realtime/sessions", "a realtime session"),
    ("/realtime/client_secrets", "a realtime session"),
    ("/realtime/transcription_sessions", "a realtime session"),
    ("/realtime/calls", "a realtime session"),
    ("/containers", "a code interpreter container"),
    ("/fine_tuning/alpha/graders/run", "a grader run"),
    ("/agents/sessions/{id}/events", "an agent session"),
    ("/agents/automations/{id}/invocations", "an agent automation"),
    # Anthropic's managed agents: sessions, deployments and dreams run the model server-side.
    ("/sessions/{id}/events", "a managed agent session"),
    ("/deployments/{id}/run", "a managed agent deployment"),
    ("/dreams", "a managed agent dream"),
    ("/converse", "a Bedrock Converse call"),
    ("/converse-stream", "a Bedrock Converse call"),
)


def template_pattern(template: str) -> re.Pattern[str]:
    """A path template as a pattern matching the end of a path, segment by segment;
    ``{…}`` matches any one segment. Declared prices are matched with the same patterns.

    >>> template_pattern("/threads/{id}/runs").search("/v1/threads/thread_1/runs") is not None
    True
    >>> template_pattern("/images/generations").search("/v1/my_images/generations") is None
    True
    """
    return re.compile(re.sub(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(template)) + "$")


_UNMETERED: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (template_pattern(template), template, what) for template, what in _UNMETERED_TEMPLATES
)
# On a host that is not a known provider, only paths shaped like an LLM API are taken for
# one: an agent's own tools may POST to other services' /videos or /batches. /v1/ anywhere,
# /openai/ anywhere, or a Bedrock /model/ (at the root or behind a proxy's /bedrock/) will
# do for any template; for those no other service uses (images, audio, threads…), also any
# API version first (/v1beta/, /v2/) or the bare template (a proxy serving the API at its
# root).
_API_SHAPED = re.compile(r"/v1/|/openai/|^/model/|/bedrock/model/")
_LLM_SHAPED = re.compile(r"^/v\d+[a-z0-9]*/")
_GENERIC_TEMPLATES = frozenset(
    {
        "/batches",
        "/videos",
        "/videos/{id}/remix",
        "/videos/edits",
        "/videos/extensions",
        "/containers",
        "/converse",
        "/converse-stream",
    }
)
# Paths too common elsewhere to be taken for a model call on any host but their provider's.
_ONLY_ON = {
    "/sessions/{id}/events": "anthropic",
    "/deployments/{id}/run": "anthropic",
    "/dreams": "anthropic",
}


_AZURE_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/")
_VERTEX_MODEL = re.compile(r"/publishers/anthropic/models/([^/:]+):(?:stream)?[rR]awPredict$")
_VERTEX_LOCATION = re.compile(r"/locations/([^/]+)/publishers/")
# Paid model calls in formats burnmap does not meter: Vertex partner models, Gemini.
_OTHER_MODELS = re.compile(
    r"(/publishers/[^/]+/models/[^/:]+:(?:stream)?[rR]awPredict"
    r"|/models/[^/:]+:(?:stream)?[gG]enerateContent)$"
)
# The model id may be an ARN with slashes (an inference profile): the path is decoded.
_BEDROCK_MODEL = re.compile(r"/model/(.+)/invoke(-with-response-stream)?$")


def identify(method: str, host: str, path: str) -> Endpoint | None:
    """The endpoint a request calls, or ``None`` when it is free or not a model call.

    >>> identify("POST", "api.anthropic.com", "/v1/messages").kind
    'messages'
    >>> identify("POST", "api.anthropic.com", "/v1/messages/count_tokens") is None
    True
    >>> identify("POST", "x.openai.azure.com", "/openai/deployments/gpt4o/chat/completions")
    Endpoint(shape='openai', kind='chat', provider='azure', model_in_url='gpt4o')
    >>> identify("POST", "api.openai.com", "/v1/images/generations").kind
    'unmetered'
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
    if path.endswith(("/responses", "/responses/compact")):
        # (Compaction runs the model over the input and reports its usage like a response.)
        return Endpoint("openai", "responses", provider, _deployment(path))
    if path.endswith("/embeddings"):
        return Endpoint("openai", "embeddings", provider, _deployment(path))
    if path.endswith("/completions"):
        return Endpoint("openai", "completions", provider, _deployment(path))
    match = _VERTEX_MODEL.search(path)
    if match:
        if match.group(1) == "count-tokens":  # Vertex's token counting: free
            return None
        location = _VERTEX_LOCATION.search(path)
        regional = location is None or location.group(1) != "global"
        model = match.group(1).split("@")[0]
        return Endpoint("anthropic", "messages", "anthropic", model, regional=regional)
    api_shaped = provider is not None or _API_SHAPED.search(path) is not None
    llm_shaped = api_shaped or _LLM_SHAPED.search(path) is not None
    match = _BEDROCK_MODEL.search(path)
    if match:
        model_id = match.group(1)
        name = model_id.rsplit("/", 1)[-1]
        # An application inference profile's id names no model: it is priced (or refused)
        # as whatever price is registered for it; any other model's format is not metered.
        if "anthropic" in name or "application-inference-profile/" in model_id:
            streams = match.group(2) is not None
            # In-region ids and geographic profiles (us., eu., …) keep it in a region;
            # global. profiles route worldwide.
            regional = not name.startswith("global.")
            return Endpoint(
                "anthropic", "messages", "aws", name, streams=streams, regional=regional
            )
        if api_shaped:
            template = f"/model/{model_id}/invoke{match.group(2) or ''}"
            what = "a Bedrock model burnmap does not meter"
            return Endpoint("openai", "unmetered", "aws", path=path, template=template, what=what)
    match = _OTHER_MODELS.search(path) if llm_shaped else None
    if match:
        what = "a model burnmap does not meter"
        return Endpoint(
            "openai", "unmetered", provider, path=path, template=match.group(1), what=what
        )
    for pattern, template, what in _UNMETERED:
        found = pattern.search(path)
        if not found or _ONLY_ON.get(template, provider) != provider:
            continue
        if api_shaped or (
            template not in _GENERIC_TEMPLATES and (llm_shaped or found.start() == 0)
        ):
            anthropic = provider == "anthropic" or path.endswith("/messages/batches")
            shape = "anthropic" if anthropic else "openai"
            return Endpoint(shape, "unmetered", provider, path=path, template=template, what=what)
    return None


def _deployment(path: str) -> str | None:
    match = _AZURE_DEPLOYMENT.search(path)
    return match.group(1) if match else None
