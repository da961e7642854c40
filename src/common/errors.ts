// Every error we raise on purpose is a ProvisionError with a stable `code`, the CLI's exit code
// and the dashboard's HTTP status, so the doors map them by class, never by message text.
// For a row, two kinds only: a RowError is permanent (never retried); anything else is transient
// and retried with backoff.

export abstract class ProvisionError extends Error {
  abstract readonly code: string;
  readonly exitCode: number = 1;
  readonly httpStatus: number = 500;
}

/** A row's data can't be provisioned as it is (missing owner, taken id, …): never retried. */
export class RowError extends ProvisionError {
  override readonly name: string = 'RowError';
  readonly code = 'ROW';
  override readonly httpStatus = 422;
  /** The workspace the row was refused in, when it was found (and in scope): its failed row names it. */
  tenantId?: string;
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

/** The database or storage isn't one we may write to (not Dify's shape, a key vault, …). */
export class PreflightError extends ProvisionError {
  override readonly name: string = 'PreflightError';
  readonly code = 'PREFLIGHT';
  override readonly httpStatus = 503;
}

/** A setting is missing or invalid. */
export class ConfigError extends ProvisionError {
  override readonly name: string = 'ConfigError';
  readonly code = 'CONFIG';
  /** Over HTTP: the request asks for what this server's settings cannot do (invitations without CONSOLE_WEB_URL). */
  override readonly httpStatus = 422;
}

/** The caller asked for something that can't be done as asked (bad flag combination, bad id). */
export class UsageError extends ProvisionError {
  override readonly name: string = 'UsageError';
  readonly code = 'USAGE';
  override readonly httpStatus = 400;
}

export class BatchNotFoundError extends ProvisionError {
  override readonly name: string = 'BatchNotFoundError';
  readonly code = 'BATCH_NOT_FOUND';
  override readonly httpStatus = 404;
  constructor(readonly batchId: string) {
    super(`no batch "${batchId}"`);
  }
}

/** The batch id is in use for different rows. */
export class BatchConflictError extends ProvisionError {
  override readonly name: string = 'BatchConflictError';
  readonly code = 'BATCH_CONFLICT';
  override readonly httpStatus = 409;
}

/** A file we would create exists already (we never write over one). */
export class FileExistsError extends ProvisionError {
  override readonly name: string = 'FileExistsError';
  readonly code = 'FILE_EXISTS';
  override readonly httpStatus = 409;
}

/** Some service (Redis, PostgreSQL, storage) could not be reached. */
export class UnreachableError extends ProvisionError {
  override readonly name: string = 'UnreachableError';
  readonly code = 'UNREACHABLE';
  override readonly httpStatus = 503;
}

/**
 * An input whose rows, held in memory by the checks that span a file (a changes file's cross-row
 * rules, a membership file read whole by apply --sync), go over the batch's bounds: refused at the
 * line where it happened, before anything is queued.
 */
export class InputTooLargeError extends ProvisionError {
  override readonly name: string = 'InputTooLargeError';
  readonly code = 'INPUT_TOO_LARGE';
  override readonly httpStatus = 413;
  constructor(what: string, line: number, limit: string, flag: string) {
    super(`${what} is over its limit of ${limit} at line ${line}: nothing was queued; split it, or raise the limit (${flag})`);
  }
}

/** Short, secret-free text of any error, for results and logs. */
export function describeError(err: unknown): string {
  if (err instanceof RowError) return `${err.field}: ${err.message}`;
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !(err instanceof ProvisionError) && !err.message.includes(code)
      ? `${err.message} (${code})`
      : err.message;
  }
  return String(err);
}
