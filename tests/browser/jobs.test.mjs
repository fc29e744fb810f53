// Scheduled jobs as a person sees them: the prompt library, a personal job made on /jobs
// (a refused form keeps what was typed), Run now with the run history polled until the
// output is there, pause and resume, delete. No page may trip the Content Security Policy.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { screenshot, startSignedInStack } from './harness.mjs';

const ADMIN_PASSWORD = 'browser-admin-password-1';
const PROMPT = 'List the **PAY** issues that changed since yesterday, one line each.';

let stack;
let server;

before(async () => {
  // Slow enough (about 2 s an answer) that the page shows the run open before it ends.
  stack = await startSignedInStack({
    delayMs: 150,
    adminPassword: ADMIN_PASSWORD,
    allowDialog: (d) => d.type() === 'confirm',
  });
  server = stack.server;
});

after(async () => {
  await stack?.stop();
});

function signedIn() {
  return stack.signIn({ viewport: { width: 1280, height: 900 } });
}

test('prompt library, make a job, run it now, pause, resume, delete', async (t) => {
  const { context, page, problems } = await signedIn();
  t.after(() => context.close());
  try {
    const nav = page.getByRole('navigation', { name: 'Main' });
    await nav.getByRole('link', { name: 'Prompts' }).click();
    await page.getByRole('heading', { name: 'Prompts', exact: true }).waitFor();
    await page.getByRole('heading', { name: 'Open blockers of a project' }).waitFor();
    assert.equal(await page.locator('[data-source="file"]').count(), 2);
    await screenshot(page, 'prompts');

    await nav.getByRole('link', { name: 'Jobs' }).click();
    await page.getByRole('heading', { name: 'Jobs', exact: true }).waitFor();
    await page.getByText('No jobs yet.').waitFor();

    // The form shows the variables of the chosen saved prompt, or the text box.
    const text = page.getByLabel(/^Prompt text/);
    assert.ok(await text.isVisible());
    assert.equal(await page.locator('fieldset[data-prompt-fields]:visible').count(), 0);
    await page.getByLabel('Prompt', { exact: true }).selectOption({ label: 'Saved: Open blockers of a project' });
    assert.ok(await text.isHidden());
    await page.locator('fieldset[data-prompt-fields="blockers"]').getByLabel(/^project/).waitFor();
    await page.getByLabel('Prompt', { exact: true }).selectOption({ label: 'My own text (below)' });
    assert.ok(await text.isVisible());

    // A schedule cron cannot read is refused next to the form, with the input kept.
    await page.getByLabel('Name').fill('PAY digest');
    await page.getByLabel(/^Schedule/).fill('every morning');
    await page.getByLabel('Time zone').fill('Europe/Berlin');
    await text.fill(PROMPT);
    await page.getByRole('button', { name: 'Create job' }).click();
    await page.getByRole('alert').filter({ hasText: 'Invalid schedule "every morning"' }).waitFor();
    assert.equal(await page.getByLabel('Name').inputValue(), 'PAY digest');
    assert.equal(await page.getByLabel('Time zone').inputValue(), 'Europe/Berlin');
    assert.equal(await page.getByLabel(/^Prompt text/).inputValue(), PROMPT);

    await page.getByLabel(/^Schedule/).fill('0 8 * * MON-FRI');
    // Deliver each answer to a conversation of mine and as a comment on PAY-7.
    await page.getByLabel(/to a conversation of mine/).check();
    await page.getByLabel(/as a comment on the Jira issue/).fill('PAY-7');
    await page.getByRole('button', { name: 'Create job' }).click();
    await page.waitForURL(/\/jobs\/[0-9a-f-]+\?notice=job_created$/);
    await page.getByRole('heading', { name: 'PAY digest' }).waitFor();
    assert.match(await page.getByTestId('next-run').innerText(), /Europe\/Berlin$/);
    assert.equal(await page.getByTestId('job-state').innerText(), 'active');
    await page.getByText('No runs yet.').waitFor();

    // Run now: the history shows the queued run and follows it until it succeeded.
    await page.getByRole('button', { name: 'Run now' }).click();
    await page.getByText('Run queued.').waitFor();
    const run = page.locator('details.run').first();
    assert.match(await run.getAttribute('data-status'), /^(queued|running)$/);
    await run.getByRole('status').filter({ hasText: /Waiting for a worker|Running/ }).waitFor();
    await screenshot(page, 'jobs-run-open');
    await page.locator('details.run[data-status="succeeded"]').waitFor({ timeout: 20_000 });
    const output = run.getByTestId('run-output');
    assert.match(await output.innerText(), /You said: List the PAY issues that changed since yesterday/);
    assert.equal(await output.locator('strong').innerText(), 'PAY', 'the output is rendered Markdown');
    assert.match(await run.locator('summary').innerText(), /succeeded\s+manual/);
    await screenshot(page, 'jobs');

    // Each delivery shows on the run: the conversation with its link, the Jira comment
    // failed (no Jira token is stored here) with the reason and Deliver again.
    const delivered = run.locator('li.delivery[data-target="conversation"][data-state="delivered"]');
    await delivered.waitFor({ timeout: 20_000 });
    const link = await delivered.getByRole('link', { name: 'open' }).getAttribute('href');
    assert.match(link, /\/c\/\d+$/);
    const failed = run.locator('li.delivery[data-target="jira"][data-state="failed"]');
    await failed.waitFor({ timeout: 20_000 });
    assert.match(await failed.locator('.message-error').innerText(), /token|MCP server/);
    await failed.getByRole('button', { name: 'Deliver again' }).waitFor();
    await run.locator('ul.deliveries').scrollIntoViewIfNeeded();
    await screenshot(page, 'job-deliveries');
    await failed.getByRole('button', { name: 'Deliver again' }).click();
    await page.getByText('Delivering again.').waitFor();
    await page.locator('li.delivery[data-target="jira"][data-state="failed"]').waitFor({ timeout: 20_000 });
    const conversation = await context.newPage();
    await conversation.goto(new URL(link, page.url()).href);
    await conversation.getByText(/Scheduled run of PAY digest/).waitFor();
    await conversation.close();

    await page.getByRole('button', { name: 'Pause' }).click();
    await page.getByText('Job paused').waitFor();
    assert.equal(await page.getByTestId('job-state').innerText(), 'paused');
    assert.equal(await page.getByTestId('next-run').innerText(), 'none while paused');
    await page.getByRole('button', { name: 'Resume' }).click();
    await page.getByText('Job resumed.').waitFor();
    assert.equal(await page.getByTestId('job-state').innerText(), 'active');
    assert.match(await page.getByTestId('next-run').innerText(), /Europe\/Berlin$/);

    await page.getByRole('link', { name: '← All jobs' }).click();
    const row = page.getByRole('row', { name: /PAY digest/ });
    await row.getByText('succeeded').waitFor();
    assert.match(await row.innerText(), /0 8 \* \* MON-FRI\s+Europe\/Berlin/);
    await screenshot(page, 'jobs-list');

    await row.getByRole('link', { name: 'PAY digest' }).click();
    await page.getByRole('button', { name: 'Delete' }).click();
    await page.waitForURL(/\/jobs\?notice=job_deleted$/);
    await page.getByText('No jobs yet.').waitFor();
    // The refused form answered 422 on purpose; anything else (CSP, script errors) fails.
    assert.deepEqual(problems.filter((p) => !/status of 422/.test(p)), []);
  } catch (err) {
    err.message += `\n--- promptops log ---\n${server.logs().slice(-40).join('\n')}`;
    throw err;
  }
});
