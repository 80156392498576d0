"""What each stored field of a pathway is, read from its workflow YAML.

An event's `data:` declares each field's label, type and choices; a case attribute is
copied from an event's field (`set_attributes`), or is a list of records built from an
event's fields (`append_attribute`, `append_assessment`, an action plan). So the case
record, the history and the audit views can name and show every one of them as the form
that collected it does, with nothing repeated in code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from referral_engine.display.values import Field, Fields
from referral_engine.pathways import Workflow


@dataclass(frozen=True)
class PathwayFields:
    # event -> its data fields
    events: Mapping[str, Fields]
    # case attribute -> what it holds
    attributes: Fields
    # every field of every event, by name (the first event's, if two share a name)
    any_event: Fields


def _field(spec: Any, choices: Mapping[str, str] | None, vocab: Mapping[str, Mapping[str, str]],
           label: str | None = None) -> Field:  # fmt: skip
    items = {k: _field(v, _codes(v, vocab), vocab) for k, v in (spec.items or {}).items()}
    return Field(label or spec.label or "", spec.type, choices, items)


def _codes(spec: Any, vocab: Mapping[str, Mapping[str, str]]) -> Mapping[str, str] | None:
    if spec.choices_from:
        return vocab.get(spec.choices_from, {})
    if spec.choices:
        return {}  # choices listed in the YAML itself: their labels are the policy's codes
    return None


def pathway_fields(wf: Workflow, field_labels: Mapping[str, str]) -> PathwayFields:
    d = wf.definition
    events: dict[str, dict[str, Field]] = {}
    for name, ev in d.events.items():
        vocab = wf.schemas[name].vocab
        events[name] = {f: _field(spec, _codes(spec, vocab), vocab) for f, spec in ev.data.items()}
    declared = dict(wf.labels.attributes)
    attributes: dict[str, Field] = {}
    for event, planned in wf.effects.items():
        fields = events.get(event, {})
        for effect, params in planned:
            if effect == "set_attributes":
                for attribute, source in params.values.items():  # type: ignore[attr-defined]
                    if source in fields and attribute not in attributes:
                        base = fields[source]
                        attributes[attribute] = Field(
                            declared.get(attribute) or field_labels.get(attribute)
                            or (base.label if attribute == source else "") or "",
                            base.type, base.codes, base.items,
                        )  # fmt: skip
            elif effect in ("append_attribute", "append_assessment"):
                attribute = params.attribute  # type: ignore[attr-defined]
                names = list(getattr(params, "compare", [])) + list(params.fields)  # type: ignore[attr-defined]
                items = {f: fields[f] for f in names if f in fields}
                attributes.setdefault(
                    attribute,
                    Field(declared.get(attribute) or field_labels.get(attribute) or "",
                          "list", None, items),
                )  # fmt: skip
            elif effect == "add_actions":
                attribute = params.attribute  # type: ignore[attr-defined]
                source = params.field  # type: ignore[attr-defined]
                items = dict(fields[source].items) if source and source in fields else dict(fields)
                attributes.setdefault(
                    attribute,
                    Field(declared.get(attribute) or field_labels.get(attribute) or "",
                          "list", None, items),
                )  # fmt: skip
    for attribute, label in declared.items():
        if attribute not in attributes:
            attributes[attribute] = Field(label)
    any_event: dict[str, Field] = {}
    for fields in events.values():
        for f, spec in fields.items():
            any_event.setdefault(f, spec)
    return PathwayFields(events=events, attributes=attributes, any_event=any_event)
