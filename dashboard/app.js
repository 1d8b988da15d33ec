// The syncline dashboard: one ES2020 module, no dependencies, no build step.
// `syncline run` serves it at / (this folder at /dashboard/) beside the
// management API it reads, docs/openapi.yaml, its only contract. Text from the
// API is always set with textContent, never parsed as HTML; charts and the
// graph are SVG drawn here; no style attribute is written, so a strict
// Content-Security-Policy (self only) holds. dashboard/README.md has the
// layout, the test hooks and the headers the server should send.

const ROOT = new URL('../', import.meta.url); // this file is <root>/dashboard/app.js
const POLL_MS = 2000;
const WINDOW_MS = 10 * 60 * 1000; // the history the API keeps
const REQUEST_TIMEOUT_MS = 10000;
const TOKEN_KEY = 'syncline.dashboard.token';
const STATES = ['starting', 'running', 'retrying', 'paused', 'stopped', 'done'];
const CDC_TYPES = new Set(['postgres_cdc', 'mysql_cdc']);

const state = {
  version: null, // Version
  pipeline: null, // Pipeline
  layout: null, // the graph's columns and edges, computed once per pipeline
  components: new Map(), // name -> ComponentStatus
  ready: null, // Readiness, or null when unknown
  selected: null, // component name
  history: null, // { name, data: History }
  historyError: null,
  chartsVisible: true,
  lastOk: null, // Date of the last successful refresh
  apiError: null, // banner text
  needToken: false,
  readOnly: false, // a 403 said this token may only read
  busy: new Set(), // component names with an action under way
  dl: {
    applied: null, // the filter of the list shown
    list: null, truncated: false, loading: false, error: null, loadedAt: 0,
    seq: 0, busy: false, selected: new Set(), lastTotal: null,
  },
};

// ---------------------------------------------------------------- DOM helpers

const $ = (id) => document.getElementById(id);
const SVG_NS = 'http://www.w3.org/2000/svg';

