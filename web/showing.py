"""The Jinja filters that show values: every one through the core's `Display`.

`shown` renders what `Display.value` gives as HTML (text escaped; a list as a list; a
nested record as a small table), `said` as one line; `when` and `day` are UK dates and
times; `name` a field's label. A page's context carries `display` (the request's own,
with its lookups of names and meetings); the filters find it there.
"""

from __future__ import annotations

from typing import Any

from jinja2 import pass_context
from markupsafe import Markup, escape

from referral_engine.display import (
    Display,
    Fields,
    Record,
    Shown,
    day_text,
    greeting_name,
    header_name,
    tidy,
    when_text,
)


def html(shown: Shown) -> Markup:
    """Text escaped, a list as a list, a nested record as a small table (Markup.format
    escapes every value it is given)."""
    if isinstance(shown, Record):
        row = Markup('<tr><th scope="row">{}</th><td>{}</td></tr>')
        rows = Markup("").join(row.format(k, html(v)) for k, v in shown.rows)
        return Markup('<table class="record"><tbody>{}</tbody></table>').format(rows)
    if isinstance(shown, tuple):
        if len(shown) == 1 and not isinstance(shown[0], Record):
            return html(shown[0])
        items = Markup("").join(Markup("<li>{}</li>").format(html(v)) for v in shown)
        return Markup('<ul class="values">{}</ul>').format(items)
    return escape(shown)


def _display(ctx) -> Display:
    return ctx.get("display") or Display({})


@pass_context
def shown(ctx, value: Any, name: str | None = None, fields: Fields | None = None) -> Markup:
    """A stored value as people read it, as HTML."""
    return html(_display(ctx).value(value, name, fields))


@pass_context
def said(ctx, value: Any, name: str | None = None, fields: Fields | None = None) -> str:
    """A stored value as people read it, on one line."""
    return _display(ctx).text(value, name, fields)


@pass_context
def name(ctx, value: Any, fields: Fields | None = None) -> str:
    """A field's name by its label. Never looked up in the policy's codes: a field called
    `consent` is not the lawful basis `consent`."""
    return _display(ctx).label(str(value), fields) if value is not None else ""


@pass_context
def label(ctx, value: Any) -> str:
    """A stored code as people read it: the policy's label for it, else the code tidied."""
    if value is True or value is False:
        return "Yes" if value else "No"
    text = "" if value is None else str(value)
    return _display(ctx).codes.get(text) or tidy(text)


def when(value: Any, fmt: str | None = None) -> str:
    """'2 December 2026, 4:13pm' (UK time). A `fmt` picks the part: with seconds (an
    audit row's time), the day alone ('%d' without '%H') or the time alone."""
    if value is None or value == "":
        return ""
    fmt = fmt or ""
    has_day = "%d" in fmt or "%-d" in fmt
    if fmt and has_day and "%H" not in fmt:
        return day_text(value)
    text = when_text(value, seconds="%S" in fmt)
    if fmt and "%H" in fmt and not has_day:
        return text.rsplit(", ", 1)[-1]
    return text


def day(value: Any, fmt: str | None = None) -> str:
    return day_text(value) if value else ""


FILTERS = {
    "shown": shown, "said": said, "name": name, "label": label, "when": when, "day": day,
    "greeting": greeting_name, "header_name": header_name,
}  # fmt: skip
