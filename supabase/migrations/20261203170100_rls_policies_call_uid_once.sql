-- Row-level security policies call auth.uid() once per statement instead of once per row.
--
-- In `user_id = auth.uid()` the function is evaluated for every row the policy filters (it is
-- STABLE, so the planner may not fold it into a constant). Written `(select auth.uid())`, it
-- runs once as an InitPlan and each row is compared with its result: the same rule and the same
-- rows, as Supabase's RLS performance advice recommends. bench/rls_policy.py measures both
-- forms on a 100k-row scan as `authenticated`.
--
-- anon, Supabase's role for requests without a signed-in user, has no business with personal
-- tables: whatever Supabase's default privileges granted it on them is revoked.
do $$
declare
  t text;
begin
  foreach t in array array[
    'memories', 'sessions', 'messages', 'companions', 'personality_state',
    'personality_history', 'needs', 'quirks', 'follow_ups', 'security_incidents',
    'memory_term_stats', 'memory_term_corpus'
  ] loop
    execute format('drop policy if exists %I on public.%I', t || '_owner_all', t);
    execute format(
      'create policy %I on public.%I for all to authenticated '
      'using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()))',
      t || '_owner_all', t
    );
    execute format('revoke all on public.%I from anon', t);
  end loop;
end
$$;

drop policy if exists users_self_all on public.users;
create policy users_self_all on public.users for all to authenticated
  using (id = (select auth.uid())) with check (id = (select auth.uid()));
revoke all on public.users from anon;

drop policy if exists memory_tombstones_owner_read on public.memory_tombstones;
create policy memory_tombstones_owner_read on public.memory_tombstones for select
  to authenticated using (user_id = (select auth.uid()));
revoke all on public.memory_tombstones from anon;
