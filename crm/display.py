"""How the admin shows values: humanised times, JSON as key-value lists or pretty-printed, long text cut with the
rest on hover.

Everything goes through format_html, so event text is always escaped.
"""

import json
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince, timeuntil

KV_MAX_DEPTH = 3
KV_MAX_ITEMS = 50


def when(value: datetime | None) -> str:
    """ "3 hours ago", with the exact local time on hover."""
    if value is None:
        return "-"
    now = timezone.now()
    words = f"{timesince(value, now, depth=1)} ago" if value <= now else f"in {timeuntil(value, now, depth=1)}"
    exact = timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")
    return format_html(
        '<time datetime="{}" title="{}" style="white-space: nowrap">{}</time>', value.isoformat(), exact, words
    )


def pre_block(text: str) -> str:
    """Preformatted text that still wraps (an error with its traceback)."""
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def json_block(value: Any) -> str:
    """A JSON value pretty-printed, keys sorted, non-ASCII kept as written."""
    return pre_block(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def cut(text: str, *, chars: int, one_line: bool = False) -> str:
    """The start of `text`, the whole of it on hover. `one_line` keeps it from wrapping (a list column)."""
    style = mark_safe(' style="white-space: nowrap"') if one_line else ""  # a constant: nothing to escape
    if len(text) <= chars:
        return format_html("<span{}>{}</span>", style, text)
    return format_html('<span title="{}"{}>{}…</span>', text, style, text[:chars])


def _scalar(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def key_value_list(value: Any, *, depth: int = 0) -> str:
    """A dict as a definition list (nested dicts and lists inside), a list as a list; scalars as text."""
    if isinstance(value, dict) and depth < KV_MAX_DEPTH:
        if not value:
            return "—"
        items = list(value.items())[:KV_MAX_ITEMS]
        return format_html(
            '<dl class="kv" style="margin: 0">{}</dl>',
            format_html_join(
                "",
                '<dt style="font-weight: bold; float: left; clear: left; margin-right: .5em">{}:</dt>'
                '<dd style="margin: 0 0 .2em 0">{}</dd>',
                ((key, key_value_list(item, depth=depth + 1)) for key, item in items),
            ),
        )
    if isinstance(value, list) and depth < KV_MAX_DEPTH:
        if not value:
            return "—"
        return format_html(
            '<ul style="margin: 0; padding-left: 1.2em">{}</ul>',
            format_html_join(
                "", "<li>{}</li>", ((key_value_list(item, depth=depth + 1),) for item in value[:KV_MAX_ITEMS])
            ),
        )
    return format_html("{}", _scalar(value))


def key_value_line(value: Any, *, chars: int = 120) -> str:
    """A one-line summary of a dict for list pages ("messageId: m-1 · note: …"), the whole on hover."""
    if isinstance(value, dict):
        text = " · ".join(
            f"{key}: {_scalar(item) if not isinstance(item, dict | list) else '…'}" for key, item in value.items()
        )
    else:
        text = _scalar(value)
    return cut(text, chars=chars)
