"""Candidate generation: one SQL round trip, scoped to the user (and companion) in SQL.

The statement unions up to three sources, each already restricted to the caller's scope:
  * vector: nearest rows by cosine distance, by one of two plans (see `VectorPlan`);
  * keywords: rows matching any query word (OR, stemmed, no stop words), scored by the IDF
    weight of the words they contain, from this user's own document frequencies
    (`memory_term_stats`), so a word the person says all the time weighs little and a rare one
    a lot; words in a large share of the memories score but do not pull rows in;
  * time: rows inside the window of a temporal hint ("last week"), nearest first;
and then fetches the turns said just before and after the strongest rows (same conversation,
within a few minutes), because an answer often sits next to the turn that matches the question.

Why two vector plans: pgvector 0.6 has no iterative index scans, so `WHERE user_id = $1 ORDER
BY embedding <=> $2 LIMIT k` on an HNSW index shared by many users can filter *after* the index
has produced its ef_search rows and come back short, and a prepared statement's generic plan
picks exactly that. `EXACT` computes the distance in a subquery the planner cannot turn into an
index scan (no ORDER BY on the column, OFFSET 0 fences it), so it reads the user's rows by the
btree on user_id and sorts them: exact, never short, and as fast as the index for users with a
few thousand rows. `ANN` asks the index for the global nearest rows with no filter (a plan the
index always serves) and filters them outside; the caller checks the count and falls back to
`EXACT` when too few of them were the user's.

Stored and query vectors are L2-normalized (the `Embedder` contract), so cosine similarity is
the plain dot product: exact scans use `<#>` (negative inner product), which costs about half
of `<=>` per row; only the HNSW plan uses `<=>`, the operator its index was built for.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import asyncpg
import numpy as np

from core.memory_records import Memory
from rag_system.batch import CandidateBatch, batch_from_records, matrix_from_sent
from rag_system.query import PreparedQuery

_COLUMNS = (
    "m.id, m.user_id, m.companion_id, m.kind, m.speaker, m.category, m.key, m.value, "
    "m.content, m.importance, m.occurred_at, m.event_date, m.created_at, m.superseded_at, "
    "m.access_count, m.last_accessed_at, m.source"
)


class VectorPlan(str, Enum):
    """How vector candidates are found (see the module docstring)."""

    EXACT = "exact"
    ANN = "ann"


@dataclass(frozen=True)
class CandidateLimits:
    """Sizes of each candidate source; inlined into the SQL so plans never depend on them.

    Attributes:
        vector: nearest rows kept from the vector source.
        keyword: best BM25 rows kept from the keyword source.
        time: nearest rows kept from inside a temporal hint's window.
        anchors: top rows of each source whose neighbouring turns are fetched.
        neighbours: turns fetched on each side of an anchor.
        neighbour_gap_s: turns further apart than this are not neighbours.
        keyword_match_cap: most matching rows scored (bounds the cost for huge users).
        keyword_probe_rows: the rarest query words, up to this many expected matching rows
            (from the user's word statistics), select the keyword candidates; the other
            words only add to their scores.
        ann_ef: rows asked of the HNSW index on the ANN plan; the caller raises hnsw.ef_search
            to it (the index returns at most ef_search rows).
        window_source_max_days: a time window up to this long adds its own candidates; a
            longer one only boosts the rows inside it.
    """

    vector: int = 20
    keyword: int = 20
    time: int = 20
    anchors: int = 8
    neighbours: int = 2
    neighbour_gap_s: int = 1800
    keyword_match_cap: int = 2000
    keyword_probe_rows: int = 120
    ann_ef: int = 400
    window_source_max_days: float = 45.0


@dataclass(slots=True)
class Candidate:
    """One row that some source proposed, with its raw evidence.

    Attributes:
        similarity: cosine similarity to the query embedding (None without an embedding or a
            stored vector).
        keyword: IDF weight of the query words the row contains (0 when none matched).
        coverage: share of the IDF weight of the turn's own words that the row matched (0..1;
            words borrowed from recent turns can add to it but never dilute it).
        vector_rank / keyword_rank: 1-based rank in that source, None if it did not propose it.
        in_window: whether it lies in the query's time window.
        session: the conversation it belongs to (source session_id), when known.
        links: ids of the neighbouring turns fetched for it (when it was an anchor).
    """

    id: uuid.UUID
    occurred_at: datetime
    companion_id: uuid.UUID | None
    kind: str
    importance: float
    access_count: int
    similarity: float | None
    keyword: float
    coverage: float
    vector_rank: int | None
    keyword_rank: int | None
    in_window: bool
    session: str | None
    links: list[uuid.UUID]
    record: Any = field(repr=False, default=None)
    _memory: Memory | None = field(repr=False, default=None)

    @property
    def memory(self) -> Memory:
        """The full row as a `Memory` (built on first use: most candidates never need it)."""
        if self._memory is None:
            record = dict(self.record.items())
            if isinstance(record["source"], str):
                record["source"] = json.loads(record["source"])
            self._memory = Memory.from_record(record)
        return self._memory


def vector_matrix(candidates: Sequence[Candidate]) -> np.ndarray:
    """The candidates' stored embeddings as one matrix (zero rows where there is none)."""
    return matrix_from_sent([c.record["vec"] if c.record is not None else None
                             for c in candidates])


