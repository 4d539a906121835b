"""What an OpenAI-compatible server answers, checked before the `openai` backend reads it.

The body is read as raw JSON and checked against the schema of an answer (`ChatAnswer`,
`CompletionAnswer`), which names only the fields the backend reads, so the fields OpenAI,
vLLM, llama.cpp or Ollama add of their own pass. The rule, per answer:

- a body that is not a JSON object (an HTML page, junk, nothing, a list, bytes that are not
  UTF-8) or that is an error object, with HTTP 2xx: that is not an OpenAI-compatible server
  answering, and every request would get the same, so the command ends in one line naming the
  server (`answer_object` raises a UserError);
- a JSON object that does not fit (choices not a non-empty list, a choice without a message,
  content not a string or longer than any answer we ask for, token counts that are not counts,
  log-probabilities of the wrong shape, offsets that do not line up with them, values that are
  not finite numbers): a malformed answer (`checked` raises MalformedAnswer). The backend counts
  it and the unit goes on without it, as for a well-formed answer whose words cannot be read;
- only answers that fit are cached, and a cached answer is checked again when read back.
"""

from __future__ import annotations

import json
from typing import Annotated, TypeVar

from pydantic import BaseModel, Field, model_validator

from sparsecircuits.errors import UserError, first_line
from sparsecircuits.validation import validate

# We ask for at most a few hundred tokens; an answer this long is not an answer to us.
MAX_CONTENT_CHARS = 100_000
SHOWN_BYTES = 60  # of a body that is not JSON, in the error
JSON_KINDS = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}

TokenCount = Annotated[int, Field(ge=0, le=10**12)]
# A log-probability is <= 0 (up to rounding); far above would overflow exp().
LogProb = Annotated[float, Field(allow_inf_nan=False, le=1e-3)]


class TokenCounts(BaseModel):
    prompt_tokens: TokenCount | None = None
    completion_tokens: TokenCount | None = None


class ChatMessage(BaseModel):
    content: Annotated[str, Field(max_length=MAX_CONTENT_CHARS)] | None = None


class ChatChoice(BaseModel):
    message: ChatMessage


class ChatAnswer(BaseModel):
    choices: Annotated[list[ChatChoice], Field(min_length=1)]
    usage: TokenCounts | None = None


class PromptLogprobs(BaseModel):
    # Servers without prompt log-probabilities in this form leave both out (or empty).
    top_logprobs: list[dict[str, LogProb] | None] = []
    text_offset: list[Annotated[int, Field(ge=0)]] = []

    @model_validator(mode="after")
    def aligned(self) -> PromptLogprobs:
        if len(self.top_logprobs) != len(self.text_offset):
            raise ValueError(
                f"{len(self.text_offset)} text offsets for {len(self.top_logprobs)} tokens"
            )
        return self


class CompletionChoice(BaseModel):
    logprobs: PromptLogprobs | None = None


class CompletionAnswer(BaseModel):
    choices: Annotated[list[CompletionChoice], Field(min_length=1)]
    usage: TokenCounts | None = None


Answer = TypeVar("Answer", ChatAnswer, CompletionAnswer)


class MalformedAnswer(Exception):
    """An answer that is a JSON object but not an OpenAI answer, or not one we can use."""


def answer_object(body: bytes, where: str) -> dict:
    """The JSON object of a 2xx answer; a UserError when it is none (`where`: the server)."""
    hint = "is --base-url the address of an OpenAI-compatible API, often ending in /v1?"
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # ValueError: bad JSON, bad UTF-8, huge numbers
        shown = body[:SHOWN_BYTES].decode("utf-8", "replace").replace("\n", " ").strip()
        more = "..." if len(body) > SHOWN_BYTES else ""
        raise UserError(
            f"{where} answered with something that is not JSON ({shown!r}{more}); {hint}"
        ) from None
    if not isinstance(data, dict):
        kind = JSON_KINDS.get(type(data), "value")
        raise UserError(f"{where} answered with a JSON {kind}, not an object; {hint}")
    if "choices" not in data and ("error" in data or data.get("object") == "error"):
        raise UserError(f"{where} answered with an error: {error_text(data, str(data))}")
    return data


def checked(schema: type[Answer], data: dict, where: str) -> Answer:
    """`data` as an answer of `schema`; MalformedAnswer (one line) when it does not fit."""
    try:
        return validate(schema, data, where)
    except UserError as error:
        raise MalformedAnswer(str(error)) from None


def error_text(body: object, otherwise: str) -> str:
    """The message of an OpenAI-style error body (`otherwise` without one), on one line."""
    inner = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(inner, dict) and inner.get("message"):
        otherwise = str(inner["message"])
    elif isinstance(inner, str) and inner.strip():
        otherwise = inner
    return first_line(ValueError(otherwise))[:200]
