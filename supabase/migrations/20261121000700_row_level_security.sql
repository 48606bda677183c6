-- Row-level security: an authenticated Supabase user sees and writes only their own rows.
-- The agent connects with a privileged role (table owner / service role) and is not limited.
do $$
declare
  t text;
begin
  foreach t in array array[
    'memories', 'sessions', 'messages', 'companions', 'personality_state',
    'personality_history', 'needs', 'quirks', 'follow_ups', 'security_incidents'
  ] loop
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

alter table public.users enable row level security;
drop policy if exists users_self_all on public.users;
create policy users_self_all on public.users for all to authenticated
  using (id = auth.uid()) with check (id = auth.uid());
grant select, insert, update, delete on public.users to authenticated;
grant usage on schema public to authenticated;
