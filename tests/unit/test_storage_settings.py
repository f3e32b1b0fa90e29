"""Storage settings: unknown keys and half-configured stores fail at load, with a readable message."""

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from storage.settings import LocalStoreSettings, S3StoreSettings, StorageSettings

S3: dict[str, Any] = {"kind": "s3", "bucket": "media-sg", "endpoint_url": "http://127.0.0.1:9000"}


def test_valid_tree_with_both_kinds() -> None:
    settings = StorageSettings.model_validate(
        {"regions": {"sg": S3 | {"path_style": True}, "vn": {"kind": "local", "root": "/var/media/vn"}}}
    )
    sg, vn = settings.regions["sg"], settings.regions["vn"]
    assert isinstance(sg, S3StoreSettings) and sg.path_style and sg.max_attempts == 3
    assert isinstance(vn, LocalStoreSettings) and vn.root == Path("/var/media/vn")


@pytest.mark.parametrize(
    "tree",
    [
        {"regions": {"sg": S3}, "typo": 1},
        {"regions": {"sg": S3 | {"bucket_name": "x"}}},
        {"regions": {"sg": {"kind": "local", "root": "/x", "bucket": "b"}}},
    ],
)
def test_unknown_keys_are_rejected(tree: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        StorageSettings.model_validate(tree)


@pytest.mark.parametrize(
    ("region", "error"),
    [
        ({"bucket": "media"}, "discriminator"),  # kind is required
        ({"kind": "gcs", "bucket": "media"}, "does not match any of the expected tags"),
        (S3 | {"bucket": "Media_SG"}, "bucket"),
        (S3 | {"endpoint_url": "ftp://host"}, "http"),
        (S3 | {"access_key_id": "AKIA"}, "both"),
        (S3 | {"multipart_part_bytes": 1024}, "multipart_part_bytes"),
        (S3 | {"multipart_threshold_bytes": 6 << 20, "multipart_part_bytes": 8 << 20}, "at least"),
        (S3 | {"max_attempts": 0}, "max_attempts"),
        (S3 | {"conditional_put": "sometimes"}, "conditional_put"),
    ],
)
def test_invalid_region_settings(region: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        StorageSettings.model_validate({"regions": {"sg": region}})


@pytest.mark.parametrize("name", ["", "SG", "s g", "1sg", "x" * 33])
def test_region_names(name: str) -> None:
    with pytest.raises(ValidationError):
        StorageSettings.model_validate({"regions": {name: S3}})


def test_at_least_one_region() -> None:
    with pytest.raises(ValidationError):
        StorageSettings.model_validate({"regions": {}})


def test_secrets_do_not_show() -> None:
    settings = S3StoreSettings.model_validate(S3 | {"access_key_id": "AKIAX", "secret_access_key": "hunter2"})
    assert "hunter2" not in repr(settings) and "AKIAX" not in str(settings)
    assert settings.secret_access_key is not None
    assert settings.secret_access_key.get_secret_value() == "hunter2"


def test_embedded_default_is_one_folder_per_region(tmp_path: Path) -> None:
    settings = StorageSettings.embedded(tmp_path, ["sg", "eu"])
    assert settings.regions == {
        "sg": LocalStoreSettings(kind="local", root=tmp_path / "sg"),
        "eu": LocalStoreSettings(kind="local", root=tmp_path / "eu"),
    }
