// A `.env` file read exactly as docker compose reads it (compose-go's dotenv parser and its
// `${VAR}` interpolation, github.com/compose-spec/compose-go/v2 dotenv/parser.go and
// template/template.go, Apache-2.0; ported rule for rule, no npm package implements them).
// Where compose differs from Node's util.parseEnv (tested in test/unit/compose-dotenv.test.ts):
// - an unquoted value ends at ` #` (a space, then #); a `#` with no space before it is part of it;
// - `${VAR}`, `$VAR`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}`,
//   `${VAR:?msg}`, `${VAR?msg}` are interpolated in unquoted and double-quoted values (from the
//   process's environment first, then from the file's earlier lines); `$$` is a literal `$`;
//   single-quoted values are literal;
// - double-quoted values take the escapes \a \b \f \n \r \t \v \\ \" \$ and \0NNN (octal);
// - `export ` before a name, `KEY: value` (yaml style), and a bare `KEY` line (taken from the
//   environment) are accepted; a name may hold letters, digits, `_ . - [ ]`.

/** A syntax error in a dotenv file: its line and, where known, the variable. Never the value. */
export class DotenvSyntaxError extends Error {
  constructor(
    readonly line: number,
    readonly reason: string,
    readonly variable?: string,
  ) {
    super(`line ${line}${variable ? ` (${variable})` : ''}: ${reason}`);
  }
}

/** Looks a name up (the process's environment); undefined when it is not set. */
export type Lookup = (name: string) => string | undefined;

// Go's unicode.IsSpace, and compose's isSpace (the same without the line break).
const isUnicodeSpace = (c: string) => /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/.test(c);
const isSpace = (c: string) => /^[\t\v\f\r \u0085\u00a0]$/.test(c);
const trimLeft = (s: string, f: (c: string) => boolean) => {
  let i = 0;
  while (i < s.length && f(s[i]!)) i++;
  return s.slice(i);
};
const trimRight = (s: string, f: (c: string) => boolean) => {
  let i = s.length;
  while (i > 0 && f(s[i - 1]!)) i--;
  return s.slice(0, i);
};

/** Parses a dotenv text as docker compose does; `lookup` resolves names first (compose: the OS environment). */
export function parseComposeDotenv(text: string, lookup: Lookup = () => undefined): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  let line = 1;
  let src = text.startsWith('\ufeff') ? text.slice(1) : text;

  const statementStart = (s: string): string => {
    for (;;) {
      let pos = 0;
      while (pos < s.length && isUnicodeSpace(s[pos]!)) {
        if (s[pos] === '\n') line++;
        pos++;
      }
      if (pos === s.length) return '';
      s = s.slice(pos);
      if (s[0] !== '#') return s;
      const nl = s.indexOf('\n');
      if (nl < 0) return '';
      s = s.slice(nl);
    }
  };

  const lookupIn = (name: string): string | undefined => lookup(name) ?? (name in out ? out[name] : undefined);
  const expand = (value: string, variable: string, at: number): string => {
    try {
      return substitute(value, lookupIn);
    } catch (err) {
      throw new DotenvSyntaxError(at, (err as Error).message, variable);
    }
  };

  for (;;) {
    src = statementStart(src);
    if (src === '') break;

    // The name: `export ` dropped, then up to `=`, `:` or the line's end.
    if (/^export[\t\n\f\r ]+/.test(src)) src = trimLeft(src.slice('export'.length), isSpace);
    let key = '';
    let offset = 0;
    let inherited = false;
    for (let i = 0; i < src.length; i++) {
      const c = src[i]!;
      if (isSpace(c)) continue;
      if (c === '=' || c === ':' || c === '\n') {
        key = src.slice(0, i);
        offset = i + 1;
        inherited = c === '\n';
        break;
      }
      if ('_.-[]'.includes(c) || /^[\p{L}\p{N}]$/u.test(c)) continue;
      const name = src.slice(0, i);
      throw new DotenvSyntaxError(line, `unexpected character ${JSON.stringify(c)} in the variable name ${JSON.stringify(name + c)}`);
    }
    if (inherited && !key.includes(' ')) line++;
    key = trimRight(key, isUnicodeSpace);
    let rest = trimLeft(src.slice(offset), isSpace);
    if (key.includes(' ')) throw new DotenvSyntaxError(line, 'a variable name cannot contain a space', key);

    if (inherited) {
      const v = lookup(key);
      if (v !== undefined) out[key] = v;
      src = rest;
      continue;
    }

    const quote = rest[0] === '"' || rest[0] === "'" ? rest[0] : undefined;
    if (!quote) {
      const nl = rest.indexOf('\n');
      let value = nl < 0 ? rest : rest.slice(0, nl);
      rest = nl < 0 ? '' : rest.slice(nl + 1);
      const comment = value.indexOf(' #');
      if (comment >= 0) value = value.slice(0, comment);
      out[key] = expand(trimRight(value, isUnicodeSpace), key, line);
      line++;
      src = rest;
      continue;
    }

    const startLine = line;
    let escaped = false;
    let chars = '';
    let end = -1;
    for (let i = 1; i < rest.length; i++) {
      const c = rest[i]!;
      if (c === '\n') line++;
      if (c !== quote) {
        if (!escaped && c === '\\') {
          escaped = true;
          continue;
        }
        if (escaped) {
          escaped = false;
          chars += '\\';
        }
        chars += c;
        continue;
      }
      if (escaped) {
        escaped = false;
        chars += c;
        continue;
      }
      end = i;
      break;
    }
    if (end < 0) throw new DotenvSyntaxError(startLine, `unterminated quoted value (no closing ${quote})`, key);
    out[key] = quote === '"' ? expand(expandEscapes(chars), key, startLine) : chars;
    src = rest.slice(end + 1);
  }
  return { ...out };
}

