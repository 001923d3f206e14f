"""The worst-case cost of a call, computed from its request body before it is sent.

**Input.** Byte-level BPE tokenizers (OpenAI's) never produce more tokens than the UTF-8
bytes they encode, and the JSON body is at least as long as the text in it (escapes only
add bytes). So the body's length, less any base64 media payloads, bounds the text tokens.
Claude's tokenizer is not public: a safety factor of 1.1 covers it. Media are priced at
documented caps instead of their byte length (an image is resized by the provider to at
most about 1.15-2.5 megapixels; 6,400 tokens covers every current model's maximum). The
input bound never exceeds the model's context window, since a longer request is rejected
(free). Server-side tools (web search/fetch, code execution, file search), documents
referenced by URL or file id, and Responses' ``previous_response_id`` / ``conversation``
bring in content the request does not contain: the input bound is then the whole context
window. An image referenced by URL counts at its cap, like an inline one.

**Output.** ``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens`` when given
(times ``n`` / ``best_of`` choices), else the model's documented maximum output, else its
context window, else 131,072 tokens (a registered model with neither).

**Price.** The bound is priced at the highest applicable rates: cache-write rates where a
write can happen (Anthropic: the request has ``cache_control``; OpenAI-shaped APIs cache on
their own, so their write rate counts when a model has one), the long-context tier when the
input bound crosses it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import zlib
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import lru_cache
from typing import Any

from burnmap._core.endpoint import Endpoint
from burnmap._core.loops import request_fingerprint
from burnmap._core.pricing import (
    DEFAULT_CONTEXT_WINDOW,
    WEB_SEARCH_PREVIEW_FEE,
    WEB_SEARCH_PREVIEW_MODELS,
    PriceBook,
    PriceSheet,
    by_prefix,
    chat_search_fee,
    is_chat_search_model,
    same_price_base,
)
from burnmap.errors import RefusalError, UnknownModelError, UnmeteredEndpointError

__all__ = [
    "CallPlan",
    "DEFAULT_CONTEXT_WINDOW",
    "IMAGE_TOKENS",
    "PDF_PAGE_TOKENS",
    "RequestNotUnderstoodError",
    "bound_input_tokens",
    "plan_call",
]

ANTHROPIC_TOKENIZER_FACTOR_TENTHS = 11  # x1.1
_MILLION = Decimal(1_000_000)
_ZERO = Decimal(0)
IMAGE_TOKENS = 6_400
PDF_PAGE_TOKENS = 8_000
AUDIO_BYTES_PER_TOKEN = 64
TOOLS_OVERHEAD_TOKENS = 1_000
BASE_OVERHEAD_TOKENS = 64
SERVER_TOOL_SEARCHES = 20
_SERVER_TOOL_PREFIXES = (
    "openrouter:",
    "advisor",
    "web_search",
    "web_fetch",
    "code_execution",
    "code_interpreter",
    "file_search",
    "computer_use_preview",
    "image_generation",
    "mcp",
)
_SEARCH_TOOL_PREFIXES = ("web_search",)


class RequestNotUnderstoodError(RefusalError):
    """The request body could not be read, so its cost could not be bounded."""


@dataclass(slots=True)  # not frozen: built per call, and frozen init costs 3x
class CallPlan:
    """What the transport needs to reserve, forward and meter one call."""

    endpoint: Endpoint
    model: str
    sheet: PriceSheet
    stream: bool
    input_tokens: int
    output_tokens: int
    cost: Decimal
    """Worst-case cost in USD: the amount reserved."""
    body: bytes | None = None
    """A rewritten request body, when burnmap had to change it."""
    inject_usage: bool = False
    """``stream_options.include_usage`` was added for the caller; strip it from the stream."""
    fingerprint: str | None = None
    """The request tail's digest, for the repeat trigger."""
    search_fee: Decimal | None = None
    """What a Chat Completions search model bills per call for its web search."""
    searches: int = 0
    """How many of those fees the call is bounded and charged: one per choice (``n``)."""
    modifiers: tuple[str, ...] = ()
    """Request options that change the rates (see ``PriceBook.modified``)."""
    advisor: str | None = None
    """The model of the request's advisor tool, if any."""
    hosted: HostedFees | None = None
    """What the request's hosted tools (Responses API) may bill outside its usage."""
    tier_unasked: bool = False
    """An OpenAI-shaped request that names no service tier (or ``auto``): its project's
    default tier serves it."""
    tier: str | None = None
    """The service tier whose rates the sheet holds (``"priority"``), ``None``: standard."""
    geo_pinned: bool = False
    """An Anthropic request pinned to a region (``inference_geo``): every model it runs
    is billed 1.1x."""


@dataclass(frozen=True, slots=True)
class HostedFees:
    """The fees a Responses request's hosted tools bill per use, outside its usage."""

    image: Decimal | None = None
    """Per image from the ``image_generation`` tool."""
    file_search: Decimal | None = None
    """Per ``file_search`` call."""
    container: Decimal | None = None
    """The containers the request asks for (code interpreter, hosted shell), together."""
    containers: int = 0
    bound: Decimal = Decimal(0)
    """The most they bill together (reserved with the call)."""


