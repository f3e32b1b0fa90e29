"""boto3's errors become storage's own at the S3 edge: what to retry and what to fix."""

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from storage.errors import (
    ObjectNotFound,
    StorageError,
    StorageRefused,
    StorageRejected,
    StorageUnavailable,
)
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
        # Refusals of us (configuration): ingest waits them out like an outage (issue 8, finding 10).
        (client_error("AccessDenied", 403), StorageRefused),
        (client_error("NoSuchBucket", 404), StorageRefused),
        (client_error("InvalidAccessKeyId", 403), StorageRefused),
        (client_error("ExpiredToken", 400), StorageRefused),
        (client_error("SignatureDoesNotMatch", 403), StorageRefused),
        (client_error("InvalidTag", 400), StorageRejected),
        (EndpointConnectionError(endpoint_url="http://x"), StorageUnavailable),
        (ConnectTimeoutError(endpoint_url="http://x"), StorageUnavailable),
        (ReadTimeoutError(endpoint_url="http://x"), StorageUnavailable),
        (NoCredentialsError(), StorageRefused),
    ],
)
def test_translation(error: Exception, expected: type[StorageError]) -> None:
    assert isinstance(
        error,
        ClientError | EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError | NoCredentialsError,
    )
    translated = _translate(error, "acct/a/x.jpg")
    assert type(translated) is expected
    if isinstance(translated, StorageRejected) and isinstance(error, ClientError):
        assert translated.code == error.response["Error"]["Code"]