function el(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

function svg(tag, props, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

function build(node, props, children) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// Re-rendering a list keeps keyboard focus on the control with the same test id.
function keepFocus(container, render) {
  const active = document.activeElement;
  const id = active && container.contains(active) ? active.getAttribute('data-testid') : null;
  render();
  if (id) {
    const again = container.querySelector(`[data-testid="${CSS.escape(id)}"]`);
    if (again) again.focus();
  }
}

// ----------------------------------------------------------------- formatting

const intFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

function fmtInt(n) {
  return n === null || n === undefined ? '—' : intFormat.format(n);
}

function fmtCompact(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  const a = Math.abs(n);
  if (a >= 1e9) return `${(n / 1e9).toFixed(1)}G`;
  if (a >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  if (a >= 100 || Number.isInteger(n)) return intFormat.format(Math.round(n));
  if (a >= 10) return n.toFixed(1);
  return n.toFixed(2).replace(/\.?0+$/, '');
}

function fmtBytes(b) {
  if (b === null || b === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = b;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return '—';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
}

// The same, shorter, for table cells: 850 ms, 4.2 s, 5m 12s, 3h 05m, 2d 4h.
function fmtShort(s) {
  if (s === null || s === undefined) return '—';
  if (s < 60) return fmtSeconds(s);
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad2(Math.round(s % 60))}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad2(Math.round((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${Math.round((s % 86400) / 3600)}h`;
}

function fmtMs(ms) {
  return ms === null || ms === undefined ? '—' : fmtSeconds(ms / 1000);
}

const pad2 = (n) => String(n).padStart(2, '0');

function fmtClock(d) {
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

// Local time; the date too unless it is today.
function fmtWhen(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  const date = `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
  return sameDay ? fmtClock(d) : `${date} ${fmtClock(d)}`;
}

function fmtAgo(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  return fmtSeconds(Math.max(0, (Date.now() - t) / 1000));
}

function plural(n, word) {
  return `${fmtInt(n)} ${word}${n === 1 ? '' : 's'}`;
}

function clip(text, max) {
  return text.length <= max ? text : `${text.slice(0, Math.max(1, max - 1))}…`;
}

// ------------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(status, message, serverMessage) {
    super(message);
    this.status = status; // 0: no answer
    this.serverMessage = serverMessage; // the Error body's text, when there was one
  }
}

function token() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
}

// Every call goes through here: the bearer token when there is one, a JSON
// body (`{}` at least) on every POST, a timeout, and a 401 opens the sign-in form.
async function api(path, { method = 'GET', body, accept = [] } = {}) {
  const headers = { Accept: 'application/json' };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body === undefined ? {} : body);
  }
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
  init.signal = abort.signal;
  let response;
  let text;
  try {
    response = await fetch(new URL(path, ROOT), init);
    text = await response.text();
  } catch (e) {
    throw new ApiError(0, abort.signal.aborted
      ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : 'no answer (is syncline running?)');
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (response.ok || accept.includes(response.status)) {
    if (data === null && text) throw new ApiError(response.status, 'the answer is not JSON (is this the syncline API?)');
    return { status: response.status, data };
  }
  const serverMessage = data && typeof data.error === 'string' && data.error ? data.error : null;
  const message = serverMessage || `HTTP ${response.status} ${response.statusText}`.trim();
  if (response.status === 401) askForToken(message);
  throw new ApiError(response.status, message, serverMessage);
}

const componentPath = (name, tail = '') => `api/v1/components/${encodeURIComponent(name)}${tail}`;

// ------------------------------------------------------------------ sign-in

function askForToken(message) {
  state.needToken = true;
  stopPolling();
  const dialog = $('signin');
  $('signin-message').textContent = token()
    ? `The API refused this token (${message}). Enter another one.`
    : 'This syncline API needs a bearer token (api.tokens in the pipeline file).';
  if (!dialog.open) {
    if ($('confirm').open) $('confirm').close('cancel');
    dialog.showModal();
  }
  $('token-input').focus();
  renderAuthButton();
}

function signIn(event) {
  event.preventDefault();
  const value = $('token-input').value.trim();
  if (!value) return;
  try { sessionStorage.setItem(TOKEN_KEY, value); } catch { /* private mode: the token lives for this page only */ }
  $('token-input').value = '';
  $('signin').close();
  state.needToken = false;
  state.readOnly = false;
  renderAuthButton();
  reloadEverything();
}

function signOut() {
  try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing stored */ }
  state.readOnly = false;
  renderAuthButton();
  reloadEverything();
}

function renderAuthButton() {
  const button = $('sign-in-out');
  if (token() && !state.needToken) {
    button.textContent = 'Sign out';
    button.hidden = false;
  } else if (state.needToken) {
    button.textContent = 'Sign in';
    button.hidden = false;
  } else {
    button.hidden = true;
  }
}

function onAuthButton() {
  if (token() && !state.needToken) signOut();
  else askForToken('');
}

function reloadEverything() {
  state.pipeline = null;
  state.version = null;
  state.dl.applied = null;
  schedule(0);
}

// ------------------------------------------------------------------- polling

let pollTimer = 0;
let polling = false;

function schedule(ms) {
  clearTimeout(pollTimer);
  pollTimer = 0;
  if (document.hidden || state.needToken) return;
  pollTimer = setTimeout(poll, ms);
}

function stopPolling() {
  clearTimeout(pollTimer);
  pollTimer = 0;
}

async function poll() {
  if (polling) return;
  polling = true;
  const started = Date.now();
  try {
    await refresh();
  } finally {
    polling = false;
    schedule(Math.max(250, POLL_MS - (Date.now() - started)));
  }
}

async function loadStatic() {
  const [version, pipeline] = await Promise.allSettled([api('api/v1/version'), api('api/v1/pipeline')]);
  if (version.status === 'fulfilled') state.version = version.value.data;
  if (pipeline.status === 'rejected') throw pipeline.reason;
  state.pipeline = pipeline.value.data;
  state.layout = layoutPipeline(state.pipeline);
  drawGraph();
  fillComponentFilter();
  if (!state.dl.applied) {
    try {
      state.dl.applied = readFilter();
    } catch {
      $('dl-filter').reset(); // a value the browser kept from before is not valid now
      state.dl.applied = readFilter();
    }
    loadDeadLetters();
  }
}

async function refresh() {
  try {
    if (!state.pipeline) await loadStatic();
  } catch (e) {
    apiFailed(e);
    renderHeader();
    return;
  }
  const wanted = state.selected && isLocal(state.selected) && state.chartsVisible ? state.selected : null;
  const calls = [api('api/v1/components'), api('readyz', { accept: [503] })];
  if (wanted) calls.push(api(componentPath(wanted, '/history')));
  const [components, ready, recent] = await Promise.allSettled(calls);
  if (components.status === 'fulfilled') {
    applyComponents(components.value.data);
    state.lastOk = new Date();
    state.apiError = null;
  } else {
    apiFailed(components.reason);
  }
  state.ready = ready.status === 'fulfilled' ? ready.value.data : null;
  if (recent) applyHistory(wanted, recent);
  // the first selection is made by applyComponents: its charts need not wait a poll
  if (state.selected && state.selected !== wanted && isLocal(state.selected) && state.chartsVisible) loadHistory(state.selected);
  renderAll();
}

function apiFailed(e) {
  if (e.status === 401) return; // the sign-in form says it
  const where = ROOT.href;
  if (e.status === 0 || e.status >= 500) {
    state.apiError = `The syncline API at ${where} cannot be reached: ${e.message}. Retrying every ${POLL_MS / 1000} s.`;
  } else {
    state.apiError = `The syncline API at ${where} refused the dashboard: ${e.message}`;
  }
}

function applyHistory(name, result) {
  if (name !== state.selected) return;
  if (result.status === 'fulfilled') {
    state.history = { name, data: result.value.data };
    state.historyError = null;
  } else if (result.reason.status !== 401) {
    state.historyError = result.reason.message;
  }
}

async function loadHistory(name) {
  const [result] = await Promise.allSettled([api(componentPath(name, '/history'))]);
  applyHistory(name, result);
  renderCharts();
}

function applyComponents(list) {
  state.components = new Map(list.map((c) => [c.name, c]));
  // A component the pipeline graph does not know: the graph is stale.
  const known = new Set(state.pipeline.components.map((c) => c.name));
  if (!state.selected || !known.has(state.selected)) state.selected = initialSelection(list);
  if (list.some((c) => !known.has(c.name))) state.pipeline = null;
  // New dead letters: show them (at most every 5 s; a replay in progress refreshes on its own).
  const total = list.reduce((sum, c) => sum + c.counts.dead_lettered, 0);
  if (state.dl.lastTotal !== null && total !== state.dl.lastTotal && !state.dl.busy
      && Date.now() - state.dl.loadedAt > 5000 && state.dl.applied) {
    loadDeadLetters();
  }
  state.dl.lastTotal = total;
}

function initialSelection(list) {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get('component');
  if (fromHash && state.pipeline.components.some((c) => c.name === fromHash)) return fromHash;
  const troubled = list.find((c) => c.state === 'stopped' || c.state === 'retrying');
  return (troubled || list[0] || state.pipeline.components[0] || {}).name || null;
}

function isLocal(name) {
  const node = state.pipeline && state.pipeline.components.find((c) => c.name === name);
  return Boolean(node && node.local);
}

function select(name) {
  if (state.selected === name) return;
  state.selected = name;
  state.history = null;
  state.historyError = null;
  history.replaceState(null, '', `#component=${encodeURIComponent(name)}`);
  renderAll();
  if (isLocal(name)) loadHistory(name);
}

function renderAll() {
  renderHeader();
  updateGraph();
  renderComponents();
  renderSnapshots();
  renderDetail();
  renderCharts();
}

// -------------------------------------------------------------------- header

function renderHeader() {
  const name = (state.version && state.version.pipeline) || (state.pipeline && state.pipeline.name) || 'dashboard';
  $('pipeline-name').textContent = name;
  $('pipeline-name').title = state.pipeline ? `Pipeline file: ${state.pipeline.file}` : '';
  $('version').textContent = state.version ? `syncline ${state.version.version}` : '';

  const health = $('health');
  let ready = 'unknown';
  let text = 'health unknown';
  let title = '';
  if (state.apiError && state.ready === null) {
    ready = 'unreachable';
    text = 'API unreachable';
  } else if (state.ready) {
    ready = String(state.ready.ready);
    if (state.ready.ready) {
      text = 'Ready';
      title = 'Every component this process runs is running.';
    } else {
      const parts = state.ready.not_running.map((c) => `${c.name} ${c.state}`);
      text = `Not ready: ${clip(parts.join(', '), 60)}`;
      title = `Not running: ${parts.join(', ')}`;
    }
  }
  health.dataset.ready = ready;
  health.textContent = text;
  health.title = title;

  $('refreshed').textContent = state.lastOk
    ? `${state.apiError ? 'Last good refresh' : 'Updated'} ${fmtClock(state.lastOk)}` : 'not refreshed yet';
  $('refreshed').title = state.lastOk ? state.lastOk.toString() : '';

  const banner = $('banner');
  banner.hidden = !state.apiError;
  banner.textContent = state.apiError || '';
  document.body.classList.toggle('stale', Boolean(state.apiError));
  document.title = `${state.ready && !state.ready.ready ? '⚠ ' : ''}${name} · syncline`;
}

// --------------------------------------------------------------------- graph

const COMPONENT_H = 46;
const TOPIC_H = 26;
const WAYPOINT_H = 4; // the slot a long edge takes in a column it crosses
const NODE_GAP = 12;
const GRAPH_TOP = 24;
const GRAPH_PAD = 10;
const MIN_COLUMN_W = 180;
const graphRefs = { nodes: new Map(), edges: [] };

// Columns by longest path from the sources (sources, topics, processors,
// topics, ..., sinks), sinks aligned in the last column; rows ordered by the
// mean position of their neighbours so arrows cross less.
function layoutPipeline(pipeline) {
  const nodes = new Map();
  const edges = [];
  const add = (id, props) => {
    if (!nodes.has(id)) nodes.set(id, { id, preds: [], succs: [], layer: 0, order: nodes.size, ...props });
    return nodes.get(id);
  };
  const link = (a, b) => {
    if (a.succs.includes(b)) return;
    a.succs.push(b);
    b.preds.push(a);
    edges.push([a, b]);
  };
  for (const c of pipeline.components) add(`c:${c.name}`, { kind: 'component', name: c.name, comp: c });
  for (const c of pipeline.components) {
    const node = nodes.get(`c:${c.name}`);
    for (const t of c.topics_in) link(add(`t:${t}`, { kind: 'topic', name: t }), node);
    for (const t of c.topics_out) link(node, add(`t:${t}`, { kind: 'topic', name: t }));
  }
  const all = [...nodes.values()];
  for (let pass = 0; pass < all.length; pass += 1) { // bounded: a cycle stops here
    let changed = false;
    for (const [a, b] of edges) {
      if (b.layer < a.layer + 1) { b.layer = a.layer + 1; changed = true; }
    }
    if (!changed) break;
  }
  // A topic no component of this pipeline writes sits just before its first reader.
  for (const n of all) {
    if (n.kind === 'topic' && !n.preds.length && n.succs.length) {
      n.layer = Math.max(0, Math.min(...n.succs.map((s) => s.layer)) - 1);
    }
  }
  const last = Math.max(0, ...all.map((n) => n.layer));
  for (const n of all) {
    if (n.kind === 'component' && n.comp.role === 'sink' && !n.succs.length) n.layer = last;
  }
  // Columns: the layers in use. An edge longer than one column gets a waypoint
  // in each column it crosses, so it runs between the nodes, not behind them.
  const layers = [...new Set(all.map((n) => n.layer))].sort((a, b) => a - b);
  const columnOf = new Map(layers.map((l, i) => [l, i]));
  for (const n of all) {
    n.col = columnOf.get(n.layer);
    n.preds = [];
    n.succs = [];
  }
  const routes = edges.map(([a, b]) => {
    const route = [a];
    for (let col = a.col + 1; col < b.col; col += 1) {
      route.push({ id: `w:${a.id}>${b.id}@${col}`, kind: 'waypoint', col, preds: [], succs: [], order: a.order + 0.5 });
    }
    route.push(b);
    for (let i = 1; i < route.length; i += 1) {
      route[i - 1].succs.push(route[i]);
      route[i].preds.push(route[i - 1]);
    }
    return { a, b, route };
  });
  const placed = [...all, ...routes.flatMap((r) => r.route.filter((n) => n.kind === 'waypoint'))];
  const columns = layers.map((_, i) => placed.filter((n) => n.col === i).sort((a, b) => a.order - b.order));
  columns.forEach((col) => col.forEach((n, j) => { n.row = j; }));
  const centre = (n, side) => {
    const near = n[side];
    if (!near.length) return (n.row + 0.5) / columns[n.col].length;
    return near.reduce((sum, m) => sum + (m.row + 0.5) / columns[m.col].length, 0) / near.length;
  };
  for (let sweep = 0; sweep < 4; sweep += 1) {
    const down = sweep % 2 === 0;
    const order = down ? columns.slice(1) : columns.slice(0, -1).reverse();
    for (const col of order) {
      const keyed = col.map((n) => ({ n, k: centre(n, down ? 'preds' : 'succs') }));
      keyed.sort((a, b) => a.k - b.k || a.n.order - b.n.order);
      keyed.forEach(({ n }, j) => { n.row = j; });
      col.sort((a, b) => a.row - b.row);
    }
  }
  return { columns, routes };
}

function columnLabel(col) {
  const kinds = new Set(col.filter((n) => n.kind !== 'waypoint').map((n) => (n.kind === 'topic' ? 'topics' : `${n.comp.role}s`)));
  return ['sources', 'topics', 'processors', 'sinks'].filter((k) => kinds.has(k)).join(' · ');
}

function drawGraph() {
  const host = $('graph');
  graphRefs.nodes.clear();
  graphRefs.edges = [];
  if (!state.layout || !state.layout.columns.length) {
    host.replaceChildren(el('p', { class: 'muted pad', text: 'This pipeline has no components.' }));
    return;
  }
  const { columns, routes } = state.layout;
  const colW = Math.max(MIN_COLUMN_W, Math.floor((host.clientWidth || 1200) / columns.length));
  const width = colW * columns.length;
  const nodeW = Math.min(220, colW - 48);
  const heightOf = (n) => ({ topic: TOPIC_H, waypoint: WAYPOINT_H }[n.kind] || COMPONENT_H);
  const heights = columns.map((col) => col.reduce((s, n) => s + heightOf(n), 0) + NODE_GAP * (col.length - 1));
  const inner = Math.max(...heights);
  const height = GRAPH_TOP + inner + GRAPH_PAD * 2;
  columns.forEach((col, i) => {
    let y = GRAPH_TOP + GRAPH_PAD + (inner - heights[i]) / 2;
    for (const n of col) {
      Object.assign(n, { x: colW * i + (colW - nodeW) / 2, y, w: nodeW, h: heightOf(n) });
      y += n.h + NODE_GAP;
    }
  });

  const arrow = (id, cls) => svg('marker', {
    id, viewBox: '0 0 8 8', refX: 7, refY: 4, markerWidth: 7, markerHeight: 7, orient: 'auto',
  }, svg('path', { d: 'M0,0 L8,4 L0,8 z', class: cls }));
  const root = svg('svg', {
    width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `Pipeline graph: ${state.pipeline.components.length} components, ${state.pipeline.topics.length} topics`,
  }, svg('defs', {}, arrow('arrow', 'arrow'), arrow('arrow-hl', 'arrow-hl')));

  columns.forEach((col, i) => {
    root.append(svg('text', { class: 'col-label', x: colW * i + colW / 2, y: 15, 'text-anchor': 'middle' }, columnLabel(col)));
  });
  const edgeLayer = svg('g', { class: 'edges' });
  root.append(edgeLayer);
  for (const { a, b, route } of routes) {
    let d = `M${a.x + a.w},${a.y + a.h / 2}`;
    for (let i = 1; i < route.length; i += 1) {
      const from = route[i - 1];
      const to = route[i];
      const x1 = from.x + from.w;
      const y1 = from.y + from.h / 2;
      const x2 = to === b ? to.x - 1 : to.x;
      const y2 = to.y + to.h / 2;
      const dx = Math.max(18, Math.abs(x2 - x1) / 2);
      d += ` C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
      if (to.kind === 'waypoint') d += ` L${to.x + to.w},${y2}`;
    }
    const path = svg('path', { class: 'edge', d, 'marker-end': 'url(#arrow)' });
    edgeLayer.append(path);
    graphRefs.edges.push({ a, b, path });
  }
  const chars = Math.max(6, Math.floor((nodeW - 22) / 7));
  for (const col of columns) {
    for (const n of col) {
      if (n.kind === 'topic') root.append(topicNode(n, chars));
      else if (n.kind === 'component') root.append(componentNode(n, chars));
    }
  }
  host.replaceChildren(root);
  updateGraph();
}

function topicNode(n, chars) {
  return svg('g', { class: 'topic', 'data-testid': `topic-${n.name}`, transform: `translate(${n.x},${n.y})` },
    svg('title', {}, `topic ${n.name}`),
    svg('rect', { width: n.w, height: n.h, rx: n.h / 2 }),
    svg('text', { x: n.w / 2, y: n.h / 2 + 4, 'text-anchor': 'middle' }, clip(n.name, chars + 2)));
}

function componentNode(n, chars) {
  const c = n.comp;
  const name = svg('text', { class: 'name', x: 14, y: 19 }, clip(c.name, chars - 6));
  const sub = svg('text', { class: 'sub', x: 14, y: 36 }, c.type);
  const rate = svg('text', { class: 'sub', x: n.w - 8, y: 19, 'text-anchor': 'end' });
  const title = svg('title', {});
  const g = svg('g', {
    class: 'node', 'data-testid': `node-${c.name}`, 'data-state': c.local ? 'unknown' : 'remote',
    'data-local': String(c.local), 'data-role': c.role, tabindex: 0, role: 'button',
    transform: `translate(${n.x},${n.y})`,
    onclick: () => select(c.name),
    onkeydown: (e) => {
      if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); select(c.name); }
    },
  }, title, svg('rect', { class: 'box', width: n.w, height: n.h, rx: 6 }),
  svg('rect', { class: 'stripe', x: 4, y: 5, width: 4, height: n.h - 10, rx: 2 }), name, rate, sub);
  graphRefs.nodes.set(c.name, { g, sub, rate, title, node: n });
  return g;
}

function updateGraph() {
  for (const [name, ref] of graphRefs.nodes) {
    const c = ref.node.comp;
    const status = state.components.get(name);
    const st = c.local ? (status ? status.state : 'unknown') : 'remote';
    ref.g.setAttribute('data-state', st);
    const selected = name === state.selected;
    ref.g.classList.toggle('selected', selected);
    ref.g.setAttribute('aria-pressed', String(selected));
    const where = c.local ? st : 'run by another instance';
    ref.sub.textContent = `${c.type} · ${where}`;
    ref.rate.textContent = status ? `${fmtCompact(status.rates.records_out_per_s)}/s` : '';
    const label = `${c.role} ${name}, ${c.type}, ${where}`;
    ref.title.textContent = status && status.last_error && (st === 'stopped' || st === 'retrying')
      ? `${label}: ${status.last_error.message}` : label;
    ref.g.setAttribute('aria-label', label);
  }
  for (const { a, b, path } of graphRefs.edges) {
    const hl = (a.kind === 'component' && a.name === state.selected) || (b.kind === 'component' && b.name === state.selected);
    path.classList.toggle('hl', hl);
    path.setAttribute('marker-end', hl ? 'url(#arrow-hl)' : 'url(#arrow)');
  }
}

// ---------------------------------------------------------------- components

const rows = new Map(); // name -> row refs

// Consumer lag in records; a CDC source's bytes and seconds behind its log; a
// polling source's cursor age. `warn`: a second line, in amber.
function lagText(lag) {
  if (lag.records !== null && lag.records !== undefined) return { text: `${fmtCompact(lag.records)} rec`, warn: null };
  if (lag.source) {
    const parts = [];
    if (lag.source.bytes !== null) parts.push(fmtBytes(lag.source.bytes));
    if (lag.source.seconds !== null) parts.push(fmtShort(lag.source.seconds));
    return { text: parts.join(' · ') || '—', warn: null };
  }
  if (lag.cursor) {
    const age = lag.cursor.age_seconds === null ? '—' : `cursor ${fmtShort(lag.cursor.age_seconds)}`;
    return { text: age, warn: lag.cursor.last_poll_ok === false ? 'last poll failed' : null };
  }
  return { text: '—', warn: null };
}

function lagTitle(lag) {
  const lines = [];
  if (lag.records !== null) lines.push(`${fmtInt(lag.records)} records not yet processed`);
  for (const p of lag.partitions.slice(0, 12)) {
    lines.push(`${p.topic} [${p.partition}]: at ${fmtInt(p.position)} of ${fmtInt(p.end)}, lag ${fmtInt(p.lag)}`);
  }
  if (lag.partitions.length > 12) lines.push(`… ${lag.partitions.length - 12} more partitions`);
  if (lag.source) {
    lines.push(`log bytes behind: ${fmtBytes(lag.source.bytes)}; oldest unacknowledged change: ${fmtSeconds(lag.source.seconds)}`);
    if (lag.source.position) lines.push(`acknowledged position: ${lag.source.position}`);
  }
  if (lag.cursor) {
    lines.push(`cursor ${lag.cursor.value === null ? '(none)' : lag.cursor.value}, moved ${fmtSeconds(lag.cursor.age_seconds)} ago`);
    if (lag.cursor.last_poll_seconds_ago !== null) {
      lines.push(`last poll ${fmtSeconds(lag.cursor.last_poll_seconds_ago)} ago, ${lag.cursor.last_poll_ok ? 'ok' : 'failed'}`);
    }
  }
  return lines.join('\n');
}

function makeRow(c) {
  const name = c.name;
  const action = (verb, label, cls, handler) => el('button', {
    type: 'button', class: `small ${cls}`, 'data-testid': `${verb}-${name}`, hidden: true,
    'aria-label': `${label} ${name}`, onclick: handler, text: label,
  });
  const r = {
    tr: el('tr', { 'data-testid': `component-${name}`, 'data-local': String(c.local) }),
    badge: el('span', { class: 'badge', 'data-testid': `state-${name}` }),
    since: el('div', { class: 'muted small' }),
    error: el('div', { class: 'err', 'data-testid': `last-error-${name}`, hidden: true }),
    snapshot: el('div', { class: 'muted small', hidden: true }),
    restarts: el('td', { class: 'num' }),
    inRate: el('td', { class: 'num' }),
    outRate: el('td', { class: 'num' }),
    lag: el('td', { class: 'num', 'data-testid': `lag-${name}` }),
    dead: el('td', { class: 'num' }),
    pause: action('pause', 'Pause', 'ghost', () => operate(name, 'pause')),
    resume: action('resume', 'Resume', 'ghost', () => operate(name, 'resume')),
    restart: action('restart', 'Restart', 'warn', () => operate(name, 'restart')),
    resnapshot: action('resnapshot', 'Re-snapshot…', 'ghost', () => resnapshot(name)),
  };
  const nameButton = el('button', {
    type: 'button', class: 'link cname', text: name, 'aria-label': `Select ${name}`,
    onclick: () => select(name),
  });
  r.tr.append(
    el('td', {}, nameButton, el('div', { class: 'ctype', text: c.type, title: `${c.role}, type ${c.type}` })),
    el('td', {}, r.badge, r.since, r.error, r.snapshot),
    r.restarts, r.inRate, r.outRate, r.lag, r.dead,
    el('td', { class: 'actions' }, r.pause, r.resume, r.restart, r.resnapshot),
  );
  r.tr.addEventListener('click', (e) => {
    if (!e.target.closest('button, a, input')) select(name);
  });
  return r;
}

function renderComponents() {
  const body = $('components-body');
  if (!state.pipeline) return;
  const names = state.pipeline.components.map((c) => c.name);
  for (const name of [...rows.keys()]) {
    if (!names.includes(name)) { rows.get(name).tr.remove(); rows.delete(name); }
  }
  names.forEach((name, i) => {
    const node = state.pipeline.components[i];
    if (!rows.has(name)) rows.set(name, makeRow(node));
    const r = rows.get(name);
    if (body.children[i] !== r.tr) body.insertBefore(r.tr, body.children[i] || null);
    updateRow(r, node, state.components.get(name));
  });
  const remote = state.pipeline.components.filter((c) => !c.local).length;
  $('components-note').textContent = remote ? `${plural(remote, 'component')} run by other instances (dimmed)` : '';
}

function updateRow(r, node, s) {
  r.tr.classList.toggle('selected', node.name === state.selected);
  const st = node.local ? (s ? s.state : 'unknown') : 'remote';
  r.tr.dataset.state = st;
  r.badge.dataset.state = st;
  r.badge.textContent = node.local ? st : 'other instance';
  if (!s) {
    r.since.textContent = '';
    r.error.hidden = true;
    r.snapshot.hidden = true;
    for (const cell of [r.restarts, r.inRate, r.outRate, r.lag, r.dead]) cell.textContent = '';
    for (const b of [r.pause, r.resume, r.restart, r.resnapshot]) b.hidden = true;
    r.tr.title = node.local ? '' : 'This process does not run this component (see --component); its own instance serves its status.';
    return;
  }
  const age = (Date.now() - Date.parse(s.since)) / 1000;
  r.since.textContent = age < 2 ? 'just now' : `for ${fmtShort(age)}`;
  r.since.title = `since ${fmtWhen(s.since)}`;
  const showError = Boolean(s.last_error) && (s.state === 'stopped' || s.state === 'retrying');
  r.error.hidden = !showError;
  r.error.textContent = showError ? s.last_error.message : '';
  r.error.title = showError ? `${s.last_error.message}\n(at ${fmtWhen(s.last_error.at)})` : '';
  if (s.snapshot && s.snapshot.tables.length) {
    const done = s.snapshot.tables.filter((t) => t.done).length;
    r.snapshot.hidden = false;
    r.snapshot.textContent = `snapshot ${done}/${s.snapshot.tables.length}${s.snapshot.running ? '' : ' (finished)'}`;
  } else {
    r.snapshot.hidden = true;
  }
  r.restarts.textContent = fmtInt(s.restarts);
  r.inRate.textContent = fmtCompact(s.rates.records_in_per_s);
  r.outRate.textContent = fmtCompact(s.rates.records_out_per_s);
  const lag = lagText(s.lag);
  r.lag.replaceChildren(lag.text);
  if (lag.warn) r.lag.append(el('div', { class: 'warn-text small', text: lag.warn }));
  r.lag.title = lagTitle(s.lag);
  r.dead.replaceChildren(s.counts.dead_lettered > 0 && node.dead_letter_topic
    ? el('button', {
      type: 'button', class: 'link', 'data-testid': `dead-lettered-${node.name}`, text: fmtInt(s.counts.dead_lettered),
      title: `Show ${node.name}'s dead letters`, onclick: () => showDeadLettersOf(node.name),
    })
    : fmtInt(s.counts.dead_lettered));

  const busy = state.busy.has(node.name);
  r.pause.hidden = !['running', 'starting', 'retrying'].includes(s.state);
  r.resume.hidden = s.state !== 'paused';
  r.restart.hidden = false;
  r.resnapshot.hidden = !(node.role === 'source' && CDC_TYPES.has(node.type));
  for (const b of [r.pause, r.resume, r.restart, r.resnapshot]) {
    b.disabled = busy || state.readOnly;
    b.title = state.readOnly ? 'This token may only read.' : '';
  }
}

