"""Simulated cameras: a factory registry generator, and fleets that speak the camera wire protocol.

Python API (see docs/device_sim.md)::

    from device_sim import Fleet, FleetOptions, read_registry, run_load

    async with Fleet(read_registry(path), "127.0.0.1", 1883) as fleet:  # connects every camera
        ...                                            # cameras watch their scenes and send alerts
        report = await run_load(fleet, rate=200, duration_s=10)        # or: a paced load run
"""

from device_sim.alerts import SentAlert
from device_sim.camera import Camera, CameraOptions, CameraState
from device_sim.fleet import AlertListener, Fleet, FleetCounters, FleetOptions
from device_sim.load import AlertRecord, LoadReport, run_load
from device_sim.registry import SimDevice, new_fleet, read_registry
from device_sim.scene import SceneOptions

__all__ = [
    "AlertListener",
    "AlertRecord",
    "Camera",
    "CameraOptions",
    "CameraState",
    "Fleet",
    "FleetCounters",
    "FleetOptions",
    "LoadReport",
    "SceneOptions",
    "SentAlert",
    "SimDevice",
    "new_fleet",
    "read_registry",
    "run_load",
]
