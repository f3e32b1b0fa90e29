"""A fleet of simulated cameras in one process and one event loop.

Three kinds of task serve the whole fleet, however large: ``connect_concurrency`` connectors that take
cameras from a queue (so 1,000 cameras never open 1,000 connections in one burst, and a camera whose
connection dropped waits its back-off in that queue), one scene ticker, and paho's keep-alive task in
the hub. The ticker looks at one slice of the cameras per tick, so every camera's scene is checked
``fps`` times a second with the work spread evenly; the looking and the JPEG encoding (snapshots, and
the frames of the clip each alert is followed by) run in a small thread pool, never on the loop.
"""

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol

from device_sim.aio_paho import LinkError, PahoHub, raise_open_file_limit
from device_sim.alerts import SentAlert
from device_sim.camera import Camera, CameraOptions, CameraState, Tally
from device_sim.imaging import bank, clip_frames, picture
from device_sim.registry import SimDevice
from device_sim.scene import SceneOptions, SceneState, staged
from device_sim.watcher import Sighting, Watcher

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """Everything tunable about a fleet; the defaults suit 1,000 cameras on two cores."""

    camera: CameraOptions = field(default_factory=CameraOptions)
    scene: SceneOptions | None = field(default_factory=SceneOptions)  # None: no scenes (load mode)
    fps: float = 4.0  # motion checks per camera per second
    connect_concurrency: int = 32  # connections between TCP connect and CONNACK at once
    reconnect_s: tuple[float, float] = (1.0, 30.0)  # back-off, doubled per failure, with jitter
    render_limit: int = 8  # snapshots being drawn at once; more motion alerts are dropped (counted)
    imaging_threads: int = 2


@dataclass(frozen=True, slots=True)
class FleetCounters:
    """A snapshot of the fleet's counters (see ``Tally`` for each one's meaning)."""

    cameras: int
    online: int
    connects: int
    connect_failures: int
    refused: int
    connection_losses: int
    motion_events: int
    alerts_sent: int
    alerts_acked: int
    alerts_refused: int
    alerts_republished: int
    suppressed_by_config: int
    suppressed_by_cooldown: int
    dropped_outbox_full: int
    dropped_busy: int
    configs_received: int
    bad_configs: int
    clips_sent: int
    clip_parts_acked: int
    clips_dropped: int


class AlertListener(Protocol):
    """Told about every alert a fleet sends; called on the event loop, so it must not block."""

    def alert_sent(self, alert: SentAlert) -> None:
        """An alert was published (first publish; re-sends after a reconnect are not reported)."""

    def alert_acked(self, serial: str, event_id: str, at: float) -> None:
        """The broker acknowledged it (``at``: time.time())."""


