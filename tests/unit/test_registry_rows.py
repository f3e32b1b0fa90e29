import pytest

from gateway.domain.registry import validate_row

GOOD = {
    "serial": "cg12345678",
    "verification_code": "ab2-cd3",
    "model": "CG-Dome 2",
    "broker_secret": "s" * 20,
}


def test_valid_row_is_normalised() -> None:
    row = validate_row(GOOD)
    assert (row.serial, row.code, row.model) == ("CG12345678", "AB2CD3", "CG-Dome 2")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("serial", "CG-123456", "serial"),
        ("serial", "SHORT", "serial"),
        ("verification_code", "ABC12", "verification_code"),
        ("verification_code", "ABCDE0", "verification_code"),  # 0 is not on labels (looks like O)
        ("model", "", "model"),
        ("broker_secret", "tooshort", "broker_secret"),
        ("broker_secret", "has a space in it ok?", "broker_secret"),
        ("broker_secret", "colon:would:break:passwd", "broker_secret"),
    ],
)
def test_bad_rows_name_the_field(field: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_row({**GOOD, field: value})