/** compose's escapes in double-quoted values; `\$` becomes `$$` (a literal `$` after interpolation). */
function expandEscapes(s: string): string {
  const simple: Record<string, string> = { a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '"': '"', '\\': '\\' };
  return s.replace(/\\(?:[abcfnrtv$"\\]|0[0-9]{0,3})/g, (m) => {
    const c = m[1]!;
    if (c === '$') return '$$';
    if (c === '0') {
      // Go's \NNN: exactly three octal digits, at most 255; anything else is kept as written.
      const digits = m.slice(2);
      return /^[0-7]{3}$/.test(digits) && parseInt(digits, 8) <= 255 ? String.fromCodePoint(parseInt(digits, 8)) : m;
    }
    return simple[c] ?? m; // `\c` is matched but is no Go escape: kept as written
  });
}

// compose-go template: `$$`, `$name`, `${name…}` (the braced form runs to the last `}` of the
// line and is then cut at its first balanced `}`, the rest interpolated again), or `${` alone.
const PATTERN = /\$(?:(\$)|([_a-z][_a-z0-9]*)|\{(?:([_a-z][_a-z0-9]*(?::?[-+?][^\n]*)?)\}|()))/gi;
const OPERATORS = [':?', '?', ':-', '-', ':+', '+'] as const;

export function substitute(template: string, mapping: Lookup): string {
  let first: Error | undefined;
  const result = template.replace(PATTERN, (match) => {
    try {
      return replace(match, mapping);
    } catch (err) {
      first ??= err as Error;
      return '';
    }
  });
  if (first) throw first;
  return result;
}

function replace(matched: string, mapping: Lookup): string {
  let op: (typeof OPERATORS)[number] | undefined;
  let at = Infinity;
  for (const o of OPERATORS) {
    const i = matched.indexOf(o);
    if (i >= 0 && i < at) [op, at] = [o, i];
  }
  const close = firstClosingBrace(matched);
  let substring = matched;
  let rest = '';
  if (close > -1) {
    rest = matched.slice(close + 1);
    substring = matched.slice(0, close + 1);
  }
  const m = new RegExp(PATTERN.source, 'i').exec(substring);
  if (m?.[1]) return '$';
  const named = m?.[2];
  const substitution = named || m?.[3];
  if (!substitution) throw new Error('invalid interpolation (a "${" without a valid variable name; write $$ for a literal $)');
  if (!named && op && substitution.includes(op)) {
    const cut = substitution.indexOf(op);
    const name = substitution.slice(0, cut);
    const arg = substitution.slice(cut + op.length);
    const value = mapping(name);
    let out: string;
    if (op === ':-' || op === '-') out = value === undefined || (op === ':-' && value === '') ? substitute(arg, mapping) : value;
    else if (op === ':+' || op === '+')
      out = value !== undefined && (op === '+' || value !== '') ? substitute(arg, mapping) : (value ?? '');
    else {
      if (value === undefined || (op === ':?' && value === '')) {
        const reason = substitute(arg, mapping);
        throw new Error(`required variable ${name} is missing a value${reason ? `: ${reason}` : ''}`);
      }
      out = value;
    }
    return out + substitute(rest, mapping);
  }
  return mapping(substitution) ?? '';
}

function firstClosingBrace(s: string): number {
  let open = 0;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '}') {
      open--;
      if (open === 0) return i;
    }
    if (s[i] === '{') {
      open++;
      i++;
    }
  }
  return -1;
}
