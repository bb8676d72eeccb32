"""Request bodies, validated by pydantic: a wrong type or value is a 400 naming the field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Scalar = StrictStr | StrictInt | StrictFloat | StrictBool
FilterValue = Scalar | list[Scalar]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # name, tool_call_id ... are not used
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(BaseModel):
    """OpenAI's chat completion body; other OpenAI fields are accepted and ignored unless they
    ask for something ragkit does not do (``UNSUPPORTED``)."""

    model_config = ConfigDict(extra="allow")
    model: StrictStr
    messages: list[Message] = Field(min_length=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=2)
    top_p: StrictFloat | StrictInt | None = Field(default=None, gt=0, le=1)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    stream: StrictBool = False
    n: StrictInt | None = Field(default=None, ge=1, le=1)
    # ragkit's own (sent by the openai client through extra_body)
    k: StrictInt | None = Field(default=None, ge=1)
    filters: dict[str, FilterValue] | None = None
    kv_reuse: Literal["none", "prefix", "independent", "blend"] | None = None


# OpenAI fields that change what an answer is; refused rather than silently ignored
UNSUPPORTED = {"tools": None, "tool_choice": None, "functions": None, "function_call": None,
               "logprobs": False, "top_logprobs": None, "frequency_penalty": 0,
               "presence_penalty": 0, "logit_bias": None, "response_format": None, "audio": None,
               "modalities": None}


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: StrictStr
    k: StrictInt | None = Field(default=None, ge=1)
    filters: dict[str, FilterValue] | None = None


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: StrictStr = Field(min_length=1, max_length=1024)
    text: StrictStr
    source: StrictStr | None = None
    metadata: dict[str, Any] | None = None


def unsupported_field(req: ChatRequest) -> str | None:
    """The first field of ``req`` set to something ragkit does not do, if any."""
    extra = req.model_extra or {}
    for name, allowed in UNSUPPORTED.items():
        if name in extra and extra[name] not in (None, allowed) and not (
            name == "response_format" and extra[name] == {"type": "text"}
        ):
            return name
    return None
