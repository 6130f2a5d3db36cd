"""streamdehaze: real-time video dehazing (files, live feeds, and an embeddable API)."""

__version__ = "0.1.0"

import os  # noqa: E402

# Our model threads always share the CPU with decoder and encoder threads: OpenMP workers that spin while idle
# (the default) starve them and each other, several-fold on small machines. Only effective before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .api import Dehazer, open_source, process, read_frames  # noqa: E402
from .errors import MediaError, StreamDehazeError, UsageError  # noqa: E402

__all__ = ["Dehazer", "process", "read_frames", "open_source", "StreamDehazeError", "UsageError", "MediaError", "__version__"]
