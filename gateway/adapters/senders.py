"""Message senders: SMTP for e-mail, an HTTP webhook for SMS, and a folder for development."""

import asyncio
import json
import secrets
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import aiosmtplib

from gateway.config import SmsWebhookSettings, SmtpSettings
from gateway.errors import CamgateError
from gateway.ports import Message


class DeliveryFailed(CamgateError):
    """The provider did not accept the message."""


class SmtpSender:
    """Sends e-mail through an SMTP relay."""

    def __init__(self, settings: SmtpSettings) -> None:
        self._s = settings

    async def send(self, message: Message) -> None:
        """Sends one e-mail."""
        mail = EmailMessage()
        mail["From"] = self._s.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail.set_content(message.body)
        try:
            await aiosmtplib.send(
                mail,
                hostname=self._s.host,
                port=self._s.port,
                username=self._s.username,
                password=self._s.password.get_secret_value() if self._s.password else None,
                start_tls=self._s.starttls,
                timeout=15,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"SMTP delivery to {self._s.host}:{self._s.port} failed: {exc}") from exc


class SmsWebhookSender:
    """POSTs ``{"to": ..., "text": ...}`` as JSON to an SMS provider's webhook with a bearer token."""

    def __init__(self, settings: SmsWebhookSettings, session: aiohttp.ClientSession) -> None:
        self._s = settings
        self._session = session

    async def send(self, message: Message) -> None:
        """Sends one SMS; any non-2xx answer is a failure."""
        headers = {"Content-Type": "application/json"}
        if self._s.token is not None:
            headers["Authorization"] = f"Bearer {self._s.token.get_secret_value()}"
        body = json.dumps({"to": message.to, "text": message.body})
        try:
            async with self._session.post(
                self._s.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=15)
            ) as resp:
                if resp.status // 100 != 2:
                    raise DeliveryFailed(f"SMS webhook answered HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryFailed(f"SMS webhook unreachable: {exc}") from exc


class MailboxSender:
    """Development only: writes each message as a file under ``mailbox/<recipient>/`` instead of
    sending it, so a person trying camgate locally can read their code without a mail server and
    without codes ever appearing in logs."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    async def send(self, message: Message) -> None:
        """Writes the message to the recipient's folder."""
        await asyncio.to_thread(self._write, message)

    def _write(self, message: Message) -> None:
        box = self._folder / message.to.replace("/", "_")
        box.mkdir(parents=True, exist_ok=True)
        name = f"{secrets.token_hex(4)}.txt"
        (box / name).write_text(f"To: {message.to}\nSubject: {message.subject}\n\n{message.body}\n")
