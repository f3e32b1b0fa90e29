"""Money as integer minor units (cents) with an ISO 4217 code: no float ever touches a price."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

_CURRENCY = re.compile(r"[A-Z]{3}")


@total_ordering
@dataclass(frozen=True)
class Money:
    """An amount in minor units. Arithmetic and comparison across currencies raise ``ValueError``."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.minor, bool) or not isinstance(self.minor, int):
            raise TypeError(f"money is counted in integer minor units, not {self.minor!r}")
        if not _CURRENCY.fullmatch(self.currency):
            raise ValueError(f"currency must be an ISO 4217 code such as USD, not {self.currency!r}")

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Nothing, in ``currency``."""
        return cls(0, currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot mix {self.currency} and {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def __mul__(self, times: int) -> Money:
        return Money(self.minor * times, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor < other.minor

    def __str__(self) -> str:
        # Display only; assumes two decimals, which holds for the currencies the catalogue is sold in.
        units, cents = divmod(abs(self.minor), 100)
        return f"{'-' if self.minor < 0 else ''}{units}.{cents:02d} {self.currency}"
