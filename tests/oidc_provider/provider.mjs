// Test fixture only: panva's oidc-provider (8.x) set up for bff-proxy's integration tests.
//
// Started by tests/support/oidc_provider.py as `node provider.mjs` with its settings in the
// environment:
//   OP_PORT            port to listen on, 127.0.0.1 only (required)
//   OP_STATE_FILE      JSON file with the signing keys and every grant/token/session; written on
//                      each change, so a provider killed and started again on the same port and
//                      file keeps its keys, sessions and refresh tokens (required)
//   OP_API_AUDIENCE    the resource (RFC 8707) every access token is issued for (a JWT, RS256,
//                      `aud` = this value); default http://127.0.0.1/api
//   OP_ACCESS_TTL      access-token lifetime in seconds (default 4)
//   OP_CLIENTS         JSON array of client metadata registered at start (more can be added
//                      at run time with POST /test/clients)
//   OP_PAR             "required": every authorization request must be pushed (RFC 9126); PAR is
//                      offered (and listed in discovery) either way
//   OP_DPOP            "on": DPoP (RFC 9449) offered; "nonce": offered, and every DPoP proof at the
//                      token and PAR endpoints must carry the provider's nonce; default off
//   OP_FAPI            "2.0": the provider's FAPI 2.0 Security Profile behaviour; default off
//
// Besides the provider's own endpoints it serves a few routes for the tests under /test/:
//   GET  /test/counters          grants, refreshes, back-channel logouts... counted per client
//   POST /test/counters/reset
//   POST /test/clients           register or replace a client (JSON metadata)
//   GET  /test/issued?client_id= every token response (token type, access, refresh and ID tokens)
//   GET  /test/grants?account=   the grants of an account with their refresh tokens
//   POST /test/revoke-grant      {"grantId"} or {"account","clientId"}: revoke grants and tokens
//   POST /test/token-delay       {"ms"}: hold each token request that long (0: off; not kept)
//
// The client secrets used by the tests are test fixtures, not secrets.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';

import Provider, { errors } from 'oidc-provider';

const port = Number(process.env.OP_PORT);
if (!port) {
  console.error('provider.mjs: OP_PORT is required');
  process.exit(2);
}
const stateFile = process.env.OP_STATE_FILE;
if (!stateFile) {
  console.error('provider.mjs: OP_STATE_FILE is required');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const apiAudience = process.env.OP_API_AUDIENCE || 'http://127.0.0.1/api';
const accessTtl = Number(process.env.OP_ACCESS_TTL || 4);
const parRequired = process.env.OP_PAR === 'required';
const dpopMode = process.env.OP_DPOP || 'off';
const fapiProfile = process.env.OP_FAPI || '';

// ---------------------------------------------------------------- persistent state

const state = loadState();
// A PS256 key beside the RS256 one, for clients registered with PS256 ID tokens (FAPI 2.0 allows
// PS256, ES256 and EdDSA, not RS256); RS256 stays the default.
if (!state.jwks.keys.some((key) => key.alg === 'PS256')) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  state.jwks.keys.push({ ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'PS256' });
}

function loadState() {
  if (fs.existsSync(stateFile)) {
    return JSON.parse(fs.readFileSync(stateFile, 'utf8'));
  }
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };
  return {
    jwks: { keys: [jwk] },
    cookieKeys: [crypto.randomBytes(32).toString('hex')],
    entries: {},
    issued: [],
    counters: {},
  };
}

