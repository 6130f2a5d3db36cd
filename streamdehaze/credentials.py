"""Credentials in URLs never reach a message, log line, stats file, metric label or exception.

Passwords may hold any character (``@ / : % space``), percent-encoded or not, and FFmpeg's messages may show a URL
as given or decoded. So the URLs a run was given are masked by their exact user:password text in every form it
can take, and any other URL by the pattern ``scheme://...@``.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit

from .errors import UsageError

MASK = "***"

# scheme:// then everything up to the last '@' before whitespace or a quote: a raw '@' or '/' in a password must
# not end the match early (that would print the rest of the password).
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^\s'\"]*@")


def userinfo(url: str) -> str | None:
    """The ``user:password`` part of ``url`` exactly as written: everything between ``://`` and its last ``@``
    (None without one). An ``@`` in the path also ends it there: masking too much is the safe mistake."""
    head, sep, rest = url.partition("://")
    if not sep or not head or "@" not in rest:
        return None
    return rest.rsplit("@", 1)[0] or None


def mask(text: str, *urls: str | object) -> str:
    """``text`` with the credentials of ``urls`` (the run's inputs and outputs) and of any other URL replaced by
    ``***``."""
    for url in urls:
        info = userinfo(str(url))
        if info is None:
            continue
        decoded = unquote(info)
        forms = {info, decoded, quote(decoded, safe=":"), quote(decoded, safe="")}
        for form in forms | {repr(form)[1:-1] for form in forms}:  # repr(): how exceptions quote file names
            text = text.replace(f"://{form}@", f"://{MASK}@")
    return _USERINFO.sub(rf"\1{MASK}@", text)


def check_url(url: str) -> None:
    """Refuse a URL that cannot be read, naming no part of its credentials: above all one whose password holds a raw
    '/', '?' or '#', which ends the host early (FFmpeg then fails on what follows ':' as a port, again and again)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # (its reasons name no part of the URL)
        raise UsageError(f"{mask(url, url)} is not a valid URL: {exc}") from None
    try:
        parts.port
    except ValueError:  # (its reason shows the "port": perhaps part of a password)
        hint = " (a password holding '/', '?' or '#' must be percent-encoded: %2F, %3F, %23)" if "@" in url else ""
        raise UsageError(f"{mask(url, url)} is not a valid URL: its port is not a number{hint}") from None
