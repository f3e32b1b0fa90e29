"""Tags, metadata and content types are checked against S3's rules before anything is sent."""

import pytest

from storage.errors import InvalidKey
from storage.tags import retention_tags, validate_content_type, validate_metadata, validate_tags


def test_retention_tags() -> None:
    assert retention_tags(30) == {"retention-days": "30"}
    with pytest.raises(InvalidKey):
        retention_tags(0)


def test_valid_tags_and_metadata_pass() -> None:
    assert validate_tags(None) == {}
    assert validate_tags({"retention-days": "30", "plan": "cloud 30/day:@x"}) == {
        "retention-days": "30",
        "plan": "cloud 30/day:@x",
    }
    assert validate_metadata({"event-id": "e1", "captured-at": "2024-03-07T12:30:00Z"})["event-id"] == "e1"


@pytest.mark.parametrize(
    "tags",
    [
        {"": "x"},
        {"aws:x": "1"},
        {"k": "a&b"},
        {"k": "v" * 257},
        {"k" * 129: "v"},
        {f"k{i}": "v" for i in range(11)},
    ],
)
def test_invalid_tags(tags: dict[str, str]) -> None:
    with pytest.raises(InvalidKey):
        validate_tags(tags)


@pytest.mark.parametrize(
    "metadata", [{"Event-Id": "e"}, {"event id": "e"}, {"k": "é"}, {"k": "a\nb"}, {"k": "v" * 2100}]
)
def test_invalid_metadata(metadata: dict[str, str]) -> None:
    with pytest.raises(InvalidKey):
        validate_metadata(metadata)


def test_content_types() -> None:
    assert validate_content_type("video/webm; codecs=vp8") == "video/webm; codecs=vp8"
    for bad in ["jpeg", "image/jpeg\r\nX-Evil: 1", "image/jpég"]:
        with pytest.raises(InvalidKey):
            validate_content_type(bad)
