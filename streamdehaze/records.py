"""What a callback and the frame iterator see of each dehazed frame."""

from __future__ import annotations

from dataclasses import dataclass, field

import av
import numpy as np

from .frames import to_image, upright


@dataclass
class FrameRecord:
    """One dehazed frame: ``image`` (numpy ``[H,W,3]`` uint8, BGR unless the run asked for RGB: ``bgr=False``),
    its presentation time in ``seconds`` (None if the source has none), its ``index`` among the stream's dehazed
    frames, the ``stream``'s name ("" for a single run) and, on request, the ``original`` frame it was dehazed
    from."""

    image: np.ndarray
    seconds: float | None
    index: int
    stream: str
    bgr: bool = True
    source: av.VideoFrame | None = field(default=None, repr=False)

    @property
    def original(self) -> np.ndarray:
        """The input frame, upright and in the same layout as ``image`` (converted when first asked for)."""
        if self.source is None:
            raise ValueError("the original frame is not available here")
        return upright(to_image(self.source, self.bgr), self.source.rotation)
