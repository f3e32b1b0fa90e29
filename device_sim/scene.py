"""What a simulated camera looks at: a still backdrop crossed now and then by people, vehicles and
animals, drawn at any resolution from one description (tiny for motion detection, 720p for snapshots).

Geometry is normalised (x across the width, y down the height, 0..1) so the same ``SceneState`` renders
identically at 96x54 and 1280x720. Movers are values with a start time and a velocity: the state at any
instant is computed, never accumulated, so a snapshot drawn later in a worker thread shows exactly what
the detector saw.
"""

import math
import random
from dataclasses import dataclass, replace
from typing import Literal

from gateway.adapters.opencv import (
    MatLike,
    cv2,  # the gateway's decoding ceilings hold in the same process
)

Image = MatLike
MoverKind = Literal["person", "vehicle", "animal"]
Box = tuple[float, float, float, float]  # x0, y0, x1, y1, normalised


@dataclass(frozen=True, slots=True)
class Mover:
    """Something crossing the view from one side to the other at a constant speed."""

    kind: MoverKind
    born: float  # scene clock (seconds) when it was at x0
    x0: float  # horizontal centre at ``born``
    vx: float  # frame widths per second
    ground: float  # y of its lowest point
    height: float  # fraction of the frame height
    aspect: float  # width / height, in pixels
    colour: tuple[int, int, int]  # BGR

    def x(self, t: float) -> float:
        """Horizontal centre at scene time ``t``."""
        return self.x0 + self.vx * (t - self.born)

    def box(self, t: float, width: int, height: int) -> Box:
        """Bounding box at ``t``, normalised, for a frame of ``width`` x ``height``."""
        h = self.height
        w = h * self.aspect * height / width
        cx = self.x(t)
        return (cx - w / 2, self.ground - h, cx + w / 2, self.ground)


@dataclass(frozen=True, slots=True)
class SceneState:
    """The movers in view at one instant of the scene clock."""

    t: float
    movers: tuple[Mover, ...]

    def kind_in(self, box: Box, width: int, height: int, *, window_s: float = 0.5) -> str:
        """The alert kind for motion in ``box``: ``person`` when a person overlaps it, else ``motion``.

        Frame differencing also sees where a mover *was*, so each mover counts with the ground it
        covered during the last ``window_s``.
        """
        for m in self.movers:
            if m.kind != "person":
                continue
            now, before = m.box(self.t, width, height), m.box(self.t - window_s, width, height)
            swept = (min(now[0], before[0]), now[1], max(now[2], before[2]), now[3])
            if _overlaps(swept, box):
                return "person"
        return "motion"


@dataclass(frozen=True, slots=True)
class SceneOptions:
    """How busy a scene is."""

    mean_gap_s: float = 60.0  # mean time between movers entering (Poisson arrivals)
    person_share: float = 0.5  # the rest split between vehicles and animals
    crossing_s: tuple[float, float] = (4.0, 9.0)  # how long a crossing takes


