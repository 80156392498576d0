"""Event forms: from an event's data schema to labelled fields, and from a submitted form
back to the event's data. The engine validates the data; this only translates HTML's
shapes (checkboxes, radio buttons, rows of a table) into JSON's.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData

LIST_ROWS = 3  # blank rows offered for a list (e.g. an action plan); more can be added later


def field_id(prefix: str, name: str) -> str:
    return f"{prefix}-{name}".replace(".", "-").replace("_", "-")


def fields_for(prefix: str, schema: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The fields of an event form, in schema order, each with an id for labels/errors."""
    out = []
    for name, spec in schema.items():
        item = {
            "name": name,
            "id": field_id(prefix, name),
            "type": spec["type"],
            "label": spec.get("label") or name.replace("_", " ").capitalize(),
            "help": spec.get("help"),
            "required": spec.get("required", True) and not spec.get("required_when"),
            "choices": spec.get("choices") or [],
        }
        if spec["type"] == "list":
            item["columns"] = [
                {"name": k, "type": v["type"], "label": v.get("label") or k.capitalize(),
                 "choices": v.get("choices") or []}
                for k, v in (spec.get("items") or {}).items()
            ]  # fmt: skip
            item["rows"] = LIST_ROWS
        out.append(item)
    return out


def data_from(form: FormData, schema: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The event data a form says, leaving out what was left empty (so "required" speaks)."""
    data: dict[str, Any] = {}
    for name, spec in schema.items():
        kind = spec["type"]
        if kind == "choices":
            data[name] = [v for v in form.getlist(name) if v]
        elif kind == "bool":
            value = form.get(name)
            if value in ("yes", "true", "on"):
                data[name] = True
            elif value in ("no", "false"):
                data[name] = False
        elif kind == "list":
            rows = []
            columns = list((spec.get("items") or {}).keys())
            index = 0
            while any(f"{name}-{index}-{c}" in form for c in columns):
                row = {c: (form.get(f"{name}-{index}-{c}") or "").strip() for c in columns}
                if any(row.values()):
                    rows.append({k: v for k, v in row.items() if v})
                index += 1
            data[name] = rows
        else:
            value = (form.get(name) or "").strip()
            if value:
                numeric = kind in ("integer", "meeting") and value.isdigit()
                data[name] = int(value) if numeric else value
    for extra in ("note", "late_reason"):
        value = (form.get(extra) or "").strip()
        if value:
            data[extra] = value
    return data


def values_of(form: FormData) -> dict[str, Any]:
    """What the user typed, to put back in the form when it is shown again."""
    out: dict[str, Any] = {}
    for key in form:
        values = form.getlist(key)
        out[key] = values if len(values) > 1 else values[0]
    return out
