// The shapes Dify's settings are read into: the variables with where each came from, and where
// keys go. Shared by dify-env.ts and dify-storage.ts.
import type { AzureBlobSettings } from '../storage/azure-blob.js';
import type { GcsSettings } from '../storage/gcs.js';
import type { S3Settings } from '../storage/s3.js';
import type { SupabaseSettings } from '../storage/supabase.js';

/** Dify's settings, each with where it came from (for errors that name the file and the variable). */
export interface DifySettings {
  get(name: string): string | undefined;
  /** `NAME` (our environment), or `NAME (in /path/docker/.env)`. */
  label(name: string): string;
  /** `` (our environment or unset), or ` (in /path/docker/.env)`. */
  where(name: string): string;
  /** Dify's docker/ folder, when the file given is the .env of Dify's docker-compose install. */
  readonly composeDir?: string;
  /** The files read, in order. */
  readonly files: readonly string[];
}

/** Where tenant keys go. */
export type StorageSettings =
  | { kind: 'local'; root: string }
  /** `prefix`: put before every key, as Dify's client does (OPENDAL_S3_ROOT, ALIYUN_OSS_PATH). */
  | ({ kind: 's3'; prefix: string } & S3Settings)
  | ({ kind: 'azure-blob' } & AzureBlobSettings)
  | ({ kind: 'gcs' } & GcsSettings)
  | ({ kind: 'supabase' } & SupabaseSettings);

/** Where keys go, and how we know (for the commands that print it). */
export interface ResolvedStorage {
  settings: StorageSettings;
  note?: string;
}
