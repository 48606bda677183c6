-- Personality: PAD mood state and its history, needs, quirks (per user and companion).
create table if not exists public.personality_state (
  user_id uuid not null references public.users (id) on delete cascade,
  companion_id uuid not null references public.companions (id) on delete cascade,
  pleasure real not null default 0.2 check (pleasure between -1 and 1),
  arousal real not null default 0.0 check (arousal between -1 and 1),
  dominance real not null default 0.1 check (dominance between -1 and 1),
  baseline_pleasure real not null default 0.2 check (baseline_pleasure between -1 and 1),
  baseline_arousal real not null default 0.0 check (baseline_arousal between -1 and 1),
  baseline_dominance real not null default 0.1 check (baseline_dominance between -1 and 1),
  emotion text not null default 'content',
  updated_at timestamptz not null default now(),
  primary key (user_id, companion_id)
);

create table if not exists public.personality_history (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  companion_id uuid not null references public.companions (id) on delete cascade,
  pleasure real not null,
  arousal real not null,
  dominance real not null,
  emotion text not null,
  reason text not null,
  created_at timestamptz not null default now()
);
create index if not exists personality_history_scope
  on public.personality_history (user_id, companion_id, created_at desc);

create table if not exists public.needs (
  user_id uuid not null references public.users (id) on delete cascade,
  companion_id uuid not null references public.companions (id) on delete cascade,
  need text not null check (need in ('social', 'intellectual', 'creative', 'rest')),
  level real not null default 0.5 check (level between 0 and 1),
  updated_at timestamptz not null default now(),
  primary key (user_id, companion_id, need)
);

create table if not exists public.quirks (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  companion_id uuid not null references public.companions (id) on delete cascade,
  name text not null,
  description text not null,
  strength real not null default 0.1 check (strength between 0 and 1),
  uses integer not null default 0,
  last_used_at timestamptz,
  created_at timestamptz not null default now()
);
create unique index if not exists quirks_scope_name on public.quirks (user_id, companion_id, name);
