-- Memory maintenance: where the periodic pass stands, which session a process is
-- consolidating, and which profile summaries a consolidation made stale.

-- One row per kind of pass ('memory'). The lease says which process runs it now (a worker's
-- maintenance child, or `python manage.py maintenance`); it expires on its own if that process
-- dies. It is a row, not a session-level advisory lock, because a session-level lock taken
-- through a transaction pooler (Supabase on 6543) stays with whichever server connection the
-- pooler happened to use, and would never be released.
create table if not exists public.maintenance_state (
  name text primary key,
  holder text,
  lease_until timestamptz,
  last_pass_at timestamptz,
  -- When decay last ran (it runs at most hourly: each row decays at most once a day).
  decayed_at timestamptz,
  -- Explicit memories created since this moment put their scope up for merging and
  -- contradiction checks; older scopes were checked already.
  upkeep_through timestamptz
);

-- Operational data of the agent, not anybody's: Supabase clients get nothing (row-level
-- security with no policy, and whatever default privileges granted them revoked).
alter table public.maintenance_state enable row level security;
do $$
declare
  r text;
begin
  foreach r in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = r) then
      execute format('revoke all on table public.maintenance_state from %I', r);
    end if;
  end loop;
end
$$;

-- The process consolidating the session now, until when (renewed with every batch): one run
-- per session, without a lock held across LLM calls. A run that dies leaves it to expire.
alter table public.sessions add column if not exists consolidating_until timestamptz;
alter table public.sessions add column if not exists consolidation_holder text;

-- Set when a consolidation of the session added to what its companion's profile summary is
-- written from; cleared by the refresh that read it. A job that ends before its refresh leaves
-- it set, and the next session start or maintenance pass refreshes the summary.
alter table public.sessions add column if not exists profile_due_at timestamptz;
create index if not exists sessions_profile_due
  on public.sessions (user_id, companion_id) where profile_due_at is not null;

-- The maintenance pass checks only the scopes with explicit memories created since its last
-- pass; this finds them without reading the episodic log.
create index if not exists memories_explicit_current_created
  on public.memories (created_at) where kind = 'explicit' and superseded_at is null;