class SqlParams:
    """Numbers positional parameters as the SQL is assembled."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _scope(alias: str, user: str, companion: str, assistant: str) -> str:
    # companion_id null means shared at the user level: visible with any companion of the user.
    return (
        f"{alias}.user_id = {user} and ({alias}.companion_id = {companion} "
        f"or {alias}.companion_id is null) and {alias}.superseded_at is null "
        f"and ({assistant} or {alias}.speaker <> 'assistant')"
    )


def build_sql(
    *,
    plan: VectorPlan,
    has_vector: bool,
    has_keywords: bool,
    has_window: bool,
    limits: CandidateLimits,
    params: SqlParams,
    user_id: uuid.UUID,
    companion_id: uuid.UUID | None,
    include_assistant: bool,
    query_vector: np.ndarray | None,
    query: PreparedQuery,
    k: int = 10,
) -> str | None:
    """The candidate statement for this combination of sources; fills `params` in order.

    None when there is nothing to search with (no vector, no keywords, no narrow window).
    """
    user = params.add(user_id) + "::uuid"
    companion = params.add(companion_id) + "::uuid"
    assistant = params.add(include_assistant) + "::boolean"
    scope = _scope("m", user, companion, assistant)
    ctes: list[str] = []
    sources: list[str] = []
    # Sent as float4[] (asyncpg's binary array codec) rather than vector text: formatting and
    # parsing 384 decimals costs more than the rest of the parameters together.
    # The scalar subquery makes the cast an InitPlan run once; a bare `$n::real[]::vector` in a
    # generic plan is cast again for every row it is compared with.
    qvec = (
        "(select "
        + params.add(np.asarray(query_vector, dtype=np.float32).tolist())
        + "::real[]::vector)"
        if has_vector and query_vector is not None
        else None
    )

    # At least k from the vector source, so a scope holding k rows always yields k.
    n_vector = max(int(limits.vector), int(k))
    if has_vector:
        if plan is VectorPlan.EXACT:
            ctes.append(
                f"""vec as materialized (
  select s.id, row_number() over (order by s.dist) as vrank
  from (select m.id, m.embedding <#> {qvec} as dist from public.memories m
        where {scope} and m.embedding is not null offset 0) s
  order by s.dist limit {n_vector}
)"""
            )
        else:
            outer = _scope("s", user, companion, assistant)
            ctes.append(
                f"""vec as materialized (
  select s.id, row_number() over (order by s.dist) as vrank
  from (select m.id, m.user_id, m.companion_id, m.superseded_at, m.speaker,
               m.embedding <=> {qvec} as dist
        from public.memories m order by m.embedding <=> {qvec} limit {int(limits.ann_ef)}) s
  where {outer}
  order by s.dist limit {n_vector}
)"""
            )
        sources.append("select id from vec")

    if has_keywords:
        cap = int(limits.keyword_match_cap)
        if plan is VectorPlan.ANN:
            # A large scope: the word index alone finds few rows, while and-ing it with the
            # user's btree bitmap would read every entry of the user's. The fence keeps the
            # planner (whose generic plan assumes an average user) from doing that.
            fenced = _scope("s", user, companion, assistant)
            matched = f"""
  select s.id, length(s.tsv) as dl, s.tsv
  from (select m.id, m.tsv, m.user_id, m.companion_id, m.superseded_at, m.speaker
        from public.memories m where m.tsv @@ (select q from probe) offset 0) s
  where {fenced} limit {cap}
