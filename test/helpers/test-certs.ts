// A throwaway certificate authority and a server certificate it signed, for 127.0.0.1 and
// localhost (Debian's openssl): TLS servers in the tests present the certificate, clients trust the CA.
import { spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface TestCerts {
  /** The CA's certificate (PEM file): what a client trusts. */
  ca: string;
  /** The server's private key and certificate (PEM files). */
  key: string;
  cert: string;
}

export async function testCerts(dir: string): Promise<TestCerts> {
  await mkdir(dir, { recursive: true });
  const ca = join(dir, 'ca.pem');
  const caKey = join(dir, 'ca.key');
  const key = join(dir, 'server.key');
  const csr = join(dir, 'server.csr');
  const cert = join(dir, 'server.pem');
  const ssl = (args: string[]) => {
    const r = spawnSync('openssl', args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args[0]}: ${r.stderr}`);
  };
  ssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', caKey, '-out', ca, '-days', '2', '-subj', '/CN=dify-provision test CA']);
  ssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=127.0.0.1']);
  const ext = join(dir, 'ext.cnf');
  await writeFile(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  ssl(['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', ext]);
  return { ca, key, cert };
}
