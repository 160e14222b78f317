// The Data pages (docs/web.md#store, docs/web.md#config, docs/web.md#events-and-the-broker,
// docs/web.md#jobs): the store browser, the config editor, events (with a group's dead letters)
// and the broker, scheduled jobs. Every call goes through /api/call/store/Store/...,
// /api/call/config/Config/..., /api/call/events/..., /api/call/jobs/Jobs/... (the gateway's own
// path and admission), with the names and sentences of `micro store`, `micro config`,
// `micro events` and `micro jobs` (crates/micro-cli/src/store.rs, config.rs, events.rs, jobs.rs).
'use strict';

(() => {
  const { el, call, ask, say } = window.micro;

  /** UTF-8 text as base64 (protobuf-JSON `bytes`), and back (invalid UTF-8 shown replaced). */
  const toBase64 = (text) => btoa(String.fromCharCode(...new TextEncoder().encode(text)));
  const fromBase64 = (data) => new TextDecoder().decode(Uint8Array.from(atob(data || ''), (c) => c.charCodeAt(0)));

  /** A duration as `micro store` prints an expiry: `1h2m3s`, `45s`. */
  function goDuration(ms) {
    const total = Math.ceil(ms / 1000);
    const [h, m, s] = [Math.floor(total / 3600), Math.floor(total / 60) % 60, total % 60];
    if (h === 0 && m === 0) return `${s}s`;
    if (h === 0) return `${m}m${s}s`;
    return `${h}h${m}m${s}s`;
  }

  /** `--expiry` as `micro store write` takes it (`1h30m`, `45s`, `500ms`), in milliseconds; 0
   * for none; an Error for anything else. */
  function parseExpiry(text) {
    const value = text.trim();
    if (value === '' || value === 'none') return 0;
    const units = { ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000 };
    const parts = [...value.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)];
    if (parts.length === 0 || parts.map((p) => p[0]).join('') !== value) {
      throw new Error(`invalid expiry ${value}: use a duration such as 1h30m or 45s`);
    }
    const ms = parts.reduce((sum, [, n, unit]) => sum + Number(n) * units[unit], 0);
    if (ms <= 0) throw new Error('the expiry must be a positive duration');
    return Math.round(ms);
  }

  /** Unix milliseconds as `micro events dead` and `micro jobs` print them: RFC 3339 to the
   * second; `-` for none. */
  const time = (ms) => (Number(ms) > 0 ? new Date(Number(ms)).toISOString().replace(/\.\d+Z$/, 'Z') : '-');

  // ---- the store browser

  function setupStore() {
    const section = document.getElementById('store');
    if (!section) return;
    const perPage = Number(section.dataset.perPage) || 25;
    const databaseSelect = document.getElementById('store-database');
    const tableSelect = document.getElementById('store-table');
    const prefixInput = document.getElementById('store-prefix');
    const failure = document.getElementById('store-error');
    const keys = document.querySelector('#keys tbody');
    const prev = document.getElementById('keys-prev');
    const next = document.getElementById('keys-next');
    const range = document.getElementById('keys-range');
    const record = document.getElementById('record');
    let offset = 0;
    let current = null;

    const scope = () => ({ database: databaseSelect.value, table: tableSelect.value });

    /** Fills `select` with `names`, keeping `chosen`, with the store's default first. */
    function options(select, names, chosen) {
      const all = new Set(names);
      if (chosen) all.add(chosen);
      select.replaceChildren(
        el('option', { value: '', text: '(default)' }),
        ...[...all].sort().map((name) => el('option', { value: name, text: name })),
      );
      select.value = chosen;
    }

    async function loadDatabases() {
      const reply = await call('store/Store/Databases', {});
      options(databaseSelect, reply.databases || [], section.dataset.database || '');
    }

    async function loadTables() {
      const reply = await call('store/Store/Tables', { database: databaseSelect.value });
      options(tableSelect, reply.tables || [], tableSelect.value || section.dataset.table || '');
    }

    async function listKeys() {
      say(failure, '');
      const found = [];
      // One more than a page: whether there is a next one.
      const request = { options: { ...scope(), prefix: prefixInput.value, limit: perPage + 1, offset } };
      try {
        await call('store/Store/List', request, { onLine: (reply) => found.push(...(reply.keys || [])) });
      } catch (err) {
        say(failure, err.message);
        return;
      }
      const shown = found.slice(0, perPage);
      keys.replaceChildren(
        ...shown.map((key) =>
          el('tr', { 'data-key': key }, el('td', {}, el('a', { href: '#', text: key, onclick: (event) => {
            event.preventDefault();
            readKey(key);
          } }))),
        ),
      );
      if (shown.length === 0) keys.append(el('tr', { class: 'placeholder' }, el('td', { text: offset ? 'No more keys' : 'No keys' })));
      range.textContent = shown.length ? `${offset + 1}–${offset + shown.length}` : '';
      prev.disabled = offset === 0;
      next.disabled = found.length <= perPage;
      section.dataset.listed = String(Date.now());
    }

    async function readKey(key) {
      say(failure, '');
      let reply;
      try {
        reply = await call('store/Store/Read', { key, options: scope() });
      } catch (err) {
        // `micro store read` says `Not found`.
        say(failure, err.status === 404 ? 'Not found' : err.message);
        record.hidden = true;
        return;
      }
      const found = (reply.records || []).find((r) => r.key === key);
      if (!found) {
        say(failure, 'Not found');
        record.hidden = true;
        return;
      }
      const value = fromBase64(found.value);
      const ttl = Number(found.expiry_ms ?? found.expiryMs ?? 0) || Number(found.expiry || 0) * 1000;
      current = { key, value };
      document.getElementById('record-key').textContent = key;
      document.getElementById('record-ttl').textContent = ttl > 0 ? goDuration(ttl) : 'None';
      document.getElementById('record-size').textContent = String(atob(found.value || '').length);
      document.getElementById('record-value').textContent = value;
      record.hidden = false;
      record.dataset.key = key;
    }

    document.getElementById('record-edit').addEventListener('click', () => {
      if (!current) return;
      document.getElementById('write-key').value = current.key;
      document.getElementById('write-value').value = current.value;
      document.getElementById('write-value').focus();
    });
    document.getElementById('record-delete').addEventListener('click', async () => {
      if (!current) return;
      const { key } = current;
      if (!(await ask(`Delete ${key}?`, 'Delete'))) return;
      try {
        await call('store/Store/Delete', { key, options: scope() });
        record.hidden = true;
        current = null;
      } catch (err) {
        say(failure, err.message);
      }
      listKeys();
    });

    const writeForm = document.getElementById('store-write');
    const writeError = document.getElementById('write-error');
    const writeDone = document.getElementById('write-done');
    writeForm.addEventListener('submit', async (event) => {
      event.preventDefault();
      say(writeError, '');
      say(writeDone, '');
      const key = document.getElementById('write-key').value;
      const value = document.getElementById('write-value').value;
      let expiry;
      try {
        expiry = parseExpiry(document.getElementById('write-expiry').value);
      } catch (err) {
        say(writeError, err.message);
        return;
      }
      const written = { key, value: toBase64(value) };
      if (expiry) Object.assign(written, { expiry: String(Math.ceil(expiry / 1000)), expiry_ms: String(expiry) });
      try {
        await call('store/Store/Write', { record: written, options: scope() });
        say(writeDone, `wrote ${key}`);
      } catch (err) {
        say(writeError, err.message);
        return;
      }
      await listKeys();
      await readKey(key);
    });

    document.getElementById('store-scope').addEventListener('submit', (event) => {
      event.preventDefault();
      offset = 0;
      listKeys();
    });
    databaseSelect.addEventListener('change', async () => {
      tableSelect.value = '';
      offset = 0;
      await loadTables().catch((err) => say(failure, err.message));
      listKeys();
    });
    tableSelect.addEventListener('change', () => {
      offset = 0;
      listKeys();
    });
    prev.addEventListener('click', () => {
      offset = Math.max(0, offset - perPage);
      listKeys();
    });
    next.addEventListener('click', () => {
      offset += perPage;
      listKeys();
    });

    (async () => {
      try {
        await loadDatabases();
        await loadTables();
      } catch (err) {
        say(failure, err.message);
      }
      await listKeys();
      document.body.dataset.ready = 'store';
    })();
  }

  // ---- the config editor

  const MASK = '[secret]';

  /** `value` as (dotted path, leaf value) rows: objects are walked, the rest are leaves. */
  function flatten(value, path, out) {
    if (value && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length) {
      for (const key of Object.keys(value).sort()) flatten(value[key], path ? `${path}.${key}` : key, out);
    } else if (path) {
      out.push([path, value]);
    }
    return out;
  }

  /** The JSON text to store for a typed value: itself when it is JSON, else a JSON string (as
   * `micro config set`). */
  function asJson(text) {
    try {
      JSON.parse(text);
      return text;
    } catch {
      return JSON.stringify(text);
    }
  }

  function setupConfig() {
    const section = document.getElementById('config');
    if (!section) return;
    const body = document.querySelector('#config-tree tbody');
    const failure = document.getElementById('config-error');
    const reveal = document.getElementById('config-reveal');
    const form = document.getElementById('config-set');
    const pathInput = document.getElementById('set-path');
    const valueInput = document.getElementById('set-value');
    const secretInput = document.getElementById('set-secret');
    let revealed = false;

    async function load() {
      say(failure, '');
      let data;
      try {
        // The whole document; secrets read as `[secret]` unless revealed (`--secret`).
        const reply = await call('config/Config/Get', { path: '', options: { secret: revealed } });
        const text = reply.value?.data || '';
        data = text.trim() ? JSON.parse(text) : null;
      } catch (err) {
        // Nothing set yet: `micro config get` says `Not found`; the page shows an empty tree.
        if (err.status !== 404) {
          say(failure, err.message);
          return;
        }
        data = null;
      }
      const rows = flatten(data, '', []);
      body.replaceChildren(
        ...rows.map(([path, value]) => {
          const masked = value === MASK;
          const text = typeof value === 'string' ? value : JSON.stringify(value);
          return el(
            'tr',
            { 'data-path': path, class: masked ? 'secret' : null },
            el('td', {}, el('code', { text: path })),
            el('td', { class: 'value' }, masked ? el('span', { class: 'masked', title: 'a secret: Reveal secrets shows it', text: MASK }) : el('code', { text })),
            el(
              'td',
              { class: 'row-actions' },
              el('button', { type: 'button', 'data-action': 'edit', text: 'Edit', onclick: () => {
                pathInput.value = path;
                valueInput.value = masked ? '' : text;
                secretInput.checked = masked;
                valueInput.focus();
              } }),
              el('button', { type: 'button', 'data-action': 'delete', text: 'Delete', onclick: async () => {
                if (!(await ask(`Delete ${path}?`, 'Delete'))) return;
                try {
                  await call('config/Config/Delete', { path });
                } catch (err) {
                  say(failure, err.message);
                }
                load();
              } }),
            ),
          );
        }),
      );
      if (rows.length === 0) body.append(el('tr', { class: 'placeholder' }, el('td', { colspan: 3, text: 'No config in this namespace yet.' })));
      section.dataset.loaded = String(Date.now());
    }

    reveal.addEventListener('click', () => {
      revealed = !revealed;
      reveal.setAttribute('aria-pressed', String(revealed));
      reveal.textContent = revealed ? 'Hide secrets' : 'Reveal secrets';
      load();
    });
    document.getElementById('config-reload').addEventListener('click', load);

    const setError = document.getElementById('set-error');
    const setDone = document.getElementById('set-done');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      say(setError, '');
      say(setDone, '');
      const path = pathInput.value.trim();
      const request = {
        path,
        value: { data: asJson(valueInput.value), format: 'json' },
        options: { secret: secretInput.checked },
      };
      try {
        await call('config/Config/Set', request);
        say(setDone, `set ${path}`);
        form.reset();
      } catch (err) {
        say(setError, err.message);
        return;
      }
      load();
    });

    load().then(() => {
      document.body.dataset.ready = 'config';
    });
  }

  // ---- events and the broker

  /** An event as `micro events read` prints it: one JSON object, the payload parsed. */
  function renderEvent(event) {
    const text = fromBase64(event.payload);
    let payload;
    try {
      payload = JSON.parse(text);
    } catch {
      payload = text;
    }
    const { id, topic, metadata } = event;
    return JSON.stringify({ id, topic, sequence: Number(event.sequence || 0), timestamp: Number(event.timestamp || 0), metadata: metadata || {}, payload });
  }

  function setupEvents() {
    const section = document.getElementById('events');
    if (!section) return;
    const topicInput = document.getElementById('events-topic');
    const list = document.getElementById('events-list');
    const failure = document.getElementById('events-error');
    const done = document.getElementById('events-done');

    async function read() {
      say(failure, '');
      const request = {
        topic: topicInput.value.trim(),
        offset: String(Number(document.getElementById('events-offset').value) || 0),
        limit: String(Number(document.getElementById('events-limit').value) || 25),
      };
      try {
        const reply = await call('events/Store/Read', request);
        const events = reply.events || [];
        list.replaceChildren(...events.map((event) => el('li', { 'data-sequence': event.sequence }, el('code', { text: renderEvent(event) }))));
        if (events.length === 0) list.append(el('li', { class: 'placeholder', text: 'No events' }));
        list.hidden = false;
      } catch (err) {
        say(failure, err.message);
      }
    }

    document.getElementById('events-read').addEventListener('submit', (event) => {
      event.preventDefault();
      read();
    });
    document.getElementById('events-publish').addEventListener('submit', async (event) => {
      event.preventDefault();
      say(failure, '');
      say(done, '');
      const payload = document.getElementById('events-payload').value;
      try {
        JSON.parse(payload);
      } catch (err) {
        say(failure, `The payload is not valid JSON: ${err.message}`);
        return;
      }
      const topic = topicInput.value.trim();
      try {
        const reply = await call('events/Stream/Publish', { topic, payload: toBase64(payload) });
        say(done, `published to ${topic} (sequence ${reply.sequence || '?'})`);
      } catch (err) {
        say(failure, err.message);
        return;
      }
      read();
    });

    // Dead letters of a consumer group: `micro events dead|release|drop` (crates/micro-cli/src/events.rs).
    const deadTopic = document.getElementById('dead-topic');
    const deadGroup = document.getElementById('dead-group');
    const deadTable = document.getElementById('dead-table');
    const deadBody = deadTable.querySelector('tbody');
    const deadEvery = document.getElementById('dead-every');
    const deadActions = document.getElementById('dead-actions');
    const deadError = document.getElementById('dead-error');
    const deadDone = document.getElementById('dead-done');
    /** The topic and group the table shows (what release and drop act on). */
    let listed = null;

    async function listDead() {
      say(deadError, '');
      const scope = { topic: deadTopic.value.trim(), group: deadGroup.value.trim() };
      let letters;
      try {
        letters = (await call('events/Stream/DeadLetters', scope)).dead_letters || [];
      } catch (err) {
        say(deadError, err.message);
        return;
      }
      listed = scope;
      deadEvery.checked = false;
      deadBody.replaceChildren(
        ...letters.map((letter) => {
          const event = letter.event || {};
          return el(
            'tr',
            { 'data-id': event.id },
            el('td', {}, el('input', { type: 'checkbox', class: 'choose', value: event.id, 'aria-label': `choose ${event.id}` })),
            el('td', {}, el('code', { text: event.id })),
            el('td', { text: String(event.sequence || 0) }),
            el('td', { text: String(letter.attempts || 0) }),
            el('td', { text: time(letter.first_delivery_ms) }),
            el('td', { text: time(letter.last_delivery_ms) }),
            el('td', { class: 'last-error', text: (letter.error || '').split('\n')[0] }),
            el('td', {}, el('code', { text: fromBase64(event.payload) })),
          );
        }),
      );
      if (letters.length === 0) deadBody.append(el('tr', { class: 'placeholder' }, el('td', { colspan: 8, text: 'No dead letters' })));
      deadTable.hidden = false;
      deadActions.hidden = letters.length === 0;
      section.dataset.deadListed = String(Date.now());
    }

    /** Releases or drops the chosen dead letters (or all of them), as `micro events release|drop`. */
    async function settle(verb, all) {
      say(deadError, '');
      say(deadDone, '');
      if (!listed) return;
      const ids = all ? [] : [...deadBody.querySelectorAll('input.choose:checked')].map((box) => box.value);
      if (!all && ids.length === 0) {
        say(deadError, `Name the dead letters to ${verb} by event id, or give --all`);
        return;
      }
      const what = all ? `every dead letter of ${listed.group} on ${listed.topic}` : `${ids.length} dead letter${ids.length === 1 ? '' : 's'}`;
      if (verb === 'drop' && !(await ask(`Drop ${what}? They are removed for good.`, 'Drop'))) return;
      const endpoint = verb === 'drop' ? 'events/Stream/DropDeadLetters' : 'events/Stream/Release';
      try {
        const reply = await call(endpoint, { ...listed, ids, all });
        const done = reply.ids || [];
        say(deadDone, `${verb === 'drop' ? 'dropped' : 'released'} ${done.length}: ${done.join(', ')}`);
      } catch (err) {
        say(deadError, err.message);
      }
      listDead();
    }

    document.getElementById('dead-list').addEventListener('submit', (event) => {
      event.preventDefault();
      listDead();
    });
    deadEvery.addEventListener('change', () => {
      for (const box of deadBody.querySelectorAll('input.choose')) box.checked = deadEvery.checked;
    });
    document.getElementById('dead-release').addEventListener('click', () => settle('release', false));
    document.getElementById('dead-release-all').addEventListener('click', () => settle('release', true));
    document.getElementById('dead-drop').addEventListener('click', () => settle('drop', false));
    document.getElementById('dead-drop-all').addEventListener('click', () => settle('drop', true));

    const brokerTopic = document.getElementById('broker-topic');
    const brokerList = document.getElementById('broker-list');
    const brokerError = document.getElementById('broker-error');
    const brokerState = document.getElementById('broker-state');
    const stop = document.getElementById('broker-stop');
    let listening = null;

    document.getElementById('broker-subscribe').addEventListener('submit', async (event) => {
      event.preventDefault();
      if (listening) listening.abort();
      const controller = new AbortController();
      listening = controller;
      const topic = brokerTopic.value.trim();
      say(brokerError, '');
      brokerList.replaceChildren();
      brokerList.hidden = false;
      stop.disabled = false;
      brokerState.textContent = `subscribed to ${topic}`;
      section.dataset.subscribed = topic;
      try {
        // `micro broker subscribe TOPIC`: one line per message, as it is published.
        await call('broker/Broker/Subscribe', { topic }, {
          signal: controller.signal,
          onLine: (message) => brokerList.append(el('li', {}, el('code', { text: fromBase64(message.body) }))),
        });
        if (listening === controller) brokerState.textContent = 'ended';
      } catch (err) {
        if (controller.signal.aborted) brokerState.textContent = 'stopped';
        else say(brokerError, err.message);
      } finally {
        if (listening === controller) {
          listening = null;
          stop.disabled = true;
          delete section.dataset.subscribed;
        }
      }
    });
    stop.addEventListener('click', () => listening && listening.abort());
    document.getElementById('broker-publish').addEventListener('submit', async (event) => {
      event.preventDefault();
      say(brokerError, '');
      const body = document.getElementById('broker-body').value;
      try {
        await call('broker/Broker/Publish', { topic: brokerTopic.value.trim(), message: { body: toBase64(body) } });
      } catch (err) {
        say(brokerError, err.message);
      }
    });

    // The namespace's topics: a name fills every topic field of the page and reads it.
    const topicsBody = document.querySelector('#topics-table tbody');
    const topicsError = document.getElementById('topics-error');
    async function listTopics() {
      say(topicsError, '');
      let topics;
      try {
        topics = (await call('events/Stream/Topics', {})).topics || [];
      } catch (err) {
        say(topicsError, err.message);
        return;
      }
      topicsBody.replaceChildren(
        ...topics.map((topic) =>
          el(
            'tr',
            { 'data-topic': topic.name },
            el('td', {}, el('a', { href: '#', text: topic.name, onclick: (event) => {
              event.preventDefault();
              for (const input of [topicInput, deadTopic, brokerTopic]) input.value = topic.name;
              read();
            } })),
            el('td', { text: String(topic.events || 0) }),
            el('td', { text: String(topic.last_sequence || 0) }),
            el('td', { text: time(topic.last_timestamp_ms) }),
          ),
        ),
      );
      if (topics.length === 0) topicsBody.append(el('tr', { class: 'placeholder' }, el('td', { colspan: 4, text: 'No topics yet' })));
      section.dataset.topicsListed = String(Date.now());
    }
    document.getElementById('topics-reload').addEventListener('click', listTopics);

    if (topicInput.value) read();
    if (deadTopic.value && deadGroup.value) listDead();
    listTopics().then(() => {
      document.body.dataset.ready = 'events';
    });
  }

  // ---- scheduled jobs

  /** A job's schedule and action as `micro jobs list` prints them. */
  const schedule = (job) => (job.cron ? `cron ${job.cron}` : job.every ? `every ${job.every}` : `at ${time(job.at)}`);
  const action = (job) => (job.topic ? `publish ${job.topic}` : `call ${job.service} ${job.endpoint}`);

  function setupJobs() {
    const section = document.getElementById('jobs');
    if (!section) return;
    const body = document.querySelector('#jobs-table tbody');
    const failure = document.getElementById('jobs-error');
    const done = document.getElementById('jobs-done');
    const runs = document.getElementById('runs');
    const runsBody = document.querySelector('#runs-table tbody');
    const runsError = document.getElementById('runs-error');
    /** The job whose history is shown. */
    let shown = null;

    async function load() {
      say(failure, '');
      let jobs;
      try {
        jobs = (await call('jobs/Jobs/List', {})).jobs || [];
      } catch (err) {
        say(failure, err.message);
        return;
      }
      const button = (label, onclick, danger) =>
        el('button', { type: 'button', class: danger ? 'danger' : null, 'data-action': label.toLowerCase().replace(' ', '-'), text: label, onclick });
      body.replaceChildren(
        ...jobs.map((job) =>
          el(
            'tr',
            { 'data-job': job.name },
            el('td', {}, el('code', { text: job.name })),
            el('td', { text: schedule(job) }),
            el('td', { text: action(job) }),
            el('td', { text: job.missed || 'skip' }),
            el('td', { text: time(job.next) }),
            el('td', { text: job.owner || '' }),
            el(
              'td',
              { class: 'row-actions' },
              button('Run now', () => run(job.name)),
              button('History', () => history(job.name)),
              button('Delete', () => remove(job.name), true),
            ),
          ),
        ),
      );
      if (jobs.length === 0) body.append(el('tr', { class: 'placeholder' }, el('td', { colspan: 7, text: 'No jobs' })));
      section.dataset.listed = String(Date.now());
    }

    async function history(name) {
      shown = name;
      say(runsError, '');
      document.getElementById('runs-job').textContent = name;
      runs.hidden = false;
      let found;
      try {
        found = (await call('jobs/Jobs/History', { name, limit: 25 })).runs || [];
      } catch (err) {
        say(runsError, err.message);
        found = [];
      }
      runsBody.replaceChildren(
        ...found.map((r) =>
          el(
            'tr',
            { 'data-outcome': r.outcome },
            el('td', { text: time(r.scheduled) }),
            el('td', { text: time(r.started) }),
            el('td', { text: time(r.finished) }),
            el('td', {}, el('code', { text: r.server || '' })),
            el('td', { text: Number(r.missed) > 0 ? `${r.trigger} (${r.missed} missed)` : r.trigger || '' }),
            el('td', { class: `outcome ${r.outcome || ''}`, text: r.outcome || '' }),
            el('td', { class: 'last-error', text: r.error || '' }),
          ),
        ),
      );
      if (found.length === 0) runsBody.append(el('tr', { class: 'placeholder' }, el('td', { colspan: 7, text: 'No runs yet' })));
      runs.dataset.listed = String(Date.now());
    }

    async function run(name) {
      say(failure, '');
      say(done, '');
      try {
        const r = (await call('jobs/Jobs/Run', { name })).run || {};
        // As `micro jobs run`: a failure says why.
        if (r.outcome === 'ok') say(done, `ran ${name}: ok`);
        else say(failure, `The job failed: ${r.error || r.outcome}`);
      } catch (err) {
        say(failure, err.message);
      }
      await history(name);
      load();
    }

    async function remove(name) {
      if (!(await ask(`Delete job ${name} and its history?`, 'Delete'))) return;
      say(failure, '');
      say(done, '');
      try {
        await call('jobs/Jobs/Delete', { name });
        say(done, `deleted ${name}`);
        if (shown === name) runs.hidden = true;
      } catch (err) {
        say(failure, err.message);
      }
      load();
    }

    const form = document.getElementById('job-create');
    const formError = document.getElementById('job-error');
    const formDone = document.getElementById('job-done');
    const value = (id) => document.getElementById(id).value.trim();
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      say(formError, '');
      say(formDone, '');
      const kind = value('job-kind');
      const when = value('job-schedule');
      const job = { name: value('job-name'), topic: value('job-topic'), service: value('job-service'), endpoint: value('job-endpoint'), data: value('job-data'), missed: value('job-missed') };
      try {
        if (job.data) JSON.parse(job.data);
        if (kind === 'at') {
          // As `--at`: an RFC 3339 time, or +DURATION from now.
          const at = when.startsWith('+') ? Date.now() + parseExpiry(when.slice(1)) : Date.parse(when);
          if (!Number.isFinite(at)) throw new Error(`Invalid --at ${when}: give an RFC 3339 time such as 2030-01-02T03:04:05Z, or +10m`);
          job.at = String(at);
        } else {
          job[kind] = when;
        }
        await call('jobs/Jobs/Create', { job });
      } catch (err) {
        say(formError, err.message);
        return;
      }
      say(formDone, `created ${job.name}`);
      form.reset();
      load();
    });
    document.getElementById('jobs-reload').addEventListener('click', load);
    document.getElementById('runs-reload').addEventListener('click', () => shown && history(shown));

    load().then(() => {
      document.body.dataset.ready = 'jobs';
    });
  }

  setupStore();
  setupConfig();
  setupEvents();
  setupJobs();
})();