# The service tiers an OpenAI-shaped request may ask for, or a response report, whose rates
# are known, and the rates each bills (``None``: standard). OpenAI's: auto (the project's
# default), default and scale at standard rates, flex cheaper (bounded at standard),
# priority dearer, and fast, which OpenAI serves as priority; Groq's on_demand (its
# standard tier). Any other (OpenAI's "ultrafast", Groq's provisioned "performance") bills
# rates genai-prices does not list: refused unless a price is registered.
TIER_RATES: dict[str, str | None] = {
    "auto": None,
    "default": None,
    "scale": None,
    "on_demand": None,
    "flex": "flex",
    "priority": "priority",
    "fast": "priority",
}
_DATA_KEYS = frozenset({"data", "file_data"})
_IMAGE_BLOCKS = frozenset({"image", "image_url", "input_image"})
_FILE_BLOCKS = frozenset({"document", "file", "input_file"})


# Literal patterns: the regex engine finds a literal ~1.7x faster than `in` or bytes.find.
_BASE64 = re.compile(rb"base64")
_FILE = re.compile(rb"file_")
_URL = re.compile(rb'url"')
_CACHE_CONTROL = re.compile(rb'"cache_control"')
_AUDIO = re.compile(rb'"input_audio"')

# Models whose images cost more tokens than IMAGE_TOKENS, by prefix of the model id:
# gpt-4o-mini bills 2,833 tokens an image plus 5,667 a 512 px tile (so that an image costs
# what it does on gpt-4o), and a high-detail image has at most 2 x 4 tiles.
IMAGE_TOKENS_BY_MODEL = {"gpt-4o-mini": 2_833 + 8 * 5_667}


@lru_cache(maxsize=512)
def image_tokens_for(model: str) -> int:
    """The most one image can cost ``model``, in input tokens.

    >>> image_tokens_for("gpt-4o-mini-2024-07-18"), image_tokens_for("claude-sonnet-4-6")
    (48169, 6400)
    """
    name = model.rsplit("/", 1)[-1].lower()
    if name.startswith("ft:"):  # a fine-tune: "ft:gpt-4o-mini-2024-07-18:org::id"
        name = name[3:]
    return by_prefix(IMAGE_TOKENS_BY_MODEL, name) or IMAGE_TOKENS


def _may_hold_media(body: bytes, *, audio: bool = True) -> bool:
    """Whether a body may carry or reference media (inline base64, a URL, a file id, an
    OpenAI audio clip when ``audio``): a superset of ``;base64,``, ``"base64"``,
    ``"file_data"``, ``file_id``, ``file_url``, ``"url"``, ``"image_url"`` and
    ``"input_audio"``. Literal searches are 5x faster than one regex with the
    alternatives."""
    return bool(
        _BASE64.search(body)
        or _FILE.search(body)
        or _URL.search(body)
        or (audio and _AUDIO.search(body))
    )


def _walk_content(obj: Any, image_tokens: int = IMAGE_TOKENS) -> tuple[int, int, bool]:
    """Media in a request: (base64 bytes to discount, tokens to add, unbounded?).

    Inline base64 media, however short, are discounted and counted at their caps (an
    image costs its provider's tokens whatever its size). Media referenced by URL
    or file id are not in the body at all: an image still counts at its cap; a document
    or file of unknown length, or a PDF whose pages cannot be counted, makes the input
    unbounded (the context window applies).
    """
    discount = 0
    tokens = 0
    unbounded = False
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
            continue
        if not isinstance(item, dict):
            continue
        inline = False
        for key, value in item.items():
            if isinstance(value, str) and (
                len(value) > 256 or key in _DATA_KEYS or value.startswith("data:")
            ):
                kind = _media_kind(key, value, item)
                if kind is not None:
                    discount += len(value)
                    counted = _media_tokens(kind, value, image_tokens)
                    if counted is None:
                        unbounded = True
                    else:
                        tokens += counted
                    inline = True
                    continue
            if isinstance(value, dict | list):
                stack.append(value)
        block = item.get("type")
        if inline or not isinstance(block, str):
            continue
        if block in _IMAGE_BLOCKS and _is_reference(item):
            tokens += image_tokens
        elif block in _FILE_BLOCKS and _is_reference(item):
            unbounded = True
    return discount, tokens, unbounded


def _is_reference(block: dict[str, Any]) -> bool:
    """A content block that points at media instead of carrying it (no base64 inside)."""
    for key in ("file_id", "file_url"):
        if block.get(key):
            return True
    for key in ("source", "image_url", "file"):
        value = block.get(key)
        if isinstance(value, str):
            return not value.startswith("data:")
        if isinstance(value, dict):
            if value.get("type") in ("url", "file") or value.get("file_id"):
                return True
            url = value.get("url")
            if isinstance(url, str) and not url.startswith("data:"):
                return True
    return False


def _media_kind(key: str, value: str, parent: dict[str, Any]) -> str | None:
    if value.startswith("data:"):
        mime = value[5 : value.find(";")] if ";" in value[:100] else ""
        return _kind_of_mime(mime)
    if key in ("data", "file_data"):
        mime = str(
            parent.get("media_type") or parent.get("mime_type") or parent.get("format") or ""
        )
        if parent.get("type") == "base64" or key == "file_data" or mime:
            return _kind_of_mime(mime)
    return None


def _kind_of_mime(mime: str) -> str:
    mime = mime.lower()
    if mime.startswith("image/"):
        return "image"
    if mime in {"application/pdf", "pdf"}:
        return "pdf"
    if mime.startswith("audio/") or mime in ("wav", "mp3", "flac", "ogg", "pcm16", "webm"):
        return "audio"
    return "file"


