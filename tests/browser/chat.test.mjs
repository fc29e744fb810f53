// Chat as a person sees it: send a message, watch tokens appear, reload mid-answer and see
// it continue, press Stop, use a prompt, and never see the LLM's markup become active.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { screenshot, startSignedInStack } from './harness.mjs';

const ADMIN_PASSWORD = 'browser-admin-password-1';
const LONG = Array.from({ length: 40 }, (_, i) => `word${i + 1}`).join(' ');

let stack;
let server;

before(async () => {
  stack = await startSignedInStack({ delayMs: 70, adminPassword: ADMIN_PASSWORD, allowDialog: (d) => d.type() !== 'alert' });
  server = stack.server;
});

after(async () => {
  await stack?.stop();
});

function signedIn() {
  return stack.signIn();
}

const lastAnswer = (page) => page.locator('article.message-assistant').last();

test('tokens stream in, a reload picks the answer up again, Stop ends it', async (t) => {
  const { context, page, problems } = await signedIn();
  t.after(() => context.close());
  try {
    await page.getByRole('button', { name: 'New conversation' }).first().click();
    await page.waitForURL(/\/c\/\d+$/);
    await screenshot(page, 'chat-empty');

    const box = page.getByLabel(/^Message/);
    await box.fill('first line');
    await box.press('Shift+Enter');
    await box.pressSequentially('second line');
    assert.equal(await box.inputValue(), 'first line\nsecond line', 'Shift+Enter starts a new line');
    await box.fill(LONG);
    await box.press('Enter');

    const answer = lastAnswer(page);
    await answer.locator('.stream-text').filter({ hasText: 'word3' }).waitFor();
    assert.ok(await page.getByRole('button', { name: 'Stop' }).isVisible(), 'Stop shows while answering');
    await screenshot(page, 'chat-streaming');
    const before = (await answer.locator('.stream-text').innerText()).length;

    // Reload in the middle: the answer was never tied to the page.
    await page.reload();
    const resumed = lastAnswer(page);
    await resumed.locator('.stream-text').filter({ hasText: 'word30' }).waitFor();
    await page.locator('article.message-assistant[data-status="complete"]').last().waitFor({ timeout: 15_000 });
    const final = await lastAnswer(page).locator('.message-body').innerText();
    assert.equal(final.trim(), `You said: ${LONG}`, 'every word once, in order, after the reload');
    assert.ok(before > 0);
    assert.ok(await page.getByRole('button', { name: 'Stop' }).isHidden());

    // Stop a second answer early.
    await box.fill(LONG);
    await box.press('Enter');
    await lastAnswer(page).locator('.stream-text').filter({ hasText: 'word2' }).waitFor();
    await page.getByRole('button', { name: 'Stop' }).click();
    await page.getByText('Stopped before the end.').waitFor();
    const stopped = await lastAnswer(page).locator('.message-body').innerText();
    assert.ok(!stopped.includes('word40'), 'the answer ended early');
    await screenshot(page, 'chat-stopped');

    // The search box finds the conversation by a word of its answers, the word marked.
    await page.getByRole('searchbox', { name: 'Search your conversations' }).fill('word17 word19');
    await page.getByRole('searchbox', { name: 'Search your conversations' }).press('Enter');
    const snippet = page.getByTestId('search-snippet').first();
    await snippet.waitFor();
    assert.deepEqual(await snippet.locator('mark').allInnerTexts(), ['word17', 'word19']);
    await screenshot(page, 'chat-search');
    assert.deepEqual(problems, []);
  } catch (err) {
    err.message += `\n--- promptops log ---\n${server.logs().slice(-40).join('\n')}`;
    throw err;
  }
});

test('answers are rendered Markdown with nothing active; prompts fill their variables', async (t) => {
  const { context, page, problems } = await signedIn();
  t.after(() => context.close());
  try {
    await page.getByRole('button', { name: 'New conversation' }).first().click();
    await page.waitForURL(/\/c\/\d+$/);
    const box = page.getByLabel(/^Message/);
    await box.fill('**bold** `code` <img src=x onerror="alert(1)"> [link](javascript:alert(2))');
    await box.press('Enter');
    const done = page.locator('article.message-assistant[data-status="complete"]').last();
    await done.waitFor({ timeout: 15_000 });
    assert.equal(await done.locator('strong').innerText(), 'bold');
    assert.equal(await done.locator('img').count(), 0, 'no image with a handler');
    assert.equal(await done.locator('a[href^="javascript"]').count(), 0, 'no javascript: link');

    await page.getByLabel('Prompt').selectOption({ label: 'Open blockers of a project' });
    await page.locator('fieldset:not([hidden])').getByLabel(/^project/).fill('PAY');
    await page.getByRole('button', { name: 'Send' }).click();
    const answered = page.locator('article.message-assistant[data-status="complete"]').nth(1);
    await answered.waitFor({ timeout: 15_000 });
    assert.match(await answered.innerText(), /Summarise the open blockers of Jira project PAY/);
    await screenshot(page, 'chat-markdown-and-prompt');
    assert.deepEqual(problems, []);
  } catch (err) {
    err.message += `\n--- promptops log ---\n${server.logs().slice(-40).join('\n')}`;
    throw err;
  }
});
