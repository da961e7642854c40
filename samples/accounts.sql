-- Sample Dify accounts for the demo: the owners and members that samples/workspaces.csv names.
-- (Dify's own sign-up writes these; here they stand in for a Dify with users already.)
INSERT INTO accounts (name, email, status, interface_language, interface_theme, timezone, initialized_at) VALUES
  ('Ana Lima',      'ana@acme.example',       'active', 'en-US', 'light', 'America/New_York', now()),
  ('Bob Stone',     'bob@acme.example',       'active', 'en-US', 'light', 'America/New_York', now()),
  ('Chen Wei',      'chen@globex.example',    'active', 'en-US', 'light', 'America/New_York', now()),
  ('Dara Okafor',   'dara@initech.example',   'active', 'en-US', 'light', 'America/New_York', now()),
  ('Eli Novak',     'eli@umbrella.example',   'active', 'en-US', 'light', 'America/New_York', now()),
  ('Farah Khan',    'farah@hooli.example',    'active', 'en-US', 'light', 'America/New_York', now()),
  ('Gus Ortega',    'gus@hooli.example',      'active', 'en-US', 'light', 'America/New_York', now()),
  ('Hana Sato',     'hana@stark.example',     'active', 'en-US', 'light', 'America/New_York', now()),
  ('Ivan Petrov',   'ivan@wayne.example',     'active', 'en-US', 'light', 'America/New_York', now()),
  ('Banned Person', 'banned@acme.example',    'banned', 'en-US', 'light', 'America/New_York', now());
