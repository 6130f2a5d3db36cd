"""Credentials in URLs are masked whatever characters the password holds, raw or percent-encoded."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import threading
from collections.abc import Iterator

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


@pytest.mark.parametrize("url, shown", [
    ("rtsp://cam:554/live?token=TOKSECRET", "rtsp://cam:554/live?token=***"),
    ("http://u:p@cam/snap.jpg?token=T1&apikey=K1&w=640", "http://***@cam/snap.jpg?token=***&apikey=***&w=640"),
    ("https://s3/x.jpg?X-Amz-Date=1&X-Amz-Signature=abc#f", "https://s3/x.jpg?X-Amz-Date=1&X-Amz-Signature=***#f"),
    ("srt://h:9000?mode=caller&passphrase=PW%20x&ACCESS_TOKEN=a",
     "srt://h:9000?mode=caller&passphrase=***&ACCESS_TOKEN=***"),
    ("rtmp://127.0.0.1:1/live2/abcd-STREAMKEY-1234", "rtmp://127.0.0.1:1/live2/***"),
    ("rtmps://live.example:443/app/inst/KEY?backup=1", "rtmps://live.example:443/app/inst/***?backup=1"),
    ("rtmp://h/live", "rtmp://h/live"),  # (the application alone: no key)
])
def test_mask_hides_secret_query_values_and_rtmp_stream_keys(url, shown):
    message = f"cannot write {url}: Connection refused ('{url}')."
    assert mask(message) == f"cannot write {shown}: Connection refused ('{shown}')."
    assert mask(message, url) == f"cannot write {shown}: Connection refused ('{shown}')."


def test_a_token_with_a_space_is_masked_in_its_every_form():
    url = "rtsp://cam/s?token=a b 42&pass=%20x%2F"
    shown = mask(f"cannot read {url} (rtsp://cam/s?token=a b 42&pass= x/)", url)
    assert shown == "cannot read rtsp://cam/s?token=***&pass=*** (rtsp://cam/s?token=***&pass=***)"


def test_a_stream_s_configuration_shows_its_urls_masked():
    # A surveillance loop that logs its configurations, or a traceback that shows one, showed the camera's password.
    from streamdehaze.config import StreamConfig
    config = StreamConfig("rtsp://admin:S3cret@10.0.0.7/live?token=T0KEN", "rtmp://10.0.0.9/app/KEY123", name="gate")
    shown = repr(config)
    assert "S3cret" not in shown and "T0KEN" not in shown and "KEY123" not in shown, shown
    assert shown.startswith("StreamConfig(input='rtsp://***@10.0.0.7/live?token=***', "
                            "output='rtmp://10.0.0.9/app/***', name='gate', model=ModelOptions(")
    assert config.input == "rtsp://admin:S3cret@10.0.0.7/live?token=T0KEN"  # (only how it is shown)


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


def test_tokens_of_a_file_run_s_urls_are_masked_in_its_messages_and_statistics(make_video, run_cli, tmp_path):
    """A video and a snapshot read over HTTP with their tokens in the query: the error line, the summary line and
    --stats-json show them masked."""
    make_video("clip.mp4", frames=6)
    with _serving(tmp_path, _Quiet) as base:
        stats = tmp_path / "s.json"
        code, err = run_cli(f"{base}/clip.mp4?token=FILETOK", tmp_path / "out.mp4", "--model", "dcp",
                            "--stats-json", stats)
        assert code == 0 and f"-> {tmp_path / 'out.mp4'}" in err, err
        assert json.loads(stats.read_text())["input"] == f"{base}/clip.mp4?token=***"
        code, err = run_cli(f"{base}/gone.jpg?token=TOKSECRET&apikey=KEYSECRET", tmp_path / "o.jpg", "--model", "dcp")
        assert code == 1 and f"{base}/gone.jpg?token=***&apikey=***" in err, err
    for shown in (err, stats.read_text()):
        assert "TOK" not in shown and "KEYSECRET" not in shown, shown


@contextlib.contextmanager
def _serving(folder, handler) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving ``folder`` with ``handler``: its base URL, stopped after."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class _Guarded(_Quiet):
    """Serves a file only to a request whose query holds ``token=OPENSESAME``."""

    def do_GET(self) -> None:
        if "token=OPENSESAME" not in self.path:
            self.send_error(403)
            return
        super().do_GET()


def test_a_url_takes_its_secret_from_the_environment(make_video, run_cli, tmp_path, monkeypatch):
    """``${NAME}`` in a URL on the command line or in a ``serve`` configuration is the environment variable's value,
    so the secret is never in the process's arguments; an unset one is a usage error. A file name is taken as is."""
    from streamdehaze.config import load_config
    make_video("clip.mp4", frames=6)
    with _serving(tmp_path, _Guarded) as base:
        url = f"{base}/clip.mp4?token=${{CAM_TOKEN}}"
        monkeypatch.delenv("CAM_TOKEN", raising=False)
        code, err = run_cli(url, tmp_path / "out.mp4", "--model", "dcp")
        assert (code, err.splitlines()[-1:]) == (2, [f"streamdehaze: error: {base}/clip.mp4?token=***: the "
                                                     "environment variable CAM_TOKEN is not set"]), err
        monkeypatch.setenv("CAM_TOKEN", "OPENSESAME")
        code, err = run_cli(url, tmp_path / "out.mp4", "--model", "dcp")
        assert code == 0 and "OPENSESAME" not in err, err
        monkeypatch.setenv("CAM_TOKEN", "wrong")
        code, err = run_cli(url, tmp_path / "again.mp4", "--model", "dcp")
        assert code != 0 and "403" in err and "wrong" not in err, err
    monkeypatch.setenv("CAM_PASSWORD", "s3cret")
    fleet = load_config({"stream": [{"name": "cam", "input": "rtsp://admin:${CAM_PASSWORD}@10.0.0.5/stream",
                                     "output": f"{tmp_path}/${{CAM_PASSWORD}}.mp4"}]})
    assert (fleet.streams[0].input, fleet.streams[0].output) == ("rtsp://admin:s3cret@10.0.0.5/stream",
                                                                 f"{tmp_path}/${{CAM_PASSWORD}}.mp4")
