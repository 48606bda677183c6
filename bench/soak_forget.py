"""The forget-during-outage check of bench/soak.py.

While the database answers, a session saves a secret: an explicit memory of its pair whose
value carries a marker no other memory has (`fg00012`). While the database does not answer
(Postgres down or frozen), a session holding one asks to forget it, by key or by id, as the
`forget` tool would. From the moment a forget returns, its marker must never again be in what
the companion can say: the turn's memory block (looked up again within the same turn, as
`llm_node` does after a tool call), a `recall` result, the list `what_do_you_know_about_me`
reads, a greeting, or a last lookup of each forgotten secret at the end. And once the spool
is replayed, no row may still carry it.

A forget the database could not take waits in the spool (`Forgotten.deferred`) and must hold
all the same. A refused one (StorageUnavailable: "try again in a moment", nothing changed:
neither the database nor the disk took it) is allowed and counted apart; its secret stays
kept, and the session asks again on a later turn. Kept secrets seen where they may be shown
are counted too: they prove the check can see a marker.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from core.errors import StorageUnavailable
from infrastructure.connection_pool import ConnectionPool
from services.composition import Services
from tests.support.markers import Scope

FORGET_MARKER = re.compile(r"\bfg\d{5}\b")
SECRET_QUERY = "what is my secret code"


@dataclass(frozen=True)
class Secret:
    marker: str
    key: str
    memory_id: uuid.UUID
    user_id: uuid.UUID
    companion_id: uuid.UUID


@dataclass
class ForgetCheck:
    """Secrets saved, forgotten and watched for, and what was seen."""

    kept: dict[Scope, Secret] = field(default_factory=dict)
    forgotten: dict[str, Secret] = field(default_factory=dict)
    planted: int = 0
    plant_errors: Counter[str] = field(default_factory=Counter)
    made: Counter[str] = field(default_factory=Counter)
    deferred: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    forget_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    seen_kept: Counter[str] = field(default_factory=Counter)
    served: list[tuple[str, str]] = field(default_factory=list)
    _numbers: itertools.count[int] = field(default_factory=itertools.count)

    async def plant(
        self, services: Services, user_id: uuid.UUID, companion_id: uuid.UUID, scope: Scope
    ) -> None:
        """Save a secret for this pair, unless it holds one already (what `remember` calls)."""
        if scope in self.kept:
            return
        n = next(self._numbers)
        marker, key = f"fg{n:05d}", f"secret_code_{n}"
        try:
            memory = await services.memory.remember(
                user_id, companion_id, "FACT", key, f"my secret code is {marker} ({scope.own})"
            )
        except Exception as exc:
            self.plant_errors[type(exc).__name__] += 1
            return
        self.planted += 1
        self.kept[scope] = Secret(marker, key, memory.id, user_id, companion_id)

    async def forget(self, services: Services, scope: Scope, phase: str) -> bool:
        """Ask to forget the pair's secret (every other one by id), as the `forget` tool does;
        whether it was forgotten (made or deferred; not refused)."""
        secret = self.kept.get(scope)
        if secret is None:
            return False
        by_key = int(secret.marker[2:]) % 2 == 0
        started = time.perf_counter()
        try:
            if by_key:
                done = await services.memory.forget(secret.user_id, secret.companion_id,
                                                    key=secret.key)
            else:
                done = await services.memory.forget(secret.user_id, secret.companion_id,
                                                    memory_id=secret.memory_id)
        except StorageUnavailable:
            self.refused[phase] += 1
            return False
        except Exception as exc:
            self.errors[type(exc).__name__] += 1
            return False
        finally:
            self.forget_ms[phase].append((time.perf_counter() - started) * 1000)
        (self.deferred if done.deferred else self.made)[phase] += 1
        del self.kept[scope]
        self.forgotten[secret.marker] = secret
        return True

    def check(self, text: str, where: str) -> None:
        """Count forgotten markers served in `text` (and kept ones seen)."""
        kept = {s.marker for s in self.kept.values()}
        for marker in FORGET_MARKER.findall(text):
            if marker in self.forgotten:
                self.served.append((where, marker))
            elif marker in kept:
                self.seen_kept[where] += 1

    async def sweep(self, services: Services) -> None:
        """Look up every secret once more at the end, as `recall` and the memory list would."""
        for secret in [*self.forgotten.values(), *self.kept.values()]:
            try:
                found = await services.retrieval.search(
                    secret.user_id, secret.companion_id, f"{SECRET_QUERY} {secret.marker}", k=10
                )
                self.check(" ".join(s.memory.content for s in found), "final_recall")
                current = await services.memory.current(secret.user_id, secret.companion_id)
                self.check(" ".join(m.content for m in current), "final_memory_list")
            except Exception as exc:
                self.errors[f"sweep {type(exc).__name__}"] += 1

    async def rows(self, pool: ConnectionPool) -> dict[str, int]:
        """Rows in Postgres still carrying a forgotten secret's marker, or a kept one's."""
        rows = await pool.fetch(
            "select content from public.memories where content ~ 'fg[0-9]{5}'"
        )
        markers = [m for r in rows for m in FORGET_MARKER.findall(r["content"])]
        kept = {s.marker for s in self.kept.values()}
        return {
            "forgotten_rows_left": sum(m in self.forgotten for m in markers),
            "kept_rows_found": len(kept & set(markers)),
            "kept": len(kept),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "planted": self.planted,
            "plant_errors": dict(self.plant_errors),
            "made": sum(self.made.values()),
            "deferred": sum(self.deferred.values()),
            "refused": sum(self.refused.values()),
            "by_phase": {
                phase: {"made": self.made[phase], "deferred": self.deferred[phase],
                        "refused": self.refused[phase]}
                for phase in sorted(set(self.made) | set(self.deferred) | set(self.refused))
            },
            "errors": dict(self.errors),
            "forget_ms_max_by_phase": {
                phase: round(max(v), 1) for phase, v in sorted(self.forget_ms.items()) if v
            },
            "kept_seen": dict(self.seen_kept),
            "forgotten_served": len(self.served),
            "served_examples": [f"{where}: {marker}" for where, marker in self.served[:5]],
        }
