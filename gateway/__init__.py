"""camgate: a cloud gateway for network cameras."""

__version__ = "0.1.0"
