// What the visitor is shown is what is true, in headless Chromium against a
// real gateway: the sources under a grounded reply (each document once,
// linked only where they have an address), again after a reload with the
// whole history; the assistant "typing" only while an AI reply is expected;
// "Talk to a person" only while the AI has the conversation; the desk's
// queue count agreeing with the cards it shows while an offer is up.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { collectErrors, hostPage, launchChromium, startGateway, startProxy } from './harness.mjs';

const WIDGET = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const REPO = resolve(WIDGET, '..');
const ARTIFACTS = join(REPO, 'artifacts', 'widget');
const BIN = process.env.GATEWAY_BIN || join(REPO, 'target', 'release', 'gateway');
const T = 15000; // bound for any single wait
const ADMIN = 'test-admin-token-truth';

// `docs` has a knowledge base of its own (uploaded below) and publishes its
// files under docs_base_url; `desk` is answered by the AI until Ada takes it.
const CONFIG = `
[admin]
token = "${ADMIN}"

[knowledge]
demo = false
embedder = "lexical"

[agents]
offer_timeout_ms = 60000
queue_timeout_ms = 60000

[sites.docs]
title = "Zephyr help"
docs_base_url = "https://docs.shop.test/kb"

[sites.desk]
title = "Desk shop"
`;

// Three documents about one thing: an ingested file (a relative path, linked
// under docs_base_url) long enough to make several chunks, a page of the site
// (absolute URL, linked as it is) and one on a host that cannot exist (shown
// as a title).
const section = (n) =>
  `## Pitching the Zephyr tent, step ${n}\n\nTo pitch the Zephyr tent in wind, stake the windward corner first, then thread pole ${n} through the Zephyr sleeve. ` +
  'Keep the Zephyr tent door downwind and tension every guy line of the Zephyr tent before the rain comes. '.repeat(6) +
  '\n\n';
const DOCS = {
  'guides/zephyr-tent.md': `# Zephyr tent guide\n\n${[1, 2, 3, 4].map(section).join('')}`,
  'zephyr-care.md': `---\ntitle: Zephyr tent care\nurl: https://shop.test/zephyr-care\n---\n# Zephyr tent care\n\nDry the Zephyr tent before storing it. To pitch the Zephyr tent in wind again next season, check every guy line of the Zephyr tent.\n`,
  'zephyr-faq.md': `---\ntitle: Zephyr tent questions\nurl: https://help.fernhill.example/zephyr\n---\n# Zephyr tent questions\n\nCan I pitch the Zephyr tent in wind? Yes: the Zephyr tent is made to be pitched in wind, stake it first.\n`,
};

let gw;
let proxy;
let browser;
const pages = new Map([
  ['/__host/docs', hostPage({ site: 'docs' })],
  ['/__host/desk', hostPage({ site: 'desk' })],
]);

const admin = (method, path, body) =>
  fetch(proxy.url + path, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': typeof body === 'string' ? 'text/markdown' : 'application/json' },
    body: body == null ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  gw = await startGateway(BIN, CONFIG);
  proxy = await startProxy(gw.port, pages);
  browser = await launchChromium();
  for (const [name, text] of Object.entries(DOCS)) {
    const r = await admin('PUT', `/admin/sites/docs/kb/${name}`, text);
    assert.equal(r.status, 201, `${name}: ${await r.text()}`);
  }
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  await gw?.stop();
});

const newContext = () => browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
const chat = (page) => page.frameLocator('livechat-widget iframe');

/** Opens `path`, waits for the widget to be connected, opens the chat window. */
async function visit(page, path) {
  await page.goto(proxy.url + path, { waitUntil: 'load', timeout: T });
  await page.waitForFunction(() => performance.getEntriesByName('livechat:ready').length > 0, null, { timeout: T });
  await chat(page).locator('html[data-conn="open"]').waitFor({ state: 'attached', timeout: T });
  await page.locator('livechat-widget .launcher').click({ timeout: T });
  await chat(page).locator('#input:focus').waitFor({ timeout: T });
}

