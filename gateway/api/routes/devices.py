"""Binding and the owner's devices."""

from gateway.api import schemas as s
from gateway.api.routing import Call, Reply
from gateway.api.state import api, services
from gateway.domain.binding import BindOutcome
from gateway.services.devices import Device


def device_out(device: Device) -> s.DeviceOut:
    """The API view of a device."""
    return s.DeviceOut.model_validate(device, from_attributes=True)


@api.route(
    "POST",
    "/v1/devices",
    summary="Bind a camera by serial number and label verification code",
    tag="devices",
    body=s.BindIn,
    response=s.BindOut,
    status=201,
    other_statuses=(200,),
)
async def bind_device(call: Call) -> Reply:
    form = call.body(s.BindIn)
    outcome, device = await services(call).devices.bind(
        call.account_id, form.serial, form.code, name=form.name, address=call.address
    )
    body = s.BindOut(outcome=outcome.value, device=device_out(device))
    return Reply(body, 201 if outcome is BindOutcome.BOUND else 200)


@api.route("GET", "/v1/devices", summary="List the account's devices", tag="devices", response=s.DeviceList)
async def list_devices(call: Call) -> s.DeviceList:
    return s.DeviceList(items=[device_out(d) for d in await services(call).devices.list(call.account_id)])


@api.route("GET", "/v1/devices/{device_id}", summary="Read one device", tag="devices", response=s.DeviceOut)
async def read_device(call: Call) -> s.DeviceOut:
    return device_out(await services(call).devices.get(call.account_id, call.path("device_id")))


@api.route(
    "PATCH",
    "/v1/devices/{device_id}",
    summary="Rename a device",
    tag="devices",
    body=s.DevicePatch,
    response=s.DeviceOut,
)
async def rename_device(call: Call) -> s.DeviceOut:
    name = call.body(s.DevicePatch).name
    return device_out(await services(call).devices.rename(call.account_id, call.path("device_id"), name))


@api.route("DELETE", "/v1/devices/{device_id}", summary="Unbind a device", tag="devices", status=204)
async def unbind_device(call: Call) -> None:
    await services(call).devices.unbind(call.account_id, call.path("device_id"), address=call.address)
