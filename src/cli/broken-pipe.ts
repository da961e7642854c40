// Kept apart from terminal.ts (which loads the batch store): main imports it before any command.

/**
 * A reader that stops early (`batches | head -1`) closes our standard output: that ends the
 * command quietly, as for any Unix tool, instead of with an EPIPE stack trace.
 */
export function quietOnBrokenPipe(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
      process.exit(process.exitCode ?? 0);
    });
  }
}
