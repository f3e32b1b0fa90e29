"""Pictures for the simulated cameras: a shared bank of backdrops, the tiny grey frames motion
detection runs on, real 1280x720 JPEG snapshots (about 75-100 KB, like a camera's), and the bursts of
smaller JPEG frames an event clip is made of.

A thousand cameras cannot each hold a 2.7 MB 720p backdrop, so they share a small bank (each camera
picks one by its serial) and differ by what crosses their view, their sensor noise and the caption.
Sensor noise comes from one pre-drawn tile read at a random offset: fresh noise at 720p would cost more
than the JPEG encoding itself. Everything here is CPU work: callers run it off the event loop.
"""

import random
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

import numpy as np

from device_sim.scene import Image, Scene, SceneOptions, SceneState, draw
from gateway.adapters.opencv import cv2  # the gateway's decoding ceilings hold in the same process

CLIP_SIZE = (640, 360)

SNAPSHOT_SIZE = (1280, 720)
MOTION_SIZE = (96, 54)  # 16:9 like the snapshot; a person is ~25 px tall here
JPEG_QUALITY = 80  # with the backdrops below: ~75-100 KB per snapshot
BANK_SIZE = 8
_MARGIN = 32  # how far a noise tile reaches past the frame, for random offsets
_NOISE_SIGMA = 2.0  # 720p sensor noise; the tiny frames get more (they stand for a whole block)
_SMALL_NOISE_SIGMA = 3.0


@dataclass(frozen=True, eq=False)
class Backdrop:
    """The still part of a view, at snapshot size (BGR) and at motion-detection size (grey)."""

    full: Image
    small: Image


@dataclass(frozen=True, eq=False)
class Noise:
    """Zero-mean sensor noise split into what to add and what to subtract (saturating uint8 ops)."""

    plus: Image
    minus: Image

    def apply(self, image: Image, rng: random.Random) -> None:
        """Adds noise to ``image`` in place, from a random window of the tile."""
        h, w = image.shape[:2]
        oy, ox = rng.randrange(_MARGIN), rng.randrange(_MARGIN)
        cv2.add(image, self.plus[oy : oy + h, ox : ox + w], dst=image)
        cv2.subtract(image, self.minus[oy : oy + h, ox : ox + w], dst=image)


@dataclass(frozen=True, eq=False)
class Bank:
    """Backdrops and noise shared by every camera of a process."""

    backdrops: tuple[Backdrop, ...]
    noise: Noise
    small_noise: Noise

    def backdrop_for(self, serial: str) -> Backdrop:
        """The backdrop a camera always shows (stable across runs)."""
        return self.backdrops[zlib.crc32(serial.encode()) % len(self.backdrops)]


@cache
def bank(count: int = BANK_SIZE, seed: int = 0) -> Bank:
    """The process-wide bank (built once: ~0.3 s, ~30 MB)."""
    rng = np.random.default_rng(seed)
    backdrops = tuple(_backdrop(np.random.default_rng(rng.integers(1 << 32))) for _ in range(count))
    w, h = SNAPSHOT_SIZE
    sw, sh = MOTION_SIZE
    return Bank(
        backdrops,
        _noise(rng, (h + _MARGIN, w + _MARGIN, 3), _NOISE_SIGMA),
        _noise(rng, (sh + _MARGIN, sw + _MARGIN), _SMALL_NOISE_SIGMA),
    )


def motion_frame(backdrop: Backdrop, state: SceneState, noise: Noise, rng: random.Random) -> Image:
    """A tiny grey frame for motion detection: backdrop, movers and sensor noise."""
    frame = backdrop.small.copy()
    draw(frame, state)
    noise.apply(frame, rng)
    return frame


