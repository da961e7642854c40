// Where tenants' private keys go: Dify reads `privkeys/<tenant_id>/private.pem` through its own
// storage backend, so we write through the same backend. Every backend keeps the same promises:
// written whole, read back and proven before the commit, removable if the commit fails, and a
// check at start (write, read back, delete a probe) so a wrong bucket or credential fails early.
import type { KeyPair } from '../crypto/rsa-keys.js';

export interface DeployedKey {
  /** Where the key went, for messages (a path or an object key; never the key itself). */
  readonly location: string;
  /** Removes the key: for a tenant whose transaction failed. */
  remove(): Promise<void>;
}

/** One entry under privkeys/, as doctor sees it. */
export interface StoredKey {
  tenantId: string;
  /** The name inside the tenant's folder (private.pem, or something else). */
  name: string;
  modified: Date;
  /** A local folder may also hold links (never followed) or other things. */
  kind: 'file' | 'link' | 'other';
}

export interface KeyStorage {
  /** What and where, for logs and messages: never a credential. */
  readonly description: string;
  /** Writes, reads back and deletes a probe under a name Dify never reads; throws a clear error. */
  check(): Promise<void>;
  /**
   * Writes the private key of a tenant, reads it back and proves it is `keys`' private key
   * (crypto/rsa-keys.ts proveStoredKey: byte for byte for a pair proven where it was made, else
   * by decrypting what the public key encrypts), or throws.
   */
  deploy(tenantId: string, keys: KeyPair): Promise<DeployedKey>;
  /** Everything under privkeys/ (doctor). */
  list(): Promise<StoredKey[]>;
  /** A tenant's private.pem as text; undefined when absent. */
  read(tenantId: string): Promise<string | undefined>;
  /** Removes everything a tenant has under privkeys/ (doctor --fix, for orphans only). */
  removeTenant(tenantId: string): Promise<void>;
}

/** Dify's storage key for a tenant's private key. */
export const privateKeyKey = (tenantId: string) => `privkeys/${tenantId}/private.pem`;
