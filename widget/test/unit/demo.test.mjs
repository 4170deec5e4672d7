// The demo tells one story: the shop page the gateway serves at / says what
// the demo's knowledge base (knowledge/eval/shop/, the canonical story) says.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const WIDGET = join(dirname(fileURLToPath(import.meta.url)), '../..');
const KB = join(WIDGET, '..', 'knowledge', 'eval', 'shop');
const page = readFileSync(join(WIDGET, 'src', 'demo.html'), 'utf8');
const text = page.replace(/<style>[\s\S]*?<\/style>/, '').replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ');
const kb = (f) => readFileSync(join(KB, f), 'utf8').replace(/\*\*/g, '').replace(/\s+/g, ' ');

describe('demo page', () => {
  it("is the knowledge base's shop: its name, its currency", () => {
    assert.match(text, /Fernhill Supply Co\./);
    assert.match(kb('contact.txt'), /Fernhill Supply Co\./);
    assert.doesNotMatch(text, /Fernhill Outdoor/);
    assert.doesNotMatch(text, /€|EUR/);
    assert.match(kb('pages/payment.html'), /Prices on fernhill\.example are in US dollars/);
  });

  it('says of returns, shipping, plans and care what the help pages say', () => {
    assert.doesNotMatch(text, /worn or not/);
    const facts = [
      ['unworn, unwashed item with its tags attached within 60 days', 'help/returns.md'],
      ['Returns within the United States are free', 'help/returns.md'],
      ['before 2 pm Eastern Time on a business day', 'help/shipping.md'],
      ['free on orders over $75', 'help/shipping.md'],
      ['$49 a year or $4.99 a month', 'help/plans-and-pricing.md'],
      ['first 30 days free', 'help/plans-and-pricing.md'],
      ['wax two or three times a season', 'pages/product-care.html'],
      ['Columbus', 'contact.txt'],
      ['Denver', 'contact.txt'],
    ];
    for (const [fact, file] of facts) {
      assert.ok(kb(file).toLowerCase().includes(fact.toLowerCase()), `${file} does not say "${fact}"`);
      assert.ok(text.toLowerCase().includes(fact.toLowerCase()), `the page does not say "${fact}"`);
    }
  });
});
