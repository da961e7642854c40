// The ingest options as the HTTP API takes them (snake_case, one zod schema) mapped onto the
// library's EnqueueOptions/ReadOptions; the text form (query string, form fields) from the same schema.
import { describe, expect, it } from 'vitest';
import { IngestOptionsSchema, IngestOptionsTextSchema, libraryOptions } from '../../src/ingest/options.js';

describe('ingest options', () => {
  it('map by name onto the library options, attempts and backoff_ms onto retry', () => {
    const parsed = IngestOptionsSchema.parse({
      strict: true,
      create_missing_owners: true,
      allow_duplicate_names: false,
      delimiter: ';',
      attempts: 3,
    });
    expect(libraryOptions(parsed)).toEqual({
      strict: true,
      createMissingOwners: true,
      allowDuplicateNames: false,
      delimiter: ';',
      retry: { attempts: 3, backoffMs: 1000 },
    });
    expect(libraryOptions(IngestOptionsSchema.parse({}))).toEqual({});
  });

  it('refuses unknown options and wrong types, naming them', () => {
    const unknown = IngestOptionsSchema.safeParse({ stict: true });
    expect(unknown.success).toBe(false);
    expect(JSON.stringify(unknown.error!.issues)).toContain('stict');
    expect(IngestOptionsSchema.safeParse({ strict: 'yes' }).success).toBe(false);
    expect(IngestOptionsSchema.safeParse({ attempts: 0 }).success).toBe(false);
  });

  it('as text: booleans as true/false/1/0/yes/no, whole numbers as digits, every option of the schema', () => {
    expect(Object.keys(IngestOptionsTextSchema.shape).sort()).toEqual(Object.keys(IngestOptionsSchema.shape).sort());
    expect(
      IngestOptionsTextSchema.parse({ strict: '1', create_missing_owners: 'yes', invite: 'false', attempts: '7', sheet: 'Q3' }),
    ).toEqual({
      strict: true,
      create_missing_owners: true,
      invite: false,
      attempts: 7,
      sheet: 'Q3',
    });
    for (const bad of [
      { strict: 'maybe' },
      { attempts: '2.5' },
      { attempts: '1e2' },
      { attempts: '0x10' },
      { attempts: '0' },
      { backoff_ms: '-1' },
      { colour: 'red' },
    ])
      expect(IngestOptionsTextSchema.safeParse(bad).success, JSON.stringify(bad)).toBe(false);
  });
});
