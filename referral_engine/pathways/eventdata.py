"""Event data schemas: the `data:` block of each workflow event, compiled to pydantic.

Errors come back as `FieldError`s naming the field (dotted for nested items), so the
API's 422 and the web form's messages say exactly which field is wrong and why.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
    model_validator,
)

from referral_engine.errors import FieldError, InvalidData

FieldType = Literal[
    "text", "choice", "choices", "bool", "date", "datetime", "integer", "list", "user", "meeting"
]


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: FieldType
    label: str | None = None
    help: str | None = None
    required: bool = True
    # Required only when another field has one of these values, e.g. {outcome: [x]}.
    required_when: dict[str, list[str]] | None = None
    choices: tuple[str, ...] | None = None
    choices_from: str | None = None
    max_length: int = Field(default=10_000, ge=1)
    min_items: int = Field(default=0, ge=0)
    min: int | None = None
    max: int | None = None
    items: dict[str, FieldSpec] | None = None
    # For a `user` field (a username): the permission that user must hold.
    holds_permission: str | None = None
    # For a `text` field naming an item of a case attribute (a MARAC action's id): the
    # attribute, so a form offers the case's open items to choose from, never a blank box.
    pick_from: str | None = None
    # What to tell someone who got this field wrong, as a sentence that says what to do
    # ("Choose a RAG rating"), by what went wrong; see `message_for` for the defaults.
    messages: dict[Literal["required", "choice", "invalid", "too_long"], str] = {}

    @model_validator(mode="after")
    def _consistent(self):
        if self.type in ("choice", "choices") and not (self.choices or self.choices_from):
            raise ValueError(f"a {self.type} field needs choices or choices_from")
        if self.type == "list" and not self.items:
            raise ValueError("a list field needs items")
        return self


Vocabularies = dict[str, dict[str, str]]


def _choices(spec: FieldSpec, vocab: Vocabularies) -> tuple[str, ...]:
    if spec.choices:
        return spec.choices
    return tuple(vocab[spec.choices_from or ""])


def _annotation(name: str, spec: FieldSpec, vocab: Vocabularies) -> Any:
    text = Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=spec.max_length)
    ]
    match spec.type:
        case "text" | "user":
            return text
        case "choice":
            return Literal[_choices(spec, vocab)]
        case "choices":
            return Annotated[list[Literal[_choices(spec, vocab)]], Field(min_length=spec.min_items)]
        case "bool":
            return bool
        case "date":
            return date
        case "datetime":
            return datetime
        case "integer":
            return Annotated[int, Field(ge=spec.min, le=spec.max)]
        case "meeting":
            return Annotated[int, Field(ge=1)]
        case "list":
            item = compile_model(f"{name}_item", spec.items or {}, vocab)
            return Annotated[list[item], Field(min_length=spec.min_items)]  # type: ignore[valid-type]
    raise AssertionError(spec.type)


def compile_model(
    name: str,
    fields: dict[str, FieldSpec],
    vocab: Vocabularies,
    extra: dict[str, Any] | None = None,
) -> type[BaseModel]:
    definitions: dict[str, Any] = {}
    for fname, spec in fields.items():
        ann = _annotation(fname, spec, vocab)
        required = spec.required and not spec.required_when
        definitions[fname] = (ann, ...) if required else (ann | None, None)
    for fname, (ann, default) in (extra or {}).items():
        definitions.setdefault(fname, (ann, default))
    return create_model(  # type: ignore[call-overload]
        name, __config__=ConfigDict(extra="forbid", str_strip_whitespace=True), **definitions
    )


class EventSchema:
    """A compiled event-data schema: validate(dict) -> clean dict, or InvalidData."""

    COMMON = {
        "note": (Annotated[str, StringConstraints(max_length=10_000)] | None, None),
        "late_reason": (Annotated[str, StringConstraints(max_length=10_000)] | None, None),
    }

    def __init__(self, name: str, fields: dict[str, FieldSpec], vocab: Vocabularies):
        self.fields = fields
        self.vocab = vocab
        self.model = compile_model(name, fields, vocab, extra=self.COMMON)
        self.users = {f: s for f, s in fields.items() if s.type == "user"}
        self.meetings = [f for f, s in fields.items() if s.type == "meeting"]
        self.choices = {
            f: _choices(s, vocab) for f, s in fields.items() if s.type in ("choice", "choices")
        }
        self._described: dict[str, Any] | None = None

    def validate(self, data: Any) -> dict[str, Any]:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InvalidData(FieldError("data", "must be an object"))
        try:
            clean = self.model.model_validate(data).model_dump(mode="json")
        except ValidationError as exc:
            raise InvalidData([self._worded(field_error(e), e) for e in exc.errors()]) from None
        missing = [
            FieldError(f, message_for(f, spec, "required"))
            for f, spec in self.fields.items()
            if spec.required_when and clean.get(f) in (None, "", [])
            for k, values in spec.required_when.items()
            if clean.get(k) in values
        ]
        if missing:
            raise InvalidData(missing)
        return {k: v for k, v in clean.items() if v is not None}

    def _worded(self, error: FieldError, raw: dict[str, Any]) -> FieldError:
        """The error as a sentence that says what to do, from the field's declaration."""
        parts = error.field.split(".")
        spec = self.fields.get(parts[0])
        # A list's item: actions.0.description is the `description` of `actions`' items.
        if spec is not None and len(parts) >= 3 and spec.items and parts[2] in spec.items:
            spec = spec.items[parts[2]]
        if spec is None:
            return error
        kind = _KINDS.get(raw.get("type", ""), "invalid")
        return FieldError(error.field, message_for(parts[-1], spec, kind))

    def describe(self) -> dict[str, Any]:
        """The schema as plain data for API clients and forms. Built once (it never
        changes, and every case page lists it for each available event); read-only."""
        if self._described is None:
            self._described = self._describe()
        return self._described

    def _describe(self) -> dict[str, Any]:
        out = {}
        for name, spec in self.fields.items():
            d = spec.model_dump(exclude_none=True, exclude={"choices_from", "items"})
            if name in self.choices:
                d["choices"] = list(self.choices[name])
            if spec.items:
                # A list's columns name their choices too (an action plan's owner agency),
                # resolved from the vocabulary as a top-level field's are.
                d["items"] = {
                    k: v.model_dump(exclude_none=True, exclude={"choices_from"})
                    | ({"choices": list(_choices(v, self.vocab))}
                       if v.type in ("choice", "choices") else {})
                    for k, v in spec.items.items()
                }  # fmt: skip
            out[name] = d
        return out


