// What the browser tests stand on: a gateway process started for the run, a
// small proxy in front of it that can refuse WebSocket upgrades or cut off
// the chat routes (Playwright's offline switch leaves an open WebSocket
// alone), host pages of our own served through that proxy, and Chromium.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

/** Starts `bin` on a free port with a fresh data dir; resolves once it prints LISTENING. */
export async function startGateway(bin, configToml) {
  const dir = mkdtempSync(join(tmpdir(), 'lc-widget-gw-'));
  // The demo site's built-in knowledge base is left out unless a test asks:
  // ingesting it with MiniLM would cost each start seconds of CPU.
  const knowledge = configToml.includes('[knowledge]') ? '' : '\n[knowledge]\ndemo = false\nembedder = "lexical"\n';
  writeFileSync(join(dir, 'config.toml'), configToml + knowledge);
  const child = spawn(bin, ['--listen', '127.0.0.1:0', '--data-dir', join(dir, 'data'), '--config', join(dir, 'config.toml'), '--log', 'warn'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Never outlive the test run, whatever way it ends.
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  let stderr = '';
  child.stderr.on('data', (b) => (stderr = (stderr + b).slice(-4000)));
  const port = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`gateway did not start in 20 s:\n${stderr}`)), 20000);
    child.on('exit', (code) => reject(new Error(`gateway exited with ${code}:\n${stderr}`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^LISTENING 127\.0\.0\.1:(\d+)$/.exec(line);
      if (m) {
        clearTimeout(t);
        resolve(+m[1]);
      }
    });
  });
  return {
    port,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10000);
        await exited;
        clearTimeout(t);
      }
      process.removeListener('exit', reap);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const isChatRoute = (url) => url.startsWith('/ws') || url.startsWith('/poll/');

/**
 * A pass-through proxy to the gateway on `port`. `pages` maps a path to the
 * HTML of a host page served from the proxy itself (same origin as the
 * gateway's routes behind it). Switches: refuseWs (upgrades answered 502,
 * as a meddling corporate proxy would) and down (the chat routes cut off:
 * open sockets destroyed, new ones dropped).
 */
export async function startProxy(port, pages = new Map()) {
  const live = new Set(); // client sockets carrying chat routes
  const sw = { refuseWs: false, down: false, upgrades: 0 };
  const track = (s) => {
    if (live.has(s)) return;
    live.add(s);
    s.once('close', () => live.delete(s));
  };
  const server = http.createServer((req, res) => {
    const path = req.url.split('?')[0];
    if (pages.has(path)) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      return res.end(pages.get(path));
    }
    if (isChatRoute(req.url)) {
      if (sw.down) return req.socket.destroy();
      track(req.socket);
    }
    const up = http.request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.rawHeaders);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  server.on('upgrade', (req, sock, head) => {
    sw.upgrades++;
    if (sw.down) return sock.destroy();
    if (sw.refuseWs) return sock.end('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    track(sock);
    const up = net.connect(port, '127.0.0.1', () => {
      let h = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) h += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(h + '\r\n');
      up.write(head);
      sock.pipe(up).pipe(sock);
    });
    const kill = () => {
      sock.destroy();
      up.destroy();
    };
    for (const s of [sock, up]) {
      s.on('error', kill);
      s.on('close', kill);
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    sw,
    pages,
    setDown(v) {
      sw.down = v;
      if (v) for (const s of live) s.destroy();
    },
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(r);
      }),
  };
}

/** Debian's Chromium, headless, on a fresh profile (Playwright makes one per launch). */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: 30000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      '--no-first-run',
    ],
  });
}

/** Console errors and uncaught exceptions of a page and its frames. */
export function collectErrors(page) {
  const errors = [];
  page.on('console', (m) => m.type() === 'error' && errors.push(`console: ${m.text()} (${m.location().url})`));
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  return errors;
}

/** A host page embedding the widget, as a site owner would. */
export function hostPage({ site = 'demo', attrs = '', settings, body = '<p>Host page</p>', head = '', twice = false } = {}) {
  const tag = `<script async src="/widget.js" data-site="${site}" ${attrs}></script>`;
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,"><title>Host</title>${
    settings ? `<script>window.LiveChatSettings = ${JSON.stringify(settings)}</script>` : ''
  }${head}</head><body>${body}${tag}${twice ? tag : ''}</body></html>`;
}
