// One CSV row, validated: the zod schema is the single source of truth for a row's shape.
import { z } from 'zod';
import { isStrictUuid, MEMBER_ROLES, type MemberRole } from '../common/types.js';
import { LANGUAGE_TIMEZONES, TIMEZONES } from '../dify/profile-lists.js';

export const COLUMNS = [
  'workspace_name',
  'owner_email',
  'plan',
  'members',
  'external_id',
  'workspace_id',
  'dataset_api_key',
  'owner_name',
  'owner_language',
  'owner_timezone',
] as const;
export type Column = (typeof COLUMNS)[number];
export const REQUIRED_COLUMNS: readonly Column[] = ['workspace_name', 'owner_email'];

// Control characters (C0, DEL, C1) and the replacement character that invalid UTF-8 decodes to.
export const CONTROL = /[\u0000-\u001f\u007f-\u009f]/u;
const length = (s: string) => [...s].length;

/**
 * Bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) reorder the text after
 * them: a name carrying one reads as another name (or another customer's) in Dify and in reports.
 */
const BIDI_CONTROL = /[\u202a-\u202e\u2066-\u2069]/u;
/**
 * A name that shows nothing: only blanks, format characters (Unicode category Cf: zero-width
 * spaces and joiners, the word joiner, soft hyphen, BOM, ...), other characters that are not
 * drawn (default-ignorable: Hangul fillers, variation selectors) and the blank braille pattern.
 */
const INVISIBLE = /^[\s\p{Cf}\p{Default_Ignorable_Code_Point}\u2800]*$/u;
const codePoint = (c: string) => `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;

/**
 * What is wrong with a workspace's name as people see it (undefined: nothing): it must show
 * something, in the order it is written. For new workspaces and renames alike.
 */
export function unseenName(s: string): string | undefined {
  if (s === '') return 'is empty';
  if (INVISIBLE.test(s)) return `shows nothing: it has only invisible characters (${[...new Set(s)].map(codePoint).join(' ')})`;
  const bidi = BIDI_CONTROL.exec(s);
  if (bidi) return `contains ${codePoint(bidi[0])}, a bidi override or isolate that changes the order in which the name reads`;
  return undefined;
}
const visibleName = (s: string, ctx: z.RefinementCtx<string>) => {
  const problem = unseenName(s);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
};

const text = (max: number) =>
  z
    .string()
    // NFC: the same name typed on macOS (NFD) and elsewhere is one name, and one key.
    .transform((s) => s.trim().normalize('NFC'))
    .refine((s) => !s.includes('\ufffd'), 'is not valid UTF-8')
    .refine((s) => s.isWellFormed(), 'is not valid UTF-8 (a lone UTF-16 surrogate)')
    .refine((s) => !CONTROL.test(s), 'contains control characters')
    .refine((s) => length(s) <= max, `is longer than ${max} characters`);

const emailText = text(255).pipe(z.email('is not a valid email address'));
const optional = (schema: z.ZodType<string, string>) =>
  z
    .string()
    .optional()
    .transform((s) => (s === undefined || s.trim() === '' ? undefined : s))
    .pipe(schema.optional());

/**
 * One of a list, as the list spells it: matched ignoring case (and `_` for `-`), so `ja_jp` is
 * Dify's `ja-JP`; else an error naming the nearest entries.
 */
function oneOf(list: readonly string[], what: string, near: (s: string) => string[]) {
  const byKey = new Map(list.map((v) => [v.toLowerCase().replace(/_/g, '-'), v]));
  return z.string().transform((s, ctx) => {
    const found = byKey.get(s.trim().toLowerCase().replace(/_/g, '-'));
    if (found !== undefined) return found;
    const close = near(s.trim());
    ctx.addIssue({
      code: 'custom',
      message: `"${s.trim()}" is not one of ${what}${close.length > 0 ? `: did you mean ${close.join(' or ')}?` : ''}`,
    });
    return z.NEVER;
  });
}

/** Languages sharing the given one's language part ("fr" → fr-FR), else all of them. */
function languageNear(s: string): string[] {
  const base = s.toLowerCase().split(/[-_]/)[0];
  const same = Object.keys(LANGUAGE_TIMEZONES).filter((l) => l.toLowerCase().split('-')[0] === base);
  return same.length > 0 ? same : Object.keys(LANGUAGE_TIMEZONES);
}

/** Timezones whose last part is the given one's ("Paris" → Europe/Paris), at most three. */
function timezoneNear(s: string): string[] {
  const city = s.toLowerCase().replace(/ /g, '_').split('/').pop() ?? '';
  return city === '' ? [] : TIMEZONES.filter((t) => t.toLowerCase().split('/').pop() === city).slice(0, 3);
}

/** Members one row may name: bounds a row's memory and its job's size (add more in Dify later). */
export const MAX_MEMBERS = 500;

export interface Member {
  email: string;
  role: MemberRole;
}

const membersSchema = z
  .string()
  .optional()
  .transform((s, ctx): Member[] => {
    if (s === undefined || s.trim() === '') return [];
    const members: Member[] = [];
    const parts = s
      .normalize('NFC')
      .split(';')
      .map((p) => p.trim())
      .filter((p) => p !== '');
    if (parts.length > MAX_MEMBERS) {
      ctx.addIssue({
        code: 'custom',
        message: `names ${parts.length} members; at most ${MAX_MEMBERS} per row (add more in Dify afterwards)`,
      });
      return [];
    }
    for (const part of parts) {
      const at = part.lastIndexOf(':');
      const email = (at < 0 ? part : part.slice(0, at)).trim();
      const role =
        at < 0
          ? ''
          : part
              .slice(at + 1)
              .trim()
              .toLowerCase();
      if (at < 0) {
        ctx.addIssue({ code: 'custom', message: `"${part}" must be email:role` });
      } else if (role === 'owner') {
        // A workspace has one owner, owner_email; Dify has no second owner to give.
        ctx.addIssue({ code: 'custom', message: `"${email}" cannot be an owner: the workspace's owner is owner_email; use admin` });
      } else if (!(MEMBER_ROLES as readonly string[]).includes(role)) {
        ctx.addIssue({ code: 'custom', message: `"${role}" is not a role: use one of ${MEMBER_ROLES.join(', ')}` });
      } else if (!emailText.safeParse(email).success) {
        ctx.addIssue({ code: 'custom', message: `"${email}" is not a valid email address` });
      } else if (members.some((m) => m.email.toLowerCase() === email.toLowerCase())) {
        ctx.addIssue({ code: 'custom', message: `${email} is listed twice` });
      } else {
        members.push({ email, role: role as MemberRole });
      }
    }
    return members;
  });

