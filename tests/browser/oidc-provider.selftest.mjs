// Self-test of tests/browser/oidc-provider.mjs without a browser: plain fetch with a cookie jar
// walks the provider's own pages the way Chromium would. Not a *.test.mjs, so
// scripts/test-browser does not pick it up; run it with
//   node tests/browser/oidc-provider.selftest.mjs

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { startOidcProvider } from './oidc-provider.mjs';

const CLIENT_ID = 'promptops';
const CLIENT_SECRET = 'selftest-secret';
const REDIRECT_URI = 'http://127.0.0.1:9/auth/oidc/callback';
const POST_LOGOUT_URI = 'http://127.0.0.1:9/';

/** Cookies by name, as a browser would keep them for 127.0.0.1 (paths are not told apart). */
class CookieJar {
  #cookies = new Map();

  /** Takes the Set-Cookie headers of `res`. */
  take(res) {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';');
      const i = pair.indexOf('=');
      const name = pair.slice(0, i).trim();
      const value = pair.slice(i + 1).trim();
      const gone = attributes.some((a) => {
        const [key, val = ''] = a.trim().split('=');
        return (
          (key.toLowerCase() === 'expires' && Date.parse(val) <= Date.now()) ||
          (key.toLowerCase() === 'max-age' && Number(val) <= 0)
        );
      });
      if (gone || value === '') this.#cookies.delete(name);
      else this.#cookies.set(name, value);
    }
  }

  header() {
    return [...this.#cookies].map(([name, value]) => `${name}=${value}`).join('; ');
  }

  names() {
    return [...this.#cookies.keys()];
  }
}

/** One request with the jar's cookies, no redirect followed; returns the response (body unread). */
async function send(jar, url, { method = 'GET', form, headers = {} } = {}) {
  const res = await fetch(url, {
    method,
    redirect: 'manual',
    headers: {
      ...(jar.header() ? { cookie: jar.header() } : {}),
      ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
      ...headers,
    },
    body: form ? new URLSearchParams(form).toString() : undefined,
  });
  jar.take(res);
  return res;
}

/** Where a 30x response sends the browser, as an absolute URL. */
function location(res, base) {
  assert.ok([302, 303].includes(res.status), `expected a redirect, got ${res.status}`);
  return new URL(res.headers.get('location'), base).href;
}

/** The form's action and its named inputs (name → value). */
function parseForm(html, base) {
  const form = /<form[^>]*action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/.exec(html);
  assert.ok(form, `no form in:\n${html}`);
  const inputs = {};
  for (const [input] of form[2].matchAll(/<input[^>]*>/g)) {
    const name = /name="([^"]*)"/.exec(input)?.[1];
    if (name) inputs[name] = /value="([^"]*)"/.exec(input)?.[1] ?? '';
  }
  return { action: new URL(form[1].replaceAll('&amp;', '&'), base).href, inputs, html: form[0] };
}

const b64url = (buf) => buf.toString('base64url');

let op;
let discovery;

before(async () => {
  op = await startOidcProvider({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    redirectUris: [REDIRECT_URI],
    postLogoutRedirectUris: [POST_LOGOUT_URI],
    accounts: {
      alice: {
        sub: 'sub-alice',
        email: 'alice@example.test',
        name: 'Alice Admin',
        groups: ['promptops-admins', 'staff'],
      },
      bob: {
        sub: 'sub-bob',
        email: 'bob@example.test',
        name: 'Bob Builder',
        groups: ['staff'],
        preferred_username: 'bobby',
      },
    },
  });
});

after(async () => {
  await op?.stop();
});

/**
 * Starts an authorization request in `jar`; returns { res (first answer), nonce, state, verifier }.
 * `params` overrides or drops (undefined) request parameters.
 */
