// nginx from the distribution, started by a test in its own temp dir on free loopback ports, serving a
// directory over HTTP and HTTPS (a self-signed certificate made here with openssl). Its access log tells
// which ranges were requested. Skips (with the reason) only where nginx or openssl is not installed.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p));
const OPENSSL = ['/usr/bin/openssl'].find((p) => existsSync(p));

/** Why nginx cannot run here, or undefined when it can. */
export const nginxMissing: string | undefined = NGINX === undefined ? 'nginx is not installed (apt-get install nginx-light; .ci/run does)' : OPENSSL === undefined ? 'openssl is not installed' : undefined;

/** A port free right now on 127.0.0.1 (nginx cannot listen on port 0; a lost race is retried). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => { resolve(); }));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

export interface AccessEntry {
  path: string;
  status: number;
  range: string;
}

export class Nginx {
  readonly dir: string;
  /** Files served live here. */
  readonly root: string;
  readonly httpPort: number;
  readonly httpsPort: number;
  /** The self-signed certificate (PEM) for 127.0.0.1 and localhost. */
  readonly cert: string;
  readonly #child: ChildProcess;

  private constructor(dir: string, httpPort: number, httpsPort: number, cert: string, child: ChildProcess) {
    this.dir = dir;
    this.root = join(dir, 'www');
    this.httpPort = httpPort;
    this.httpsPort = httpsPort;
    this.cert = cert;
    this.#child = child;
  }

  static async start(): Promise<Nginx> {
    if (NGINX === undefined || OPENSSL === undefined) throw new Error(nginxMissing);
    const dir = mkdtempSync(join(tmpdir(), 'uffd-nginx-'));
    mkdirSync(join(dir, 'www'));
    const made = spawnSync(OPENSSL, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { encoding: 'utf8' });
    if (made.status !== 0) throw new Error(`openssl failed: ${made.stderr}`);
    const cert = readFileSync(join(dir, 'cert.pem'), 'utf8');
    for (let attempt = 0; ; attempt++) {
      const [httpPort, httpsPort] = [await freePort(), await freePort()];
      writeFileSync(join(dir, 'nginx.conf'), config(dir, httpPort, httpsPort));
      const child = spawn(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      const up = await Promise.race([waitForPort(httpsPort).then(() => true), exited.then(() => false)]);
      if (up) return new Nginx(dir, httpPort, httpsPort, cert, child);
      if (attempt === 3) throw new Error(`nginx did not start: ${stderr}${safeRead(join(dir, 'error.log'))}`);
    }
  }

  url(path: string, tls = false): string {
    return tls ? `https://127.0.0.1:${String(this.httpsPort)}/${path}` : `http://127.0.0.1:${String(this.httpPort)}/${path}`;
  }

  /** Every request nginx has logged so far (it writes each when the response is done). */
  access(): AccessEntry[] {
    return safeRead(join(this.dir, 'access.log')).split('\n').filter((l) => l !== '').map((line) => {
      const [path = '', status = '0', range = ''] = line.split('\t');
      return { path, status: Number(status), range };
    });
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      const exited = new Promise((resolve) => this.#child.once('exit', resolve));
      this.#child.kill('SIGTERM');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

async function waitForPort(port: number): Promise<void> {
  const { connect } = await import('node:net');
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => { resolve(false); });
    });
    if (ok) return;
    await sleep(20);
  }
}

function config(dir: string, httpPort: number, httpsPort: number): string {
  // One process, in the foreground, everything under dir: several suites may run their own at once.
  return `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  default_type application/octet-stream;
  sendfile on;
  keepalive_requests 100000;
  log_format ranges '$uri\\t$status\\t$http_range';
  access_log ${dir}/access.log ranges;
  server {
    listen 127.0.0.1:${String(httpPort)};
    root ${dir}/www;
    location /moved/ { rewrite ^/moved/(.*)$ /$1 redirect; }
  }
  server {
    listen 127.0.0.1:${String(httpsPort)} ssl;
    ssl_certificate ${dir}/cert.pem;
    ssl_certificate_key ${dir}/key.pem;
    root ${dir}/www;
  }
}
`;
}
