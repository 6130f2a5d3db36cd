"""``python -m streamdehaze.gst --env``: the environment that lets GStreamer find the ``dehaze`` element.

    eval "$(python -m streamdehaze.gst --env)"
    gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! dehaze model=dcp ! videoconvert \\
        ! x264enc ! mp4mux ! filesink location=out.mp4

GStreamer's Python plugin loader (Debian: ``gstreamer1.0-python3-plugin-loader``, ``python3-gst-1.0``) embeds the
system's Python 3, which must have this environment's minor version. It finds streamdehaze and its dependencies
(torch, PyAV, ...) through PYTHONPATH, and the system's PyGObject too: inside an activated virtual environment the
embedded interpreter takes that environment's prefix, which leaves the system's packages out.
"""

from __future__ import annotations

import argparse
import shlex
import site
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PLUGINS = Path(__file__).resolve().parent / "gst_plugins"
SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter the distribution's plugin loader embeds


def environment() -> dict[str, str]:
    """GST_PLUGIN_PATH and PYTHONPATH entries (prepended to what is there) for the plugin loader."""
    package_root = str(Path(__file__).resolve().parent.parent)  # where ``import streamdehaze`` finds this copy
    paths = [package_root, *site.getsitepackages(), *system_gi()]
    return {"GST_PLUGIN_PATH": str(PLUGINS), "PYTHONPATH": ":".join(dict.fromkeys(paths))}


def system_gi(python: str = SYSTEM_PYTHON) -> list[str]:
    """The folder holding the system Python's ``gi`` (PyGObject), or nothing where there is none."""
    try:
        found = subprocess.run([python, "-c", "import gi, os; print(os.path.dirname(os.path.dirname(gi.__file__)))"],
                               capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return []
    return [found.stdout.strip()] if found.returncode == 0 and found.stdout.strip() else []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamdehaze.gst", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", action="store_true", required=True,
                        help="print shell exports for GST_PLUGIN_PATH and PYTHONPATH")
    parser.parse_args(argv)
    for name, value in environment().items():
        print(f"export {name}={shlex.quote(value)}${{{name}:+:${name}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
