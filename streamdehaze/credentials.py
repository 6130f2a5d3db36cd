"""Credentials in URLs never reach a message, log line, stats file, metric label or exception.

A URL's credentials are its ``user:password``, the values of query parameters named as secrets (``?token=``,
``&apikey=``, ``&X-Amz-Signature=``: ``_SECRET_NAME``) and an RTMP URL's stream key (the last element of its path,
after the application: ``rtmp://host/live2/KEY``). Passwords may hold any character (``@ / : % space``),
percent-encoded or not, and FFmpeg's messages may show a URL as given or decoded. So the URLs a run was given are
masked whole and by their exact user:password text, in every form these can take, and any other URL by its shape.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote, unquote, urlsplit

from .errors import UsageError

MASK = "***"

# A URL in a message: scheme:// then everything up to whitespace or a quote (a raw '@' or '/' in a password must not
# end it early: that would print the rest of the password), less the punctuation of the sentence around it.
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]*?(?=[.,:;!)\]]*(?:$|[\s'\"]))")
# Query parameter names whose values are secrets, compared lower-cased without '-', '_' and '.': any name ending so
# (``access_token``, ``client_secret``, ``X-Amz-Signature``, ``streamkey``). Masking too much is the safe mistake.
_SECRET_NAME = re.compile(r".*(token|key|secret|pass|password|passwd|passphrase|pwd|auth|authorization|signature|sig|"
                          r"jwt|session|sessionid|credential|credentials)")
_RTMP = re.compile(r"rtmp[a-z]*", re.IGNORECASE)  # rtmp, rtmps, rtmpt, rtmpe, rtmpte, rtmpts
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # ${NAME}: an environment variable's value


def from_environment(url: str) -> str:
    """``url`` with each ``${NAME}`` in it replaced by the environment variable NAME's value, as given (a camera's
    password kept out of a command line, which every user of the machine sees in ``ps``, and out of a
    configuration file). A name without ``://`` is a file's, taken as it is."""
    if "://" not in url:
        return url

    def value(reference: re.Match) -> str:
        if reference.group(1) not in os.environ:
            raise UsageError(f"{mask(url, url)}: the environment variable {reference.group(1)} is not set")
        return os.environ[reference.group(1)]
    return _REFERENCE.sub(value, url)


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
    for url in map(str, urls):
        masked = mask_url(url)
        if masked == url:
            continue
        for form in _forms(url) | _forms(unquote(url)):  # (whole: a token or a stream key may hold a space too)
            text = text.replace(form, masked)
        info = userinfo(url)
        if info is None:
            continue
        decoded = unquote(info)
        for form in _forms(info) | _forms(decoded) | _forms(quote(decoded, safe=":")) | _forms(quote(decoded, safe="")):
            text = text.replace(f"://{form}@", f"://{MASK}@")
    return _URL.sub(lambda found: mask_url(found.group()), text)


def mask_url(url: str) -> str:
    """``url`` (one URL, whole) with its user:password, secret query values and RTMP stream key replaced by ``***``:
    ``rtmp://***@host/live2/***?token=***``."""
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    if userinfo(url) is not None:
        rest = f"{MASK}@{rest.rsplit('@', 1)[1]}"
    rest, hashed, fragment = rest.partition("#")
    rest, asked, query = rest.partition("?")
    if _RTMP.fullmatch(head):  # host/app/key: the key is the last element after the application
        host, _, path = rest.partition("/")
        elements = path.split("/")
        if len(elements) > 1 and elements[-1]:
            rest = "/".join([host, *elements[:-1], MASK])
    params = [_mask_param(param) for param in query.split("&")]
    return f"{head}://{rest}{asked}{'&'.join(params)}{hashed}{fragment}"


def _mask_param(param: str) -> str:
    name, _, value = param.partition("=")
    secret = _SECRET_NAME.fullmatch(re.sub(r"[-_.]", "", unquote(name).lower()))
    return f"{name}={MASK}" if value and secret else param


def _forms(text: str) -> set[str]:
    """``text`` as given and as an exception's message quotes it (``repr``: a file name in ``[Errno 2] ...: '...'``)."""
    return {text, repr(text)[1:-1]}


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