export const WorkspaceRowSchema = z
  .object({
    workspace_name: text(255).superRefine(visibleName),
    owner_email: emailText,
    plan: optional(text(255)).transform((p) => p ?? 'basic'),
    members: membersSchema,
    external_id: optional(text(255)),
    dataset_api_key: z
      .string()
      .optional()
      .transform((s, ctx): boolean | undefined => {
        const v = (s ?? '').trim().toLowerCase();
        if (v === '') return undefined;
        if (['yes', 'true', '1', 'y'].includes(v)) return true;
        if (['no', 'false', '0', 'n'].includes(v)) return false;
        ctx.addIssue({ code: 'custom', message: `"${s}" is not yes or no` });
        return undefined;
      }),
    workspace_id: optional(
      z
        .string()
        .transform((s) => s.trim().toLowerCase())
        .refine(isStrictUuid, 'is not a strict UUID (xxxxxxxx-xxxx-Mxxx-Nxxx-xxxxxxxxxxxx)'),
    ),
  })
  .extend({
    owner_name: optional(text(255)),
    owner_language: optional(oneOf(Object.keys(LANGUAGE_TIMEZONES), "Dify's interface languages", languageNear)),
    owner_timezone: optional(oneOf(TIMEZONES, "Dify's timezones (pytz's all_timezones, e.g. Europe/Paris)", timezoneNear)),
  })
  .superRefine((row, ctx) => {
    const owner = row.owner_email.toLowerCase();
    if (row.members.some((m) => m.email.toLowerCase() === owner)) {
      ctx.addIssue({ code: 'custom', path: ['members'], message: `${row.owner_email} is the owner and cannot also be a member` });
    }
  })
  .transform((row) => ({
    workspaceName: row.workspace_name,
    ownerEmail: row.owner_email,
    plan: row.plan,
    members: row.members,
    externalId: row.external_id,
    workspaceId: row.workspace_id,
    /** Mint a workspace-wide knowledge-base API key with it (undefined: the batch decides). */
    datasetApiKey: row.dataset_api_key,
    key: idempotencyKey(row.external_id, row.owner_email, row.workspace_name),
    /** The owner's profile if the row creates the owner's account (each part only when given). */
    ...(row.owner_name !== undefined || row.owner_language !== undefined || row.owner_timezone !== undefined
      ? {
          ownerProfile: {
            ...(row.owner_name !== undefined ? { name: row.owner_name } : {}),
            ...(row.owner_language !== undefined ? { language: row.owner_language } : {}),
            ...(row.owner_timezone !== undefined ? { timezone: row.owner_timezone } : {}),
          },
        }
      : {}),
  }));

export type WorkspaceRow = z.output<typeof WorkspaceRowSchema>;

/** docs/design.md: the row's external_id when given, else the lower-cased owner email + workspace name. */
export function idempotencyKey(externalId: string | undefined, ownerEmail: string, workspaceName: string): string {
  return externalId !== undefined ? `external:${externalId}` : `owner+name:${JSON.stringify([ownerEmail.toLowerCase(), workspaceName])}`;
}

/** Input quoted in a message: without NULs and lone surrogates (PostgreSQL refuses both), at most 300 characters. */
export function safeText(s: string): string {
  const clean = s.replace(/\u0000/g, '\\0').toWellFormed();
  const chars = [...clean];
  return chars.length > 300 ? `${chars.slice(0, 300).join('')}…` : clean;
}

export interface FieldError {
  field: string;
  message: string;
}

export type ValidatedRow = { ok: true; row: WorkspaceRow } | { ok: false; errors: FieldError[] };

export function validateRow(record: Partial<Record<Column, string>>): ValidatedRow {
  const parsed = WorkspaceRowSchema.safeParse(record);
  if (parsed.success) return { ok: true, row: parsed.data };
  return {
    ok: false,
    errors: parsed.error.issues.map((i) => ({
      field: String(i.path[0] ?? 'row'),
      // Messages quote the input: keep them storable (no NUL, no lone surrogate) and short.
      message: i.code === 'invalid_type' && i.input === undefined ? 'is required' : safeText(i.message),
    })),
  };
}
