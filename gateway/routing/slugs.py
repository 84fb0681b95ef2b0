"""The shapes of names the gateway accepts: slugs (cabinets, companies) and domains."""

from __future__ import annotations

import re

# A cabinet or company slug: lower-case letters, digits and single hyphens, as the help
# centre describes them ("aecconseil", "dupont-maconnerie"). 63 = one DNS label: slugs end
# up in local parts, which RFC 5321 bounds at 64 octets.
SLUG_RE = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){0,62}")
DOMAIN_RE = re.compile(r"(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


def is_slug(value: str) -> bool:
    return SLUG_RE.fullmatch(value) is not None


def slug_problem(value: str, what: str) -> str | None:
    """Why `value` is not a valid slug, in words for the person who typed it; None if valid."""
    if not value:
        return f"the {what} slug is empty"
    if is_slug(value):
        return None
    if value != value.lower():
        return f"the {what} slug {value!r} must be lower-case"
    if len(value) > 63:
        return f"the {what} slug {value!r} is longer than 63 characters"
    return (
        f"the {what} slug {value!r} may contain only lower-case letters, digits and single "
        "hyphens (no spaces, accents or special characters)"
    )
