// The Accounts and rules page (docs/web.md#accounts-and-rules). Every call goes through
// /api/call/auth/... (the gateway's own path and admission), with what `micro auth list`,
// `create` and `delete` show and say (crates/micro-cli/src/auth.rs).
'use strict';

(() => {
  const { el, call, ask, say } = window.micro;

  /** An access as `micro auth list rules` prints it; the wire has the name or the number. */
  const ACCESS = { GRANTED: 'GRANTED', DENIED: 'DENIED', 1: 'GRANTED', 2: 'DENIED' };
  const accessOf = (value) => ACCESS[value] || 'UNKNOWN';

  /** Comma-separated scopes, as `--scopes a,b` takes them. */
  const scopesOf = (text) => text.split(',').map((scope) => scope.trim()).filter(Boolean);

  /** By id, as `micro auth list` sorts. */
  const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

  const value = (id) => document.getElementById(id).value.trim();

  /**
   * The table of a `noun` (`account`: `#accounts`, `#accounts-table`, `#account-create`, …) and
   * the form that creates one. `load()` lists them (`auth.<handler>/List`) sorted by `order`,
   * a row of `cells(item)` each with a Delete button that asks first, then calls
   * `auth.<handler>/Delete` (saying `deleted` when given); the form's `create()` resolves to what
   * to say, or throws what went wrong.
   */
  function table(noun, handler, { order, cells, deleted, create }) {
    const section = document.getElementById(`${noun}s`);
    const body = document.querySelector(`#${noun}s-table tbody`);
    const columns = section.querySelectorAll('thead th').length;
    const failure = document.getElementById(`${noun}s-error`);
    const formError = document.getElementById(`${noun}-error`);
    const done = document.getElementById(`${noun}-done`);

    async function load() {
      say(failure, '');
      let reply;
      try {
        reply = await call(`auth/${handler}/List`, {});
      } catch (err) {
        say(failure, err.message);
        return;
      }
      const items = (reply[`${noun}s`] || []).slice().sort(order);
      body.replaceChildren(
        ...items.map((item) =>
          el(
            'tr',
            { [`data-${noun}`]: item.id },
            ...cells(item),
            el('td', {}, el('button', {
              type: 'button',
              class: 'danger',
              'data-action': 'delete',
              text: 'Delete',
              onclick: () => remove(item.id),
            })),
          ),
        ),
      );
      if (items.length === 0) body.append(el('tr', { class: 'placeholder' }, el('td', { colspan: columns, text: `No ${noun}s` })));
      section.dataset.listed = String(Date.now());
    }

    async function remove(id) {
      if (!(await ask(`Delete ${noun} ${id}?`, 'Delete'))) return;
      say(failure, '');
      say(done, '');
      try {
        await call(`auth/${handler}/Delete`, { id });
        if (deleted) say(done, deleted);
      } catch (err) {
        say(failure, err.message);
      }
      await load();
    }

    document.getElementById(`${noun}-create`).addEventListener('submit', async (event) => {
      event.preventDefault();
      say(formError, '');
      say(done, '');
      let said;
      try {
        said = await create();
      } catch (err) {
        say(formError, err.message);
        return;
      }
      say(done, said);
      await load();
    });

    return load;
  }

  const accounts = table('account', 'Accounts', {
    order: byId,
    cells: (account) => {
      const scopes = account.scopes || [];
      const metadata = Object.entries(account.metadata || {}).map(([k, v]) => `${k}=${v}`).sort();
      return [
        el('td', {}, el('code', { text: account.id })),
        el('td', { text: account.name || '' }),
        el('td', { text: account.type || '' }),
        el('td', { text: scopes.length ? scopes.join(', ') : 'n/a' }),
        el('td', { text: account.issuer || '' }),
        el('td', { class: 'metadata', text: metadata.length ? metadata.join(' ') : 'n/a' }),
      ];
    },
    create: async () => {
      const secret = document.getElementById('account-secret');
      const request = {
        id: value('account-id'),
        secret: secret.value,
        scopes: scopesOf(value('account-scopes')),
        type: value('account-type'),
      };
      const account = (await call('auth/Auth/Generate', request)).account || {};
      secret.value = '';
      // As `micro auth create account`: the secret is shown this once.
      return account.secret && !request.secret ? `Account created: ${account.id}, secret ${account.secret}` : `Account created: ${account.id}`;
    },
  });

  const rules = table('rule', 'Rules', {
    // As `micro auth list rules`: higher priorities first, then by id.
    order: (a, b) => (Number(b.priority || 0) - Number(a.priority || 0)) || byId(a, b),
    cells: (rule) => {
      const resource = rule.resource ? `${rule.resource.type || ''}:${rule.resource.name || ''}:${rule.resource.endpoint || ''}` : '';
      return [
        el('td', {}, el('code', { text: rule.id })),
        el('td', { text: rule.scope ? rule.scope : '<public>' }),
        el('td', { text: accessOf(rule.access) }),
        el('td', {}, el('code', { text: resource })),
        el('td', { text: String(rule.priority || 0) }),
      ];
    },
    deleted: 'Rule deleted',
    create: async () => {
      const resource = { type: value('rule-type'), name: value('rule-name'), endpoint: value('rule-endpoint') };
      if (!resource.type || !resource.name || !resource.endpoint) {
        throw new Error('Invalid resource, must be in the format type:name:endpoint');
      }
      const priority = Number(value('rule-priority') || '0');
      if (!Number.isInteger(priority)) throw new Error(`invalid priority ${value('rule-priority')}: use an integer`);
      const rule = { id: value('rule-id'), scope: value('rule-scope'), resource, access: value('rule-access'), priority };
      await call('auth/Rules/Create', { rule });
      return 'Rule created';
    },
  });

  Promise.all([accounts(), rules()]).then(() => {
    document.body.dataset.ready = 'accounts';
  });
})();
