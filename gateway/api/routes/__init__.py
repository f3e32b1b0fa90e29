"""Route modules, one per resource; importing them registers their operations."""

from gateway.api.routes import accounts, alerts, audit, clips, devices, events, health, plans, push

__all__ = ["accounts", "alerts", "audit", "clips", "devices", "events", "health", "plans", "push"]