def _b64(value: str) -> bytes:
    payload = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        return payload.encode()


def _media_tokens(kind: str, value: str, image_tokens: int = IMAGE_TOKENS) -> int | None:
    """The most an inline medium can cost in tokens; ``None`` when nothing bounds it."""
    if kind == "image":
        return image_tokens
    raw = _b64(value)
    if kind == "pdf":
        pages = pdf_pages(raw)
        # A PDF of uncounted pages (no page objects found) is bounded by the window alone:
        # its byte count says nothing of the text its compressed pages hold.
        return pages * PDF_PAGE_TOKENS if pages else None
    if kind == "audio":
        return math.ceil(len(raw) / AUDIO_BYTES_PER_TOKEN) + 1
    return len(raw)


_STREAM = re.compile(rb"(?<!end)stream\r?\n")
_PDF_INFLATE_LIMIT = 64 << 20


_PAGES_TYPE = re.compile(rb"/Type\s*/Pages\b")
_PAGES_COUNT = re.compile(rb"/Count\s+(\d{1,9})")
_PDF_MARKS = 10_000  # page trees or streams looked at, at most, before giving up


def _page_objects(data: bytes) -> int:
    """Page objects in ``data``, or its largest page-tree ``/Count`` if that is more (the
    root's counts every page); -1 when there are too many trees to look at."""
    pages = data.count(b"/Type /Page") + data.count(b"/Type/Page")
    pages -= data.count(b"/Type /Pages") + data.count(b"/Type/Pages")
    for seen, tree in enumerate(_PAGES_TYPE.finditer(data)):
        if seen >= _PDF_MARKS:
            return -1
        # The /Count of the dictionary around it (looked for within 512 bytes each side).
        start = data.rfind(b"<<", max(tree.start() - 512, 0), tree.start())
        end = data.find(b">>", tree.end(), tree.end() + 512)
        if start >= 0 and end >= 0:
            count = _PAGES_COUNT.search(data, start, end)
            if count:
                pages = max(pages, int(count.group(1)))
    return pages


_PDF_CACHE: dict[bytes, int] = {}  # digest -> pages: an agent re-sends its documents


def pdf_pages(raw: bytes) -> int:
    """How many pages a PDF holds: its page objects or page-tree counts, also those inside
    compressed object streams (``/Type /ObjStm``, inflated up to 64 MiB in all). 0 when
    none is found, or when the document is too large or too odd to read (too much to
    inflate, too many streams): the caller then bounds it by the context window. Pages an
    incremental update rewrote count twice: that only over-bounds.

    >>> pdf_pages(b"1 0 obj <</Type /Pages /Count 2>> 2 0 obj <</Type /Page>>")
    2
    """
    digest = hashlib.blake2b(raw, digest_size=16).digest()
    pages = _PDF_CACHE.get(digest)
    if pages is None:
        pages = _count_pdf_pages(raw)
        if len(_PDF_CACHE) >= 64:
            _PDF_CACHE.clear()
        _PDF_CACHE[digest] = pages
    return pages


def _count_pdf_pages(raw: bytes) -> int:
    pages = _page_objects(raw)
    budget = _PDF_INFLATE_LIMIT
    for seen, match in enumerate(_STREAM.finditer(raw)):
        if seen >= _PDF_MARKS or pages < 0:
            return 0
        start = match.end()
        opened = raw.rfind(b"obj", max(match.start() - 1024, 0), match.start())
        header = raw[max(opened, 0) : match.start()]
        if b"/ObjStm" not in header:
            continue  # images, fonts, page contents: no page objects inside
        end = raw.find(b"endstream", start)
        if end < 0:
            break
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(raw[start:end], budget)
        except zlib.error:
            continue
        budget -= len(data)
        if budget <= 0 or inflater.unconsumed_tail:
            return 0  # more than we will inflate: count on the window instead
        found = _page_objects(data)
        if found < 0:
            return 0
        pages += found
    return max(pages, 0)


def _by_reference(obj: dict[str, Any], body: bytes) -> bool:
    """Whether a request brings in content it does not contain, of unknown length."""
    # Responses: an earlier response, a conversation, a stored prompt (an object; a legacy
    # completion's "prompt" is the text itself), stored items spliced into the input.
    # Anthropic: a server-held thread, MCP servers whose tool results are read. Azure:
    # "On Your Data" retrieval.
    if (
        obj.get("previous_response_id")
        or obj.get("conversation")
        or isinstance(obj.get("prompt"), dict)
        or obj.get("mcp_servers")
        or obj.get("data_sources")
    ):
        return True
    thread = obj.get("thread")
    if isinstance(thread, dict) and thread.get("type") != "create":
        return True
    if b'"item_reference"' not in body:  # (input lists are long: walked only if needed)
        return False
    items = obj.get("input")
    return isinstance(items, list) and any(
        isinstance(item, dict) and item.get("type") == "item_reference" for item in items
    )


def _stored_reasoning(obj: dict[str, Any], body: bytes) -> int:
    """Responses reasoning items passed back by id only (no ``encrypted_content``): the
    provider reads each back from storage."""
    items = obj.get("input")
    if not isinstance(items, list) or b'"reasoning"' not in body:
        return 0
    return sum(
        1
        for item in items
        if isinstance(item, dict)
        and item.get("type") == "reasoning"
        and not item.get("encrypted_content")
    )


