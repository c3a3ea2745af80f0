// Drives both emulators with jsforce and HubSpot's official JavaScript
// client (@hubspot/api-client), unchanged but for the base URL: jsforce's
// `loginUrl` and the HubSpot client's `basePath`.
//
// Environment: SF_BASE_URL, SF_USERNAME, SF_PASSWORD, SF_SECURITY_TOKEN,
// SF_CLIENT_ID, SF_CLIENT_SECRET, HS_BASE_URL, HS_TOKEN, and
// NODE_EXTRA_CA_CERTS (the emulators' CA certificate).
// Prints one line per check and `N passed, N failed`; exits 1 on a failure.

import assert from 'node:assert/strict';
import jsforce from 'jsforce';
import { Client } from '@hubspot/api-client';

function env(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`missing environment variable ${name}`);
    process.exit(2);
  }
  return value;
}

const checks = [];
const check = (name, fn) => checks.push([name, fn]);
async function rejects(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail('expected the call to fail');
}

const run = Math.random().toString(36).slice(2, 10);
const sfLogin = async () => {
  const conn = new jsforce.Connection({ loginUrl: env('SF_BASE_URL'), version: '62.0' });
  await conn.login(env('SF_USERNAME'), env('SF_PASSWORD') + env('SF_SECURITY_TOKEN'));
  return conn;
};
const hs = new Client({ accessToken: env('HS_TOKEN'), basePath: env('HS_BASE_URL') });
const opportunity = (more) => ({ Name: `jsforce ${run}`, StageName: 'Prospecting', CloseDate: '2026-06-30', ...more });

check('jsforce SOAP and OAuth logins, identity', async () => {
  const conn = await sfLogin();
  assert.ok(conn.instanceUrl.startsWith(env('SF_BASE_URL')), conn.instanceUrl);
  const oauth = new jsforce.Connection({
    oauth2: { loginUrl: env('SF_BASE_URL'), clientId: env('SF_CLIENT_ID'), clientSecret: env('SF_CLIENT_SECRET') },
    version: '62.0',
  });
  const info = await oauth.login(env('SF_USERNAME'), env('SF_PASSWORD') + env('SF_SECURITY_TOKEN'));
  const who = await oauth.identity();
  assert.equal(who.user_id, info.id);
  assert.equal(who.username, env('SF_USERNAME'));
  const revoked = { accessToken: oauth.accessToken, instanceUrl: oauth.instanceUrl, version: '62.0' };
  await oauth.logout(); // an OAuth2 connection logs out by revoking its token
  const afterRevoke = await rejects(new jsforce.Connection(revoked).query('SELECT Id FROM User LIMIT 1'));
  assert.equal(afterRevoke.errorCode, 'INVALID_SESSION_ID');
  const err = await rejects(new jsforce.Connection({ loginUrl: env('SF_BASE_URL') }).login(env('SF_USERNAME'), 'wrong'));
  assert.match(String(err.message), /INVALID_LOGIN/);
  const { accessToken, instanceUrl } = conn;
  await conn.logout();
  const stale = new jsforce.Connection({ accessToken, instanceUrl, version: '62.0' });
  const expired = await rejects(stale.query('SELECT Id FROM User LIMIT 1'));
  assert.equal(expired.errorCode, 'INVALID_SESSION_ID');
});

check('jsforce query paging returns every record once', async () => {
  const conn = await sfLogin();
  const first = await conn.query('SELECT Id FROM Opportunity');
  assert.equal(first.done, false);
  assert.equal(first.records.length, 2000);
  const all = await conn.query('SELECT Id FROM Opportunity').run({ autoFetch: true, maxFetch: 100000 });
  assert.equal(all.records.length, first.totalSize);
  assert.equal(new Set(all.records.map((r) => r.Id)).size, first.totalSize);
});

