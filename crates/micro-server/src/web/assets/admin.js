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

  function setupAccounts() {
    const section = document.getElementById('accounts');
    if (!section) return null;
    const body = document.querySelector('#accounts-table tbody');
    const failure = document.getElementById('accounts-error');
    const form = document.getElementById('account-create');
    const formError = document.getElementById('account-error');
    const done = document.getElementById('account-done');

    async function load() {
      say(failure, '');
      let reply;
      try {
        reply = await call('auth/Accounts/List', {});
      } catch (err) {
        say(failure, err.message);
        return;
      }
      const accounts = (reply.accounts || []).slice().sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      body.replaceChildren(
        ...accounts.map((account) => {
          const scopes = account.scopes || [];
          const metadata = Object.entries(account.metadata || {}).map(([k, v]) => `${k}=${v}`).sort();
          return el(
            'tr',
            { 'data-account': account.id },
            el('td', {}, el('code', { text: account.id })),
            el('td', { text: account.name || '' }),
            el('td', { text: account.type || '' }),
            el('td', { text: scopes.length ? scopes.join(', ') : 'n/a' }),
            el('td', { text: account.issuer || '' }),
            el('td', { class: 'metadata', text: metadata.length ? metadata.join(' ') : 'n/a' }),
            el('td', {}, el('button', {
              type: 'button',
              class: 'danger',
              'data-action': 'delete',
              text: 'Delete',
              onclick: () => remove(account.id),
            })),
          );
        }),
      );
      if (accounts.length === 0) body.append(el('tr', { class: 'placeholder' }, el('td', { colspan: 7, text: 'No accounts' })));
      section.dataset.listed = String(Date.now());
    }

    async function remove(id) {
      if (!(await ask(`Delete account ${id}?`, 'Delete'))) return;
      say(failure, '');
      say(done, '');
      try {
        await call('auth/Accounts/Delete', { id });
      } catch (err) {
        say(failure, err.message);
      }
      await load();
    }

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      say(formError, '');
      say(done, '');
      const request = {
        id: document.getElementById('account-id').value.trim(),
        secret: document.getElementById('account-secret').value,
        scopes: scopesOf(document.getElementById('account-scopes').value),
        type: document.getElementById('account-type').value.trim(),
      };
      let reply;
      try {
        reply = await call('auth/Auth/Generate', request);
      } catch (err) {
        say(formError, err.message);
        return;
      }
      const account = reply.account || {};
      // As `micro auth create account`: the secret is shown this once.
      say(done, account.secret && !request.secret ? `Account created: ${account.id}, secret ${account.secret}` : `Account created: ${account.id}`);
      document.getElementById('account-secret').value = '';
      await load();
    });

    return load;
  }

  function setupRules() {
    const section = document.getElementById('rules');
    if (!section) return null;
    const body = document.querySelector('#rules-table tbody');
    const failure = document.getElementById('rules-error');
    const form = document.getElementById('rule-create');
    const formError = document.getElementById('rule-error');
    const done = document.getElementById('rule-done');

    async function load() {
      say(failure, '');
      let reply;
      try {
        reply = await call('auth/Rules/List', {});
      } catch (err) {
        say(failure, err.message);
        return;
      }
      // As `micro auth list rules`: higher priorities first, then by id.
      const rules = (reply.rules || []).slice().sort((a, b) =>
        (Number(b.priority || 0) - Number(a.priority || 0)) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      body.replaceChildren(
        ...rules.map((rule) => {
          const resource = rule.resource ? `${rule.resource.type || ''}:${rule.resource.name || ''}:${rule.resource.endpoint || ''}` : '';
          return el(
            'tr',
            { 'data-rule': rule.id },
            el('td', {}, el('code', { text: rule.id })),
            el('td', { text: rule.scope ? rule.scope : '<public>' }),
            el('td', { text: accessOf(rule.access) }),
            el('td', {}, el('code', { text: resource })),
            el('td', { text: String(rule.priority || 0) }),
            el('td', {}, el('button', {
              type: 'button',
              class: 'danger',
              'data-action': 'delete',
              text: 'Delete',
              onclick: () => remove(rule.id),
            })),
          );
        }),
      );
      if (rules.length === 0) body.append(el('tr', { class: 'placeholder' }, el('td', { colspan: 6, text: 'No rules' })));
      section.dataset.listed = String(Date.now());
    }

    async function remove(id) {
      if (!(await ask(`Delete rule ${id}?`, 'Delete'))) return;
      say(failure, '');
      say(done, '');
      try {
        await call('auth/Rules/Delete', { id });
        say(done, 'Rule deleted');
      } catch (err) {
        say(failure, err.message);
      }
      await load();
    }

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      say(formError, '');
      say(done, '');
      const value = (id) => document.getElementById(id).value.trim();
      const resource = { type: value('rule-type'), name: value('rule-name'), endpoint: value('rule-endpoint') };
      if (!resource.type || !resource.name || !resource.endpoint) {
        say(formError, 'Invalid resource, must be in the format type:name:endpoint');
        return;
      }
      const priority = Number(value('rule-priority') || '0');
      if (!Number.isInteger(priority)) {
        say(formError, `invalid priority ${value('rule-priority')}: use an integer`);
        return;
      }
      const rule = {
        id: value('rule-id'),
        scope: value('rule-scope'),
        resource,
        access: document.getElementById('rule-access').value,
        priority,
      };
      try {
        await call('auth/Rules/Create', { rule });
      } catch (err) {
        say(formError, err.message);
        return;
      }
      say(done, 'Rule created');
      await load();
    });

    return load;
  }

  const loads = [setupAccounts(), setupRules()].filter(Boolean);
  if (loads.length) {
    Promise.all(loads.map((load) => load())).then(() => {
      document.body.dataset.ready = 'accounts';
    });
  }
})();
