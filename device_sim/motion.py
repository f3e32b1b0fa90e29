"""Motion detection as cheap cameras do it: difference of consecutive frames, a threshold, and a
minimum area so sensor noise and single flickering pixels never count as motion."""

from dataclasses import dataclass

from device_sim.scene import Box, Image
from gateway.adapters.opencv import cv2  # the gateway's decoding ceilings hold in the same process


@dataclass(frozen=True, slots=True)
class Motion:
    """Where something moved between two frames."""

    box: Box  # normalised union of the moving regions
    area: float  # fraction of the frame that changed


class MotionDetector:
    """Frame differencing on small grey frames; keeps only the previous frame."""

    def __init__(self, *, threshold: int = 25, min_area: float = 0.004) -> None:
        self._threshold = threshold
        self._min_area = min_area
        self._previous: Image | None = None

    def update(self, frame: Image) -> Motion | None:
        """Feeds the next frame; returns the motion since the previous one, if any."""
        # A light blur first: noise is per pixel, motion is a region, so blurring hurts noise most.
        current = cv2.GaussianBlur(frame, (3, 3), 0)
        previous, self._previous = self._previous, current
        if previous is None or previous.shape != current.shape:
            return None
        diff = cv2.absdiff(previous, current)
        _, mask = cv2.threshold(diff, self._threshold, 255, cv2.THRESH_BINARY)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        height, width = frame.shape[:2]
        min_pixels = self._min_area * width * height
        regions = [stats[i] for i in range(1, count) if stats[i][cv2.CC_STAT_AREA] >= min_pixels]
        if not regions:
            return None
        x0 = min(int(r[cv2.CC_STAT_LEFT]) for r in regions)
        y0 = min(int(r[cv2.CC_STAT_TOP]) for r in regions)
        x1 = max(int(r[cv2.CC_STAT_LEFT] + r[cv2.CC_STAT_WIDTH]) for r in regions)
        y1 = max(int(r[cv2.CC_STAT_TOP] + r[cv2.CC_STAT_HEIGHT]) for r in regions)
        area = sum(int(r[cv2.CC_STAT_AREA]) for r in regions) / (width * height)
        return Motion((x0 / width, y0 / height, x1 / width, y1 / height), area)
