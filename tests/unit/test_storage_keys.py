"""The key layout: rendering, parsing back, and ids that must never escape their prefix."""

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.errors import InvalidKey
from storage.keys import (
    MediaKey,
    MediaKind,
    account_prefix,
    clip_key,
    device_prefix,
    snapshot_key,
    thumbnail_key,
    validate_folder_prefix,
    validate_id,
    validate_key,
    validate_prefix,
)

AT = datetime(2024, 3, 7, 12, 30, tzinfo=UTC)


def test_layout_of_each_kind() -> None:
    assert snapshot_key("a1", "CAM-0001", "ev-9", AT) == "acct/a1/dev/CAM-0001/snap/2024/03/07/ev-9.jpg"
    assert thumbnail_key("a1", "CAM-0001", "ev-9", AT) == "acct/a1/dev/CAM-0001/thumb/2024/03/07/ev-9.jpg"
    assert clip_key("a1", "CAM-0001", "c7", AT) == "acct/a1/dev/CAM-0001/clip/2024/03/07/c7.webm"
    assert clip_key("a1", "CAM-0001", "c7", AT, "mp4").endswith("/c7.mp4")


def test_capture_day_is_utc() -> None:
    late_evening_in_new_york = datetime(2024, 12, 31, 22, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert "/2025/01/01/" in snapshot_key("a", "d", "e", late_evening_in_new_york)


def test_naive_capture_time_is_refused() -> None:
    with pytest.raises(InvalidKey, match="timezone"):
        snapshot_key("a", "d", "e", datetime(2024, 1, 1))  # noqa: DTZ001 - the point of the test


def test_wrong_extension_for_kind_is_refused() -> None:
    with pytest.raises(InvalidKey):
        clip_key("a", "d", "c", AT, "jpg")
    with pytest.raises(InvalidKey):
        MediaKey("a", "d", MediaKind.SNAPSHOT, date(2024, 1, 1), "e", "png")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "a\\b",
        ".hidden",
        "a..b",
        "a b",
        "é",
        "a\x00",
        "-x",
        "x" * 129,
        "a:b",
        "a%2F",
    ],
)
def test_invalid_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidKey):
        validate_id(bad)
    with pytest.raises(InvalidKey):
        snapshot_key("acct1", "dev1", bad, AT)
    with pytest.raises(InvalidKey):
        account_prefix(bad)


@pytest.mark.parametrize(
    "good", ["1", "a", "CAM-0001_x", "v1.2", "0f8fad5b-d9cb-469f-a165-70867728950e", "x" * 128]
)
def test_valid_ids(good: str) -> None:
    assert validate_id(good) == good


def test_parse_round_trip() -> None:
    key = clip_key("acct-1", "CAM-1", "clip.2", AT, "mp4")
    parsed = MediaKey.parse(key)
    assert parsed == MediaKey("acct-1", "CAM-1", MediaKind.CLIP, date(2024, 3, 7), "clip.2", "mp4")
    assert str(parsed) == key


@pytest.mark.parametrize(
    "key",
    [
        "acct/a/dev/d/snap/2024/3/07/e.jpg",  # not zero-padded
        "acct/a/dev/d/snap/2024/02/30/e.jpg",  # no such day
        "acct/a/dev/d/video/2024/03/07/e.jpg",  # unknown kind
        "acct/a/dev/d/snap/2024/03/07/e",  # no extension
        "acct/a/dev/d/snap/2024/03/07/e.webm",  # extension of another kind
        "acct/a/dev/d/snap/2024/03/07/x/e.jpg",  # extra level
        "acct/../dev/d/snap/2024/03/07/e.jpg",
        "_camgate/probe/abc",
    ],
)
def test_parse_refuses_non_media_keys(key: str) -> None:
    with pytest.raises(InvalidKey):
        MediaKey.parse(key)


def test_account_prefix_does_not_cover_a_longer_account_id() -> None:
    assert snapshot_key("12", "d", "e", AT).startswith(account_prefix("12"))
    assert not snapshot_key("123", "d", "e", AT).startswith(account_prefix("12"))
    assert snapshot_key("12", "d", "e", AT).startswith(device_prefix("12", "d"))


_ALPHABET = st.characters(codec="utf-8")


@given(account=st.text(_ALPHABET, max_size=12), event=st.text(_ALPHABET, max_size=12))
def test_no_id_can_escape_the_account_prefix(account: str, event: str) -> None:
    try:
        key = snapshot_key(account, "dev", event, AT)
    except InvalidKey:
        return
    assert key.startswith(f"acct/{account}/dev/dev/snap/")
    assert len(key.split("/")) == 9
    assert ".." not in key
    assert MediaKey.parse(key).object_id == event
    validate_key(key)


@pytest.mark.parametrize(
    "bad",
    ["", "/a", "a/", "a//b", "a/../b", "a/./b", ".meta/x", "a/.tmp-1", "a\\b", "a\x00b", "a b", "x" * 1025],
)
def test_invalid_generic_keys(bad: str) -> None:
    with pytest.raises(InvalidKey):
        validate_key(bad)


def test_prefixes() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("acct/1/dev/x/snap/2024/0") == "acct/1/dev/x/snap/2024/0"
    assert validate_prefix("acct/1/") == "acct/1/"
    for bad in ["../", "acct/../x", "/acct", "acct//x", "acct/.meta", ".meta/"]:
        with pytest.raises(InvalidKey):
            validate_prefix(bad)


def test_bulk_delete_prefix_must_be_a_whole_folder() -> None:
    assert validate_folder_prefix("acct/1/") == "acct/1/"
    for bad in ["", "/", "acct/1", "acct", "../", "acct/../"]:
        with pytest.raises(InvalidKey):
            validate_folder_prefix(bad)
