"""Typed application state and the operation registry shared by every route module."""

from aiohttp import web

from gateway import __version__
from gateway.api.routing import Api, Call
from gateway.bootstrap import Services

SERVICES = web.AppKey("services", Services)
api = Api(title="camgate", version=__version__)


def services(call: Call) -> Services:
    """The services of the app serving this call."""
    return call.request.app[SERVICES]