class Fleet:
    """Simulated cameras on one broker: ``async with Fleet(devices, host, port) as fleet: ...``."""

    def __init__(
        self, devices: Sequence[SimDevice], host: str, port: int, options: FleetOptions | None = None
    ) -> None:
        self.options = options or FleetOptions()
        self.host = host
        self.port = port
        self.tally = Tally()
        self._hub = PahoHub(connect_threads=min(16, self.options.connect_concurrency))
        scene = self.options.scene
        self.cameras: dict[str, Camera] = {}
        for device in devices:
            watcher = None if scene is None else Watcher(device.serial, scene)
            self.cameras[device.serial] = Camera(device, self._hub, self, self.options.camera, watcher)
        self._listeners: list[AlertListener] = []
        self._queue: asyncio.Queue[Camera] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._renders: set[asyncio.Task[None]] = set()
        self._imaging: ThreadPoolExecutor | None = None
        self._stopping = False
        self._rng = random.Random()

    async def __aenter__(self) -> "Fleet":
        await self.start()
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def online(self) -> int:
        """Cameras connected right now."""
        return sum(1 for c in self.cameras.values() if c.state is CameraState.ONLINE)

    @property
    def counters(self) -> FleetCounters:
        """The counters now."""
        return FleetCounters(cameras=len(self.cameras), online=self.online, **asdict(self.tally))

    def camera(self, serial: str) -> Camera:
        """One camera by serial."""
        return self.cameras[serial]

    def add_listener(self, listener: AlertListener) -> None:
        """Reports every alert sent and acknowledged to ``listener`` from now on."""
        self._listeners.append(listener)

    def remove_listener(self, listener: AlertListener) -> None:
        """Stops reporting to ``listener``."""
        self._listeners.remove(listener)

    async def start(
        self, *, timeout_s: float | None = 60.0, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Connects every camera (bounded concurrency) and starts the scenes; waits up to ``timeout_s``
        for all to be online (None: don't wait). Cameras that are late keep trying in the background."""
        # Threads start on first use: a scene-less fleet that never renders never starts any.
        self._imaging = ThreadPoolExecutor(self.options.imaging_threads, thread_name_prefix="sim-imaging")
        raise_open_file_limit()
        await self._hub.start()
        if self.options.scene is not None:
            # The shared backdrops take ~0.5 s to draw: off the loop, once.
            await asyncio.get_running_loop().run_in_executor(self._imaging, bank)
            self._tasks.append(asyncio.create_task(self._tick(), name="sim-scenes"))
        for _ in range(self.options.connect_concurrency):
            self._tasks.append(asyncio.create_task(self._connector(), name="sim-connector"))
        for camera in self.cameras.values():
            self._queue.put_nowait(camera)
        if timeout_s is not None:
            await self.wait_online(len(self.cameras), timeout_s=timeout_s, progress=progress)

    async def wait_online(
        self, count: int, *, timeout_s: float = 60.0, progress: Callable[[int, int], None] | None = None
    ) -> bool:
        """Waits until ``count`` cameras are online; False on timeout. ``progress(online, total)`` is
        called every half second meanwhile."""
        deadline = time.monotonic() + timeout_s
        while (online := self.online) < count:
            if progress is not None:
                progress(online, len(self.cameras))
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05 if progress is None else 0.5)
        if progress is not None:
            progress(self.online, len(self.cameras))
        return True

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Graceful stop: offline status and clean DISCONNECT for every connected camera (no will).
        A fleet runs once: make a new one to start again."""
        if self._imaging is None or self._stopping:
            return  # never started, or already stopped
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for render in list(self._renders):
            with contextlib.suppress(Exception):
                await render
        winding = [c for c in self.cameras.values() if c.begin_stop()]
        # Each camera disconnects once its offline status is acknowledged; all sockets closed = done.
        if not await self._hub.wait_idle(timeout_s):
            for camera in winding:
                camera.disconnect_now()
        await self._hub.stop(timeout_s=1.0)
        if self._imaging is not None:
            self._imaging.shutdown(wait=True)

    def crash(self, serial: str) -> None:
        """Kills one camera's connection abruptly, as a power cut would: the broker sends its will."""
        self.cameras[serial].crash()

    def restart(self, serial: str) -> None:
        """Brings a crashed camera back; it re-publishes its unacknowledged alerts (same event ids)."""
        camera = self.cameras[serial]
        if camera.state is CameraState.CRASHED:
            camera.state = CameraState.IDLE
            self._queue.put_nowait(camera)

    async def trigger(self, serial: str, kind: str = "motion") -> SentAlert | None:
        """Sends an alert from one camera now, with a fresh snapshot (obeys its config, no cooldown),
        and then its clip; returns once both are published (or queued while offline)."""
        camera = self.cameras[serial]
        now = datetime.now(UTC)
        if not camera.may_alert(kind, now):
            return None
        # A mover of that kind posed mid-frame, so the snapshot shows what the alert says.
        scene = staged("person" if kind == "person" else "vehicle", self._rng)
        jpeg = await asyncio.get_running_loop().run_in_executor(self._imaging, picture, serial, scene, now)
        alert = camera.send_alert(kind, now, jpeg)
        if alert is not None:
            await self._send_clip(camera, scene, alert)
        return alert

    # --- CameraHost --------------------------------------------------------------------------

    def camera_down(self, camera: Camera) -> None:
        """Queues a reconnect after the camera's back-off."""
        low, high = self.options.reconnect_s
        delay = min(high, low * 2 ** min(camera.failures, 16)) * self._rng.uniform(0.5, 1.0)
        asyncio.get_running_loop().call_later(delay, self._requeue, camera)

    def alert_sent(self, alert: SentAlert) -> None:
        """Tells the listeners."""
        for listener in self._listeners:
            try:
                listener.alert_sent(alert)
            except Exception:  # a listener's bug must not stop the fleet
                log.exception("alert listener %r failed", listener)

    def alert_acked(self, serial: str, event_id: str, at: float) -> None:
        """Tells the listeners."""
        for listener in self._listeners:
            try:
                listener.alert_acked(serial, event_id, at)
            except Exception:
                log.exception("alert listener %r failed", listener)

    # --- tasks -------------------------------------------------------------------------------

    def _requeue(self, camera: Camera) -> None:
        if camera.state is CameraState.IDLE and not self._stopping:
            self._queue.put_nowait(camera)

    async def _connector(self) -> None:
        while True:
            camera = await self._queue.get()
            if camera.state is not CameraState.IDLE:
                continue
            try:
                await camera.connect(self.host, self.port)
            except LinkError as exc:
                log.debug("camera %s could not connect: %s", camera.serial, exc)
                if camera.state is CameraState.IDLE:
                    self.camera_down(camera)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        watching = [c for c in self.cameras.values() if c.watcher is not None]
        slices = max(1, min(10, len(watching) // 20))
        groups = [watching[i::slices] for i in range(slices)]
        period = 1.0 / (self.options.fps * slices)
        next_at = loop.time()
        for turn in itertools.count():
            group = [c for c in groups[turn % slices] if c.state is CameraState.ONLINE]
            if group:
                sightings = await loop.run_in_executor(self._imaging, _look, group, loop.time())
                for camera, sighting in sightings:
                    self._sighted(camera, sighting)
            next_at += period
            delay = next_at - loop.time()
            if delay < 0:  # fell behind: carry on from now rather than rush to catch up
                next_at, delay = loop.time(), 0.0
            await asyncio.sleep(delay)

    def _sighted(self, camera: Camera, sighting: Sighting) -> None:
        self.tally.motion_events += 1
        now, clock = datetime.now(UTC), time.monotonic()
        if not camera.may_alert(sighting.kind, now, clock):
            return
        if len(self._renders) >= self.options.render_limit:
            self.tally.dropped_busy += 1
            return
        camera.start_cooldown(clock)
        task = asyncio.create_task(self._render_and_send(camera, sighting, now))
        self._renders.add(task)
        task.add_done_callback(self._renders.discard)

    async def _render_and_send(self, camera: Camera, sighting: Sighting, at: datetime) -> None:
        loop = asyncio.get_running_loop()
        try:
            jpeg = await loop.run_in_executor(self._imaging, picture, camera.serial, sighting.state, at)
        except Exception:
            log.exception("camera %s could not draw its snapshot", camera.serial)
            return
        alert = camera.send_alert(sighting.kind, at, jpeg)
        if alert is not None:
            await self._send_clip(camera, sighting.state, alert)

    async def _send_clip(self, camera: Camera, state: SceneState, alert: SentAlert) -> None:
        """Records the event's clip (the scene from the alert on) and sends it under the alert's id."""
        opts = camera.options
        if opts.clip_frames <= 0:
            return
        loop = asyncio.get_running_loop()
        try:
            frames = await loop.run_in_executor(
                self._imaging,
                clip_frames,
                camera.serial,
                state,
                alert.captured_at,
                opts.clip_frames,
                opts.clip_fps,
                opts.clip_size,
            )
        except Exception:
            log.exception("camera %s could not draw its clip", camera.serial)
            self.tally.clips_dropped += 1
            return
        camera.send_clip(alert.event_id, alert.captured_at, frames, opts.clip_fps)


def _look(cameras: list[Camera], t: float) -> list[tuple[Camera, Sighting]]:
    """One slice of the fleet looks at its scenes (in the imaging thread)."""
    seen = []
    for camera in cameras:
        assert camera.watcher is not None
        sighting = camera.watcher.look(t)
        if sighting is not None:
            seen.append((camera, sighting))
    return seen