"""
        else:
            matched = f"""
  select m.id, length(m.tsv) as dl, m.tsv from public.memories m
  where {scope} and m.tsv @@ (select q from probe) limit {cap}
"""
        words = params.add(list(query.words)) + "::text[]"
        weights = params.add([float(w) for w in query.weights]) + "::float8[]"
        ctes.append(
            f"""terms as (
  select t.lexeme as term, max(x.w) as w
  from unnest({words}, {weights}) as x(word, w)
  cross join lateral unnest(to_tsvector('english', x.word)) as t
  group by t.lexeme
),
corpus as (
  select coalesce(
    (select c.docs from public.memory_term_corpus c where c.user_id = {user}), 0
  )::float8 as n
),
weighted as materialized (
  select t.term, t.w, quote_literal(t.term)::tsquery as q, d.df, c.n,
         case when c.n > 0
              then ln(1 + (greatest(c.n, d.df) - d.df + 0.5) / (d.df + 0.5))
              else 1.0 end as idf
  from terms t cross join corpus c
  cross join lateral (
    select coalesce((select s.docs from public.memory_term_stats s
                     where s.user_id = {user} and s.lexeme = t.term), 0)::float8 as df
  ) d
),
probe as (
  -- The rarest words pull rows in, as many as fit a budget of expected rows (always the
  -- rarest one); commoner words still score on the rows they bring in but cannot flood the
  -- pool with rows whose only tie to the query is a word said all the time.
  select string_agg(quote_literal(term), ' | ')::tsquery as q
  from (
    select term, sum(df) over (order by df, term) as cum,
           row_number() over (order by df, term) as rn
    from weighted
  ) ranked
  where cum <= {int(limits.keyword_probe_rows)} or rn = 1
),
matched as materialized ({matched}),
kw as materialized (
  -- Coverage is measured against the turn's own words (weight 1): words borrowed from the
  -- recent turns may add to it but must not dilute a row that answers the turn itself.
  select s.id, s.kw,
         least(1.0, s.kw / coalesce(
           nullif((select sum(w * idf) from weighted where w >= 1.0), 0),
           nullif((select sum(w * idf) from weighted), 0))) as coverage,
         row_number() over (order by s.kw desc, s.dl, s.id) as frank
  from (
    select mt.id, mt.dl, sum(w.w * w.idf) as kw
    from matched mt join weighted w on mt.tsv @@ w.q
    group by mt.id, mt.dl
  ) s
),
fts as (select id, frank from kw where frank <= {int(limits.keyword)})"""
        )
        sources.append("select id from fts")

    window_test = "false"
    window = query.window if has_window else None
    if window is not None:
        start = params.add(window.start) + "::timestamptz"
        end = params.add(window.end) + "::timestamptz"
        window_test = (
            f"((m.occurred_at >= {start} and m.occurred_at < {end}) or "
            f"(m.event_date >= {start}::date and m.event_date < {end}::date))"
        )
    span_days = (window.end - window.start).total_seconds() / 86_400 if window else 0.0
    has_time_source = window is not None and span_days <= limits.window_source_max_days
    if has_time_source:
        # A narrow window is a source of its own; a wide one ("in 2023") only boosts.
        order = f"s.embedding <#> {qvec}" if has_vector else "s.occurred_at desc"
        ctes.append(
            f"""tw as materialized (
  select s.id from (select m.id, m.embedding, m.occurred_at from public.memories m
                    where {scope} and {window_test} offset 0) s
  order by {order} limit {int(limits.time)}
)"""
        )
        sources.append("select id from tw")
    if not sources:
        return None

    anchor_sources = []
    if has_vector:
        anchor_sources.append(f"select id from vec where vrank <= {int(limits.anchors)}")
    if has_keywords:
        anchor_sources.append(f"select id from fts where frank <= {int(limits.anchors)}")
    if not anchor_sources:
        anchor_sources.append(f"select id from tw limit {int(limits.anchors)}")
    near = _scope("n", user, companion, assistant)
    gap = f"interval '{int(limits.neighbour_gap_s)} seconds'"
    same_conversation = (
        "n.companion_id is not distinct from a.companion_id and n.kind = a.kind and "
        "(a.source->>'session_id' is null or n.source->>'session_id' is null or "
        "n.source->>'session_id' = a.source->>'session_id')"
    )
    width = int(limits.neighbours)
    ctes.append(f"pool as ({' union '.join(sources)})")
    ctes.append(
        f"""anchors as (
  select m.id, m.occurred_at, m.companion_id, m.kind, m.source
  from ({' union '.join(anchor_sources)}) x join public.memories m on m.id = x.id
),
nbr as (
  select a.id as anchor, x.id from anchors a cross join lateral (
    (select n.id from public.memories n
     where {near} and n.occurred_at < a.occurred_at
       and n.occurred_at >= a.occurred_at - {gap} and {same_conversation}
     order by n.occurred_at desc limit {width})
    union all
    (select n.id from public.memories n
     where {near} and n.occurred_at > a.occurred_at
       and n.occurred_at <= a.occurred_at + {gap} and {same_conversation}
     order by n.occurred_at limit {width})
  ) x
),
links as (select anchor, array_agg(id) as ids from nbr group by anchor),
ids as (select id from pool union select id from nbr)"""
    )
    similarity = f"-(m.embedding <#> {qvec})" if has_vector else "null::float8"
    keyword = "coalesce(b.kw, 0)" if has_keywords else "0::float8"
    coverage = "coalesce(b.coverage, 0)" if has_keywords else "0::float8"
    vrank = "v.vrank" if has_vector else "null::bigint"
    frank = (
        f"case when b.frank <= {int(limits.keyword)} then b.frank end"
        if has_keywords
        else "null::bigint"
    )
    joins = ""
    if has_vector:
        joins += " left join vec v on v.id = m.id"
    if has_keywords:
        joins += " left join kw b on b.id = m.id"
    return (
        "with "
        + ",\n".join(ctes)
        + f"""
