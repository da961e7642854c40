// The API's one error body, { error: { code, message, rows? } }, from the error classes
// (common/errors.ts: each carries its stable code and HTTP status), zod's request checks and
// fastify's own refusals (body too large, unknown media type, unreadable JSON).
import { z } from 'zod';
import { CsvFormatError } from '../../input/decode.js';
import { ProvisionError } from '../../common/errors.js';
import { StrictValidationError } from '../../input/input-rows.js';
import type { ErrorBodySchema } from './schemas.js';

export type ErrorBody = z.infer<typeof ErrorBodySchema>;
type Rows = NonNullable<ErrorBody['error']['rows']>;
type Details = NonNullable<ErrorBody['error']['details']>;

/** The request did not match its schema (query, path, JSON body). */
export class InvalidRequestError extends ProvisionError {
  override readonly name: string = 'InvalidRequestError';
  readonly code = 'INVALID_REQUEST';
  override readonly httpStatus = 400;
  constructor(
    message: string,
    readonly rows?: Rows,
    readonly details?: Details,
  ) {
    super(message);
  }
}

export class ApiRefusal extends ProvisionError {
  override readonly name: string = 'ApiRefusal';
  constructor(
    readonly code: string,
    override readonly httpStatus: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Validates `value` with `schema`; a mismatch is a 400 with `details`, one { field, message } per
 * problem (the field as a path under `where`: query.limit, body.options.attempts, body.rows.2.plan;
 * an unknown field by its name), and each row of `rows` by line.
 */
export function parseRequest<T extends z.ZodType>(schema: T, value: unknown, where: string): z.output<T> {
  const got = schema.safeParse(value);
  if (got.success) return got.data;
  const rows = new Map<number, Rows[number]>();
  const details: Details = got.error.issues.flatMap((issue) => {
    const path = [where, ...issue.path.map(String)];
    // An unknown key is named as a field of its own, as any other field is.
    if (issue.code === 'unrecognized_keys')
      return issue.keys.map((k) => ({ field: [...path, k].join('.'), message: `unknown field (${knownFields(schema, issue.path)})` }));
    return [{ field: path.join('.'), message: issue.message }];
  });
  for (const issue of got.error.issues) {
    const [top, index, ...field] = issue.path;
    if (top !== 'rows' || typeof index !== 'number') continue;
    const row = rows.get(index + 1) ?? { line: index + 1, errors: [] };
    row.errors.push({ field: field.join('.') || 'row', message: issue.message });
    rows.set(index + 1, row);
  }
  throw new InvalidRequestError(`${where}: ${z.prettifyError(got.error)}`, rows.size > 0 ? [...rows.values()] : undefined, details);
}

/** The fields an object of `schema` takes at `path`, for an unknown field's message. */
function knownFields(schema: z.ZodType, path: PropertyKey[]): string {
  let at: unknown = schema;
  for (const key of path) {
    const shape = (at as { shape?: Record<string, unknown> }).shape;
    const inner = typeof key === 'number' ? (at as { element?: unknown }).element : shape?.[String(key)];
    at = (inner as { unwrap?: () => unknown } | undefined)?.unwrap?.() ?? inner;
  }
  const keys = Object.keys((at as { shape?: object } | undefined)?.shape ?? {});
  return keys.length ? `known: ${keys.join(', ')}` : 'not taken here';
}

const FASTIFY_CODES: Record<string, string> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'UPLOAD_TOO_LARGE',
  FST_REQ_FILE_TOO_LARGE: 'UPLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'INVALID_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'INVALID_REQUEST',
  FST_ERR_CTP_INVALID_JSON_BODY: 'INVALID_REQUEST',
};

/** The status and body answering `err` (never a stack, never an unexpected error's text). */
export function errorResponse(err: unknown): { status: number; body: ErrorBody } {
  if (err instanceof StrictValidationError)
    return {
      status: 422,
      body: { error: { code: err.code, message: `${err.rejected.length} invalid row(s); nothing was queued`, rows: err.rejected } },
    };
  // A file we cannot read as rows is unprocessable content, at its line.
  if (err instanceof CsvFormatError)
    return {
      status: 422,
      body: {
        error: {
          code: err.code,
          message: err.message,
          rows: [{ line: Math.max(1, err.line), errors: [{ field: 'file', message: err.message }] }],
        },
      },
    };
  if (err instanceof ProvisionError) {
    const rows = err instanceof InvalidRequestError ? err.rows : undefined;
    const details = err instanceof InvalidRequestError ? err.details : undefined;
    return {
      status: err.httpStatus,
      body: { error: { code: err.code, message: err.message, ...(details ? { details } : {}), ...(rows ? { rows } : {}) } },
    };
  }
  const { statusCode, code } = err as { statusCode?: number; code?: string };
  if (typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500)
    return {
      status: statusCode,
      body: { error: { code: (code && FASTIFY_CODES[code]) ?? 'INVALID_REQUEST', message: (err as Error).message } },
    };
  return { status: 500, body: { error: { code: 'INTERNAL', message: 'internal error (see the dashboard log)' } } };
}
