// SPDX-License-Identifier: MIT
// A real OpenID Provider for tests/integration/test_idp.py: the npm package oidc-provider
// (pinned in package.json, installed into build/npm by scripts/deps.sh), over HTTPS on
// loopback, with the device flow, resource indicators (RFC 8707) and JWT access tokens that
// carry what a deputy grant needs: aud = deputyd's issuer, may_act naming the OAuth client
// as the agent, and the resources the user consented to.
//   node provider.mjs CONFIG.json
// CONFIG: {"module": oidc-provider's lib/index.js, "cert", "key", "audience", "jwks":
//          {"keys": [private JWKs]}, "clients": [ids], "ttl": access token seconds,
//          "device_ttl": device code seconds}
// Prints "listening PORT" once it serves, and "reloaded" after SIGHUP rereads CONFIG (key
// rotation, a new audience or lifetime). The test plays the user through the interaction
// routes: /interaction/UID/login?user=NAME approves, /interaction/UID/deny refuses.
// oidc-provider has no RFC 8693 token exchange; the one registered here exchanges an access
// token this IdP issued (signature, issuer and expiry checked) for one of the asking client.
import fs from 'node:fs';
import https from 'node:https';
import { pathToFileURL } from 'node:url';

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const confPath = process.argv[2];
let conf = JSON.parse(fs.readFileSync(confPath, 'utf8'));
const { default: Provider, errors } = await import(conf.module);
// jose comes with oidc-provider: node_modules/oidc-provider/lib/index.js -> node_modules/jose
const jose = await import(new URL('../../jose/dist/webapi/index.js', pathToFileURL(conf.module)));
let issuer;
let provider;

function makeProvider() {
  const p = new Provider(issuer, {
    clients: conf.clients.map((id) => ({
      client_id: id,
      token_endpoint_auth_method: 'none',
      id_token_signed_response_alg: 'ES256',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', TOKEN_EXCHANGE],
      response_types: [],
      redirect_uris: [],
    })),
    jwks: conf.jwks,
    scopes: ['openid'],
    features: {
      devInteractions: { enabled: false },
      deviceFlow: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // one access token names one resource server; every resource here is deputyd
        defaultResource: (ctx, client, oneOf) => (oneOf ? oneOf[0] : undefined),
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          audience: conf.audience,
          scope: conf.scopes.join(' '),
          accessTokenFormat: 'jwt',
          accessTokenTTL: conf.ttl,
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
    extraTokenClaims: async (ctx, token) => {
      const grant = token.grantId ? await p.Grant.find(token.grantId) : undefined;
      return {
        may_act: { sub: `agent:${token.clientId}` },
        resource: token.extra?.resource || Object.keys(grant?.resources || {}),
      };
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
    ttl: {
      AccessToken: conf.ttl,
      DeviceCode: conf.device_ttl,
      Session: 3600,
      Grant: 3600,
      Interaction: 600,
    },
  });
  p.registerGrantType(TOKEN_EXCHANGE, exchange, ['subject_token', 'subject_token_type',
    'scope', 'resource'], ['resource']);
  return p;
}

async function exchange(ctx) {
  const { params, client } = ctx.oidc;
  const keys = { keys: conf.jwks.keys.map(({ d, ...pub }) => pub) };
  let subject;
  try {
    ({ payload: subject } = await jose.jwtVerify(params.subject_token,
      jose.createLocalJWKSet(keys), { issuer }));
  } catch (e) {
    throw new errors.InvalidGrant(`subject_token: ${e.message}`);
  }
  const resources = [].concat(params.resource || []);
  const rs = new provider.ResourceServer(conf.audience, {
    audience: conf.audience,
    scope: conf.scopes.join(' '),
    accessTokenFormat: 'jwt',
    accessTokenTTL: conf.ttl,
    jwt: { sign: { alg: 'ES256' } },
  });
  const at = new provider.AccessToken({
    accountId: subject.sub,
    client,
    gty: 'token_exchange',
    scope: params.scope,
    resourceServer: rs,
    extra: { resource: resources },
  });
  ctx.body = {
    access_token: await at.save(),
    issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    token_type: 'Bearer',
    expires_in: at.expiration,
    scope: params.scope,
  };
}

async function interaction(req, res, url) {
  const [, , uid, action] = url.pathname.split('/');
  const details = await provider.Interaction.find(uid);
  if (!details) {
    res.writeHead(404).end('no such interaction');
    return;
  }
  let result;
  if (action === 'deny') {
    result = { error: 'access_denied', error_description: 'the user said no' };
  } else if (action === 'login') {
    const user = url.searchParams.get('user');
    const grant = new provider.Grant({ accountId: user, clientId: details.params.client_id });
    grant.addOIDCScope('openid');
    for (const r of [].concat(details.params.resource || [])) {
      grant.addResourceScope(r, details.params.scope || '');
    }
    result = { login: { accountId: user }, consent: { grantId: await grant.save() } };
  } else {
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`interaction ${uid}`);
    return;
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

const server = https.createServer(
  { cert: fs.readFileSync(conf.cert), key: fs.readFileSync(conf.key) },
  (req, res) => {
    const url = new URL(req.url, issuer);
    if (url.pathname.startsWith('/interaction/')) {
      interaction(req, res, url).catch((e) => res.writeHead(500).end(String(e)));
      return;
    }
    provider.callback()(req, res);
  },
);
server.listen(0, '127.0.0.1', () => {
  issuer = `https://127.0.0.1:${server.address().port}`;
  provider = makeProvider();
  console.log(`listening ${server.address().port}`);
});
process.on('SIGHUP', () => {
  conf = JSON.parse(fs.readFileSync(confPath, 'utf8'));
  provider = makeProvider();
  console.log('reloaded');
});