async function operate(name, verb) {
  const labels = { pause: 'Pause', resume: 'Resume', restart: 'Restart' };
  if (verb === 'restart') {
    const ok = await confirmDialog({
      title: `Restart ${name}?`,
      message: `${name} stops and starts again at once, from its stored position (a stopped or paused component too).`,
      ok: 'Restart', danger: true,
    });
    if (!ok) return;
  }
  state.busy.add(name);
  renderComponents();
  try {
    const { data } = await api(componentPath(name, `/${verb}`), { method: 'POST', body: {} });
    if (data && data.name === name) state.components.set(name, data);
    notice(`${labels[verb]} of ${name} accepted; the status shows its effect within seconds.`, 'ok');
  } catch (e) {
    actionFailed(e, `${labels[verb]} of ${name}`);
  } finally {
    state.busy.delete(name);
    renderAll();
    schedule(400);
  }
}

function actionFailed(e, what) {
  if (e.status === 401) return; // the sign-in form is open
  if (e.status === 403) {
    state.readOnly = true;
    notice(e.serverMessage || 'This token may only read: operator actions need an operator token.', 'error');
    renderComponents();
    renderDeadLetters();
    return;
  }
  notice(`${what} failed: ${e.message}`, 'error');
}

async function resnapshot(name) {
  const all = el('input', { type: 'radio', name: 'resnapshot-scope', value: 'all', checked: true, 'data-testid': 'rs-all' });
  const some = el('input', { type: 'radio', name: 'resnapshot-scope', value: 'some', 'data-testid': 'rs-some' });
  const list = el('input', {
    type: 'text', class: 'tables-input', placeholder: 'public.orders, public.customers',
    'aria-label': 'Tables, comma-separated', 'data-testid': 'rs-tables', autocomplete: 'off',
  });
  list.addEventListener('input', () => { some.checked = true; });
  const tables = () => list.value.split(',').map((t) => t.trim()).filter(Boolean);
  const body = el('div', {},
    el('p', { text: `${name} reads the tables again while it keeps streaming; sinks apply the rows exactly once, so a re-read changes nothing that is already right.` }),
    el('label', { class: 'choice' }, all, 'Every table of the source'),
    el('label', { class: 'choice' }, some, 'These tables (comma-separated, * patterns allowed):'),
    list);
  const ok = await confirmDialog({
    title: `Re-snapshot ${name}`, body, ok: 'Re-snapshot',
    validate: () => (some.checked && !tables().length ? 'Name at least one table, or choose every table.' : null),
  });
  if (!ok) return;
  state.busy.add(name);
  renderComponents();
  try {
    const request = some.checked ? { tables: tables() } : {};
    const { data } = await api(componentPath(name, '/snapshot'), { method: 'POST', body: request });
    const which = data.tables && data.tables.length ? ` (${data.tables.join(', ')})` : '';
    notice(`${name}: ${data.message}${which}`, 'ok');
  } catch (e) {
    actionFailed(e, `Re-snapshot of ${name}`);
  } finally {
    state.busy.delete(name);
    renderAll();
    schedule(400);
  }
}

