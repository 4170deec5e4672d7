// The one-tag loader (served as /widget.js): on the host page it waits for
// the page to load and the main thread to idle, then adds the launcher and
// the chat window's iframe inside a shadow root, keeps the theme, runs the
// site's proactive triggers, and answers to window.LiveChat. Everything the
// visitor types lives in the iframe, on the gateway's origin.

import css from './launcher.css';
import { applyTheme, mergeThemes, pickTokens, positionOf } from '../shared/theme.js';
import { dueTriggers, scrollPercent } from '../shared/triggers.js';

((w, d) => {
  const script = d.currentScript || d.querySelector('script[src*="widget.js"][data-site]');
  // The snippet pasted twice: the first copy to run wins, the rest step aside.
  if (w.LiveChat || !script) return;
  const settings = w.LiveChatSettings || {};
  const origin = new URL(script.src, location.href).origin;
  const site = script.dataset.site || settings.site || 'demo';
  // The page's own theme layer: the config object, then the tag's data attributes.
  const pageTheme = { ...pickTokens(settings.theme), ...pickTokens(script.dataset) };

  let host, box, frame, launcher, badge, teaser, shown, wanted, stopWatch, framed;
  let server = {};
  let open = false;

  // Only once the frame has spoken is it on the gateway's origin; before that
  // a postMessage would miss it (and log an error on the host page).
  const send = (m) => framed && frame.contentWindow.postMessage(m, origin);
  const act = (what) => (shown ? actions[what]() : (wanted = what));
  const actions = {
    open() {
      open = true;
      box.classList.add('open');
      launcher.setAttribute('aria-expanded', 'true');
      label();
      teaser.hidden = true;
      // The gateway was out of reach when the page loaded: try the window again.
      if (!framed) frame.src = frame.src.replace('#', `&retry=${Date.now()}#`);
      frame.focus();
      send({ t: 'open' });
    },
    close() {
      if (!open) return;
      open = false;
      box.classList.remove('open');
      launcher.setAttribute('aria-expanded', 'false');
      label();
      send({ t: 'close' });
      launcher.focus();
    },
    toggle: () => actions[open ? 'close' : 'open'](),
  };
  w.LiveChat = { open: () => act('open'), close: () => act('close'), toggle: () => act('toggle') };

  function label(unread = +badge.textContent || 0) {
    launcher.setAttribute(
      'aria-label',
      (open ? 'Close chat' : 'Open chat') + (unread ? `, ${unread} unread message${unread > 1 ? 's' : ''}` : ''),
    );
  }

  function paint() {
    const theme = mergeThemes(server, pageTheme);
    applyTheme(box.style, theme);
    box.classList.toggle('left', positionOf(theme) === 'left');
    host.style.setProperty('z-index', theme.z, 'important');
  }

  function show() {
    if (shown) return;
    shown = true;
    box.classList.add('on');
    performance.mark('livechat:ready');
    w.dispatchEvent(new Event('livechat:ready'));
    if (wanted) actions[wanted]();
  }

  function watch(triggers) {
    stopWatch?.();
    let left = triggers;
    let queued = false;
    const check = () => {
      queued = false;
      const due = dueTriggers(left, {
        seconds: performance.now() / 1000,
        scroll: scrollPercent(scrollY, innerHeight, d.documentElement.scrollHeight),
        url: location.href,
      });
      for (const t of due) {
        left = left.filter((x) => x !== t);
        send({ t: 'trigger', i: t.i });
        if (!open) {
          teaser.firstChild.textContent = t.message;
          teaser.hidden = false;
        }
      }
      if (!left.length) stopWatch();
    };
    const onScroll = () => queued || ((queued = true), requestAnimationFrame(check));
    const tick = setInterval(check, 1000);
    w.addEventListener('scroll', onScroll, { passive: true });
    stopWatch = () => {
      clearInterval(tick);
      w.removeEventListener('scroll', onScroll);
    };
    check();
  }

  function init() {
    host = d.createElement('livechat-widget');
    // Inline !important outranks any host stylesheet rule for the host element;
    // inside the shadow root host selectors do not apply at all.
    host.style.cssText = 'all:initial!important;position:fixed!important;top:0!important;left:0!important;width:0!important;height:0!important;display:block!important;';
    const root = host.attachShadow({ mode: 'open' });
    root.innerHTML = `<style>${css}</style><div class="lc"><div class="win" id="lc-win" role="dialog" aria-label="Chat"><iframe title="Chat window"></iframe></div><div class="teaser" aria-live="polite" hidden><button class="say" type="button"></button><button class="x" type="button" aria-label="Dismiss">×</button></div><button class="launcher" type="button" aria-controls="lc-win" aria-expanded="false"><span class="icon" aria-hidden="true"></span><span class="badge" hidden></span></button></div>`;
    box = root.querySelector('.lc');
    frame = root.querySelector('iframe');
    launcher = root.querySelector('.launcher');
    badge = root.querySelector('.badge');
    teaser = root.querySelector('.teaser');
    label();
    paint();
    launcher.onclick = actions.toggle;
    teaser.firstChild.onclick = actions.open;
    teaser.lastChild.onclick = () => {
      teaser.hidden = true;
      launcher.focus();
    };
    root.addEventListener('keydown', (e) => e.key === 'Escape' && actions.close());

    w.addEventListener('message', (e) => {
      if (e.source !== frame.contentWindow || e.origin !== origin || !e.data?.lc) return;
      const m = e.data;
      if (!framed) {
        framed = true;
        if (open) send({ t: 'open' });
      }
      if (m.t === 'config') {
        server = m.theme || {};
        paint();
        if (m.title) frame.parentNode.setAttribute('aria-label', m.title);
        if (m.triggers) watch(m.triggers);
        show();
      } else if (m.t === 'unread') {
        badge.textContent = m.n;
        badge.hidden = !m.n;
        label(m.n);
      } else if (m.t === 'close') {
        actions.close();
      }
    });

    const hello = {
      page: location.href,
      ref: d.referrer,
      lang: d.documentElement.lang || navigator.language,
      theme: pageTheme,
      origin: location.origin,
    };
    frame.src = `${origin}/chat?site=${encodeURIComponent(site)}#${encodeURIComponent(JSON.stringify(hello))}`;
    // Appended to <html>, not <body>: a transform on the body would otherwise
    // become the containing block of our fixed-position elements.
    d.documentElement.appendChild(host);
    // The gateway out of reach: the launcher still shows, messages queue.
    setTimeout(show, 5000);
  }

  // Nothing runs before the page has loaded and the browser is idle, so the
  // host page's first paint and load are untouched.
  const idle = () => (w.requestIdleCallback ? requestIdleCallback(init, { timeout: 2000 }) : setTimeout(init, 50));
  if (d.readyState === 'complete') idle();
  else w.addEventListener('load', idle, { once: true });
})(window, document);
