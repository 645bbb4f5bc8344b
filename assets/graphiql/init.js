// Boots GraphiQL against this server's /graphql (HTTP) and /graphql/ws (subscriptions).
// Kept out of the HTML so the page's Content-Security-Policy can forbid inline scripts.
(function () {
  'use strict';
  var http = new URL('graphql', window.location.href).toString();
  var ws = new URL('graphql/ws', window.location.href);
  ws.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  var fetcher = GraphiQL.createFetcher({ url: http, subscriptionUrl: ws.toString() });
  var defaultQuery = [
    '# Welcome to the RUIZHU API.',
    '#',
    '# Signed-in calls need a token: open "Headers" below and add',
    '#   { "Authorization": "Bearer <access token>" }',
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
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(React.createElement(GraphiQL, {
    fetcher: fetcher,
    defaultQuery: defaultQuery,
    defaultEditorToolsVisibility: true,
    isHeadersEditorEnabled: true,
    shouldPersistHeaders: true
  }));
})();
