// Uses GraphiQL as a person would, in headless Chromium with every outside host blocked:
// opens /graphiql, types a query for `products` and the signed-in member, adds an Authorization
// header with a real token, runs it and waits for data in the result pane. The server must run
// with RUIZHU_AUTH__DEV_LOGIN=true (the token comes from a development login).
//   node graphiql-browser.mjs http://127.0.0.1:8080 [screenshot.png]
import { chromium } from 'playwright-core';

const base = process.argv[2] ?? 'http://127.0.0.1:8080';
const screenshot = process.argv[3];
const origin = new URL(base).host;
const outside = [];

const login = await fetch(`${base}/graphql`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ query: 'mutation { loginWithWeChat(code: "dev:browser") { accessToken member { id } } }' }),
}).then((r) => r.json());
const token = login.data.loginWithWeChat.accessToken;
const memberId = login.data.loginWithWeChat.member.id;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // no name resolves except loopback: nothing can come from the internet
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
  ],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  let sentAuthorization = null;
  await page.route('**/*', async (route) => {
    const url = new URL(route.request().url());
    if (url.host !== origin) {
      outside.push(url.href);
      return route.abort();
    }
    if (url.pathname.endsWith('/graphql') && route.request().method() === 'POST') {
      sentAuthorization = route.request().headers()['authorization'] ?? sentAuthorization;
    }
    return route.continue();
  });

  await page.goto(`${base}/graphiql`, { waitUntil: 'networkidle' });
  await page.waitForSelector('.graphiql-query-editor .CodeMirror', { timeout: 15000 });

  // replace the default document by typing a new one
  await page.click('.graphiql-query-editor .CodeMirror');
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.keyboard.type('{ me { id } products(first: 3) { totalCount edges { node { name nameEn } } ', { delay: 5 });
  await page.keyboard.press('Escape');

  // an Authorization header, as a staff member would add their token
  await page.getByText('Headers', { exact: true }).click();
  await page.click('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror');
  await page.keyboard.type(`{"Authorization": "Bearer ${token}"`, { delay: 1 });
  await page.keyboard.press('Escape');

  await page.click('.graphiql-execute-button');
  await page.waitForFunction(() => {
    const pane = document.querySelector('.graphiql-response .CodeMirror');
    return pane && pane.innerText.includes('"totalCount"') && pane.innerText.includes('"nameEn"');
  }, null, { timeout: 15000 });
  const result = await page.$eval('.graphiql-response .CodeMirror', (el) => el.innerText);
  if (screenshot) await page.screenshot({ path: screenshot });

  const checks = [
    ['result has data', result.includes('"data"') && result.includes('"edges"')],
    ['result has no errors', !result.includes('"errors"')],
    ['Authorization header was sent', sentAuthorization === `Bearer ${token}`],
    ['the server saw the signed-in member', result.includes(memberId)],
    ['nothing requested from outside', outside.length === 0],
    ['no console errors', consoleErrors.length === 0],
  ];
  for (const [name, ok] of checks) {
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}`);
    failed ||= !ok;
  }
  if (failed) {
    console.log({ result: result.slice(0, 500), sentAuthorization, outside, consoleErrors });
  }
} catch (e) {
  console.log('FAIL', e.message);
  failed = true;
} finally {
  await browser.close();
}
console.log(failed ? 'graphiql browser check: 0 passed, 1 failed' : 'graphiql browser check: 1 passed, 0 failed');
process.exit(failed ? 1 : 0);
