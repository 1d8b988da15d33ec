// End-to-end check of the dashboard that `syncline run` serves, in headless
// Chromium. A Rust integration test starts a real pipeline and runs this
// script once per scenario; it reads everything from the environment:
//
//   DASHBOARD_URL       the dashboard, e.g. http://127.0.0.1:PORT/ (required)
//   STEP                overview: the graph shows a node with a state for every
//                       component of EXPECT_COMPONENTS (and the table a row);
//                       replay: find EXPECT_DEAD_LETTER in the dead-letter
//                       browser, click its Replay button, confirm, and wait
//                       until its row shows it replayed (required)
//   DASHBOARD_TOKEN     a bearer token, typed into the sign-in form if the page
//                       asks for one (an operator token for STEP=replay)
//   EXPECT_COMPONENTS   comma-separated component names (STEP=overview)
//   EXPECT_DEAD_LETTER  <partition>-<offset> of a dead letter (STEP=replay)
//   EXPECT_DEAD_LETTER_COMPONENT  its component, needed only when another
//                       component's dead-letter topic has the same partition-offset
//   SCREENSHOT          where to save a full-page PNG when a check fails
//   CHROMIUM            the browser (default /usr/bin/chromium: Debian's package)
//   PLAYWRIGHT_CORE     the playwright-core package directory (default
//                       $HOME/.cache/syncline/node/node_modules/playwright-core)
//
// playwright-core is not a dependency of the project; install it outside the
// checkout, with no browser download (the script drives Debian's chromium):
//   apt-get install -y chromium
//   mkdir -p ~/.cache/syncline/node && cd ~/.cache/syncline/node && npm install playwright-core@1.64.1
// It is loaded by absolute path from PLAYWRIGHT_CORE, because an ES module's
// import ignores NODE_PATH. Run: STEP=overview DASHBOARD_URL=... node tests/dashboard/e2e.mjs
//
// Prints one line per check ("ok   ..." or "FAIL ..."); exits 0 when every
// check passed, 1 when one failed (after the screenshot), 2 on bad arguments.
// Every wait is on a selector or a condition, 30 s each; no fixed sleeps.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const WAIT_MS = 30000;
const STATES = ['starting', 'running', 'retrying', 'paused', 'stopped', 'done'];
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const env = process.env;
const tid = (id) => `[data-testid="${id.replace(/["\\]/g, '\\$&')}"]`;

class CheckFailed extends Error {}

function ok(text) {
  console.log(`ok   ${text}`);
}

function usage(text) {
  console.log(`FAIL usage: ${text}`);
  process.exit(2);
}

function loadPlaywright() {
  const dir = env.PLAYWRIGHT_CORE || path.join(os.homedir(), '.cache/syncline/node/node_modules/playwright-core');
  try {
    return createRequire(import.meta.url)(dir);
  } catch (e) {
    usage(`cannot load playwright-core from ${dir} (${e.code || e.message}); install it with: `
      + 'mkdir -p ~/.cache/syncline/node && cd ~/.cache/syncline/node && npm install playwright-core@1.64.1, or set PLAYWRIGHT_CORE');
  }
  return null;
}

// Waits for the page to show the pipeline, signing in first when it asks.
async function openDashboard(page, url) {
  try {
    await page.goto(url, { waitUntil: 'domcontentloaded', timeout: WAIT_MS });
  } catch (e) {
    throw new CheckFailed(`cannot open ${url}: ${e.message.split('\n')[0]}`);
  }
  ok(`opened ${url}`);
  const first = await waitFor(page, 'the pipeline graph or the sign-in form', () => {
    const signIn = document.querySelector('[data-testid="sign-in"]');
    if (signIn && signIn.open) return 'sign-in';
    if (document.querySelector('[data-testid^="node-"]')) return 'graph';
    return null;
  });
  if (first === 'sign-in') {
    if (!env.DASHBOARD_TOKEN) throw new CheckFailed('the API asks for a token and DASHBOARD_TOKEN is not set');
    await page.fill(tid('token-input'), env.DASHBOARD_TOKEN);
    await page.click(tid('token-submit'));
    const after = await waitFor(page, 'the pipeline graph after signing in', () => {
      const signIn = document.querySelector('[data-testid="sign-in"]');
      if (signIn && signIn.open) {
        const message = signIn.querySelector('#signin-message').textContent;
        if (message.includes('refused')) return `refused: ${message}`;
        return null;
      }
      return document.querySelector('[data-testid^="node-"]') ? 'graph' : null;
    });
    if (after !== 'graph') throw new CheckFailed(`the API refused DASHBOARD_TOKEN (${after})`);
    ok('signed in with DASHBOARD_TOKEN');
  } else {
    ok('the API asked for no token');
  }
  const header = await waitFor(page, 'the header (pipeline name and version)', () => {
    const name = document.querySelector('[data-testid="pipeline-name"]').textContent;
    const version = document.querySelector('[data-testid="version"]').textContent;
    const refreshed = document.querySelector('[data-testid="last-refresh"]').textContent;
    if (name === '…' || !version || refreshed === 'not refreshed yet') return null;
    return `${name}, ${version}, ${document.querySelector('[data-testid="health"]').textContent}, ${refreshed}`;
  });
  ok(`header: ${header}`);
}

