"""The clip the benchmarks run on: ``--input FILE``, else the repository's sample. A checkout has the sample
(``samples/hazy_bunny.mp4``, which the README's first command dehazes); an installed package does not ship it."""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "hazy_bunny.mp4"


def benchmark_input(given: Path | None) -> Path:
    """``given`` (a benchmark's ``--input``), else the bundled sample; a UsageError where there is neither."""
    if given is not None:
        return given
    if not SAMPLE.is_file():
        raise UsageError("no clip to benchmark: the bundled sample (samples/hazy_bunny.mp4) comes with a checkout "
                         "of the repository; give --input FILE")
    return SAMPLE
