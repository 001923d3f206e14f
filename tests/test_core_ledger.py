"""Ledger arithmetic: no interleaving of reserve/settle/release overspends a budget."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from burnmap._core import ledger
from burnmap._core.money import from_micros, to_micros, usd

cents = st.integers(min_value=0, max_value=500).map(lambda c: Decimal(c) / 100)


class LedgerMachine(RuleBasedStateMachine):
    """Three nested budgets; calls reserve on a random suffix of the chain."""

    @initialize(limits=st.lists(st.one_of(st.none(), cents), min_size=3, max_size=3))
    def setup(self, limits: list[Decimal | None]) -> None:
        self.accounts = [ledger.Account(f"s{i}", limit) for i, limit in enumerate(limits)]
        self.open: list[tuple[list[ledger.Account], Decimal]] = []

    @rule(amount=cents, depth=st.integers(min_value=1, max_value=3))
    def reserve(self, amount: Decimal, depth: int) -> None:
        chain = self.accounts[-depth:]
        if ledger.first_refusal(chain, amount) is None:
            ledger.hold(chain, amount)
            self.open.append((chain, amount))
        else:
            refusing = ledger.first_refusal(chain, amount)
            assert refusing is not None
            assert refusing.limit is not None
            assert refusing.spent + refusing.reserved + amount > refusing.limit

    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        if not self.open:
            return
        index = data.draw(st.integers(min_value=0, max_value=len(self.open) - 1))
        chain, held = self.open.pop(index)
        actual = data.draw(st.integers(min_value=0, max_value=int(held * 100))) / Decimal(100)
        ledger.settle(chain, held, actual)

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if not self.open:
            return
        chain, held = self.open.pop(data.draw(st.integers(0, len(self.open) - 1)))
        ledger.release(chain, held)

    @invariant()
    def never_over_budget(self) -> None:
        for account in self.accounts:
            assert account.reserved >= 0
            if account.limit is not None:
                assert account.spent + account.reserved <= account.limit
                assert account.spent <= account.limit

    @invariant()
    def holds_add_up(self) -> None:
        for account in self.accounts:
            held = sum((amount for chain, amount in self.open if account in chain), Decimal(0))
            assert account.reserved == held
            assert account.holds == sum(1 for chain, _ in self.open if account in chain)


TestLedger = LedgerMachine.TestCase
TestLedger.settings = settings(max_examples=200, stateful_step_count=40)


@given(st.integers(min_value=0, max_value=10**15))
def test_micros_round_trip(micros: int) -> None:
    assert to_micros(from_micros(micros)) == micros


@given(st.decimals(min_value=0, max_value=10**6, allow_nan=False, places=9))
def test_micros_never_round_down(amount: Decimal) -> None:
    assert from_micros(to_micros(amount)) >= amount


def test_usd_takes_floats_by_their_repr() -> None:
    assert usd(2.1) == Decimal("2.1")
    assert usd("0.10") + usd(0.2) == Decimal("0.30")
