// Dify's normalised email, case for case from Dify's own tests (api/tests/unit_tests/services/
// test_account_email.py and the test of migration d8e4a6b1c902), for the unit test and the SQL form.

/** [email, Dify's normalised form] */
export const DIFY_CASES: [string, string][] = [
  // test_normalize_email
  ['User@Example.com', 'user@example.com'],
  ['User@GoogleMail.com', 'user@gmail.com'],
  ['user@gmail.com', 'user@gmail.com'],
  ['u.ser+tag@gmail.com', 'user@gmail.com'],
  ['u.ser+tag@googlemail.com', 'user@gmail.com'],
  ['user+tag@example.com', 'user+tag@example.com'],
  ['u.ser+tag@example.org', 'u.ser+tag@example.org'],
  // test_microsoft_strips_tags_but_preserves_dots_and_domains
  ...['outlook.com', 'hotmail.com', 'live.com', 'msn.com'].flatMap((d): [string, string][] => [
    [`First.Last+tag+other@${d.toUpperCase()}`, `first.last@${d}`],
    [`first.last@${d}`, `first.last@${d}`],
    [`firstlast@${d}`, `firstlast@${d}`],
  ]),
  // test_apple_normalizes_legacy_domains_and_tags
  ...['icloud.com', 'me.com', 'mac.com'].flatMap((d): [string, string][] => [
    [`First.Last+tag@${d.toUpperCase()}`, 'first.last@icloud.com'],
    [`firstlast@${d}`, 'firstlast@icloud.com'],
  ]),
  // test_proton_strips_transparent_characters_and_tags_but_preserves_domain
  ...['protonmail.com', 'proton.me', 'pm.me', 'protonmail.ch'].map((d): [string, string] => [
    `First.Last_Name-Test+tag+other@${d.toUpperCase()}`,
    `firstlastnametest@${d}`,
  ]),
  // test_other_domains_preserve_local_part
  ...['yahoo.com', 'yahoo.co.uk', 'ymail.com', 'mail.com', 'example.com', 'sub.gmail.com', 'outlook.com.example.org'].map(
    (d): [string, string] => [`First.Last_Name-Test+tag@${d.toUpperCase()}`, `first.last_name-test+tag@${d}`],
  ),
  // the migration test's extra rows, and Python's rpartition: the domain follows the last "@"
  ['user+duplicate@outlook.com', 'user@outlook.com'],
  ['User@outlook.com', 'user@outlook.com'],
  ['sub.proton.me@x.org', 'sub.proton.me@x.org'],
  ['First.Last_Name-Test+tag+other@SUB.PROTON.ME', 'first.last_name-test+tag+other@sub.proton.me'],
  ['"a.b@c"@Gmail.com', '"ab@c"@gmail.com'],
  ['no-at-sign.Gmail.com', 'no-at-sign.gmail.com'],
  ['+tag@gmail.com', '@gmail.com'],
];
