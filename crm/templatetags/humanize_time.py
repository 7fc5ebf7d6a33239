from datetime import datetime

from django import template

from crm.display import when as when_html

register = template.Library()


@register.simple_tag
def when(value: datetime | None) -> str:
    """{% when some_datetime %}: "3 hours ago", the exact time on hover."""
    return when_html(value)
