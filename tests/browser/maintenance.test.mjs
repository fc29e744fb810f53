// The admin's view of housekeeping: the Configuration page lists each maintenance task
// with its schedule and last run, and "Run now" runs one and shows what it did.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { launchBrowser, screenshot, signInOn, startPromptops } from './harness.mjs';

const ADMIN_PASSWORD = 'maintenance-admin-password-1';

test('an admin runs a backup from the Configuration page and sees its outcome', { timeout: 120_000 }, async () => {
  const server = await startPromptops({
    env: { PROMPTOPS_BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD, PROMPTOPS_BCRYPT_COST: '4' },
    editConfig: (config) => ({ ...config, maintenance: { backup: { schedule: '0 2 * * *', keep: 3 } } }),
  });
  const browser = await launchBrowser();
  try {
    const page = await (await browser.newContext()).newPage();
    const problems = [];
    page.on('pageerror', (e) => problems.push(e.message));
    await signInOn(page, server.baseUrl, 'admin', ADMIN_PASSWORD);

    await page.goto(`${server.baseUrl}/admin/config`);
    const section = page.getByTestId('maintenance');
    const backup = section.locator('tr[data-task=backup]');
    assert.match(await backup.innerText(), /0 2 \* \* \*/, 'the schedule from config.json');
    assert.match(await backup.innerText(), /never/);
    assert.match(await section.locator('tr[data-task=retention]').innerText(), /17 3 \* \* \*/, 'the default');

    await backup.getByRole('button', { name: 'Run now backup' }).click();
    await page.waitForURL(/\/admin\/config#maintenance$/);
    const row = page.getByTestId('maintenance').locator('tr[data-task=backup]');
    const text = await row.innerText();
    assert.match(text, /succeeded/);
    assert.match(text, /promptops-\d{8}T\d{6}\.\d{3}Z\.db: [\d.]+ MB in .*integrity ok; 0 older removed/);
    assert.doesNotMatch(text, /never/);
    await screenshot(page, 'admin-maintenance');
    assert.deepEqual(problems, []);
  } catch (err) {
    err.message += `\n--- promptops log ---\n${server.logs().slice(-20).join('\n')}`;
    throw err;
  } finally {
    await browser.close();
    await server.stop();
  }
});