async function authorize(jar, params = {}) {
  const verifier = b64url(randomBytes(32));
  const nonce = b64url(randomBytes(16));
  const state = b64url(randomBytes(16));
  const query = {
    client_id: CLIENT_ID,
    response_type: 'code',
    scope: 'openid profile email groups',
    redirect_uri: REDIRECT_URI,
    state,
    nonce,
    code_challenge: b64url(createHash('sha256').update(verifier).digest()),
    code_challenge_method: 'S256',
    ...params,
  };
  const url = new URL(discovery.authorization_endpoint);
  for (const [key, value] of Object.entries(query)) if (value !== undefined) url.searchParams.set(key, value);
  return { res: await send(jar, url), nonce, state, verifier };
}

/** Fills and posts the provider's login form at `formUrl`; returns the answer to the post. */
async function submitLogin(jar, formUrl, login) {
  const page = await send(jar, formUrl);
  assert.equal(page.status, 200);
  const html = await page.text();
  assert.match(html, /<title>Sign-in<\/title>/);
  assert.match(html, /placeholder="Enter any login"/);
  assert.match(html, /placeholder="and password"/);
  assert.match(html, /<button type="submit" class="login login-submit">Sign-in<\/button>/);
  assert.doesNotMatch(html, /fonts\.googleapis\.com/, 'the web font @import is cut out');
  const form = parseForm(html, formUrl);
  assert.deepEqual(Object.keys(form.inputs).sort(), ['login', 'password', 'prompt']);
  const fields = { ...form.inputs, login, password: 'whatever' };
  return { res: await send(jar, form.action, { method: 'POST', form: fields }), html };
}

/** Follows redirects from `res` until one leaves the provider; returns that URL. */
async function followToClient(jar, res, seen = []) {
  for (let i = 0; i < 10; i++) {
    const next = location(res, op.issuer);
    seen.push(next);
    if (!next.startsWith(op.issuer)) return next;
    res = await send(jar, next);
    if (res.status === 200) {
      throw new Error(`stopped at a page of the provider (${next}):\n${await res.text()}`);
    }
  }
  throw new Error(`too many redirects: ${seen.join(' -> ')}`);
}

/** The callback's code after checking state and iss. */
function codeFrom(callback, state) {
  const url = new URL(callback);
  assert.equal(`${url.origin}${url.pathname}`, REDIRECT_URI);
  assert.equal(url.searchParams.get('error'), null, `error at the callback: ${callback}`);
  assert.equal(url.searchParams.get('state'), state);
  assert.equal(url.searchParams.get('iss'), op.issuer);
  const code = url.searchParams.get('code');
  assert.ok(code, `no code in ${callback}`);
  return code;
}

/** Exchanges `code`; `auth` is 'basic' or 'post'. Returns the token response's JSON (status checked). */
async function exchange(code, verifier, { auth = 'basic', expectStatus = 200 } = {}) {
  const form = { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier };
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  if (auth === 'basic') {
    headers.authorization = `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`;
  } else {
    Object.assign(form, { client_id: CLIENT_ID, client_secret: CLIENT_SECRET });
  }
  const res = await fetch(discovery.token_endpoint, { method: 'POST', headers, body: new URLSearchParams(form) });
  const body = await res.json();
  assert.equal(res.status, expectStatus, JSON.stringify(body));
  return body;
}

/** A signed-in session in `jar` (signing in as `login` first when it has none) and a fresh code. */
async function signIn(jar, login) {
  const flow = await authorize(jar);
  let res = flow.res;
  const next = location(res, op.issuer);
  if (new URL(next).pathname.startsWith('/interaction/')) ({ res } = await submitLogin(jar, next, login));
  const callback = await followToClient(jar, res);
  return { ...flow, code: codeFrom(callback, flow.state) };
}

let verifyJwt;
const aliceJar = new CookieJar();

