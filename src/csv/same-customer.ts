// Rows that look like the same customer: the same owner and the same workspace name once both are
// normalised, whatever their external_id. The one place that says what "the same" means.

/**
 * An owner's email as compared: NFC, trimmed, lower-cased. (Dify's own normalized_email rules,
 * should they be wanted, belong here and nowhere else.)
 */
export function normalizedEmail(email: string): string {
  return (/^[\x20-\x7e]*$/.test(email) ? email : email.normalize('NFC')).trim().toLowerCase();
}

/** A workspace name as people mean it: NFC, trimmed, case-folded ("Straße" = "STRASSE"). */
export function normalizedName(name: string): string {
  const ascii = /^[\x20-\x7e]*$/.test(name);
  return ascii ? name.trim().toLowerCase() : name.normalize('NFC').trim().toUpperCase().toLowerCase().normalize('NFC');
}

export const customerKey = (ownerEmail: string, workspaceName: string): string =>
  JSON.stringify([normalizedEmail(ownerEmail), normalizedName(workspaceName)]);

/** Every likely-duplicate message starts so (counted in summaries). */
export const LIKELY_DUPLICATE = 'likely duplicate';
const ALLOW = 'pass --allow-duplicate-names (library: allowDuplicateNames) if both are wanted';

export const duplicateOfLine = (line: number): string =>
  `${LIKELY_DUPLICATE}: line ${line} has the same owner and workspace name (ignoring case and spaces at the ends); ${ALLOW}`;

export const duplicateOfTenant = (owner: string, name: string, tenantId: string): string =>
  `${LIKELY_DUPLICATE}: ${owner} already owns the workspace "${name}" (tenant ${tenantId}) in Dify; ${ALLOW}`;

export const isLikelyDuplicate = (errors: { message: string }[]): boolean => errors.some((e) => e.message.startsWith(LIKELY_DUPLICATE));
