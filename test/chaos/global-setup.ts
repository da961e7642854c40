import { execFileSync } from 'node:child_process';

export default function setup() {
  execFileSync('npx', ['tsc', '-p', '.'], { stdio: 'inherit' });
}
