-- People and their companions (several per person, each with its own name and character).
create table if not exists public.users (
  id uuid primary key,
  display_name text,
  preferred_name text,
  timezone text,
  interests text[] not null default '{}',
  profile_summary text,
  profile_updated_at timestamptz,
  onboarding_state text not null default 'new'
    check (onboarding_state in ('new', 'in_progress', 'done')),
  onboarded_at timestamptz,
  metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  last_seen_at timestamptz
);

create table if not exists public.companions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  name text not null,
  character text not null default 'friend',
  persona text not null default '',
  language text not null default 'en',
  voice text,
  response_length text not null default 'short'
    check (response_length in ('short', 'medium', 'long')),
  openness real not null default 0.6 check (openness between 0 and 1),
  conscientiousness real not null default 0.6 check (conscientiousness between 0 and 1),
  extraversion real not null default 0.6 check (extraversion between 0 and 1),
  agreeableness real not null default 0.75 check (agreeableness between 0 and 1),
  neuroticism real not null default 0.3 check (neuroticism between 0 and 1),
  is_default boolean not null default false,
  created_at timestamptz not null default now()
);

create unique index if not exists companions_user_name_key
  on public.companions (user_id, lower(name));
create unique index if not exists companions_one_default_per_user
  on public.companions (user_id) where is_default;