// ----------------------------------------------------------------- snapshots

function renderSnapshots() {
  const withSnapshot = [...state.components.values()].filter((c) => c.snapshot && c.snapshot.tables.length);
  const section = $('snapshots');
  section.hidden = !withSnapshot.length;
  $('snapshots-body').replaceChildren(...withSnapshot.map((c) => {
    const { running, tables } = c.snapshot;
    const done = tables.filter((t) => t.done).length;
    return el('div', { class: 'snap', 'data-testid': `snapshot-${c.name}`, 'data-running': String(running) },
      el('div', { class: 'snap-head' },
        el('strong', { text: c.name }),
        el('span', { class: 'muted', text: `${running ? 'running' : 'finished'} · ${done}/${tables.length} tables done` })),
      el('div', { class: 'snap-table' }, tables.map((t) => snapshotTable(c.name, t))));
  }));
}

function snapshotTable(component, t) {
  const label = el('span', { class: 'tname', text: t.table, title: t.table });
  let bar;
  let count;
  if (t.done) {
    bar = el('progress', { class: 'done', max: 1, value: 1, 'aria-label': `${t.table} done` });
    count = `done · ${fmtInt(t.rows)} rows`;
  } else if (t.rows_estimated) {
    const pct = Math.min(99, Math.floor((t.rows / t.rows_estimated) * 100));
    bar = el('progress', { max: t.rows_estimated, value: Math.min(t.rows, t.rows_estimated), 'aria-label': `${t.table} ${pct}%` });
    count = `${fmtInt(t.rows)} / ~${fmtInt(t.rows_estimated)} (${pct}%)`;
  } else {
    bar = el('span', { class: 'muted small', text: 'no estimate' });
    count = `${fmtInt(t.rows)} rows`;
  }
  return el('div', {
    class: 'snap-row', 'data-testid': `snapshot-${component}-${t.table}`, 'data-done': String(t.done),
  }, label, bar, el('span', { class: 'count', text: count }));
}