test('discovery names the endpoints', async () => {
  const res = await fetch(`${op.issuer}/.well-known/openid-configuration`);
  assert.equal(res.status, 200);
  discovery = await res.json();
  assert.match(op.issuer, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(discovery.issuer, op.issuer);
  const endpoints = ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'end_session_endpoint', 'userinfo_endpoint'];
  for (const key of endpoints) {
    assert.ok(discovery[key]?.startsWith(`${op.issuer}/`), `${key}: ${discovery[key]}`);
  }
  assert.deepEqual(discovery.scopes_supported, ['openid', 'profile', 'email', 'groups']);
  assert.ok(discovery.claims_supported.includes('groups'));
  assert.deepEqual(discovery.code_challenge_methods_supported, ['S256']);
  assert.deepEqual(discovery.response_types_supported, ['code']);
  assert.deepEqual(discovery.id_token_signing_alg_values_supported, ['RS256']);
  for (const method of ['client_secret_basic', 'client_secret_post']) {
    assert.ok(discovery.token_endpoint_auth_methods_supported.includes(method), method);
  }
  verifyJwt = createRemoteJWKSet(new URL(discovery.jwks_uri));
});

test('authorization code + PKCE through the login form, as alice', async () => {
  const { res, nonce, state, verifier } = await authorize(aliceJar);
  const formUrl = location(res, op.issuer);
  assert.match(new URL(formUrl).pathname, /^\/interaction\/[\w-]+$/);
  const { res: posted } = await submitLogin(aliceJar, formUrl, 'alice');
  const seen = [];
  const callback = await followToClient(aliceJar, posted, seen);
  assert.ok(!seen.some((url) => url.includes('/interaction/')), `no consent page: ${seen.join(' -> ')}`);
  assert.ok(aliceJar.names().includes('op_session'), `cookies: ${aliceJar.names()}`);
  const tokens = await exchange(codeFrom(callback, state), verifier);
  assert.equal(tokens.token_type, 'Bearer');
  const { payload, protectedHeader } = await jwtVerify(tokens.id_token, verifyJwt, {
    issuer: op.issuer,
    audience: CLIENT_ID,
    algorithms: ['RS256'],
  });
  assert.equal(protectedHeader.kid, op.jwks().keys[0].kid);
  assert.equal(payload.sub, 'sub-alice');
  assert.equal(payload.preferred_username, 'alice');
  assert.equal(payload.email, 'alice@example.test');
  assert.equal(payload.name, 'Alice Admin');
  assert.deepEqual(payload.groups, ['promptops-admins', 'staff']);
  assert.equal(payload.nonce, nonce);
  assert.deepEqual(op.logins(), ['alice']);

  // The code is single-use.
  const again = await exchange(codeFrom(callback, state), verifier, { expectStatus: 400 });
  assert.equal(again.error, 'invalid_grant');
});

test('a second sign-in reuses the session: no form, same claims', async () => {
  const { code, verifier, nonce } = await signIn(aliceJar, 'never-asked');
  const { id_token: idToken } = await exchange(code, verifier, { auth: 'post' }); // client_secret_post
  const payload = decodeJwt(idToken);
  assert.equal(payload.sub, 'sub-alice');
  assert.equal(payload.nonce, nonce);
  assert.deepEqual(op.logins(), ['alice']);
});

test('PKCE is required and checked; a wrong secret is refused', async () => {
  const jar = new CookieJar();
  const { res } = await authorize(jar, { code_challenge: undefined, code_challenge_method: undefined });
  const url = new URL(location(res, op.issuer));
  assert.equal(`${url.origin}${url.pathname}`, REDIRECT_URI);
  assert.equal(url.searchParams.get('error'), 'invalid_request');
  assert.match(url.searchParams.get('error_description'), /requires PKCE/);

  const plain = await authorize(jar, { code_challenge: 'x'.repeat(43), code_challenge_method: 'plain' });
  assert.equal(new URL(location(plain.res, op.issuer)).searchParams.get('error'), 'invalid_request');

  const { code } = await signIn(aliceJar);
  const wrong = await exchange(code, b64url(randomBytes(32)), { expectStatus: 400 });
  assert.equal(wrong.error, 'invalid_grant');

  const flow = await signIn(aliceJar);
  const res2 = await fetch(discovery.token_endpoint, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${CLIENT_ID}:nope`).toString('base64')}` },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code: flow.code,
      redirect_uri: REDIRECT_URI,
      code_verifier: flow.verifier,
    }),
  });
  assert.equal(res2.status, 401);
  assert.equal((await res2.json()).error, 'invalid_client');
});

