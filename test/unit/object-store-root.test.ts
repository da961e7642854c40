// Dify's storage root inside an object store, as OpenDAL builds keys from OPENDAL_S3_ROOT: the cases
// of OpenDAL's own test_normalize_root (core/src/raw/path.rs), each without the leading slash that
// build_abs_path drops.
import { describe, expect, it } from 'vitest';
import { rootPrefix } from '../../src/storage/object-store.js';

describe('the storage root as OpenDAL normalises it', () => {
  it.each([
    ['abc/', 'abc/'],
    ['', ''],
    ['/', ''],
    ['///', ''],
    ['/abc/def/', 'abc/def/'],
    ['///abc/def', 'abc/def/'],
    ['///abc/def/', 'abc/def/'],
    ['abc///def///', 'abc/def/'],
    ['dify//edge/', 'dify/edge/'],
    ['/dify', 'dify/'],
  ])('%j → %j', (root, prefix) => {
    expect(rootPrefix(root)).toBe(prefix);
  });
});
