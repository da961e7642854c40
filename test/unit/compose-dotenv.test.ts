// The dotenv rules of docker compose (compose-go's dotenv parser and template), case by case,
// most taken from compose-go's own tests, and where they differ from Node's util.parseEnv.
import { parseEnv } from 'node:util';
import { describe, expect, it } from 'vitest';
import { DotenvSyntaxError, parseComposeDotenv, substitute } from '../../src/config/compose-dotenv.js';

const one = (text: string, key: string, lookup?: Record<string, string>) => parseComposeDotenv(text, (k) => lookup?.[k])[key];

describe("docker compose's dotenv rules", () => {
  it.each([
    ['FOO=bar', 'bar'],
    ['FOO =bar', 'bar'],
    ['FOO= bar', 'bar'],
    ['FOO="bar"', 'bar'],
    ["FOO='bar'", 'bar'],
    ['FOO="escaped\\"bar"', 'escaped"bar'],
    ['FOO="\'d\'"', "'d'"],
    ['FOO: 1', '1'],
    ['FOO: Foo=bar', 'Foo=bar'],
    ['FOO=1:B', '1:B'],
    ['export FOO=2', '2'],
    ['export\tFOO=2', '2'],
    ['  export FOO=2', '2'],
    ["export FOO='\\n'", '\\n'],
    ['export FOO="export A"', 'export A'],
    ['FOO="bar\\nbaz"', 'bar\nbaz'],
    ['FOO=a\\tb', 'a\\tb'],
    ['FOO="a\\tb"', 'a\tb'],
    ['FOO="Z\\aZ\\bZ\\fZ\\nZ\\rZ\\tZ\\vZ\\\\Z\\0123Z"', 'Z\x07Z\bZ\fZ\nZ\rZ\tZ\vZ\\ZSZ'],
    ['FOO="\\x07"', '\\x07'],
    ['FOO="\\012"', '\\012'],
    ['FOO="bar\\n\\ b\\az"', 'bar\n\\ b\x07z'],
    ['FOO=foobar=', 'foobar='],
    ['FOO=bar ', 'bar'],
    ['FOO=bar\r', 'bar'],
    // A comment starts at " #" only: compose keeps a # with no space before it.
    ['FOO=bar # this is foo', 'bar'],
    ['FOO=bar #', 'bar'],
    ['FOO=123#not-a-comment', '123#not-a-comment'],
    ['FOO=pa#ss word # comment', 'pa#ss word'],
    ['FOO=bar\t#tab', 'bar\t#tab'],
    ['FOO="bar#baz" # comment', 'bar#baz'],
    ["FOO='bar#baz' # comment", 'bar#baz'],
    ['FOO="bar#baz"#', 'bar#baz'],
    // multi-line quoted values
    ['FOO="line 1\nline 2"\nBAR=x', 'line 1\nline 2'],
    ["FOO='line 1\nline 2'", 'line 1\nline 2'],
    // interpolation
    ['A=test\nFOO=$A', 'test'],
    ['A=test\nFOO=${A}bar', 'testbar'],
    ['FOO=$UNSET', ''],
    ['A=test\nFOO="quote $A"', 'quote test'],
    ["A=test\nFOO='quote $A'", 'quote $A'],
    ['FOO="foo\\$BAR"', 'foo$BAR'],
    ['A=test\nFOO="foo\\${A} ${A}"', 'foo${A} test'],
    ['FOO=$$A', '$A'],
    ['FOO=a $ b', 'a $ b'],
    ['FOO=${UNSET:-def}', 'def'],
    ['A=\nFOO=${A:-def}', 'def'],
    ['A=\nFOO=${A-def}', ''],
    ['A=x\nFOO=${A:+alt}', 'alt'],
    ['FOO=${A:+${A},}B', 'B'],
    ['A=1\nFOO=${A:-${B}}-${A}', '1-1'],
    ['FOO=p%41ss', 'p%41ss'],
    ['\ufeffFOO=bom', 'bom'],
  ])('%j → %j', (text, value) => {
    expect(one(text, 'FOO')).toBe(value);
  });

  it('takes names from the environment first (as compose does), then from earlier lines', () => {
    expect(one('A=file\nFOO=${A}', 'FOO', { A: 'env' })).toBe('env');
    expect(one('FOO\n', 'FOO', { FOO: 'inherited' })).toBe('inherited');
    expect(parseComposeDotenv('FOO\nBAR=1')).toEqual({ BAR: '1' });
    expect(parseComposeDotenv('# only\n\t # comments\r\n\n')).toEqual({});
  });

  it.each([
    ['lol$wut', 1, /unexpected character "\$" in the variable name "lol\$"/],
    ['A=1\nB=2\nC D=3', 3, /a variable name cannot contain a space/],
    ['A=1\nFOO="secret', 2, /unterminated quoted value/],
    ["FOO='secret", 1, /unterminated quoted value/],
    ['FOO="value\\"', 1, /unterminated quoted value/],
    ['FOO=${', 1, /invalid interpolation/],
    ['FOO=${ secret}', 1, /invalid interpolation/],
    ['FOO=${NEED:?set it}', 1, /required variable NEED is missing a value: set it/],
  ])('refuses %j at line %i, never printing the value', (text, line, message) => {
    let err: unknown;
    try {
      parseComposeDotenv(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DotenvSyntaxError);
    expect((err as DotenvSyntaxError).line).toBe(line);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).not.toMatch(/secret/);
  });

  it('template: escapes, bare names and invalid braces as compose-go', () => {
    const m = (k: string) => ({ FOO: 'first', BAR: '' })[k];
    expect(substitute('$${foo}', m)).toBe('${foo}');
    for (const t of ['a $ string', '^REGEX$', '$}', '$']) expect(substitute(t, m)).toBe(t);
    expect(substitute('$FOO-bar', m)).toBe('first-bar');
    expect(substitute('This ${BAR} var', m)).toBe('This  var');
    for (const t of ['${', '${}', '${ }', '${ foo}', '${foo }', '${foo!}']) expect(() => substitute(t, m)).toThrow(/invalid/);
  });
});

describe('where Node util.parseEnv reads the same file differently', () => {
  it.each([
    // [text, compose, node]
    ['FOO=pa#ss', 'pa#ss', 'pa'],
    ['FOO=a\\tb # c', 'a\\tb', 'a\\tb'],
    ['A=x\nFOO=${A}y', 'xy', '${A}y'],
    ['FOO="a\\tb"', 'a\tb', 'a\\tb'],
    ['FOO=$$x', '$x', '$$x'],
  ])('%j: compose %j, Node %j', (text, compose, node) => {
    expect(one(text, 'FOO')).toBe(compose);
    expect(parseEnv(text).FOO).toBe(node);
  });
});
