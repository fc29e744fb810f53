// Tools as a person sees them: store a Jira token and test it, ask about an issue and see
// the tool call and its result, then approve a comment the assistant wants to write.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  launchBrowser,
  screenshot,
  startMcpAtlassian,
  startMockLlm,
  startPromptops,
  startStubAtlassian,
} from './harness.mjs';

const ADMIN_PASSWORD = 'browser-admin-password-1';
const ALICE_PASSWORD = 'alice-browser-password';

let jira;
let mcp;
let llm;
let server;
let browser;

before(async () => {
  jira = await startStubAtlassian();
  mcp = await startMcpAtlassian(jira.base);
  llm = await startMockLlm({ delayMs: 20, mode: 'agent' });
  server = await startPromptops({
    env: {
      PROMPTOPS_BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
      PROMPTOPS_BCRYPT_COST: '4',
      PROMPTOPS_LLM_BASE_URL: llm.base,
      PROMPTOPS_MCP_ATLASSIAN_URL: mcp.url,
    },
  });
  // An account named like the Jira user, so "Test connection" finds her profile.
  const login = await fetch(`${server.baseUrl}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'admin', password: ADMIN_PASSWORD }),
  });
  const { csrf_token: csrf } = await login.json();
  const cookie = login.headers.get('set-cookie').split(';')[0];
  const created = await fetch(`${server.baseUrl}/api/v1/admin/users`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-csrf-token': csrf, cookie },
    body: JSON.stringify({ username: 'alice', password: ALICE_PASSWORD }),
  });
  assert.equal(created.status, 201);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await llm?.stop();
  await mcp?.stop();
  await jira?.stop();
});

test('a tool call and its result show inline; a comment waits for approval', async (t) => {
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(e.message));
  page.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
  try {
    await page.goto(`${server.baseUrl}/login`);
    await page.getByLabel('User name').fill('alice');
    await page.getByLabel('Password', { exact: true }).fill(ALICE_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(/\/$/);

    // Store the token and check whom Jira sees.
    await page.goto(`${server.baseUrl}/settings`);
    const card = page.locator('#credential-jira');
    await card.getByLabel('Set personal access token').fill('alice-pat');
    await card.getByRole('button', { name: 'Save Jira token' }).click();
    await page.getByTestId('jira-hint').filter({ hasText: '…-pat' }).waitFor();
    await page.locator('#credential-jira').getByRole('button', { name: /Test connection/ }).click();
    await page.getByTestId('jira-message').filter({ hasText: 'Alice Example' }).waitFor({ timeout: 30_000 });
    await screenshot(page, 'settings-test-connection');

    await page.goto(`${server.baseUrl}/`);
    await page.getByRole('button', { name: 'New conversation' }).first().click();
    await page.waitForURL(/\/c\/\d+$/);
    const box = page.getByLabel(/^Message/);
    await box.fill('What is blocking PAY-7?');
    await box.press('Enter');
    const answer = page.locator('article.message-assistant[data-status="complete"]').last();
    await answer.waitFor({ timeout: 30_000 });
    await answer.locator('.tool-call', { hasText: 'jira_get_issue' }).waitFor();
    assert.match(await answer.innerText(), /blocked by PAY-9/);
    await answer.locator('.tool-call summary').first().click();
    assert.match(await answer.locator('.tool-data').last().innerText(), /Payment retries fail/);
    await screenshot(page, 'chat-tool-result');

    const commentsBefore = await (await fetch(`${jira.base}/__stub/comments/PAY-7`)).json();
    await box.fill('Please comment on PAY-7 that it is escalated.');
    await box.press('Enter');
    const approve = page.getByRole('button', { name: 'Approve' });
    await approve.waitFor({ timeout: 30_000 });
    await screenshot(page, 'chat-approval');
    const commentsWaiting = await (await fetch(`${jira.base}/__stub/comments/PAY-7`)).json();
    assert.equal(commentsWaiting.length, commentsBefore.length, 'nothing written before approval');

    // A reload keeps the pending approval.
    await page.reload();
    await page.getByRole('button', { name: 'Approve' }).click();
    await page.locator('article.message-assistant[data-status="complete"]').nth(1).waitFor({ timeout: 30_000 });
    const commentsAfter = await (await fetch(`${jira.base}/__stub/comments/PAY-7`)).json();
    assert.equal(commentsAfter.length, commentsBefore.length + 1, 'the comment was written once, after approval');
    await screenshot(page, 'chat-approved');
    assert.deepEqual(problems, []);
  } catch (err) {
    await screenshot(page, 'tools-failure').catch(() => {});
    err.message += `\n--- promptops log ---\n${server.logs().slice(-40).join('\n')}`;
    throw err;
  }
});
