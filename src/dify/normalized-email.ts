// Dify's normalised email (accounts.normalized_email on later main: migrations 9b7c6d5e4f3a and
// d8e4a6b1c902, api/services/account_email.py). Dify fills it for every account it creates and
// refuses a new account whose normalised email another account has; its invite looks an account
// up by email, then by this form. The one place these rules live here: the TypeScript form for
// rows, and the same rules as a SQL expression for accounts whose column is missing or empty.

const GOOGLE = ['gmail.com', 'googlemail.com'];
/** Drop the `+tag`, keep dots and the domain. */
const MICROSOFT = ['outlook.com', 'hotmail.com', 'live.com', 'msn.com'];
/** Drop the `+tag`, keep dots; every domain becomes icloud.com. */
const APPLE = ['icloud.com', 'me.com', 'mac.com'];
/** Drop the `+tag` and the transparent `.`, `_`, `-`; keep the domain. */
const PROTON = ['protonmail.com', 'proton.me', 'pm.me', 'protonmail.ch'];

/**
 * An email as Dify compares accounts: lower-cased; the domain is what follows the last `@`; for
 * the providers above the local part loses its `+tag` (and Gmail's dots, Proton's `.`, `_`, `-`),
 * Gmail and Apple fold their domains. Every other address is only lower-cased.
 */
export function difyNormalizedEmail(email: string): string {
  const lower = email.toLowerCase();
  const at = lower.lastIndexOf('@');
  if (at < 0) return lower;
  const domain = lower.slice(at + 1);
  const untagged = lower.slice(0, at).split('+', 1)[0]!;
  if (GOOGLE.includes(domain)) return `${untagged.replaceAll('.', '')}@gmail.com`;
  if (MICROSOFT.includes(domain)) return `${untagged}@${domain}`;
  if (APPLE.includes(domain)) return `${untagged}@icloud.com`;
  if (PROTON.includes(domain)) return `${untagged.replace(/[._-]/g, '')}@${domain}`;
  return lower;
}

const list = (domains: string[]) => domains.map((d) => `'${d}'`).join(', ');

/**
 * The same rules in SQL, over a text expression (a column, usually): for matching accounts on
 * any Dify release, whether or not it keeps accounts.normalized_email.
 */
export function difyNormalizedEmailSql(expr: string): string {
  const lower = `lower(${expr})`;
  const domain = `substring(${lower} from '@([^@]*)$')`;
  const untagged = `split_part(substring(${lower} from '^(.*)@[^@]*$'), '+', 1)`;
  return `(CASE
      WHEN ${domain} IN (${list(GOOGLE)}) THEN replace(${untagged}, '.', '') || '@gmail.com'
      WHEN ${domain} IN (${list(MICROSOFT)}) THEN ${untagged} || '@' || ${domain}
      WHEN ${domain} IN (${list(APPLE)}) THEN ${untagged} || '@icloud.com'
      WHEN ${domain} IN (${list(PROTON)}) THEN translate(${untagged}, '._-', '') || '@' || ${domain}
      ELSE ${lower} END)`;
}
