// The deployment examples parse and say what the README promises.
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import { parseAllDocuments } from 'yaml';
import { projectFile } from '../../src/common/project-files.js';

// npm's own range rules (semver, which bullmq needs too, so every install has it); loaded untyped.
const semver = createRequire(import.meta.url)('semver') as {
  satisfies(version: string, range: string): boolean;
  minVersion(range: string): { version: string } | null;
};

describe('deployment examples', () => {
  it('deploy/kubernetes.yaml: a worker Deployment and an ingest Job, with the key storage mounted and secrets from a Secret', async () => {
    const docs = parseAllDocuments(await readFile(projectFile('deploy', 'kubernetes.yaml'), 'utf8'));
    for (const d of docs) expect(d.errors, String(d.errors)).toEqual([]);
    const [deployment, job] = docs.map((d) => d.toJS());
    expect(deployment).toMatchObject({ apiVersion: 'apps/v1', kind: 'Deployment' });
    const worker = deployment.spec.template.spec.containers[0];
    expect(worker.args[0]).toBe('worker');
    expect(worker.envFrom).toEqual([{ secretRef: { name: 'dify-provision' } }]);
    expect(worker.volumeMounts[0].mountPath).toBe(worker.env.find((e: { name: string }) => e.name === 'DIFY_STORAGE_DIR').value);
    expect(deployment.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(30);
    expect(deployment.spec.selector.matchLabels).toEqual(deployment.spec.template.metadata.labels);
    expect(job).toMatchObject({ apiVersion: 'batch/v1', kind: 'Job', spec: { template: { spec: { restartPolicy: 'Never' } } } });
    const ingest = job.spec.template.spec.containers[0];
    expect(ingest.args[0]).toBe('ingest');
    // --wait writes its report files into --report-dir: a mount the pod can write (not a configMap,
    // a Secret or a read-only mount, where ingest would fail after the batch is done).
    const reportDir: string = ingest.args[ingest.args.indexOf('--report-dir') + 1];
    const mount = (ingest.volumeMounts as { name: string; mountPath: string; readOnly?: boolean }[]).find(
      (m) => reportDir === m.mountPath || reportDir.startsWith(`${m.mountPath}/`),
    );
    expect(mount, `--report-dir ${reportDir} is on a mounted volume`).toBeDefined();
    const volume = (job.spec.template.spec.volumes as Record<string, unknown>[]).find((v) => v.name === mount!.name)!;
    expect(mount!.readOnly ?? false).toBe(false);
    expect(Object.keys(volume).filter((k) => ['configMap', 'secret', 'projected', 'downwardAPI'].includes(k))).toEqual([]);
  });

  it('docker-compose.yml parses', async () => {
    const doc = parseAllDocuments(await readFile(projectFile('docker-compose.yml'), 'utf8'))[0]!;
    expect(doc.errors).toEqual([]);
    expect(Object.keys(doc.toJS().services)).toEqual(expect.arrayContaining(['redis', 'postgres', 'worker']));
  });

  it("package.json's engines, the Dockerfile's Node and every locked dependency's engines agree", async () => {
    const pkg = JSON.parse(await readFile(projectFile('package.json'), 'utf8')) as { engines: { node: string } };
    const oldest = semver.minVersion(pkg.engines.node)!.version;
    const docker = /^FROM node:(\d+)[-.]/m.exec(await readFile(projectFile('Dockerfile'), 'utf8'));
    // The image's Node line is one engines accepts from its latest release (node:20 is 20.x's newest).
    expect(semver.satisfies(`${docker![1]}.99.0`, pkg.engines.node)).toBe(true);
    expect(semver.satisfies(process.version, pkg.engines.node)).toBe(true);
    const lock = JSON.parse(await readFile(projectFile('package-lock.json'), 'utf8')) as {
      packages: Record<string, { version?: string; engines?: { node?: string } | string[] }>;
    };
    const refusing = Object.entries(lock.packages)
      .filter(([, p]) => p.engines && !Array.isArray(p.engines) && p.engines.node)
      .filter(([, p]) => !semver.satisfies(oldest, (p.engines as { node: string }).node))
      .map(([path, p]) => `${path}@${p.version} needs node ${(p.engines as { node: string }).node}`);
    expect(refusing, `the oldest Node engines allows is ${oldest}`).toEqual([]);
  });
});
