"""Alert opt-outs: the account's switch and kinds, per-device mute and snooze."""

from gateway.api import schemas as s
from gateway.api.routing import Call
from gateway.api.state import api, services


@api.route(
    "GET",
    "/v1/settings/alerts",
    summary="Read the account's alert settings",
    tag="alerts",
    response=s.AccountAlertsOut,
)
async def read_alert_settings(call: Call) -> s.AccountAlertsOut:
    got = await services(call).alert_settings.account(call.account_id)
    return s.AccountAlertsOut.model_validate(got, from_attributes=True)


@api.route(
    "PUT",
    "/v1/settings/alerts",
    summary="Change the account's alert settings (message alerts on/off, kinds)",
    tag="alerts",
    body=s.AccountAlertsIn,
    response=s.AccountAlertsOut,
)
async def change_alert_settings(call: Call) -> s.AccountAlertsOut:
    form = call.body(s.AccountAlertsIn)
    got = await services(call).alert_settings.set_account(
        call.account_id,
        message_alerts=form.message_alerts,
        event_kinds=form.event_kinds,
        address=call.address,
    )
    return s.AccountAlertsOut.model_validate(got, from_attributes=True)


@api.route(
    "GET",
    "/v1/devices/{device_id}/alerts",
    summary="Read a device's mute and snooze",
    tag="alerts",
    response=s.DeviceAlertsOut,
)
async def read_device_alerts(call: Call) -> s.DeviceAlertsOut:
    got = await services(call).alert_settings.device(call.account_id, call.path("device_id"))
    return s.DeviceAlertsOut.model_validate(got, from_attributes=True)


@api.route(
    "PUT",
    "/v1/devices/{device_id}/alerts",
    summary="Mute or snooze a device",
    tag="alerts",
    body=s.DeviceAlertsIn,
    response=s.DeviceAlertsOut,
)
async def change_device_alerts(call: Call) -> s.DeviceAlertsOut:
    form = call.body(s.DeviceAlertsIn)
    got = await services(call).alert_settings.set_device(
        call.account_id,
        call.path("device_id"),
        muted=form.muted,
        snooze_minutes=form.snooze_minutes,
        address=call.address,
    )
    return s.DeviceAlertsOut.model_validate(got, from_attributes=True)
