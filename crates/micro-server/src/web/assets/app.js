// The micro dashboard's one script (docs/web.md). Pages are rendered by the server; this adds
// logging in and out, the endpoint form built from the request's description, the call and
// its answer, and the "copy as" commands. No framework, no build step: edit and reload.
'use strict';

(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || '';
  const namespace = document.body.dataset.namespace || 'micro';

  /** Headers every API request carries: the CSRF proof and the namespace it acts in. */
  const apiHeaders = (extra) => Object.assign({ 'X-CSRF-Token': csrf, 'Micro-Namespace': namespace }, extra);

  /** A new element with attributes (`text` sets its text, `on*` adds listeners) and children. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'text') node.textContent = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  /** The `Detail` of an error answer (the gateway's JSON), else its text. */
  async function detailOf(response) {
    const text = await response.text();
    try {
      const error = JSON.parse(text);
      return error.Detail || text;
    } catch {
      return text || `HTTP ${response.status}`;
    }
  }

  /** A session that expired mid-page: back to the login page, which says so. */
  async function expired(response) {
    if (response.status !== 401) return false;
    const body = await response.clone().json().catch(() => ({}));
    if (body.Id !== 'micro.web') return false;
    location.assign('/login?expired=1');
    return true;
  }

  // ---- log in, log out

  function setupLogin() {
    const form = document.getElementById('login');
    if (!form) return;
    const error = document.getElementById('login-error');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.hidden = true;
      const button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      const login = {
        username: form.elements.username.value,
        password: form.elements.password.value,
        namespace: form.elements.namespace.value.trim() || 'micro',
      };
      try {
        const response = await fetch('/api/login', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
          body: JSON.stringify(login),
          credentials: 'same-origin',
        });
        if (response.ok) {
          location.assign('/services');
          return;
        }
        error.textContent = await detailOf(response);
        error.hidden = false;
      } catch (err) {
        error.textContent = `The server cannot be reached: ${err.message}`;
        error.hidden = false;
      } finally {
        button.disabled = false;
      }
    });
  }

  function setupLogout() {
    const button = document.getElementById('logout');
    if (!button) return;
    button.addEventListener('click', async () => {
      await fetch('/api/logout', { method: 'POST', headers: apiHeaders(), credentials: 'same-origin' }).catch(() => {});
      location.assign('/login');
    });
  }

  // ---- the form, built from /api/describe

  const INTS = new Set(['int32', 'uint32', 'sint32', 'fixed32', 'sfixed32']);
  const LONGS = new Set(['int64', 'uint64', 'sint64', 'fixed64', 'sfixed64']);
  const FLOATS = new Set(['float', 'double']);
  const PLACEHOLDERS = {
    bytes: 'base64',
    timestamp: '2025-01-31T12:00:00Z',
    duration: '1.5s',
    field_mask: 'a,b.c',
  };
  let nextId = 0;

  /** How a field's type reads: `string`, `repeated int64`, `map<string, Foo>`, `Foo`. */
  function typeName(type) {
    if (type.kind === 'map') return `map<${typeName(type.map.key)}, ${typeName(type.map.value)}>`;
    const base = type.type || type.kind;
    return (type.repeated ? 'repeated ' : '') + base + (type.wrapper ? ' (nullable)' : '');
  }

  /**
   * One value of `type` ({kind, type}): an input and `get()`, which returns its JSON value,
   * `undefined` when left empty, or throws an Error naming the field.
   */
  function valueInput(desc, type, path, label, open) {
    const id = `f${++nextId}`;
    switch (type.kind) {
      case 'message':
        return messageInput(desc, type.type, path, label, id, open);
      case 'enum': {
        const select = el('select', { id, name: path }, el('option', { value: '', text: '—' }));
        for (const value of desc.enums[type.type] || []) {
          select.append(el('option', { value: value.name, text: `${value.name} (${value.number})` }));
        }
        return { node: select, id, get: () => select.value || undefined };
      }
      case 'bool': {
        const select = el(
          'select',
          { id, name: path },
          el('option', { value: '', text: '—' }),
          el('option', { value: 'true', text: 'true' }),
          el('option', { value: 'false', text: 'false' }),
        );
        return { node: select, id, get: () => (select.value === '' ? undefined : select.value === 'true') };
      }
      case 'json': {
        const area = el('textarea', { id, name: path, rows: 3, spellcheck: 'false', placeholder: 'JSON' });
        const get = () => {
          const text = area.value.trim();
          if (!text) return undefined;
          try {
            return JSON.parse(text);
          } catch (err) {
            throw new Error(`${path}: ${err.message}`);
          }
        };
        return { node: area, id, get };
      }
      default: {
        const numeric = INTS.has(type.kind) || FLOATS.has(type.kind);
        const input = el('input', {
          id,
          name: path,
          type: numeric ? 'number' : 'text',
          step: FLOATS.has(type.kind) ? 'any' : undefined,
          placeholder: PLACEHOLDERS[type.kind] || type.kind,
          spellcheck: 'false',
          autocomplete: 'off',
        });
        const get = () => {
          const text = input.value;
          if (text === '') return undefined;
          if (INTS.has(type.kind)) {
            const number = Number(text);
            if (!Number.isInteger(number)) throw new Error(`${path}: ${text} is not an integer`);
            return number;
          }
          if (FLOATS.has(type.kind)) {
            const number = Number(text);
            if (Number.isNaN(number)) throw new Error(`${path}: ${text} is not a number`);
            return number;
          }
          // 64-bit integers are strings in protobuf-JSON: JavaScript numbers lose digits.
          if (LONGS.has(type.kind)) {
            if (!/^-?\d+$/.test(text.trim())) throw new Error(`${path}: ${text} is not an integer`);
            return text.trim();
          }
          return text;
        };
        return { node: input, id, get };
      }
    }
  }

  /** A nested message: a <details> whose fields are built when first opened (so recursive
   * messages stay finite); empty while never opened. */
  function messageInput(desc, type, path, label, id, open) {
    const details = el(
      'details',
      { id, class: 'message', 'data-path': path },
      el('summary', {}, label ? el('span', { class: 'name', text: label }) : null, ' ', el('small', { text: type })),
    );
    let get = () => undefined;
    const build = () => {
      if (details.dataset.built) return;
      details.dataset.built = '1';
      const body = el('div', { class: 'fields' });
      get = messageFields(desc, type, path, body);
      details.append(body);
    };
    details.addEventListener('toggle', () => details.open && build());
    if (open) {
      details.open = true;
      build();
    }
    return { node: details, id, labelled: true, get: () => get() };
  }

  /** The fields of message `type` into `container`; returns the getter of the whole message. */
  function messageFields(desc, type, prefix, container) {
    const message = desc.messages[type] || { fields: [] };
    if (message.fields.length === 0) container.append(el('p', { class: 'empty', text: 'no fields' }));
    const getters = message.fields.map((field) => {
      const input = fieldInput(desc, field, prefix);
      container.append(input.node);
      return [field.name, input.get];
    });
    return () => {
      const out = {};
      for (const [name, get] of getters) {
        const value = get();
        if (value !== undefined) out[name] = value;
      }
      return Object.keys(out).length ? out : undefined;
    };
  }

  /** One field with its label: a value, a list or a map. */
  function fieldInput(desc, field, prefix) {
    const path = prefix ? `${prefix}.${field.name}` : field.name;
    const notes = [typeName(field)];
    if (field.oneof) notes.push(`oneof ${field.oneof}`);
    if (field.optional) notes.push('optional');
    const note = notes.join(' · ');
    if (field.kind === 'map') return mapInput(desc, field, path, note);
    if (field.repeated) return listInput(desc, field, path, note);
    const value = valueInput(desc, field, path, field.name, false);
    if (value.labelled) {
      return { node: el('div', { class: 'field' }, value.node), get: value.get };
    }
    const label = el('label', { for: value.id }, el('span', { class: 'name', text: field.name }), ' ', el('small', { text: note }));
    return { node: el('div', { class: 'field' }, label, value.node), get: value.get };
  }

  /** A repeated field: items added and removed one by one. */
  function listInput(desc, field, path, note) {
    const items = el('ol', { class: 'items', start: 0 });
    const getters = new Map();
    let count = 0;
    const add = () => {
      const type = { kind: field.kind, type: field.type };
      const value = valueInput(desc, type, `${path}[${count++}]`, null, true);
      const item = el('li', {}, value.node);
      item.append(el('button', { type: 'button', class: 'remove', title: 'Remove', text: '×', onclick: () => {
        getters.delete(item);
        item.remove();
      } }));
      getters.set(item, () => value.get() ?? (field.kind === 'message' ? {} : undefined));
      items.append(item);
    };
    const node = el(
      'fieldset',
      { class: 'field list', 'data-path': path },
      el('legend', {}, el('span', { class: 'name', text: field.name }), ' ', el('small', { text: note })),
      items,
      el('button', { type: 'button', class: 'add', text: '+ add', onclick: add }),
    );
    const get = () => {
      const out = [];
      for (const item of items.children) {
        const value = getters.get(item)?.();
        if (value !== undefined) out.push(value);
      }
      return out.length ? out : undefined;
    };
    return { node, get };
  }

  /** A map field: key/value entries. */
  function mapInput(desc, field, path, note) {
    const entries = el('ol', { class: 'items map' });
    const getters = new Map();
    let count = 0;
    const add = () => {
      const n = count++;
      const key = valueInput(desc, field.map.key, `${path}[${n}].key`, null, false);
      const value = valueInput(desc, field.map.value, `${path}[${n}].value`, null, true);
      key.node.setAttribute('placeholder', 'key');
      const entry = el('li', {}, key.node, el('span', { class: 'arrow', text: '→' }), value.node);
      entry.append(el('button', { type: 'button', class: 'remove', title: 'Remove', text: '×', onclick: () => {
        getters.delete(entry);
        entry.remove();
      } }));
      getters.set(entry, [key.get, value.get]);
      entries.append(entry);
    };
    const node = el(
      'fieldset',
      { class: 'field list', 'data-path': path },
      el('legend', {}, el('span', { class: 'name', text: field.name }), ' ', el('small', { text: note })),
      entries,
      el('button', { type: 'button', class: 'add', text: '+ add entry', onclick: add }),
    );
    const fallback = { message: {}, string: '', bytes: '' };
    const get = () => {
      const out = {};
      for (const entry of entries.children) {
        const [keyOf, valueOf] = getters.get(entry) || [];
        if (!keyOf) continue;
        const key = keyOf();
        if (key === undefined) throw new Error(`${path}: an entry has no key`);
        const value = valueOf() ?? fallback[field.map.value.kind];
        if (value !== undefined) out[String(key)] = value;
      }
      return Object.keys(out).length ? out : undefined;
    };
    return { node, get };
  }

  // ---- copy as

  const quote = (text) => `'${String(text).replace(/'/g, `'\\''`)}'`;
  const bare = (text) => /^[A-Za-z0-9_.,:/@+=-]+$/.test(text);
  const TOKEN = '$(micro user token)';

  function curlCommand(desc, body) {
    const parts = ['curl'];
    if (desc.server_streaming) parts.push('-N');
    parts.push(quote(desc.api_url + desc.path), '-H', quote('Content-Type: application/json'));
    if (namespace !== 'micro') parts.push('-H', quote(`Micro-Namespace: ${namespace}`));
    parts.push('-H', `"Authorization: Bearer ${TOKEN}"`, '-d', quote(JSON.stringify(body)));
    return parts.join(' ');
  }

  function microFlag(name, value) {
    if (typeof value === 'boolean') return value ? `--${name}` : `--${name}=false`;
    if (typeof value === 'number') return `--${name}=${value}`;
    if (typeof value === 'string') return `--${name}=${bare(value) ? value : quote(value)}`;
    return `--${name}=${quote(JSON.stringify(value))}`;
  }

  function microCommand(desc, body) {
    const parts = [desc.cli];
    for (const [name, value] of Object.entries(body)) {
      for (const item of Array.isArray(value) ? value : [value]) parts.push(microFlag(name, item));
    }
    const command = parts.join(' ');
    return namespace === 'micro' ? command : `# in namespace ${namespace}: micro user namespace set ${namespace}\n${command}`;
  }

  function bufCommand(desc, body) {
    const parts = ['buf curl', '--protocol grpc'];
    if (desc.proxy_url.startsWith('http:')) parts.push('--http2-prior-knowledge');
    // Reflection on the gRPC listener lists the core services; others need their proto.
    if (!desc.core) parts.push('--schema', quote(desc.proto_file));
    parts.push('-H', quote(`micro-namespace: ${namespace}`), '-H', `"authorization: Bearer ${TOKEN}"`);
    parts.push('-d', quote(JSON.stringify(body)), quote(desc.proxy_url + desc.grpc_path));
    return parts.join(' ');
  }

  // ---- the endpoint page

  async function setupEndpoint() {
    const section = document.getElementById('call');
    if (!section) return;
    const form = document.getElementById('request-form');
    const json = document.getElementById('request-json');
    const send = document.getElementById('send');
    const tabForm = document.getElementById('tab-form');
    const tabJson = document.getElementById('tab-json');
    const command = document.getElementById('command');
    const result = document.getElementById('result');
    const status = document.getElementById('status');
    const latency = document.getElementById('latency');
    const count = document.getElementById('count');
    const output = document.getElementById('response');
    const messages = document.getElementById('messages');

    const { service, endpoint } = section.dataset;
    const describeUrl = `/api/describe/${encodeURIComponent(service)}/${encodeURIComponent(endpoint)}`;
    const described = await fetch(describeUrl, { headers: apiHeaders(), credentials: 'same-origin' });
    if (await expired(described)) return;
    if (!described.ok) {
      form.replaceChildren(el('p', { class: 'error', text: await detailOf(described) }));
      return;
    }
    const desc = await described.json();
    form.replaceChildren();
    const collect = messageFields(desc, desc.input, '', form);
    form.removeAttribute('aria-busy');
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      send.click();
    });

    let jsonMode = false;
    const request = () => {
      if (!jsonMode) return collect() || {};
      const text = json.value.trim();
      if (!text) return {};
      const value = JSON.parse(text);
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        throw new Error('the request must be a JSON object');
      }
      return value;
    };
    const showError = (message) => {
      result.hidden = false;
      status.textContent = 'not sent';
      status.className = 'failed';
      latency.textContent = '';
      count.textContent = '';
      output.textContent = message;
      messages.replaceChildren();
    };
    tabForm.addEventListener('click', () => {
      jsonMode = false;
      tabForm.classList.add('on');
      tabJson.classList.remove('on');
      form.hidden = false;
      json.hidden = true;
    });
    tabJson.addEventListener('click', () => {
      try {
        json.value = JSON.stringify(collect() || {}, null, 2);
      } catch (err) {
        showError(err.message);
        return;
      }
      jsonMode = true;
      tabJson.classList.add('on');
      tabForm.classList.remove('on');
      form.hidden = true;
      json.hidden = false;
      json.focus();
    });

    for (const button of section.querySelectorAll('[data-copy]')) {
      button.addEventListener('click', () => {
        let body;
        try {
          body = request();
        } catch (err) {
          showError(err.message);
          return;
        }
        const make = { curl: curlCommand, micro: microCommand, buf: bufCommand }[button.dataset.copy];
        const text = make(desc, body);
        command.textContent = text;
        command.dataset.kind = button.dataset.copy;
        command.hidden = false;
        navigator.clipboard?.writeText(text).catch(() => {});
      });
    }

    if (desc.client_streaming) {
      section.append(el('p', {
        class: 'notice',
        text: 'This endpoint takes a stream of requests, which the dashboard cannot send yet: use `micro stream` or a websocket to the gateway.',
      }));
    } else {
      send.disabled = false;
    }

    send.addEventListener('click', async () => {
      let body;
      try {
        body = request();
      } catch (err) {
        showError(err.message);
        return;
      }
      send.disabled = true;
      result.hidden = false;
      status.textContent = '…';
      status.className = '';
      latency.textContent = '';
      count.textContent = '';
      output.textContent = '';
      messages.replaceChildren();
      const started = performance.now();
      const elapsed = () => `${(performance.now() - started).toFixed(1)} ms`;
      try {
        const response = await fetch(`/api/call${desc.path}`, {
          method: 'POST',
          headers: apiHeaders({ 'Content-Type': 'application/json' }),
          body: JSON.stringify(body),
          credentials: 'same-origin',
        });
        if (await expired(response)) return;
        status.textContent = `${response.status}${response.statusText ? ` ${response.statusText}` : ''}`;
        status.className = response.ok ? 'ok' : 'failed';
        if (desc.server_streaming && response.ok && response.body) {
          await readStream(response, messages, count, () => {
            latency.textContent = `first message after ${elapsed()}`;
          });
          latency.textContent += `${latency.textContent ? ', ' : ''}ended after ${elapsed()}`;
        } else {
          const text = await response.text();
          latency.textContent = elapsed();
          output.textContent = pretty(text);
        }
        result.dataset.done = String(Date.now());
      } catch (err) {
        status.textContent = 'failed';
        status.className = 'failed';
        output.textContent = `The call did not complete: ${err.message}`;
      } finally {
        send.disabled = false;
      }
    });

    performance.mark('micro:form-ready');
    document.body.dataset.ready = 'form';
  }

  /** `text` as indented JSON when it is JSON. */
  function pretty(text) {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      return text;
    }
  }

  /** Calls `onLine(text)` for each line of `response`'s body as it arrives (a server stream:
   * one JSON object per line); the last line may lack its newline. */
  async function readLines(response, onLine) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        onLine(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
      }
    }
    onLine(buffered + decoder.decode());
  }

  /** Whether `value` is the gateway's error JSON (a stream ends with one when it fails). */
  const isError = (value) => value && typeof value === 'object' && 'Id' in value && 'Code' in value && 'Detail' in value;

  /** A server stream: one JSON object per line, each shown as it arrives; a line that is the
   * gateway's error JSON ends it. */
  async function readStream(response, list, count, first) {
    let seen = 0;
    await readLines(response, (line) => {
      if (!line.trim()) return;
      let value;
      try {
        value = JSON.parse(line);
      } catch {
        value = line;
      }
      if (seen === 0) first();
      seen += 1;
      list.append(el('li', { class: isError(value) ? 'error' : 'message' }, el('code', { text: JSON.stringify(value) })));
      count.textContent = `${seen} message${seen === 1 ? '' : 's'}`;
    });
    if (seen === 0) count.textContent = 'no messages';
  }

  /** Throws for a failed `/api/` answer an Error whose `status` is the HTTP status and whose
   * message is the gateway's `Detail` (an expired session goes to the login page first). */
  async function check(response) {
    if (await expired(response)) throw Object.assign(new Error('the session has expired'), { status: 401 });
    if (!response.ok) throw Object.assign(new Error(await detailOf(response)), { status: response.status });
  }

  /** The JSON answer of one of the dashboard's own reads, `GET /api/<path>` (e.g.
   * `get('service-name?source=…')`); a failure throws as `call`'s do. */
  async function get(path) {
    const response = await fetch(`/api/${path}`, { headers: apiHeaders(), credentials: 'same-origin' });
    await check(response);
    return response.json();
  }

  /**
   * Calls a service endpoint through `/api/call` (the gateway's own path), e.g.
   * `call('store/Store/Read', {key})`: its JSON answer, or an Error whose `status` is the HTTP
   * status and whose message is the gateway's `Detail`. With `onLine`, a server stream: each
   * message is passed to it as it arrives, and a failure mid-stream throws.
   */
  async function call(path, body, { onLine, signal } = {}) {
    const response = await fetch(`/api/call/${path}`, {
      method: 'POST',
      headers: apiHeaders({ 'Content-Type': 'application/json' }),
      body: JSON.stringify(body || {}),
      credentials: 'same-origin',
      signal,
    });
    await check(response);
    if (!onLine) {
      const text = await response.text();
      return text ? JSON.parse(text) : {};
    }
    let failure = null;
    await readLines(response, (line) => {
      if (!line.trim() || failure) return;
      const value = JSON.parse(line);
      if (isError(value)) failure = Object.assign(new Error(value.Detail), { status: value.Code });
      else onLine(value);
    });
    if (failure) throw failure;
    return null;
  }

  /** Asks for a yes in a modal dialog of the page (`confirm()` would block the page and
   * cannot be styled): resolves to whether `action` was clicked. */
  function ask(question, action) {
    return new Promise((resolve) => {
      const dialog = el('dialog', { class: 'confirm', id: 'confirm' });
      const finish = (yes) => {
        dialog.close();
        dialog.remove();
        resolve(yes);
      };
      dialog.append(
        el('p', { text: question }),
        el(
          'div',
          { class: 'actions' },
          el('button', { type: 'button', class: 'danger', id: 'confirm-yes', text: action, onclick: () => finish(true) }),
          el('button', { type: 'button', id: 'confirm-no', text: 'Cancel', onclick: () => finish(false) }),
        ),
      );
      dialog.addEventListener('cancel', () => finish(false));
      document.body.append(dialog);
      dialog.showModal();
    });
  }

  /** Shows `message` in element `node` (hidden when empty). */
  function say(node, message) {
    node.textContent = message || '';
    node.hidden = !message;
  }

  // What the pages' own scripts (runtime.js, data.js, admin.js) use.
  window.micro = Object.freeze({ el, call, get, ask, say });

  setupLogin();
  setupLogout();
  setupEndpoint().catch((err) => {
    const form = document.getElementById('request-form');
    if (form) form.replaceChildren(el('p', { class: 'error', text: `The form cannot be built: ${err.message}` }));
  });
})();
