// The options of an apply as people outside TypeScript write them (snake_case), for the HTTP API:
// ingest's options that apply to changes (ingest/options.ts), mapped onto the library's
// ApplyOptions & ReadOptions by name, as ingest's are.
import { z } from 'zod';
import { isBatchId } from '../common/types.js';
import { camelOptions, columnMapSchema, IngestOptionsSchema, textOptions, type Camel } from '../ingest/options.js';
import type { ReadOptions } from '../input/read-rows.js';
import { CHANGE_ROWS } from './change-row.js';
import type { ApplyOptions } from './enqueue-changes.js';

export const ChangeOptionsSchema = IngestOptionsSchema.pick({
  strict: true,
  seal_to: true,
  invite: true,
  send_invites: true,
  trust_accounts: true,
  ignore_unknown_columns: true,
  delimiter: true,
  encoding: true,
  sheet: true,
  header_row: true,
  attempts: true,
  backoff_ms: true,
  source: true,
}).extend({
  create_missing_owners: IngestOptionsSchema.shape.create_missing_owners.describe(
    "add_member of an email with no Dify account creates it (pending, as Dify's invite does)",
  ),
  // The headings of a changes file map onto its own columns (action, workspace_id, email, …).
  column_map: columnMapSchema(CHANGE_ROWS),
  within: z
    .array(z.string().refine(isBatchId, 'is not a batch id'))
    .min(1)
    .optional()
    .describe(
      'the ingest batches whose workspaces the rows may name (as text: comma-separated); a row naming any other workspace is rejected. Give it for every changes file a customer supplies',
    ),
  invite: IngestOptionsSchema.shape.invite.describe(
    "every account add_member creates gets Dify's invitation token in Dify's Redis and a link sealed to seal_to (needs CONSOLE_WEB_URL)",
  ),
});
export type ChangeOptions = z.infer<typeof ChangeOptionsSchema>;

/** The same options as text (a query string, multipart form fields). */
export const ChangeOptionsTextSchema = textOptions(ChangeOptionsSchema);

export type ChangeLibraryOptions = ApplyOptions & ReadOptions;
// Every option of the schema is a library option of the same name (attempts/backoff_ms: `retry`).
type NotInLibrary = Exclude<Camel<keyof ChangeOptions>, keyof ChangeLibraryOptions | 'attempts' | 'backoffMs'>;
const everyOptionIsTheLibrarys: [NotInLibrary] extends [never] ? true : NotInLibrary = true;
void everyOptionIsTheLibrarys;

/** The library's options for validated API options. */
export const changeLibraryOptions = (opts: ChangeOptions): ChangeLibraryOptions => camelOptions<ChangeLibraryOptions>(opts);
