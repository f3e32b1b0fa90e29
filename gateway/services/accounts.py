"""Accounts: sign-up with a one-time code, log-in sessions with revocable tokens, the profile."""

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.adapters.db.tables import accounts, guardian_consents, sessions, verification_codes
from gateway.adapters.senders import DeliveryFailed
from gateway.config import Settings
from gateway.domain.accounts import (
    AgeDecision,
    Channel,
    Identifier,
    age_decision,
    parse_identifier,
    password_problem,
)
from gateway.domain.credentials import keyed_digest
from gateway.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from gateway.ports import Clock, Message, MessageSender, PasswordHasher
from gateway.services import audit
from gateway.services.throttle import Window

log = logging.getLogger(__name__)
TOKEN_PREFIX = "cg_"  # noqa: S105 - a public prefix that marks camgate tokens, not a secret


@dataclass(frozen=True)
class GuardianConsent:
    guardian_name: str
    guardian_contact: str


@dataclass(frozen=True)
class SignUp:
    identifier: str
    password: str
    birth_date: date
    region: str
    display_name: str = ""
    time_zone: str = "UTC"
    guardian: GuardianConsent | None = None


@dataclass(frozen=True)
class Account:
    id: str
    email: str | None
    phone: str | None
    display_name: str
    birth_date: date
    region: str
    time_zone: str
    locale: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class Principal:
    """Who is calling: the account and the session their token belongs to."""

    account_id: str
    session_id: str


@dataclass(frozen=True)
class NewSession:
    token: str
    session_id: str
    expires_at: datetime


@dataclass(frozen=True)
class SessionInfo:
    id: str
    user_agent: str
    created_at: datetime
    expires_at: datetime


def _identifier(raw: str) -> Identifier:
    try:
        return parse_identifier(raw)
    except ValueError as exc:
        raise InvalidRequest("invalid_identifier", str(exc)) from None


def _column(ident: Identifier) -> str:
    return "email" if ident.channel is Channel.EMAIL else "phone"


def _account(row: dict[str, object]) -> Account:
    return Account(**{name: row[name] for name in Account.__dataclass_fields__})  # type: ignore[arg-type]


