"""Motion detection on the simulator's own frames: fires on a moving shape, never on a static noisy
scene; the snapshot it leads to is a real 720p JPEG of camera-like size."""

import random

import cv2
import numpy as np
import pytest

from device_sim.imaging import MOTION_SIZE, bank, jpeg_pool, motion_frame, snapshot
from device_sim.motion import MotionDetector
from device_sim.scene import Mover, Scene, SceneOptions, SceneState, staged
from device_sim.watcher import Watcher


def _person(vx: float) -> Mover:
    return Mover("person", born=0.0, x0=0.2, vx=vx, ground=0.9, height=0.5, aspect=0.35, colour=(30, 30, 30))


def _frames(mover: Mover | None, count: int, *, fps: float = 4.0) -> list[SceneState]:
    movers = () if mover is None else (mover,)
    return [SceneState(i / fps, movers) for i in range(count)]


def test_a_moving_person_is_detected_in_every_frame_after_the_first() -> None:
    shared, rng, detector = bank(), random.Random(1), MotionDetector()
    results = [
        detector.update(motion_frame(shared.backdrops[0], state, shared.small_noise, rng))
        for state in _frames(_person(vx=0.15), 8)
    ]
    assert results[0] is None  # nothing to compare with yet
    assert all(r is not None for r in results[1:])
    # The box follows the person, who walks right.
    boxes = [r.box for r in results[1:] if r is not None]
    assert boxes[-1][0] > boxes[0][0]
    assert SceneState(1.0, (_person(0.15),)).kind_in(boxes[2], *MOTION_SIZE) == "person"


@pytest.mark.parametrize("backdrop", range(8))
def test_a_static_noisy_scene_never_triggers(backdrop: int) -> None:
    shared, rng, detector = bank(), random.Random(backdrop), MotionDetector()
    # Someone standing still is part of the scene too.
    still = _person(vx=0.0)
    for state in _frames(still, 200):
        frame = motion_frame(shared.backdrops[backdrop], state, shared.small_noise, rng)
        assert detector.update(frame) is None


def test_something_small_moving_is_below_the_minimum_area() -> None:
    shared, rng, detector = bank(), random.Random(3), MotionDetector()
    speck = Mover("animal", 0.0, 0.5, 0.01, ground=0.9, height=0.02, aspect=1.0, colour=(0, 0, 0))
    hits = [
        detector.update(motion_frame(shared.backdrops[1], s, shared.small_noise, rng))
        for s in _frames(speck, 40)
    ]
    assert hits == [None] * 40


@pytest.mark.parametrize(("person_share", "kind"), [(1.0, "person"), (0.0, "motion")])
def test_a_watcher_reports_movers_crossing_and_names_people(person_share: float, kind: str) -> None:
    watcher = Watcher("CGTESTSERIAL01", SceneOptions(mean_gap_s=2.0, person_share=person_share), seed=7)
    sightings = [s for i in range(240) if (s := watcher.look(i / 4)) is not None]
    assert len(sightings) > 10, "a minute of a busy scene shows motion"
    assert {s.kind for s in sightings} == {kind}


def test_movers_enter_and_leave() -> None:
    scene = Scene(SceneOptions(mean_gap_s=3.0, crossing_s=(2.0, 3.0)), random.Random(5))
    counts = [len(scene.advance(i / 4).movers) for i in range(400)]
    assert max(counts) >= 1
    assert 0 in counts[40:]  # they leave again
    assert max(counts) <= 6


def test_snapshots_are_720p_jpegs_of_camera_size() -> None:
    shared = bank()
    rng = random.Random(2)
    jpeg = snapshot(
        shared.backdrops[2], staged("person", rng), shared.noise, rng, "2026-06-01 12:00:00 UTC  CGX"
    )
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (720, 1280, 3)
    pool = jpeg_pool(8)
    assert len(set(pool)) == 8
    assert all(60_000 <= len(j) <= 120_000 for j in [jpeg, *pool]), [len(j) for j in pool]
