-- Ownership in the schema: a row that points at a session or a companion can only point at one
-- of its own user's.
--
-- Until now row-level security alone guarded ownership, and it checks a row's own user_id: a
-- message with A's user_id and B's session_id was accepted, from a Supabase client signed in as
-- A and from the agent's privileged role alike; B's resumed session then loaded it and
-- consolidation turned it into a memory of B's. Composite foreign keys on (reference, user_id)
-- close this for every role: foreign keys bind the table owner and superusers too, and their
-- checks do not depend on what row-level security lets the writer see.
--
-- Rows that break the rule today can only come from a forged write (the agent writes a session's
-- own user and companion). They are brought in line first, and each kind is counted in a NOTICE:
--   * a nullable reference to another user's companion or session is detached (set to null);
--     the row stays with the user who wrote it: sessions.companion_id, messages.companion_id,
--     follow_ups.companion_id and .session_id, security_incidents.companion_id;
--   * a message in another user's session is deleted: session_id is required, and a message
--     written into someone else's conversation has no conversation of its writer to go to;
--   * a memory on another user's companion is deleted: its scope cannot be repaired without
--     guessing which of the writer's companions it was meant for, and the shared scope would
--     show it to all of them (and may clash with a current key there);
--   * personality state, history, needs and quirks on another user's companion are deleted:
--     they describe one companion's relationship with its own user and mean nothing elsewhere.
--
-- ON DELETE SET NULL with a column list needs Postgres 15 or later (Supabase runs 15+).

-- The targets of the composite keys.
do $$
begin
  if not exists (select 1 from pg_constraint where conname = 'companions_id_user_key'
                 and conrelid = 'public.companions'::regclass) then
    alter table public.companions add constraint companions_id_user_key unique (id, user_id);
  end if;
  if not exists (select 1 from pg_constraint where conname = 'sessions_id_user_key'
                 and conrelid = 'public.sessions'::regclass) then
    alter table public.sessions add constraint sessions_id_user_key unique (id, user_id);
  end if;
end
$$;

do $$
declare
  n bigint;
  t text;
begin
  delete from public.messages m using public.sessions s
   where s.id = m.session_id and s.user_id <> m.user_id;
  get diagnostics n = row_count;
  if n > 0 then
    raise notice 'ownership: deleted % message(s) in another user''s session', n;
  end if;

  foreach t in array array[
    'memories', 'personality_state', 'personality_history', 'needs', 'quirks'
  ] loop
    execute format(
      'delete from public.%I r using public.companions c '
      'where c.id = r.companion_id and c.user_id <> r.user_id', t
    );
    get diagnostics n = row_count;
    if n > 0 then
      raise notice 'ownership: deleted % row(s) of % on another user''s companion', n, t;
    end if;
  end loop;

  foreach t in array array['sessions', 'messages', 'follow_ups', 'security_incidents'] loop
    execute format(
      'update public.%I r set companion_id = null from public.companions c '
      'where c.id = r.companion_id and c.user_id <> r.user_id', t
    );
    get diagnostics n = row_count;
    if n > 0 then
      raise notice 'ownership: detached % row(s) of % from another user''s companion', n, t;
    end if;
  end loop;

  update public.follow_ups f set session_id = null from public.sessions s
   where s.id = f.session_id and s.user_id <> f.user_id;
  get diagnostics n = row_count;
  if n > 0 then
    raise notice 'ownership: detached % follow-up(s) from another user''s session', n;
  end if;
end
$$;

-- The single-column keys to companions and sessions give way to the composite ones, which
-- check the same existence and the owner. security_incidents keeps its own: an incident may
-- outlive its user (user_id set null), and its companion reference must still exist then.
do $$
declare
  fk record;
begin
  for fk in
    select c.conrelid::regclass as tbl, c.conname
      from pg_constraint c
     where c.contype = 'f'
       and cardinality(c.conkey) = 1
       and c.confrelid in ('public.companions'::regclass, 'public.sessions'::regclass)
       and c.conrelid in (
         'public.sessions'::regclass, 'public.messages'::regclass, 'public.memories'::regclass,
         'public.personality_state'::regclass, 'public.personality_history'::regclass,
         'public.needs'::regclass, 'public.quirks'::regclass, 'public.follow_ups'::regclass
       )
  loop
    execute format('alter table %s drop constraint %I', fk.tbl, fk.conname);
  end loop;
end
$$;

alter table public.sessions
  drop constraint if exists sessions_companion_owner_fkey,
  add constraint sessions_companion_owner_fkey foreign key (companion_id, user_id)
    references public.companions (id, user_id) on delete cascade;

alter table public.messages
  drop constraint if exists messages_session_owner_fkey,
  add constraint messages_session_owner_fkey foreign key (session_id, user_id)
    references public.sessions (id, user_id) on delete cascade,
  drop constraint if exists messages_companion_owner_fkey,
  add constraint messages_companion_owner_fkey foreign key (companion_id, user_id)
    references public.companions (id, user_id) on delete cascade;

alter table public.memories
  drop constraint if exists memories_companion_owner_fkey,
  add constraint memories_companion_owner_fkey foreign key (companion_id, user_id)
    references public.companions (id, user_id) on delete cascade;

alter table public.personality_state
  drop constraint if exists personality_state_companion_owner_fkey,
  add constraint personality_state_companion_owner_fkey foreign key (companion_id, user_id)
    references public.companions (id, user_id) on delete cascade;

alter table public.personality_history
  drop constraint if exists personality_history_companion_owner_fkey,
  add constraint personality_history_companion_owner_fkey foreign key (companion_id, user_id)
    references public.companions (id, user_id) on delete cascade;

alter table public.needs
  drop constraint if exists needs_companion_owner_fkey,
  add constraint needs_companion_owner_fkey foreign key (companion_id, user_id)
    references public.companions (id, user_id) on delete cascade;

alter table public.quirks
  drop constraint if exists quirks_companion_owner_fkey,
  add constraint quirks_companion_owner_fkey foreign key (companion_id, user_id)
    references public.companions (id, user_id) on delete cascade;

-- A follow-up outlives its session (kept, session_id set null), as before.
alter table public.follow_ups
  drop constraint if exists follow_ups_companion_owner_fkey,
  add constraint follow_ups_companion_owner_fkey foreign key (companion_id, user_id)
    references public.companions (id, user_id) on delete cascade,
  drop constraint if exists follow_ups_session_owner_fkey,
  add constraint follow_ups_session_owner_fkey foreign key (session_id, user_id)
    references public.sessions (id, user_id) on delete set null (session_id);

-- An incident outlives its companion (kept, companion_id set null), as before.
alter table public.security_incidents
  drop constraint if exists security_incidents_companion_owner_fkey,
  add constraint security_incidents_companion_owner_fkey foreign key (companion_id, user_id)
    references public.companions (id, user_id) on delete set null (companion_id);
