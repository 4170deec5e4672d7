// Where a reply's sources link (shared/sources.js): relative paths through
// the site's docs_base_url, never a host that cannot exist, each document once.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sourceHref, sourceList } from '../../src/shared/sources.js';

describe('source links', () => {
  it('links http(s) URLs as they are and relative paths under docs_base_url', () => {
    assert.equal(sourceHref('https://shop.test/help/returns'), 'https://shop.test/help/returns');
    assert.equal(sourceHref('help/returns.md', 'https://docs.shop.test/kb/'), 'https://docs.shop.test/kb/help/returns.md');
    assert.equal(sourceHref('pages/a b.html', 'https://docs.shop.test/kb/'), 'https://docs.shop.test/kb/pages/a%20b.html');
    assert.equal(sourceHref('https://other.test/x', 'https://docs.shop.test/kb/'), 'https://other.test/x');
  });

  it('shows a title alone: relative without a base, other schemes, hosts that cannot exist, junk', () => {
    assert.equal(sourceHref('help/returns.md'), null);
    assert.equal(sourceHref('help/returns.md', ''), null);
    assert.equal(sourceHref('javascript:alert(1)', 'https://docs.shop.test/'), null);
    assert.equal(sourceHref('data:text/html,hi'), null);
    assert.equal(sourceHref('file:///etc/passwd'), null);
    // The demo's help pages (RFC 2606 names: never a real host).
    assert.equal(sourceHref('https://fernhill.example/help/shipping'), null);
    assert.equal(sourceHref('https://FERNHILL.EXAMPLE./help'), null);
    assert.equal(sourceHref('http://shop.invalid/'), null);
    assert.equal(sourceHref('contact.txt', 'https://docs.example/'), null);
    assert.equal(sourceHref('https://example.shop.test/'), 'https://example.shop.test/');
    assert.equal(sourceHref('https://'), null);
    assert.equal(sourceHref(undefined), null);
    assert.equal(sourceHref(42), null);
  });

  it('lists each document once, best first, at most three', () => {
    const hits = [
      { chunk: 'a1', title: 'Returns', url: 'https://fernhill.example/help/returns', score: 0.9 },
      { chunk: 'b1', title: 'Refunds', url: 'pages/refunds.html', score: 0.8 },
      { chunk: 'a2', title: 'Returns', url: 'https://fernhill.example/help/returns', score: 0.7 },
      { chunk: 'c1', title: '', url: 'contact.txt', score: 0.6 },
      { chunk: 'b2', title: 'Refunds', url: 'pages/refunds.html', score: 0.5 },
      { chunk: 'd1', title: 'Shipping', url: 'https://fernhill.example/help/shipping', score: 0.4 },
    ];
    assert.deepEqual(sourceList(hits, 'https://docs.shop.test/'), [
      { title: 'Returns', href: null },
      { title: 'Refunds', href: 'https://docs.shop.test/pages/refunds.html' },
      { title: 'contact.txt', href: 'https://docs.shop.test/contact.txt' },
    ]);
    assert.deepEqual(sourceList(hits), [
      { title: 'Returns', href: null },
      { title: 'Refunds', href: null },
      { title: 'contact.txt', href: null },
    ]);
    assert.deepEqual(sourceList(null), []);
    assert.deepEqual(sourceList([null, {}, { title: 'T' }]), [{ title: 'T', href: null }]);
  });
});
