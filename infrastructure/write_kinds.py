"""The kinds of write the batcher carries: each a named, versioned statement of this project.

A queued or spooled write names its kind (op and version), never SQL: replaying a spool file
runs only statements registered here, chosen by kind, with arguments checked against the
kind's parameters. When a statement changes, its version changes; the old version is kept
(`older=`) while old spool lines may still exist, or such lines are set aside and reported.
Each kind knows which parameter holds the user the write belongs to, so one user's pending
writes can be exported or erased.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np

from core.errors import InvalidInput

_PLACEHOLDER = re.compile(r"\$(\d+)")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# The parameters that say whose a write is, by convention.
USER_PARAM = "user_id"
COMPANION_PARAM = "companion_id"


def _is_json(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_vector(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and value.dtype.kind in "fi"
    return isinstance(value, list) and all(_is_number(v) for v in value)


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(check(v) for v in value)


# Parameter types: what a value must be (None is allowed only for a type marked with "?").
PARAM_TYPES: dict[str, Callable[[Any], bool]] = {
    "uuid": lambda v: isinstance(v, uuid.UUID),
    "text": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": _is_number,
    "bool": lambda v: isinstance(v, bool),
    "time": lambda v: isinstance(v, datetime) and v.tzinfo is not None,
    "date": lambda v: isinstance(v, date) and not isinstance(v, datetime),
    "json": _is_json,
    "vector": _is_vector,
    "text[]": _list_of(lambda v: isinstance(v, str)),
    "time?[]": _list_of(lambda v: v is None or (isinstance(v, datetime) and v.tzinfo is not None)),
}


@dataclass(frozen=True)
class Param:
    """One $n of a statement: its name, its type (see PARAM_TYPES) and whether it may be None."""

    name: str
    type: str
    nullable: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        return PARAM_TYPES[self.type](value)


def parse_params(spec: str) -> tuple[Param, ...]:
    """`"id:uuid companion_id:uuid? content:text"` -> the parameters $1, $2, $3."""
    params = []
    for item in spec.split():
        name, _, kind = item.partition(":")
        nullable = kind.endswith("?") and kind != "time?[]"
        kind = kind[:-1] if nullable else kind
        if not _NAME.match(name) or kind not in PARAM_TYPES:
            raise InvalidInput(
                f"bad parameter {item!r}",
                suggestion=f"write name:type with a type of {', '.join(PARAM_TYPES)}",
            )
        params.append(Param(name, kind, nullable))
    return tuple(params)


def statement_digest(sql: str) -> str:
    """A short fingerprint of a statement: a spool line written for another text of the same
    kind and version (someone changed the SQL and forgot the version) is set aside."""
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class WriteKind:
    """One idempotent statement the batcher may run, with its name, version and parameters.

    Build it with `WriteKind.of`. Attributes `user` and `companion` are the indexes of the
    parameters named `user_id` and `companion_id` (None when it has none).
    """

    op: str
    version: int
    sql: str = field(repr=False)
    params: tuple[Param, ...]
    user: int | None
    companion: int | None
    digest: str = field(repr=False)

    @classmethod
    def of(cls, op: str, sql: str, params: str, *, version: int = 1) -> WriteKind:
        """A kind whose statement takes `$1..$n`, one per parameter of `params`.

        Raises:
            InvalidInput: the op name, version or parameters do not fit the statement.
        """
        if not op or not isinstance(op, str):
            raise InvalidInput("batch op names must be non-empty strings")
        if version < 1:
            raise InvalidInput(f"batch op {op!r}: versions start at 1")
        parsed = parse_params(params)
        arity = max((int(n) for n in _PLACEHOLDER.findall(sql)), default=0)
        if arity != len(parsed):
            raise InvalidInput(
                f"batch op {op!r}: the statement takes {arity} parameters, "
                f"{len(parsed)} are declared",
                suggestion="declare one name:type per $n, in order",
            )
        names = [p.name for p in parsed]
        return cls(
            op=op, version=version, sql=sql, params=parsed,
            user=names.index(USER_PARAM) if USER_PARAM in names else None,
            companion=names.index(COMPANION_PARAM) if COMPANION_PARAM in names else None,
            digest=statement_digest(sql),
        )

    def mismatch(self, args: Sequence[Any]) -> str | None:
        """Why `args` cannot be this kind's arguments (None when they fit)."""
        if len(args) != len(self.params):
            return f"takes {len(self.params)} arguments, got {len(args)}"
        for index, (param, value) in enumerate(zip(self.params, args, strict=True)):
            if not param.accepts(value):
                return (f"argument ${index + 1} ({param.name}) must be {param.type}"
                        f"{' or None' if param.nullable else ''}, got {type(value).__name__}")
        return None

    def owner(self, args: Sequence[Any]) -> tuple[uuid.UUID | None, uuid.UUID | None]:
        """The user and companion the write with `args` belongs to (None where it has none)."""
        user = args[self.user] if self.user is not None else None
        companion = args[self.companion] if self.companion is not None else None
        return user, companion

    def named(self, args: Sequence[Any]) -> dict[str, Any]:
        """The arguments by parameter name (for an export)."""
        return {p.name: value for p, value in zip(self.params, args, strict=False)}


class WriteKinds:
    """Every kind registered with one batcher: the current version of each op, and the older
    versions kept to replay lines spooled before an upgrade."""

    def __init__(self) -> None:
        self._current: dict[str, WriteKind] = {}
        self._all: dict[tuple[str, int], WriteKind] = {}

    def register(self, kind: WriteKind, *, older: Sequence[WriteKind] = ()) -> None:
        """Make `kind` the op's statement; `older` versions are only ever replayed.

        Raises:
            InvalidInput: the op is registered with another statement, or a version is
                registered twice with different statements.
        """
        known = self._current.get(kind.op)
        if known is not None and known != kind:
            raise InvalidInput(
                f"batch op {kind.op!r} is already registered with another statement",
                suggestion="register each op once, or give the new statement its own version",
            )
        for each in (kind, *older):
            if each.op != kind.op or (each is not kind and each.version >= kind.version):
                raise InvalidInput(
                    f"batch op {kind.op!r}: older statements must be the same op with lower "
                    "versions"
                )
            same = self._all.get((each.op, each.version))
            if same is not None and same != each:
                raise InvalidInput(
                    f"batch op {each.op!r} version {each.version} is registered with another "
                    "statement",
                    suggestion="a changed statement needs a new version",
                )
        self._current[kind.op] = kind
        for each in (kind, *older):
            self._all[(each.op, each.version)] = each

    def current(self, op: str) -> WriteKind | None:
        return self._current.get(op)

    def find(self, op: str, version: int) -> WriteKind | None:
        return self._all.get((op, version))

    def by_digest(self, op: str, digest: str) -> WriteKind | None:
        """The version of `op` whose statement has this fingerprint (lines of the first spool
        format carried the statement itself; it is only compared, never run)."""
        for (name, _), kind in self._all.items():
            if name == op and kind.digest == digest:
                return kind
        return None

    def __len__(self) -> int:
        return len(self._current)
