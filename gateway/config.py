"""Settings: loaded once at start from a TOML file and ``CAMGATE_*`` environment variables.

Nested keys use ``__`` in the environment (``CAMGATE_HTTP__PORT=8080``). Unknown keys are rejected so a
typo fails the start instead of being silently ignored.
"""

import copy
import ipaddress
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.domain.plans import DEFAULT_CONFIG, Catalogue, CatalogueInvalid
from gateway.errors import ConfigError
from storage.settings import LocalStoreSettings, StorageSettings, StoreSettings


class Section(BaseModel):
    """Base of every settings section: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest accepted JSON request body.")
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Peers whose X-Forwarded-For is believed for throttling."
    )


class DatabaseSettings(Section):
    url: str = Field("sqlite+aiosqlite:///var/camgate.db", description="SQLAlchemy async URL.")
    pool_size: int = Field(10, ge=1)


class RegionSettings(Section):
    display_name: str
    store: StoreSettings | None = Field(
        None,
        description="Where this region's media lives. Unset: a local folder under data_dir/media/<region>.",
    )


# The broker's policy plugin lets only these names join shared subscriptions and publish retained
# messages (deploy/mosquitto/plugin/camgate_policy.c; gateway/adapters/broker_auth.py checks the same).
GATEWAY_USERNAME_PATTERN = r"^camgate-[A-Za-z0-9_-]+$"


class MqttSettings(Section):
    """The gateway's own connection to the broker (docs/broker.md)."""

    enabled: bool = Field(True, description="Consume camera messages (off: HTTP API only).")
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str = Field(
        "camgate-gateway-1",
        pattern=GATEWAY_USERNAME_PATTERN,
        max_length=64,
        description="One account per gateway instance, and its client id (the broker's use_username_as_clientid):"
        " stable, so the broker keeps this instance's queue across restarts. camgate-<suffix>:"
        " the broker's policy plugin knows gateways by that name.",
    )
    password: SecretStr | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    session_expiry_s: int = Field(
        7 * 86400, ge=0, description="How long the broker queues for us while we are away."
    )
    receive_maximum: int = Field(
        64, ge=1, le=65535, description="Unacknowledged messages in flight to us (MQTT 5)."
    )
    keepalive_s: int = Field(30, ge=5)
    shared_group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",  # one topic level: no '/', '+' or '#'
        description="Subscribe as $share/<group>/… so several gateways split the load (see docs).",
    )
    start_broker: bool = Field(
        False, description="Development: start a private Mosquitto (camgate demo does)."
    )


class GatewayAccount(Section):
    username: str = Field(pattern=GATEWAY_USERNAME_PATTERN, max_length=64)
    password_hash: str = Field(description="Mosquitto $7$ hash (camgate broker hash-password prints one).")


class BrokerSettings(Section):
    """Where camgate renders the broker's password and ACL files from the registry (docs/broker.md)."""

    password_file: Path | None = Field(None, description="Unset: camgate does not manage broker accounts.")
    acl_file: Path | None = None
    pid_file: Path | None = Field(
        None, description="The broker's pid file, to signal a reload after a change."
    )
    group: str | None = Field(
        None, description="Group the broker reads the files as (when camgate runs as root)."
    )
    gateways: list[GatewayAccount] = Field(
        default_factory=list, description="Every gateway instance's account."
    )

    @model_validator(mode="after")
    def _both_files(self) -> "BrokerSettings":
        if (self.password_file is None) != (self.acl_file is None):
            raise ValueError("set both broker.password_file and broker.acl_file, or neither")
        return self


class IngestSettings(Section):
    max_alert_bytes: int = Field(
        1024 * 1024, ge=1024, description="Larger alert messages are dead-lettered unread."
    )
    min_dimension: int = Field(64, ge=1)
    max_dimension: int = Field(4096, ge=64)
    thumbnail_width: int = Field(320, ge=32)
    image_workers: int = Field(2, ge=1, description="Threads decoding JPEGs (OpenCV releases the GIL).")
    concurrency: int = Field(64, ge=1, description="Alerts processed at once.")
    camera_burst: int = Field(
        20, ge=1, description="Alerts a camera may send at once before the rate applies."
    )
    camera_per_minute: float = Field(60.0, gt=0, description="Sustained alerts per minute per camera.")
    retry_max_s: float = Field(
        30.0, gt=0, description="Longest pause between retries of a transient failure."
    )
    attempts_on_error: int = Field(
        5, ge=1, description="Unexpected errors before a message is dead-lettered."
    )
    overflow_burst: int = Field(
        200, ge=0, description="Alerts past the rate kept without snapshot, at once (docs/protocol.md)."
    )
    overflow_per_minute: float = Field(
        600.0, gt=0, description="Alerts past the rate kept without snapshot, sustained per minute."
    )
    max_clock_skew_s: float = Field(
        86_400.0,
        gt=0,
        description="Capture times are clamped to [received - this, received] for retention.",
    )
    stuck_after_s: float = Field(
        300.0, gt=0, description="Readiness fails when the oldest unacknowledged message is older."
    )


