// A real OpenID Provider for the browser tests: panva's certified `oidc-provider` (pinned in
// package.json) on a loopback port, with one confidential client, accounts the test controls,
// the provider's own login form, and hooks to break the ID token on purpose.
//
// The provider's own pages, as a browser test fills them (features.devInteractions and the
// default RP-initiated logout pages of oidc-provider 9.13.3; none of them has a <label>):
//
//   Login form     GET /interaction/<uid>, <title> "Sign-in", heading "Sign-in"
//                    <input type="text" name="login" placeholder="Enter any login" required>
//                    <input type="password" name="password" placeholder="and password" required>
//                      (any non-empty password; the dev form does not check it)
//                    <button type="submit">Sign-in</button>
//                    link "[ Cancel ]" (GET /interaction/<uid>/abort): back to the relying
//                      party with error=access_denied
//                  page.getByPlaceholder('Enter any login').fill('alice');
//                  page.getByPlaceholder('and password').fill('anything');
//                  page.getByRole('button', { name: 'Sign-in' }).click();
//                  An unknown login is refused: the post answers 303 to the same form, which
//                  then shows "Unknown login: <name>" (role=alert) above it; nothing else
//                  happens until a known login is typed. Signing in as another account than
//                  the one of the browser's provider session first passes an auto-submitting
//                  page "Submitting Callback" that ends the old session (needs JavaScript).
//   Consent page   heading "Authorize", button "Continue": never shown for this client, whose
//                  grant of openid profile email groups is made at once (loadExistingGrant).
//   Logout         GET /session/end (end_session_endpoint), <title> "Logout Request", heading
//                  "Do you want to sign-out from 127.0.0.1:<port>?", buttons "Yes, sign me out"
//                  and "No, stay signed in"; either one then redirects to the
//                  post_logout_redirect_uri (with state), or without one shows the page
//                  "Sign-out Success". The confirmation is always asked.
//   Errors         a page headed "oops! something went wrong" with error and error_description
//                  (e.g. an unregistered redirect_uri); other errors go back to the redirect_uri.
//
// The default pages @import a web font from the internet; that line is cut out of every HTML
// answer so that Chromium reports no failed load here. The provider's cookies are renamed
// op_session, op_interaction and op_interaction_resume (plus .sig companions): cookies do not
// tell ports apart, so the relying party on another 127.0.0.1 port sees them, and their default
// names (_session, ...) could clash with its own.

import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import {
  SignJWT,
  calculateJwkThumbprint,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
} from 'jose';

/**
 * The tamper modes; each one applies to the next successful code exchange only. The ID token
 * is decoded, changed and signed again with the same header (alg, kid) and key, except:
 *   none            as issued
 *   wrong_nonce     nonce is another random value
 *   other_audience  aud (and azp, if present) is 'some-other-client'
 *   expired         exp is an hour ago, iat moved back as much (the lifetime stays)
 *   unknown_key     signed with a new RSA key whose kid is not in the JWKS
 *   wrong_issuer    iss is 'http://evil.example'
 */
export const TAMPER_MODES = ['none', 'wrong_nonce', 'other_audience', 'expired', 'unknown_key', 'wrong_issuer'];

/** Every scope this provider knows, and what the client is granted without a consent page. */
const SCOPES = ['openid', 'profile', 'email', 'groups'];

/**
 * Console lines of oidc-provider that say only that this is a test setup. They are dropped
 * while a provider runs (option quiet, default true); everything else is printed as usual.
 */
const EXPECTED_NOTICES = [
  // oidc-provider 9 asks for Node.js 22 LTS or later; it works on the node 20 used here.
  'oidc-provider WARNING: Unsupported runtime.',
  'oidc-provider WARNING: a quick start development-only feature devInteractions is enabled',
  // The default error, logout and logged-out pages, which the tests use on purpose.
  'oidc-provider NOTICE: default renderError function called',
  'oidc-provider NOTICE: default features.rpInitiatedLogout.logoutSource function called',
  'oidc-provider NOTICE: default features.rpInitiatedLogout.postLogoutSuccessSource function called',
];

let quietCount = 0;
let loudConsole = null;

