-- Change tracking for the retrieval engine's in-process indexes (rag_system/local_index.py).
--
-- A worker keeps a copy of an active user's memories (vectors, words, times) to search them
-- without a database scan; Postgres stays the source of truth. Before each search it asks
-- for what changed since its copy was taken: rows whose `rev` (the id of the transaction
-- that last wrote them) is at or past the oldest transaction still running when the copy was
-- taken, and the ids deleted since then. Transaction ids never repeat (xid8 is 64-bit), and a
-- write that was still uncommitted then has an id at or past that horizon, so nothing is
-- missed however commits interleave.

alter table public.memories
  add column if not exists rev xid8 not null default pg_current_xact_id();

create index if not exists memories_user_rev on public.memories (user_id, rev);

create or replace function public.memories_stamp_rev() returns trigger
language plpgsql as $$
begin
  new.rev := pg_current_xact_id();
  return new;
end
$$;

drop trigger if exists memories_stamp_rev on public.memories;
create trigger memories_stamp_rev
  before update on public.memories
  for each row execute function public.memories_stamp_rev();

-- Deleted memories, kept for a day so a copy taken before the delete can drop them. No foreign
-- key to users: deleting a user cascades here too and must still leave the ids behind.
create table if not exists public.memory_tombstones (
  user_id uuid not null,
  memory_id uuid not null,
  rev xid8 not null default pg_current_xact_id(),
  deleted_at timestamptz not null default now()
);

create index if not exists memory_tombstones_user_rev
  on public.memory_tombstones (user_id, rev);
create index if not exists memory_tombstones_deleted_at
  on public.memory_tombstones (deleted_at);

-- Security definer: an authenticated user deleting their own memories may not write here.
create or replace function public.memories_leave_tombstones() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  insert into public.memory_tombstones (user_id, memory_id)
  select g.user_id, g.id from gone g;
  return null;
end
$$;

drop trigger if exists memories_leave_tombstones on public.memories;
create trigger memories_leave_tombstones
  after delete on public.memories
  referencing old table as gone
  for each statement execute function public.memories_leave_tombstones();

alter table public.memory_tombstones enable row level security;
drop policy if exists memory_tombstones_owner_read on public.memory_tombstones;
create policy memory_tombstones_owner_read on public.memory_tombstones for select
  to authenticated using (user_id = auth.uid());
grant select on public.memory_tombstones to authenticated;
