"""streamdehaze: real-time video dehazing (files, live feeds, and an embeddable API)."""

__version__ = "0.1.0"

from .api import Dehazer, open_source, process, read_frames  # noqa: E402
from .errors import MediaError, StreamDehazeError, UsageError  # noqa: E402

__all__ = ["Dehazer", "process", "read_frames", "open_source", "StreamDehazeError", "UsageError", "MediaError", "__version__"]