// page.waitForFunction with a message saying what was awaited.
async function waitFor(page, what, fn, arg) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 100 });
    return await handle.jsonValue();
  } catch (e) {
    if (e.name === 'TimeoutError') throw new CheckFailed(`waited ${WAIT_MS / 1000} s for ${what}`);
    throw e;
  }
}

async function overview(page) {
  const names = (env.EXPECT_COMPONENTS || '').split(',').map((n) => n.trim()).filter(Boolean);
  if (!names.length) usage('STEP=overview needs EXPECT_COMPONENTS (comma-separated component names)');
  for (const name of names) {
    const seen = await waitFor(page, `graph node node-${name} with a state`, ([testid, states]) => {
      const node = [...document.querySelectorAll('[data-testid]')].find((n) => n.getAttribute('data-testid') === testid);
      if (!node) return null;
      const st = node.getAttribute('data-state');
      return states.includes(st) ? st : null;
    }, [`node-${name}`, STATES]).catch(async (e) => {
      const st = await page.getAttribute(tid(`node-${name}`), 'data-state', { timeout: 1000 }).catch(() => null);
      if (st === 'remote') throw new CheckFailed(`node-${name} is shown as run by another instance: this process does not run it`);
      if (st) throw new CheckFailed(`node-${name} is in the graph but has no state (data-state="${st}")`);
      const shown = await page.$$eval('[data-testid^="node-"]', (els) => els.map((n) => n.getAttribute('data-testid').slice(5)));
      throw new CheckFailed(`no graph node node-${name} (the graph shows: ${shown.join(', ') || 'nothing'})`);
    });
    ok(`graph node ${name}: ${seen}`);
    const row = await waitFor(page, `table row component-${name} with its state badge`, (n) => {
      const badge = [...document.querySelectorAll('[data-testid]')].find((b) => b.getAttribute('data-testid') === `state-${n}`);
      return badge && badge.closest(`tr`) && badge.dataset.state !== 'unknown' ? badge.textContent : null;
    }, name);
    ok(`table row ${name}: ${row}`);
  }
}