// -------------------------------------------------------------------- detail

let partitionsOpen = false;

function renderDetail() {
  const host = $('detail');
  const name = state.selected;
  const node = state.pipeline && state.pipeline.components.find((c) => c.name === name);
  if (!node) {
    host.replaceChildren(el('p', { class: 'muted', text: 'Select a component in the graph or the table.' }));
    return;
  }
  const s = state.components.get(name);
  const head = el('div', { class: 'detail-head' },
    el('span', { class: 'cname', text: name }),
    el('span', { class: 'ctype', text: `${node.role} · ${node.type}` }),
    el('span', { class: 'badge', 'data-state': s ? s.state : 'remote', text: s ? s.state : (node.local ? 'unknown' : 'other instance') }));
  if (!s) {
    host.replaceChildren(head, el('p', {
      class: 'muted',
      text: node.local ? 'No status yet.' : 'This process does not run this component (see --component): the instance that runs it serves its status, charts and actions.',
    }), topicsList(node));
    return;
  }
  const kv = [];
  const add = (k, v) => kv.push(el('dt', { text: k }), el('dd', { text: v }));
  add('In state since', `${fmtWhen(s.since)} (${fmtAgo(s.since)})`);
  add('Records in / out', `${fmtInt(s.counts.records_in)} / ${fmtInt(s.counts.records_out)}`);
  add('Dead-lettered', fmtInt(s.counts.dead_lettered));
  add('Retries / restarts', `${fmtInt(s.counts.retries)} / ${fmtInt(s.restarts)}`);
  add('Batch p50 / p99', `${fmtMs(s.latency.batch_p50_ms)} / ${fmtMs(s.latency.batch_p99_ms)}`);
  if (node.role === 'sink') add('End to end', fmtMs(s.latency.end_to_end_ms));
  if (s.lag.records !== null) add('Lag', `${fmtInt(s.lag.records)} records`);
  if (s.lag.source) {
    add('Behind the log', `${fmtBytes(s.lag.source.bytes)}, ${fmtSeconds(s.lag.source.seconds)}`);
    add('Acknowledged at', s.lag.source.position || '—');
  }
  if (s.lag.cursor) {
    add('Cursor', s.lag.cursor.value === null ? '(none yet)' : s.lag.cursor.value);
    add('Cursor moved', `${fmtSeconds(s.lag.cursor.age_seconds)} ago`);
    const ok = s.lag.cursor.last_poll_ok;
    add('Last poll', `${fmtSeconds(s.lag.cursor.last_poll_seconds_ago)} ago${ok === null ? '' : ok ? ', ok' : ', failed'}`);
  }
  if (node.dead_letter_topic) add('Dead-letter topic', node.dead_letter_topic);
  const parts = [head];
  if (s.last_error) {
    const current = s.state === 'stopped' || s.state === 'retrying';
    parts.push(el('div', { class: 'error-box', 'data-testid': 'detail-error' },
      el('strong', { text: current ? 'Error' : 'Last error (recovered)' }),
      ` at ${fmtWhen(s.last_error.at)}: `, s.last_error.message));
  }
  parts.push(el('dl', { class: 'kv' }, kv), topicsList(node));
  if (s.lag.partitions.length) {
    const details = el('details', { ontoggle: (e) => { partitionsOpen = e.currentTarget.open; } },
      el('summary', { text: `Partitions (${s.lag.partitions.length})` }),
      el('table', { class: 'mini' },
        el('thead', {}, el('tr', {}, ['Topic', 'Part.', 'Position', 'End', 'Lag'].map((h) => el('th', { scope: 'col', text: h })))),
        el('tbody', {}, s.lag.partitions.map((p) => el('tr', {},
          el('td', { text: p.topic }), el('td', { text: String(p.partition) }), el('td', { text: fmtInt(p.position) }),
          el('td', { text: fmtInt(p.end) }), el('td', { text: fmtInt(p.lag) }))))));
    details.open = partitionsOpen;
    parts.push(details);
  }
  host.replaceChildren(...parts);
}

function topicsList(node) {
  const kv = [];
  if (node.topics_in.length) kv.push(el('dt', { text: 'Reads' }), el('dd', { class: 'mono', text: node.topics_in.join(', ') }));
  if (node.topics_out.length) kv.push(el('dt', { text: 'Writes' }), el('dd', { class: 'mono', text: node.topics_out.join(', ') }));
  return el('dl', { class: 'kv' }, kv);
}

// -------------------------------------------------------------------- charts

const hover = { chart: null, x: null }; // survives the re-render of every poll

function renderCharts() {
  const host = $('charts');
  const name = state.selected;
  if (!name || !isLocal(name)) { host.replaceChildren(); return; }
  if (state.historyError && !(state.history && state.history.name === name)) {
    host.replaceChildren(el('p', { class: 'muted', text: `History unavailable: ${state.historyError}` }));
    return;
  }
  if (!state.history || state.history.name !== name) {
    host.replaceChildren(el('p', { class: 'muted', text: 'Loading the last ten minutes…' }));
    return;
  }
  const points = state.history.data.points.map((p) => ({ ...p, t: Date.parse(p.at) })).filter((p) => !Number.isNaN(p.t));
  const end = points.length ? points[points.length - 1].t : Date.now();
  const interval = (state.history.data.interval_seconds || 2) * 1000;
  const charts = [lineChart({
    id: 'throughput', title: 'Throughput', unit: 'records/s', points, end, interval, deadTicks: true,
    series: [
      { label: 'in', value: (p) => p.records_in_per_s },
      { label: 'out', value: (p) => p.records_out_per_s },
    ],
  })];
  const hasRecords = points.some((p) => p.lag_records !== null);
  const hasSeconds = points.some((p) => p.lag_seconds !== null);
  if (hasRecords || hasSeconds) {
    charts.push(lineChart({
      id: 'lag', title: 'Lag', unit: hasRecords ? 'records' : 'seconds', points, end, interval,
      series: [hasRecords
        ? { label: 'records behind', value: (p) => p.lag_records, integer: true }
        : { label: 'seconds behind', value: (p) => p.lag_seconds, seconds: true }],
      colour: 2,
    }));
  } else {
    charts.push(el('p', { class: 'muted small', text: 'No lag reported for this component.' }));
  }
  host.replaceChildren(...charts);
}

function niceTicks(max, integer) {
  const top = max > 0 ? max : 1;
  const raw = top / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  let step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 && !integer ? 2.5 : norm <= 5 ? 5 : 10) * mag;
  if (integer) step = Math.max(1, Math.round(step));
  const ticks = [];
  for (let v = 0; v <= top + step * 0.001; v += step) ticks.push(v);
  if (ticks[ticks.length - 1] < top) ticks.push(ticks[ticks.length - 1] + step);
  return ticks;
}

