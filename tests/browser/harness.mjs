// Browser test harness: a real `promptops serve` on a loopback port, in its own temp dir with
// a copy of the example config/, and Debian's headless Chromium driven by playwright-core.
// Run through scripts/test-browser, which installs Chromium and node_modules when needed.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;

/** A port that was free a moment ago on 127.0.0.1. */
export async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Starts `promptops serve` and waits until GET /readyz answers 200.
 *
 * The child gets the parent's environment without any PROMPTOPS_* variable, plus `env`; `port`
 * picks the port (default: a free one), `editConfig(json)` returns the config.json to use.
 * Returns { baseUrl, dir, logs(), stop() }; stop() sends SIGTERM, waits for the exit
 * (SIGKILL after 10 s) and removes the temp dir.
 */
export async function startPromptops({ env = {}, readyTimeoutMs = READY_TIMEOUT_MS, port: wanted, editConfig } = {}) {
  const bin = process.env.PROMPTOPS_BIN;
  if (!bin) {
    throw new Error(
      'PROMPTOPS_BIN is not set: point it at a built promptops binary ' +
        '(scripts/test-browser defaults it to $CARGO_TARGET_DIR/debug/promptops)',
    );
  }

  const dir = await mkdtemp(path.join(os.tmpdir(), 'promptops-browser-'));
  await cp(path.join(repoRoot, 'config'), path.join(dir, 'config'), { recursive: true });
  if (editConfig) {
    const file = path.join(dir, 'config', 'config.json');
    await writeFile(file, JSON.stringify(editConfig(JSON.parse(await readFile(file, 'utf8'))), null, 2));
  }

  const childEnv = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !key.startsWith('PROMPTOPS_')),
  );
  Object.assign(childEnv, env);

  const port = wanted ?? (await freePort());
  const baseUrl = `http://127.0.0.1:${port}`;
  const lines = [];
  const child = spawn(
    path.resolve(bin),
    ['serve', '--listen', `127.0.0.1:${port}`, '--log-format', 'json'],
    { cwd: dir, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  createInterface({ input: child.stderr }).on('line', (line) => lines.push(line));
  createInterface({ input: child.stdout }).on('line', (line) => lines.push(`[stdout] ${line}`));

  let exited = null; // { code, signal } once the process is gone
  const exit = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  // 'close' comes once stdout/stderr are drained; a grandchild holding them could delay
  // it forever, so it is only ever awaited with a bound.
  const closed = once(child, 'close').catch(() => {});
  let spawnError = null;
  child.on('error', (err) => {
    spawnError = err;
  });

  const logs = () => [...lines];
  let stopping = null;
  const stop = () => {
    stopping ??= (async () => {
      if (!spawnError) {
        if (!exited) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
          await exit;
          clearTimeout(timer);
        }
        await Promise.race([closed, sleep(1_000)]);
      }
      await rm(dir, { recursive: true, force: true });
    })();
    return stopping;
  };
  const fail = async (why) => {
    await stop();
    const log = lines.length ? lines.join('\n') : '(no output)';
    return new Error(`promptops (${bin}) ${why}\n--- promptops log ---\n${log}\n--- end of log ---`);
  };

  const deadline = Date.now() + readyTimeoutMs;
  let last = 'no answer yet';
  for (;;) {
    if (spawnError) throw await fail(`could not be started: ${spawnError.message}`);
    if (exited) {
      throw await fail(`exited before it was ready (code ${exited.code}, signal ${exited.signal})`);
    }
    try {
      const res = await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
      last = `GET /readyz answered ${res.status}`;
    } catch (err) {
      last = `GET /readyz failed: ${err.cause?.code ?? err.message}`;
    }
    if (Date.now() > deadline) {
      throw await fail(`was not ready on ${baseUrl} within ${readyTimeoutMs} ms (${last})`);
    }
    await sleep(100);
  }

  return { baseUrl, dir, logs, stop };
}

