"""Fixtures shared by every test; the server fixtures live in tests/support/."""

pytest_plugins = [
    "tests.support.postgres",
    "tests.support.s3server",
    "tests.support.mosquitto",
]
