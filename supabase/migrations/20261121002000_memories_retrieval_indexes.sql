-- Retrieval support: time-ordered neighbours, vectors kept in the row, per-user term statistics.

-- The turns just before and after a strong match are found by time within one user (then
-- filtered to the scope), which the (user_id, companion_id, occurred_at) index cannot serve in
-- time order when the scope spans a companion and the shared (null) rows.
create index if not exists memories_user_time
  on public.memories (user_id, occurred_at);

-- A 384-float vector (1.5 kB) plus text often passes the 2 kB TOAST threshold, and with the
-- type's default storage the vector is the column moved out of line: every distance computed
-- in an exact scan then costs extra page reads. MAIN keeps it in the row and moves the text
-- out first. Applies to rows written from now on.
alter table public.memories alter column embedding set storage main;

-- How many of a user's memories contain each word (stemmed lexeme), for BM25-style IDF in
-- keyword search: a word the person uses all the time weighs little, a rare one a lot.
-- Rebuilt in the background by the retrieval engine; only lexemes in 2+ memories are kept.
create table if not exists public.memory_term_stats (
  user_id uuid not null references public.users (id) on delete cascade,
  lexeme text not null,
  docs integer not null check (docs > 0),
  primary key (user_id, lexeme)
);

create table if not exists public.memory_term_corpus (
  user_id uuid primary key references public.users (id) on delete cascade,
  docs integer not null check (docs >= 0),
  refreshed_at timestamptz not null default now()
);

do $$
declare
  t text;
begin
  foreach t in array array['memory_term_stats', 'memory_term_corpus'] loop
    execute format('alter table public.%I enable row level security', t);
    execute format('drop policy if exists %I on public.%I', t || '_owner_all', t);
    execute format(
      'create policy %I on public.%I for all to authenticated '
      'using (user_id = auth.uid()) with check (user_id = auth.uid())',
      t || '_owner_all', t
    );
    execute format('grant select, insert, update, delete on public.%I to authenticated', t);
  end loop;
end
$$;
