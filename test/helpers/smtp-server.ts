// A real SMTP server for the tests (npm smtp-server, on 127.0.0.1 and a free port): plain, TLS
// from the first byte, or STARTTLS; with or without a login. Every message it accepts is parsed
// (mailparser) and kept with its envelope and how it came (TLS, login).
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer } from 'smtp-server';
import type { TestCerts } from './test-certs.js';

export interface Received {
  from: string;
  to: string[];
  /** The connection was TLS (from the first byte or after STARTTLS). */
  tls: boolean;
  /** The user who logged in, if one did. */
  user?: string;
  mail: ParsedMail;
}

export interface TestSmtp {
  port: number;
  received: Received[];
  /** Messages refused (a send the server answered with an error). */
  refused: number;
  /** Logins refused. */
  badLogins: number;
  stop(): Promise<void>;
}

export interface TestSmtpOptions {
  /** 'implicit': TLS from the first byte; 'starttls': offered after EHLO; 'none': not offered. */
  tls: 'implicit' | 'starttls' | 'none';
  certs?: TestCerts;
  /** Require this login. */
  auth?: { user: string; pass: string };
  /** Answer a message with an error instead of accepting it (n: the message's number, from 1; to: its recipients). */
  refuse?: (n: number, to: string[]) => { code: number; text: string } | undefined;
}

export async function startSmtp(opts: TestSmtpOptions): Promise<TestSmtp> {
  const received: Received[] = [];
  const state = { refused: 0, badLogins: 0, messages: 0 };
  const tlsFiles = opts.certs ? { key: await readFile(opts.certs.key), cert: await readFile(opts.certs.cert) } : {};
  const server = new SMTPServer({
    ...tlsFiles,
    secure: opts.tls === 'implicit',
    disabledCommands: [...(opts.tls === 'none' ? ['STARTTLS'] : []), ...(opts.auth ? [] : ['AUTH'])],
    authOptional: !opts.auth,
    allowInsecureAuth: opts.tls === 'none',
    logger: false,
    onAuth(auth, _session, cb) {
      if (auth.username === opts.auth?.user && auth.password === opts.auth?.pass) return cb(null, { user: auth.username });
      state.badLogins++;
      cb(Object.assign(new Error('Invalid username or password'), { responseCode: 535 }));
    },
    onData(stream, session, cb) {
      const n = ++state.messages;
      simpleParser(stream).then(
        (mail) => {
          const refusal = opts.refuse?.(
            n,
            session.envelope.rcptTo.map((r) => r.address),
          );
          if (refusal) {
            state.refused++;
            return cb(Object.assign(new Error(refusal.text), { responseCode: refusal.code }));
          }
          received.push({
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
            tls: session.secure,
            ...(typeof session.user === 'string' ? { user: session.user } : {}),
            mail,
          });
          cb();
        },
        (err: Error) => cb(err),
      );
    },
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', () => res());
  });
  const port = (server.server.address() as AddressInfo).port;
  return {
    port,
    received,
    get refused() {
      return state.refused;
    },
    get badLogins() {
      return state.badLogins;
    },
    stop: () => new Promise<void>((res) => server.close(() => res())),
  };
}
