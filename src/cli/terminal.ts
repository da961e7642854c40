// Text from the input (cells, file names) is printed escaped: a control character in a CSV must
// not move the cursor, ring the bell or rewrite the terminal of whoever reads our output.
import pc from 'picocolors';
import { REDIS_UNREACHABLE, STATE_WORDS, type BatchState } from '../store/batches.js';

import { CONTROL } from '../input/workspace-row.js';

// C0 controls except tab and newline, DEL, and C1 controls.
const CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;
// Every control character, tab and newline included (for a cell, which must stay on its line):
// the set ingest refuses in names.
const ALL_CONTROLS = new RegExp(CONTROL.source, 'gu');

export function escapeControls(text: string, opts: { all?: boolean } = {}): string {
  return text.replace(opts.all ? ALL_CONTROLS : CONTROLS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

// Batch states in colour on a terminal (never in pipes, nor with NO_COLOR or TERM=dumb).
const colours = pc.createColors(process.stdout.isTTY === true && pc.isColorSupported);
const STATE_COLOUR: Record<BatchState, (s: string) => string> = {
  ingesting: colours.cyan,
  running: colours.cyan,
  stalled: (s) => colours.bold(colours.yellow(s)),
  done: colours.green,
  'done-with-failures': (s) => colours.bold(colours.red(s)),
  cancelled: colours.yellow,
};

/** A batch's state in words, coloured by state on a terminal. */
export const paintedState = (state: BatchState): string => STATE_COLOUR[state](STATE_WORDS[state]);

/** How many workers serve the queue, in words. */
export const workersWords = (n: number | null | 'unreachable'): string =>
  n === 'unreachable'
    ? REDIS_UNREACHABLE
    : n === null
      ? 'workers: unknown (Redis does not list its clients)'
      : n === 1
        ? '1 worker'
        : `${n} workers`;