check('jsforce CRUD, upsert and collections', async () => {
  const conn = await sfLogin();
  const opps = conn.sobject('Opportunity');
  const made = await opps.create(opportunity({ Description: 'one' }));
  assert.equal(made.success, true);
  await opps.update({ Id: made.id, Description: 'two' });
  assert.equal((await opps.retrieve(made.id)).Description, 'two');
  const key = `js-${run}`;
  assert.equal((await opps.upsert(opportunity({ dealbridge_id__c: key }), 'dealbridge_id__c')).created, true);
  assert.equal((await opps.upsert({ dealbridge_id__c: key, Description: 'up' }, 'dealbridge_id__c')).created, false);
  const many = await opps.create([opportunity({}), { Name: 'no stage' }], { allOrNone: false });
  assert.deepEqual(many.map((r) => r.success), [true, false]);
  assert.equal(many[1].errors[0].statusCode, 'REQUIRED_FIELD_MISSING');
  const gone = await opps.destroy([made.id, many[0].id]);
  assert.deepEqual(gone.map((r) => r.success), [true, true]);
  const missing = await rejects(opps.retrieve(made.id));
  assert.equal(missing.errorCode, 'ENTITY_IS_DELETED');
  const bad = await rejects(conn.query('SELEC Id FROM Opportunity'));
  assert.equal(bad.errorCode, 'MALFORMED_QUERY');
});

check('HubSpot JS client CRUD, batch, search and errors', async () => {
  const deals = hs.crm.deals;
  const deal = await deals.basicApi.create({
    properties: { dealname: `js ${run}`, pipeline: 'default', dealstage: 'appointmentscheduled', description: run },
    associations: [],
  });
  assert.ok(deal.createdAt instanceof Date && deal.archived === false);
  const got = await deals.basicApi.getById(deal.id, ['dealname']);
  assert.equal(got.properties.dealname, `js ${run}`);
  const batch = await deals.batchApi.create({
    inputs: [1, 2].map((i) => ({ properties: { dealname: `js ${run} ${i}`, description: run }, associations: [] })),
  });
  assert.equal(batch.status, 'COMPLETE');
  assert.equal(batch.results.length, 2);
  const partial = await deals.batchApi.read({ inputs: [{ id: deal.id }, { id: '999999999999' }], properties: [], propertiesWithHistory: [] });
  assert.equal(partial.numErrors, 1);
  assert.equal(partial.errors[0].category, 'OBJECT_NOT_FOUND');
  const found = await deals.searchApi.doSearch({
    filterGroups: [{ filters: [{ propertyName: 'description', operator: 'EQ', value: run }] }],
    sorts: ['createdate'], properties: ['dealname'], limit: 2, after: '0',
  });
  assert.equal(found.total, 3);
  assert.ok(found.paging.next.after);
  await deals.basicApi.archive(deal.id);
  const err = await rejects(deals.basicApi.getById(deal.id));
  assert.equal(err.code, 404);
  assert.equal(err.body.category, 'OBJECT_NOT_FOUND');
});

check('HubSpot JS client associations, pipelines and owners', async () => {
  const deal = await hs.crm.deals.basicApi.create({ properties: { dealname: `js assoc ${run}` }, associations: [] });
  const contact = (await hs.crm.contacts.basicApi.getPage(1)).results[0];
  const made = await hs.crm.associations.v4.basicApi.createDefault('deals', deal.id, 'contacts', contact.id);
  assert.equal(made.status, 'COMPLETE');
  const page = await hs.crm.associations.v4.basicApi.getPage('deals', deal.id, 'contacts');
  assert.deepEqual(page.results.map((r) => String(r.toObjectId)), [contact.id]);
  const pipelines = await hs.crm.pipelines.pipelinesApi.getAll('deals');
  assert.ok(pipelines.results.some((p) => p.id === 'default'));
  const owners = await hs.crm.owners.ownersApi.getPage();
  assert.ok(owners.results.length > 0 && owners.results[0].email);
});

let passed = 0;
let failed = 0;
for (const [name, fn] of checks) {
  try {
    await fn();
    passed += 1;
    console.log(`ok   js-clients: ${name}`);
  } catch (err) {
    failed += 1;
    console.log(`FAIL js-clients: ${name}\n${err && err.stack ? err.stack : err}`);
  }
}
console.log(`js-clients: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
