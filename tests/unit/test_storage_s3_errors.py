"""boto3's errors become storage's own at the S3 edge: what to retry and what to fix."""

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from storage.errors import ObjectNotFound, StorageError, StorageRejected, StorageUnavailable
from storage.s3 import _translate


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (client_error("NoSuchKey", 404), ObjectNotFound),
        (client_error("SlowDown", 503), StorageUnavailable),
        (client_error("InternalError", 500), StorageUnavailable),
        (client_error("RequestTimeout", 400), StorageUnavailable),
        (client_error("AccessDenied", 403), StorageRejected),
        (client_error("NoSuchBucket", 404), StorageRejected),
        (client_error("InvalidTag", 400), StorageRejected),
        (EndpointConnectionError(endpoint_url="http://x"), StorageUnavailable),
        (ConnectTimeoutError(endpoint_url="http://x"), StorageUnavailable),
        (ReadTimeoutError(endpoint_url="http://x"), StorageUnavailable),
        (NoCredentialsError(), StorageError),
    ],
)
def test_translation(error: Exception, expected: type[StorageError]) -> None:
    assert isinstance(
        error,
        ClientError | EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError | NoCredentialsError,
    )
    translated = _translate(error, "acct/a/x.jpg")
    assert type(translated) is expected
    if isinstance(translated, StorageRejected):
        assert translated.code == error.response["Error"]["Code"]  # type: ignore[attr-defined]