/** Headless Debian Chromium (see scripts/ensure-chromium). */
export function launchBrowser() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      // Without these Chromium phones home at start, and here such connections are refused.
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * What the chat and jobs tests share: the mock LLM (`delayMs` between words), promptops
 * with an admin whose password is `adminPassword`, and a browser. `signIn()` opens a page
 * signed in as that admin and collects console errors, page errors and every dialog that
 * `allowDialog` does not accept as expected. Returns { mock, server, browser, signIn, stop }.
 */
export async function startSignedInStack({ delayMs, adminPassword, allowDialog = () => false }) {
  const mock = await startMockLlm({ delayMs });
  const server = await startPromptops({
    env: {
      PROMPTOPS_BOOTSTRAP_ADMIN_PASSWORD: adminPassword,
      PROMPTOPS_BCRYPT_COST: '4',
      PROMPTOPS_LLM_BASE_URL: mock.base,
    },
  });
  const browser = await launchBrowser();
  async function signIn(contextOptions = {}) {
    const context = await browser.newContext(contextOptions);
    const page = await context.newPage();
    const problems = [];
    page.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
    page.on('pageerror', (e) => problems.push(e.message));
    page.on('dialog', (d) => {
      if (!allowDialog(d)) problems.push(`a ${d.type()} opened: ${d.message()}`);
      d.accept();
    });
    await signInOn(page, server.baseUrl, 'admin', adminPassword);
    return { context, page, problems };
  }
  async function stop() {
    await browser.close();
    await server.stop();
    await mock.stop();
  }
  return { mock, server, browser, signIn, stop };
}

/** Signs `page` in through the login form; resolves on the page that follows (chat). */
export async function signInOn(page, baseUrl, username, password) {
  await page.goto(`${baseUrl}/login`);
  await page.getByLabel('User name').fill(username);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(/\/$|\/c\/\d+$/);
}

/** Full-page PNG into $PROMPTOPS_SCREENSHOT_DIR (default <repo>/target/screenshots); returns the path. */
export async function screenshot(page, name) {
  const dir = process.env.PROMPTOPS_SCREENSHOT_DIR || path.join(repoRoot, 'target', 'screenshots');
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/**
 * Starts the tests' scripted mock LLM (`cargo test` builds it as examples/mock_llm next to
 * the promptops binary): it echoes each question back word by word, `delayMs` apart.
 * Returns { base, stop() } where base is the OpenAI-style base URL.
 */
export async function startMockLlm({ delayMs = 60, mode = 'echo' } = {}) {
  return startExample('mock_llm', { MOCK_LLM_DELAY_MS: String(delayMs), MOCK_LLM_MODE: mode });
}

/** The stub Jira/Confluence (examples/stub_atlassian); `base` is its URL. */
export async function startStubAtlassian() {
  return startExample('stub_atlassian', {});
}

/** An example program that prints its URL on its first stdout line. */
async function startExample(name, env) {
  const bin = path.join(path.dirname(path.resolve(process.env.PROMPTOPS_BIN ?? '')), 'examples', name);
  const child = spawn(bin, [], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const [line] = await Promise.race([
    once(createInterface({ input: child.stdout }), 'line'),
    once(child, 'error').then(([err]) => Promise.reject(new Error(`cannot start ${bin}: ${err.message}`))),
    sleep(10_000).then(() => Promise.reject(new Error(`${bin} printed no URL within 10 s`))),
  ]);
  return {
    base: line.trim(),
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
    },
  };
}

/**
 * mcp-atlassian (scripts/mcp-test-env, installed once into the cache) in front of `jiraUrl`.
 * Returns { url, stop() }.
 */
export async function startMcpAtlassian(jiraUrl) {
  const port = await freePort();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'promptops-mcp-'));
  const script = path.join(repoRoot, 'scripts', 'mcp-test-env');
  const child = spawn(script, ['start-atlassian', jiraUrl, String(port), path.join(dir, 'mcp-atlassian.log')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [line] = await Promise.race([
    once(createInterface({ input: child.stdout }), 'line'),
    sleep(90_000).then(() => Promise.reject(new Error('mcp-atlassian did not start within 90 s'))),
  ]);
  const pid = Number(line.trim());
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    stop: async () => {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // already gone
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
