"""Money: ``Decimal`` dollars in the library, integer micro-dollars in stores."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

__all__ = [
    "MICRO",
    "ZERO",
    "from_micros",
    "to_micros",
    "usd",
]

ZERO = Decimal(0)
MICRO = Decimal("0.000001")
_MILLION = Decimal(1_000_000)


def usd(value: float | int | str | Decimal) -> Decimal:
    """Dollars as an exact ``Decimal`` (floats by their shortest repr, so ``2.1`` is 2.1).

    >>> usd(0.1) + usd(0.2) == usd("0.3")
    True
    """
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise TypeError("a budget or price must be a number of dollars, not a bool")
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, int | str):
        try:
            result = Decimal(value.strip() if isinstance(value, str) else value)
        except ArithmeticError:
            raise ValueError(
                f"{value!r} is not an amount of dollars: give a number such as 2.50 or '2.50'"
            ) from None
    else:
        raise TypeError(
            f"an amount of dollars is a number (int, float, str or Decimal), not "
            f"{type(value).__name__}"
        )
    if not result.is_finite() or result < 0:
        raise ValueError(f"an amount of dollars must be finite and >= 0, got {value!r}")
    return result


def to_micros(amount: Decimal) -> int:
    """Whole micro-dollars, rounded up so that a store never under-counts.

    >>> to_micros(Decimal("0.0000375"))
    38
    """
    return int((amount / MICRO).to_integral_value(rounding=ROUND_CEILING))


def from_micros(micros: int) -> Decimal:
    """Dollars from whole micro-dollars.

    >>> from_micros(1_500_000)
    Decimal('1.5')
    """
    # Division keeps plain notation (500, not 5E+2) and drops trailing zeros.
    return Decimal(micros) / _MILLION if micros else ZERO