class Scene:
    """One camera's view: movers enter from either side at random and leave on the other."""

    def __init__(self, options: SceneOptions, rng: random.Random, *, start: float = 0.0) -> None:
        self._options = options
        self._rng = rng
        self._t = start
        self._movers: tuple[Mover, ...] = ()

    def advance(self, t: float) -> SceneState:
        """Moves the scene clock to ``t``: movers that left are dropped, new ones may enter."""
        dt = max(0.0, t - self._t)
        self._t = t
        kept = tuple(m for m in self._movers if -0.3 < m.x(t) < 1.3)
        # Poisson arrivals: the chance of one in dt is 1 - exp(-dt / mean gap).
        if self._rng.random() < 1.0 - math.exp(-dt / self._options.mean_gap_s):
            kept = (*kept, self._new_mover(t))
        self._movers = kept
        return SceneState(t, kept)

    def _new_mover(self, t: float) -> Mover:
        rng = self._rng
        roll = rng.random()
        share = self._options.person_share
        kind: MoverKind = (
            "person" if roll < share else "vehicle" if roll < share + (1 - share) / 2 else "animal"
        )
        height, aspect = {
            "person": (rng.uniform(0.35, 0.6), rng.uniform(0.3, 0.42)),
            "vehicle": (rng.uniform(0.2, 0.35), rng.uniform(1.8, 2.6)),
            "animal": (rng.uniform(0.1, 0.18), rng.uniform(1.2, 1.8)),
        }[kind]
        direction = rng.choice((-1.0, 1.0))
        # Enter just outside the frame so the first detection is the mover stepping in.
        span = 1.0 + 2 * 0.2
        vx = direction * span / rng.uniform(*self._options.crossing_s)
        x0 = -0.2 if direction > 0 else 1.2
        # Dark or bright, never mid-grey: most of them stand out from the backdrop, as most things do.
        level = rng.choice((rng.randint(15, 70), rng.randint(185, 245)))
        colour = tuple(max(0, min(255, level + rng.randint(-25, 25))) for _ in range(3))
        ground = rng.uniform(0.75, 0.98)
        return Mover(kind, t, x0, vx, ground, height, aspect, (colour[0], colour[1], colour[2]))


def staged(kind: MoverKind, rng: random.Random) -> SceneState:
    """A scene with one mover of ``kind`` in the middle of the view (for alerts sent on demand)."""
    mover = Scene(SceneOptions(person_share=1.0 if kind == "person" else 0.0), rng)._new_mover(0.0)
    return SceneState(0.0, (replace(mover, x0=rng.uniform(0.35, 0.65), kind=kind),))


def draw(image: Image, state: SceneState) -> None:
    """Draws the movers of ``state`` onto ``image`` (BGR or grey), in place."""
    height, width = image.shape[:2]
    grey = image.ndim == 2
    for m in sorted(state.movers, key=lambda m: m.ground):  # nearer movers (lower in view) drawn last
        x0, y0, x1, y1 = m.box(state.t, width, height)
        px0, py0, px1, py1 = int(x0 * width), int(y0 * height), int(x1 * width), int(y1 * height)
        colour: tuple[int, int, int] | int = _luma(m.colour) if grey else m.colour
        if m.kind == "person":
            head = max(1, (px1 - px0) // 3)
            cx = (px0 + px1) // 2
            cv2.circle(image, (cx, py0 + head), head, colour, -1)
            cv2.rectangle(image, (px0, py0 + 2 * head), (px1, py1 - (py1 - py0) // 3), colour, -1)
            leg = max(1, (px1 - px0) // 3)
            cv2.rectangle(image, (px0, py1 - (py1 - py0) // 3), (px0 + leg, py1), colour, -1)
            cv2.rectangle(image, (px1 - leg, py1 - (py1 - py0) // 3), (px1, py1), colour, -1)
        elif m.kind == "vehicle":
            wheel = max(1, (py1 - py0) // 5)
            cv2.rectangle(image, (px0, py0 + (py1 - py0) // 3), (px1, py1 - wheel), colour, -1)
            cv2.rectangle(
                image, (px0 + (px1 - px0) // 4, py0), (px1 - (px1 - px0) // 4, py1 - wheel), colour, -1
            )
            for wx in (px0 + (px1 - px0) // 5, px1 - (px1 - px0) // 5):
                cv2.circle(image, (wx, py1 - wheel), wheel, 0 if grey else (20, 20, 20), -1)
        else:
            centre = ((px0 + px1) // 2, (py0 + py1) // 2)
            cv2.ellipse(
                image, centre, (max(1, (px1 - px0) // 2), max(1, (py1 - py0) // 2)), 0, 0, 360, colour, -1
            )


def _luma(colour: tuple[int, int, int]) -> int:
    b, g, r = colour
    return int(0.114 * b + 0.587 * g + 0.299 * r)


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
