// A long conversation as a person sees it: the page opens at the newest 50 messages and
// "Show earlier messages" loads the ones before, above them, until there are no more.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { launchBrowser, screenshot, signInOn, startMockLlm, startPromptops } from './harness.mjs';

const ADMIN_PASSWORD = 'history-admin-password-1';

test('a long conversation opens at its newest messages and loads older ones on demand', { timeout: 120_000 }, async () => {
  const mock = await startMockLlm({ delayMs: 1 });
  const server = await startPromptops({
    env: { PROMPTOPS_BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD, PROMPTOPS_BCRYPT_COST: '4', PROMPTOPS_LLM_BASE_URL: mock.base },
    editConfig: (config) => ({ ...config, limits: { ...config.limits, requests_per_minute: 1000 } }),
  });
  const browser = await launchBrowser();
  try {
    const page = await (await browser.newContext()).newPage();
    const problems = [];
    page.on('pageerror', (e) => problems.push(e.message));
    await signInOn(page, server.baseUrl, 'admin', ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'New conversation' }).first().click();
    await page.waitForURL(/\/c\/\d+$/);
    const id = page.url().split('/').pop();
    // 30 questions and their answers through the API, each answer awaited to its end.
    const csrf = await page.locator('meta[name=csrf-token]').getAttribute('content');
    for (let n = 1; n <= 30; n++) {
      const content = `question ${String(n).padStart(2, '0')}`;
      const sent = await page.request.post(`${server.baseUrl}/api/v1/conversations/${id}/messages`, {
        headers: { 'x-csrf-token': csrf },
        data: { content },
      });
      assert.equal(sent.status(), 202, await sent.text());
      const { message_id: answer } = await sent.json();
      await page.request.get(`${server.baseUrl}/api/v1/conversations/${id}/messages/${answer}/events`);
    }

    await page.goto(`${server.baseUrl}/c/${id}`);
    const messages = page.locator('#messages article.message');
    assert.equal(await messages.count(), 50, 'the newest 50');
    assert.match(await messages.first().innerText(), /question 06/);
    const earlier = page.getByRole('button', { name: /Show earlier messages/ });
    await earlier.click();
    await page.locator('article.message-user').filter({ hasText: 'question 01' }).first().waitFor();
    assert.equal(await messages.count(), 60, 'the 10 older ones above');
    assert.match(await messages.first().innerText(), /question 01/);
    assert.match(await messages.last().innerText(), /You said: question 30/, 'the newest stays last');
    assert.equal(await earlier.count(), 0, 'nothing older: the button is gone');
    await screenshot(page, 'chat-history-loaded');
    assert.deepEqual(problems, []);
  } catch (err) {
    err.message += `\n--- promptops log ---\n${server.logs().slice(-20).join('\n')}`;
    throw err;
  } finally {
    await browser.close();
    await server.stop();
    await mock.stop();
  }
});