select {_COLUMNS}, {similarity} as similarity, {keyword} as keyword, {coverage} as coverage,
       {vrank} as vrank, {frank} as frank, {window_test} as in_window,
       m.source->>'session_id' as session,
       l.ids as links,
       case when m.embedding is null then null else vector_send(m.embedding) end as vec
from ids join public.memories m on m.id = ids.id
left join links l on l.anchor = m.id{joins}"""
    )


@dataclass(frozen=True)
class CandidateSet:
    """What one candidate query returned, and how.

    Attributes:
        vector_found: how many rows the vector source produced (to detect a short ANN result).
        plan: the vector plan that produced them.
    """

    batch: CandidateBatch
    vector_found: int
    plan: VectorPlan


async def fetch_candidates(
    conn: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    companion_id: uuid.UUID | None,
    include_assistant: bool,
    query: PreparedQuery,
    query_vector: np.ndarray | None,
    plan: VectorPlan,
    limits: CandidateLimits,
    k: int = 10,
) -> CandidateSet:
    """Run the candidate statement once with the given vector plan."""
    params = SqlParams()
    has_vector = query_vector is not None
    sql = build_sql(
        plan=plan,
        has_vector=has_vector,
        has_keywords=bool(query.words),
        has_window=query.window is not None,
        limits=limits,
        params=params,
        user_id=user_id,
        companion_id=companion_id,
        include_assistant=include_assistant,
        query_vector=query_vector,
        query=query,
        k=k,
    )
    rows = [] if sql is None else await conn.fetch(sql, *params.values)
    batch = batch_from_records(rows)
    found = int(np.count_nonzero(batch.vector_rank))
    return CandidateSet(batch=batch, vector_found=found, plan=plan)


async def count_scope(
    conn: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    companion_id: uuid.UUID | None,
    include_assistant: bool,
    cap: int,
) -> int:
    """Rows in the caller's scope, counted up to `cap` (an index-only scan on user_id)."""
    scope = _scope("m", "$1::uuid", "$2::uuid", "$3::boolean")
    return int(
        await conn.fetchval(
            f"select count(*) from (select 1 from public.memories m where {scope} "
            f"limit {int(cap)}) s",
            user_id,
            companion_id,
            include_assistant,
        )
    )


