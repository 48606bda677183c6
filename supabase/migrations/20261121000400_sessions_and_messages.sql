-- Conversations: one row per session, one per message; summaries carry continuity.
create table if not exists public.sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  companion_id uuid references public.companions (id) on delete cascade,
  room text,
  started_at timestamptz not null default now(),
  last_activity_at timestamptz not null default now(),
  ended_at timestamptz,
  turn_count integer not null default 0,
  summary text,
  summarized_at timestamptz,
  consolidated_through timestamptz
);
create index if not exists sessions_user_recent
  on public.sessions (user_id, companion_id, started_at desc);

create table if not exists public.messages (
  id uuid primary key default gen_random_uuid(),
  session_id uuid not null references public.sessions (id) on delete cascade,
  user_id uuid not null references public.users (id) on delete cascade,
  companion_id uuid references public.companions (id) on delete cascade,
  role text not null check (role in ('user', 'assistant', 'system', 'tool')),
  content text not null,
  modality text not null default 'text',
  created_at timestamptz not null default now()
);
create index if not exists messages_session_time on public.messages (session_id, created_at);
create index if not exists messages_user_time on public.messages (user_id, created_at desc);
