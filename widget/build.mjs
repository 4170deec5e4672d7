// Builds dist/ from src/: the loader bundled and minified to widget.js, the
// chat window's script and styles inlined into chat.html (one request for the
// iframe), the agent desk's likewise into agent.html, and the demo page copied. `node build.mjs OUTDIR` builds elsewhere,
// which is how test.sh checks that the committed dist/ is not stale.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] || join(here, 'dist');
const src = (p) => join(here, 'src', p);

const minifyCss = async (file) =>
  (await esbuild.transform(await readFile(file, 'utf8'), { loader: 'css', minify: true, target: 'chrome100' })).code.trim();

// `import css from './x.css'` gives the minified stylesheet as a string.
const cssText = {
  name: 'css-text',
  setup(b) {
    b.onLoad({ filter: /\.css$/ }, async (a) => ({ contents: `export default ${JSON.stringify(await minifyCss(a.path))}`, loader: 'js' }));
  },
};

async function bundle(entry) {
  const r = await esbuild.build({
    entryPoints: [src(entry)],
    bundle: true,
    minify: true,
    format: 'iife',
    target: ['es2020'],
    legalComments: 'none',
    charset: 'utf8',
    write: false,
    plugins: [cssText],
  });
  return r.outputFiles[0].text.trim();
}

await mkdir(out, { recursive: true });
const [loader, chat, chatCss, chatHtml, agent, agentCss, agentHtml, demo] = await Promise.all([
  bundle('loader/loader.js'),
  bundle('chat/main.js'),
  minifyCss(src('chat/chat.css')),
  readFile(src('chat/chat.html'), 'utf8'),
  bundle('agent/main.js'),
  minifyCss(src('agent/agent.css')),
  readFile(src('agent/agent.html'), 'utf8'),
  readFile(src('demo.html'), 'utf8'),
]);

/** An HTML template with its script and styles inlined. */
function inline(name, template, css, js) {
  // A "</script" inside the bundle would end the inline script early.
  if (/<\/script/i.test(js)) throw new Error(`${name} bundle contains </script`);
  return template
    .replace(/>\n</g, '><')
    .replace('/*CSS*/', () => css)
    .replace('/*JS*/', () => js);
}
const html = inline('chat', chatHtml, chatCss, chat);
const desk = inline('agent', agentHtml, agentCss, agent);
await Promise.all([
  writeFile(join(out, 'widget.js'), loader + '\n'),
  writeFile(join(out, 'chat.html'), html),
  writeFile(join(out, 'agent.html'), desk),
  writeFile(join(out, 'demo.html'), demo),
]);
console.log(`built ${out}: widget.js ${loader.length} B, chat.html ${html.length} B, agent.html ${desk.length} B`);
