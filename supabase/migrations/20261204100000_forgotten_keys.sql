-- Keys a person asked to forget, per scope, with the time of the forget.
--
-- A forget deletes every version of a key, but the session's transcript still holds the words
-- said before it, and consolidation (at the session's end, in the maintenance pass, or in
-- another process hours later) distills them with the LLM into that key again. Consolidation
-- reads this table and does not save a key of the scope from words said up to its forget
-- (words said after it may set a new value). The row is written in the same statement as the
-- delete, by the spooled forget too, so it holds in every process, whenever consolidation runs.
-- It is data about the person: in their export, gone with their erasure.
create table if not exists public.forgotten_keys (
  user_id uuid not null references public.users (id) on delete cascade,
  -- null: the memories shared by all of the person's companions.
  companion_id uuid,
  key text not null,
  forgotten_at timestamptz not null,
  constraint forgotten_keys_companion_owner_fkey foreign key (companion_id, user_id)
    references public.companions (id, user_id) on delete cascade
);

-- One row per key and scope (the shared scope included), moved forward by a later forget.
create unique index if not exists forgotten_keys_scope_key
  on public.forgotten_keys (user_id, companion_id, key) nulls not distinct;

alter table public.forgotten_keys enable row level security;
drop policy if exists forgotten_keys_owner_all on public.forgotten_keys;
create policy forgotten_keys_owner_all on public.forgotten_keys for all to authenticated
  using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
grant select, insert, update, delete on public.forgotten_keys to authenticated;
revoke all on public.forgotten_keys from anon;
