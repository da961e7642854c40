// A TCP proxy to a real server that a test can cut or freeze: an outage or a stall for one client
// only, without disturbing the tests that share the server.
import { createConnection, createServer, type Socket } from 'node:net';

export interface Proxy {
  port: number;
  /** Drops every connection and refuses new ones. */
  cut(): Promise<void>;
  /** Stops forwarding in both directions (a stalled server: connections accepted, nothing answered). */
  freeze(): void;
  /** Forwards again, what was held first. */
  thaw(): void;
  /** How many times `text` went from clients to the server (with `record` only). */
  sent(text: string): number;
  /** Connections accepted so far. */
  connections(): number;
  /** A failover: every connection is dropped, and new ones go to `port` (a standby promoted). */
  failover(port: number): void;
  /** An outage: every connection is dropped, and new ones are closed at once, until `restore`. */
  outage(): void;
  restore(): void;
}

export async function tcpProxy(targetPort: number, targetHost = '127.0.0.1', opts: { record?: boolean } = {}): Promise<Proxy> {
  const sockets = new Set<Socket>();
  let target = targetPort;
  let frozen = false;
  let down = false;
  const held: [Socket, Buffer][] = [];
  let upstreamBytes = '';
  const forward = (from: Socket, to: Socket, tap: boolean) =>
    from.on('data', (d: Buffer) => {
      if (tap && opts.record) upstreamBytes += d.toString('latin1');
      if (frozen) held.push([to, d]);
      else to.write(d);
    });
  let accepted = 0;
  const server = createServer((client) => {
    accepted++;
    if (down) return void client.destroy();
    const upstream = createConnection(target, targetHost);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => s.destroy());
    }
    forward(client, upstream, true);
    forward(upstream, client, false);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    async cut() {
      await new Promise<void>((r) => {
        server.close(() => r());
        for (const s of sockets) s.destroy();
      });
    },
    freeze() {
      frozen = true;
    },
    thaw() {
      frozen = false;
      for (const [to, d] of held.splice(0)) if (!to.destroyed) to.write(d);
    },
    sent: (text) => upstreamBytes.split(text).length - 1,
    connections: () => accepted,
    failover(port) {
      target = port;
      for (const s of sockets) s.destroy();
    },
    outage() {
      down = true;
      for (const s of sockets) s.destroy();
    },
    restore() {
      down = false;
    },
  };
}
