"""A camera's eye: its scene, its motion detector, and the snapshot of what set it off."""

import random
import zlib
from dataclasses import dataclass

from device_sim.imaging import MOTION_SIZE, bank, motion_frame
from device_sim.motion import Motion, MotionDetector
from device_sim.scene import Scene, SceneOptions, SceneState


@dataclass(frozen=True, slots=True)
class Sighting:
    """Motion seen in one frame, with the scene as it was then (to draw the snapshot from)."""

    kind: str  # "person" or "motion"
    state: SceneState
    motion: Motion


class Watcher:
    """Looks at the scene a few times a second; CPU work, run off the event loop."""

    def __init__(self, serial: str, options: SceneOptions, *, seed: int | None = None) -> None:
        self._serial = serial
        # Seeded from the serial unless told otherwise: the same camera sees the same things each run.
        self._rng = random.Random(zlib.crc32(serial.encode()) if seed is None else seed)
        self._scene: Scene | None = None
        self._options = options
        self._detector = MotionDetector()
        self._was_empty = False

    def look(self, t: float) -> Sighting | None:
        """Advances the scene to ``t`` (seconds, any monotonic clock) and checks the frame for motion."""
        if self._scene is None:
            self._scene = Scene(self._options, self._rng, start=t)
        state = self._scene.advance(t)
        # An empty view after an empty view is backdrop and noise, which never reaches the detector's
        # minimum area (see the unit tests): skip drawing it. Most cameras are quiet most of the time.
        empty = not state.movers
        if empty and self._was_empty:
            return None
        self._was_empty = empty
        # The shared bank is built once per process, in a worker thread (Fleet.start), never on the loop.
        shared = bank()
        frame = motion_frame(shared.backdrop_for(self._serial), state, shared.small_noise, self._rng)
        motion = self._detector.update(frame)
        if motion is None:
            return None
        return Sighting(state.kind_in(motion.box, *MOTION_SIZE), state, motion)
