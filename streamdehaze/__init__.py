"""streamdehaze: real-time video dehazing (files, live feeds, and an embeddable API).

The public names load on first use (PEP 562), so that ``streamdehaze`` on the command line can answer Ctrl-C with
one line even while torch is still loading. Importing it, like using it, changes no process-wide setting, with one
exception, undone on return: a run in the main thread holds the Python handlers of Ctrl-C, SIGTERM and SIGHUP back
to points where they cannot cut its output in half (``pipeline.deferred_signals``); they still run, a moment later.
"""

__version__ = "0.1.0"

import importlib  # noqa: E402

_HOMES = {"Dehazer": "api", "process": "api", "read_frames": "api", "open_source": "api", "tuned": "tuning",
          "dehazed": "api", "FrameRecord": "records",
          "serve": "fleet", "Fleet": "fleet", "StreamConfig": "config",
          "ModelOptions": "config", "EncodeOptions": "config", "LiveOptions": "live",
          "StreamDehazeError": "errors", "UsageError": "errors", "MediaError": "errors"}

__all__ = [*_HOMES, "__version__"]


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'streamdehaze' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)


def __dir__() -> list[str]:
    # The lazy names are no attributes until first used: without this, dir() and completion showed none of them.
    return sorted({*globals(), *__all__})
