"""The one place the gateway imports OpenCV from: its decoding ceilings are set before the first import.

OpenCV reads ``OPENCV_IO_MAX_IMAGE_WIDTH``, ``_HEIGHT`` and ``_PIXELS`` once, when the library loads, and
checks every ``imdecode`` against them after reading the frame header and before allocating pixels
(``validateInputImageSize`` in ``imgcodecs/src/loadsave.cpp``). So a JPEG whose header our own check
misread still cannot make OpenCV allocate more than the ceiling. The values are defaults: an operator may
set lower ones in the environment. With an ``IMREAD_REDUCED_*`` flag OpenCV checks the *reduced* size, so
there the ceiling bounds the decoded buffer, not the frame: the header check in ``imaging`` is the guard
that reads what libjpeg reads.
"""

import logging
import os
import sys

import numpy as np

MAX_SIDE = 8192  # pixels on either side of a decoded image
MAX_PIXELS = 8192 * 4096  # 32 Mi pixels: ~100 MB of BGR, above the largest frame the settings allow

_CEILINGS = {
    "OPENCV_IO_MAX_IMAGE_WIDTH": MAX_SIDE,
    "OPENCV_IO_MAX_IMAGE_HEIGHT": MAX_SIDE,
    "OPENCV_IO_MAX_IMAGE_PIXELS": MAX_PIXELS,
}

_LOADED_BEFORE = "cv2" in sys.modules  # then the ceilings below come too late for this process
for _name, _value in _CEILINGS.items():
    os.environ.setdefault(_name, str(_value))

import cv2  # noqa: E402  # after the ceilings, which OpenCV reads when it loads
from cv2.typing import MatLike  # noqa: E402

__all__ = ["MAX_PIXELS", "MAX_SIDE", "MatLike", "ceilings", "cv2", "imdecode"]

cv2.setNumThreads(1)  # parallelism comes from our pools; OpenCV's own threads would oversubscribe 2 cores

if _LOADED_BEFORE:
    logging.getLogger(__name__).warning(
        "cv2 was imported before gateway.adapters.opencv: OpenCV's decoding ceilings may not apply"
    )


def ceilings() -> dict[str, int]:
    """The ceilings in force for this process's OpenCV (as the environment gave them at import)."""
    return {name: int(os.environ[name]) for name in _CEILINGS}


def imdecode(data: bytes | memoryview, flags: int) -> MatLike | None:
    """``cv2.imdecode`` that answers None for anything OpenCV refuses, the ceiling included (OpenCV
    raises for that one instead of returning None)."""
    try:
        return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error:
        return None