/** Sends `text` and waits for its tick (the gateway's ack has been handled). */
async function say(page, text) {
  const c = chat(page);
  await c.locator('#input').fill(text, { timeout: T });
  await c.locator('#input').press('Enter', { timeout: T });
  await c.locator('li.me[data-state="delivered"]', { hasText: text }).waitFor({ timeout: T });
}

/** Sends `text` and waits for the AI's complete answer to it; returns its bubble. */
async function ask(page, text) {
  const done = chat(page).locator('li.ai[data-reply][data-done="true"]');
  const n = await done.count();
  await say(page, text);
  await done.nth(n).waitFor({ timeout: T });
  return done.nth(n);
}

/** What a reply's source list shows: [{title, href}] (href null: a title alone). */
const sourcesOf = (li) =>
  li.locator('ul.src > li').evaluateAll((items) => items.map((x) => ({ title: x.textContent, href: x.querySelector('a')?.getAttribute('href') ?? null })));

const typingShown = (page) => chat(page).locator('#typing').isVisible();
const chipShown = (page) => chat(page).getByRole('button', { name: 'Talk to a person' }).isVisible();

describe('sources reach the visitor', () => {
  it('draws each document once under the reply, linked where it has an address, and again after a reload', async () => {
    const context = await newContext();
    const page = await context.newPage();
    const errors = collectErrors(page);
    // The first `done` as the gateway sent it (CDP reports frames apart from the DOM: awaited, bounded).
    const doneFrame = new Promise((resolve, reject) => {
      setTimeout(() => reject(new Error('no done frame')), T).unref();
      page.on('websocket', (ws) =>
        ws.on('framereceived', (f) => {
          const m = JSON.parse(String(f.payload));
          if (m.type === 'done') resolve(m);
        }),
      );
    });
    await visit(page, '/__host/docs');
    const reply = await ask(page, 'How do I pitch the Zephyr tent in wind?');
    const done = await doneFrame;
    const urls = done.sources.map((x) => x.url);
    assert.ok(urls.length > new Set(urls).size, `a document gave several chunks: ${urls}`);
    assert.ok(urls.includes('guides/zephyr-tent.md'), 'done.sources keeps the knowledge base\'s own name');
    const shown = await sourcesOf(reply);
    // In title order (the order of the hits is retrieval's business).
    const expected = [
      { title: 'Zephyr tent care', href: 'https://shop.test/zephyr-care' },
      { title: 'Zephyr tent guide', href: 'https://docs.shop.test/kb/guides/zephyr-tent.md' },
      { title: 'Zephyr tent questions', href: null },
    ];
    const byTitle = (a, b) => a.title.localeCompare(b.title);
    assert.deepEqual([...shown].sort(byTitle), expected, 'three documents, each once (the guide is several chunks)');
    assert.equal(await reply.locator('ul.src a[target="_blank"][rel="noopener"]').count(), 2);
    // Later messages are drawn and stored as usual.
    const second = await ask(page, 'And how do I dry the Zephyr tent?');
    const secondShown = await sourcesOf(second);
    assert.ok(secondShown.length > 0, 'the second reply has sources too');

    // A reload rebuilds the whole history, sources included, and goes on.
    await page.reload({ timeout: T });
    await chat(page).locator('html[data-conn="open"]').waitFor({ state: 'attached', timeout: T });
    const c = chat(page);
    await c.locator('li.me', { hasText: 'And how do I dry the Zephyr tent?' }).waitFor({ state: 'attached', timeout: T });
    const replies = c.locator('li.ai[data-reply]');
    assert.equal(await replies.count(), 2, 'both replies after the reload');
    assert.deepEqual(await sourcesOf(replies.nth(0)), shown, 'the first reply, as it was');
    assert.deepEqual(await sourcesOf(replies.nth(1)), secondShown, 'the second reply, as it was');
    assert.equal(await c.locator('li.me').count(), 2);
    await page.locator('livechat-widget .launcher').click({ timeout: T });
    await ask(page, 'Thanks, one more: can I pitch the Zephyr tent alone?');
    await page.screenshot({ path: join(ARTIFACTS, 'sources.png') });
    assert.deepEqual(errors, []);
    await context.close();
  });
});

