"""Tests for relay.store.flusher: a store that is down is one log line per episode, not a traceback per task."""

import logging

from relay.store.base import StoreError
from relay.store.flusher import Flusher


def failing(name):
    def task():
        raise StoreError("connection refused")
    task.__qualname__ = name
    return task


def test_a_dead_store_is_one_line_when_it_goes_down_and_one_at_the_final_flush(caplog):
    flusher = Flusher()
    for name in ("usage", "counts", "last_used"):
        flusher.add(failing(name))
    with caplog.at_level(logging.ERROR, logger="relay.background"):
        for _ in range(5):
            flusher.flush()
        flusher.stop()
    lines = [record for record in caplog.records if record.name == "relay.background"]
    assert len(lines) == 2, [record.getMessage() for record in lines]
    assert all(record.exc_info is None for record in lines)
    assert "usage, counts, last_used" in lines[0].getMessage() and "retrying" in lines[0].getMessage()
    assert "lost" in lines[1].getMessage() and lines[1].final is True


def test_a_store_that_comes_back_and_fails_again_is_said_again(caplog):
    state = {"down": True}

    def task():
        if state["down"]:
            raise StoreError("down")

    flusher = Flusher()
    flusher.add(task)
    with caplog.at_level(logging.ERROR, logger="relay.background"):
        flusher.flush()
        state["down"] = False
        flusher.flush()
        state["down"] = True
        flusher.flush()
    assert len([record for record in caplog.records if record.name == "relay.background"]) == 2


def test_a_bug_in_a_task_keeps_its_traceback(caplog):
    flusher = Flusher()
    flusher.add(lambda: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="relay.background"):
        flusher.flush()
    assert caplog.records[-1].exc_info is not None
