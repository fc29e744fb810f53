// Single sign-on against a real OpenID Provider (panva's oidc-provider, tests/browser/oidc-provider.mjs)
// on another site (localhost) than promptops (127.0.0.1): sign-in through the provider's own
// form, group rules, roles re-decided at each sign-in, forged and replayed callbacks, key
// rotation, a disabled account, RP-initiated logout, and the provider going down while local
// break-glass sign-in goes on working.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { freePort, launchBrowser, screenshot, startMockLlm, startPromptops } from './harness.mjs';
import { startOidcProvider } from './oidc-provider.mjs';

const ADMIN_PASSWORD = 'sso-admin-password-1';
const CLIENT_SECRET = 'sso-client-secret-value-1';

test('single sign-on through a real provider, with every refusal explained and audited', { timeout: 240_000 }, async () => {
  const mock = await startMockLlm({ delayMs: 5 });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const provider = await startOidcProvider({
    host: 'localhost',
    clientId: 'promptops',
    clientSecret: CLIENT_SECRET,
    redirectUris: [`${base}/auth/oidc/callback`],
    postLogoutRedirectUris: [`${base}/login`],
    accounts: {
      alice: { sub: 'sub-alice', email: 'alice@example.com', name: 'Alice', groups: ['staff'] },
      bob: { sub: 'sub-bob', email: 'bob@example.com', name: 'Bob', groups: ['staff', 'promptops-admins'] },
      mallory: { sub: 'sub-mallory', email: 'mallory@example.com', name: 'Mallory', groups: ['guests'] },
      admin: { sub: 'sub-other-admin', email: 'admin@example.com', name: 'Not our admin', groups: ['staff'] },
      carol: { sub: 'sub-carol', email: 'carol@example.com', name: 'Carol', groups: ['staff'] },
    },
  });
  const server = await startPromptops({
    port,
    env: {
      PROMPTOPS_BOOTSTRAP_ADMIN_PASSWORD: ADMIN_PASSWORD,
      PROMPTOPS_BCRYPT_COST: '4',
      PROMPTOPS_LLM_BASE_URL: mock.base,
      OIDC_CLIENT_SECRET: CLIENT_SECRET,
    },
    editConfig: (config) => ({
      ...config,
      auth: {
        local: 'admin_only',
        oidc: {
          issuer: provider.issuer,
          client_id: 'promptops',
          client_secret: '${env:OIDC_CLIENT_SECRET}',
          scopes: ['openid', 'profile', 'email', 'groups'],
          allowed_groups: ['staff'],
          admin_groups: ['promptops-admins'],
          label: 'Sign in with Example ID',
        },
      },
    }),
  });
  const browser = await launchBrowser();
  let providerUp = true;
  try {
    /** A fresh browser context that signs in as `login` through the provider's form. */
    async function sso(login) {
      const context = await browser.newContext();
      const page = await context.newPage();
      const callbacks = [];
      page.on('request', (r) => r.url().startsWith(`${base}/auth/oidc/callback`) && callbacks.push(r.url()));
      await page.goto(`${base}/login`);
      await page.getByRole('link', { name: 'Sign in with Example ID' }).click();
      await page.getByPlaceholder('Enter any login').fill(login);
      await page.getByPlaceholder('and password').fill('anything');
      await page.getByRole('button', { name: 'Sign-in' }).click();
      // Back at promptops: the page asked for, or the callback showing why not.
      await page.waitForURL((url) => url.origin === base && url.pathname !== '/auth/oidc/start');
      return { context, page, callbacks };
    }
    const failure = (page) => page.getByRole('alert').innerText();

    // A person in the allowed group signs in and chats; the provider's form was used.
    const alice = await sso('alice');
    assert.equal(new URL(alice.page.url()).pathname, '/');
    assert.deepEqual(provider.logins(), ['alice']);
    await alice.page.getByRole('button', { name: 'New conversation' }).first().click();
    await alice.page.waitForURL(/\/c\/\d+$/);
    await alice.page.getByLabel(/^Message/).fill('hello from single sign-on');
    await alice.page.getByLabel(/^Message/).press('Enter');
    const answer = alice.page.locator('article.message-assistant[data-status="complete"]').last();
    await answer.waitFor({ timeout: 15_000 });
    assert.match(await answer.innerText(), /hello from single sign-on/);
    assert.equal(await alice.page.getByRole('link', { name: 'Users' }).count(), 0, 'alice is no admin');
    // Replaying the callback she came back with is refused.
    const [replayed] = alice.callbacks;
    await alice.page.goto(replayed);
    assert.match(await failure(alice.page), /unknown or was already used/);
    await alice.context.close();

    // Someone outside the allowed groups is refused with the reason.
    const mallory = await sso('mallory');
    assert.match(await failure(mallory.page), /not in a group that may use promptops/);
    await screenshot(mallory.page, 'sso-refused');
    await mallory.context.close();

    // A local account of the same name is not taken over.
    const impostor = await sso('admin');
    assert.match(await failure(impostor.page), /an account named "admin" already exists/);
    await impostor.context.close();

    // In the admin group: admin pages; out of it, at the next sign-in, not any more.
    const bob = await sso('bob');
    await bob.page.getByRole('link', { name: 'Users' }).click();
    await bob.page.getByRole('heading', { name: 'Users', exact: true }).waitFor();
    await bob.page.getByRole('button', { name: 'Sign out' }).click();
    await bob.page.waitForURL(/\/login\?signed_out=sso/);
    // RP-initiated logout is offered for an account from the provider.
    const logout = await bob.page.getByTestId('provider-logout').getAttribute('href');
    assert.ok(logout.startsWith(`${provider.issuer}/`), logout);
    await bob.context.close();
    provider.setAccount('bob', { groups: ['staff'] });
    const bobAgain = await sso('bob');
    assert.equal(await bobAgain.page.getByRole('link', { name: 'Users' }).count(), 0);
    const adminPage = await bobAgain.page.goto(`${base}/admin/users`);
    assert.equal(adminPage.status(), 403);
    await bobAgain.context.close();

    // The provider rotates its signing key: the new key is fetched and sign-in goes on. (Before
    // the forged tokens: one with an unknown key also fetches the keys again, and promptops
    // does that at most every 30 s, so a rotation just after it would wait that long; a
    // routine look at the provider, as the login page makes, does not count.)
    await provider.rotateKey();
    const rotated = await sso('alice');
    assert.match(new URL(rotated.page.url()).pathname, /^\/c\/\d+$/, 'signed in: her conversation');
    await rotated.context.close();

    // Forged tokens: each refused with its reason.
    const forged = {
      wrong_nonce: /does not belong to this sign-in \(nonce\)/,
      other_audience: /issued to another application/,
      expired: /has expired/,
      unknown_key: /not validly signed/,
      wrong_issuer: /comes from another issuer/,
    };
    for (const [mode, reason] of Object.entries(forged)) {
      provider.tamper(mode);
      const attempt = await sso('alice');
      assert.match(await failure(attempt.page), reason, mode);
      await attempt.context.close();
    }
    // A callback with a state this browser did not start.
    const wrongState = await browser.newContext();
    const wrongPage = await wrongState.newPage();
    await wrongPage.goto(`${base}/auth/oidc/callback?code=made-up&state=made-up`);
    assert.match(await failure(wrongPage), /unknown or was already used/);
    await wrongState.close();

    // The break-glass admin signs in locally and sees every refusal in the audit log, then
    // disables alice, whom the provider still signs in.
    const adminContext = await browser.newContext();
    const admin = await adminContext.newPage();
    await admin.goto(`${base}/login`);
    await admin.getByLabel('User name').fill('admin');
    await admin.getByLabel('Password', { exact: true }).fill(ADMIN_PASSWORD);
    await admin.getByRole('button', { name: 'Sign in', exact: true }).click();
    await admin.waitForURL(/\/$|\/c\/\d+$/);
    await admin.goto(`${base}/admin/audit?action=login.sso`);
    const audit = await admin.locator('main').innerText();
    for (const code of [
      'unknown_or_replayed_state',
      'not_in_allowed_groups',
      'name_taken',
      'wrong_nonce',
      'wrong_audience',
      'token_expired',
      'bad_signature',
      'wrong_issuer',
    ]) {
      assert.ok(audit.includes(code), `audit has ${code}:\n${audit}`);
    }
    // The config page shows the provider as read.
    await admin.goto(`${base}/admin/config`);
    assert.match(await admin.getByTestId('sso-status').innerText(), /discovery document and keys read/);
    await admin.goto(`${base}/admin/users`);
    await admin.locator('tr', { hasText: 'alice' }).getByRole('button', { name: /^Disable/ }).click();
    await admin.waitForURL(/notice=user_disabled/);
    // A local account is moved to single sign-on only when an admin allows it.
    await admin.locator('#new-username').fill('carol');
    await admin.getByRole('button', { name: 'Add user' }).click();
    await admin.getByTestId('issued-password').waitFor();
    const carolRefused = await sso('carol');
    assert.match(await failure(carolRefused.page), /an account named "carol" already exists/);
    await carolRefused.context.close();
    await admin.goto(`${base}/admin/users`);
    await admin.locator('tr', { hasText: 'carol' }).getByRole('button', { name: /^Allow SSO link/ }).click();
    await admin.waitForURL(/notice=sso_link_allowed/);
    assert.match(await admin.locator('tr', { hasText: 'carol' }).innerText(), /link allowed/);
    const carol = await sso('carol');
    assert.equal(new URL(carol.page.url()).pathname, '/', 'carol signed in to her existing account');
    await carol.context.close();
    await admin.goto(`${base}/admin/users`);
    const carolRow = admin.locator('tr', { hasText: 'carol' });
    assert.match(await carolRow.innerText(), /single sign-on/);
    await screenshot(admin, 'sso-users-linked');
    assert.equal(await carolRow.getByRole('button', { name: /SSO link/ }).count(), 0, 'a linked account offers no link');
    await admin.goto(`${base}/admin/audit?action=user.sso_link`);
    assert.match(await admin.locator('main').innerText(), /carol/);
    const disabled = await sso('alice');
    assert.match(await failure(disabled.page), /this account is disabled/);
    await disabled.context.close();

    // The provider goes down: the login page says so, and the admin still gets in locally.
    await provider.stop();
    providerUp = false;
    await new Promise((resolve) => setTimeout(resolve, 5_500));
    const downContext = await browser.newContext();
    const down = await downContext.newPage();
    await down.goto(`${base}/login`);
    assert.match(await down.getByTestId('sso-unavailable').innerText(), /unavailable just now/);
    await screenshot(down, 'sso-provider-down');
    await down.getByLabel('User name').fill('admin');
    await down.getByLabel('Password', { exact: true }).fill(ADMIN_PASSWORD);
    await down.getByRole('button', { name: 'Sign in', exact: true }).click();
    await down.waitForURL(/\/$|\/c\/\d+$/);
    // The admin config page names the provider's failure; the login page did not.
    await down.goto(`${base}/admin/config`);
    const status = await down.getByTestId('sso-status').innerText();
    assert.match(status, /unreachable/);
    await screenshot(down, 'sso-config-provider-down');
    await downContext.close();
    await adminContext.close();
  } catch (err) {
    err.message += `\n--- promptops log ---\n${server.logs().slice(-40).join('\n')}`;
    throw err;
  } finally {
    await browser.close();
    await server.stop();
    if (providerUp) await provider.stop();
    await mock.stop();
  }
});
