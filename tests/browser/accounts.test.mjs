// What a person sees: sign in with the bootstrap admin password, store a token and see
// only its hint, manage users, read the config status and the audit log, sign out.
// Every page is screenshotted; no page may trip the Content Security Policy.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, screenshot, startPromptops } from './harness.mjs';

const ADMIN_PASSWORD = 'browser-admin-password-1';
const JIRA_TOKEN = 'jira-pat-SECRETSECRET-wxyz';

let server;
let browser;

before(async () => {
  server = await startPromptops({
    env: { PROMPTOPS_BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD, PROMPTOPS_BCRYPT_COST: '4' },
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A page that records console errors (CSP violations show up there). */
async function watchedPage(context) {
  const page = await context.newPage();
  const errors = [];
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  page.on('pageerror', (error) => errors.push(error.message));
  return { page, errors };
}

async function signIn(page, password = ADMIN_PASSWORD) {
  await page.goto(`${server.baseUrl}/settings`);
  await page.getByLabel('User name').fill('admin');
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

test('sign in, store a token, see only its hint, sign out', async (t) => {
  const context = await browser.newContext();
  t.after(() => context.close());
  const { page, errors } = await watchedPage(context);
  try {
    await page.goto(`${server.baseUrl}/`);
    assert.match(page.url(), /\/login\?next=%2F$/);
    await screenshot(page, 'login');

    await signIn(page, 'not-the-password');
    await page.getByText('Wrong user name or password.').waitFor();
    await screenshot(page, 'login-failed');

    await signIn(page);
    await page.waitForURL(`${server.baseUrl}/settings`);
    await page.getByRole('heading', { name: 'Settings' }).waitFor();
    await screenshot(page, 'settings-empty');

    // Store a Jira token through the HTMX form: only the card is swapped.
    const jira = page.locator('#credential-jira');
    await jira.getByLabel('Set personal access token').fill(JIRA_TOKEN);
    await jira.getByRole('button', { name: 'Show' }).click();
    assert.equal(await jira.getByLabel('Set personal access token').getAttribute('type'), 'text');
    await jira.getByRole('button', { name: 'Save Jira token' }).click();
    await page.getByTestId('jira-hint').filter({ hasText: '…wxyz' }).waitFor();
    await page.getByText('Token saved.').waitFor();
    await screenshot(page, 'settings-token-saved');
    assert.ok(!(await page.content()).includes(JIRA_TOKEN), 'the token is never sent back');

    // The hint survives a reload; the token itself is nowhere in the page.
    await page.reload();
    assert.equal(await page.getByTestId('jira-hint').innerText(), '…wxyz');
    assert.ok(!(await page.content()).includes('SECRETSECRET'));

    // A token that is too short is refused next to the card.
    const confluence = page.locator('#credential-confluence');
    await confluence.getByLabel('Set personal access token').fill('short');
    await confluence.getByLabel('Set personal access token').evaluate((input) => input.removeAttribute('minlength'));
    await confluence.getByRole('button', { name: 'Save Confluence token' }).click();
    await page.getByText('a token has 8 to 4096 characters').waitFor();

    await jira.getByRole('button', { name: 'Remove Jira token' }).click();
    await page.getByTestId('jira-hint').filter({ hasText: 'No token stored' }).waitFor();

    await page.setViewportSize({ width: 390, height: 844 });
    await screenshot(page, 'settings-mobile');
    await page.setViewportSize({ width: 1280, height: 800 });

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL(/\/login\?signed_out=1$/);
    await page.getByText('You are signed out.').waitFor();
    await page.goto(`${server.baseUrl}/settings`);
    assert.match(page.url(), /\/login\?next=/, 'the old session is gone');
    assert.deepEqual(errors.filter((e) => /Content Security Policy|Refused/.test(e)), []);
  } catch (err) {
    err.message += `\n--- promptops log ---\n${server.logs().join('\n')}`;
    throw err;
  }
});

test('admin pages: add a user, read config status and the audit log', async (t) => {
  const context = await browser.newContext();
  t.after(() => context.close());
  const { page, errors } = await watchedPage(context);
  try {
    await signIn(page);
    await page.waitForURL(`${server.baseUrl}/settings`);

    await page.getByRole('link', { name: 'Users' }).click();
    await page.getByRole('heading', { name: 'Users', exact: true }).waitFor();
    await page.getByLabel('User name').fill('bob');
    await page.getByRole('button', { name: 'Add user' }).click();
    const issued = await page.getByTestId('issued-password').innerText();
    assert.equal(issued.length, 20, 'a generated password is shown once');
    await screenshot(page, 'admin-users');

    await page.getByRole('button', { name: 'Disable bob' }).click();
    await page.getByText('User disabled; their sessions have ended.').waitFor();
    await page.getByRole('row', { name: /bob/ }).getByText('disabled').waitFor();

    await page.getByRole('link', { name: 'Config' }).click();
    await page.getByRole('heading', { name: 'Configuration', exact: true }).waitFor();
    assert.equal(await page.getByTestId('generation').innerText(), '1');
    await screenshot(page, 'admin-config');

    await page.getByRole('link', { name: 'Audit log' }).click();
    await page.getByRole('heading', { name: 'Audit log', exact: true }).waitFor();
    await page.getByRole('cell', { name: 'user.disable' }).first().waitFor();
    await screenshot(page, 'admin-audit');
    await page.getByLabel('Action').fill('login');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/action=login/);
    const actions = await page.locator('tbody td:nth-child(3)').allInnerTexts();
    assert.ok(actions.length > 0 && actions.every((a) => a === 'login'), actions.join(','));

    const missing = await page.goto(`${server.baseUrl}/no/such/page`);
    assert.equal(missing.status(), 404);
    await screenshot(page, 'not-found');
    assert.deepEqual(errors.filter((e) => /Content Security Policy|Refused/.test(e)), []);
  } catch (err) {
    err.message += `\n--- promptops log ---\n${server.logs().join('\n')}`;
    throw err;
  }
});
