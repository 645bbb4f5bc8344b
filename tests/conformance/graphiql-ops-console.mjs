// The ops console as a staff member uses it on a phone: headless Chromium at 390×844 (touch,
// every outside host blocked) opens /graphiql, signs in with a staff account through the page's
// form, opens the saved "Orders awaiting shipment" recipe and runs it (the order placed for
// this test is listed), then opens "Ship an order", fills in its variables and runs it (the
// order is SHIPPED), then "Watch orders live" (a subscription) and sees the next order arrive. The server must run with RUIZHU_AUTH__DEV_LOGIN=true (the test's customer
// signs in with a development login) and development payments (no merchant).
//   node graphiql-ops-console.mjs http://127.0.0.1:8080 USERNAME [screenshot-prefix]
// The staff password is read from OPS_CONSOLE_PASSWORD.
import { chromium } from 'playwright-core';

const base = process.argv[2] ?? 'http://127.0.0.1:8080';
const username = process.argv[3] ?? 'ops-console';
const screenshots = process.argv[4];
const password = process.env.OPS_CONSOLE_PASSWORD;
const origin = new URL(base).host;
const started = Date.now();

async function gql(query, variables, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const body = await fetch(`${base}/graphql`, {
    method: 'POST', headers, body: JSON.stringify({ query, variables }),
  }).then((r) => r.json());
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

// a paid order for the recipes to find: a customer (development login) buys one unit
const buyer = (await gql('mutation { loginWithWeChat(code: "dev:ops-console-buyer") { accessToken } }'))
  .loginWithWeChat.accessToken;
const address = (await gql(`mutation A($input: AddressInput!) { addAddress(input: $input) { address { id } errors { message } } }`, {
  input: { recipient: '王小姐', phone: '13800138000', province: '上海市', city: '上海市', district: '静安区', detail: '南京西路 1 号' },
}, buyer)).addAddress.address.id;
const products = await gql('{ products(first: 20) { edges { node { skus { id available } } } } }');
const [sku, otherSku] = products.products.edges.flatMap((e) => e.node.skus).filter((s) => s.available).map((s) => s.id);
const placed = (await gql(`mutation P($input: PlaceOrderInput!) { placeOrder(input: $input) { order { id orderNo } errors { code message } } }`, {
  input: { idempotencyKey: `ops-console-${Date.now()}`, lines: [{ skuId: sku, quantity: 1 }], addressId: address },
}, buyer)).placeOrder;
if (!placed.order) throw new Error(`could not place the test order: ${JSON.stringify(placed.errors)}`);
const { id: orderId, orderNo } = placed.order;
const paid = await gql('mutation C($id: ID!) { devConfirmPayment(orderId: $id) { order { status } errors { message } } }', { id: orderId }, buyer);
if (paid.devConfirmPayment.order?.status !== 'PAID') throw new Error(`test order not paid: ${JSON.stringify(paid)}`);

const outside = [];
const consoleErrors = [];
const sentAuthorizations = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
  ],
});
let failed = false;
const checks = [];
try {
  const context = await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  await page.route('**/*', async (route) => {
    const url = new URL(route.request().url());
    if (url.host !== origin) {
      outside.push(url.href);
      return route.abort();
    }
    if (url.pathname.endsWith('/graphql') && route.request().method() === 'POST') {
      sentAuthorizations.push(route.request().headers().authorization ?? null);
    }
    return route.continue();
  });

  await page.goto(`${base}/graphiql`, { waitUntil: 'networkidle' });
  await page.waitForSelector('.graphiql-query-editor .CodeMirror', { timeout: 15000 });

  // sign in through the page's form
  await page.tap('#ops-signin-toggle');
  await page.fill('#ops-signin-form input[name=username]', username);
  await page.fill('#ops-signin-form input[name=password]', password);
  await page.tap('#ops-signin-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('ops-who').textContent.includes('OPS'), null, { timeout: 10000 });
  const stored = await page.evaluate(() => ({
    session: JSON.parse(sessionStorage.getItem('ruizhu.ops.session') || 'null'),
    local: JSON.stringify(Object.assign({}, localStorage)),
  }));
  const token = stored.session?.accessToken;
  checks.push(['signed in as staff (OPS) from the page', Boolean(token) && stored.session.staff?.role === 'OPS']);
  checks.push(['token kept in sessionStorage only (not localStorage)', Boolean(token) && !stored.local.includes(token)]);
  if (screenshots) await page.screenshot({ path: `${screenshots}-signed-in.png` });
  sentAuthorizations.length = 0; // from here on, every request must carry the token

  const editorText = (selector) => page.$eval(selector, (el) => el.CodeMirror.getValue());
  const run = async (expect) => {
    // GraphiQL takes the operation name from the editor a moment after a change (debounced)
    await page.waitForTimeout(400);
    await page.tap('.graphiql-execute-button');
    await page.waitForFunction((want) => {
      const pane = document.querySelector('.graphiql-response .CodeMirror');
      return pane && pane.CodeMirror.getValue().includes(want);
    }, expect, { timeout: 15000 });
    return page.$eval('.graphiql-response .CodeMirror', (el) => el.CodeMirror.getValue());
  };

  // saved operation 1: orders awaiting shipment
  await page.tap('#ops-recipes-toggle');
  await page.tap('#ops-recipes-list button[data-recipe="awaiting-shipment"]');
  await page.waitForFunction(() => document.querySelector('.graphiql-query-editor .CodeMirror')
    .CodeMirror.getValue().includes('query OrdersAwaitingShipment'), null, { timeout: 5000 });
  const awaiting = JSON.parse(await run(orderNo));
  const listed = awaiting.data?.orders?.edges?.some((e) => e.node.orderNo === orderNo && e.node.id === orderId);
  checks.push(['"Orders awaiting shipment" runs and lists the paid order', !awaiting.errors && listed]);
  if (screenshots) await page.screenshot({ path: `${screenshots}-awaiting.png` });

  // saved operation 2: ship it, with the variables typed into the Variables editor
  await page.tap('#ops-recipes-toggle');
  await page.tap('#ops-recipes-list button[data-recipe="ship-order"]');
  await page.waitForFunction(() => document.querySelector('.graphiql-query-editor .CodeMirror')
    .CodeMirror.getValue().includes('mutation ShipOrder'), null, { timeout: 5000 });
  const variables = '.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror';
  checks.push(['the recipe preloads its variables', (await editorText(variables)).includes('"carrier": "SF"')]);
  await page.tap(variables);
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.keyboard.type(`{"orderId": "${orderId}", "carrier": "SF", "trackingNo": "SF1234567890"`, { delay: 1 });
  await page.keyboard.press('Escape');
  const shipped = JSON.parse(await run('"status"'));
  checks.push(['"Ship an order" runs and the order is SHIPPED',
    !shipped.errors && shipped.data?.shipOrder?.order?.status === 'SHIPPED'
      && shipped.data.shipOrder.errors.length === 0 && shipped.data.shipOrder.order.trackingNo === 'SF1234567890']);
  if (screenshots) await page.screenshot({ path: `${screenshots}-shipped.png` });

  // saved operation 3: watch orders live (a subscription over the WebSocket, staff token in
  // connection_init); a new order placed meanwhile shows up
  await page.tap('#ops-recipes-toggle');
  await page.tap('#ops-recipes-list button[data-recipe="live-orders"]');
  await page.waitForFunction(() => document.querySelector('.graphiql-query-editor .CodeMirror')
    .CodeMirror.getValue().includes('subscription LiveOrders'), null, { timeout: 5000 });
  await page.waitForTimeout(400);
  await page.tap('.graphiql-execute-button');
  await page.waitForTimeout(1000); // subscribed
  const second = (await gql(`mutation P($input: PlaceOrderInput!) { placeOrder(input: $input) { order { orderNo } errors { code message } } }`, {
    input: { idempotencyKey: `ops-console-live-${Date.now()}`, lines: [{ skuId: otherSku, quantity: 1 }], addressId: address },
  }, buyer)).placeOrder;
  if (!second.order) throw new Error(`could not place the second order: ${JSON.stringify(second.errors)}`);
  const next = second.order.orderNo;
  const live = await page.waitForFunction((want) => {
    const pane = document.querySelector('.graphiql-response .CodeMirror');
    const text = pane && pane.CodeMirror.getValue();
    return text && text.includes(want) ? text : null;
  }, next, { timeout: 10000 }).then((h) => h.jsonValue());
  checks.push(['"Watch orders live" receives the next order over the WebSocket',
    live.includes('"order.placed"') && !live.includes('"errors"')]);

  // phone layout: nothing wider than the screen, run button and result pane on screen
  const layout = await page.evaluate(() => {
    const box = (s) => document.querySelector(s)?.getBoundingClientRect();
    return {
      scrollWidth: document.documentElement.scrollWidth,
      run: box('.graphiql-execute-button'),
      response: box('.graphiql-response'),
      editor: box('.graphiql-query-editor'),
    };
  });
  const inside = (b) => b && b.left >= 0 && b.right <= 390 && b.top >= 0 && b.bottom <= 844 && b.width > 0 && b.height > 0;
  checks.push(['phone layout: no sideways scrolling; run button, editor and result on screen',
    layout.scrollWidth <= 390 && inside(layout.run) && inside(layout.response) && inside(layout.editor)
      && layout.response.top >= layout.editor.bottom - 1 && layout.response.width > 300]);

  checks.push(['every GraphiQL request after sign-in carried the staff token',
    sentAuthorizations.length >= 2 && sentAuthorizations.every((a) => a === `Bearer ${token}`)]);
  const after = await gql('query O($id: ID!) { order(id: $id) { status trackingNo } }', { id: orderId }, buyer);
  checks.push(['the customer sees the order shipped', after.order.status === 'SHIPPED']);
  checks.push(['nothing requested from outside', outside.length === 0]);
  checks.push(['no console errors', consoleErrors.length === 0]);
  if (checks.some(([, ok]) => !ok)) {
    console.log({ layout, sentAuthorizations: sentAuthorizations.map((a) => a && `${a.slice(0, 20)}…`), outside, consoleErrors });
  }
} catch (e) {
  console.log('FAIL', e.message);
  failed = true;
  const page = browser.contexts()[0]?.pages()[0];
  if (page) {
    const pane = await page.$eval('.graphiql-response .CodeMirror', (el) => el.CodeMirror.getValue()).catch(() => '');
    console.log({ response: pane.slice(0, 800), consoleErrors, outside });
    if (screenshots) await page.screenshot({ path: `${screenshots}-failure.png` });
  }
} finally {
  await browser.close();
}
for (const [name, ok] of checks) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}`);
  failed ||= !ok;
}
console.log(`graphiql ops console (390x844): ${((Date.now() - started) / 1000).toFixed(1)} s`);
console.log(failed ? 'graphiql ops console check: 0 passed, 1 failed' : 'graphiql ops console check: 1 passed, 0 failed');
process.exit(failed ? 1 : 0);