async function replay(page) {
  const target = env.EXPECT_DEAD_LETTER || '';
  const match = /^(\d+)-(\d+)$/.exec(target);
  if (!match) usage('STEP=replay needs EXPECT_DEAD_LETTER=<partition>-<offset>');
  const [, partition, offset] = match;
  const component = env.EXPECT_DEAD_LETTER_COMPONENT || '';
  const rowSelector = tid(`dead-letter-${target}`) + (component ? `[data-component="${component.replace(/["\\]/g, '\\$&')}"]` : '');

  // The list loads with the page; if the dead letter is not among the first
  // page of matches, narrow the filter to its partition and offset.
  const listed = await waitFor(page, 'the dead-letter list', () => {
    const summary = document.querySelector('[data-testid="dead-letters-summary"]').textContent;
    return /dead letters? \(|Could not list/.test(summary) ? summary : null;
  });
  if (listed.startsWith('Could not list')) throw new CheckFailed(listed);
  if (!(await page.$(rowSelector))) {
    if (component) await page.selectOption(tid('dl-component'), component);
    await page.fill(tid('dl-partition'), partition);
    await page.fill(tid('dl-from-offset'), offset);
    await page.fill(tid('dl-to-offset'), offset);
    await page.click(tid('dl-apply'));
    ok(`dead letter ${target} not in the first page (${listed}); filtered to partition ${partition}, offset ${offset}`);
  }
  await waitFor(page, `dead-letter row dead-letter-${target}`, (sel) => Boolean(document.querySelector(sel)), rowSelector)
    .catch(async (e) => {
      const summary = await page.textContent(tid('dead-letters-summary')).catch(() => '');
      const empty = await page.$('.empty-row');
      throw new CheckFailed(`${e.message}; the list shows: ${empty ? 'no dead letters match' : summary}`);
    });
  const rows = await page.$$eval(rowSelector, (els) => els.map((r) => ({ component: r.dataset.component, replayed: r.dataset.replayed, topic: r.dataset.topic })));
  if (rows.length > 1) {
    throw new CheckFailed(`${rows.length} dead letters at ${target} (components ${rows.map((r) => r.component).join(', ')}): set EXPECT_DEAD_LETTER_COMPONENT`);
  }
  const [row] = rows;
  ok(`dead letter ${target} listed (component ${row.component}, topic ${row.topic}, replayed=${row.replayed})`);
  if (row.replayed === 'true') throw new CheckFailed(`dead letter ${target} shows replayed before the test replayed it`);

  const button = page.locator(`${rowSelector} ${tid(`replay-${target}`)}`);
  if (!(await button.count())) {
    const why = await page.locator(`${rowSelector} ${tid(`not-replayable-${target}`)}`).getAttribute('title', { timeout: 1000 }).catch(() => null);
    throw new CheckFailed(`dead letter ${target} has no Replay button${why ? `: ${why}` : ''}`);
  }
  await button.click({ timeout: WAIT_MS });
  await page.locator(tid('confirm-ok')).waitFor({ state: 'visible', timeout: WAIT_MS });
  ok(`confirm dialog: ${await page.textContent('#confirm-title')}`);
  await page.click(tid('confirm-ok'));

  const outcome = await waitFor(page, `dead letter ${target} to show replayed`, (sel) => {
    const error = document.querySelector('[data-testid="notice-error"]');
    if (error) return `error: ${error.textContent}`;
    const r = document.querySelector(sel);
    return r && r.dataset.replayed === 'true' ? 'replayed' : null;
  }, rowSelector);
  if (outcome !== 'replayed') throw new CheckFailed(`the replay failed: ${outcome.replace(/×$/, '')}`);
  const said = await page.locator('[data-testid="notice-ok"], [data-testid="notice-info"]').last().textContent({ timeout: 1000 }).catch(() => '');
  ok(`dead letter ${target} shows replayed${said ? ` (${said.replace(/×$/, '')})` : ''}`);
}

async function main() {
  const url = env.DASHBOARD_URL;
  const step = env.STEP;
  if (!url) usage('DASHBOARD_URL is not set');
  if (!['overview', 'replay'].includes(step)) usage(`STEP must be overview or replay (got ${step || 'nothing'})`);
  const executablePath = env.CHROMIUM || '/usr/bin/chromium';
  if (!fs.existsSync(executablePath)) usage(`no browser at ${executablePath}: apt-get install -y chromium, or set CHROMIUM`);
  const { chromium } = loadPlaywright();

  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'syncline-e2e-'));
  let context = null;
  let page = null;
  const pageErrors = [];
  const giveUp = setTimeout(() => fail(new CheckFailed('the whole run took over 5 minutes')), 5 * 60 * 1000);
  giveUp.unref();

  async function fail(e) {
    console.log(`FAIL ${step}: ${e instanceof CheckFailed ? e.message : (e && e.stack) || e}`);
    if (page) {
      const banner = await page.locator(tid('error-banner')).textContent({ timeout: 1000 }).catch(() => '');
      if (banner) console.log(`     the page's error banner: ${banner}`);
      if (env.SCREENSHOT) {
        try {
          await page.screenshot({ path: env.SCREENSHOT, fullPage: true, timeout: 10000 });
          console.log(`     screenshot: ${env.SCREENSHOT}`);
        } catch (err) {
          console.log(`     no screenshot: ${err.message}`);
        }
      }
    }
    for (const err of pageErrors) console.log(`     page error: ${err}`);
    await close();
    process.exit(1);
  }

  async function close() {
    if (context) await context.close().catch(() => {});
    context = null;
    fs.rmSync(profile, { recursive: true, force: true });
  }

  try {
    // Playwright passes the profile as --user-data-dir (it refuses that flag in args).
    context = await chromium.launchPersistentContext(profile, {
      executablePath, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 800 }, timeout: WAIT_MS,
    });
    ok(`started ${executablePath} (headless, profile ${profile})`);
    page = context.pages()[0] || await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await openDashboard(page, url);
    if (step === 'overview') await overview(page);
    else await replay(page);
    if (pageErrors.length) throw new CheckFailed(`the page threw ${pageErrors.length} uncaught error(s)`);
    ok('no uncaught errors in the page');
  } catch (e) {
    await fail(e);
  }
  await close();
  console.log(`${step}: every check passed`);
  process.exit(0);
}

main();