test('an unknown login is refused by the form, which then takes a known one', async () => {
  const jar = new CookieJar();
  const { res, state, verifier } = await authorize(jar);
  const firstForm = location(res, op.issuer);
  const { res: posted } = await submitLogin(jar, firstForm, 'mallory');
  // Back to the same form, which says why.
  assert.equal(location(posted, op.issuer), firstForm);
  const { res: second, html } = await submitLogin(jar, firstForm, 'bob');
  assert.match(html, /<p role="alert" class="login-error">Unknown login: mallory<\/p>/);
  const code = codeFrom(await followToClient(jar, second), state);
  const payload = decodeJwt((await exchange(code, verifier)).id_token);
  assert.equal(payload.sub, 'sub-bob');
  assert.equal(payload.preferred_username, 'bobby');
  assert.deepEqual(payload.groups, ['staff']);
  assert.deepEqual(op.logins(), ['alice', 'bob']);

  // setAccount between two sign-ins changes the next ID token.
  op.setAccount('bob', { groups: [] });
  const next = await signIn(jar);
  const changed = decodeJwt((await exchange(next.code, next.verifier)).id_token);
  assert.deepEqual(changed.groups, []);
  assert.equal(changed.email, 'bob@example.test');

  // A removed account: its session asks for the login form again.
  op.removeAccount('bob');
  const gone = await authorize(jar);
  assert.match(new URL(location(gone.res, op.issuer)).pathname, /^\/interaction\//);
  op.setAccount('bob', { sub: 'sub-bob', email: 'bob@example.test', name: 'Bob Builder', groups: ['staff'] });
});

test('each tamper mode changes the next ID token, then resets', async () => {
  const { code, verifier } = await signIn(aliceJar);
  const reference = await exchange(code, verifier);
  const base = decodeJwt(reference.id_token);
  const kid = decodeProtectedHeader(reference.id_token).kid;

  /** Tampers, exchanges a fresh code; returns { payload, header, idToken, nonce }. */
  async function tampered(mode) {
    op.tamper(mode);
    const flow = await signIn(aliceJar);
    const { id_token: idToken } = await exchange(flow.code, flow.verifier);
    return { idToken, payload: decodeJwt(idToken), header: decodeProtectedHeader(idToken), nonce: flow.nonce };
  }
  const verify = (idToken) =>
    jwtVerify(idToken, verifyJwt, { issuer: op.issuer, audience: CLIENT_ID, algorithms: ['RS256'] });

  const none = await tampered('none');
  assert.equal(none.payload.nonce, none.nonce);
  await verify(none.idToken);

  const nonce = await tampered('wrong_nonce');
  assert.notEqual(nonce.payload.nonce, nonce.nonce);
  assert.equal(nonce.header.kid, kid);
  await verify(nonce.idToken); // signature still fine: only the nonce is wrong
  assert.equal(nonce.payload.sub, base.sub);
  assert.deepEqual(nonce.payload.groups, base.groups);

  const audience = await tampered('other_audience');
  assert.equal(audience.payload.aud, 'some-other-client');
  if ('azp' in audience.payload) assert.equal(audience.payload.azp, 'some-other-client');
  await assert.rejects(verify(audience.idToken), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'aud' });

  const expired = await tampered('expired');
  const now = Math.floor(Date.now() / 1000);
  assert.ok(Math.abs(expired.payload.exp - (now - 3600)) <= 5, `exp ${expired.payload.exp}, now ${now}`);
  assert.ok(expired.payload.iat <= now - 3600 - 3000, `iat ${expired.payload.iat}`);
  assert.equal(expired.payload.exp - expired.payload.iat, base.exp - base.iat);
  await assert.rejects(verify(expired.idToken), { code: 'ERR_JWT_EXPIRED' });

  const key = await tampered('unknown_key');
  assert.notEqual(key.header.kid, kid);
  assert.ok(!op.jwks().keys.some((k) => k.kid === key.header.kid));
  assert.equal(key.payload.nonce, key.nonce);
  await assert.rejects(verify(key.idToken), { code: 'ERR_JWKS_NO_MATCHING_KEY' });

  const issuer = await tampered('wrong_issuer');
  assert.equal(issuer.payload.iss, 'http://evil.example');
  await assert.rejects(verify(issuer.idToken), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'iss' });

  // Back to 'none' after each exchange.
  const after = await tampered('none');
  await verify(after.idToken);
  const again = await signIn(aliceJar);
  await verify((await exchange(again.code, again.verifier)).id_token);

  assert.throws(() => op.tamper('bogus'), /unknown mode/);
});

