// The agent desk in headless Chromium. First against a scripted gateway
// (the page's HTTP and WebSocket answered by the test, so every frame of the
// desk's protocol can be played at will), then against a real gateway with
// the visitor's widget in a second page: sign-in, queue, take, both ways of
// typing and talking, canned replies, resolve and the visitor's rating, and
// leave-a-message when no agent is online. Every wait is on a DOM state or
// an event, each with a bound.

import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { collectErrors, hostPage, launchChromium, startGateway, startProxy } from './harness.mjs';

const WIDGET = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const REPO = resolve(WIDGET, '..');
const ARTIFACTS = join(REPO, 'artifacts', 'widget');
const BIN = process.env.GATEWAY_BIN || join(REPO, 'target', 'release', 'gateway');
const T = 15000; // bound for any single wait

let browser;
before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
});

// The desk asks /agent/me before it knows whether it is signed in, and a
// wrong token gets a 401: Chromium logs every such answer as a console error.
const deskErrors = (page) => {
  const errors = collectErrors(page);
  return { list: () => errors.filter((e) => !/status of 401 .*\/agent\/(me|login)\)$/.test(e)) };
};
const newContext = (opts = {}) => browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US', ...opts });
const deskOpen = (page) => page.locator('html[data-conn="open"]').waitFor({ state: 'attached', timeout: T });

/**
 * A gateway played by the test for one browser context: serves dist/agent.html
 * at http://desk.test/agent, answers /agent/me, /agent/login and /agent/logout,
 * and speaks the agent WebSocket. `next(pred)` waits for a frame from the desk.
 */
