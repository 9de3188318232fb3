// The UI's entry: the login page, the header, and a router from the URL's hash (#/queues,
// #/queues/<vhost>/<name>, #/exchanges/<vhost>/<name>, ...) to the page modules. Each page
// returns a function that stops its polling when another page is shown.

import { login, logout, session, whenUnauthorised } from '/ui/api.js';
import { h, fill, flash } from '/ui/dom.js';
import { form } from '/ui/form.js';
import { overview } from '/ui/page-overview.js';
import { connections, channels, exchanges, queues } from '/ui/page-lists.js';
import { queuePage } from '/ui/page-queue.js';
import { exchangePage } from '/ui/page-exchange.js';
import { channelPage } from '/ui/page-channel.js';
import { users, vhosts, permissions, topicPermissions, limits, policies } from '/ui/page-admin.js';

const PAGES = {
  '': overview, connections, channels, exchanges, queues, users, vhosts, permissions,
  'topic-permissions': topicPermissions, limits, policies,
};

const main = document.getElementById('main');
let stopPage = () => {};

function showLogin() {
  stopPage();
  stopPage = () => {};
  document.getElementById('top').hidden = true;
  flash('');
  fill(main, h('div', { class: 'login' },
    h('h1', {}, h('img', { src: '/ui/favicon.svg', alt: '', width: 32, height: 32 }), 'Lepus'),
    h('p', { class: 'muted' }, 'Log in with a user that has a management tag.'),
    form({
      id: 'login-form', submit: 'Log in', reset: false,
      fields: [
        { name: 'username', label: 'Username', required: true, autocomplete: 'username', id: 'username' },
        { name: 'password', label: 'Password', type: 'password', autocomplete: 'current-password', id: 'password' },
      ],
      onsubmit: async ({ username, password }) => {
        await login(username, password); // a refusal shows RabbitMQ's reason: "Login failed"
        route();
        return 'Logged in';
      },
    })));
  main.querySelector('#username').focus();
}

function showHeader(page) {
  const s = session();
  document.getElementById('top').hidden = false;
  document.getElementById('who').textContent = `${s.name}${s.tags.length ? ` (${s.tags.join(', ')})` : ''}`;
  document.querySelectorAll('#nav a').forEach((a) => {
    a.classList.toggle('active', a.dataset.page === page || (page === '' && a.dataset.page === 'overview'));
  });
}

function route() {
  if (!session()) {
    showLogin();
    return;
  }
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  stopPage();
  flash('');
  fill(main);
  if (parts[0] === 'queues' && parts.length === 3) {
    showHeader('queues');
    stopPage = queuePage(main, parts[1], parts[2]);
    return;
  }
  if (parts[0] === 'exchanges' && parts.length === 3) {
    showHeader('exchanges');
    stopPage = exchangePage(main, parts[1], parts[2] === 'amq.default' ? '' : parts[2]);
    return;
  }
  if (parts[0] === 'channels' && parts.length === 2) {
    showHeader('channels');
    stopPage = channelPage(main, parts[1]);
    return;
  }
  const page = PAGES[parts[0]] ? parts[0] : '';
  showHeader(page);
  stopPage = PAGES[page](main) || (() => {});
}

whenUnauthorised(showLogin);
document.getElementById('logout').addEventListener('click', () => {
  logout();
  showLogin();
});
window.addEventListener('hashchange', route);
route();