class ClipSettings(Section):
    """Event clips (docs/clips.md): how parts are reassembled and encoded."""

    max_parts: int = Field(900, ge=1, description="Parts (frames or chunks) per clip.")
    max_clip_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest clip, summed over its parts, before encoding."
    )
    max_part_bytes: int = Field(
        1024 * 1024, ge=1024, description="Larger parts are dead-lettered unread (the broker's limit)."
    )
    max_frame_dimension: int = Field(
        1920, ge=64, le=4096, description="Frames larger than this are refused (within OpenCV's ceiling)."
    )
    upload_timeout_s: float = Field(
        600.0, gt=0, description="An incomplete clip older than this is abandoned and its parts removed."
    )
    video_workers: int = Field(1, ge=1, description="Threads encoding frame bursts (OpenCV, off the loop).")
    max_uploads_per_device: int = Field(
        4, ge=1, description="Clips one camera may have in progress; a new one beyond is dropped."
    )
    max_uploads_per_account: int = Field(
        16, ge=1, description="Clips one account's cameras may have in progress; a new one beyond is dropped."
    )
    max_staged_bytes_per_account: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="Bytes staged for one account's clips in progress; a clip that would pass it is dropped.",
    )
    max_assemblies: int = Field(
        2,
        ge=1,
        description="Clips assembled at once per gateway (each holds its parts and result in memory).",
    )

    @model_validator(mode="after")
    def _a_clip_fits_its_staging(self) -> "ClipSettings":
        if self.max_staged_bytes_per_account < self.max_clip_bytes:
            raise ValueError("clips.max_staged_bytes_per_account must be at least clips.max_clip_bytes")
        return self


class SweepSettings(Section):
    """The retention sweep (docs/retention.md)."""

    enabled: bool = Field(True, description="Run the sweep periodically inside the service.")
    interval_s: float = Field(300.0, gt=0, description="Pause between periodic sweeps.")
    batch_size: int = Field(1000, ge=1, le=10_000, description="Records claimed and deleted at a time.")
    lease_s: float = Field(
        300.0, gt=0, description="How long a claimed batch is reserved; a crashed sweeper's batch after."
    )
    orphan_grace_s: float = Field(
        3600.0,
        ge=0,
        description="Objects without a record are left alone this long: ingest writes objects before the"
        " record that names them.",
    )


class PushSettings(Section):
    workers: int = Field(16, ge=1, description="Deliveries in flight at once (and outbox rows claimed).")
    per_account_concurrency: int = Field(
        2, ge=1, description="Deliveries (and outbox rows) of one account in flight at once per instance."
    )
    poll_s: float = Field(1.0, gt=0, description="Outbox poll interval when idle.")
    max_attempts: int = Field(12, ge=1)
    backoff_base_s: float = Field(2.0, gt=0)
    backoff_max_s: float = Field(3600.0, gt=0)
    timeout_s: float = Field(
        10.0, gt=0, description="Total deadline of one delivery: look-up, connect, request and answer."
    )
    allow_private_addresses: bool = Field(
        False, description="Allow webhook URLs on loopback/private networks (development and tests only)."
    )
    nameservers: list[str] = Field(
        default_factory=list,
        description="DNS servers for webhook host names (address or address:port, [v6]:port); "
        "empty: the system's resolver.",
    )
    thumbnail_link_ttl_s: int = Field(900, ge=60, description="Lifetime of the thumbnail link in a push.")

    @model_validator(mode="after")
    def _nameservers_parse(self) -> "PushSettings":
        self.nameserver_addresses()
        return self

    def nameserver_addresses(self) -> list[tuple[str, int]]:
        """``nameservers`` as (address, port) pairs; ValueError names a bad entry."""
        return [self._address_and_port(entry) for entry in self.nameservers]

    @staticmethod
    def _address_and_port(entry: str) -> tuple[str, int]:
        host, port = entry, "53"
        if entry.startswith("["):  # [2001:db8::53]:5353
            host, _, rest = entry[1:].partition("]")
            port = rest.removeprefix(":") or port
        elif entry.count(":") == 1:  # 192.0.2.53:5353; more colons: a bare IPv6 address
            host, port = entry.split(":")
        try:
            address, number = str(ipaddress.ip_address(host)), int(port)
        except ValueError:
            raise ValueError(f"not an IP address with an optional port: {entry!r}") from None
        if not 0 < number < 65536:
            raise ValueError(f"port out of range: {entry!r}")
        return address, number


