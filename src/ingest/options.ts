// The options of an ingest as people outside TypeScript write them (snake_case): one zod schema
// that the HTTP API validates request bodies with and documents (OpenAPI), mapped onto the
// library's EnqueueOptions & ReadOptions by name. An option the library gains (EnqueueOptions)
// reaches the API with one line here: its snake_case name and its type.
import { z } from 'zod';
import { mapEntryProblem, type Vocabulary } from '../input/header.js';
import { HEADER_SEARCH, WORKSPACE_ROWS, type ReadOptions } from '../input/read-rows.js';
import { DEFAULT_RETRY, type RetryPolicy } from '../queue/contract.js';
import type { EnqueueOptions } from './enqueue-batch.js';

/** At most this many headings in a column map (a file has far fewer columns). */
const MAX_MAPPED = 200;

/** header_row (--header-row N): the header's line. */
export const headerRowSchema = z
  .number()
  .int()
  .min(1)
  .max(1_000_000)
  .optional()
  .describe(
    `files: the header's line (the sheet's row number); the lines above it are skipped (default: the first of the first ${HEADER_SEARCH} lines that names every required column)`,
  );

/**
 * column_map (--map "Heading=column"): headings read as columns of `kind`'s file, each entry
 * checked as the CLI checks it (a column that is none is refused, naming the heading).
 */
export function columnMapSchema(kind: Vocabulary) {
  return z
    .record(z.string(), z.string())
    .superRefine((map, ctx) => {
      const entries = Object.entries(map);
      if (entries.length > MAX_MAPPED) ctx.addIssue({ code: 'custom', message: `at most ${MAX_MAPPED} headings` });
      for (const [heading, column] of entries) {
        const problem = mapEntryProblem(kind, heading, column);
        if (problem) ctx.addIssue({ code: 'custom', path: [heading], message: `"${heading}=${column}": ${problem}` });
      }
    })
    .optional()
    .describe(
      `files: headings read as columns, e.g. {"Owner E-mail": "owner_email"} (as text: one "Heading=column" a line; CLI: --map); the column - drops that heading's column; the common spellings of each column are read without it`,
    );
}

export const IngestOptionsSchema = z
  .object({
    strict: z.boolean().optional().describe('if any row is invalid, queue nothing and answer 422 listing every invalid row'),
    create_missing_owners: z.boolean().optional().describe('owners/members without a Dify account get one (pending, as Dify invites do)'),
    mint_dataset_keys: z
      .boolean()
      .optional()
      .describe('mint a workspace-wide knowledge-base API key with every new workspace (needs seal_to)'),
    seal_to: z.string().min(1).optional().describe("the operator's RSA public key (PEM): minted API keys are sealed to it"),
    invite: z
      .boolean()
      .optional()
      .describe(
        "every account the batch creates gets Dify's invitation token in Dify's Redis and a link sealed to seal_to (needs CONSOLE_WEB_URL)",
      ),
    invite_pending: z.boolean().optional().describe("with invite: also the batch's existing accounts that are still pending"),
    send_invites: z
      .boolean()
      .optional()
      .describe("with invite (implied): also mail each person their link through Dify's SMTP settings (MAIL_TYPE=smtp)"),
    trust_accounts: z
      .array(
        z
          .string()
          .trim()
          .max(255)
          .refine((e) => e.includes('@'), 'is not an email address'),
      )
      .min(1)
      .max(1000)
      .optional()
      .describe(
        "existing accounts rows may join although another batch's operator was given their link (as text: comma-separated; CLI: --trust-account; docs/security.md)",
      ),
    allow_duplicate_names: z.boolean().optional().describe('let rows through whose owner already has a workspace of that name'),
    ignore_unknown_columns: z
      .boolean()
      .optional()
      .describe('files: drop columns dify-provision does not know instead of refusing the file'),
    delimiter: z.enum([',', ';', '\t']).optional().describe('CSV: the column delimiter (default: detected from the header)'),
    encoding: z.string().min(1).optional().describe('CSV: the encoding when not UTF-8 (or UTF-16 with a BOM), e.g. windows-1252'),
    sheet: z.string().min(1).optional().describe('.xlsx: the sheet to read (default: the first)'),
    header_row: headerRowSchema,
    column_map: columnMapSchema(WORKSPACE_ROWS),
    attempts: z
      .number()
      .int()
      .min(1)
      .max(100)
      .optional()
      .describe(`attempts per row for transient errors (default ${DEFAULT_RETRY.attempts})`),
    backoff_ms: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe(`first retry delay in ms, doubling each time (default ${DEFAULT_RETRY.backoffMs})`),
    source: z.string().min(1).max(200).optional().describe('where the rows came from (a file name), shown in listings'),
  })
  .strict();
export type IngestOptions = z.infer<typeof IngestOptionsSchema>;

