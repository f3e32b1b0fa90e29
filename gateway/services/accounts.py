"""Accounts: sign-up with a one-time code, log-in sessions with revocable tokens, the profile.

Registrations wait in ``signups`` until confirmed; the ``accounts`` table holds confirmed accounts only.
"""

import asyncio
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.adapters.db.tables import accounts, guardian_consents, sessions
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
from gateway.services import audit, signups, throttle
from gateway.services.signups import GuardianConsent as GuardianConsent  # re-exported: the public API
from gateway.services.signups import SignUp as SignUp
from gateway.services.throttle import Reservations, Window
from gateway.untrusted import printable

log = logging.getLogger(__name__)
TOKEN_PREFIX = "cg_"  # noqa: S105 - a public prefix that marks camgate tokens, not a secret
_TOKEN_FORM = re.compile(r"cg_[A-Za-z0-9_-]{43}")  # the prefix and token_urlsafe(32)


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


def _new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


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
        self._sends_ident = Window("code_send", *t.code_sends_per_identifier)
        self._sends_addr = Window("code_send_addr", *t.code_sends_per_address)
        self._sends_all = Window("code_send_all", *t.code_sends_overall)
        self._login_ident = Window("login_ident", *t.login_per_identifier)
        self._login_addr = Window("login_addr", *t.login_per_address)
        self._dummy_hash: str | None = None
        self._dummy_lock = asyncio.Lock()

    # --- sign-up -------------------------------------------------------------------------------

    async def register(self, form: SignUp, *, address: str) -> Identifier:
        """Records a pending registration and sends the one-time code for it.

        An identifier that already belongs to an active account gets a notice instead of a code, and
        the caller sees the same answer either way: sign-up is not an oracle for who has an account.
        The send limits are reserved before the password is hashed, so refused sign-ups cost no hash.
        """
        ident = _identifier(form.identifier)
        self._check_sign_up(form, ident)
        now = self._clock.now()
        sends = await self._reserve_sends(ident, address, now)
        try:
            password_hash = await self._hasher.hash(form.password)
        except Unavailable:  # the hashing queue is full: nothing was sent, the send is given back
            async with self._db.begin() as conn:
                await sends.refund(conn)
            raise
        async with self._db.begin() as conn:
            if await self._account_id(conn, ident) is not None:
                message = Message(
                    ident.channel,
                    ident.value,
                    "camgate: sign-up attempt",
                    "Someone tried to sign up to camgate with this address, which already has an account."
                    " If it was you, log in instead. If not, you can ignore this message.",
                )
            else:
                reg_id = str(uuid.uuid4())
                code = _new_code()
                await signups.open_registration(
                    conn,
                    reg_id,
                    form,
                    identifier=ident.value,
                    password_hash=password_hash,
                    code_hash=keyed_digest(self._pepper, "verify", reg_id, code),
                    now=now,
                    ttl_s=self._settings.throttle.code_ttl_s,
                )
                message = self._code_message(ident, code)
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
            if await self._account_id(conn, ident) is not None:
                raise Conflict("identifier_taken", f"{ident.value} already has an account")
            await signups.close_all(conn, ident.value, now)  # sign-ups in progress can no longer confirm
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

    async def _account_id(self, conn: AsyncConnection, ident: Identifier) -> str | None:
        found = await conn.execute(select(accounts.c.id).where(accounts.c[_column(ident)] == ident.value))
        return found.scalar_one_or_none()

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

    async def _reserve_sends(self, ident: Identifier, address: str, now: datetime) -> Reservations:
        # Reserved (and committed) before any hash or delivery: parallel requests cannot all pass.
        async with self._db.begin() as conn:
            held = await throttle.reserve(
                conn,
                now,
                (self._sends_ident, ident.value),
                (self._sends_addr, address),
                (self._sends_all, "*"),
            )
        if held.refused is not None:
            raise RateLimited(
                "too_many_codes",
                "too many codes requested; try again later",
                retry_after=held.refused.retry_after or 60,
            )
        return held

    def _code_message(self, ident: Identifier, code: str) -> Message:
        ttl = self._settings.throttle.code_ttl_s
        return Message(
            ident.channel,
            ident.value,
            "Your camgate code",
            f"Your camgate verification code is {code}. It expires in {ttl // 60} minutes.",
        )

    async def resend_code(self, raw_identifier: str, *, address: str) -> None:
        """Sends a fresh code for the identifier's newest open registration; silently nothing for any
        other identifier (the send is counted all the same, so the limits tell nothing either)."""
        ident = _identifier(raw_identifier)
        now = self._clock.now()
        await self._reserve_sends(ident, address, now)
        message = None
        async with self._db.begin() as conn:
            reg = await signups.latest_open(conn, ident.value)
            if reg is not None:
                code = _new_code()
                digest = keyed_digest(self._pepper, "verify", reg.id, code)
                await signups.set_code(conn, reg.id, digest, now, self._settings.throttle.code_ttl_s)
                message = self._code_message(ident, code)
        if message is not None:
            await self._deliver(message)

    async def confirm(self, raw_identifier: str, code: str, password: str, *, address: str) -> Account:
        """Creates the account of the registration whose code this is, when the password is the one
        chosen at that sign-up.

        Every refusal is one answer (unknown identifier, active account, void code, wrong code or
        password) after the same work: no hash is computed unless the code is right.
        """
        ident = _identifier(raw_identifier)
        now = self._clock.now()
        invalid = InvalidRequest(
            "invalid_code",
            "the code is wrong, expired or already used, or the password is not the one given with"
            " the sign-up it was sent for",
        )
        async with self._db.begin() as conn:
            reg = await signups.latest_open(conn, ident.value)
            matches = False
            if reg is not None and await signups.take_attempt(
                conn, reg.id, self._settings.throttle.code_attempts, now
            ):
                expected = keyed_digest(self._pepper, "verify", reg.id, code.strip())
                matches = secrets.compare_digest(expected, reg.code_hash)
        if reg is None or not matches:  # outside the block: the attempt count above must commit
            raise invalid
        # The code proves the mailbox; the password proves the confirmer chose these credentials, so
        # a code sent for someone else's sign-up with this address activates nothing.
        if not await self._hasher.verify(reg.password_hash, password):
            raise invalid
        async with self._db.begin() as conn:
            activated = await signups.close(conn, reg.id, now) and await self._account_id(conn, ident) is None
            if activated:
                await self._activate(conn, ident, reg, now, address)
        if not activated:  # a parallel confirmation won, or an operator created the account meanwhile
            raise invalid
        return await self.get(reg.id)

    async def _activate(
        self, conn: AsyncConnection, ident: Identifier, reg: Row[Any], now: datetime, address: str
    ) -> None:
        await signups.close_all(conn, ident.value, now)
        await conn.execute(
            insert(accounts).values(
                id=reg.id,
                **{_column(ident): ident.value},
                password_hash=reg.password_hash,
                display_name=reg.display_name,
                birth_date=reg.birth_date,
                region=reg.region,
                time_zone=reg.time_zone,
                status="active",
                created_at=reg.created_at,
                confirmed_at=now,
            )
        )
        if reg.guardian_name is not None:
            await conn.execute(
                insert(guardian_consents).values(
                    account_id=reg.id,
                    guardian_name=reg.guardian_name,
                    guardian_contact=reg.guardian_contact,
                    recorded_at=reg.created_at,  # given with the sign-up
                )
            )
        await audit.record(
            conn,
            account_id=reg.id,
            actor=f"account:{reg.id}",
            action="account.confirmed",
            at=now,
            address=address,
        )

    # --- sessions ------------------------------------------------------------------------------

    async def login(self, raw_identifier: str, password: str, *, address: str, user_agent: str) -> NewSession:
        """Checks the password and opens a session; throttled per identifier and per address.

        The attempt is reserved in both windows before the hash, so parallel guesses get at most the
        limit; a successful log-in gives its reservation back and forgets the identifier's failures.
        """
        ident = _identifier(raw_identifier)
        now = self._clock.now()
        async with self._db.begin() as conn:
            held = await throttle.reserve(
                conn, now, (self._login_ident, ident.value), (self._login_addr, address)
            )
            row = reg = None
            if held.refused is None:
                row = (
                    await conn.execute(
                        select(accounts.c.id, accounts.c.password_hash).where(
                            accounts.c[_column(ident)] == ident.value
                        )
                    )
                ).first()
                reg = None if row is not None else await signups.latest_open(conn, ident.value)
        if held.refused is not None:
            raise RateLimited(
                "too_many_login_attempts",
                "too many failed log-ins; try again later",
                retry_after=held.refused.retry_after or self._login_ident.seconds,
            )
        try:
            # An unknown identifier still costs one hash, so timing does not tell who has an account.
            stored = row.password_hash if row else reg.password_hash if reg else await self._dummy()
            ok = await self._hasher.verify(stored, password)
        except Unavailable:  # the hashing queue is full: no guess was checked
            async with self._db.begin() as conn:
                await held.refund(conn)
            raise
        if not ok:
            if row is not None:
                async with self._db.begin() as conn:
                    await audit.record(
                        conn,
                        account_id=row.id,
                        actor="anonymous",
                        action="login.failed",
                        at=now,
                        address=address,
                    )
            raise Unauthenticated("invalid_credentials", "wrong identifier or password")
        if row is None:  # the password of a registration not yet confirmed
            async with self._db.begin() as conn:
                await held.refund(conn)
            raise Forbidden("account_not_confirmed", "confirm the account with the code sent to you first")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        session = NewSession(
            token, str(uuid.uuid4()), now + timedelta(days=self._settings.security.token_ttl_days)
        )
        async with self._db.begin() as conn:
            await held.refund(conn)
            await self._login_ident.clear(conn, ident.value)
            await conn.execute(
                insert(sessions).values(
                    id=session.session_id,
                    account_id=row.id,
                    token_hash=keyed_digest(self._pepper, "token", token),
                    user_agent=printable(user_agent, 200),  # a header: any bytes at all
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
        async with self._dummy_lock:  # one hash, not one per request of the first burst
            if self._dummy_hash is None:
                self._dummy_hash = await self._hasher.hash(secrets.token_hex(16))
        return self._dummy_hash

    async def authenticate(self, token: str) -> Principal:
        """The principal of a bearer token, or Unauthenticated."""
        if not _TOKEN_FORM.fullmatch(token):  # also keeps undecodable header bytes away from the hash
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
