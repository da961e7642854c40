// Real Redis topologies for the tests, from Debian's redis-server on loopback: a 3-master
// Cluster, a master + replica watched by a Sentinel, and a TLS node with an ACL user.
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, killAndWait, readPid, waitFor } from '../../src/services/local-services.js';
import { testCerts } from './test-certs.js';

const run = promisify(execFile);
const cli = async (args: string[]) => (await run('redis-cli', args, { timeout: 10_000 })).stdout;

/** A port whose cluster bus (port + 10000) fits too. */
async function clusterPort(): Promise<number> {
  for (;;) {
    const p = await freePort();
    if (p <= 55535) return p;
  }
}

export interface Node {
  port: number;
  stop(): Promise<void>;
  start(): Promise<void>;
}

async function node(
  dir: string,
  port: number,
  args: string[],
  ping: string[] = ['-p', String(port), 'ping'],
  configFile?: string,
): Promise<Node> {
  const d = join(dir, String(port));
  await mkdir(d, { recursive: true });
  const pidfile = join(d, 'redis.pid');
  const base = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    d,
    '--daemonize',
    'yes',
    '--pidfile',
    pidfile,
    '--logfile',
    join(d, 'log'),
    '--save',
    '',
  ];
  const n: Node = {
    port,
    async start() {
      await run('redis-server', [...(configFile ? [configFile] : []), ...base, ...args]);
      await waitFor(async () => (await cli(ping)).includes('PONG'), `redis on ${port}`);
    },
    async stop() {
      const pid = await readPid(pidfile);
      if (pid) await killAndWait(pid);
    },
  };
  await n.start();
  return n;
}

export interface TestCluster {
  nodes: Node[];
  /** The node that owns the slot of `{dify-provision…}` keys (9369 for the default prefix). */
  ownerOf(key: string): Promise<Node>;
  stop(): Promise<void>;
}

export async function startCluster(dir: string): Promise<TestCluster> {
  const ports = [await clusterPort(), await clusterPort(), await clusterPort()];
  const nodes: Node[] = [];
  for (const p of ports) {
    nodes.push(
      await node(dir, p, [
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${p}.conf`,
        '--appendonly',
        'yes',
        '--cluster-node-timeout',
        '3000',
      ]),
    );
  }
  await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], {
    timeout: 30_000,
  });
  for (const p of ports)
    await waitFor(async () => (await cli(['-p', String(p), 'cluster', 'info'])).includes('cluster_state:ok'), `cluster on ${p}`);
  return {
    nodes,
    async ownerOf(key) {
      const slot = Number((await cli(['-p', String(ports[0]), 'cluster', 'keyslot', key])).trim());
      // <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges…>
      for (const line of (await cli(['-p', String(ports[0]), 'cluster', 'nodes'])).trim().split('\n')) {
        const f = line.split(' ');
        const owns = f.slice(8).some((r) => {
          const [lo, hi] = r.split('-').map(Number);
          return slot >= lo! && slot <= (hi ?? lo)!;
        });
        if (owns) return nodes.find((n) => f[1]!.startsWith(`127.0.0.1:${n.port}@`))!;
      }
      throw new Error(`no node owns slot ${slot}`);
    },
    async stop() {
      await Promise.allSettled(nodes.map((n) => n.stop()));
    },
  };
}

export interface TestSentinel {
  master: Node;
  replica: Node;
  sentinel: Node;
  name: string;
  /** Asks the sentinel to fail over, retrying until it agrees (it must have seen the replica). */
  failover(): Promise<void>;
  /** The port of the current master, as the sentinel sees it. */
  masterPort(): Promise<number>;
  stop(): Promise<void>;
}

export async function startSentinel(dir: string): Promise<TestSentinel> {
  const name = 'difymaster';
  const master = await node(dir, await freePort(), ['--appendonly', 'yes']);
  const replicaPort = await freePort();
  const replica = await node(dir, replicaPort, ['--appendonly', 'yes', '--replicaof', '127.0.0.1', String(master.port)]);
  const sentinelPort = await freePort();
  const conf = join(dir, `sentinel-${sentinelPort}.conf`);
  await writeFile(
    conf,
    [
      `sentinel monitor ${name} 127.0.0.1 ${master.port} 1`,
      `sentinel down-after-milliseconds ${name} 2000`,
      `sentinel failover-timeout ${name} 10000`,
      `sentinel parallel-syncs ${name} 1`,
      '',
    ].join('\n'),
  );
  const sentinel = await node(dir, sentinelPort, ['--sentinel'], undefined, conf);
  const masterPort = async () =>
    Number((await cli(['-p', String(sentinelPort), 'sentinel', 'get-master-addr-by-name', name])).split('\n')[1]);
  await waitFor(
    async () => (await cli(['-p', String(sentinelPort), 'sentinel', 'replicas', name])).includes(String(replicaPort)),
    'sentinel to see the replica',
  );
  return {
    master,
    replica,
    sentinel,
    name,
    masterPort,
    async failover() {
      const before = await masterPort();
      await waitFor(
        async () => (await cli(['-p', String(sentinelPort), 'sentinel', 'failover', name])).includes('OK'),
        'SENTINEL FAILOVER to be accepted',
      );
      await waitFor(async () => (await masterPort()) !== before, 'the failover to complete');
    },
    async stop() {
      await Promise.allSettled([sentinel.stop(), replica.stop(), master.stop()]);
    },
  };
}

export interface TestTls {
  port: number;
  caFile: string;
  stop(): Promise<void>;
}

/** A TLS-only node with a self-signed CA, the default user off and an ACL user `provisioner`. */
export async function startTls(dir: string, password: string): Promise<TestTls> {
  const { ca, key, cert } = await testCerts(dir);
  const port = await freePort();
  const acl = join(dir, 'users.acl');
  await writeFile(acl, `user default off\nuser provisioner on >${password} ~* &* +@all\n`);
  const tls = ['--tls', '--cacert', ca, '--user', 'provisioner', '--pass', password, '-p', String(port), 'ping'];
  const n = await node(
    dir,
    port,
    [
      '--port',
      '0',
      '--tls-port',
      String(port),
      '--tls-cert-file',
      cert,
      '--tls-key-file',
      key,
      '--tls-ca-cert-file',
      ca,
      '--tls-auth-clients',
      'no',
      '--aclfile',
      acl,
    ],
    tls,
  );
  return { port, caFile: ca, stop: () => n.stop() };
}

/** A plain Redis node of the test's own (stopped and started by the test: Redis going away). */
export async function startRedisNode(dir: string): Promise<Node & { url: string }> {
  const port = await freePort();
  return { ...(await node(dir, port, [])), url: `redis://127.0.0.1:${port}` };
}
