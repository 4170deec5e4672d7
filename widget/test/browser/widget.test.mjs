// The widget in headless Chromium against a real gateway: loading, streaming,
// history, long-polling, the offline queue, rate limits, mobile, keyboard,
// host-page CSS, triggers and theme, hand-off and rating. Every wait is on a
// DOM state or an event, each with a bound.

import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { collectErrors, hostPage, launchChromium, startGateway, startProxy } from './harness.mjs';

const WIDGET = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const REPO = resolve(WIDGET, '..');
const ARTIFACTS = join(REPO, 'artifacts', 'widget');
const BIN = process.env.GATEWAY_BIN || join(REPO, 'target', 'release', 'gateway');
const T = 15000; // bound for any single wait

const CONFIG = `
[sites.demo]
title = "Fernhill assistant"
greeting = "Hi! Ask me about boots, packs or returns."
theme = { accent = "#2f6b4f" }

[sites.trig]
title = "Trigger shop"
theme = { accent = "#0a7", radius = "12px" }
[[sites.trig.triggers]]
after_seconds = 1
message = "Need help choosing?"
[[sites.trig.triggers]]
scroll_percent = 90
message = "Still looking? Ask me."
[[sites.trig.triggers]]
url_pattern = "pricing"
message = "Questions about pricing?"
`;

const tall = '<main style="height:4000px"><h1>Shop</h1></main>';
const PAGES = new Map([
  ['/__host/twice', hostPage({ twice: true })],
  ['/__host/shop', hostPage({ site: 'trig', body: tall, attrs: 'data-radius="3px"', settings: { theme: { launcherSize: '64px' } } })],
  ['/__host/pricing', hostPage({ site: 'trig', attrs: 'data-radius="3px"', settings: { theme: { launcherSize: '64px' } } })],
]);

let gw;
let proxy;
let browser;
const metrics = {};

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  gw = await startGateway(BIN, CONFIG);
  proxy = await startProxy(gw.port, PAGES);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  await gw?.stop();
  writeFileSync(join(ARTIFACTS, 'metrics.json'), JSON.stringify(metrics, null, 2) + '\n');
});

const newContext = (opts = {}) => browser.newContext({ viewport: { width: 1280, height: 800 }, ...opts });
const chat = (page) => page.frameLocator('livechat-widget iframe');
const launcher = (page) => page.locator('livechat-widget .launcher');
const waitReady = (page) => page.waitForFunction(() => performance.getEntriesByName('livechat:ready').length > 0, null, { timeout: T });
const connected = (page, transport = 'ws') =>
  chat(page).locator(`html[data-conn="open"][data-transport="${transport}"]`).waitFor({ state: 'attached', timeout: T });

async function frameOf(page) {
  return (await page.locator('livechat-widget iframe').elementHandle()).contentFrame();
}

async function visit(context, path = '/') {
  const page = await context.newPage();
  const errors = collectErrors(page);
  await page.goto(proxy.url + path, { waitUntil: 'load', timeout: T });
  await waitReady(page);
  return { page, errors };
}

async function openChat(page) {
  await launcher(page).click({ timeout: T });
  await page.locator('livechat-widget .lc.open').waitFor({ state: 'attached', timeout: T });
  // The window fades in; wait for it to finish before looking at it.
  await page.waitForFunction(() => getComputedStyle(document.querySelector('livechat-widget').shadowRoot.querySelector('.win')).opacity === '1', null, {
    timeout: T,
  });
}

async function type(page, text) {
  const input = chat(page).locator('#input');
  await input.fill(text, { timeout: T });
  await input.press('Enter', { timeout: T });
}

/** Records every length the streaming reply's text takes, to prove it grows token by token. */
async function watchStreaming(page) {
  const f = await frameOf(page);
  await f.evaluate(() => {
    window.__lens = new Set();
    new MutationObserver(() => {
      for (const b of document.querySelectorAll('[data-reply][data-done="false"] .b')) window.__lens.add(b.textContent.length);
    }).observe(document.getElementById('log'), { subtree: true, childList: true, characterData: true });
  });
  return async () => f.evaluate(() => window.__lens.size);
}