def snapshot(backdrop: Backdrop, state: SceneState, noise: Noise, rng: random.Random, caption: str) -> bytes:
    """A 1280x720 JPEG of ``state`` with a camera-style caption (time and serial) burnt in."""
    frame = backdrop.full.copy()
    draw(frame, state)
    noise.apply(frame, rng)
    for colour, thickness in (((0, 0, 0), 4), ((255, 255, 255), 2)):  # outlined: readable on any backdrop
        cv2.putText(frame, caption, (24, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.0, colour, thickness, cv2.LINE_AA)
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return data.tobytes()


def picture(serial: str, state: SceneState, at: datetime) -> bytes:
    """The snapshot camera ``serial`` takes of ``state`` at ``at``, on its own backdrop."""
    shared = bank()
    # A random source of its own: pictures are drawn in worker threads, concurrently with scenes.
    rng = random.Random(hash((serial, state.t, at)))
    return snapshot(shared.backdrop_for(serial), state, shared.noise, rng, caption(serial, at))


def clip_frames(
    serial: str, state: SceneState, at: datetime, count: int, fps: float, size: tuple[int, int] = CLIP_SIZE
) -> list[bytes]:
    """The burst of ``count`` JPEG frames camera ``serial`` records from ``state`` on, ``fps`` a second:
    its movers carry on across the view, and each frame's caption has its own time."""
    shared = bank()
    rng = random.Random(hash((serial, state.t, at, count)))
    backdrop = _scaled(shared.backdrop_for(serial), size)
    scale = size[0] / SNAPSHOT_SIZE[0]
    frames = []
    for i in range(count):
        frame = backdrop.copy()
        draw(frame, SceneState(state.t + i / fps, state.movers))
        shared.noise.apply(frame, rng)
        text = caption(serial, at + timedelta(seconds=i / fps))
        for colour, thickness in (((0, 0, 0), 2), ((255, 255, 255), 1)):
            origin = (int(24 * scale), int(44 * scale))
            cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        frames.append(data.tobytes())
    return frames


@cache
def _scaled(backdrop: Backdrop, size: tuple[int, int]) -> Image:
    """A backdrop at clip size (a few per process: one per backdrop and size)."""
    return cv2.resize(backdrop.full, size, interpolation=cv2.INTER_AREA)


def caption(serial: str, at: datetime) -> str:
    """The text a camera burns into its pictures."""
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC  {serial}"


def jpeg_pool(count: int, *, seed: int = 0) -> list[bytes]:
    """``count`` distinct 720p snapshots with movers in view, for load mode (~5 ms each to make)."""
    shared = bank()
    rng = random.Random(seed)
    pool: list[bytes] = []
    for i in range(count):
        # Movers enter at t = 0.0-0.2 just outside the frame; 1.5-3 s later they are well in view.
        scene = Scene(SceneOptions(mean_gap_s=0.001), rng, start=0.0)
        for t in (0.0, 0.1, 0.2):
            scene.advance(t)
        state = scene.advance(rng.uniform(1.5, 3.0))
        backdrop = shared.backdrops[i % len(shared.backdrops)]
        at = datetime(2026, 1, 1, tzinfo=UTC).replace(second=i % 60, minute=(i // 60) % 60)
        pool.append(snapshot(backdrop, state, shared.noise, rng, caption(f"LOADPOOL{i:04d}", at)))
    return pool


def _backdrop(rng: np.random.Generator) -> Backdrop:
    """A room or yard: wall and floor, furniture-like blocks, floor lines, uneven light, texture."""
    w, h = SNAPSHOT_SIZE
    img = np.zeros((h, w, 3), np.float32)
    horizon = int(h * rng.uniform(0.5, 0.65))
    img[:horizon] = rng.uniform(90, 200, 3) * np.linspace(1.1, 0.85, horizon)[:, None, None]
    img[horizon:] = rng.uniform(50, 140, 3) * np.linspace(0.8, 1.1, h - horizon)[:, None, None]
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = int(rng.uniform(0, w * 0.9)), int(rng.uniform(h * 0.1, h * 0.8))
        x1, y1 = min(w, x0 + int(rng.uniform(60, 320))), min(h, y0 + int(rng.uniform(40, 260)))
        cv2.rectangle(img, (x0, y0), (x1, y1), rng.uniform(40, 200, 3).tolist(), -1)
        cv2.rectangle(img, (x0, y0), (x1, y1), rng.uniform(0, 80, 3).tolist(), 3)
    for _ in range(int(rng.integers(10, 25))):
        y = int(rng.uniform(horizon, h))
        cv2.line(img, (0, y), (w, y + int(rng.uniform(-40, 40))), rng.uniform(30, 120, 3).tolist(), 2)
    light = cv2.resize(
        rng.uniform(0.75, 1.2, (9, 16)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
    )
    img *= light[:, :, None]
    # Surface texture decides the JPEG size more than anything else: this amplitude gives ~75-100 KB.
    texture = cv2.resize(rng.normal(0, 1, (h // 4, w // 4)).astype(np.float32), (w, h))
    img += texture[:, :, None] * 3.0
    full = np.clip(img, 0, 255).astype(np.uint8)
    small = cv2.cvtColor(cv2.resize(full, MOTION_SIZE, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    return Backdrop(full, small)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> Noise:
    sample = rng.normal(0, sigma, shape)
    return Noise(np.clip(sample, 0, 255).astype(np.uint8), np.clip(-sample, 0, 255).astype(np.uint8))
