-- Memories: explicit (category/key/value, superseded not overwritten) and episodic (each turn).
-- companion_id null means shared at the user level (visible to all of the user's companions).
create table if not exists public.memories (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  companion_id uuid references public.companions (id) on delete cascade,
  kind text not null check (kind in ('explicit', 'episodic')),
  speaker text not null default 'user' check (speaker in ('user', 'assistant', 'system')),
  category text,
  key text,
  value text,
  content text not null,
  content_hash text not null,
  importance real not null default 0.5 check (importance between 0 and 1),
  occurred_at timestamptz not null default now(),
  event_date date,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_accessed_at timestamptz,
  access_count integer not null default 0,
  superseded_by uuid references public.memories (id) on delete set null,
  superseded_at timestamptz,
  source jsonb not null default '{}'::jsonb,
  embedding vector(384),
  tsv tsvector generated always as (to_tsvector('english', content)) stored
);

-- One current value per (user, companion, category, key): saving again supersedes.
create unique index if not exists memories_current_key
  on public.memories (user_id, companion_id, category, key) nulls not distinct
  where kind = 'explicit' and superseded_at is null;
-- Near-duplicate episodic turns are not stored twice.
create unique index if not exists memories_episodic_dedup
  on public.memories (user_id, companion_id, speaker, content_hash) nulls not distinct
  where kind = 'episodic';
create index if not exists memories_user_scope
  on public.memories (user_id, companion_id, occurred_at desc);
create index if not exists memories_embedding_hnsw
  on public.memories using hnsw (embedding vector_cosine_ops);
create index if not exists memories_tsv_gin
  on public.memories using gin (tsv);
