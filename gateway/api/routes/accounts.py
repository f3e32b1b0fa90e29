"""Sign-up, confirmation, sessions, profile, regions."""

from gateway.api import schemas as s
from gateway.api.routing import Call
from gateway.api.state import api, services
from gateway.services.accounts import Account, GuardianConsent, SignUp


def account_out(acct: Account) -> s.AccountOut:
    """The API view of an account."""
    return s.AccountOut.model_validate(acct, from_attributes=True)


@api.route(
    "GET",
    "/v1/regions",
    summary="List the regions an account can live in",
    tag="accounts",
    response=s.RegionList,
    auth=False,
)
async def list_regions(call: Call) -> s.RegionList:
    regions = services(call).settings.regions
    return s.RegionList(items=[s.RegionOut(id=k, display_name=v.display_name) for k, v in regions.items()])


@api.route(
    "POST",
    "/v1/accounts",
    summary="Sign up; a one-time code is sent to the identifier",
    tag="accounts",
    body=s.SignUpIn,
    response=s.SignUpAccepted,
    status=202,
    auth=False,
)
async def sign_up(call: Call) -> s.SignUpAccepted:
    form = call.body(s.SignUpIn)
    guardian = form.guardian_consent
    ident = await services(call).accounts.register(
        SignUp(
            identifier=form.identifier,
            password=form.password,
            birth_date=form.birth_date,
            region=form.region,
            display_name=form.display_name,
            time_zone=form.time_zone,
            guardian=GuardianConsent(guardian.guardian_name, guardian.guardian_contact) if guardian else None,
        ),
        address=call.address,
    )
    return s.SignUpAccepted(
        identifier=ident.value,
        channel=ident.channel.value,
        detail="if this identifier can sign up, a code is on its way; confirm it with the same password at"
        " POST /v1/accounts/confirm",
    )


@api.route(
    "POST",
    "/v1/accounts/confirm",
    summary="Confirm a sign-up with its one-time code and the password chosen for it",
    tag="accounts",
    body=s.ConfirmIn,
    response=s.AccountOut,
    auth=False,
)
async def confirm_account(call: Call) -> s.AccountOut:
    form = call.body(s.ConfirmIn)
    return account_out(
        await services(call).accounts.confirm(form.identifier, form.code, form.password, address=call.address)
    )


@api.route(
    "POST",
    "/v1/accounts/resend-code",
    summary="Send a fresh one-time code",
    tag="accounts",
    body=s.IdentifierIn,
    status=202,
    auth=False,
)
async def resend_code(call: Call) -> None:
    await services(call).accounts.resend_code(call.body(s.IdentifierIn).identifier, address=call.address)
    return None


@api.route(
    "POST",
    "/v1/sessions",
    summary="Log in: exchange identifier and password for a bearer token",
    tag="sessions",
    body=s.LoginIn,
    response=s.SessionCreated,
    status=201,
    auth=False,
)
async def log_in(call: Call) -> s.SessionCreated:
    form = call.body(s.LoginIn)
    session = await services(call).accounts.login(
        form.identifier,
        form.password,
        address=call.address,
        user_agent=call.request.headers.get("User-Agent", ""),
    )
    return s.SessionCreated(token=session.token, session_id=session.session_id, expires_at=session.expires_at)


@api.route(
    "GET", "/v1/sessions", summary="List the account's open sessions", tag="sessions", response=s.SessionList
)
async def list_sessions(call: Call) -> s.SessionList:
    items = await services(call).accounts.list_sessions(call.account_id)
    current = call.principal.session_id
    return s.SessionList(
        items=[
            s.SessionOut(
                id=i.id,
                user_agent=i.user_agent,
                created_at=i.created_at,
                expires_at=i.expires_at,
                current=i.id == current,
            )
            for i in items
        ]
    )


@api.route(
    "DELETE", "/v1/sessions/current", summary="Log out (revoke this token)", tag="sessions", status=204
)
async def log_out(call: Call) -> None:
    await services(call).accounts.revoke_session(
        call.account_id, call.principal.session_id, address=call.address
    )


@api.route(
    "DELETE",
    "/v1/sessions/{session_id}",
    summary="Revoke one of the account's sessions",
    tag="sessions",
    status=204,
)
async def revoke_session(call: Call) -> None:
    await services(call).accounts.revoke_session(
        call.account_id, call.path("session_id"), address=call.address
    )


@api.route("GET", "/v1/me", summary="Read the profile", tag="accounts", response=s.AccountOut)
async def read_profile(call: Call) -> s.AccountOut:
    return account_out(await services(call).accounts.get(call.account_id))


@api.route(
    "PATCH",
    "/v1/me",
    summary="Correct the profile",
    tag="accounts",
    body=s.ProfilePatch,
    response=s.AccountOut,
)
async def correct_profile(call: Call) -> s.AccountOut:
    patch = call.body(s.ProfilePatch)
    acct = await services(call).accounts.correct(
        call.account_id,
        display_name=patch.display_name,
        time_zone=patch.time_zone,
        locale=patch.locale,
        address=call.address,
    )
    return account_out(acct)
