"""Tests of depthaccel.executors.turns: one thread at a time runs driver code."""

from __future__ import annotations

import threading
import time

from depthaccel.executors.turns import DriverTurns


def test_turns_exclude_each_other_and_waiting_lets_another_run():
    turns = DriverTurns()
    inside = 0
    most = 0
    log: list[str] = []
    lock = threading.Lock()

    def enter(name):
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
            log.append(name)

    def leave():
        nonlocal inside
        with lock:
            inside -= 1

    def experiment(name):
        with turns.turn():
            assert turns.holds()
            enter(name)
            time.sleep(0.05)
            leave()
            with turns.released():  # "waiting for the cluster": others may run now
                assert not turns.holds()
                time.sleep(0.2)
            assert turns.holds()
            enter(name + " again")
            time.sleep(0.05)
            leave()
        assert not turns.holds()

    threads = [threading.Thread(target=experiment, args=(f"e{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert most == 1  # never two experiments' code at once
    # while e0 waited, the others got their first turn: the turns interleave
    assert log.index("e1") < log.index("e0 again") or log.index("e2") < log.index("e0 again")
    assert len(log) == 6


def test_released_without_the_turn_is_a_no_op():
    turns = DriverTurns()
    with turns.released():
        assert not turns.holds()
    with turns.turn():
        pass
    assert not turns.holds()
