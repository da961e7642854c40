// The OpenAPI 3.1 document of /api/v1, generated from the route declarations and their zod
// schemas (z.toJSONSchema: JSON Schema 2020-12, OpenAPI 3.1's own dialect): what validates a
// request is what the document says.
import { z } from 'zod';
import { ErrorBodySchema, FILE_TYPES } from './schemas.js';

const jsonSchema = (schema: z.ZodType, io: 'input' | 'output') => {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
};

const ERROR_REF = { $ref: '#/components/schemas/Error' };
const STATUS_WORDS: Record<number, string> = {
  400: 'the request does not match its schema (each field named)',
  401: 'no token, or not this dashboard’s',
  403: 'a read-only token on a write, or a cross-site request',
  404: 'no such batch',
  409: 'the batch id is in use for other rows, or the Idempotency-Key’s first request is still running',
  413: 'the upload is over the dashboard’s --max-bytes (refused before it is stored)',
  415: 'not JSON, multipart or a CSV/.xlsx content type',
  422: 'invalid rows (strict: every one, by line), an unreadable file (at its line), an Idempotency-Key used for another request, or an option this server’s settings cannot honour (code CONFIG, the setting named: invite without CONSOLE_WEB_URL)',
  500: 'unexpected (see the dashboard log)',
  503: 'a service (PostgreSQL, Redis) is unreachable, or nothing to enqueue on',
};

function parameters(route: DocumentedRoute) {
  const from = (schema: z.ZodObject | undefined, where: 'path' | 'query') => {
    if (!schema) return [];
    const object = jsonSchema(schema, 'input') as { properties?: Record<string, { description?: string }>; required?: string[] };
    return Object.entries(object.properties ?? {}).map(([name, s]) => ({
      name,
      in: where,
      required: where === 'path' || (object.required ?? []).includes(name),
      ...(s.description ? { description: s.description } : {}),
      schema: s,
    }));
  };
  // A file in the raw body takes its options in the query string.
  return [...from(route.params, 'path'), ...from(route.query ?? route.files, 'query')];
}

function requestBody(route: DocumentedRoute) {
  if (!route.body && !route.files) return undefined;
  const content: Record<string, unknown> = {};
  if (route.body) content['application/json'] = { schema: jsonSchema(route.body, 'input') };
  if (route.files) {
    const form = jsonSchema(route.files.extend({ file: z.string().describe('the CSV or .xlsx file') }), 'input') as Record<string, unknown>;
    content['multipart/form-data'] = { schema: { ...form, required: ['file'] } };
    for (const [type, what] of Object.entries(FILE_TYPES))
      content[type] = { schema: { type: 'string', description: `the file as the body (${what}); its options in the query string` } };
  }
  return { required: !route.optionalBody, content };
}

/** What the document needs of a route (routes.ts DocumentedRoute has it, and its handler besides). */
export interface DocumentedRoute {
  method: 'GET' | 'POST';
  path: string;
  operationId: string;
  summary: string;
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: z.ZodType;
  /** The JSON body may be left out (a POST without one asks for none of its fields). */
  optionalBody?: true;
  files?: z.ZodObject;
  ok: { status: number; description: string; schema: z.ZodType; csv?: boolean; headers?: Record<string, string> };
  /** Another success status the route answers with the same body (a repost that changes nothing: 200). */
  also?: { status: number; description: string };
  errors: number[];
}

export function openApiDocument(routes: DocumentedRoute[]): object {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const okContent: Record<string, unknown> = { 'application/json': { schema: jsonSchema(route.ok.schema, 'output') } };
    if (route.ok.csv) okContent['text/csv'] = { schema: { type: 'string', description: 'spreadsheet-safe CSV, the same columns' } };
    const errors = [...new Set([...route.errors, 401, 403, 500])].sort();
    const body = requestBody(route);
    const params = parameters(route);
    (paths[route.path] ??= {})[route.method.toLowerCase()] = {
      operationId: route.operationId,
      summary: route.summary,
      ...(params.length > 0 ? { parameters: params } : {}),
      ...(route.method === 'POST'
        ? {
            parameters: [
              ...params,
              {
                name: 'Idempotency-Key',
                in: 'header',
                required: false,
                description: 'the same key with the same request answers as the first time (24 h); with another request: 422',
                schema: { type: 'string', minLength: 1, maxLength: 255 },
              },
            ],
          }
        : {}),
      ...(body ? { requestBody: body } : {}),
      responses: {
        [String(route.ok.status)]: {
          description: route.ok.description,
          content: okContent,
          ...(route.ok.headers
            ? {
                headers: Object.fromEntries(
                  Object.entries(route.ok.headers).map(([h, d]) => [h, { description: d, schema: { type: 'string' } }]),
                ),
              }
            : {}),
        },
        ...(route.also ? { [String(route.also.status)]: { description: route.also.description, content: okContent } } : {}),
        ...Object.fromEntries(
          errors.map((s) => [
            String(s),
            { description: STATUS_WORDS[s] ?? 'error', content: { 'application/json': { schema: ERROR_REF } } },
          ]),
        ),
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'dify-provision API',
      version: '1',
      description:
        'Batches of Dify workspaces from any language: create from JSON rows or a CSV/.xlsx file, follow, report, retry, cancel. ' +
        'Authorization: Bearer with the dashboard token (admin) or a read-only token (GETs only).',
    },
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'DASHBOARD_TOKEN (admin) or a DASHBOARD_READ_TOKENS token (read-only)' },
      },
      schemas: { Error: jsonSchema(ErrorBodySchema, 'output') },
    },
  };
}
