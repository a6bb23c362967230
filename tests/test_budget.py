"""Budget: a deadline counted from the command's start ($TIMEBOX_START), expired(reserve), interrupt()."""

import time

import pytest

from timebox.budget import Budget, command_start


def test_expired_with_reserve_relative_to_a_start_in_the_past():
    budget = Budget(100.0, start=time.time() - 60.0)  # about 40 s left
    assert not budget.expired()
    assert not budget.expired(30.0)
    assert budget.expired(45.0)
    assert budget.expired(100.0)
    assert budget.elapsed() == pytest.approx(60.0, abs=1.0)
    assert budget.remaining() == pytest.approx(40.0, abs=1.0)
    assert budget.deadline == pytest.approx(budget.start + 100.0)


def test_budget_past_its_deadline_is_expired_even_with_zero_reserve():
    budget = Budget(10.0, start=time.time() - 11.0)
    assert budget.expired()
    assert budget.expired(0.0)
    assert budget.remaining() < 0


def test_interrupt_makes_expired_true_regardless_of_time():
    budget = Budget(3600.0, start=time.time())
    assert not budget.expired() and not budget.interrupted
    budget.interrupt()
    assert budget.interrupted
    assert budget.expired()
    assert budget.expired(0.0)
    assert budget.expired(-1e9)
    assert budget.remaining() > 3500  # the clock itself is untouched


def test_command_start_reads_timebox_start(monkeypatch):
    monkeypatch.setenv("TIMEBOX_START", "1234567890.5")
    assert command_start() == 1234567890.5


@pytest.mark.parametrize("value", [None, "", "not-a-number"])
def test_command_start_falls_back_to_now(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("TIMEBOX_START", raising=False)
    else:
        monkeypatch.setenv("TIMEBOX_START", value)
    before = time.time()
    start = command_start()
    assert before <= start <= time.time()


def test_budget_counts_from_timebox_start_not_from_its_creation(monkeypatch):
    monkeypatch.setenv("TIMEBOX_START", repr(time.time() - 20.0))
    budget = Budget(60.0)
    assert budget.remaining() == pytest.approx(40.0, abs=1.0)
    assert budget.elapsed() == pytest.approx(20.0, abs=1.0)


def test_budget_without_timebox_start_counts_from_now(monkeypatch):
    monkeypatch.delenv("TIMEBOX_START", raising=False)
    budget = Budget(60.0)
    assert budget.remaining() == pytest.approx(60.0, abs=1.0)


def test_explicit_start_overrides_timebox_start(monkeypatch):
    monkeypatch.setenv("TIMEBOX_START", repr(time.time() - 1000.0))
    start = time.time() - 5.0
    budget = Budget(60.0, start=start)
    assert budget.start == start
    assert budget.remaining() == pytest.approx(55.0, abs=1.0)
