"""Mosquitto's password and ACL files, rendered from the device registry, and the reload signal.

The broker reads two files named in ``deploy/mosquitto/mosquitto.conf``:

- ``password_file``: ``username:$7$...`` per account. A camera logs in with its serial. Each gateway
  instance has an account of its own: ``use_username_as_clientid`` makes the username the client id, so
  two instances sharing one account would keep kicking each other off.
- ``acl_file``: a ``user`` block per gateway account, then ``pattern`` lines (``%u`` = the username)
  that keep every camera inside ``cam/<serial>/``. It depends on the gateway accounts only, so importing
  devices changes the password file alone.

The broker's policy plugin (deploy/mosquitto/plugin) tells gateways from cameras by name: a gateway
account is ``camgate-<suffix>`` (``camgate-gateway-1``, …), and no camera may be named so.

Mosquitto 2.0.11 drops a password line it cannot decode with nothing but a log line (a salt other than
12 bytes, url-safe base64, ...), and a newline inside a value would smuggle in a line of its own, so
every account is checked before anything reaches the disk.

Both files are replaced atomically (temp file, fsync, rename) with mode 0640: the broker reads them
after dropping root and again on every SIGHUP, so its group must be able to read them. In production
the directory is setgid to that group; a process running as root passes ``group`` instead.

Errors: ``BrokerAuthError`` is the root; ``InvalidBrokerAccount`` (nothing was written) and
``BrokerReloadFailed`` (the files are in place, the broker was not told).
"""

import base64
import binascii
import contextlib
import grp
import itertools
import os
import re
import signal
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from gateway.domain.credentials import hash_broker_secret

# Letters, digits, '-' and '_': no ':' (the password file's separator), no '/', '+', '#' (they would
# change what a %u pattern matches), no whitespace (line injection).
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_HASH = re.compile(r"\$7\$([1-9][0-9]{0,8})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})")
# Must agree with is_gateway() in deploy/mosquitto/plugin/camgate_policy.c.
GATEWAY_USERNAME = re.compile(r"camgate-[A-Za-z0-9_-]+")
_SALT_BYTES = 12  # the only salt length mosquitto 2.0 accepts
_DIGEST_BYTES = 64  # SHA-512
_FILE_MODE = 0o640

# One level under clip/ (cam/<serial>/clip/<clip_id>): deeper topics are nothing the gateway reads.
CAMERA_WRITE_PATTERNS = ("cam/%u/alert", "cam/%u/status", "cam/%u/clip/+")
CAMERA_READ_PATTERNS = ("cam/%u/config", "cam/%u/cmd/#")
GATEWAY_READ_TOPICS = ("cam/+/alert", "cam/+/status", "cam/+/clip/+")
GATEWAY_WRITE_TOPICS = ("cam/+/config", "cam/+/cmd/#")


class BrokerAuthError(Exception):
    """Root of this module's errors."""


class InvalidBrokerAccount(BrokerAuthError):
    """An account cannot be written to the broker's files; nothing was replaced."""


class BrokerReloadFailed(BrokerAuthError):
    """The broker could not be signalled to re-read its files."""


class BrokerAccount(NamedTuple):
    """A login on the broker: a camera (username = serial) or a gateway instance."""

    username: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Where the broker's ``password_file`` and ``acl_file`` live, and the group it reads them as."""

    password_file: Path
    acl_file: Path
    group: str | None = None  # None: the files keep the group they get from their directory


def hash_gateway_password(password: str) -> str:
    """Mosquitto ``$7$`` hash of a gateway instance's broker password (the cameras' format)."""
    return hash_broker_secret(password)


def password_file_lines(
    devices: Iterable[tuple[str, str]], gateways: Sequence[BrokerAccount]
) -> Iterator[str]:
    """The ``password_file`` lines, gateways first; raises InvalidBrokerAccount on a bad or repeated name."""
    yield "# Written by camgate from its device registry; edits are overwritten.\n"
    seen: set[str] = set()
    for gateway, (username, password_hash) in itertools.chain(
        ((True, account) for account in gateways), ((False, account) for account in devices)
    ):
        _check_account(username, password_hash)
        if username in seen:
            raise InvalidBrokerAccount(
                f"{username!r} appears twice (cameras and gateways share one namespace)"
            )
        # The policy plugin grants shared subscriptions and retained publishes by this name alone.
        if gateway != is_gateway_username(username):
            kind = "a gateway account must be" if gateway else "a camera must not be"
            raise InvalidBrokerAccount(f"{username!r}: {kind} named camgate-<suffix>")
        seen.add(username)
        yield f"{username}:{password_hash}\n"


def is_gateway_username(username: str) -> bool:
    """True for the names the broker's policy plugin treats as gateway accounts."""
    return GATEWAY_USERNAME.fullmatch(username) is not None


