// Theme tokens: the names a site owner may set, their defaults, and how the
// layers (site config from the gateway, the page's config object, the script
// tag's data attributes) merge into CSS custom properties named --lc-<token>.
// Shared by the loader (launcher, frame) and the chat window, so both read
// the same names and defaults.

const ICON =
  "url(\"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'%3E%3Cpath d='M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z'/%3E%3C/svg%3E\")";

/** Every token with its default. Defaults may refer to other tokens. */
export const TOKENS = {
  accent: '#2457d6',
  'accent-text': '#fff',
  bg: '#fff',
  text: '#1d2330',
  muted: '#596273',
  border: '#dde2ea',
  'header-bg': 'var(--lc-accent)',
  'header-text': 'var(--lc-accent-text)',
  'visitor-bg': 'var(--lc-accent)',
  'visitor-text': 'var(--lc-accent-text)',
  'bot-bg': '#eef1f6',
  'bot-text': 'var(--lc-text)',
  'input-bg': '#fff',
  focus: '#f5a623',
  error: '#b3261e',
  radius: '16px',
  'bubble-radius': '18px',
  font: 'system-ui,-apple-system,"Segoe UI",Roboto,sans-serif',
  'font-size': '15px',
  shadow: '0 12px 40px rgba(16,24,40,.22)',
  'launcher-size': '60px',
  'launcher-bg': 'var(--lc-accent)',
  'launcher-color': 'var(--lc-accent-text)',
  'launcher-icon': ICON,
  'offset-x': '20px',
  'offset-y': '20px',
  width: '380px',
  height: '640px',
  z: '2147483000',
  // Not a CSS value: "left" or "right" picks the corner (see positionOf).
  position: 'right',
};

const kebab = (s) => s.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());

/** The known tokens among an object's keys (camelCase or kebab-case), as strings. */
export function pickTokens(obj) {
  const out = {};
  for (const [k, v] of Object.entries(obj || {})) {
    const name = kebab(k);
    if (name in TOKENS && v != null && v !== '') out[name] = String(v);
  }
  return out;
}

/** Later layers win: merge(siteTheme, pageConfigTheme, dataAttributes). */
export function mergeThemes(...layers) {
  return Object.assign({}, TOKENS, ...layers.map(pickTokens));
}

/** "left" or "right": anything else is the default corner. */
export const positionOf = (theme) => (theme.position === 'left' ? 'left' : 'right');

/** Sets every token as a custom property on `el` (an element's style). */
export function applyTheme(style, theme) {
  for (const [k, v] of Object.entries(theme)) style.setProperty('--lc-' + k, v);
}
