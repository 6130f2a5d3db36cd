"""streamdehaze: real-time video dehazing (files, live feeds, and an embeddable API)."""

__version__ = "0.1.0"

from .api import Dehazer, dehaze_video  # noqa: E402
from .errors import MediaError, StreamDehazeError, UsageError  # noqa: E402

__all__ = ["Dehazer", "dehaze_video", "StreamDehazeError", "UsageError", "MediaError", "__version__"]
