"""Adapters: the edges where camgate meets libraries and servers (SQL, SMTP, HTTP, MQTT)."""
