"""The adversarial suite (issue 8): one test per finding of the hostile-input review, against the real
broker, both databases and the S3 server. The app fixtures are the integration suite's."""

from tests.integration.conftest import (  # noqa: F401  # fixtures are found by name
    client,
    clock,
    database_url,
    fleet,
    mailbox,
    services,
    settings,
)
