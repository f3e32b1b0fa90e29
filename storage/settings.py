"""Per-region storage settings (pydantic, unknown keys rejected); the gateway's config embeds them."""

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

MIB = 1024 * 1024
S3_MIN_PART_BYTES = 5 * MIB  # S3 refuses smaller parts, except the last one

RegionName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S3StoreSettings(_Section):
    """One region's bucket on any S3 API (AWS, MinIO, Ceph RGW, R2)."""

    kind: Literal["s3"]
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    endpoint_url: str | None = Field(None, description="Unset: AWS's endpoint for region_name.")
    region_name: str = "us-east-1"
    access_key_id: SecretStr | None = Field(None, description="Unset: boto3's credential chain.")
    secret_access_key: SecretStr | None = None
    path_style: bool = Field(False, description="Path-style addressing (MinIO, moto, most self-hosted).")
    pool_size: int = Field(8, ge=1, le=256, description="Threads for boto3 calls = HTTP connections.")
    max_attempts: int = Field(3, ge=1, le=10, description="Total attempts per call, first one included.")
    connect_timeout_s: float = Field(3.0, gt=0)
    read_timeout_s: float = Field(30.0, gt=0)
    multipart_threshold_bytes: int = Field(16 * MIB, ge=S3_MIN_PART_BYTES)
    multipart_part_bytes: int = Field(8 * MIB, ge=S3_MIN_PART_BYTES, le=5 * 1024 * MIB)
    conditional_put: Literal["auto", "always", "never"] = Field(
        "auto",
        description="If-None-Match on create: 'auto' probes the server once; 'never' uses HEAD then PUT.",
    )

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            url = urlsplit(value)
            if url.scheme not in ("http", "https") or not url.netloc:
                raise ValueError("endpoint_url must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _check(self) -> "S3StoreSettings":
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both access_key_id and secret_access_key, or neither")
        if self.multipart_threshold_bytes < self.multipart_part_bytes:
            raise ValueError("multipart_threshold_bytes must be at least multipart_part_bytes")
        return self


class LocalStoreSettings(_Section):
    """One region's media in a local folder (the embedded default), same key layout as S3."""

    kind: Literal["local"]
    root: Path
    pool_size: int = Field(4, ge=1, le=64, description="Threads for file I/O.")


StoreSettings = Annotated[S3StoreSettings | LocalStoreSettings, Field(discriminator="kind")]


class StorageSettings(_Section):
    """Region name → where that region's media lives."""

    regions: dict[RegionName, StoreSettings] = Field(min_length=1)

    @classmethod
    def embedded(cls, root: Path, regions: Iterable[str]) -> "StorageSettings":
        """Local folders ``<root>/<region>``: the one-command default with nothing installed."""
        return cls(regions={r: LocalStoreSettings(kind="local", root=root / r) for r in regions})
