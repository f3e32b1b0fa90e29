"""Settings: loaded once at start from a TOML file and ``CAMGATE_*`` environment variables.

Nested keys use ``__`` in the environment (``CAMGATE_HTTP__PORT=8080``). Unknown keys are rejected so a
typo fails the start instead of being silently ignored.
"""

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.errors import ConfigError


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


class ThrottleSettings(Section):
    """Attempt limits: (attempts, window in seconds)."""

    login_per_identifier: tuple[int, int] = (5, 900)
    login_per_address: tuple[int, int] = (50, 900)
    bind_per_serial: tuple[int, int] = (5, 3600)
    bind_per_account: tuple[int, int] = (20, 3600)
    code_sends_per_identifier: tuple[int, int] = (5, 3600)
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
    security: SecuritySettings = SecuritySettings()
    throttle: ThrottleSettings = ThrottleSettings()

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if not self.regions:
            raise ValueError("at least one region must be configured")
        key = self.security.secret_key
        if key is not None and len(key.get_secret_value()) < 32:
            raise ValueError("security.secret_key must be at least 32 characters")
        if self.environment == "production" and key is None:
            raise ValueError("security.secret_key must be set in production")
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
