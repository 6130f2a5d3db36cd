"""Credentials in URLs are masked whatever characters the password holds, raw or percent-encoded."""

from __future__ import annotations


import pytest

from streamdehaze import MediaError, UsageError, process
from streamdehaze.credentials import mask, userinfo
from streamdehaze.live import LiveOptions
from tests.conftest import free_port

# (password as typed in the URL, fragments of it that must never be shown)
HOSTILE = [("Sec@ret", ["Sec@", "@ret"]), ("pa/ss:w@rd", ["pa/ss", "w@rd"]), ("my pass 100%", ["my pass", "100%"]),
           ("p%40ss%2Fw%20x%3A", ["p%40ss", "p@ss", "ss/w", "w x"]), ("'quote\"d'", ["quote"])]


@pytest.mark.parametrize("password, fragments", HOSTILE)
def test_mask_hides_every_form_of_the_password(password, fragments):
    from urllib.parse import unquote

    url = f"rtsp://admin:{password}@cam.example:554/Streaming/101"
    assert userinfo(url) == f"admin:{password}"
    decoded = f"rtsp://admin:{unquote(password)}@cam.example:554/"
    message = f"cannot read {url}: [Errno 111] Connection refused: '{url}' (as {decoded})"
    shown = mask(message, url)
    assert shown == "cannot read rtsp://***@cam.example:554/Streaming/101: [Errno 111] Connection refused: " \
                    "'rtsp://***@cam.example:554/Streaming/101' (as rtsp://***@cam.example:554/)"
    assert "admin" not in shown and not [f for f in fragments if f in shown]


def test_mask_without_the_url_still_hides_credentials_of_any_url():
    assert mask("from rtsp://a:b@c@host/x and http://u:p/w@h/") == "from rtsp://***@host/x and http://***@h/"
    assert mask("rtsp://host/stream and /dev/video0") == "rtsp://host/stream and /dev/video0"


def test_short_credentials_are_not_masked_outside_urls():
    assert mask("a camera at rtsp://a:a@host/x", "rtsp://a:a@host/x") == "a camera at rtsp://***@host/x"


@pytest.mark.parametrize("password, fragments", HOSTILE)
def test_exceptions_of_the_api_are_masked(password, fragments, tmp_path):
    port = free_port()  # (nothing listens on it)
    url = f"rtsp://admin:{password}@127.0.0.1:{port}/cam"
    # (refused up front where a raw '/' ends the host, else after the one attempt)
    with pytest.raises(UsageError if "/" in password else MediaError) as failure:
        process(url, tmp_path / "o.mp4", model="dcp", live=LiveOptions(timeout=0.5, reconnect=0))
    shown = str(failure.value)
    assert f"rtsp://***@127.0.0.1:{port}/cam" in shown
    assert "admin" not in shown and not [f for f in fragments if f in shown]