function lineChart({ id, title, unit, points, end, interval, series, deadTicks, colour = 0 }) {
  const W = Math.max(300, Math.floor($('charts').clientWidth - 24) || 400);
  const H = 150;
  const M = { l: 52, r: 10, t: 10, b: 30 };
  const start = end - WINDOW_MS;
  const x = (t) => M.l + ((t - start) / WINDOW_MS) * (W - M.l - M.r);
  const values = points.flatMap((p) => series.map((s) => s.value(p))).filter((v) => v !== null && v !== undefined);
  const integer = series.every((s) => s.integer);
  const ticks = niceTicks(Math.max(0, ...values), integer);
  const top = ticks[ticks.length - 1];
  const y = (v) => H - M.b - (v / top) * (H - M.t - M.b);
  const fmt = series[0].seconds ? fmtSeconds : fmtCompact;

  const root = svg('svg', {
    viewBox: `0 0 ${W} ${H}`, height: H, role: 'img', 'data-testid': `chart-${id}`,
    'aria-label': `${title} of the last ten minutes, in ${unit}`,
  });
  const axis = svg('g', { class: 'axis' });
  for (const v of ticks) {
    root.append(svg('line', { class: v === 0 ? 'baseline' : 'gridline', x1: M.l, x2: W - M.r, y1: y(v), y2: y(v) }));
    axis.append(svg('text', { x: M.l - 6, y: y(v) + 3, 'text-anchor': 'end' }, fmt(v)));
  }
  const minute = 60000;
  for (let t = Math.ceil(start / (2 * minute)) * 2 * minute; t <= end; t += 2 * minute) {
    const d = new Date(t);
    root.append(svg('line', { class: 'gridline', x1: x(t), x2: x(t), y1: M.t, y2: H - M.b }));
    const anchor = x(t) > W - M.r - 16 ? 'end' : 'middle'; // keep the newest label inside
    axis.append(svg('text', { x: x(t), y: H - M.b + 13, 'text-anchor': anchor }, `${pad2(d.getHours())}:${pad2(d.getMinutes())}`));
  }
  root.append(axis,
    svg('text', { class: 'axis-title', x: W - M.r, y: H - 3, 'text-anchor': 'end' }, 'local time'),
    svg('text', { class: 'axis-title', transform: `translate(11 ${(H - M.b + M.t) / 2}) rotate(-90)`, 'text-anchor': 'middle' }, unit));

  series.forEach((s, i) => {
    let d = '';
    let prev = null;
    for (const p of points) {
      const v = s.value(p);
      if (v === null || v === undefined) { prev = null; continue; }
      // a missing sample (the process was busy or down) leaves a gap, not a slope
      const jump = prev === null || p.t - prev > interval * 3;
      d += `${jump ? 'M' : 'L'}${x(p.t).toFixed(1)},${y(v).toFixed(1)}`;
      prev = p.t;
    }
    if (d) root.append(svg('path', { class: `line s${colour + i}`, d }));
  });
  if (deadTicks) {
    for (const p of points) {
      if (p.dead_lettered > 0) root.append(svg('line', { class: 'dl-tick', x1: x(p.t), x2: x(p.t), y1: H - M.b, y2: H - M.b - 6 }));
    }
  }
  if (!points.length) {
    root.append(svg('text', { class: 'empty', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'No samples yet'));
  }

  const tip = svg('g', { class: 'tip' });
  const overlay = svg('rect', { x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, fill: 'transparent' });
  root.append(tip, overlay);
  const showTip = (px) => {
    tip.replaceChildren();
    if (px === null || !points.length) return;
    const t = start + ((px - M.l) / (W - M.l - M.r)) * WINDOW_MS;
    let best = points[0];
    for (const p of points) if (Math.abs(p.t - t) < Math.abs(best.t - t)) best = p;
    const lines = [fmtClock(new Date(best.t)), ...series.map((s) => `${s.label}: ${s.value(best) === null ? '—' : fmt(s.value(best))}`)];
    if (deadTicks && best.dead_lettered > 0) lines.push(`dead-lettered: ${fmtInt(best.dead_lettered)}`);
    const bx = x(best.t);
    const boxW = 8 + 6.2 * Math.max(...lines.map((l) => l.length));
    const left = bx + 8 + boxW > W ? bx - 8 - boxW : bx + 8;
    tip.append(svg('line', { class: 'cursor', x1: bx, x2: bx, y1: M.t, y2: H - M.b }),
      svg('rect', { x: left, y: M.t, width: boxW, height: 6 + lines.length * 13, rx: 3 }),
      ...lines.map((l, i) => svg('text', { x: left + 5, y: M.t + 14 + i * 13 }, l)));
  };
  const toLocal = (e) => {
    const box = root.getBoundingClientRect();
    return ((e.clientX - box.left) / box.width) * W;
  };
  overlay.addEventListener('mousemove', (e) => { hover.chart = id; hover.x = toLocal(e); showTip(hover.x); });
  overlay.addEventListener('mouseleave', () => { hover.chart = null; showTip(null); });
  if (hover.chart === id) showTip(hover.x);

  const key = el('span', { class: 'chart-title' }, el('span', { text: title }),
    series.map((s, i) => el('span', { class: 'key' }, el('span', { class: `swatch s${colour + i}` }), s.label)));
  return el('div', { class: 'chart' }, key, root);
}

// -------------------------------------------------------------- dead letters

const dlKey = (d) => `${d.topic}|${d.partition}|${d.offset}`;
const dlId = (d) => `${d.partition}-${d.offset}`;

function fillComponentFilter() {
  const select = $('dl-filter').elements.component;
  const current = select.value;
  const withTopic = state.pipeline.components.filter((c) => c.dead_letter_topic);
  select.replaceChildren(el('option', { value: '', text: 'all' }),
    ...withTopic.map((c) => el('option', { value: c.name, text: c.name, title: c.dead_letter_topic })));
  select.value = withTopic.some((c) => c.name === current) ? current : '';
}

// The form's values; throws a message when one is not valid.
function readFilter() {
  const f = $('dl-filter').elements;
  const out = {};
  const text = (k) => f[k].value.trim();
  if (text('component')) out.component = text('component');
  if (text('reason')) out.reason = text('reason');
  for (const k of ['since', 'until']) {
    if (!text(k)) continue;
    const d = new Date(text(k)); // datetime-local: the browser's time zone
    if (Number.isNaN(d.getTime())) throw new Error(`${k} is not a date and time`);
    out[k] = d.toISOString();
  }
  const integer = (k, min, max) => {
    if (!text(k)) return;
    const n = Number(text(k));
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${k.replace('_', ' ')} must be a whole number from ${min} to ${max}`);
    out[k] = n;
  };
  integer('partition', 0, 100000);
  integer('from_offset', 0, Number.MAX_SAFE_INTEGER);
  integer('to_offset', 0, Number.MAX_SAFE_INTEGER);
  integer('limit', 1, 1000);
  if (out.since && out.until && out.since >= out.until) throw new Error('since must be before until');
  if (out.from_offset !== undefined && out.to_offset !== undefined && out.from_offset > out.to_offset) {
    throw new Error('the first offset must not be above the last');
  }
  return out;
}

function filterQuery(filter) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filter)) q.set(k, String(v));
  return q.toString();
}

function describeFilter(f) {
  const parts = [];
  if (f.reason) parts.push(`reason contains “${f.reason}”`);
  if (f.since) parts.push(`written at or after ${fmtWhen(f.since)}`);
  if (f.until) parts.push(`written before ${fmtWhen(f.until)}`);
  if (f.partition !== undefined) parts.push(`partition ${f.partition}`);
  if (f.from_offset !== undefined) parts.push(`offset ≥ ${f.from_offset}`);
  if (f.to_offset !== undefined) parts.push(`offset ≤ ${f.to_offset}`);
  return parts.length ? parts.join(', ') : 'every dead letter';
}

async function loadDeadLetters() {
  const dl = state.dl;
  const seq = ++dl.seq;
  dl.loading = true;
  renderDeadLetterSummary();
  try {
    const { data } = await api(`api/v1/dead-letters?${filterQuery(dl.applied)}`);
    if (seq !== dl.seq) return; // a newer request answers
    dl.list = data.dead_letters;
    dl.truncated = data.truncated;
    dl.error = null;
    dl.loadedAt = Date.now();
    const open = new Set(dl.list.filter((d) => d.replayable && !d.replayed).map(dlKey));
    dl.selected = new Set([...dl.selected].filter((k) => open.has(k)));
  } catch (e) {
    if (seq !== dl.seq) return;
    dl.error = e.status === 401 ? null : e.message;
  } finally {
    if (seq === dl.seq) {
      dl.loading = false;
      renderDeadLetters();
    }
  }
}

// After a replay: the list again, until the replayed rows say so (the API may
// record a replay a moment after it answers).
async function refreshUntilReplayed(keys) {
  for (let attempt = 0; attempt < 8; attempt += 1) {
    await loadDeadLetters();
    const shown = (state.dl.list || []).filter((d) => keys.includes(dlKey(d)));
    if (shown.every((d) => d.replayed)) return;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function applyFilter(event) {
  if (event) event.preventDefault();
  const form = $('dl-filter');
  if (!form.reportValidity()) return;
  try {
    state.dl.applied = readFilter();
  } catch (e) {
    notice(e.message, 'error');
    return;
  }
  state.dl.selected.clear();
  loadDeadLetters();
  renderDeadLetterControls();
}

function showDeadLettersOf(name) {
  const form = $('dl-filter');
  form.reset();
  form.elements.component.value = name;
  applyFilter();
  $('dl-title').scrollIntoView({ behavior: 'smooth', block: 'start' });
}

function filterDirty() {
  try {
    return JSON.stringify(readFilter()) !== JSON.stringify(state.dl.applied);
  } catch {
    return true;
  }
}

function renderDeadLetterSummary() {
  const dl = state.dl;
  let text;
  if (dl.error) text = `Could not list dead letters: ${dl.error}`;
  else if (!dl.list) text = dl.loading ? 'Loading…' : '';
  else {
    const replayed = dl.list.filter((d) => d.replayed).length;
    text = `${plural(dl.list.length, 'dead letter')} (oldest first), ${fmtInt(replayed)} replayed`;
    if (dl.truncated) text += ` · more match than the limit of ${dl.applied.limit || 100}: narrow the filter`;
    if (dl.loading) text += ' · refreshing…';
  }
  $('dl-summary').textContent = text;
  $('dl-summary').classList.toggle('warn-text', Boolean(dl.error));
}

function renderDeadLetterControls() {
  const dl = state.dl;
  const form = $('dl-filter');
  const dirty = filterDirty();
  form.classList.toggle('dirty', dirty);
  const selected = dl.selected.size;
  const button = $('dl-replay');
  button.textContent = selected ? `Replay selected (${selected})…` : 'Replay matching…';
  let why = '';
  if (state.readOnly) why = 'This token may only read.';
  else if (dl.busy) why = 'A replay is under way.';
  else if (!selected && dirty) why = 'Apply the filter first: the replay uses the filter of the list shown.';
  else if (!selected && !(dl.applied && dl.applied.component)) why = 'Choose a component (and Apply): a replay is for one component’s dead letters.';
  button.disabled = Boolean(why);
  button.title = why || (selected ? 'Replay the selected dead letters' : 'Replay every dead letter matching the filter, not only those listed');
  const selectable = (dl.list || []).filter((d) => d.replayable && !d.replayed);
  const all = $('dl-select-all');
  all.disabled = !selectable.length || state.readOnly;
  all.checked = selectable.length > 0 && selectable.every((d) => dl.selected.has(dlKey(d)));
  all.indeterminate = !all.checked && selectable.some((d) => dl.selected.has(dlKey(d)));
}

function renderDeadLetters() {
  renderDeadLetterSummary();
  renderDeadLetterControls();
  const body = $('dl-body');
  const list = state.dl.list;
  keepFocus(body, () => {
    if (!list) {
      body.replaceChildren();
      return;
    }
    if (!list.length) {
      body.replaceChildren(el('tr', { class: 'empty-row' }, el('td', { colspan: 10, text: 'No dead letters match.' })));
      return;
    }
    body.replaceChildren(...list.map(deadLetterRow));
  });
}

function notReplayableWhy(d) {
  if (d.value_bytes === 0 && !d.origin) return 'The dead letter keeps no value and no origin topic to send it back to.';
  if (d.value_bytes === 0) return 'The dead letter keeps no value (the record was too large, or had none).';
  if (!d.origin) return 'The dead letter does not say which topic it came from.';
  return 'The API says this dead letter cannot be replayed.';
}

function deadLetterRow(d) {
  const id = dlId(d);
  const key = dlKey(d);
  const open = d.replayable && !d.replayed;
  const box = open ? el('input', {
    type: 'checkbox', 'data-testid': `select-${id}`, 'aria-label': `Select dead letter ${d.partition}:${d.offset} of ${d.component}`,
    disabled: state.readOnly || state.dl.busy,
    onchange: (e) => {
      if (e.target.checked) state.dl.selected.add(key); else state.dl.selected.delete(key);
      renderDeadLetterControls();
    },
  }) : null;
  if (box) box.checked = state.dl.selected.has(key);

  let action;
  if (!d.replayable) {
    const why = notReplayableWhy(d);
    action = el('span', { class: 'muted small', title: why, tabindex: 0, 'aria-label': `Not replayable: ${why}`, 'data-testid': `not-replayable-${id}`, text: 'not replayable' });
  } else if (!d.replayed) {
    action = el('button', {
      type: 'button', class: 'small', 'data-testid': `replay-${id}`, text: 'Replay',
      'aria-label': `Replay dead letter ${d.partition}:${d.offset} of ${d.component}`,
      disabled: state.readOnly || state.dl.busy, title: state.readOnly ? 'This token may only read.' : 'Send it back to the topic it came from',
      onclick: () => replayOne(d, false),
    });
  } else {
    action = el('button', {
      type: 'button', class: 'small ghost', 'data-testid': `replay-again-${id}`, text: 'Replay again',
      'aria-label': `Replay dead letter ${d.partition}:${d.offset} of ${d.component} again`,
      disabled: state.readOnly || state.dl.busy, title: 'It was replayed already; send it once more (force)',
      onclick: () => replayOne(d, true),
    });
  }

  const keyText = d.key === null || d.key === undefined ? null : JSON.stringify(d.key);
  let keyCell;
  if (keyText === null) keyCell = el('span', { class: 'muted', text: 'none' });
  else if (keyText.length <= 60) keyCell = el('span', { text: keyText });
  else {
    keyCell = el('details', {}, el('summary', { text: keyText, title: 'Show the whole key' }),
      el('pre', { text: JSON.stringify(d.key, null, 2) }));
  }
  const replayed = d.replayed
    ? el('span', { title: `Sent to ${d.replayed.topic} [${d.replayed.partition}] at offset ${d.replayed.offset}, ${d.replayed.at}` },
      el('span', { class: 'ok-text', text: '✓ ' }), fmtWhen(d.replayed.at),
      el('div', { class: 'muted small mono', text: `→ ${d.replayed.topic} [${d.replayed.partition}] @${d.replayed.offset}` }))
    : el('span', { class: 'muted', text: 'no' });
  return el('tr', {
    'data-testid': `dead-letter-${id}`, 'data-replayed': String(Boolean(d.replayed)), 'data-replayable': String(d.replayable),
    'data-component': d.component, 'data-topic': d.topic,
  },
  el('td', {}, box),
  el('td', { text: d.component }),
  el('td', { class: 'when', text: fmtWhen(d.timestamp), title: d.timestamp || 'no timestamp' }),
  el('td', { class: 'at', text: `${d.partition}:${d.offset}`, title: `${d.topic}, partition ${d.partition}, offset ${d.offset}` }),
  el('td', { class: 'reason' }, el('div', { class: 'clamp', text: d.reason, title: d.reason })),
  el('td', { class: 'origin' }, d.origin
    ? [el('div', { text: d.origin.topic }), el('div', { class: 'muted', text: `[${d.origin.partition}] @${d.origin.offset}` })]
    : el('span', { class: 'muted', text: 'unknown' })),
  el('td', { class: 'key' }, keyCell),
  el('td', { class: 'num', text: d.value_bytes ? fmtBytes(d.value_bytes) : 'none' }),
  el('td', {}, replayed),
  el('td', { class: 'actions' }, action));
}

function outcomeCounts(o, dry) {
  const item = (k, v) => [el('dt', { text: k }), el('dd', { text: fmtInt(v) })];
  return el('dl', { class: 'counts', 'data-testid': 'outcome-counts' },
    item('Matching the filter', o.matched),
    item(dry ? 'Would be replayed' : 'Replayed', o.replayed),
    item('Already replayed (skipped)', o.already_replayed),
    item('Not replayable (skipped)', o.not_replayable));
}

function outcomeText(o) {
  const skipped = [];
  if (o.already_replayed) skipped.push(`${fmtInt(o.already_replayed)} already replayed`);
  if (o.not_replayable) skipped.push(`${fmtInt(o.not_replayable)} not replayable`);
  return `Replayed ${plural(o.replayed, 'dead letter')}${skipped.length ? ` (skipped: ${skipped.join(', ')})` : ''}.`;
}

async function withReplayBusy(work) {
  state.dl.busy = true;
  renderDeadLetters();
  try {
    await work();
  } finally {
    state.dl.busy = false;
    renderDeadLetters();
  }
}

function replayOne(d, force) {
  return withReplayBusy(async () => {
    const where = d.origin ? `${d.origin.topic} [${d.origin.partition}]` : 'its origin topic';
    const body = el('div', {},
      el('p', { text: `Send dead letter ${d.partition}:${d.offset} of ${d.component} back to ${where}.` }),
      el('p', { class: 'muted small', text: `Reason: ${clip(d.reason, 300)}` }),
      force ? el('p', { class: 'warn-text', text: `It was replayed at ${fmtWhen(d.replayed.at)}; it is sent once more.` }) : null);
    const ok = await confirmDialog({ title: force ? 'Replay it again?' : 'Replay this dead letter?', body, ok: 'Replay' });
    if (!ok) return;
    const request = { component: d.component, partition: d.partition, from_offset: d.offset, to_offset: d.offset };
    if (force) request.force = true;
    try {
      const { data } = await api('api/v1/dead-letters/replay', { method: 'POST', body: request });
      notice(outcomeText(data), data.replayed ? 'ok' : 'info');
    } catch (e) {
      actionFailed(e, 'Replay');
      return;
    }
    await refreshUntilReplayed([dlKey(d)]);
  });
}

function replayBatch() {
  const chosen = (state.dl.list || []).filter((d) => state.dl.selected.has(dlKey(d)));
  return withReplayBusy(() => (chosen.length ? replaySelected(chosen) : replayMatching()));
}

async function replayMatching() {
  const f = state.dl.applied;
  const request = { ...f };
  delete request.limit; // a replay takes every match, not a page of them
  let dry;
  try {
    ({ data: dry } = await api('api/v1/dead-letters/replay', { method: 'POST', body: { ...request, dry_run: true } }));
  } catch (e) {
    actionFailed(e, 'Replay (dry run)');
    return;
  }
  const filterText = `${f.component}: ${describeFilter(f)}`;
  if (!dry.replayed) {
    await confirmDialog({
      title: 'Nothing to replay', body: el('div', {}, el('p', { text: filterText }), outcomeCounts(dry, true)), ok: 'Close', onlyOk: true,
    });
    return;
  }
  // Pin the end to what the dry run saw, so dead letters written meanwhile are not sent unconfirmed.
  let pinned = false;
  const stamps = dry.items.map((d) => Date.parse(d.timestamp));
  if (!request.until && dry.items.length === dry.matched && stamps.length && stamps.every((t) => !Number.isNaN(t))) {
    request.until = new Date(Math.max(...stamps) + 1).toISOString();
    pinned = true;
  }
  const listed = state.dl.list ? state.dl.list.length : 0;
  const ok = await confirmDialog({
    title: `Replay ${plural(dry.replayed, 'dead letter')} of ${f.component}?`,
    body: el('div', {},
      el('p', { text: `Matching ${filterText}.` }),
      outcomeCounts(dry, true),
      dry.matched > listed ? el('p', { class: 'muted small', text: `Every match is replayed, not only the ${fmtInt(listed)} listed.` }) : null,
      pinned ? el('p', { class: 'muted small', text: 'Dead letters written after this check are not included.' }) : null),
    ok: `Replay ${fmtInt(dry.replayed)}`,
  });
  if (!ok) return;
  let real;
  try {
    ({ data: real } = await api('api/v1/dead-letters/replay', { method: 'POST', body: request }));
  } catch (e) {
    actionFailed(e, 'Replay');
    return;
  }
  const differs = real.replayed !== dry.replayed ? ` The dry run counted ${fmtInt(dry.replayed)}: the dead letters changed meanwhile.` : '';
  notice(outcomeText(real) + differs, real.replayed ? 'ok' : 'info');
  await refreshUntilReplayed(real.items.filter((d) => d.replayable).map(dlKey));
}

async function replaySelected(chosen) {
  const requestOf = (d) => ({ component: d.component, partition: d.partition, from_offset: d.offset, to_offset: d.offset });
  const total = { matched: 0, replayed: 0, already_replayed: 0, not_replayable: 0 };
  const add = (o) => { for (const k of Object.keys(total)) total[k] += o[k]; };
  const pending = [];
  try {
    for (const d of chosen) {
      const { data } = await api('api/v1/dead-letters/replay', { method: 'POST', body: { ...requestOf(d), dry_run: true } });
      add(data);
      if (data.replayed) pending.push(d);
    }
  } catch (e) {
    actionFailed(e, 'Replay (dry run)');
    return;
  }
  if (!pending.length) {
    await confirmDialog({ title: 'Nothing to replay', body: outcomeCounts(total, true), ok: 'Close', onlyOk: true });
    return;
  }
  const ok = await confirmDialog({
    title: `Replay ${plural(pending.length, 'selected dead letter')}?`,
    body: el('div', {}, el('p', { text: 'Each is sent back to the topic it came from.' }), outcomeCounts(total, true)),
    ok: `Replay ${fmtInt(pending.length)}`,
  });
  if (!ok) return;
  const done = { matched: 0, replayed: 0, already_replayed: 0, not_replayable: 0 };
  try {
    for (const d of pending) {
      const { data } = await api('api/v1/dead-letters/replay', { method: 'POST', body: requestOf(d) });
      for (const k of Object.keys(done)) done[k] += data[k];
    }
  } catch (e) {
    actionFailed(e, `Replay (after ${fmtInt(done.replayed)} sent)`);
  }
  notice(outcomeText(done), done.replayed ? 'ok' : 'info');
  state.dl.selected.clear();
  await refreshUntilReplayed(pending.map(dlKey));
}

// ------------------------------------------------------- dialogs and notices

let confirmResolve = null;
let confirmValidate = null;

// An in-page confirmation (a test can click it; window.confirm it cannot).
// Resolves true for OK. A newer question replaces an open one (that one: false).
function confirmDialog({ title, message, body, ok = 'OK', danger = false, validate = null, onlyOk = false }) {
  const dialog = $('confirm');
  if (confirmResolve) { confirmResolve(false); confirmResolve = null; }
  $('confirm-title').textContent = title;
  $('confirm-message').replaceChildren(...[message ? el('p', { text: message }) : null, body || null,
    el('p', { class: 'problem', id: 'confirm-problem', role: 'alert', hidden: true })].filter(Boolean));
  const okButton = $('confirm-ok');
  okButton.textContent = ok;
  okButton.className = danger ? 'danger' : '';
  dialog.querySelector('[value="cancel"]').hidden = onlyOk;
  confirmValidate = validate;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    confirmResolve = resolve;
    if (!dialog.open) dialog.showModal();
    (danger ? dialog.querySelector('[value="cancel"]') : okButton).focus();
  });
}

function onConfirmSubmit(event) {
  const submitter = event.submitter;
  if (submitter && submitter.value === 'ok' && confirmValidate) {
    const problem = confirmValidate();
    if (problem) {
      event.preventDefault();
      const p = $('confirm-problem');
      p.textContent = problem;
      p.hidden = false;
    }
  }
}

function onConfirmClose() {
  const resolve = confirmResolve;
  confirmResolve = null;
  confirmValidate = null;
  if (resolve) resolve($('confirm').returnValue === 'ok');
}

function notice(text, kind = 'info') {
  const close = el('button', { type: 'button', class: 'ghost', 'aria-label': 'Dismiss', text: '×' });
  const item = el('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status', 'data-testid': `notice-${kind}` },
    el('span', { text }), close);
  const remove = () => item.remove();
  close.addEventListener('click', remove);
  $('notices').append(item);
  while ($('notices').children.length > 3) $('notices').firstElementChild.remove();
  setTimeout(remove, kind === 'error' ? 15000 : 6000);
}

// ---------------------------------------------------------------------- start

function start() {
  $('signin-form').addEventListener('submit', signIn);
  $('signin').addEventListener('cancel', (e) => e.preventDefault()); // nothing works without a token
  $('sign-in-out').addEventListener('click', onAuthButton);
  $('confirm').querySelector('form').addEventListener('submit', onConfirmSubmit);
  $('confirm').addEventListener('close', onConfirmClose);
  const form = $('dl-filter');
  form.addEventListener('submit', applyFilter);
  form.addEventListener('input', renderDeadLetterControls);
  form.addEventListener('change', renderDeadLetterControls);
  $('dl-reset').addEventListener('click', () => { form.reset(); applyFilter(); });
  $('dl-refresh').addEventListener('click', () => loadDeadLetters());
  $('dl-replay').addEventListener('click', replayBatch);
  $('dl-select-all').addEventListener('change', (e) => {
    const selectable = (state.dl.list || []).filter((d) => d.replayable && !d.replayed);
    state.dl.selected = new Set(e.target.checked ? selectable.map(dlKey) : []);
    renderDeadLetters();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) stopPolling();
    else schedule(0);
  });
  // History is fetched only while the charts' panel is on screen (or nearly).
  new IntersectionObserver((entries) => {
    const visible = entries.some((e) => e.isIntersecting);
    if (visible && !state.chartsVisible && state.selected && isLocal(state.selected)) loadHistory(state.selected);
    state.chartsVisible = visible;
  }, { rootMargin: '300px 0px' }).observe($('detail-panel'));
  let lastWidth = 0;
  new ResizeObserver(() => {
    const width = $('graph').clientWidth;
    if (Math.abs(width - lastWidth) > 8 && state.layout) {
      lastWidth = width;
      drawGraph();
      renderCharts();
    }
  }).observe($('graph'));
  renderAuthButton();
  renderDeadLetterControls();
  schedule(0);
}

start();
