// People's profiles (issue 32 item 3): a row's owner_name, owner_language and owner_timezone are
// written into the account the row creates exactly as Dify's register writes them (the timezone
// Dify maps the language to when none is given); members and rows without them get Dify's
// defaults (en-US, America/New_York, the name from the address); an existing account is never
// changed; values outside Dify's lists are rejected at ingest, naming the nearest.
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { cliWorld, until } from '../helpers/cli-world.js';
import { operatorKeyFiles } from '../helpers/dify-invitations.js';

const world = cliWorld();

describe("created people's profiles", () => {
  it("are written as Dify's register writes them, from a CSV through ingest and a worker", async () => {
    const file = await world.file('profiles.csv', [
      // Name, language and timezone given.
      {
        workspace_name: 'Acme',
        owner_email: 'Ana.Lopez@example.com',
        owner_name: 'Ana López',
        owner_language: 'es-ES',
        owner_timezone: 'America/Mexico_City',
        members: 'new.member@example.com:editor',
      },
      // Only the language: the timezone Dify maps it to (ja-JP → Asia/Tokyo); spelled loosely.
      {
        workspace_name: 'Globex',
        owner_email: 'kenji@example.com',
        owner_name: '',
        owner_language: 'ja_jp',
        owner_timezone: '',
        members: '',
      },
      // None: Dify's defaults.
      { workspace_name: 'Initech', owner_email: 'plain@example.com', owner_name: '', owner_language: '', owner_timezone: '', members: '' },
      // An existing account: its profile is Dify's, never changed.
      {
        workspace_name: 'Umbrella',
        owner_email: 'owner1@example.com',
        owner_name: 'Someone Else',
        owner_language: 'fr-FR',
        owner_timezone: 'Europe/Paris',
        members: '',
      },
      // Outside Dify's lists: rejected, naming the nearest.
      { workspace_name: 'Bad', owner_email: 'bad@example.com', owner_name: '', owner_language: 'fr', owner_timezone: 'Paris', members: '' },
    ]);
    const columns = 'email, name, interface_language, interface_theme, timezone, status';
    const before = await world.env.db.query(`SELECT ${columns} FROM accounts WHERE email = 'owner1@example.com'`);
    // The plan lists each row and the accounts it would create, with the profile each would get.
    const plan = await runCli(['ingest', file, '--dry-run', '--rows', '--create-missing-owners'], world.env.env);
    expect(plan.stdout).toContain(
      'line 2: would_create "Acme" owner Ana.Lopez@example.com; creates ana.lopez@example.com (Ana López, es-ES, America/Mexico_City), new.member@example.com (new.member, en-US, America/New_York)\n' +
        'line 3: would_create "Globex" owner kenji@example.com; creates kenji@example.com (kenji, ja-JP, Asia/Tokyo)\n',
    );
    expect(plan.stdout).toContain('line 5: would_create "Umbrella" owner owner1@example.com\n');
    expect(plan.stdout).toContain(
      'line 6: rejected "Bad" owner bad@example.com — owner_language: "fr" is not one of Dify\'s interface languages: did you mean fr-FR?; ' +
        'owner_timezone: "Paris" is not one of Dify\'s timezones (pytz\'s all_timezones, e.g. Europe/Paris): did you mean Europe/Paris?\n',
    );
    const ingest = await runCli(['ingest', file, '--batch-id', 'profiles', '--create-missing-owners'], world.env.env);
    expect(ingest.stderr).toBe(
      'line 6 (owner_language): "fr" is not one of Dify\'s interface languages: did you mean fr-FR?\n' +
        'line 6 (owner_timezone): "Paris" is not one of Dify\'s timezones (pytz\'s all_timezones, e.g. Europe/Paris): did you mean Europe/Paris?\n',
    );
    expect(ingest.stdout).toContain('batch profiles: 5 rows read, 4 queued, 1 rejected');
    world.worker('--concurrency', '2');
    await until(world.done('profiles'), 'the worker to provision the batch');

    const { rows } = await world.env.db.query(
      `SELECT ${columns} FROM accounts
        WHERE email IN ('ana.lopez@example.com', 'new.member@example.com', 'kenji@example.com', 'plain@example.com', 'owner1@example.com')
        ORDER BY email`,
    );
    const row = (name: string, lang: string, tz: string) => ({
      name,
      interface_language: lang,
      interface_theme: 'light',
      timezone: tz,
      status: 'pending',
    });
    expect(rows).toEqual([
      { email: 'ana.lopez@example.com', ...row('Ana López', 'es-ES', 'America/Mexico_City') },
      { email: 'kenji@example.com', ...row('kenji', 'ja-JP', 'Asia/Tokyo') },
      { email: 'new.member@example.com', ...row('new.member', 'en-US', 'America/New_York') },
      before.rows[0],
      { email: 'plain@example.com', ...row('plain', 'en-US', 'America/New_York') },
    ]);
  });

  it('a dry run refuses what the ingest and the worker would refuse: --invite without CONSOLE_WEB_URL, --send-invites without usable mail', async () => {
    const file = await world.file('invite.csv', [{ workspace_name: 'Acme', owner_email: 'new@example.com' }]);
    const noConsole: NodeJS.ProcessEnv = { ...world.env.env, REDIS_HOST: '127.0.0.1' };
    delete noConsole.CONSOLE_WEB_URL;
    const invite = await runCli(['ingest', file, '--dry-run', '--invite', '--create-missing-owners'], noConsole);
    expect(invite.stderr).toContain("invitations (--invite) need Dify's settings:");
    expect(invite.stderr).toContain('CONSOLE_WEB_URL: the address people open');
    expect(invite.stdout).toBe('');
    expect(invite.code).toBe(1);
    const env = { ...world.env.env, REDIS_HOST: '127.0.0.1', CONSOLE_WEB_URL: 'https://dify.example.com', MAIL_TYPE: 'resend' };
    const mail = await runCli(['ingest', file, '--dry-run', '--send-invites', '--create-missing-owners'], env);
    expect(mail.stderr).toContain('MAIL_TYPE: "resend": dify-provision sends invitations through SMTP only');
    expect(mail.code).toBe(1);
    // Settings that work, and a key to seal the links to: the plan goes on.
    const { pub } = await operatorKeyFiles(world.env.dir);
    const fine = await runCli(['ingest', file, '--dry-run', '--invite', '--create-missing-owners', '--seal-to', pub], {
      ...env,
      MAIL_TYPE: '',
    });
    expect(fine.stdout).toContain('would create 1');
  });
});