/** Starts dropping EXPECTED_NOTICES from console.warn/info; returns the function that stops it. */
function quietNotices() {
  if (quietCount++ === 0) {
    loudConsole = { warn: console.warn, info: console.info };
    const filtered = (print) => (...args) => {
      // oidc-provider colours its lines when the stream is a terminal.
      const text = typeof args[0] === 'string' ? args[0].replace(/\x1b\[[0-9;]*m/g, '') : '';
      if (!EXPECTED_NOTICES.some((notice) => text.startsWith(notice))) print.apply(console, args);
    };
    console.warn = filtered(loudConsole.warn);
    console.info = filtered(loudConsole.info);
  }
  let done = false;
  return () => {
    if (done) return;
    done = true;
    if (--quietCount === 0) {
      console.warn = loudConsole.warn;
      console.info = loudConsole.info;
      loudConsole = null;
    }
  };
}

let oidcModule = null;

/** oidc-provider, imported on first use so that its import-time runtime warning can be dropped. */
async function loadOidcProvider() {
  oidcModule ??= import('oidc-provider');
  return oidcModule;
}

/** A new RS256 signing key: { kid, privateKey (CryptoKey), privateJwk (for `jwks`) }. */
async function newSigningKey() {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
  const kid = await calculateJwkThumbprint(await exportJWK(publicKey));
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
  return { kid, privateKey, privateJwk };
}

const epochNow = () => Math.floor(Date.now() / 1000);

/**
 * oidc-provider's storage adapter over one Map that outlives a provider instance, so that
 * rotateKey() can build a new instance that keeps sessions, grants and unused codes.
 * Entries are { payload, expiresAt } under "<model>:<id>"; expired ones read as missing.
 */
function createAdapterFactory() {
  const store = new Map();
  const read = (key) => {
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return entry.value;
  };
  const write = (key, value, expiresIn) => {
    store.set(key, { value, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
  };

  class MapAdapter {
    constructor(model) {
      this.model = model;
    }

    key(id) {
      return `${this.model}:${id}`;
    }

    async upsert(id, payload, expiresIn) {
      write(this.key(id), payload, expiresIn);
      if (this.model === 'Session') write(`sessionUid:${payload.uid}`, id, expiresIn);
      if (payload.userCode) write(`userCode:${payload.userCode}`, id, expiresIn);
    }

    async find(id) {
      return read(this.key(id));
    }

    async findByUid(uid) {
      const id = read(`sessionUid:${uid}`);
      return id === undefined ? undefined : this.find(id);
    }

    async findByUserCode(userCode) {
      const id = read(`userCode:${userCode}`);
      return id === undefined ? undefined : this.find(id);
    }

    async consume(id) {
      const payload = read(this.key(id));
      if (payload) payload.consumed = epochNow();
    }

    async destroy(id) {
      store.delete(this.key(id));
    }

    async revokeByGrantId(grantId) {
      for (const [key, { value }] of store) {
        if (value && typeof value === 'object' && value.grantId === grantId) store.delete(key);
      }
    }
  }

  return (model) => new MapAdapter(model);
}

/**
 * Starts the provider on 127.0.0.1 (`port`, default 0: a free one) with issuer
 * `http://127.0.0.1:<port>` and one confidential client:
 *   client_secret_basic or client_secret_post, response_type code, grant authorization_code,
 *   PKCE with S256 required, ID tokens signed RS256 with a key made here, scopes
 *   openid profile email groups granted without a consent page, and their claims (sub,
 *   preferred_username, name, email, groups) in the ID token itself, not only at userinfo.
 *
 * `accounts` maps a login (what the form takes) to its claims
 *   { sub (default: the login), email, name, groups: [...], preferred_username? (default: the login) };
 * it is copied, and every look-up reads the current copy, so setAccount() and removeAccount()
 * change what the next sign-in or code exchange gets.
 *
 * Returns {
 *   issuer, port,
 *   setAccount(login, claims)  adds the account, or merges claims into it,
 *   removeAccount(login),
 *   tamper(mode)               breaks the ID token of the next code exchange (TAMPER_MODES),
 *   logins()                   logins accepted by the form so far, in order,
 *   rotateKey()                signs with a new key from now on; resolves to its kid,
 *   jwks()                     the public keys served at jwks_uri,
 *   stop()                     closes the port and every open connection,
 * }.
 */
export async function startOidcProvider({
  clientId,
  clientSecret,
  redirectUris,
  postLogoutRedirectUris = [],
  accounts = {},
  port = 0,
  host = '127.0.0.1',
  quiet = true,
}) {
  if (!clientId || !clientSecret) throw new Error('startOidcProvider: clientId and clientSecret are required');
  if (!Array.isArray(redirectUris) || !redirectUris.length) {
    throw new Error('startOidcProvider: redirectUris must list at least one URI');
  }

  const unquiet = quiet ? quietNotices() : () => {};
  let server;
  try {
    const { Provider, interactionPolicy } = await loadOidcProvider();

    const current = structuredClone(accounts);
    const accepted = [];
    const refused = new Map(); // interaction uid -> the unknown login just typed there
    let tamperMode = 'none';
    // Newest first: the provider signs with the first key of its JWKS.
    const keys = [await newSigningKey()];
    const cookieKeys = [randomBytes(32).toString('base64url')];
    const adapter = createAdapterFactory();

    let handler = null; // the current provider instance's callback (see rotateKey)
    server = http.createServer((req, res) => {
      if (handler) return handler(req, res);
      res.writeHead(503).end();
    });
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
    const actualPort = server.address().port;
    // `host` may be `localhost`: another site than the relying party's 127.0.0.1, as in real life.
    const issuer = `http://${host}:${actualPort}`;

    /** The login and account whose sub is `sub`, or undefined. */
    const bySub = (sub) => {
      const entry = Object.entries(current).find(([login, account]) => (account.sub ?? login) === sub);
      return entry && { login: entry[0], account: entry[1] };
    };

    /**
     * findAccount, by sub: the ID token's sub is the accountId that the login form's result
     * carries, so interactionResult below turns the login typed into the account's sub.
     */
    const findAccount = (_ctx, sub) => {
      if (!bySub(sub)) return undefined;
      return {
        accountId: sub,
        async claims() {
          const found = bySub(sub);
          if (!found) return { sub }; // removed since: nothing issued will use it
          const { login, account } = found;
          const { email, name, groups = [], preferred_username: username = login } = account;
          return { sub, email, name, groups: [...groups], preferred_username: username };
        },
      };
    };

    /** A new provider instance with the current keys; all instances share the storage. */
    function buildProvider() {
      // Login: a session whose account is gone (removeAccount, or setAccount changing its
      // sub) asks for the login form again, instead of failing on the missing grant later.
      const policy = interactionPolicy.base();
      policy.get('login').checks.add(
        new interactionPolicy.Check('unknown_account', 'the login is not a known account', (ctx) =>
          ctx.oidc.session.accountId && !ctx.oidc.account
            ? interactionPolicy.Check.REQUEST_PROMPT
            : interactionPolicy.Check.NO_NEED_TO_PROMPT,
        ),
      );

      const provider = new Provider(issuer, {
        adapter,
        clients: [
          {
            client_id: clientId,
            client_secret: clientSecret,
            redirect_uris: redirectUris,
            post_logout_redirect_uris: postLogoutRedirectUris,
            response_types: ['code'],
            grant_types: ['authorization_code'],
            // A client registered for client_secret_basic may also send client_secret_post.
            token_endpoint_auth_method: 'client_secret_basic',
            id_token_signed_response_alg: 'RS256',
          },
        ],
        clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
        responseTypes: ['code'],
        scopes: SCOPES,
        claims: {
          acr: null,
          auth_time: null,
          iss: null,
          sid: null,
          openid: ['sub'],
          profile: ['name', 'preferred_username'],
          email: ['email'],
          groups: ['groups'],
        },
        // The relying party reads the claims of the granted scopes from the ID token.
        conformIdTokenClaims: false,
        findAccount,
        // A first-party client: grant it every scope at once, so no consent page is shown.
        async loadExistingGrant(ctx) {
          const { oidc } = ctx;
          const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
          if (grantId) {
            const grant = await oidc.provider.Grant.find(grantId);
            if (grant) return grant;
          }
          const grant = new oidc.provider.Grant({
            clientId: oidc.client.clientId,
            accountId: oidc.session.accountId,
          });
          grant.addOIDCScope(SCOPES.join(' '));
          await grant.save();
          return grant;
        },
        interactions: { policy },
        features: {
          devInteractions: { enabled: true },
          rpInitiatedLogout: { enabled: true },
        },
        pkce: { required: () => true },
        jwks: { keys: keys.map((key) => key.privateJwk) },
        cookies: {
          keys: cookieKeys,
          names: { session: 'op_session', interaction: 'op_interaction', resume: 'op_interaction_resume' },
        },
        ttl: {
          AccessToken: 60 * 60,
          AuthorizationCode: 60,
          Grant: 24 * 60 * 60,
          IdToken: 60 * 60,
          Interaction: 10 * 60,
          Session: 24 * 60 * 60,
        },
      });

      // devInteractions' form posts end in provider.interactionResult (interactionFinished
      // calls it) with { login: { accountId: <the login typed> } }. Here a known login becomes
      // its account's sub and is counted; an unknown one leaves the interaction pending and
      // sends the browser back to the same form, which then says why.
      const interactionResult = provider.interactionResult.bind(provider);
      provider.interactionResult = async (req, res, result, options) => {
        const login = result?.login?.accountId;
        if (typeof login !== 'string') return interactionResult(req, res, result, options);
        const { uid } = await provider.interactionDetails(req, res);
        if (!Object.hasOwn(current, login)) {
          refused.set(uid, login);
          return `${issuer}/interaction/${uid}`;
        }
        accepted.push(login);
        const sub = current[login].sub ?? login;
        return interactionResult(req, res, { ...result, login: { ...result.login, accountId: sub } }, options);
      };

      provider.use(async (ctx, next) => {
        await next();
        const route = ctx.oidc?.route;
        if (route === 'interaction' && typeof ctx.body === 'string') {
          const uid = ctx.path.split('/')[2];
          if (refused.has(uid)) {
            const login = refused.get(uid);
            refused.delete(uid);
            ctx.body = ctx.body.replace(
              '<form',
              `<p role="alert" class="login-error">Unknown login: ${escapeHtml(login)}</p>\n<form`,
            );
          }
        } else if (
          route === 'token' &&
          tamperMode !== 'none' &&
          ctx.status === 200 &&
          ctx.oidc.params?.grant_type === 'authorization_code' &&
          typeof ctx.body?.id_token === 'string'
        ) {
          const mode = tamperMode;
          tamperMode = 'none';
          ctx.body = { ...ctx.body, id_token: await tamperIdToken(ctx.body.id_token, mode) };
        }
        if (ctx.response.is('html') && typeof ctx.body === 'string') {
          ctx.body = ctx.body.replace(/@import url\(https:\/\/fonts\.googleapis\.com\/[^)]*\);?/g, '');
        }
      });
      return provider;
    }

    /** The ID token `jwt` changed as `mode` says, signed again (see TAMPER_MODES). */
    async function tamperIdToken(jwt, mode) {
      const header = decodeProtectedHeader(jwt);
      const payload = decodeJwt(jwt);
      let key = keys.find((k) => k.kid === header.kid);
      if (!key) throw new Error(`tamper: the ID token's kid ${header.kid} is not one of the provider's keys`);
      switch (mode) {
        case 'wrong_nonce':
          payload.nonce = `not-${randomUUID()}`;
          break;
        case 'other_audience':
          payload.aud = 'some-other-client';
          if ('azp' in payload) payload.azp = 'some-other-client';
          break;
        case 'expired': {
          const shift = payload.exp - (epochNow() - 60 * 60); // exp an hour ago, iat as far back
          payload.exp -= shift;
          payload.iat -= shift;
          break;
        }
        case 'unknown_key':
          key = await newSigningKey(); // never in the JWKS
          break;
        case 'wrong_issuer':
          payload.iss = 'http://evil.example';
          break;
        default:
          throw new Error(`tamper: unknown mode ${mode}`);
      }
      return new SignJWT(payload).setProtectedHeader({ ...header, kid: key.kid }).sign(key.privateKey);
    }

    handler = buildProvider().callback();

    let stopping = null;
    const stop = () => {
      stopping ??= (async () => {
        const closed = once(server, 'close');
        server.close();
        server.closeAllConnections();
        await closed;
        unquiet();
      })();
      return stopping;
    };

    return {
      issuer,
      port: actualPort,
      setAccount(login, claims) {
        current[login] = { ...current[login], ...structuredClone(claims) };
      },
      removeAccount(login) {
        delete current[login];
      },
      tamper(mode) {
        if (!TAMPER_MODES.includes(mode)) {
          throw new Error(`tamper: unknown mode ${mode} (one of ${TAMPER_MODES.join(', ')})`);
        }
        tamperMode = mode;
      },
      logins: () => [...accepted],
      /**
       * oidc-provider reads `jwks` once, in its constructor. So this builds a new provider
       * instance whose JWKS is [new key, ...older keys] and puts it behind the same server:
       * same port and issuer, same storage and cookie keys (sessions, grants and unused codes
       * carry over), and no moment without an answer. ID tokens are signed with the new key
       * from the next request on; jwks_uri serves the old keys too.
       */
      async rotateKey() {
        const key = await newSigningKey();
        keys.unshift(key);
        handler = buildProvider().callback();
        return key.kid;
      },
      jwks: () => ({
        keys: keys.map(({ privateJwk: { kty, n, e, kid, alg, use } }) => ({ kty, n, e, kid, alg, use })),
      }),
      stop,
    };
  } catch (err) {
    server?.close();
    server?.closeAllConnections();
    unquiet();
    throw err;
  }
}

/** Text for HTML. */
function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
