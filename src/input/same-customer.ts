// Rows that look like the same customer: the same owner and the same workspace name once both are
// normalised, whatever their external_id. The one place that says what "the same" means.
import { difyNormalizedEmail } from '../dify/normalized-email.js';

/**
 * An owner's email as compared: NFC, trimmed, then Dify's normalised email (lower-cased; Gmail
 * without dots and +tag, and the other providers' rules: dify/normalized-email.ts).
 */
export function normalizedEmail(email: string): string {
  return difyNormalizedEmail((/^[\x20-\x7e]*$/.test(email) ? email : email.normalize('NFC')).trim());
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
