// Two kinds of failure only: a RowError is permanent for that row (never retried); everything else
// is transient and retried with backoff.

export class RowError extends Error {
  override readonly name = 'RowError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

/** The database isn't one we may write to (not Dify's shape, or a non-local key provider). */
export class PreflightError extends Error {
  override readonly name = 'PreflightError';
}

/** Short, secret-free text of any error, for results and logs. */
export function describeError(err: unknown): string {
  if (err instanceof RowError) return `${err.field}: ${err.message}`;
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}
