// The Runtime page (docs/web.md#runtime): `micro status` as a live table, each service's logs
// followed as they come, update and kill, and running a service from a git URL. Every call goes
// through /api/call/runtime/Runtime/... (the gateway's own path and admission). The names and
// sentences are those of `micro status`, `micro logs`, `micro kill`, `micro update`, `micro run`
// (crates/micro-cli/src/runtime.rs).
'use strict';

(() => {
  const { el, call, get, ask, say } = window.micro;
  const section = document.getElementById('runtime');
  if (!section) return;
  const body = document.querySelector('#status tbody');
  const failure = document.getElementById('runtime-error');
  const interval = Number(section.dataset.poll) || 2000;

  const STATUSES = ['unknown', 'pending', 'building', 'starting', 'running', 'stopping', 'stopped', 'error'];

  /** A service's status name: metadata `status`, else the numeric field (as the CLI). */
  const statusOf = (service) => (service.metadata || {}).status || STATUSES[service.status || 0] || 'unknown';

  /** `<d>d<h>h<m>m<s>s` with leading zero units left out, as `micro status` prints UPDATED. */
  function elapsed(secs) {
    const [d, h, m, s] = [Math.floor(secs / 86400), Math.floor(secs / 3600) % 24, Math.floor(secs / 60) % 60, secs % 60];
    if (d > 0) return `${d}d${h}h${m}m${s}s`;
    if (h > 0) return `${h}h${m}m${s}s`;
    if (m > 0) return `${m}m${s}s`;
    return `${s}s`;
  }

  /** The cells of one service, as `micro status` shows them, by the class of their `<td>`. */
  function cells(service) {
    const meta = service.metadata || {};
    const status = statusOf(service);
    const started = Date.parse(meta.started || '');
    const updated = Number.isNaN(started) ? 'n/a' : `${elapsed(Math.max(0, Math.floor((Date.now() - started) / 1000)))} ago`;
    const extra = [`owner=${meta.owner || ''}`, `group=${meta.group || ''}`];
    if (meta.sandbox) extra.push(`sandbox=${meta.sandbox}`);
    if (meta.build) extra.push(`build=${meta.build.slice(0, 7)}`);
    if (meta.update) extra.push(`update=${meta.update}`);
    let error = status === 'error' ? meta.error || '' : '';
    if (meta.update === 'failed') error = `the update failed, the running version keeps serving: ${meta.update_error || ''}`;
    return {
      source: meta.source || service.source || 'n/a',
      status,
      restarts: meta.restarts || '0',
      updated,
      'last-error': error,
      meta: extra.join(', '),
    };
  }

  const rows = new Map();

  /** The row of `service`, made once (so its buttons survive each refresh). */
  function rowOf(service) {
    const key = `${service.name}@${service.version}`;
    let row = rows.get(key);
    if (row) return row;
    const button = (action, text, handler) =>
      el('button', { type: 'button', 'data-action': action, text, onclick: () => handler(service.name, service.version) });
    row = el(
      'tr',
      { 'data-service': service.name, 'data-version': service.version },
      el('td', { class: 'name' }, el('b', { text: service.name })),
      el('td', { text: service.version }),
      el('td', { class: 'source' }),
      el('td', { class: 'status' }),
      el('td', { class: 'restarts' }),
      el('td', { class: 'updated' }),
      el('td', { class: 'last-error' }),
      el('td', { class: 'meta' }),
      el('td', { class: 'row-actions' }, button('logs', 'Logs', follow), button('update', 'Update', update), button('kill', 'Kill', kill)),
    );
    rows.set(key, row);
    return row;
  }

  async function refresh() {
    let services;
    try {
      services = (await call('runtime/Runtime/Read', { options: {} })).services || [];
      say(failure, '');
    } catch (err) {
      say(failure, err.message);
      return;
    }
    services.sort((a, b) => (a.name === b.name ? a.version.localeCompare(b.version) : a.name.localeCompare(b.name)));
    const ordered = services.map((service) => {
      const row = rowOf(service);
      const shown = cells(service);
      for (const [name, text] of Object.entries(shown)) {
        const cell = row.querySelector(`.${name}`);
        if (cell.textContent !== text) cell.textContent = text;
      }
      row.dataset.status = shown.status;
      row.querySelector('.status').className = `status ${shown.status}`;
      return row;
    });
    const kept = new Set(ordered);
    for (const [key, row] of rows) {
      if (!kept.has(row)) {
        row.remove();
        rows.delete(key);
      }
    }
    if (ordered.length === 0) {
      body.replaceChildren(el('tr', { class: 'placeholder' }, el('td', { colspan: 9, text: 'No services: run one below, or with `micro run`.' })));
    } else if (ordered.length !== body.children.length || ordered.some((row, i) => body.children[i] !== row)) {
      // Only when the rows changed: moving them would take the focus off their buttons.
      body.replaceChildren(...ordered);
    }
    section.dataset.refreshed = String(Date.now());
  }

  // ---- logs, followed

  const panel = document.getElementById('logs-panel');
  const list = document.getElementById('logs');
  const state = document.getElementById('logs-state');
  const MAX_LINES = 1000;
  let following = null;

  function stopFollowing() {
    if (following) following.abort();
    following = null;
  }

  async function follow(name) {
    stopFollowing();
    const controller = new AbortController();
    following = controller;
    panel.hidden = false;
    panel.dataset.service = name;
    document.getElementById('logs-service').textContent = name;
    list.replaceChildren();
    state.textContent = 'following';
    try {
      // `micro logs -f -n 50 NAME`.
      await call('runtime/Runtime/Logs', { service: name, stream: true, count: 50 }, {
        signal: controller.signal,
        onLine: (record) => {
          const message = String(record.message || '').replace(/[\r\n]+$/, '');
          const stamp = Number(record.timestamp) ? new Date(Number(record.timestamp) * 1000).toISOString() : '';
          list.append(el('li', { title: stamp }, el('code', { text: message })));
          while (list.childElementCount > MAX_LINES) list.firstElementChild.remove();
          list.lastElementChild.scrollIntoView({ block: 'nearest' });
        },
      });
      if (following === controller) state.textContent = 'ended';
    } catch (err) {
      if (controller.signal.aborted) {
        state.textContent = 'stopped';
        return;
      }
      state.textContent = err.status === 404 ? `Logs not found for service ${name}` : err.message;
    } finally {
      if (following === controller) following = null;
    }
  }

  document.getElementById('logs-stop').addEventListener('click', stopFollowing);
  document.getElementById('logs-close').addEventListener('click', () => {
    stopFollowing();
    panel.hidden = true;
  });

  // ---- update and kill

  /** `runtime.Runtime/<method>` of one service, then the table again: whether it was done (a
   * failure is shown, a service already gone with `micro kill`'s sentence). */
  async function act(method, name, version) {
    try {
      await call(`runtime/Runtime/${method}`, { resource: { service: { name, version } } });
      say(failure, '');
      return true;
    } catch (err) {
      say(failure, err.status === 404 ? `Service ${name} ${version} not found: \`micro status\` lists the services` : err.message);
      return false;
    } finally {
      refresh();
    }
  }

  // `micro update NAME`: rebuilt from the source it was run from.
  const update = (name, version) => act('Update', name, version);

  async function kill(name, version) {
    if (!(await ask(`Kill ${name} ${version}? It is stopped and removed, with its logs.`, 'Kill'))) return;
    if ((await act('Delete', name, version)) && panel.dataset.service === name) stopFollowing();
  }

  // ---- run from git

  const runForm = document.getElementById('run-form');
  const runError = document.getElementById('run-error');
  const runDone = document.getElementById('run-done');
  runForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    say(runError, '');
    say(runDone, '');
    const arg = runForm.elements.source.value.trim();
    // `host/org/repo[/folder][@ref]`: the ref is the VERSION, `latest` without one.
    const at = arg.lastIndexOf('@');
    const hasRef = at > 0 && !arg.slice(0, at).endsWith('://');
    const source = (hasRef ? arg.slice(0, at) : arg).replace(/\/+$/, '');
    const version = (hasRef && arg.slice(at + 1)) || 'latest';
    const command = runForm.elements.command.value.trim().split(/\s+/).filter(Boolean);
    let name = runForm.elements.name.value.trim();
    const button = runForm.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      // Without a name, the one the source gives, by the server's (and the CLI's) rule.
      name = name || (await get(`service-name?source=${encodeURIComponent(source)}`)).name;
      await call('runtime/Runtime/Create', {
        resource: { service: { name, version, source, metadata: { source } } },
        options: { command },
      });
      say(runDone, `${name} ${version} accepted: it is built and started in the background.`);
      runForm.reset();
    } catch (err) {
      say(
        runError,
        err.status === 409
          ? `service ${name} ${version} already exists: rebuild it with \`micro update ${arg}\` or stop it with \`micro kill ${name}\``
          : err.message,
      );
    } finally {
      button.disabled = false;
    }
    refresh();
  });

  // ---- live: every few seconds, never two at once, paused while the page is hidden

  let busy = false;
  const tick = async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      await refresh();
    } finally {
      busy = false;
    }
  };
  tick();
  setInterval(tick, interval);
  document.addEventListener('visibilitychange', tick);
  document.body.dataset.ready = 'runtime';
})();
