"""BackgroundTasks: drain waits for everything (also work started while draining), and a
failure is logged by type, never lost and never raised into the caller."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core.tasks import BackgroundTasks


async def test_drain_waits_for_tasks_and_for_the_tasks_they_start() -> None:
    tasks = BackgroundTasks("test")
    done: list[str] = []

    async def second() -> None:
        await asyncio.sleep(0.02)
        done.append("second")

    async def first() -> None:
        await asyncio.sleep(0.01)
        tasks.spawn(second())
        done.append("first")

    tasks.spawn(first())
    assert len(tasks) == 1
    await tasks.drain()
    assert done == ["first", "second"] and len(tasks) == 0


async def test_a_failure_is_logged_with_its_type_only(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks("memory")

    async def fails() -> None:
        raise ValueError("secret user text")

    caplog.set_level(logging.WARNING)
    tasks.spawn(fails())
    await tasks.drain()
    assert "background memory work failed (ValueError)" in caplog.text
    assert "secret user text" not in caplog.text