describe('with a person in the conversation', () => {
  it('shows the assistant typing only while the AI answers, and "Talk to a person" only while it has the conversation', async () => {
    let r = await admin('POST', '/admin/agents', { name: 'Ada', role: 'agent', languages: ['en'], skills: [], capacity: 4, sites: ['desk'] });
    assert.equal(r.status, 201, await r.clone().text());
    const { token } = await r.json();

    // Ada signs in at the desk.
    const deskContext = await newContext();
    const desk = await deskContext.newPage();
    await desk.goto(proxy.url + '/agent', { timeout: T });
    await desk.getByLabel('Agent token').fill(token, { timeout: T });
    await desk.getByLabel('Agent token').press('Enter');
    await desk.locator('html[data-conn="open"]').waitFor({ state: 'attached', timeout: T });

    const context = await newContext();
    const page = await context.newPage();
    const errors = collectErrors(page);
    await visit(page, '/__host/desk');
    await ask(page, 'Hello, do you sell tents?');
    assert.equal(await typingShown(page), false, 'answered: no one typing');
    assert.equal(await chipShown(page), true);

    // Asked for a person: the chip goes at once, the AI is silent from here on.
    await chat(page).getByRole('button', { name: 'Talk to a person' }).click({ timeout: T });
    assert.equal(await chipShown(page), false, 'asked for a person');
    await chat(page).getByText('you are number 1 in the queue').waitFor({ timeout: T });

    // Offered to Ada: the desk counts the queue it shows, the offer drawn above it.
    await desk.locator('#offers li.card').waitFor({ timeout: T });
    await desk.locator('#queue-empty').waitFor({ timeout: T });
    assert.equal(await desk.locator('#queue-n').textContent(), '', 'no "(1)" beside "No one is waiting."');
    assert.equal(await desk.locator('#queue li.card').count(), 0);
    assert.equal(await chipShown(page), false, 'offered');
    await say(page, 'Is anyone there?');
    assert.equal(await typingShown(page), false, 'queued: no AI reply is coming');

    // A reload while offered: welcome says a person is asked for.
    await page.reload({ timeout: T });
    await chat(page).locator('html[data-conn="open"]').waitFor({ state: 'attached', timeout: T });
    await chat(page).locator('li.me', { hasText: 'Is anyone there?' }).waitFor({ state: 'attached', timeout: T });
    // The window is closed after a reload: the chip's own state, not what is visible.
    assert.equal(await chat(page).locator('#human').evaluate((e) => e.hidden), true, 'still asked for after the reload');
    await page.locator('livechat-widget .launcher').click({ timeout: T });
    await say(page, 'Still waiting');
    assert.equal(await typingShown(page), false, 'queued, after the reload');

    // Ada takes it: a person holds the conversation.
    await desk.locator('#offers').getByRole('button', { name: /^Take/ }).click({ timeout: T });
    await chat(page).getByText('Ada joined the conversation.').waitFor({ timeout: T });
    await say(page, 'Hello Ada');
    assert.equal(await typingShown(page), false, 'held: the message went to Ada, not to the AI');
    assert.equal(await chipShown(page), false, 'held');
    const input = desk.getByRole('textbox', { name: 'Reply' });
    await input.fill('Hi! Let me look.', { timeout: T });
    await chat(page).getByText('Ada is typing…').waitFor({ timeout: T });
    await input.press('Enter');
    await chat(page).locator('li.agent', { hasText: 'Hi! Let me look.' }).waitFor({ timeout: T });
    await say(page, 'Thank you');
    assert.equal(await typingShown(page), false, 'held, after Ada wrote');

    // Resolved without a word more: nothing is "typing", the chip is back.
    await desk.getByRole('button', { name: 'Resolve' }).click({ timeout: T });
    await chat(page).getByRole('group', { name: 'Rate this conversation' }).waitFor({ timeout: T });
    assert.equal(await typingShown(page), false, 'resolved');
    assert.equal(await chipShown(page), true, 'the AI is back');
    // The next message opens a conversation the AI answers.
    await ask(page, 'One more thing: do you sell tents?');
    assert.equal(await typingShown(page), false, 'answered: nothing left "typing" from the person\'s time');
    assert.deepEqual(errors, []);
    await deskContext.close();
    await context.close();
  });
});
