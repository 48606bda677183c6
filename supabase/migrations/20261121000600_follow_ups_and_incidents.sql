-- Follow-ups to raise next time, and security incidents (prompt injection, abuse).
create table if not exists public.follow_ups (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  companion_id uuid references public.companions (id) on delete cascade,
  session_id uuid references public.sessions (id) on delete set null,
  topic text not null,
  detail text not null default '',
  due_at timestamptz,
  status text not null default 'open' check (status in ('open', 'raised', 'done', 'dropped')),
  raised_at timestamptz,
  created_at timestamptz not null default now()
);
create index if not exists follow_ups_open on public.follow_ups (user_id, companion_id, status, due_at);

create table if not exists public.security_incidents (
  id uuid primary key default gen_random_uuid(),
  user_id uuid references public.users (id) on delete set null,
  companion_id uuid references public.companions (id) on delete set null,
  kind text not null,
  detail text not null default '',
  excerpt text not null default '',
  created_at timestamptz not null default now()
);
create index if not exists security_incidents_user on public.security_incidents (user_id, created_at desc);
