// Where tenants' private keys go: Dify reads `privkeys/<tenant_id>/private.pem` through its own
// storage backend, so we write through the same backend. Every backend keeps the same promises:
// written whole, read back and proven before the commit, removable if the commit fails.

export interface DeployedKey {
  /** Where the key went, for messages (a path or an object key; never the key itself). */
  readonly location: string;
  /** Removes the key (and the tenant's folder): for a tenant whose transaction failed. */
  remove(): Promise<void>;
}

export interface KeyStorage {
  /** Writes the private key of a tenant, proves it against the public key, or throws. */
  deploy(tenantId: string, privatePem: string, publicPem: string): Promise<DeployedKey>;
}

/** Dify's storage key for a tenant's private key. */
export const privateKeyKey = (tenantId: string) => `privkeys/${tenantId}/private.pem`;