test('rotateKey: the next ID token is signed with a new kid that the JWKS serves, with the old one', async () => {
  const old = op.jwks().keys[0].kid;
  const pending = await signIn(aliceJar); // a code from before the rotation still works after it
  const kid = await op.rotateKey();
  assert.notEqual(kid, old);
  const jwks = await (await fetch(discovery.jwks_uri)).json();
  assert.deepEqual(jwks.keys.map((k) => k.kid), [kid, old]);
  assert.ok(jwks.keys.every((k) => !('d' in k)), 'no private parts in the JWKS');

  const before = await exchange(pending.code, pending.verifier);
  assert.equal(decodeProtectedHeader(before.id_token).kid, kid);
  const flow = await signIn(aliceJar); // the session survived the rotation
  const { id_token: idToken } = await exchange(flow.code, flow.verifier);
  assert.equal(decodeProtectedHeader(idToken).kid, kid);
  const fresh = createRemoteJWKSet(new URL(discovery.jwks_uri));
  await jwtVerify(idToken, fresh, { issuer: op.issuer, audience: CLIENT_ID });
  assert.deepEqual(op.logins(), ['alice', 'bob']);
});

test('RP-initiated logout asks, then goes back to the post_logout_redirect_uri', async () => {
  const flow = await signIn(aliceJar);
  const { id_token: idToken } = await exchange(flow.code, flow.verifier);
  const url = new URL(discovery.end_session_endpoint);
  url.searchParams.set('id_token_hint', idToken);
  url.searchParams.set('post_logout_redirect_uri', POST_LOGOUT_URI);
  url.searchParams.set('state', 'bye');
  const page = await send(aliceJar, url);
  assert.equal(page.status, 200);
  const html = await page.text();
  assert.match(html, /<title>Logout Request<\/title>/);
  assert.ok(html.includes(`Do you want to sign-out from 127.0.0.1:${op.port}?`));
  assert.match(html, />Yes, sign me out</);
  assert.match(html, />No, stay signed in</);
  assert.doesNotMatch(html, /fonts\.googleapis\.com/);
  const form = parseForm(html, url.href);
  const res = await send(aliceJar, form.action, { method: 'POST', form: { ...form.inputs, logout: 'yes' } });
  const back = new URL(location(res, op.issuer));
  assert.equal(back.href, `${POST_LOGOUT_URI}?state=bye`);

  // Signed out: the next request shows the login form again.
  const next = await authorize(aliceJar);
  assert.match(new URL(location(next.res, op.issuer)).pathname, /^\/interaction\//);
});

test('stop() closes the port, keep-alive connections included', async () => {
  // A kept-alive connection from fetch's pool is open now; stop() must not wait for it.
  await (await fetch(`${op.issuer}/.well-known/openid-configuration`)).arrayBuffer();
  const started = Date.now();
  await op.stop();
  assert.ok(Date.now() - started < 1_000, `stop() took ${Date.now() - started} ms`);
  // fetch may first fail on its pooled socket that stop() cut ("other side closed").
  await assert.rejects(fetch(`${op.issuer}/.well-known/openid-configuration`), TypeError);
  const refused = await new Promise((resolve) => {
    const socket = net.connect(op.port, '127.0.0.1');
    socket.on('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.on('error', (err) => resolve(err.code));
  });
  assert.equal(refused, 'ECONNREFUSED');
  await op.stop(); // idempotent
});