def acl_file_lines(gateways: Sequence[BrokerAccount]) -> Iterator[str]:
    """The ``acl_file`` lines: what each gateway account may do, then the per-camera patterns."""
    yield "# Written by camgate; edits are overwritten. Design: docs/broker.md.\n"
    for username, _ in gateways:
        _check_username(username)
        yield f"\nuser {username}\n"
        yield from (f"topic read {topic}\n" for topic in GATEWAY_READ_TOPICS)
        yield from (f"topic write {topic}\n" for topic in GATEWAY_WRITE_TOPICS)
    # Patterns apply to gateway accounts too; the cam/<gateway name>/ they gain is no camera's subtree,
    # since the password file refuses a camera named like a gateway.
    yield "\n# Every camera: uplink topics write-only, downlink topics read-only, under its own serial.\n"
    yield from (f"pattern write {topic}\n" for topic in CAMERA_WRITE_PATTERNS)
    yield from (f"pattern read {topic}\n" for topic in CAMERA_READ_PATTERNS)


def write_broker_files(
    files: BrokerFiles, devices: Iterable[tuple[str, str]], gateways: Sequence[BrokerAccount]
) -> int:
    """Replaces the ACL, then the password file, and returns the number of cameras written.

    Every account is checked first: on InvalidBrokerAccount neither file has changed. The ACL goes first
    so that a new gateway account's grants are in place before its login works.
    """
    gid = _group_id(files.group)
    written = 0

    def counted() -> Iterator[tuple[str, str]]:
        nonlocal written
        for device in devices:
            written += 1
            yield device

    # Render (and so validate) the password file before touching either file.
    password_temp = _write_temp(files.password_file, password_file_lines(counted(), gateways), gid)
    try:
        _commit(_write_temp(files.acl_file, acl_file_lines(gateways), gid), files.acl_file)
        _commit(password_temp, files.password_file)
    except BaseException:
        _discard(password_temp)
        raise
    return written


def read_pid_file(path: Path) -> int:
    """The broker's pid from its ``pid_file``."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerReloadFailed(f"cannot read the broker's pid file {path}: {exc}") from exc
    if not text.isascii() or not text.isdigit():
        raise BrokerReloadFailed(f"{path} does not hold a pid: {text[:40]!r}")
    return int(text)


def reload_broker(*, pid: int | None = None, pid_file: Path | None = None) -> int:
    """Sends SIGHUP so the broker re-reads its config, password and ACL files; returns the pid signalled.

    The broker reloads within about 100 ms (it holds signals while it waits for network events) and
    disconnects clients whose account is gone or whose secret changed. To find them it re-checks every
    connected client's password, about 0.7 ms each in its single thread: reload once per import batch,
    not once per device.
    """
    if pid_file is not None and pid is None:
        target = read_pid_file(pid_file)
    elif pid is not None and pid_file is None:
        target = pid
    else:
        raise TypeError("reload_broker takes exactly one of pid and pid_file")
    # 0 and negative pids signal process groups, 1 is init: never what a stale or garbled file meant.
    if target <= 1:
        raise BrokerReloadFailed(f"refusing to signal pid {target}")
    try:
        os.kill(target, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise BrokerReloadFailed(f"no process {target}: is the broker running (stale pid file?)") from exc
    except PermissionError as exc:
        raise BrokerReloadFailed(
            f"not allowed to signal process {target}: run as root or the broker's user, "
            "or let the camgate-broker-reload path unit reload it"
        ) from exc
    return target


def _check_username(username: str) -> None:
    if not _USERNAME.fullmatch(username):
        raise InvalidBrokerAccount(f"username {username[:70]!r}: 1-64 of A-Z a-z 0-9 - _ expected")


def _check_account(username: str, password_hash: str) -> None:
    _check_username(username)
    match = _HASH.fullmatch(password_hash)
    if match is None:
        raise InvalidBrokerAccount(f"{username}: not a mosquitto $7$ hash")
    salt, digest = _b64_length(match[2]), _b64_length(match[3])
    if salt != _SALT_BYTES or digest != _DIGEST_BYTES:
        raise InvalidBrokerAccount(
            f"{username}: $7$ hash with a {salt}-byte salt and {digest}-byte digest; "
            f"mosquitto 2.0 accepts only {_SALT_BYTES} and {_DIGEST_BYTES}"
        )


def _b64_length(text: str) -> int:
    try:
        return len(base64.b64decode(text, validate=True))
    except binascii.Error:
        return -1


def _group_id(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise BrokerAuthError(f"no group {group!r} on this host") from None


def _write_temp(path: Path, lines: Iterable[str], gid: int | None) -> str:
    """Streams lines into a synced temp file beside ``path``; returns its name."""
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii", newline="\n") as out:
            os.fchmod(out.fileno(), _FILE_MODE)
            if gid is not None:
                os.fchown(out.fileno(), -1, gid)
            out.writelines(lines)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        _discard(temp_name)
        raise
    return temp_name


def _commit(temp_name: str, path: Path) -> None:
    os.replace(temp_name, path)
    # The rename itself must survive a power cut, or the broker may come back with the old file.
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _discard(temp_name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp_name)