class SmtpSettings(Section):
    host: str
    port: int = 587
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = True
    sender: str = "camgate <no-reply@localhost>"


class SmsWebhookSettings(Section):
    url: str
    token: SecretStr | None = None


class NotifySettings(Section):
    """Where one-time codes go. Left empty, messages land in ``mailbox_dir`` (development only)."""

    smtp: SmtpSettings | None = None
    sms_webhook: SmsWebhookSettings | None = None
    mailbox_dir: Path = Path("var/mailbox")


class SecuritySettings(Section):
    secret_key: SecretStr | None = Field(
        None,
        description="Pepper for code hashes; at least 32 characters. Unset: read/created in secret_key_file.",
    )
    secret_key_file: Path = Path("var/secret_key")
    token_ttl_days: int = Field(30, ge=1)
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_kib: int = Field(64 * 1024, ge=8 * 1024)
    argon2_parallelism: int = Field(1, ge=1)
    hash_workers: int = Field(2, ge=1, description="Threads for password hashing, off the event loop.")
    hash_queue: int = Field(
        32, ge=0, description="Hashes that may wait for a thread; past that, requests get 503 busy."
    )


class ThrottleSettings(Section):
    """Attempt limits: (attempts, window in seconds)."""

    login_per_identifier: tuple[int, int] = (5, 900)
    login_per_address: tuple[int, int] = (50, 900)
    bind_per_serial: tuple[int, int] = (5, 3600)
    bind_per_account: tuple[int, int] = (20, 3600)
    code_sends_per_identifier: tuple[int, int] = (5, 3600)
    code_sends_per_address: tuple[int, int] = (20, 3600)
    code_sends_overall: tuple[int, int] = (1000, 3600)
    code_attempts: int = Field(5, ge=1, description="Wrong confirmations before a code is void.")
    code_ttl_s: int = Field(900, ge=60)


class Settings(BaseSettings):
    """The whole configuration tree."""

    model_config = SettingsConfigDict(
        env_prefix="CAMGATE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    environment: Literal["development", "production", "test"] = "development"
    log_level: str = "INFO"
    data_dir: Path = Path("var")
    http: HttpSettings = HttpSettings()
    database: DatabaseSettings = DatabaseSettings()
    regions: dict[str, RegionSettings] = Field(
        default_factory=lambda: {
            "sg": RegionSettings(display_name="Singapore"),
            "eu": RegionSettings(display_name="European Union"),
            "us": RegionSettings(display_name="United States"),
            "vn": RegionSettings(display_name="Vietnam"),
        }
    )
    notify: NotifySettings = NotifySettings()
    mqtt: MqttSettings = MqttSettings()
    broker: BrokerSettings = BrokerSettings()
    ingest: IngestSettings = IngestSettings()
    push: PushSettings = PushSettings()
    clips: ClipSettings = ClipSettings()
    sweep: SweepSettings = SweepSettings()
    plans: dict[str, Any] = Field(
        default_factory=lambda: copy.deepcopy(dict(DEFAULT_CONFIG)),
        description="The plan catalogue: {currency, plans: [...]} (docs/plans.md); prices in minor units.",
    )
    security: SecuritySettings = SecuritySettings()
    throttle: ThrottleSettings = ThrottleSettings()

    def catalogue(self) -> Catalogue:
        """The validated plan catalogue."""
        return Catalogue.from_config(self.plans)

    def storage(self) -> StorageSettings:
        """Each region's object store, local folders under data_dir/media where none is configured."""
        return StorageSettings(
            regions={
                name: region.store or LocalStoreSettings(kind="local", root=self.data_dir / "media" / name)
                for name, region in self.regions.items()
            }
        )

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if not self.regions:
            raise ValueError("at least one region must be configured")
        try:
            self.catalogue()
        except CatalogueInvalid as exc:
            raise ValueError("; ".join(exc.problems)) from None
        key = self.security.secret_key
        if key is not None and len(key.get_secret_value()) < 32:
            raise ValueError("security.secret_key must be at least 32 characters")
        if self.environment == "production" and key is None:
            raise ValueError("security.secret_key must be set in production")
        if self.environment == "production" and self.mqtt.enabled and self.mqtt.password is None:
            raise ValueError("mqtt.password must be set in production (the broker refuses anonymous clients)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file (passed as init kwargs), as operators expect.
        return env_settings, init_settings


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Reads the TOML file (if any) and the environment; raises ConfigError with every problem listed."""
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        ]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
