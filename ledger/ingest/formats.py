"""Provider-native usage objects -> canonical token counts.

Canonical: input (excluding cached), output (including reasoning), cache_read, cache_write.
Objects are accepted exactly as the official SDKs serialise them (``model_dump()`` /
``to_dict()``): camelCase or snake_case keys, nulls, and fields we do not bill are ignored,
because the SDKs add fields every month.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MAX_COUNT = 10**10

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


class UsageFormatError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _snake(key: str) -> str:
    return _CAMEL.sub("_", key).lower() if any(c.isupper() for c in key) else key


def _get(obj: dict[str, Any], *names: str) -> Any:
    """The first present, non-null value among `names` (snake_case), camelCase accepted."""
    for key, value in obj.items():
        if value is not None and _snake(key) in names:
            return value
    return None


def count(value: Any, path: str) -> int:
    """A token count: a non-negative integer up to 10^10 (null or absent = 0)."""
    if type(value) is int and 0 <= value <= MAX_COUNT:  # the common case, first
        return value
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageFormatError(path, f"{path} must be a whole number of tokens, got {value!r}.")
    if value < 0:
        raise UsageFormatError(path, f"{path} must not be negative.")
    if value > MAX_COUNT:
        raise UsageFormatError(path, f"{path} is above the limit of 10^10.")
    return value


def _object(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageFormatError(path, f"{path} must be an object.")
    return value


Tokens = tuple[int, int, int, int]  # input, output, cache_read, cache_write


def _subtract(total: int, part: int, total_path: str, part_path: str) -> int:
    if part > total:
        raise UsageFormatError(part_path, f"{part_path} ({part}) exceeds {total_path} ({total}).")
    return total - part


CANONICAL_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


_CANONICAL_SET = frozenset(CANONICAL_KEYS)


def canonical(usage: dict[str, Any]) -> Tokens:
    if not _CANONICAL_SET.issuperset(usage):
        unknown = [k for k in usage if k not in _CANONICAL_SET]
        raise UsageFormatError(
            f"usage.{unknown[0]}",
            f"usage.{unknown[0]} is not a canonical field; use {', '.join(CANONICAL_KEYS)} or "
            "set usage_format to the provider's format.",
        )
    if "input_tokens" not in usage and "output_tokens" not in usage:
        raise UsageFormatError("usage", "usage needs input_tokens and/or output_tokens.")
    get = usage.get
    return (
        count(get("input_tokens"), "usage.input_tokens"),
        count(get("output_tokens"), "usage.output_tokens"),
        count(get("cache_read_tokens"), "usage.cache_read_tokens"),
        count(get("cache_write_tokens"), "usage.cache_write_tokens"),
    )


def openai_chat(usage: dict[str, Any]) -> Tokens:
    prompt = count(_get(usage, "prompt_tokens"), "usage.prompt_tokens")
    completion = count(_get(usage, "completion_tokens"), "usage.completion_tokens")
    details = _object(_get(usage, "prompt_tokens_details"), "usage.prompt_tokens_details")
    cached = count(_get(details, "cached_tokens"), "usage.prompt_tokens_details.cached_tokens")
    fresh = _subtract(
        prompt, cached, "usage.prompt_tokens", "usage.prompt_tokens_details.cached_tokens"
    )
    return fresh, completion, cached, 0


def openai_responses(usage: dict[str, Any]) -> Tokens:
    prompt = count(_get(usage, "input_tokens"), "usage.input_tokens")
    output = count(_get(usage, "output_tokens"), "usage.output_tokens")
    details = _object(_get(usage, "input_tokens_details"), "usage.input_tokens_details")
    cached = count(_get(details, "cached_tokens"), "usage.input_tokens_details.cached_tokens")
    fresh = _subtract(
        prompt, cached, "usage.input_tokens", "usage.input_tokens_details.cached_tokens"
    )
    return fresh, output, cached, 0


def anthropic(usage: dict[str, Any]) -> Tokens:
    # Anthropic's input_tokens already exclude cache reads and cache writes.
    return (
        count(_get(usage, "input_tokens"), "usage.input_tokens"),
        count(_get(usage, "output_tokens"), "usage.output_tokens"),
        count(_get(usage, "cache_read_input_tokens"), "usage.cache_read_input_tokens"),
        count(_get(usage, "cache_creation_input_tokens"), "usage.cache_creation_input_tokens"),
    )


def gemini(usage: dict[str, Any]) -> Tokens:
    # Accept the usageMetadata object itself or a response wrapper holding it.
    inner = _get(usage, "usage_metadata")
    if isinstance(inner, dict):
        usage = inner
    prompt = count(_get(usage, "prompt_token_count"), "usage.promptTokenCount")
    cached = count(_get(usage, "cached_content_token_count"), "usage.cachedContentTokenCount")
    candidates = count(_get(usage, "candidates_token_count"), "usage.candidatesTokenCount")
    thoughts = count(_get(usage, "thoughts_token_count"), "usage.thoughtsTokenCount")
    tool_prompt = count(_get(usage, "tool_use_prompt_token_count"), "usage.toolUsePromptTokenCount")
    fresh = _subtract(prompt, cached, "usage.promptTokenCount", "usage.cachedContentTokenCount")
    # Thinking tokens are billed as output on top of the candidates; tool-use prompts as input.
    return fresh + tool_prompt, candidates + thoughts, cached, 0


FORMATS: dict[str, Callable[[dict[str, Any]], Tokens]] = {
    "canonical": canonical,
    "openai.chat": openai_chat,
    "openai.responses": openai_responses,
    "anthropic": anthropic,
    "gemini": gemini,
}