async function scriptedGateway(context, { agent, token, welcome }) {
  const g = { signedIn: false, sockets: 0, frames: [], waiters: [], logins: 0 };
  const json = (status, body) => ({ status, contentType: 'application/json', body: JSON.stringify(body) });
  await context.route('http://desk.test/**', async (route) => {
    const req = route.request();
    const path = new URL(req.url()).pathname;
    if (path === '/agent') {
      return route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: readFileSync(join(WIDGET, 'dist', 'agent.html')) });
    }
    if (path === '/agent/me') return route.fulfill(g.signedIn ? json(200, agent) : json(401, { error: 'unauthorized' }));
    if (path === '/agent/login' && req.method() === 'POST') {
      g.logins++;
      if (req.postDataJSON()?.token !== token) return route.fulfill(json(401, { error: 'unauthorized' }));
      g.signedIn = true;
      return route.fulfill(json(200, agent));
    }
    if (path === '/agent/logout' && req.method() === 'POST') {
      g.signedIn = false;
      return route.fulfill({ status: 204 });
    }
    return route.fulfill({ status: 404 });
  });
  await context.routeWebSocket('ws://desk.test/agent/ws', (ws) => {
    if (!g.signedIn) return ws.close({ code: 1008 });
    g.sockets++;
    g.ws = ws;
    ws.onMessage((m) => {
      const f = JSON.parse(m);
      g.frames.push(f);
      g.waiters = g.waiters.filter((w) => !(w.pred(f) && (w.resolve(f), true)));
    });
    ws.send(JSON.stringify(welcome()));
  });
  g.send = (m) => g.ws.send(JSON.stringify(m));
  /** The first frame from the desk matching `pred`, sent after `since` (an index into frames). */
  g.next = (pred, since = 0) => {
    const seen = g.frames.slice(since).find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no such frame from the desk in ${T} ms; got ${JSON.stringify(g.frames)}`)), T);
      g.waiters.push({ pred, resolve: (f) => (clearTimeout(t), resolve(f)) });
    });
  };
  return g;
}

describe('agent desk against a scripted gateway', () => {
  const SAM = { id: 'a1', name: 'Sam', role: 'supervisor', languages: ['en', 'fr'], skills: ['returns'], capacity: 4, sites: ['demo'] };
  const now = Date.now();
  const cardA = {
    conversation: 'c_AAAAAAAAAAAAAAAA',
    site: 'demo',
    state: 'queued',
    reason: 'visitor asked for a person',
    lang: 'fr-CA',
    page: 'https://shop.example/checkout',
    referrer: 'https://search.example/?q=boots',
    waiting_since_ms: now - 65000,
    position: 1,
    preview: 'Where is my parcel?',
    offline: [{ email: 'v@example.com', text: 'Please call me back.', at_ms: now - 3600000 }],
  };
  const canned = [
    { shortcut: 'returns', text: 'You can return anything within 30 days.' },
    { shortcut: 'hello', text: 'Hi! How can I help?' },
  ];
  const transcript = [
    { seq: 1, from: 'visitor', text: 'Where is my parcel?', ts: now - 70000, id: 'v1' },
    { seq: 2, from: 'ai', text: 'Parcels ship within 2 days.', ts: now - 69000, reply: 'r1', sources: [{ chunk: 3, title: 'Shipping', url: 'https://shop.example/shipping', score: 0.82 }] },
  ];
  let held = [];

  it('signs in, takes an offer, talks with canned replies, transfers, survives a reconnect, resolves and signs out', async () => {
    const context = await newContext();
    const g = await scriptedGateway(context, { agent: SAM, token: 'good-token', welcome: () => ({ type: 'welcome', agent: SAM, queue: [], conversations: held, canned }) });
    const page = await context.newPage();
    const errors = deskErrors(page);
    await page.goto('http://desk.test/agent', { timeout: T });

    // Signing in: a wrong token is refused in words; the right one opens the desk.
    const tokenField = page.getByLabel('Agent token');
    await tokenField.waitFor({ timeout: T });
    assert.ok(await tokenField.evaluate((e) => e === document.activeElement), 'the token field has the focus');
    await tokenField.fill('wrong');
    await tokenField.press('Enter');
    await page.getByText('That token was not accepted.').waitFor({ timeout: T });
    await tokenField.fill('good-token');
    await page.getByRole('button', { name: 'Sign in' }).click({ timeout: T });
    await deskOpen(page);
    assert.equal(await page.locator('#who').textContent(), 'Sam (supervisor)');
    assert.ok(await page.locator('#signin').isHidden());
    assert.deepEqual(await g.next((f) => f.type === 'status'), { type: 'status', available: true }, 'available once signed in');

    // The queue, then an offer with its countdown; declining it.
    g.send({ type: 'queue', items: [cardA] });
    const queued = page.locator('#queue li[data-conversation="c_AAAAAAAAAAAAAAAA"]');
    await queued.waitFor({ timeout: T });
    const text = await queued.textContent();
    for (const part of ['#1', 'demo', 'fr-CA', '1 min', 'shop.example/checkout', 'Where is my parcel?', 'visitor asked for a person']) {
      assert.ok(text.includes(part), `"${part}" on the card: ${text}`);
    }
    assert.equal(await page.title(), '(1) Agent desk');
    g.send({ type: 'offer', conversation: cardA.conversation, expires_in_ms: 20000 });
    const offer = page.locator('#offers li.offer');
    await offer.waitFor({ timeout: T });
    assert.match(await offer.locator('.left').textContent(), /^(19|20) s left$/);
    assert.equal(await queued.count(), 0, 'an offered conversation shows once, as the offer');
    await offer.getByRole('button', { name: /^Decline/ }).click({ timeout: T });
    assert.deepEqual(await g.next((f) => f.type === 'decline'), { type: 'decline', conversation: cardA.conversation });
    await queued.waitFor({ timeout: T });

    // Offered again, taken: the transcript, the visitor's details, focus in the reply box.
    g.send({ type: 'offer', conversation: cardA.conversation, expires_in_ms: 20000 });
    await offer.getByRole('button', { name: /^Take/ }).click({ timeout: T });
    assert.deepEqual(await g.next((f) => f.type === 'take'), { type: 'take', conversation: cardA.conversation });
    held = [{ ...cardA, state: 'assigned', agent: 'Sam', position: undefined }];
    g.send({ type: 'assigned', ...held[0], items: transcript });
    g.send({ type: 'queue', items: [] });
    await page.locator('#mine li[data-conversation="c_AAAAAAAAAAAAAAAA"]').waitFor({ timeout: T });
    await page.locator('#input:focus').waitFor({ timeout: T });
    const log = page.getByRole('log', { name: 'Transcript' });
    await log.locator('li[data-from="ai"]').waitFor({ timeout: T });
    assert.equal(await log.locator('li[data-from="visitor"] .b').textContent(), 'Where is my parcel?');
    assert.equal(await log.locator('li[data-from="ai"] .src a').getAttribute('href'), 'https://shop.example/shipping');
    const info = page.getByRole('complementary', { name: 'Visitor' });
    for (const part of ['fr-CA', 'https://shop.example/checkout', 'https://search.example/?q=boots', 'v@example.com', 'Please call me back.']) {
      await info.getByText(part, { exact: false }).first().waitFor({ timeout: T });
    }
    assert.equal(await page.locator('#queue-empty').isVisible(), true);

    // The visitor types, then writes.
    g.send({ type: 'typing', conversation: cardA.conversation });
    await page.getByText('Visitor is typing…').waitFor({ timeout: T });
    g.send({ type: 'message', conversation: cardA.conversation, item: { seq: 3, from: 'visitor', text: 'Hello?', ts: Date.now(), id: 'v2' } });
    await log.locator('li[data-seq="3"]', { hasText: 'Hello?' }).waitFor({ timeout: T });
    await page.locator('#vtyping:empty').waitFor({ state: 'attached', timeout: T });

    // A canned reply by "/" completion, from the keyboard; typing is told to the visitor.
    const input = page.getByRole('textbox', { name: 'Reply' });
    const mark = g.frames.length;
    await input.pressSequentially('/re', { timeout: T });
    const list = page.getByRole('listbox', { name: 'Canned replies' });
    await list.getByRole('option', { name: /returns/ }).waitFor({ timeout: T });
    assert.equal(await list.getByRole('option').count(), 1);
    assert.deepEqual(await g.next((f) => f.type === 'typing', mark), { type: 'typing', conversation: cardA.conversation });
    await input.press('Enter');
    assert.equal(await input.inputValue(), 'You can return anything within 30 days.');
    assert.ok(await list.isHidden());
    await input.press('Enter');
    const sent = await g.next((f) => f.type === 'message', mark);
    assert.equal(sent.conversation, cardA.conversation);
    assert.equal(sent.text, 'You can return anything within 30 days.');
    assert.ok(sent.id.length >= 1 && sent.id.length <= 64, sent.id);
    assert.equal(g.frames.filter((f) => f.type === 'typing').length - g.frames.slice(0, mark).filter((f) => f.type === 'typing').length, 1, 'typing at most every 2 s');
    const pending = log.locator('li.pending[data-state="sending"]');
    await pending.waitFor({ timeout: T });
    assert.equal(await input.inputValue(), '');
    g.send({ type: 'ack', id: sent.id, conversation: cardA.conversation, seq: 4 });
    await log.locator('li[data-from="agent"][data-seq="4"]').waitFor({ timeout: T });
    assert.equal(await pending.count(), 0);

    // The picker inserts a canned reply where the caret is.
    await page.getByLabel('Insert a canned reply').selectOption({ label: '/hello: Hi! How can I help?' });
    assert.equal(await input.inputValue(), 'Hi! How can I help?');
    await input.fill('');

    // Errors go to the status line; a refused reply says why.
    await input.fill('x');
    await input.press('Enter');
    const bad = await g.next((f) => f.type === 'message' && f.text === 'x');
    g.send({ type: 'error', code: 'too_large', message: 'The message is too long.', id: bad.id, conversation: cardA.conversation });
    await page.getByRole('status').filter({ hasText: 'The message is too long.' }).waitFor({ timeout: T });
    await log.locator('li.pending[data-state="failed"]', { hasText: 'Not sent: The message is too long.' }).waitFor({ timeout: T });

    // Transfer, for a supervisor: the agents of the site.
    g.send({
      type: 'agents',
      items: [
        { id: 'a1', name: 'Sam', online: true, available: true, load: 1, capacity: 4 },
        { id: 'a2', name: 'Bea', online: true, available: true, load: 2, capacity: 4 },
        { id: 'a3', name: 'Cy', online: false, available: false, load: 0, capacity: 3 },
      ],
    });
    const xfer = page.getByLabel('Transfer to');
    await xfer.locator('option', { hasText: 'Bea (2/4)' }).waitFor({ state: 'attached', timeout: T });
    assert.equal(await xfer.locator('option', { hasText: 'Sam' }).count(), 0, 'not to oneself');
    assert.ok(await xfer.locator('option', { hasText: 'Cy' }).isDisabled(), 'not to an agent offline');
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-scripted.png') });
    await xfer.selectOption('a2');
    await page.getByRole('button', { name: 'Transfer', exact: true }).click({ timeout: T });
    assert.deepEqual(await g.next((f) => f.type === 'transfer'), { type: 'transfer', conversation: cardA.conversation, to: 'a2' });

    // The socket drops: the desk comes back by itself, says it is available
    // again and asks for the transcript it shows.
    const before = g.sockets;
    const statuses = g.frames.filter((f) => f.type === 'status').length;
    const at = g.frames.length;
    await g.ws.close({ code: 1001 });
    await page.locator('html[data-conn="offline"]').waitFor({ state: 'attached', timeout: T });
    await deskOpen(page);
    assert.equal(g.sockets, before + 1);
    assert.deepEqual(await g.next((f) => f.type === 'open', at), { type: 'open', conversation: cardA.conversation });
    assert.equal(g.frames.filter((f) => f.type === 'status').length, statuses + 1);
    g.send({ type: 'transcript', ...held[0], items: transcript });

    // Away, then resolve: the conversation leaves "My conversations".
    await page.getByRole('switch', { name: 'Available' }).uncheck({ timeout: T });
    assert.deepEqual(await g.next((f) => f.type === 'status' && f.available === false), { type: 'status', available: false });
    await page.getByRole('button', { name: 'Resolve' }).click({ timeout: T });
    assert.deepEqual(await g.next((f) => f.type === 'resolve'), { type: 'resolve', conversation: cardA.conversation });
    held = [];
    g.send({ type: 'unassigned', conversation: cardA.conversation, reason: 'resolved' });
    g.send({ type: 'ended', conversation: cardA.conversation, reason: 'resolved' });
    await page.locator('#mine-empty').waitFor({ timeout: T });
    await page.getByRole('status').filter({ hasText: 'resolved' }).waitFor({ timeout: T });
    assert.ok(await page.locator('#pane').isHidden());
    await page.locator('#mine-h:focus').waitFor({ timeout: T });

    // Signing out ends the socket and shows the form again.
    await page.getByRole('button', { name: 'Sign out' }).click({ timeout: T });
    await page.locator('#token:focus').waitFor({ timeout: T });
    assert.equal(g.signedIn, false);
    assert.ok(await page.locator('#desk').isHidden());
    assert.deepEqual(errors.list(), []);
    await context.close();
  });

  it('skips the form when already signed in, and returns to it when the sign-in ends', async () => {
    const context = await newContext();
    const g = await scriptedGateway(context, { agent: { ...SAM, role: 'agent' }, token: 't', welcome: () => ({ type: 'welcome', agent: SAM, queue: [], conversations: [], canned: [] }) });
    g.signedIn = true;
    const page = await context.newPage();
    const errors = deskErrors(page);
    await page.goto('http://desk.test/agent', { timeout: T });
    await deskOpen(page);
    assert.ok(await page.locator('#signin').isHidden());
    assert.equal(g.logins, 0);
    assert.ok(await page.locator('#xfer-box').isHidden(), 'no transfer for an agent');
    // The sign-in ends on the server (expired, or signed out in another tab): the
    // reconnect is refused, /agent/me says 401, and the form comes back.
    g.signedIn = false;
    await g.ws.close({ code: 1001 });
    await page.getByText('Your sign-in has ended').waitFor({ timeout: T });
    await page.locator('#token:focus').waitFor({ timeout: T });
    assert.deepEqual(errors.list(), []);
    await context.close();
  });
});

describe('the widget\'s side of the desk, against a scripted gateway', () => {
  /** The chat window alone (not framed) at http://desk.test/chat, its WebSocket answered by `answer`. */
  async function scriptedChat(answer) {
    const context = await newContext();
    const got = [];
    const g = {};
    await context.route('http://desk.test/**', (route) =>
      new URL(route.request().url()).pathname === '/chat'
        ? route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: readFileSync(join(WIDGET, 'dist', 'chat.html')) })
        : route.fulfill({ status: 404 }),
    );
    await context.routeWebSocket(/^ws:\/\/desk\.test\/ws\?/, (ws) => {
      g.send = (m) => ws.send(JSON.stringify(m));
      ws.onMessage((text) => {
        const m = JSON.parse(text);
        got.push(m);
        if (m.type === 'hello') g.send({ type: 'welcome', conversation: 'c_1', resumed: false, history: [], config: { site: 'demo', title: 'Shop', theme: {}, triggers: [] } });
        else answer(m, g.send);
      });
    });
    const page = await context.newPage();
    const errors = collectErrors(page);
    await page.goto('http://desk.test/chat?site=demo', { timeout: T });
    await page.locator('html[data-conn="open"]').waitFor({ state: 'attached', timeout: T });
    return { context, page, got, errors, g };
  }

  it('offers a leave-a-message form on none_available, sends leave_message and confirms on message_left', async () => {
    let refuse = true;
    const { context, page, got, errors } = await scriptedChat((m, send) => {
      if (m.type === 'human') send({ type: 'agent', event: 'none_available' });
      if (m.type === 'leave_message') {
        if (refuse) send({ type: 'error', code: 'bad_request', message: 'email: not an address' });
        else send({ type: 'agent', event: 'message_left' });
        refuse = false;
      }
    });
    await page.getByRole('button', { name: 'Talk to a person' }).click({ timeout: T });
    const form = page.getByRole('form', { name: 'Leave a message' });
    const email = form.getByLabel('Your email');
    await email.and(page.locator(':focus')).waitFor({ timeout: T }); // the visitor asked: on to the form
    await email.fill('visitor@example.com');
    await form.getByLabel('Message for the team').fill('Please call me.');
    await form.getByRole('button', { name: 'Send message' }).click({ timeout: T });
    // Refused: said so, and the form works again with what was typed.
    await page.getByText('Your message was not sent: email: not an address').waitFor({ timeout: T });
    assert.ok(await email.isEnabled());
    assert.equal(await form.getByLabel('Message for the team').inputValue(), 'Please call me.');
    await form.getByRole('button', { name: 'Send message' }).click({ timeout: T });
    await page.getByText('Thank you! Your message was sent. We will reply to visitor@example.com.').waitFor({ timeout: T });
    assert.equal(await form.count(), 0);
    assert.deepEqual(
      got.filter((m) => m.type === 'leave_message'),
      Array(2).fill({ type: 'leave_message', email: 'visitor@example.com', text: 'Please call me.' }),
    );
    assert.deepEqual(errors, []);
    await context.close();
  });

  it('drops an unsent form once the visitor is queued, then shows the agent, their words and the rating', async () => {
    const { context, page, got, errors, g } = await scriptedChat((m, send) => m.type === 'human' && send({ type: 'agent', event: 'none_available' }));
    await page.getByRole('button', { name: 'Talk to a person' }).click({ timeout: T });
    const form = page.getByRole('form', { name: 'Leave a message' });
    await form.waitFor({ timeout: T });
    g.send({ type: 'agent', event: 'queued', position: 3 });
    await page.getByText('you are number 3 in the queue').waitFor({ timeout: T });
    assert.equal(await form.count(), 0, 'no form while waiting for a person');
    g.send({ type: 'agent', event: 'queued', position: 1 });
    await page.getByText('you are number 1 in the queue').waitFor({ timeout: T });
    g.send({ type: 'agent', event: 'joined', name: 'Ada' });
    await page.getByText('Ada joined the conversation.').waitFor({ timeout: T });
    await page.locator('#input').fill('Hello Ada');
    await page.locator('#input').press('Enter');
    const hello = got.find((m) => m.type === 'message');
    assert.ok(got.some((m) => m.type === 'typing'), 'the agent hears of typing at once');
    g.send({ type: 'ack', id: hello.id, seq: 2 });
    g.send({ type: 'typing', from: 'agent', name: 'Ada' });
    await page.getByText('Ada is typing…').waitFor({ timeout: T });
    g.send({ type: 'message', seq: 3, from: 'agent', name: 'Ada', text: 'Hi! How can I help?' });
    await page.locator('li.agent', { hasText: 'Hi! How can I help?' }).waitFor({ timeout: T });
    assert.ok(await page.getByText('Ada is typing…').isHidden());
    g.send({ type: 'agent', event: 'left', name: 'Ada' });
    await page.getByText('Ada left the conversation.').waitFor({ timeout: T });
    g.send({ type: 'ended', reason: 'resolved' });
    await page.getByRole('group', { name: 'Rate this conversation' }).getByRole('button', { name: '4 out of 5' }).click({ timeout: T });
    await page.getByText('You rated this conversation 4 out of 5.').waitFor({ timeout: T });
    assert.deepEqual(
      got.find((m) => m.type === 'csat'),
      { type: 'csat', score: 4 },
    );
    assert.deepEqual(errors, []);
    await context.close();
  });
});

// ---- against the real gateway ----

const CONFIG = `
[admin]
token = "test-admin-token"

[agents]
offer_timeout_ms = 20000
queue_timeout_ms = 60000
reconnect_grace_ms = 3000

[sites.demo]
title = "Fernhill assistant"
greeting = "Hi! Ask me about boots, packs or returns."

[sites.quiet]
title = "Quiet shop"
`;

describe('agent desk and widget against the gateway', () => {
  let gw;
  let proxy;
  const pages = new Map([['/__host/quiet', hostPage({ site: 'quiet' })]]);
  before(async () => {
    gw = await startGateway(BIN, CONFIG);
    proxy = await startProxy(gw.port, pages);
  });
  after(async () => {
    await proxy?.close();
    await gw?.stop();
  });

  const admin = (method, path, body) =>
    fetch(proxy.url + path, {
      method,
      headers: { authorization: 'Bearer test-admin-token', 'content-type': 'application/json' },
      body: body && JSON.stringify(body),
    });
  const chat = (page) => page.frameLocator('livechat-widget iframe');
  async function visitor(context, path = '/') {
    const page = await context.newPage();
    const errors = collectErrors(page);
    const sent = [];
    page.on('websocket', (ws) => ws.on('framesent', (f) => sent.push(String(f.payload))));
    await page.goto(proxy.url + path, { waitUntil: 'load', timeout: T });
    await page.waitForFunction(() => performance.getEntriesByName('livechat:ready').length > 0, null, { timeout: T });
    await chat(page).locator('html[data-conn="open"]').waitFor({ state: 'attached', timeout: T });
    await page.locator('livechat-widget .launcher').click({ timeout: T });
    await chat(page).locator('#input:focus').waitFor({ timeout: T });
    return { page, errors, sent };
  }

  it('serves the desk at /agent, the build in dist/', async () => {
    const r = await fetch(proxy.url + '/agent');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/html/);
    assert.ok(Buffer.from(await r.arrayBuffer()).equals(readFileSync(join(WIDGET, 'dist', 'agent.html'))), '/agent is not dist/agent.html: rebuild the gateway after building the widget');
    assert.equal((await fetch(proxy.url + '/agent/me')).status, 401);
  });

  it('an agent takes a visitor who asked for a person; they talk; the agent resolves; the visitor rates', async () => {
    let r = await admin('POST', '/admin/agents', { name: 'Ada', role: 'agent', languages: ['en'], skills: [], capacity: 4, sites: ['demo'] });
    assert.equal(r.status, 201, await r.clone().text());
    const { agent, token } = await r.json();
    assert.equal(agent.name, 'Ada');
    r = await admin('PUT', '/admin/sites/demo/canned/thanks', { text: 'Thank you for waiting!' });
    assert.ok(r.status === 201 || r.status === 200, `canned reply: ${r.status}`);

    // The agent signs in (after a wrong token), and stays signed in across a reload.
    const deskContext = await newContext();
    const desk = await deskContext.newPage();
    const deskErrs = deskErrors(desk);
    await desk.goto(proxy.url + '/agent', { timeout: T });
    const tokenField = desk.getByLabel('Agent token');
    await tokenField.fill('not-a-real-token-at-all');
    await tokenField.press('Enter');
    await desk.getByText('That token was not accepted.').waitFor({ timeout: T });
    await tokenField.fill(token);
    await tokenField.press('Enter');
    await deskOpen(desk);
    assert.equal(await desk.locator('#who').textContent(), 'Ada (agent)');
    await desk.reload({ timeout: T });
    await deskOpen(desk);
    assert.ok(await desk.locator('#signin').isHidden(), 'signed in already: no form');
    assert.equal((await desk.evaluate(() => fetch('/agent/me').then((r) => r.status))), 200);

    // The visitor asks something, then asks for a person.
    const visContext = await newContext();
    const { page: vis, errors: visErrors, sent } = await visitor(visContext);
    const v = chat(vis);
    await v.locator('#input').fill('My boots arrived damaged');
    await v.locator('#input').press('Enter');
    await v.locator('[data-reply][data-done="true"]').waitFor({ timeout: T });
    await v.getByRole('button', { name: 'Talk to a person' }).click({ timeout: T });
    await v.getByText('you are number 1 in the queue').waitFor({ timeout: T });

    // The agent sees it (queued, or offered to them) and takes it.
    const take = desk.locator('#offers, #queue').getByRole('button', { name: /^Take/ }).first();
    await take.click({ timeout: T });
    await v.getByText('Ada joined the conversation.').waitFor({ timeout: T });
    await desk.locator('#mine li.card').waitFor({ timeout: T });
    await desk.locator('#input:focus').waitFor({ timeout: T });
    const log = desk.getByRole('log', { name: 'Transcript' });
    await log.locator('li[data-from="visitor"]', { hasText: 'My boots arrived damaged' }).waitFor({ timeout: T });
    await log.locator('li[data-from="ai"]').first().waitFor({ timeout: T });

    // Visitor -> agent, with the typing line first.
    await v.locator('#input').fill('Are you there?');
    await desk.getByText('Visitor is typing…').waitFor({ timeout: T });
    await v.locator('#input').press('Enter');
    await log.locator('li[data-from="visitor"]', { hasText: 'Are you there?' }).waitFor({ timeout: T });

    // Agent -> visitor, with the typing line first; then a canned reply.
    const input = desk.getByRole('textbox', { name: 'Reply' });
    await input.fill('Yes! Sorry about the boots, let me look.');
    await v.getByText('Ada is typing…').waitFor({ timeout: T });
    await input.press('Enter');
    await v.locator('li.agent', { hasText: 'Sorry about the boots' }).waitFor({ timeout: T });
    assert.equal(await v.locator('li.agent .who').first().textContent(), 'Ada');
    await log.locator('li[data-from="agent"]:not(.pending)', { hasText: 'Sorry about the boots' }).waitFor({ timeout: T });
    await input.pressSequentially('/tha', { timeout: T });
    await desk.locator('li[role="option"]', { hasText: '/thanks' }).waitFor({ timeout: T });
    await input.press('Enter');
    assert.equal(await input.inputValue(), 'Thank you for waiting!');
    await input.press('Enter');
    await v.locator('li.agent', { hasText: 'Thank you for waiting!' }).waitFor({ timeout: T });
    await log.locator('li[data-from="agent"]:not(.pending)', { hasText: 'Thank you for waiting!' }).waitFor({ timeout: T });
    assert.equal(await log.locator('li.pending').count(), 0, 'every reply acked');
    await desk.screenshot({ path: join(ARTIFACTS, 'dashboard.png') });

    // Resolved: the visitor is asked for a rating.
    await desk.getByRole('button', { name: 'Resolve' }).click({ timeout: T });
    const rate = v.getByRole('group', { name: 'Rate this conversation' });
    await rate.waitFor({ timeout: T });
    await rate.getByRole('button', { name: '5 out of 5' }).click({ timeout: T });
    await v.getByText('You rated this conversation 5 out of 5.').waitFor({ timeout: T });
    assert.ok(sent.some((f) => JSON.parse(f).type === 'csat'));
    await desk.locator('#mine-empty').waitFor({ timeout: T });

    // Signing out ends the sign-in session.
    await desk.getByRole('button', { name: 'Sign out' }).click({ timeout: T });
    await desk.locator('#token:focus').waitFor({ timeout: T });
    assert.equal(await desk.evaluate(() => fetch('/agent/me').then((r) => r.status)), 401);
    assert.deepEqual(deskErrs.list(), []);
    assert.deepEqual(visErrors, []);
    await deskContext.close();
    await visContext.close();
  });

  it('with no agent online, the visitor leaves a message and is told it was received', async () => {
    const context = await newContext();
    const { page, errors, sent } = await visitor(context, '/__host/quiet');
    const v = chat(page);
    await v.getByRole('button', { name: 'Talk to a person' }).click({ timeout: T });
    await v.getByText('No one is available right now', { exact: false }).waitFor({ timeout: T });
    const form = v.getByRole('form', { name: 'Leave a message' });
    await form.getByLabel('Your email').fill('visitor@example.com', { timeout: T });
    await form.getByLabel('Message for the team').fill('Please call me about order 1042.', { timeout: T });
    await form.getByRole('button', { name: 'Send message' }).click({ timeout: T });
    await v.getByText('Thank you! Your message was sent. We will reply to visitor@example.com.').waitFor({ timeout: T });
    const left = sent.map((f) => JSON.parse(f)).find((f) => f.type === 'leave_message');
    assert.deepEqual(left, { type: 'leave_message', email: 'visitor@example.com', text: 'Please call me about order 1042.' });
    assert.deepEqual(errors, []);
    await context.close();
  });
});