def bound_input_tokens(
    body: bytes,
    obj: dict[str, Any],
    *,
    shape: str,
    image_tokens: int = IMAGE_TOKENS,
    reasoning_item_tokens: int = DEFAULT_CONTEXT_WINDOW,
) -> int | None:
    """An upper bound on the input tokens of a request body; ``None`` when the request
    pulls in content of unknown length by reference (a file id, a previous response).
    ``image_tokens``: the most one image costs the model; ``reasoning_item_tokens``: the
    most a stored reasoning item passed back by id can hold (its call's output at most).

    >>> bound_input_tokens(b'{"model":"m","messages":[{"role":"user","content":"hi"}]}',
    ...                    {"model": "m", "messages": []}, shape="openai")
    121
    """
    if _by_reference(obj, body):
        return None
    size = len(body)
    discount = 0
    media_tokens = 0
    if _may_hold_media(body, audio=shape == "openai"):
        discount, media_tokens, unbounded = _walk_content(obj, image_tokens)
        if unbounded:
            return None
    text = max(size - discount, 0)
    if shape == "anthropic":
        text = -(-text * ANTHROPIC_TOKENIZER_FACTOR_TENTHS // 10)
    tools = obj.get("tools")
    overhead = BASE_OVERHEAD_TOKENS + (TOOLS_OVERHEAD_TOKENS if tools else 0)
    stored = _stored_reasoning(obj, body) * reasoning_item_tokens if shape == "openai" else 0
    return text + media_tokens + overhead + stored


def _server_tools(tools: object) -> tuple[bool, int]:
    """(uses server-side tools, max web searches) from the request's tool list."""
    if not isinstance(tools, list):
        return False, 0
    server = False
    searches = 0
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        kind = str(tool.get("type") or "")
        if kind.startswith(_SERVER_TOOL_PREFIXES) or (kind == "shell" and _hosted_shell(tool)):
            server = True
            if kind.startswith(_SEARCH_TOOL_PREFIXES):
                max_uses = tool.get("max_uses")
                searches += (
                    max_uses
                    if isinstance(max_uses, int) and max_uses >= 0
                    else (SERVER_TOOL_SEARCHES)
                )
    return server, searches


def _preview_search(tools: object, model: str) -> bool:
    """Whether a Responses request offers ``web_search_preview`` to a model that bills it
    at ``WEB_SEARCH_PREVIEW_FEE`` a call (the non-reasoning ones)."""
    return (
        isinstance(tools, list)
        and model.rsplit("/", 1)[-1].lower().startswith(WEB_SEARCH_PREVIEW_MODELS)
        and any(
            isinstance(tool, dict) and str(tool.get("type") or "").startswith("web_search_preview")
            for tool in tools
        )
    )


def _hosted_shell(tool: dict[str, Any]) -> bool:
    """Whether a Responses ``shell`` tool runs in OpenAI's container (not the caller's)."""
    environment = tool.get("environment")
    return isinstance(environment, dict) and str(environment.get("type")).startswith("container")


def _positive_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _output_bound(endpoint: Endpoint, obj: dict[str, Any], sheet: PriceSheet) -> int:
    if endpoint.kind == "embeddings":
        return 0
    if endpoint.kind == "messages":
        if obj.get("max_tokens") == 0 and type(obj.get("max_tokens")) is int:
            return 0  # fills the prompt cache without generating anything
        asked = _positive_int(obj.get("max_tokens"))
    elif endpoint.kind == "responses":
        asked = _positive_int(obj.get("max_output_tokens"))
    else:
        asked = _positive_int(obj.get("max_completion_tokens")) or _positive_int(
            obj.get("max_tokens")
        )
    limit = asked or sheet.max_output or sheet.context_window or DEFAULT_CONTEXT_WINDOW
    choices = 1
    if endpoint.shape == "openai":
        choices = max(_positive_int(obj.get("n")) or 1, _positive_int(obj.get("best_of")) or 1)
    if endpoint.kind == "completions":
        # A legacy completion generates for each prompt of a batch (a list of strings or
        # of token lists; a flat list of token ids is one prompt).
        prompt = obj.get("prompt")
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            choices *= len(prompt)
    return limit * choices


def plan_call(
    endpoint: Endpoint,
    body: bytes,
    book: PriceBook,
    *,
    anthropic_beta: str = "",
    fingerprint: bool = True,
    priority_models: frozenset[str] | None = None,
) -> CallPlan | None:
    """Read a request body and bound its cost; raises a refusal when it cannot. ``None``
    when the request turns out not to be a model call (another service's ``/messages``
    on a host that is not a known provider). ``fingerprint``: digest the request tail for
    the repeat trigger (skipped when no repeat limit or observer will read it).
    ``priority_models``: the models the request's OpenAI project was seen to serve at
    priority rates when a request named no tier (its default tier)."""
    if endpoint.kind == "unmetered":
        return _declared_plan(endpoint, body, book)
    try:
        obj = json.loads(body) if body else None
    except ValueError as exc:
        if _elsewhere(endpoint):
            return None
        raise RequestNotUnderstoodError(
            f"burnmap: the request body to this {endpoint.kind} endpoint is not valid JSON "
            f"({exc}), so its cost cannot be bounded; it was not sent. Check what the client "
            "sends (burnmap reads the same bytes the provider would)."
        ) from exc
    if not isinstance(obj, dict):
        if _elsewhere(endpoint):
            return None
        raise RequestNotUnderstoodError(
            f"burnmap: the request body to this {endpoint.kind} endpoint is not a JSON object, "
            "so its cost cannot be bounded; it was not sent."
        )
    if _elsewhere(endpoint) and _LLM_KEYS.isdisjoint(obj):
        return None  # e.g. a chat service's POST /channels/{id}/messages
    body_model = obj.get("model")
    try:
        if endpoint.model_in_url is None and type(body_model) is str and body_model:
            model, sheet = body_model, book.lookup(body_model, endpoint.provider)
        else:
            model, sheet = _sheet(book, _candidates(body_model, endpoint), endpoint)
    except UnknownModelError as exc:
        if endpoint.kind == "chat" and is_chat_search_model(exc.model):
            # Its price per search is needed too: say so in the one refusal.
            raise UnknownModelError(exc.model, exc.provider, search_fee=True) from None
        raise
    anthropic = endpoint.shape == "anthropic"
    modifiers: tuple[str, ...] = ()
    tier_unasked = False
    priced_tier = None
    geo_pinned = False
    if anthropic:
        # Bedrock's InvokeModel carries the betas in the body too.
        betas = obj.get("anthropic_beta")
        if (anthropic_beta and "context-1m" in anthropic_beta) or (
            isinstance(betas, list) and any("context-1m" in str(beta) for beta in betas)
        ):
            sheet = book.with_limits(sheet, context_window=1_000_000)
        geo_pinned = _pinned(obj)
        modifiers = rate_modifiers(endpoint, sheet, model, obj.get("speed"), geo_pinned)
        if modifiers:
            sheet = book.modified(sheet, model, endpoint.provider, modifiers)
    else:
        tier = obj.get("service_tier")
        tier_unasked = tier is None or tier == "auto"
        known = isinstance(tier, str) and tier in TIER_RATES
        if tier is not None and not known and sheet.source != "override":
            raise UnknownModelError(model, endpoint.provider, tier=str(tier))
        if sheet.source != "override" and (
            (known and TIER_RATES[str(tier)] == "priority")
            or (tier_unasked and priority_models is not None and model in priority_models)
        ):
            # Priority processing costs more ("fast" is served as priority): bound at
            # its rates (flex costs less).
            sheet = book.lookup(model, endpoint.provider, context={"service_tier": "priority"})
            priced_tier = "priority"

    responses = endpoint.kind == "responses"
    tools = _responses_tools(obj, body) if responses else obj.get("tools")
    server_tools, searches = _server_tools(tools) if tools else (False, 0)
    if searches and responses and obj.get("max_tool_calls") is not None:
        # Responses' web search has no max_uses: max_tool_calls caps every hosted call.
        searches = _tool_calls_allowed(obj["max_tool_calls"])
    if searches and responses and _preview_search(tools, model):
        # The older web_search_preview tool costs more a call on non-reasoning models
        # (a registered price too, unless it states its own fee per search).
        if sheet.source != "override":
            modifiers = (*modifiers, "search_preview")
            sheet = book.modified(sheet, model, endpoint.provider, ("search_preview",))
        elif not sheet.search_fee_stated:
            sheet = replace(sheet, web_search=WEB_SEARCH_PREVIEW_FEE)
    plugins = obj.get("plugins")
    routes = obj.get("models") if not anthropic else None
    if _online(model, routes) and not _has_web_plugin(plugins):
        # OpenRouter's ":online" suffix is its web plugin, with the plugin's defaults
        # (on its Anthropic-shaped /messages as on its OpenAI-shaped endpoints).
        plugins = [*(plugins if isinstance(plugins, list) else ()), {"id": "web"}]
    if plugins:
        server_tools = True  # OpenRouter's plugins (web search…) add to the prompt
    window = sheet.context_window
    # (By the price's model too: an Azure deployment's own name, a registered alias.)
    image_tokens = image_tokens_for(model)
    if sheet.model != model:
        image_tokens = max(image_tokens, image_tokens_for(sheet.model))
    bounded = bound_input_tokens(
        body,
        obj,
        shape=endpoint.shape,
        image_tokens=image_tokens,
        reasoning_item_tokens=sheet.max_output or window or DEFAULT_CONTEXT_WINDOW,
    )
    if server_tools and endpoint.kind != "embeddings":
        bounded = None  # the provider reads content of unknown length
    if bounded is None:
        # Content of unknown length: only the context window bounds it.
        input_tokens = window or DEFAULT_CONTEXT_WINDOW
    elif (
        window
        and sheet.window_caps
        and endpoint.kind in ("messages", "chat", "responses")
        and (image_tokens == IMAGE_TOKENS or not _may_hold_media(body))
    ):
        # (A model whose images cost extra tokens may be billed past its window.)
        input_tokens = min(bounded, window)
    else:
        input_tokens = bounded
    output_tokens = _output_bound(endpoint, obj, sheet)

    # Anthropic writes the cache only where asked (cache_control); OpenAI-shaped APIs cache
    # on their own, and some newer models bill those writes.
    in_rate, out_rate = sheet.bound_rates(
        input_tokens, caching=_CACHE_CONTROL.search(body) is not None if anthropic else True
    )
    cost = (input_tokens * in_rate + output_tokens * out_rate) / _MILLION
    if searches:
        if sheet.web_search is None:
            # A web-search tool bills each search outside the tokens: never at $0.
            raise UnknownModelError(model, endpoint.provider, search_fee=True)
        cost += searches * sheet.web_search
    if sheet.per_request:
        cost += sheet.per_request
    advisor = None
    if anthropic and server_tools:
        advisor, advisors_cost = _advisors_bound(tools, book, endpoint, geo_pinned)
        cost += advisors_cost
    if anthropic and _compacts(obj):
        # A compaction summarises a closed context (past its trigger, up to the window)
        # in a step of its own, billed beside the answer.
        whole = _input_on(sheet, None)
        cost += _worst_call(sheet, whole, sheet.max_output or whole)
    fallbacks = obj.get("fallbacks") if anthropic else None
    if fallbacks:
        cost += _fallbacks_bound(fallbacks, bounded, obj, book, endpoint, pinned=geo_pinned)
    if isinstance(routes, list):
        # OpenRouter's fallback list: any of them may serve (and bill) the call, each up
        # to its own window and maximum output.
        for name in routes:
            if isinstance(name, str) and name and name != model:
                other = book.lookup(name, endpoint.provider)
                images = max(image_tokens_for(name), image_tokens_for(other.model))
                route_input = _input_on(other, bounded)
                if bounded is not None and images != image_tokens and _may_hold_media(body):
                    # Its images cost other tokens, which its window does not cap.
                    route_input = (
                        bound_input_tokens(body, obj, shape=endpoint.shape, image_tokens=images)
                        or route_input
                    )
                worst = _worst_call(other, route_input, _output_bound(endpoint, obj, other))
                cost = max(cost, worst)
    if plugins and isinstance(plugins, list):
        cost += _plugins_bound(plugins)
    search_fee = None
    chat_searches = 0
    if endpoint.kind == "chat" and is_chat_search_model(model):
        search_fee = _search_fee(sheet, model, obj, endpoint)
        # OpenAI does not say whether n choices search once or each: one fee per choice
        # is reserved and charged (the dearer reading).
        chat_searches = _positive_int(obj.get("n")) or 1
        cost += search_fee * chat_searches
    hosted = None
    if server_tools and responses:
        hosted = _hosted_fees(tools, obj.get("max_tool_calls"), book, endpoint)
        if hosted is not None:
            cost += hosted.bound

    stream = obj.get("stream") is True or endpoint.streams
    new_body: bytes | None = None
    inject = False
    if stream and endpoint.kind in ("chat", "completions"):
        options = obj.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            options = dict(options) if isinstance(options, dict) else {}
            options["include_usage"] = True
            obj["stream_options"] = options
            new_body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
            inject = True
    return CallPlan(
        endpoint=endpoint,
        model=model,
        sheet=sheet,
        stream=stream,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost=cost,
        body=new_body,
        inject_usage=inject,
        fingerprint=request_fingerprint(obj, body)
        if fingerprint and endpoint.kind != "embeddings"
        else None,
        search_fee=search_fee,
        searches=chat_searches,
        modifiers=modifiers,
        advisor=advisor,
        hosted=hosted,
        tier_unasked=tier_unasked,
        tier=priced_tier,
        geo_pinned=geo_pinned,
    )


def _tool_calls_allowed(max_tool_calls: object) -> int:
    """How many hosted-tool calls a Responses request allows: its ``max_tool_calls``, else
    burnmap's allowance (``SERVER_TOOL_SEARCHES``): nothing else caps them."""
    if isinstance(max_tool_calls, int) and not isinstance(max_tool_calls, bool):
        return max(max_tool_calls, 0)
    return SERVER_TOOL_SEARCHES


def _hosted_fees(
    tools: object, max_tool_calls: object, book: PriceBook, endpoint: Endpoint
) -> HostedFees | None:
    """The fees a Responses request's hosted tools may bill outside its usage: each image
    (a declared fee, else a refusal) and each file search, up to the calls it allows, and
    each container the request asks for: a code interpreter's ``container`` of type
    ``auto`` (or none given), a hosted shell's ``environment`` of type
    ``container_auto``; billed whether or not the model runs code, as it is created
    first. ``None`` when none of its tools bills so."""
    if not isinstance(tools, list):
        return None
    image = file_search = container = None
    containers = 0
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        kind = tool.get("type")
        if kind == "image_generation":
            named = tool.get("model")
            model = named if isinstance(named, str) else ""
            fee = book.tool_fee("image_generation", model or None)
            if fee is None:
                raise UnknownModelError(model, endpoint.provider, tool="image_generation")
            image = fee if image is None else max(image, fee)
        elif kind == "file_search":
            file_search = book.tool_fee("file_search")
        elif kind in ("code_interpreter", "shell"):
            spec = tool.get("container") if kind == "code_interpreter" else tool.get("environment")
            if (spec is None and kind == "code_interpreter") or (
                isinstance(spec, dict) and spec.get("type") in ("auto", "container_auto")
            ):
                memory = spec.get("memory_limit") if isinstance(spec, dict) else None
                size = memory if isinstance(memory, str) else "1g"
                fee = book.tool_fee("code_interpreter", size) or _ZERO
                container = fee if container is None else container + fee
                containers += 1
    if image is None and file_search is None and container is None:
        return None
    calls = _tool_calls_allowed(max_tool_calls)
    per_call = (image or _ZERO) + (file_search or _ZERO)
    bound = calls * per_call + (container or _ZERO)
    return HostedFees(image, file_search, container, containers, bound)


_INPUT_TOOLS = re.compile(rb'"(?:additional_tools|tool_search_output)"')
_TOOL_ITEMS = ("additional_tools", "tool_search_output")


def _responses_tools(obj: dict[str, Any], body: bytes) -> object:
    """A Responses request's tools: its ``tools``, and those its input items make
    available (``additional_tools``, a ``tool_search_output``'s loaded tools)."""
    tools = obj.get("tools")
    items = obj.get("input")
    if not isinstance(items, list) or _INPUT_TOOLS.search(body) is None:
        return tools
    gathered = list(tools) if isinstance(tools, list) else []
    for item in items:
        if isinstance(item, dict) and item.get("type") in _TOOL_ITEMS:
            more = item.get("tools")
            if isinstance(more, list):
                gathered.extend(more)
    return gathered or tools


def _worst_call(sheet: PriceSheet, input_tokens: int, output_tokens: int) -> Decimal:
    in_rate, out_rate = sheet.bound_rates(input_tokens, caching=True)
    return (input_tokens * in_rate + output_tokens * out_rate) / _MILLION


def _compacts(obj: dict[str, Any]) -> bool:
    """Whether an Anthropic request asks for server-side compaction."""
    management = obj.get("context_management")
    edits = management.get("edits") if isinstance(management, dict) else None
    return isinstance(edits, list) and any(
        isinstance(edit, dict) and str(edit.get("type") or "").startswith("compact")
        for edit in edits
    )


def _advisors_bound(
    tools: object, book: PriceBook, endpoint: Endpoint, pinned: bool
) -> tuple[str | None, Decimal]:
    """Anthropic's advisor tool runs another model over the conversation on each use: its
    ``max_uses`` (else ``SERVER_TOOL_SEARCHES``) calls of that model, each reading up to
    its window and writing up to the tool's ``max_tokens`` (else the model's maximum).
    Returns the (first) advisor's model and the total."""
    advisor = None
    total = Decimal(0)
    for tool in tools if isinstance(tools, list) else ():
        if not (isinstance(tool, dict) and str(tool.get("type") or "").startswith("advisor")):
            continue
        model = tool.get("model")
        if not isinstance(model, str) or not model:
            continue
        advisor = advisor or model
        sheet = book.lookup(model, endpoint.provider)
        geo = ("geo",) if geo_applies(endpoint, sheet, model, pinned) else ()
        sheet = book.modified(sheet, model, endpoint.provider, geo)
        window = _input_on(sheet, None)
        out = _positive_int(tool.get("max_tokens")) or sheet.max_output or window
        uses = tool.get("max_uses")
        uses = uses if isinstance(uses, int) and uses >= 0 else SERVER_TOOL_SEARCHES
        total += uses * _worst_call(sheet, window, out)
    return advisor, total


# OpenRouter's web plugin: USD per result, and the results it fetches unless told.
OPENROUTER_WEB_RESULT = Decimal("0.004")
OPENROUTER_WEB_RESULTS = 5


def _plugins_bound(plugins: list[Any]) -> Decimal:
    """OpenRouter's web plugin bills its results (in the stated cost, after the call)."""
    total = Decimal(0)
    for plugin in plugins:
        if isinstance(plugin, dict) and plugin.get("id") == "web":
            results = _positive_int(plugin.get("max_results")) or OPENROUTER_WEB_RESULTS
            total += results * OPENROUTER_WEB_RESULT
    return total


def _online(model: str, routes: object) -> bool:
    """Whether the model, or one of an OpenRouter request's fallback ``models``, has the
    ``:online`` suffix (the web plugin)."""
    names = [model, *(routes if isinstance(routes, list) else ())]
    return any(isinstance(name, str) and same_price_base(name) is not None for name in names)


def _has_web_plugin(plugins: object) -> bool:
    return isinstance(plugins, list) and any(
        isinstance(plugin, dict) and plugin.get("id") == "web" for plugin in plugins
    )


def _input_on(sheet: PriceSheet, bounded: int | None) -> int:
    """The input bound on another model: ``bounded`` (``None``: unknown) within its window.
    (A request too long for one model is what makes a gateway fall back to the next.)"""
    window = sheet.context_window or DEFAULT_CONTEXT_WINDOW
    if bounded is None:
        return window
    return min(bounded, window) if sheet.window_caps else bounded


def _fallbacks_bound(
    fallbacks: object,
    bounded: int | None,
    obj: dict[str, Any],
    book: PriceBook,
    endpoint: Endpoint,
    *,
    pinned: bool,
) -> Decimal:
    """Anthropic's server-side ``fallbacks``: each entry may run the request on another
    model (with its own ``max_tokens`` and ``speed``) after the one before declined, and
    each attempt may be billed: every entry's worst case (its model's window and maximum
    output) is added."""
    total = Decimal(0)
    for entry in fallbacks if isinstance(fallbacks, list) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            continue
        model = entry["model"]
        sheet = book.lookup(model, endpoint.provider)
        speed = entry.get("speed", obj.get("speed"))
        modifiers = rate_modifiers(endpoint, sheet, model, speed, pinned)
        sheet = book.modified(sheet, model, endpoint.provider, modifiers)
        out = _positive_int(entry.get("max_tokens")) or _output_bound(endpoint, obj, sheet)
        total += _worst_call(sheet, _input_on(sheet, bounded), out)
    return total


# Claude's major and minor version in a model id: claude-sonnet-4-5-20250929,
# anthropic.claude-haiku-4-5-…, claude-3-7-sonnet (the older order), claude-opus-4-2025…
_CLAUDE_VERSION = re.compile(r"claude-(?:[a-z]+-)?(\d{1,2})(?:[-.](\d{1,2}))?(?!\d)")


@lru_cache(maxsize=256)
def regional_premium(model: str) -> bool:
    """Whether a Claude model costs 10% more on a regional Bedrock or Vertex endpoint than
    on the global one: Claude 4.5 and later. A name whose version cannot be read is
    taken to (the bound then errs high, never low).

    >>> [regional_premium(m) for m in ("claude-sonnet-4-5@20250929", "claude-sonnet-4-20250514",
    ...     "claude-3-7-sonnet-20250219", "us.anthropic.claude-opus-5-v1:0", "my-profile")]
    [True, False, False, True, True]
    """
    found = _CLAUDE_VERSION.search(model.lower())
    if found is None:
        return True
    major, minor = int(found.group(1)), int(found.group(2) or 0)
    return (major, minor) >= (4, 5)


# genai-prices' Bedrock table names its entries by route: their prices are the route's.
_BEDROCK_TABLE = ("regional.", "global.")


def rate_modifiers(
    endpoint: Endpoint, sheet: PriceSheet, model: str, speed: object, pinned: bool
) -> tuple[str, ...]:
    """What changes an Anthropic-shaped request's rates for ``model`` (priced as
    ``sheet``): fast mode (``speed``), and ``"geo"`` where :func:`geo_applies` (``pinned``:
    the request names a region)."""
    fast = ("fast",) if speed == "fast" else ()
    return (*fast, "geo") if geo_applies(endpoint, sheet, model, pinned) else fast


def geo_applies(endpoint: Endpoint, sheet: PriceSheet, model: str, pinned: bool) -> bool:
    """Whether ``model`` (priced as ``sheet``) is billed 1.1x: inference pinned to a region
    (``inference_geo``), or a regional Bedrock or Vertex endpoint for a model that costs
    more there, unless its price already is the route's (genai-prices' Bedrock table
    prices ``regional.`` and ``global.`` ids itself)."""
    if sheet.model.startswith(_BEDROCK_TABLE):
        return False
    return pinned or (endpoint.regional and regional_premium(model))


def _pinned(obj: dict[str, Any]) -> bool:
    """Whether an Anthropic request pins its inference to a region."""
    geo = obj.get("inference_geo")
    return isinstance(geo, str) and geo not in ("", "global")


def _search_fee(sheet: PriceSheet, model: str, obj: dict[str, Any], endpoint: Endpoint) -> Decimal:
    """The per-call search fee of a Chat Completions search model: a registered
    ``web_search`` price, else OpenAI's published fee for the request's context size, else
    a refusal (never $0)."""
    if sheet.source == "override" and sheet.web_search is not None:
        return sheet.web_search
    options = obj.get("web_search_options")
    size = options.get("search_context_size") if isinstance(options, dict) else None
    fee = chat_search_fee(model, size) or chat_search_fee(sheet.model, size)
    if fee is None:
        fee = sheet.web_search
    if fee is None:
        raise UnknownModelError(model, endpoint.provider, search_fee=True)
    return fee


# A model call names its model, or at least carries what one reads.
_LLM_KEYS = frozenset({"model", "messages", "input", "prompt"})


def _elsewhere(endpoint: Endpoint) -> bool:
    """A request to a host that is not a known provider, with no model in its URL: it is
    taken for a model call by its path alone, and its body decides."""
    return endpoint.provider is None and endpoint.model_in_url is None


def _declared_plan(endpoint: Endpoint, body: bytes, book: PriceBook) -> CallPlan:
    """A paid endpoint burnmap cannot meter: its declared price per call, or a refusal.
    The body may be multipart (audio, image edits): the model is read only from JSON."""
    sheet = book.endpoint_price(endpoint.path)
    if sheet is None:
        raise UnmeteredEndpointError(endpoint.path, endpoint.what, endpoint.template)
    model = endpoint.template
    if body[:1] == b"{":
        try:
            named = json.loads(body).get("model")
        except (ValueError, AttributeError):
            named = None
        if isinstance(named, str) and named:
            model = named
    return CallPlan(
        endpoint=endpoint,
        model=model,
        sheet=sheet,
        stream=False,
        input_tokens=0,
        output_tokens=0,
        cost=sheet.per_request or Decimal(0),
    )


def _candidates(body_model: object, endpoint: Endpoint) -> list[str]:
    """The model names a request gives, body first (an Azure deployment may be named in
    the URL only)."""
    names = [name for name in (body_model, endpoint.model_in_url) if isinstance(name, str) and name]
    if not names:
        raise RequestNotUnderstoodError(
            f"burnmap: the request to this {endpoint.kind} endpoint names no model, so "
            "its cost cannot be bounded; it was not sent. Pass model=... in the call."
        )
    return names


def _sheet(book: PriceBook, names: list[str], endpoint: Endpoint) -> tuple[str, PriceSheet]:
    """The first name with a known price (an Azure deployment name may be the user's own)."""
    for name in names[:-1]:
        try:
            return name, book.lookup(name, endpoint.provider)
        except RefusalError:
            continue
    return names[-1], book.lookup(names[-1], endpoint.provider)
