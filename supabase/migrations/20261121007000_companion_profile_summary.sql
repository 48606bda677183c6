-- The LLM-written profile summary belongs to one companion, not to the person: it is written
-- from that companion's memories and sessions, and one person's companions keep separate
-- lives. The person's own identity (name, preferred name, interests, time zone) stays on
-- public.users, shared by all their companions. The companions policies already cover
-- these columns (row-level security is per row).

alter table public.companions add column if not exists profile_summary text;
alter table public.companions add column if not exists profile_updated_at timestamptz;

-- With one companion, the old per-user summary can only have come from that companion: keep it.
update public.companions c
   set profile_summary = u.profile_summary,
       profile_updated_at = u.profile_updated_at
  from public.users u
 where c.user_id = u.id
   and c.profile_summary is null
   and u.profile_summary is not null
   and (select count(*) from public.companions o where o.user_id = u.id) = 1;

-- With several it may mix their facts. It is derived data: each companion's next refresh
-- writes its own, so nothing is lost by dropping it.
update public.users
   set profile_summary = null, profile_updated_at = null
 where profile_summary is not null;

comment on column public.users.profile_summary is
  'Unused: the profile summary is per companion (public.companions.profile_summary).';
