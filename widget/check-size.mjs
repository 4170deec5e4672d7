// The size budget: what a visitor downloads for the widget (the loader and
// the chat window; the demo page is the host's, not ours), gzipped at the
// level the gateway precompresses with. Fails over 15 KB.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const BUDGET = 15 * 1024;
const dist = join(dirname(fileURLToPath(import.meta.url)), process.argv[2] || 'dist');
let total = 0;
for (const f of ['widget.js', 'chat.html']) {
  const raw = readFileSync(join(dist, f));
  const gz = gzipSync(raw, { level: 9 }).length;
  total += gz;
  console.log(`  ${f.padEnd(10)} ${String(raw.length).padStart(6)} B raw, ${String(gz).padStart(6)} B gzipped`);
}
console.log(`widget size: ${total} B gzipped (${(total / 1024).toFixed(1)} KB) of a ${BUDGET / 1024} KB budget`);
if (total > BUDGET) {
  console.error(`over budget by ${total - BUDGET} B`);
  process.exit(1);
}
