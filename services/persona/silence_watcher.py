"""The per-session silence watcher: when a nudge may come, and the timer that fires it.

`SilencePolicy` is the pure timing rule (states and a monotonic `now` in, due or not out);
`SilenceWatcher` adds the asyncio timer and is driven by the agent:

    watcher = proactive.watcher(user_id, companion, on_nudge=lambda text:
                                session.generate_reply(instructions=text))
    session.on("user_state_changed", lambda ev: watcher.user_state(ev.new_state))
    session.on("agent_state_changed", lambda ev: watcher.agent_state(ev.new_state))
    with watcher.tool_running(): ...          # inside each function tool
    watcher.user_turn()                       # in on_user_turn_completed
    ctx.add_shutdown_callback(watcher.aclose)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from services.persona.proactive_decisions import Nudge, NudgeLedger

logger = logging.getLogger(__name__)

ENGAGEMENT_WINDOW_S = 300.0
ENGAGEMENT_FULL_TURNS = 4
NUDGE_BACKOFF = 2.0
# Agent states in which the companion is producing something; silence does not run then.
_AGENT_BUSY = frozenset({"initializing", "thinking", "speaking"})


class SilencePolicy:
    """When a nudge may be considered, from user/agent/tool states and a monotonic `now`.

    Silence runs only while the user is not speaking, the agent is idle or listening and no
    tool runs. The first nudge may come `after_s` into a silence; each further one without a
    user turn in between waits `NUDGE_BACKOFF` times longer.
    """

    def __init__(self, *, after_s: float, backoff: float = NUDGE_BACKOFF) -> None:
        self.after_s = after_s
        self.backoff = backoff
        self.user_speaking = False
        self.agent_busy = True  # the session starts with the agent initializing
        self.tools_running = 0
        self.quiet_since: float | None = None
        self.unanswered = 0
        self.deferred_until: float | None = None

    @property
    def quiet(self) -> bool:
        return not self.user_speaking and not self.agent_busy and self.tools_running == 0

    def user_state(self, state: str, now: float) -> None:
        self.user_speaking = state == "speaking"
        if self.user_speaking:
            self.unanswered = 0
        self._update(now)

    def agent_state(self, state: str, now: float) -> None:
        self.agent_busy = state in _AGENT_BUSY
        self._update(now)

    def tool_started(self, now: float) -> None:
        self.tools_running += 1
        self._update(now)

    def tool_finished(self, now: float) -> None:
        self.tools_running = max(0, self.tools_running - 1)
        self._update(now)

    def silence_s(self, now: float) -> float:
        return 0.0 if self.quiet_since is None else max(0.0, now - self.quiet_since)

    def threshold_s(self) -> float:
        return self.after_s * self.backoff ** self.unanswered

    def next_check_at(self) -> float | None:
        """When to look again, or None while someone is speaking or working."""
        if self.quiet_since is None:
            return None
        at = self.quiet_since + self.threshold_s()
        return max(at, self.deferred_until) if self.deferred_until is not None else at

    def due(self, now: float) -> bool:
        at = self.next_check_at()
        return at is not None and now >= at

    def defer(self, now: float, seconds: float) -> None:
        """Not now (score too low): look again `seconds` later if the silence lasts."""
        self.deferred_until = now + seconds

    def nudged(self, now: float) -> None:
        self.unanswered += 1
        self.deferred_until = None
        # The next silence is measured from the nudge, even before the agent starts speaking.
        self.quiet_since = now if self.quiet else None

    def _update(self, now: float) -> None:
        if not self.quiet:
            self.quiet_since = None
            self.deferred_until = None
        elif self.quiet_since is None:
            self.quiet_since = now


# --- the timer -------------------------------------------------------------------------------

DecideFn = Callable[[float, float, NudgeLedger], Awaitable[Nudge | None]]


class SilenceWatcher:
    """One per session: fed with state changes, calls `on_nudge(instructions)` after silence.

    Args:
        decide: async (silence_s, engagement, ledger) -> Nudge | None; None defers.
        on_nudge: called with the instructions; may return an awaitable (awaited, errors
            logged).
        after_s: silence before the first nudge.
        max_nudges: nudges allowed in this session.
        on_delivered: async callback after a nudge was handed to `on_nudge` (marks follow-ups).
        monotonic: the clock for durations; tests may pass their own.
    """

    def __init__(
        self,
        *,
        decide: DecideFn,
        on_nudge: Callable[[str], Any],
        after_s: float,
        max_nudges: int,
        on_delivered: Callable[[Nudge], Awaitable[None]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = SilencePolicy(after_s=after_s)
        self.ledger = NudgeLedger(max_nudges=max_nudges)
        self._decide = decide
        self._on_nudge = on_nudge
        self._on_delivered = on_delivered
        self._now = monotonic
        self._recheck_s = max(after_s / 2, 0.01)
        self._turns: deque[float] = deque(maxlen=64)
        self._timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._epoch = 0
        self._closed = False
        self._deferrals = 0
        self._errors = 0

    # Inputs from the agent.

    def user_state(self, state: str) -> None:
        self._change(lambda now: self.policy.user_state(state, now))

    def agent_state(self, state: str) -> None:
        self._change(lambda now: self.policy.agent_state(state, now))

    def tool_started(self) -> None:
        self._change(self.policy.tool_started)

    def tool_finished(self) -> None:
        self._change(self.policy.tool_finished)

    @contextlib.contextmanager
    def tool_running(self) -> Iterator[None]:
        self.tool_started()
        try:
            yield
        finally:
            self.tool_finished()

    def user_turn(self) -> None:
        """A completed user turn; feeds "recent engagement"."""
        self._turns.append(self._now())

    def engagement(self) -> float:
        cutoff = self._now() - ENGAGEMENT_WINDOW_S
        recent = sum(1 for t in self._turns if t >= cutoff)
        return min(1.0, recent / ENGAGEMENT_FULL_TURNS)

    @property
    def nudges(self) -> int:
        return self.ledger.count

    def stats(self) -> dict[str, Any]:
        return {
            "nudges": self.ledger.count,
            "max_nudges": self.ledger.max_nudges,
            "deferrals": self._deferrals,
            "errors": self._errors,
            "quiet": self.policy.quiet,
        }

    async def aclose(self) -> None:
        self._closed = True
        tasks = [t for t in (self._timer, *self._tasks) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # Internals.

    def _change(self, apply: Callable[[float], None]) -> None:
        apply(self._now())
        self._epoch += 1
        self._reschedule()

    def _reschedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Fed before the session's loop runs: the state is kept, timing starts later.
            return
        # The firing task reschedules itself at its end; it must not cancel itself.
        current = asyncio.current_task()
        if self._timer is not None and self._timer is not current and not self._timer.done():
            self._timer.cancel()
        self._timer = None
        if self._closed or self.ledger.exhausted:
            return
        at = self.policy.next_check_at()
        if at is None:
            return
        delay = max(0.0, at - self._now())
        self._timer = loop.create_task(
            self._wait_and_fire(delay, self._epoch), name="silence-watcher"
        )

    async def _wait_and_fire(self, delay: float, epoch: int) -> None:
        await asyncio.sleep(delay)
        now = self._now()
        if epoch != self._epoch or not self.policy.due(now) or self.ledger.exhausted:
            return
        try:
            nudge = await self._decide(self.policy.silence_s(now), self.engagement(), self.ledger)
        except Exception as exc:
            self._errors += 1
            logger.warning("nudge decision failed (%s); will look again", type(exc).__name__)
            nudge = None
        # Someone spoke or a tool started while we decided: that silence is over.
        if epoch != self._epoch or not self.policy.quiet:
            return
        now = self._now()
        if nudge is None:
            self._deferrals += 1
            self.policy.defer(now, self._recheck_s)
            self._reschedule()
            return
        self.ledger.record(nudge)
        self.policy.nudged(now)
        logger.info(
            "nudging the user (reason=%s, topic=%s, score=%.2f, nudge=%s/%s)",
            nudge.reason, nudge.topic.split(":")[0], nudge.score, self.ledger.count,
            self.ledger.max_nudges,
        )
        self._track(self._deliver(nudge))
        self._reschedule()

    async def _deliver(self, nudge: Nudge) -> None:
        try:
            result = self._on_nudge(nudge.instructions)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self._errors += 1
            logger.warning("delivering a nudge failed (%s)", type(exc).__name__)
            return
        if self._on_delivered is not None:
            try:
                await self._on_delivered(nudge)
            except Exception as exc:
                self._errors += 1
                logger.warning("recording a delivered nudge failed (%s)", type(exc).__name__)

    def _track(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
