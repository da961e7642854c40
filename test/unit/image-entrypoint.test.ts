// The image's command runs the CLI whatever working directory a deployment gives the container
// (deploy/dify-compose's `cli` works in /tmp, so a path relative to the Dockerfile's WORKDIR is not found).
import { readFile } from 'node:fs/promises';
import { posix } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { projectFile } from '../../src/common/project-files.js';

interface Container {
  entrypoint?: string[];
  working_dir?: string;
  workingDir?: string;
  command?: string[];
  build?: unknown;
  image?: string;
}

describe('the image runs the CLI from any working directory', () => {
  it('Dockerfile ENTRYPOINT and every compose service / Kubernetes container of the image resolve to the built CLI', async () => {
    const dockerfile = await readFile(projectFile('Dockerfile'), 'utf8');
    const workdir = [...dockerfile.matchAll(/^WORKDIR\s+(\S+)/gm)].at(-1)![1]!;
    const entrypoint = JSON.parse(/^ENTRYPOINT\s+(\[.*\])\s*$/m.exec(dockerfile)![1]!) as string[];
    const pkg = JSON.parse(await readFile(projectFile('package.json'), 'utf8')) as { bin: Record<string, string> };
    const cli = posix.join(workdir, pkg.bin['dify-provision']!);
    const ours = (c: Container) => c.build !== undefined || /^dify-provision(:|$)/.test(c.image ?? '');

    const containers: [string, Container][] = [['Dockerfile', {}]];
    for (const file of [['deploy', 'dify-compose', 'docker-compose.yaml'], ['docker-compose.yml']]) {
      const compose = parse(await readFile(projectFile(...file), 'utf8'), { merge: true }) as { services: Record<string, Container> };
      for (const [name, s] of Object.entries(compose.services)) if (ours(s)) containers.push([`${file.join('/')} ${name}`, s]);
    }
    for (const doc of parseAllDocuments(await readFile(projectFile('deploy', 'kubernetes.yaml'), 'utf8'))) {
      const spec = (doc.toJS() as { spec: { template: { spec: { containers: (Container & { name: string })[] } } } }).spec;
      for (const c of spec.template.spec.containers) if (ours(c)) containers.push([`deploy/kubernetes.yaml ${c.name}`, c]);
    }
    expect(containers.length).toBeGreaterThan(4);
    for (const [name, c] of containers) {
      const [program, script] = c.entrypoint ?? entrypoint;
      expect(program, name).toBe('node');
      const cwd = c.working_dir ?? c.workingDir ?? workdir;
      expect(posix.resolve(cwd, script!), `${name} (working directory ${cwd})`).toBe(cli);
    }
  });
});