export type Camel<S extends string> = S extends `${infer H}_${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;
export type LibraryOptions = EnqueueOptions & ReadOptions;
// Every option of the schema is a library option of the same name (attempts/backoff_ms: `retry`).
type NotInLibrary = Exclude<Camel<keyof IngestOptions>, keyof LibraryOptions | 'attempts' | 'backoffMs'>;
const everyOptionIsTheLibrarys: [NotInLibrary] extends [never] ? true : NotInLibrary = true;
void everyOptionIsTheLibrarys;

const camel = (s: string) => s.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());

/** Validated snake_case options as the library's camelCase ones (attempts/backoff_ms: `retry`). */
export function camelOptions<T>(opts: { attempts?: number | undefined; backoff_ms?: number | undefined }): T {
  const { attempts, backoff_ms, ...rest } = opts;
  const out = Object.fromEntries(Object.entries(rest).map(([k, v]) => [camel(k), v])) as T & { retry?: RetryPolicy };
  if (attempts !== undefined || backoff_ms !== undefined)
    out.retry = { attempts: attempts ?? DEFAULT_RETRY.attempts, backoffMs: backoff_ms ?? DEFAULT_RETRY.backoffMs };
  return out;
}

/** The library's options for validated API options. */
export const libraryOptions = (opts: IngestOptions): LibraryOptions => camelOptions<LibraryOptions>(opts);

/**
 * Options as text (a query string, multipart form fields): booleans as true/false/1/0, numbers as
 * digits; derived from the JSON schema, so the two never disagree (ingest's, and apply's).
 */
export function textOptions<T extends z.ZodRawShape>(schema: z.ZodObject<T>) {
  return z
    .object(
      Object.fromEntries(
        Object.entries(schema.shape).map(([k, s]) => {
          const optional = s as unknown as z.ZodOptional<z.ZodType>;
          const inner = optional.unwrap();
          const text =
            inner instanceof z.ZodBoolean
              ? z.stringbool({ truthy: ['true', '1', 'yes'], falsy: ['false', '0', 'no'] })
              : inner instanceof z.ZodNumber
                ? z.string().regex(/^\d+$/, 'must be a whole number').transform(Number).pipe(inner)
                : inner instanceof z.ZodArray
                  ? z
                      .string()
                      .transform((t) =>
                        t
                          .split(',')
                          .map((v) => v.trim())
                          .filter((v) => v !== ''),
                      )
                      .pipe(inner as z.ZodType<unknown, string[]>)
                  : inner instanceof z.ZodRecord
                    ? z
                        .string()
                        .transform(mapLines)
                        .pipe(inner as z.ZodType<unknown, Record<string, string>>)
                    : inner;
          return [k, text.optional().describe(optional.description ?? '')];
        }),
      ) as unknown as { [K in keyof z.output<z.ZodObject<T>>]-?: z.ZodType<z.output<z.ZodObject<T>>[K], string | undefined> },
    )
    .strict();
}

/** A column map as text: one "Heading=column" a line (the heading up to the last `=`, as --map). */
function mapLines(text: string, ctx: z.core.$RefinementCtx<string>): Record<string, string> {
  const map: Record<string, string> = {};
  for (const [i, line] of text.split(/\r?\n/).entries()) {
    if (line.trim() === '') continue;
    const at = line.lastIndexOf('=');
    if (at <= 0) {
      ctx.addIssue({ code: 'custom', message: `line ${i + 1}: "${line}": one "Heading=column" a line, e.g. Owner E-mail=owner_email` });
      continue;
    }
    map[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return map;
}

/** Ingest's options as text. */
export const IngestOptionsTextSchema = textOptions(IngestOptionsSchema);

/** One ingest option as a form shows it (the dashboard's New batch page builds its fields from these). */
export interface OptionField {
  name: keyof IngestOptions;
  /** map: headings and columns, one "Heading=column" a line. */
  kind: 'boolean' | 'number' | 'text' | 'choice' | 'pem' | 'map';
  /** choice: the values taken. */
  choices?: string[];
  description: string;
}

/** Every option of IngestOptionsSchema, in its order: an option the API gains is on the page with it. */
export function optionFields(): OptionField[] {
  return Object.entries(IngestOptionsSchema.shape).map(([name, schema]) => {
    const inner = schema.unwrap();
    const description = schema.description ?? '';
    if (inner instanceof z.ZodBoolean) return { name: name as keyof IngestOptions, kind: 'boolean', description };
    if (inner instanceof z.ZodNumber) return { name: name as keyof IngestOptions, kind: 'number', description };
    if (inner instanceof z.ZodRecord) return { name: name as keyof IngestOptions, kind: 'map', description };
    if (inner instanceof z.ZodEnum)
      return { name: name as keyof IngestOptions, kind: 'choice', choices: (inner.options as unknown[]).map(String), description };
    // A PEM is lines of text: a text area (or a file read in the browser).
    return { name: name as keyof IngestOptions, kind: /PEM/.test(description) ? 'pem' : 'text', description };
  });
}