async function askAndWaitAnswer(page, text) {
  const done = chat(page).locator('[data-reply][data-done="true"]');
  const before = await done.count();
  const partials = await watchStreaming(page);
  await type(page, text);
  await chat(page).locator('li.me', { hasText: text }).and(chat(page).locator('[data-state="delivered"]')).last().waitFor({ timeout: T });
  await done.nth(before).waitFor({ timeout: T });
  return { answer: await done.nth(before).locator('.b').textContent(), partials: await partials() };
}

const visitorTexts = (page) => chat(page).locator('li.me .b').allTextContents();

describe('widget in Chromium', () => {
  it('the gateway serves this build of the widget, gzipped', async () => {
    for (const [route, file] of [
      ['/widget.js', 'widget.js'],
      ['/chat?site=demo', 'chat.html'],
      ['/', 'demo.html'],
    ]) {
      const r = await fetch(proxy.url + route, { headers: { 'accept-encoding': 'gzip' } });
      assert.equal(r.status, 200, route);
      const body = Buffer.from(await r.arrayBuffer());
      // fetch undoes gzip itself; compare the content with the committed file.
      const raw = r.headers.get('content-encoding') === 'gzip' && body[0] === 0x1f ? gunzipSync(body) : body;
      assert.ok(raw.equals(readFileSync(join(WIDGET, 'dist', file))), `${route} is not dist/${file}: rebuild the gateway after building the widget`);
    }
    const r = await fetch(proxy.url + '/chat?site=nope');
    assert.equal(r.status, 404);
  });

  it('loads on the demo page with no console errors, after the load event, ready soon after', async () => {
    const samples = [];
    for (let i = 0; i < 3; i++) {
      const context = await newContext();
      const { page, errors } = await visit(context);
      await connected(page);
      assert.ok(await launcher(page).isVisible());
      const t = await page.evaluate(() => ({
        load: performance.getEntriesByType('navigation')[0].loadEventEnd,
        ready: performance.getEntriesByName('livechat:ready')[0].startTime,
      }));
      assert.ok(t.ready >= t.load, `widget work began before the load event (${JSON.stringify(t)})`);
      samples.push(Math.round(t.ready - t.load));
      assert.deepEqual(errors, []);
      await context.close();
    }
    samples.sort((a, b) => a - b);
    metrics.load_to_ready_ms = { samples, median: samples[1] };
    console.log(`load event -> widget ready (fresh profile each): ${samples.join(', ')} ms; median ${samples[1]} ms`);
  });

  it('is harmless when the snippet is pasted twice', async () => {
    const context = await newContext();
    const page = await context.newPage();
    const sockets = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));
    const errors = collectErrors(page);
    await page.goto(proxy.url + '/__host/twice', { timeout: T });
    await waitReady(page);
    await connected(page);
    assert.equal(await page.locator('script[src="/widget.js"]').count(), 2);
    assert.equal(await page.locator('livechat-widget').count(), 1);
    assert.equal(await page.locator('livechat-widget iframe').count(), 1);
    assert.equal(sockets.length, 1, sockets.join());
    assert.deepEqual(errors, []);
    await context.close();
  });

  it('streams an answer token by token, and brings the history back after a reload', async () => {
    const context = await newContext();
    const { page, errors } = await visit(context);
    await openChat(page);
    assert.equal(await chat(page).locator(':focus').getAttribute('id'), 'input', 'opening moves focus to the message field');
    const q = 'Do the Trail boots need waxing?';
    const { answer, partials } = await askAndWaitAnswer(page, q);
    assert.ok(partials >= 3, `the reply grew in ${partials} steps`);
    assert.ok(answer.split(' ').length >= 10, answer);
    await page.screenshot({ path: join(ARTIFACTS, 'desktop.png') });
    assert.deepEqual(errors, []);

    await page.reload({ timeout: T });
    await waitReady(page);
    await connected(page);
    await openChat(page);
    assert.deepEqual(await visitorTexts(page), [q]);
    const answers = await chat(page).locator('[data-reply][data-done="true"] .b').allTextContents();
    assert.deepEqual(answers, [answer]);
    await context.close();
  });

  it('carries the conversation over long-polling when the upgrade is refused, and remembers that', async () => {
    proxy.sw.refuseWs = true;
    try {
      const context = await newContext();
      const { page } = await visit(context);
      await connected(page, 'poll');
      await openChat(page);
      const q = 'What is your returns policy?';
      const { answer, partials } = await askAndWaitAnswer(page, q);
      assert.ok(partials >= 3, `the reply grew in ${partials} steps`);
      const upgrades = proxy.sw.upgrades;
      await page.reload({ timeout: T });
      await waitReady(page);
      await connected(page, 'poll');
      assert.equal(proxy.sw.upgrades, upgrades, 'no upgrade tried again in this session');
      await openChat(page);
      assert.deepEqual(await visitorTexts(page), [q]);
      assert.deepEqual(await chat(page).locator('[data-reply][data-done="true"] .b').allTextContents(), [answer]);
      await context.close();
    } finally {
      proxy.sw.refuseWs = false;
    }
  });

  it('queues messages while the gateway is unreachable, across a reload, and delivers them in order once each', async () => {
    const context = await newContext();
    const { page } = await visit(context);
    await connected(page);
    await openChat(page);
    await askAndWaitAnswer(page, 'first, online');
    try {
      proxy.setDown(true);
      await chat(page).locator('html[data-conn="offline"]').waitFor({ state: 'attached', timeout: T });
      await type(page, 'offline one');
      await type(page, 'offline two');
      const pending = chat(page).locator('li.me[data-state="queued"]');
      await pending.nth(1).waitFor({ timeout: T });
      assert.match(await pending.first().locator('.st').textContent(), /Not sent yet/);

      // The page and the widget load; the chat routes stay cut off.
      await page.reload({ timeout: T });
      await waitReady(page);
      await openChat(page);
      await type(page, 'offline three');
      await pending.nth(2).waitFor({ timeout: T });
      assert.deepEqual(await chat(page).locator('li.me[data-state="queued"] .b').allTextContents(), ['offline one', 'offline two', 'offline three']);
    } finally {
      proxy.setDown(false);
    }
    await connected(page);
    const delivered = chat(page).locator('li.me[data-state="delivered"]');
    await delivered.nth(3).waitFor({ timeout: 30000 });
    await chat(page).locator('[data-reply][data-done="true"]').nth(3).waitFor({ timeout: T });
    // The gateway's own transcript, as a fresh page gets it.
    await page.reload({ timeout: T });
    await waitReady(page);
    await connected(page);
    await openChat(page);
    assert.deepEqual(await visitorTexts(page), ['first, online', 'offline one', 'offline two', 'offline three']);
    assert.equal(await chat(page).locator('li.me:not([data-state="delivered"])').count(), 0);
    await context.close();
  });

  it('honours rate limits: a burst of 13 arrives complete and in order', async () => {
    const context = await newContext();
    const { page } = await visit(context);
    const refused = [];
    page.on('websocket', (ws) => ws.on('framereceived', (f) => String(f.payload).includes('"rate_limited"') && refused.push(f.payload)));
    await page.reload({ timeout: T }); // so the socket is observed from its start
    await waitReady(page);
    await connected(page);
    await openChat(page);
    const f = await frameOf(page);
    const texts = Array.from({ length: 13 }, (_, i) => `burst ${i + 1}`);
    await f.evaluate((list) => {
      const input = document.getElementById('input');
      for (const t of list) {
        input.value = t;
        document.getElementById('form').requestSubmit();
      }
    }, texts);
    await chat(page).locator('li.me[data-state="delivered"]').nth(12).waitFor({ timeout: 30000 });
    assert.ok(refused.length >= 1, 'the gateway refused part of the burst (rate_limited)');
    await page.reload({ timeout: T });
    await waitReady(page);
    await connected(page);
    await openChat(page);
    assert.deepEqual(await visitorTexts(page), texts);
    await context.close();
  });

  it('takes the whole screen on a 375 px phone, with tap targets of 44 px or more', async () => {
    const context = await newContext({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    const { page, errors } = await visit(context);
    await connected(page);
    const lb = await launcher(page).boundingBox();
    assert.ok(lb.width >= 44 && lb.height >= 44, JSON.stringify(lb));
    await launcher(page).tap({ timeout: T });
    await page.locator('livechat-widget .lc.open').waitFor({ state: 'attached', timeout: T });
    await page.waitForFunction(() => getComputedStyle(document.querySelector('livechat-widget').shadowRoot.querySelector('.win')).opacity === '1', null, {
      timeout: T,
    });
    const box = await page.locator('livechat-widget iframe').boundingBox();
    // Whole pixels: the opening transform may leave a sub-pixel remainder
    // (7e-8 px seen) for a frame after the opacity settles.
    const win = Object.fromEntries(Object.entries(box).map(([k, v]) => [k, Math.round(v)]));
    assert.deepEqual(win, { x: 0, y: 0, width: 375, height: 740 });
    await type(page, 'Hello from a phone');
    await chat(page).locator('[data-reply][data-done="true"]').first().waitFor({ timeout: T });
    const small = await (await frameOf(page)).evaluate(() =>
      [...document.querySelectorAll('button, textarea')]
        .filter((e) => e.offsetParent)
        .map((e) => [e.id || e.className, e.getBoundingClientRect()])
        .filter(([, r]) => r.width < 44 || r.height < 44)
        .map(([n, r]) => `${n} ${r.width}x${r.height}`),
    );
    assert.deepEqual(small, []);
    await page.screenshot({ path: join(ARTIFACTS, 'mobile.png') });
    assert.deepEqual(errors, []);
    await context.close();
  });

  it('works from the keyboard and names its parts for screen readers', async () => {
    const context = await newContext();
    const { page } = await visit(context);
    await connected(page);
    const l = launcher(page);
    await l.focus();
    assert.equal(await l.getAttribute('aria-expanded'), 'false');
    assert.equal(await l.getAttribute('aria-label'), 'Open chat');
    await page.keyboard.press('Enter');
    await page.locator('livechat-widget .lc.open').waitFor({ state: 'attached', timeout: T });
    assert.equal(await l.getAttribute('aria-expanded'), 'true');
    assert.equal(await page.locator('livechat-widget [role="dialog"]').getAttribute('aria-label'), 'Fernhill assistant');
    const c = chat(page);
    await c.locator('#input:focus').waitFor({ timeout: T });
    await c.getByRole('log', { name: 'Conversation' }).waitFor({ timeout: T });
    await c.getByRole('textbox', { name: 'Your message' }).waitFor({ timeout: T });
    for (const name of ['Send', 'Close chat', 'Talk to a person']) await c.getByRole('button', { name }).waitFor({ timeout: T });
    await page.keyboard.type('Typed with the keyboard');
    await page.keyboard.press('Enter');
    await c.locator('li.me[data-state="delivered"]').waitFor({ timeout: T });
    await page.keyboard.press('Escape');
    await page.locator('livechat-widget .lc:not(.open)').waitFor({ state: 'attached', timeout: T });
    assert.equal(await l.getAttribute('aria-expanded'), 'false');
    assert.ok(await page.evaluate(() => document.querySelector('livechat-widget').shadowRoot.activeElement?.classList.contains('launcher')), 'focus returns to the launcher');
    await context.close();
  });

  it('is not changed by an aggressive host stylesheet', async () => {
    const context = await newContext();
    const { page } = await visit(context);
    await connected(page);
    await openChat(page);
    const measure = async () => ({
      launcher: await launcher(page).boundingBox(),
      window: await page.locator('livechat-widget iframe').boundingBox(),
      launcherStyle: await launcher(page).evaluate((e) => {
        const s = getComputedStyle(e);
        return [s.backgroundColor, s.borderRadius, s.boxShadow, s.opacity, s.transform].join(' | ');
      }),
      inside: await (await frameOf(page)).evaluate(() => {
        const s = (sel) => getComputedStyle(document.querySelector(sel));
        return [s('body').fontFamily, s('body').fontSize, s('header').backgroundColor, s('.send').width, s('#input').fontSize].join(' | ');
      }),
    });
    // Pixels well inside the launcher and the window (clear of rounded corners,
    // where the page behind may show): nothing may cover or restyle them.
    const shots = async () => {
      const inner = (b, inset) => ({ x: b.x + inset, y: b.y + inset, width: b.width - 2 * inset, height: b.height - 2 * inset });
      const opts = { animations: 'disabled', caret: 'hide' };
      return [
        await page.screenshot({ ...opts, clip: inner(await launcher(page).boundingBox(), 15) }),
        await page.screenshot({ ...opts, clip: inner(await page.locator('livechat-widget iframe').boundingBox(), 20) }),
      ];
    };
    const plain = await measure();
    const plainShots = await shots();
    // Everything a careless or hostile site stylesheet does to elements it
    // does not own. (A transform or filter on <html> itself would move and
    // tint every fixed element, ours included; no widget can escape that.)
    await page.addStyleTag({
      content: `
        body, body *, body::before, body::after, body *::before, body *::after { all: unset !important;
          font: 40px/3 "Comic Sans MS", cursive !important; color: red !important; background: yellow !important;
          border: 6px dashed red !important; padding: 20px !important; margin: 15px !important; box-sizing: content-box !important;
          transform: rotate(3deg) scale(.8) !important; opacity: .6 !important; position: static !important;
          width: 50px !important; height: 50px !important; filter: invert(1) !important; z-index: 2147483647 !important; }
        * { color: red !important; font-family: "Comic Sans MS" !important; box-sizing: content-box !important; cursor: wait !important; }
        livechat-widget, iframe, button, div { display: none !important; visibility: hidden !important; }
        livechat-widget::before, livechat-widget::after { content: "HOSTILE" !important; display: block !important;
          position: fixed !important; inset: 0 !important; background: red !important; }
        :root { --lc-accent: red !important; --lc-launcher-size: 10px !important; --lc-radius: 0 !important;
          font-size: 30px !important; line-height: 4 !important; direction: rtl !important; }
        body { transform: translateX(100px) !important; }
      `,
    });
    assert.deepEqual(await measure(), plain);
    const [l, w] = await shots();
    assert.ok(l.equals(plainShots[0]), 'the launcher looks the same');
    assert.ok(w.equals(plainShots[1]), 'the chat window looks the same');
    await page.screenshot({ path: join(ARTIFACTS, 'hostile-css.png') });
    await context.close();
  });

  it('runs the site\'s triggers once per session, with the site theme under the page\'s overrides', async () => {
    const context = await newContext();
    const { page, errors } = await visit(context, '/__host/shop');
    const teaser = page.locator('livechat-widget .teaser');
    await teaser.getByText('Need help choosing?').waitFor({ timeout: T });
    await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight));
    await teaser.getByText('Still looking? Ask me.').waitFor({ timeout: T });
    assert.equal(await page.locator('livechat-widget .badge').textContent(), '2');

    // Theme: site accent and radius from the gateway, radius overridden by data-radius,
    // launcher size by the LiveChatSettings object.
    const look = await page.evaluate(() => {
      const r = document.querySelector('livechat-widget').shadowRoot;
      const l = getComputedStyle(r.querySelector('.launcher'));
      return { bg: l.backgroundColor, w: l.width, radius: getComputedStyle(r.querySelector('.win')).borderTopLeftRadius };
    });
    assert.deepEqual(look, { bg: 'rgb(0, 170, 119)', w: '64px', radius: '3px' });
    assert.equal(await chat(page).locator('.send').evaluate((e) => getComputedStyle(e).backgroundColor), 'rgb(0, 170, 119)');

    await page.goto(proxy.url + '/__host/pricing', { timeout: T });
    await waitReady(page);
    await teaser.getByText('Questions about pricing?').waitFor({ timeout: T });
    // Past the time trigger's second on this page too; it must not fire again.
    await page.waitForFunction(() => performance.now() > 2500, null, { timeout: T });
    await teaser.click();
    await page.locator('livechat-widget .lc.open').waitFor({ state: 'attached', timeout: T });
    const said = await chat(page).locator('li.ai .b').allTextContents();
    for (const m of ['Need help choosing?', 'Still looking? Ask me.', 'Questions about pricing?']) {
      assert.equal(said.filter((s) => s === m).length, 1, `"${m}" shown once: ${JSON.stringify(said)}`);
    }
    assert.deepEqual(errors, []);
    await context.close();
  });

  it('shows hand-off progress, agent messages, unread counts and asks for a rating when the conversation ends', async () => {
    const context = await newContext();
    const sent = [];
    let toPage = null;
    // Between the page and the real gateway: the test speaks as the agent desk the gateway does not have yet.
    await context.routeWebSocket(/\/ws\?/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => {
        sent.push(JSON.parse(m));
        server.send(m);
      });
      server.onMessage((m) => ws.send(m));
      toPage = (msg) => ws.send(JSON.stringify(msg));
    });
    const { page, errors } = await visit(context);
    await connected(page);
    await openChat(page);
    const c = chat(page);
    await c.getByRole('button', { name: 'Talk to a person' }).click({ timeout: T });
    await c.getByText('No one is available right now', { exact: false }).waitFor({ timeout: T });
    assert.ok(sent.some((m) => m.type === 'human'));

    toPage({ type: 'agent', event: 'queued', position: 2 });
    await c.getByText('you are number 2 in the queue').waitFor({ timeout: T });
    toPage({ type: 'agent', event: 'queued', position: 1 });
    await c.getByText('you are number 1 in the queue').waitFor({ timeout: T });
    assert.equal(await c.locator('li.note', { hasText: 'in the queue' }).count(), 1, 'the position updates in place');
    toPage({ type: 'typing', from: 'agent', name: 'Dana' });
    await c.getByText('Dana is typing…').waitFor({ timeout: T });
    toPage({ type: 'agent', event: 'joined', name: 'Dana' });
    await c.getByText('Dana joined the conversation.').waitFor({ timeout: T });
    assert.ok(await c.locator('#human').isHidden(), 'no "talk to a person" while a person is there');

    await page.keyboard.press('Escape');
    await page.locator('livechat-widget .lc:not(.open)').waitFor({ state: 'attached', timeout: T });
    toPage({ type: 'message', seq: 9, from: 'agent', name: 'Dana', text: 'Hi, Dana here. How can I help?' });
    await page.locator('livechat-widget .badge:not([hidden])').waitFor({ timeout: T });
    assert.equal(await launcher(page).getAttribute('aria-label'), 'Open chat, 1 unread message');
    await openChat(page);
    await page.locator('livechat-widget .badge[hidden]').waitFor({ state: 'attached', timeout: T });
    await c.locator('li.agent', { hasText: 'Dana here' }).waitFor({ timeout: T });

    toPage({ type: 'ended', reason: 'resolved' });
    const rate = c.getByRole('group', { name: 'Rate this conversation' });
    await rate.waitFor({ timeout: T });
    await rate.getByRole('button', { name: '4 out of 5' }).click({ timeout: T });
    await c.getByText('You rated this conversation 4 out of 5.').waitFor({ timeout: T });
    assert.ok(sent.some((m) => m.type === 'csat' && m.score === 4), JSON.stringify(sent));
    assert.deepEqual(errors, []);
    await context.close();
  });
});