class AccountService:
    """Sign-up, confirmation, log-in and profile."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        pepper: bytes,
        hasher: PasswordHasher,
        senders: dict[Channel, MessageSender],
        clock: Clock,
    ) -> None:
        self._db = engine
        self._settings = settings
        self._pepper = pepper
        self._hasher = hasher
        self._senders = senders
        self._clock = clock
        t = settings.throttle
        self._code_sends = Window("code_send", *t.code_sends_per_identifier)
        self._login_ident = Window("login_ident", *t.login_per_identifier)
        self._login_addr = Window("login_addr", *t.login_per_address)
        self._dummy_hash: str | None = None

    # --- sign-up -------------------------------------------------------------------------------

    async def register(self, form: SignUp) -> Identifier:
        """Creates (or refreshes) a pending account and sends it a one-time code.

        An identifier that already belongs to an active account gets a notice instead of a code, and
        the caller sees the same answer either way: sign-up is not an oracle for who has an account.
        """
        ident = _identifier(form.identifier)
        self._check_sign_up(form, ident)
        password_hash = await self._hasher.hash(form.password)
        now = self._clock.now()
        column = accounts.c[_column(ident)]
        async with self._db.begin() as conn:
            await self._throttle_sends(conn, ident, now)
            existing = (await conn.execute(select(accounts).where(column == ident.value))).mappings().first()
            if existing is not None and existing["status"] == "active":
                message = Message(
                    ident.channel,
                    ident.value,
                    "camgate: sign-up attempt",
                    "Someone tried to sign up to camgate with this address, which already has an account."
                    " If it was you, log in instead. If not, you can ignore this message.",
                )
            else:
                values = {
                    "password_hash": password_hash,
                    "display_name": form.display_name,
                    "birth_date": form.birth_date,
                    "region": form.region,
                    "time_zone": form.time_zone,
                    "status": "pending",
                    "created_at": now,
                }
                if existing is None:
                    account_id = str(uuid.uuid4())
                    await conn.execute(
                        insert(accounts).values(id=account_id, **{column.name: ident.value}, **values)
                    )
                else:
                    account_id = existing["id"]
                    await conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))
                if form.guardian is not None:
                    await conn.execute(
                        insert(guardian_consents).values(
                            account_id=account_id,
                            guardian_name=form.guardian.guardian_name,
                            guardian_contact=form.guardian.guardian_contact,
                            recorded_at=now,
                        )
                    )
                message = await self._new_code(conn, account_id, ident, now)
        await self._deliver(message)
        return ident

    async def create_confirmed(self, form: SignUp, *, actor: str) -> Account:
        """Creates an active account without a one-time code: for operators (test and demo accounts,
        staff); the same rules as sign-up apply, and the creation is audited with who did it."""
        ident = _identifier(form.identifier)
        self._check_sign_up(form, ident)
        password_hash = await self._hasher.hash(form.password)
        now = self._clock.now()
        account_id = str(uuid.uuid4())
        async with self._db.begin() as conn:
            taken = await conn.execute(select(accounts.c.id).where(accounts.c[_column(ident)] == ident.value))
            if taken.first() is not None:
                raise Conflict("identifier_taken", f"{ident.value} already has an account")
            await conn.execute(
                insert(accounts).values(
                    id=account_id,
                    **{_column(ident): ident.value},
                    password_hash=password_hash,
                    display_name=form.display_name,
                    birth_date=form.birth_date,
                    region=form.region,
                    time_zone=form.time_zone,
                    status="active",
                    created_at=now,
                    confirmed_at=now,
                )
            )
            await audit.record(conn, account_id=account_id, actor=actor, action="account.created", at=now)
        return await self.get(account_id)

    async def _deliver(self, message: Message) -> None:
        try:
            await self._senders[message.channel].send(message)
        except DeliveryFailed as exc:
            log.warning("code delivery failed: %s", exc)  # the exception names the provider, not the code
            raise Unavailable(
                "code_delivery_failed",
                "the code could not be sent; ask for a new one in a minute",
                retry_after=60,
            ) from None

    def _check_sign_up(self, form: SignUp, ident: Identifier) -> None:
        if form.region not in self._settings.regions:
            known = ", ".join(sorted(self._settings.regions))
            raise InvalidRequest("unknown_region", f"region must be one of: {known}")
        problem = password_problem(form.password, ident.value)
        if problem:
            raise InvalidRequest("weak_password", f"password {problem}")
        try:
            ZoneInfo(form.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidRequest("invalid_time_zone", f"unknown time zone {form.time_zone!r}") from None
        decision = age_decision(
            form.birth_date, self._clock.now().date(), has_guardian_consent=form.guardian is not None
        )
        if decision is AgeDecision.TOO_YOUNG:
            raise Forbidden("age_below_minimum", "camgate accounts are for people aged 14 and over")
        if decision is AgeDecision.NEEDS_GUARDIAN:
            raise InvalidRequest(
                "guardian_consent_required", "people aged 14 to 17 need a guardian's consent to sign up"
            )

    async def _throttle_sends(self, conn: AsyncConnection, ident: Identifier, now: datetime) -> None:
        wait = await self._code_sends.retry_after(conn, ident.value, now)
        if wait is not None:
            raise RateLimited("too_many_codes", "too many codes sent to this address", retry_after=wait)
        await self._code_sends.hit(conn, ident.value, now)

    async def _new_code(
        self, conn: AsyncConnection, account_id: str, ident: Identifier, now: datetime
    ) -> Message:
        code = f"{secrets.randbelow(10**6):06d}"
        ttl = self._settings.throttle.code_ttl_s
        await conn.execute(
            update(verification_codes)
            .where(verification_codes.c.account_id == account_id, verification_codes.c.used_at.is_(None))
            .values(used_at=now)  # a new code voids the older ones
        )
        await conn.execute(
            insert(verification_codes).values(
                account_id=account_id,
                code_hash=keyed_digest(self._pepper, "verify", account_id, code),
                expires_at=now + timedelta(seconds=ttl),
                created_at=now,
            )
        )
        return Message(
            ident.channel,
            ident.value,
            "Your camgate code",
            f"Your camgate verification code is {code}. It expires in {ttl // 60} minutes.",
        )

    async def resend_code(self, raw_identifier: str) -> None:
        """Sends a fresh code to a pending account; silently nothing for any other identifier."""
        ident = _identifier(raw_identifier)
        now = self._clock.now()
        message = None
        async with self._db.begin() as conn:
            await self._throttle_sends(conn, ident, now)
            row = (
                await conn.execute(
                    select(accounts.c.id, accounts.c.status).where(accounts.c[_column(ident)] == ident.value)
                )
            ).first()
            if row is not None and row.status == "pending":
                message = await self._new_code(conn, row.id, ident, now)
        if message is not None:
            await self._deliver(message)

    async def confirm(self, raw_identifier: str, code: str, *, address: str) -> Account:
        """Activates a pending account with its one-time code."""
        ident = _identifier(raw_identifier)
        now = self._clock.now()
        invalid = InvalidRequest("invalid_code", "the code is wrong, expired or already used")
        async with self._db.begin() as conn:
            acct = (
                (await conn.execute(select(accounts).where(accounts.c[_column(ident)] == ident.value)))
                .mappings()
                .first()
            )
            if acct is None:
                raise invalid
            if acct["status"] == "active":
                return _account(dict(acct))
            vc = (
                await conn.execute(
                    select(verification_codes)
                    .where(
                        verification_codes.c.account_id == acct["id"],
                        verification_codes.c.used_at.is_(None),
                        verification_codes.c.expires_at > now,
                    )
                    .order_by(verification_codes.c.id.desc())
                    .limit(1)
                )
            ).first()
            if vc is None or vc.attempts >= self._settings.throttle.code_attempts:
                raise invalid
            expected = keyed_digest(self._pepper, "verify", acct["id"], code.strip())
            if not secrets.compare_digest(expected, vc.code_hash):
                await conn.execute(
                    update(verification_codes)
                    .where(verification_codes.c.id == vc.id)
                    .values(attempts=verification_codes.c.attempts + 1)
                )
            else:
                await conn.execute(
                    update(verification_codes).where(verification_codes.c.id == vc.id).values(used_at=now)
                )
                await conn.execute(
                    update(accounts)
                    .where(accounts.c.id == acct["id"])
                    .values(status="active", confirmed_at=now)
                )
                await audit.record(
                    conn,
                    account_id=acct["id"],
                    actor=f"account:{acct['id']}",
                    action="account.confirmed",
                    at=now,
                    address=address,
                )
                return _account({**acct, "status": "active"})
        raise invalid  # outside the block: the attempt count above must commit

    # --- sessions ------------------------------------------------------------------------------

    async def login(self, raw_identifier: str, password: str, *, address: str, user_agent: str) -> NewSession:
        """Checks the password and opens a session; throttled per identifier and per address."""
        ident = _identifier(raw_identifier)
        now = self._clock.now()
        async with self._db.begin() as conn:
            for window, key in ((self._login_ident, ident.value), (self._login_addr, address)):
                wait = await window.retry_after(conn, key, now)
                if wait is not None:
                    raise RateLimited(
                        "too_many_login_attempts",
                        "too many failed log-ins; try again later",
                        retry_after=wait,
                    )
            row = (
                await conn.execute(
                    select(accounts.c.id, accounts.c.password_hash, accounts.c.status).where(
                        accounts.c[_column(ident)] == ident.value
                    )
                )
            ).first()
        # An unknown identifier still costs one hash, so timing does not tell who has an account.
        ok = await self._hasher.verify(row.password_hash if row else await self._dummy(), password)
        async with self._db.begin() as conn:
            if row is None or not ok:
                await self._login_ident.hit(conn, ident.value, now)
                await self._login_addr.hit(conn, address, now)
                if row is not None:
                    await audit.record(
                        conn,
                        account_id=row.id,
                        actor="anonymous",
                        action="login.failed",
                        at=now,
                        address=address,
                    )
                fail = True
            else:
                fail = False
        if fail:
            raise Unauthenticated("invalid_credentials", "wrong identifier or password")
        assert row is not None
        if row.status != "active":
            raise Forbidden("account_not_confirmed", "confirm the account with the code sent to you first")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        session = NewSession(
            token, str(uuid.uuid4()), now + timedelta(days=self._settings.security.token_ttl_days)
        )
        async with self._db.begin() as conn:
            await self._login_ident.clear(conn, ident.value)
            await conn.execute(
                insert(sessions).values(
                    id=session.session_id,
                    account_id=row.id,
                    token_hash=keyed_digest(self._pepper, "token", token),
                    user_agent=user_agent[:200],
                    created_at=now,
                    expires_at=session.expires_at,
                )
            )
            await conn.execute(update(accounts).where(accounts.c.id == row.id).values(last_login_at=now))
            await audit.record(
                conn,
                account_id=row.id,
                actor=f"account:{row.id}",
                action="login",
                target_type="session",
                target_id=session.session_id,
                at=now,
                address=address,
            )
        return session

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self._hasher.hash(secrets.token_hex(16))
        return self._dummy_hash

    async def authenticate(self, token: str) -> Principal:
        """The principal of a bearer token, or Unauthenticated."""
        if not token.startswith(TOKEN_PREFIX):
            raise Unauthenticated("invalid_token", "the token is not a camgate token")
        async with self._db.connect() as conn:
            row = (
                await conn.execute(
                    select(sessions.c.id, sessions.c.account_id).where(
                        sessions.c.token_hash == keyed_digest(self._pepper, "token", token),
                        sessions.c.revoked_at.is_(None),
                        sessions.c.expires_at > self._clock.now(),
                    )
                )
            ).first()
        if row is None:
            raise Unauthenticated("invalid_token", "the token is unknown, expired or revoked")
        return Principal(account_id=row.account_id, session_id=row.id)

    async def list_sessions(self, account_id: str) -> list[SessionInfo]:
        """The account's open sessions, newest first."""
        async with self._db.connect() as conn:
            rows = await conn.execute(
                select(sessions)
                .where(
                    sessions.c.account_id == account_id,
                    sessions.c.revoked_at.is_(None),
                    sessions.c.expires_at > self._clock.now(),
                )
                .order_by(sessions.c.created_at.desc())
            )
            return [SessionInfo(r.id, r.user_agent, r.created_at, r.expires_at) for r in rows]

    async def revoke_session(self, account_id: str, session_id: str, *, address: str) -> None:
        """Revokes one of the account's sessions (log-out when it is the caller's own)."""
        now = self._clock.now()
        async with self._db.begin() as conn:
            result = await conn.execute(
                update(sessions)
                .where(
                    sessions.c.id == session_id,
                    sessions.c.account_id == account_id,
                    sessions.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
            if result.rowcount == 0:
                raise NotFound("session_not_found", "no such session")
            await audit.record(
                conn,
                account_id=account_id,
                actor=f"account:{account_id}",
                action="session.revoked",
                target_type="session",
                target_id=session_id,
                at=now,
                address=address,
            )

    # --- profile -------------------------------------------------------------------------------

    async def get(self, account_id: str) -> Account:
        """The account's profile."""
        async with self._db.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).mappings().first()
        if row is None:
            raise NotFound("account_not_found", "no such account")
        return _account(dict(row))

    async def correct(
        self,
        account_id: str,
        *,
        display_name: str | None,
        time_zone: str | None,
        locale: str | None,
        address: str,
    ) -> Account:
        """Corrects profile fields; each change is audited with its old and new value."""
        changes: dict[str, str] = {}
        if display_name is not None:
            changes["display_name"] = display_name
        if time_zone is not None:
            try:
                ZoneInfo(time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise InvalidRequest("invalid_time_zone", f"unknown time zone {time_zone!r}") from None
            changes["time_zone"] = time_zone
        if locale is not None:
            changes["locale"] = locale
        now = self._clock.now()
        before = await self.get(account_id)
        async with self._db.begin() as conn:
            if changes:
                await conn.execute(update(accounts).where(accounts.c.id == account_id).values(**changes))
                await audit.record(
                    conn,
                    account_id=account_id,
                    actor=f"account:{account_id}",
                    action="profile.corrected",
                    target_type="account",
                    target_id=account_id,
                    detail={k: {"from": getattr(before, k), "to": v} for k, v in changes.items()},
                    at=now,
                    address=address,
                )
        return await self.get(account_id)