def field_error(err: dict[str, Any]) -> FieldError:
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("literal[", "function-"))]
    field = ".".join(loc) or "data"
    kind = err.get("type", "")
    if kind == "missing":
        reason = "is required"
    elif kind == "extra_forbidden":
        reason = "is not a field of this event"
    elif kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        reason = f"must be one of {expected}"
    elif kind == "string_too_short":
        reason = "must not be blank"
    else:
        reason = err["msg"]
    return FieldError(field, reason)


# What went wrong, by pydantic's error type.
_KINDS = {
    "missing": "required",
    "string_too_short": "required",
    "too_short": "required",
    "literal_error": "choice",
    "string_too_long": "too_long",
}


def _quoted(spec: FieldSpec, name: str) -> str:
    return f"\u201c{spec.label or name.replace('_', ' ')}\u201d"


def message_for(name: str, spec: FieldSpec, kind: str) -> str:
    """The sentence for a field got wrong: the one declared in the workflow YAML
    (`messages:` beside the field), else one built from the field's label and type."""
    declared = spec.messages.get(kind)  # type: ignore[call-overload]
    if declared:
        return declared
    label = _quoted(spec, name)
    if kind == "too_long":
        return f"Shorten {label} to {spec.max_length} characters or fewer"
    if spec.type in ("choice", "choices", "user", "meeting"):
        if kind == "required" and spec.type == "choices":
            return f"Choose at least {max(spec.min_items, 1)} for {label}"
        return f"Choose one of the options for {label}" if kind == "choice" else f"Choose {label}"
    if spec.type == "bool":
        return f"Choose Yes or No for {label}"
    if spec.type in ("date", "datetime"):
        return f"Enter {label} as a real date" if kind != "required" else f"Enter {label}"
    if spec.type == "integer":
        if kind == "required":
            return f"Enter {label}"
        bounds = (f" from {spec.min} to {spec.max}" if spec.min is not None and spec.max is not None
                  else f" of {spec.min} or more" if spec.min is not None
                  else f" of {spec.max} or less" if spec.max is not None else "")  # fmt: skip
        return f"Enter {label} as a whole number{bounds}"
    if spec.type == "list":
        return f"Add at least {max(spec.min_items, 1)} to {label}"
    return f"Fill in {label}" if kind == "required" else f"Check {label}: it is not valid"
