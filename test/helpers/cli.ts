// Runs the built CLI (dist/, built by the global setup) as a separate process, as a user would.
import { spawn, type ChildProcess } from 'node:child_process';
import { projectFile } from '../../src/common/project-files.js';

export const CLI = projectFile('dist', 'src', 'cli', 'main.js');

export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<Ran> {
  return runProgram(process.execPath, [CLI, ...args], env, input);
}

/** Runs any program to its end (a pipeline through bash, the CLI as another user, …). */
export function runProgram(command: string, args: string[], env: NodeJS.ProcessEnv, input?: string, cwd?: string): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

export interface Background {
  child: ChildProcess;
  output(): string;
  /** Sends a signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Resolves with the exit code when the process ends by itself. */
  exited: Promise<number | null>;
}

export function startCli(args: string[], env: NodeJS.ProcessEnv): Background {
  return startProgram(process.execPath, [CLI, ...args], env);
}

/** Starts any program in the background (the CLI in a namespace, …). */
export function startProgram(command: string, args: string[], env: NodeJS.ProcessEnv, cwd?: string): Background {
  const child = spawn(command, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return {
    child,
    exited,
    output: () => out,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
