// The ops console: GraphiQL against this server's /graphql (HTTP) and /graphql/ws
// (subscriptions), a staff sign-in whose token every request carries, and saved "ops recipes".
// Kept out of the HTML so the page's Content-Security-Policy can forbid inline scripts.
(function () {
  'use strict';

  var SESSION_KEY = 'ruizhu.ops.session';
  var httpUrl = new URL('graphql', window.location.href).toString();
  var wsUrl = new URL('graphql/ws', window.location.href);
  wsUrl.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';

  // ---- the staff session: sessionStorage only (gone when the tab closes), never localStorage

  function loadSession() {
    try {
      return JSON.parse(window.sessionStorage.getItem(SESSION_KEY) || 'null');
    } catch (e) {
      return null;
    }
  }

  function saveSession(session) {
    if (session) {
      window.sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    } else {
      window.sessionStorage.removeItem(SESSION_KEY);
    }
    showWho();
  }

  function fromAuthPayload(p) {
    return {
      accessToken: p.accessToken,
      refreshToken: p.refreshToken,
      expiresAt: Date.now() + p.expiresIn * 1000,
      staff: p.staff
    };
  }

  function postGraphQL(query, variables, token) {
    var headers = { 'content-type': 'application/json', accept: 'application/graphql-response+json, application/json' };
    if (token) headers.authorization = 'Bearer ' + token;
    return window.fetch(httpUrl, {
      method: 'POST',
      headers: headers,
      body: JSON.stringify({ query: query, variables: variables })
    }).then(function (r) {
      return r.json();
    });
  }

  var AUTH_FIELDS = '{ accessToken refreshToken expiresIn staff { username displayName role } }';

  function signIn(username, password) {
    return postGraphQL(
      'mutation OpsSignIn($u: String!, $p: String!) { staffLogin(username: $u, password: $p) ' + AUTH_FIELDS + ' }',
      { u: username, p: password }
    ).then(function (body) {
      if (body.errors && body.errors.length) {
        var code = body.errors[0].extensions && body.errors[0].extensions.code;
        throw new Error(code === 'RATE_LIMITED'
          ? 'Too many failed attempts: wait a few minutes.'
          : code === 'UNAUTHENTICATED' ? 'Wrong username or password.' : body.errors[0].message);
      }
      if (!body.data.staffLogin.staff) throw new Error('Not a staff account.');
      saveSession(fromAuthPayload(body.data.staffLogin));
    });
  }

  // One refresh at a time; the refresh token works once.
  var refreshing = null;
  function freshToken() {
    var session = loadSession();
    if (!session) return Promise.resolve(null);
    if (session.expiresAt - Date.now() > 60000) return Promise.resolve(session.accessToken);
    if (!refreshing) {
      refreshing = postGraphQL(
        'mutation OpsRefresh($t: String!) { refreshSession(refreshToken: $t) ' + AUTH_FIELDS + ' }',
        { t: session.refreshToken }
      ).then(function (body) {
        refreshing = null;
        if (body.errors && body.errors.length) {
          saveSession(null);
          showSignIn('Your session ended: sign in again.');
          return null;
        }
        saveSession(fromAuthPayload(body.data.refreshSession));
        return loadSession().accessToken;
      }, function (e) {
        refreshing = null;
        throw e;
      });
    }
    return refreshing;
  }

  function signOut() {
    var session = loadSession();
    saveSession(null);
    if (session) postGraphQL('mutation OpsSignOut { logout }', {}, session.accessToken).catch(function () {});
  }

  // ---- GraphiQL's fetcher: the staff token goes along unless the Headers tab sets its own

  var baseFetcher = GraphiQL.createFetcher({
    url: httpUrl,
    subscriptionUrl: wsUrl.toString(),
    // read at each (re)connect, so a socket opened after sign-in carries the token
    wsConnectionParams: function () {
      var session = loadSession();
      return session ? { Authorization: 'Bearer ' + session.accessToken } : {};
    }
  });

  function hasAuthorization(headers) {
    return Object.keys(headers || {}).some(function (k) {
      return k.toLowerCase() === 'authorization';
    });
  }

  function fetcher(params, opts) {
    opts = opts || {};
    if (hasAuthorization(opts.headers)) return baseFetcher(params, opts);
    return freshToken().then(function (token) {
      var headers = Object.assign({}, opts.headers || {});
      if (token) headers.Authorization = 'Bearer ' + token;
      return baseFetcher(params, Object.assign({}, opts, { headers: headers }));
    });
  }

  // ---- the bar and its panels

  var recipesToggle = document.getElementById('ops-recipes-toggle');
  var signinToggle = document.getElementById('ops-signin-toggle');
  var recipesPanel = document.getElementById('ops-recipes');
  var signinPanel = document.getElementById('ops-signin');
  var signinForm = document.getElementById('ops-signin-form');
  var signinError = document.getElementById('ops-signin-error');
  var who = document.getElementById('ops-who');

  function setOpen(panel, toggle, open) {
    panel.hidden = !open;
    toggle.setAttribute('aria-expanded', open ? 'true' : 'false');
  }

  function showSignIn(message) {
    setOpen(recipesPanel, recipesToggle, false);
    setOpen(signinPanel, signinToggle, true);
    signinError.textContent = message || '';
    signinForm.elements.username.focus();
  }

  function showWho() {
    var session = loadSession();
    if (session && session.staff) {
      who.textContent = (session.staff.displayName || session.staff.username) + ' · ' + session.staff.role;
      signinToggle.textContent = 'Sign out';
    } else {
      who.textContent = 'signed out';
      signinToggle.textContent = 'Sign in';
    }
  }

  signinToggle.addEventListener('click', function () {
    if (loadSession()) {
      signOut();
      setOpen(signinPanel, signinToggle, false);
    } else {
      var open = signinPanel.hidden;
      if (open) showSignIn(); else setOpen(signinPanel, signinToggle, false);
    }
  });

  recipesToggle.addEventListener('click', function () {
    var open = recipesPanel.hidden;
    setOpen(signinPanel, signinToggle, false);
    setOpen(recipesPanel, recipesToggle, open);
  });

  signinForm.addEventListener('submit', function (event) {
    event.preventDefault();
    var username = signinForm.elements.username.value.trim();
    var password = signinForm.elements.password.value;
    signinError.textContent = '';
    var button = signinForm.querySelector('button');
    button.disabled = true;
    signIn(username, password).then(function () {
      signinForm.reset();
      setOpen(signinPanel, signinToggle, false);
      signinToggle.setAttribute('aria-expanded', 'false');
    }, function (e) {
      signinError.textContent = e.message;
    }).then(function () {
      button.disabled = false;
    });
  });

  // ---- recipes: saved operations for the daily work, loaded into the editors on a tap

  var editors = { query: undefined, variables: undefined };
  var defaultQuery = [
    '# RUIZHU ops console.',
    '#',
    '# Sign in (top right) with your staff account, then open "Recipes" for the daily',
    '# operations: today\'s orders, orders to ship, shipping, refunds, stock.',
    '# Member tokens still work from the Headers tab: { "Authorization": "Bearer <token>" }',
    '',
    'query FeaturedProducts {',
    '  products(first: 5) {',
    '    totalCount',
    '    edges {',
    '      node {',
    '        name',
    '        nameEn',
    '        priceRange { min { amount currency } }',
    '        skus { code color size available }',
    '      }',
    '    }',
    '    pageInfo { hasNextPage endCursor }',
    '  }',
    '}',
    ''
  ].join('\n');

  function startOfToday() {
    var d = new Date();
    d.setHours(0, 0, 0, 0);
    return d.toISOString();
  }

  function fillVariables(vars) {
    var out = {};
    Object.keys(vars || {}).forEach(function (k) {
      out[k] = vars[k] === '@today' ? startOfToday() : vars[k];
    });
    return JSON.stringify(out, null, 2);
  }

  function openRecipe(recipe) {
    var query = recipe.query;
    // the same recipe twice in a row still resets the editor (GraphiQL applies changed props)
    if (editors.query === query) query += '\n';
    editors = { query: query, variables: fillVariables(recipe.variables) };
    setOpen(recipesPanel, recipesToggle, false);
    render();
  }

  function showRecipes(doc) {
    var list = document.getElementById('ops-recipes-list');
    doc.recipes.forEach(function (recipe) {
      var item = document.createElement('li');
      var button = document.createElement('button');
      button.type = 'button';
      button.dataset.recipe = recipe.id;
      var title = document.createElement('strong');
      title.textContent = recipe.title;
      var description = document.createElement('span');
      description.textContent = recipe.description;
      button.appendChild(title);
      button.appendChild(description);
      button.addEventListener('click', function () {
        openRecipe(recipe);
      });
      item.appendChild(button);
      list.appendChild(item);
    });
    var notes = document.getElementById('ops-recipes-notes');
    (doc.notes || []).forEach(function (text) {
      var note = document.createElement('li');
      note.textContent = text;
      notes.appendChild(note);
    });
  }

  window.fetch(new URL('graphiql/assets/recipes.json', window.location.href).toString())
    .then(function (r) {
      return r.json();
    })
    .then(showRecipes, function () {
      document.getElementById('ops-recipes-notes').textContent = 'The recipes could not be loaded.';
    });

  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  function render() {
    root.render(React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      query: editors.query,
      variables: editors.variables,
      defaultEditorToolsVisibility: true,
      isHeadersEditorEnabled: true,
      // a token typed into the Headers tab must not outlive the tab on a shared phone
      shouldPersistHeaders: false
    }));
  }

  showWho();
  render();
})();
