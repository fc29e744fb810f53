// Smoke test: the harness starts promptops and a real headless Chromium can reach it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, screenshot, startPromptops } from './harness.mjs';

let server;
let browser;

before(async () => {
  server = await startPromptops();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('probes answer in the browser', async (t) => {
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  try {
    const response = await page.goto(`${server.baseUrl}/healthz`);
    assert.equal(response.status(), 200);
    assert.equal((await page.locator('body').innerText()).trim(), 'ok');

    const ready = await page.request.get(`${server.baseUrl}/readyz`);
    assert.equal(ready.status(), 200);
    assert.deepEqual(await ready.json(), { status: 'ok' });

    const file = await screenshot(page, 'smoke-healthz');
    t.diagnostic(`screenshot: ${file}`);
  } catch (err) {
    err.message += `\n--- promptops log ---\n${server.logs().join('\n')}`;
    throw err;
  }
});
