// Personal prompts as a person uses them: made on /prompts (a refused form keeps what was
// typed and says why), picked in the chat with its variable filled, edited, deleted after
// a confirmation. No page may trip the Content Security Policy.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { screenshot, startSignedInStack } from './harness.mjs';

const ADMIN_PASSWORD = 'browser-admin-password-1';

let stack;
let server;

before(async () => {
  stack = await startSignedInStack({
    delayMs: 0,
    adminPassword: ADMIN_PASSWORD,
    allowDialog: (d) => d.type() === 'confirm',
  });
  server = stack.server;
});

after(async () => {
  await stack?.stop();
});

test('make a prompt of your own, use it in the chat, edit it, delete it', async (t) => {
  const { context, page, problems } = await stack.signIn({ viewport: { width: 1280, height: 900 } });
  t.after(() => context.close());
  try {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Prompts' }).click();
    await page.getByRole('heading', { name: 'New prompt of your own' }).waitFor();

    const form = page.locator('#prompt-form');
    await form.getByLabel(/^Name/).fill('stand-up');
    await form.getByLabel('Title').fill('My stand-up');
    await form.getByLabel('Template').fill('What changed in {{project}} since {{since}}?');
    await form.getByLabel('Variable 1 name').fill('project');
    await form.getByLabel('Variable 1 required').check();
    await form.getByRole('button', { name: 'Save prompt' }).click();
    // {{since}} is not declared: refused next to the form, with everything kept.
    await form.getByRole('alert').filter({ hasText: 'uses {{since}}, which is not declared' }).waitFor();
    assert.equal(await form.getByLabel('Template').inputValue(), 'What changed in {{project}} since {{since}}?');
    assert.equal(await form.getByLabel('Variable 1 name').inputValue(), 'project');
    assert.ok(await form.getByLabel('Variable 1 required').isChecked());

    await form.getByLabel('Variable 2 name').fill('since');
    await form.getByLabel('Variable 2 default').fill('yesterday');
    await form.getByRole('button', { name: 'Save prompt' }).click();
    await page.waitForURL(/\/prompts\?notice=prompt_created$/);
    const card = page.locator('li[data-source="personal"]');
    await card.getByRole('heading', { name: 'My stand-up' }).waitFor();
    assert.equal(await card.locator('code').first().innerText(), 'me:stand-up');
    await screenshot(page, 'prompts-personal');

    // In the chat it is one of the prompts to pick.
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Chat' }).click();
    await page.getByRole('button', { name: 'New conversation' }).first().click();
    await page.waitForURL(/\/c\/\d+$/);
    await page.getByLabel('Prompt').selectOption({ label: 'My stand-up' });
    await page.locator('fieldset:not([hidden])').getByLabel(/^project/).fill('PAY');
    await page.getByRole('button', { name: 'Send' }).click();
    const answered = page.locator('article.message-assistant[data-status="complete"]').first();
    await answered.waitFor({ timeout: 15_000 });
    assert.match(await answered.innerText(), /What changed in PAY since yesterday\?/);

    // Edit: the name stays, the title changes.
    await page.goto(`${server.baseUrl}/prompts`);
    await card.getByRole('link', { name: 'Edit My stand-up' }).click();
    await page.getByRole('heading', { name: 'Edit me:stand-up' }).waitFor();
    assert.ok(await page.getByLabel(/^Name/).getAttribute('readonly') !== null);
    await page.getByLabel('Title').fill('Stand-up notes');
    await page.getByRole('button', { name: 'Save changes' }).click();
    await page.waitForURL(/\/prompts\?notice=prompt_updated$/);
    await card.getByRole('heading', { name: 'Stand-up notes' }).waitFor();

    await card.getByRole('button', { name: 'Delete Stand-up notes' }).click();
    await page.waitForURL(/\/prompts\?notice=prompt_deleted$/);
    assert.equal(await page.locator('li[data-source="personal"]').count(), 0);
    // The refused form answered 422 on purpose, once; anything else (CSP, script errors) fails.
    assert.deepEqual(problems.filter((p) => !/status of 422/.test(p)), []);
    assert.equal(problems.length, 1, problems.join('\n'));
  } catch (err) {
    err.message += `\n--- promptops log ---\n${server.logs().slice(-40).join('\n')}`;
    throw err;
  }
});
