"""Route modules, one per resource; importing them registers their operations."""

from gateway.api.routes import accounts, audit, devices, health

__all__ = ["accounts", "audit", "devices", "health"]