function persist() {
  const tmp = `${stateFile}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(state));
  fs.renameSync(tmp, stateFile);
}

const now = () => Math.floor(Date.now() / 1000);

// An adapter like the provider's memory adapter, but written through to `stateFile`.
const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest']);

function getEntry(key) {
  const entry = state.entries[key];
  if (!entry) return undefined;
  if (entry.exp && entry.exp < now()) {
    delete state.entries[key];
    return undefined;
  }
  return entry.value;
}

function setEntry(key, value, expiresIn) {
  state.entries[key] = { value, exp: expiresIn ? now() + expiresIn : undefined };
}

class FileAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async destroy(id) {
    delete state.entries[this.key(id)];
    persist();
  }

  async consume(id) {
    const entry = getEntry(this.key(id));
    if (entry) entry.consumed = now();
    persist();
  }

  async find(id) {
    return getEntry(this.key(id));
  }

  async findByUid(uid) {
    const id = getEntry(`sessionUid:${uid}`);
    return id ? this.find(id) : undefined;
  }

  async findByUserCode(userCode) {
    const id = getEntry(`userCode:${userCode}`);
    return id ? this.find(id) : undefined;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    if (this.model === 'Session') setEntry(`sessionUid:${payload.uid}`, id, expiresIn);
    const { grantId, userCode } = payload;
    if (grantable.has(this.model) && grantId) {
      const grantKey = `grant:${grantId}`;
      const list = getEntry(grantKey) || [];
      list.push(key);
      setEntry(grantKey, list, undefined);
    }
    if (userCode) setEntry(`userCode:${userCode}`, id, expiresIn);
    setEntry(key, payload, expiresIn);
    persist();
  }

  async revokeByGrantId(grantId) {
    const grantKey = `grant:${grantId}`;
    for (const key of getEntry(grantKey) || []) delete state.entries[key];
    delete state.entries[grantKey];
    persist();
  }
}

// ---------------------------------------------------------------- counters

// Kept in the state file too, so that a restart does not reset them.
state.counters ||= {};
const { counters } = state;
function count(name, clientId) {
  counters[name] ||= {};
  const key = clientId || '-';
  counters[name][key] = (counters[name][key] || 0) + 1;
  persist();
}

// ---------------------------------------------------------------- the provider

const clients = JSON.parse(process.env.OP_CLIENTS || '[]');
for (const client of clients) {
  setEntry(`Client:${client.client_id}`, client, undefined);
}

// `length` characters of hex that differ from account to account (no compression helps).
function bigClaim(seed, length) {
  let text = '';
  for (let i = 0; text.length < length; i += 1) {
    text += crypto.createHash('sha256').update(`${seed}:${i}`).digest('hex');
  }
  return text.slice(0, length);
}

const configuration = {
  adapter: FileAdapter,
  clients: [],
  jwks: state.jwks,
  cookies: { keys: state.cookieKeys },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        const claims = { sub, name: `Test User ${sub}`, email: `${sub}@example.test`, email_verified: true };
        // An account whose login name starts with "big-claim" has a profile claim of about 12 kB
        // (a session larger than one cookie holds, for cookie mode's chunks).
        if (sub.startsWith('big-claim')) claims.bio = bigClaim(sub, 12 * 1024);
        return claims;
      },
    };
  },
  claims: {
    openid: ['sub'],
    profile: ['name', 'email', 'email_verified', 'bio'],
    email: ['email', 'email_verified'],
  },
  // Put the profile claims into the ID token even though an access token is issued too.
  conformIdTokenClaims: false,
  scopes: ['openid', 'offline_access', 'profile', 'email', 'api'],
  pkce: { required: () => true, methods: ['S256'] },
  rotateRefreshToken: true,
  ttl: {
    AccessToken: accessTtl,
    ClientCredentials: accessTtl,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 24 * 3600,
    Grant: 24 * 3600,
    Session: 24 * 3600,
    Interaction: 600,
  },
  features: {
    devInteractions: { enabled: true },
    // The access token is for the API, so the userinfo endpoint (which would need its own token)
    // is off: the claims are in the ID token.
    userinfo: { enabled: false },
    revocation: { enabled: true },
    introspection: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    clientCredentials: { enabled: true },
    pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: parRequired },
    dPoP: {
      enabled: dpopMode !== 'off',
      ...(dpopMode === 'nonce' ? { nonceSecret: crypto.randomBytes(32), requireNonce: () => true } : {}),
    },
    fapi: { enabled: Boolean(fapiProfile), profile: fapiProfile || undefined },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => (oneOf ? oneOf[0] : apiAudience),
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => {
        if (resource !== apiAudience) throw new errors.InvalidTarget();
        return {
          scope: 'api',
          audience: apiAudience,
          accessTokenTTL: accessTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
};

const provider = new Provider(issuer, configuration);

// oidc-provider 8.x drops `offline_access` unless the authorization request has prompt=consent
// (OIDC Core 11). A BFF asking for offline_access without a prompt gets prompt=consent added, so
// the refresh token it gets is an offline one, and the consent page of devInteractions is shown.
// POST /test/token-delay {"ms": N} holds every token request N ms before the provider looks at
// it, so that a test can stop the provider while the BFF waits for a refresh.
let tokenDelayMs = 0;
provider.use(async (ctx, next) => {
  if (ctx.path === '/token' && tokenDelayMs > 0) {
    count('token.delayed');
    await new Promise((resolve) => { setTimeout(resolve, tokenDelayMs); });
  }
  await next();
});

function withConsentForOffline(params) {
  const scopes = (params.get('scope') || '').split(' ');
  if (scopes.includes('offline_access') && !params.has('prompt')) params.set('prompt', 'consent');
  return params.toString();
}

// The same for a pushed authorization request (RFC 9126): its parameters are the form body of
// POST /request, read here and handed on as an already-read body (which the provider accepts).
async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/auth') {
    ctx.querystring = withConsentForOffline(new URLSearchParams(ctx.querystring));
  } else if (ctx.method === 'POST' && ctx.path === '/request' && ctx.is('application/x-www-form-urlencoded')) {
    ctx.req.body = withConsentForOffline(new URLSearchParams(await readBody(ctx.req)));
  }
  await next();
});

// Every token the provider hands out, so that tests can look for them where they must not be.
state.issued ||= [];
const { issued } = state;
provider.on('grant.success', (ctx) => {
  const clientId = ctx.oidc.client?.clientId;
  count(`grant:${ctx.oidc.params.grant_type}`, clientId);
  const body = ctx.body || {};
  issued.push({
    clientId,
    grantType: ctx.oidc.params.grant_type,
    token_type: body.token_type,
    access_token: body.access_token,
    refresh_token: body.refresh_token,
    id_token: body.id_token,
  });
  persist();
});
provider.on('grant.error', (ctx, err) => {
  count(`grant_error:${ctx.oidc.params?.grant_type}:${err.error || err.message}`, ctx.oidc.client?.clientId);
});
provider.on('backchannel.success', (ctx, client) => count('backchannel.success', client.clientId));
provider.on('backchannel.error', (ctx, err, client) => {
  count('backchannel.error', client.clientId);
  console.error(`backchannel logout to ${client.clientId} failed: ${err.message}`);
});
provider.on('pushed_authorization_request.success', (ctx) => count('par.success', ctx.oidc.client?.clientId));
provider.on('pushed_authorization_request.error', (ctx, err) => {
  count(`par_error:${err.error || err.message}`, ctx.oidc.client?.clientId);
});
provider.on('end_session.success', (ctx) => count('end_session.success', ctx.oidc.client?.clientId));
provider.on('server_error', (ctx, err) => console.error('server_error', err));

// ---------------------------------------------------------------- /test/ routes

async function readJson(req) {
  const text = await readBody(req);
  return text ? JSON.parse(text) : {};
}

function send(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
  res.end(data);
}

function entriesOf(model) {
  const prefix = `${model}:`;
  return Object.keys(state.entries)
    .filter((key) => key.startsWith(prefix))
    .map((key) => getEntry(key))
    .filter(Boolean);
}

function grantsOf(account, clientId) {
  return entriesOf('Grant').filter((grant) => (!account || grant.accountId === account)
    && (!clientId || grant.clientId === clientId));
}

async function revokeGrant(grantId) {
  for (const model of grantable) await new FileAdapter(model).revokeByGrantId(grantId);
  await new FileAdapter('Grant').destroy(grantId);
}

async function testRoutes(req, res, url) {
  if (req.method === 'GET' && url.pathname === '/test/counters') return send(res, 200, counters);
  if (req.method === 'POST' && url.pathname === '/test/counters/reset') {
    for (const key of Object.keys(counters)) delete counters[key];
    return send(res, 200, {});
  }
  if (req.method === 'POST' && url.pathname === '/test/token-delay') {
    tokenDelayMs = Number((await readJson(req)).ms) || 0;
    return send(res, 200, { ms: tokenDelayMs });
  }
  if (req.method === 'GET' && url.pathname === '/test/issued') {
    const clientId = url.searchParams.get('client_id');
    return send(res, 200, issued.filter((entry) => !clientId || entry.clientId === clientId));
  }
  if (req.method === 'POST' && url.pathname === '/test/clients') {
    const metadata = await readJson(req);
    setEntry(`Client:${metadata.client_id}`, metadata, undefined);
    persist();
    const client = await provider.Client.find(metadata.client_id); // validates the metadata
    if (!client) return send(res, 400, { error: 'invalid client metadata' });
    return send(res, 200, { client_id: client.clientId });
  }
  if (req.method === 'GET' && url.pathname === '/test/grants') {
    const account = url.searchParams.get('account');
    const clientId = url.searchParams.get('client_id');
    const refreshTokens = entriesOf('RefreshToken');
    return send(res, 200, grantsOf(account, clientId).map((grant) => ({
      grantId: grant.jti,
      accountId: grant.accountId,
      clientId: grant.clientId,
      refreshTokens: refreshTokens.filter((rt) => rt.grantId === grant.jti)
        .map((rt) => ({ value: rt.jti, consumed: Boolean(rt.consumed), iat: rt.iat, sid: rt.sid })),
    })));
  }
  if (req.method === 'POST' && url.pathname === '/test/revoke-grant') {
    const body = await readJson(req);
    const ids = body.grantId ? [body.grantId]
      : grantsOf(body.account, body.clientId).map((grant) => grant.jti);
    for (const id of ids) await revokeGrant(id);
    return send(res, 200, { revoked: ids });
  }
  return send(res, 404, { error: 'not_found' });
}

const callback = provider.callback();
// Cookies are not scoped by port: a browser sends the BFF's cookies (up to 8 chunks in cookie mode,
// about 31 KB) to this provider on the same 127.0.0.1 too, beyond node's default 16 KB of headers.
const server = http.createServer({ maxHeaderSize: 64 * 1024 }, (req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname.startsWith('/test/')) {
    testRoutes(req, res, url).catch((err) => send(res, 500, { error: String(err), error_description: err.error_description }));
    return;
  }
  callback(req, res);
});

fs.mkdirSync(path.dirname(path.resolve(stateFile)), { recursive: true });
persist();
server.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
