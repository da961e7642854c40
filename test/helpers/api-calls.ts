// Requests and answers of the HTTP API (/api/v1) as the API tests write them.
import { expect } from 'vitest';
import type { z } from 'zod';
import * as S from '../../src/dashboard/api/schemas.js';

/** A POST of a JSON body. */
export const json = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: 'POST',
  headers: { 'content-type': 'application/json', ...headers },
  body: JSON.stringify(body),
});

/** A POST of a CSV file as the body. */
export const csvBody = (csv: string, headers: Record<string, string> = {}): RequestInit => ({
  method: 'POST',
  headers: { 'content-type': 'text/csv', ...headers },
  body: csv,
});

/** The body, checked against the schema the OpenAPI document gives for it. */
export async function answer<T extends z.ZodType>(res: Response, status: number, schema: T): Promise<z.output<T>> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  return schema.parse(JSON.parse(text));
}

/** The error body's error. */
export const errorOf = (res: Response, status: number) => answer(res, status, S.ErrorBodySchema).then((b) => b.error);
