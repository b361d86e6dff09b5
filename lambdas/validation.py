"""Input rules shared by the WebSocket protocol, the REST API and the token verifier (docs/security.md).

- Text may hold tabs, line breaks and any printable character, never NUL or another control character
  (C0, DEL, C1): PostgreSQL refuses NUL in text, and control characters in titles or ids are a way to
  disguise one value as another in logs and pages.
- JSON may nest at most `MAX_JSON_DEPTH` levels, checked on the raw text before it is parsed, so a
  deeply nested payload cannot exhaust the parser's recursion.
- Tenant ids are lower-case ASCII: letters, digits, `.`, `_`, `-`, 1 to 128 characters, starting with a
  letter or digit. Nothing is folded: "ACME", " acme", "acme" in full-width letters or with a bidi control
  are refused, not mapped to "acme", so one tenant can never be reached under two names.
- User ids are 1 to 256 characters in Unicode NFC, with no control or format (bidi) characters and no
  blanks at either end; they are case-sensitive, as OIDC's `sub` is.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

MAX_JSON_DEPTH = 32
MAX_TENANT_CHARS = 128
MAX_USER_CHARS = 256

CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
TENANT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
TENANT_ID_RULE = (
    "a tenant id is 1 to 128 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
)
USER_ID_RULE = "a user id is 1 to 256 characters with no control characters and no blanks at either end"
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def has_control(value: str) -> bool:
    """NUL or another control character other than tab, line feed and carriage return."""
    return CONTROL.search(value) is not None


def json_too_deep(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests deeper than `max_depth`, without parsing it (strings are skipped)."""
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if raw.count("[") + raw.count("{") <= max_depth:  # the common case, decided at C speed
        return False
    depth = 0
    for match in _BRACKETS.finditer(_STRINGS.sub('""', raw)):
        if match.group() in "[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def first_control(value: Any, where: str = "") -> str | None:
    """The path of the first string (key or value) in parsed JSON holding a control character."""
    if isinstance(value, str):
        return (where or "value") if has_control(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if has_control(str(key)):
                return path
            found = first_control(item, path)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = first_control(item, f"{where}[{index}]")
            if found:
                return found
    return None


def valid_tenant_id(value: object) -> bool:
    return isinstance(value, str) and TENANT_ID.fullmatch(value) is not None


def valid_user_id(value: object) -> bool:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_USER_CHARS or value != value.strip():
        return False
    if unicodedata.normalize("NFC", value) != value:
        return False
    return not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in value)
