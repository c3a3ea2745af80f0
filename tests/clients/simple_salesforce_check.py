"""Drives the Salesforce emulator with simple-salesforce, unchanged.

The only change from talking to the real Salesforce is where requests go:
the login endpoint (https://login.salesforce.com) is pointed at the emulator,
which then hands out its own instance URL, as Salesforce does.

Environment: SF_BASE_URL (the emulator's https URL), SF_CONTROL_URL (its
control API, http), SF_USERNAME, SF_PASSWORD, SF_SECURITY_TOKEN,
SF_CLIENT_ID, SF_CLIENT_SECRET, and REQUESTS_CA_BUNDLE (the emulator's CA).
"""

import datetime
import uuid

import requests
from simple_salesforce import Salesforce, SalesforceLogin
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceResourceNotFound,
)

from checks import check, env, expect_raises, run

BASE_URL = env("SF_BASE_URL").rstrip("/")
CONTROL_URL = env("SF_CONTROL_URL").rstrip("/")
VERSION = "62.0"
LOGIN_HOST = "https://login.salesforce.com"


class EmulatorLogin(requests.Session):
    """A requests session that sends the login host's requests to the emulator (the base URL change)."""

    def request(self, method, url, *args, **kwargs):
        if url.startswith(LOGIN_HOST):
            url = BASE_URL + url[len(LOGIN_HOST):]
        return super().request(method, url, *args, **kwargs)


def soap_login():
    return Salesforce(
        username=env("SF_USERNAME"),
        password=env("SF_PASSWORD"),
        security_token=env("SF_SECURITY_TOKEN"),
        domain="login",
        version=VERSION,
        session=EmulatorLogin(),
    )


SF = soap_login()
RUN = uuid.uuid4().hex[:8]


def ext_id(n):
    return f"sscheck-{RUN}-{n}"


def new_opportunity(**fields):
    body = {"Name": f"simple-salesforce {RUN}", "StageName": "Prospecting", "CloseDate": "2026-06-30"}
    body.update(fields)
    return body


def set_faults(profile):
    requests.put(f"{CONTROL_URL}/__emulator/faults", json=profile, timeout=10).raise_for_status()


@check
def soap_login_gives_the_emulator_instance():
    assert SF.sf_instance == BASE_URL.split("://", 1)[1], SF.sf_instance
    assert SF.session_id and "!" in SF.session_id, SF.session_id
    assert SF.base_url == f"{BASE_URL}/services/data/v{VERSION}/", SF.base_url


@check
def oauth_password_login_and_session_id_login_work():
    sf = Salesforce(
        username=env("SF_USERNAME"),
        password=env("SF_PASSWORD") + env("SF_SECURITY_TOKEN"),
        consumer_key=env("SF_CLIENT_ID"),
        consumer_secret=env("SF_CLIENT_SECRET"),
        domain="login",
        version=VERSION,
        session=EmulatorLogin(),
    )
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] > 0
    direct = Salesforce(instance_url=BASE_URL, session_id=sf.session_id, version=VERSION)
    assert direct.query("SELECT Id FROM User LIMIT 1")["totalSize"] == 1


@check
def wrong_password_is_authentication_failed():
    exc = expect_raises(
        SalesforceAuthenticationFailed,
        SalesforceLogin,
        username=env("SF_USERNAME"),
        password="not-the-password",
        security_token=env("SF_SECURITY_TOKEN"),
        domain="login",
        sf_version=VERSION,
        session=EmulatorLogin(),
    )
    assert exc.code == "INVALID_LOGIN", (exc.code, exc.message)


@check
def create_get_update_delete_round_trip():
    created = SF.Opportunity.create(new_opportunity(Amount=1234.5, Description="first"))
    assert created["success"] is True and created["errors"] == [], created
    opp_id = created["id"]
    assert len(opp_id) == 18 and opp_id.startswith("006"), opp_id

    got = SF.Opportunity.get(opp_id)
    assert got["attributes"]["type"] == "Opportunity", got["attributes"]
    assert got["attributes"]["url"] == f"/services/data/v{VERSION}/sobjects/Opportunity/{opp_id}"
    assert got["Id"] == opp_id and got["Name"] == f"simple-salesforce {RUN}"
    assert got["Amount"] == 1234.5 and got["Description"] == "first", got
    assert got["CloseDate"] == "2026-06-30"
    assert got["IsDeleted"] is False
    datetime.datetime.strptime(got["LastModifiedDate"], "%Y-%m-%dT%H:%M:%S.%f%z")

    assert SF.Opportunity.update(opp_id, {"Description": "second", "StageName": "Qualification"}) == 204
    got = SF.Opportunity.get(opp_id)
    assert (got["Description"], got["StageName"]) == ("second", "Qualification"), got

    assert SF.Opportunity.delete(opp_id) == 204
    expect_raises(SalesforceResourceNotFound, SF.Opportunity.get, opp_id)
    deleted_row = SF.query_all(f"SELECT Id, IsDeleted FROM Opportunity WHERE Id = '{opp_id}'", include_deleted=True)
    assert [(r["Id"], r["IsDeleted"]) for r in deleted_row["records"]] == [(opp_id, True)], deleted_row


@check
def fifteen_character_ids_are_accepted_and_eighteen_returned():
    row = SF.query("SELECT Id FROM Opportunity LIMIT 1")["records"][0]
    got = SF.Opportunity.get(row["Id"][:15])
    assert got["Id"] == row["Id"] and len(got["Id"]) == 18, got["Id"]
    info = SF.Opportunity.metadata()
    assert info["objectDescribe"]["name"] == "Opportunity" and isinstance(info["recentItems"], list), info


@check
def upsert_by_external_id_creates_then_updates():
    key = ext_id("upsert")
    assert SF.Opportunity.upsert(f"dealbridge_id__c/{key}", new_opportunity(Description="v1")) == 201
    first = SF.Opportunity.get_by_custom_id("dealbridge_id__c", key)
    assert first["dealbridge_id__c"] == key and first["Description"] == "v1", first
    # API v46.0 and later answer an upsert that updates with 200 and a body (older versions: 204).
    assert SF.Opportunity.upsert(f"dealbridge_id__c/{key}", {"Description": "v2"}) == 200
    second = SF.Opportunity.get_by_custom_id("dealbridge_id__c", key)
    assert second["Id"] == first["Id"] and second["Description"] == "v2", second
    response = SF.Opportunity.upsert(f"dealbridge_id__c/{key}", {"Description": "v3"}, raw_response=True)
    body = response.json()
    assert body["id"] == first["Id"] and body["created"] is False and body["success"] is True, body
    SF.Opportunity.delete(first["Id"])


@check
def query_all_pages_through_every_record_exactly_once():
    count = SF.query("SELECT COUNT() FROM Opportunity")["totalSize"]
    assert count > 2000, f"the demo org should need more than one page, has {count}"
    first = SF.query("SELECT Id FROM Opportunity")
    assert first["done"] is False and first["totalSize"] == count, {k: first[k] for k in ("done", "totalSize")}
    assert len(first["records"]) == 2000
    assert first["nextRecordsUrl"].startswith(f"/services/data/v{VERSION}/query/"), first["nextRecordsUrl"]
    rows = SF.query_all("SELECT Id, Name, Amount FROM Opportunity")
    assert rows["done"] is True and rows["totalSize"] == count
    ids = [r["Id"] for r in rows["records"]]
    assert len(ids) == count == len(set(ids)), (len(ids), count, len(set(ids)))
    batched = SF.query_all("SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=200"})
    accounts = [r["Id"] for r in batched["records"]]
    assert len(accounts) == batched["totalSize"] == len(set(accounts)) > 200, len(accounts)
    more = SF.query("SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=200"})
    assert len(more["records"]) == 200 and not more["done"]
    page2 = SF.query_more(more["nextRecordsUrl"], identifier_is_url=True)
    assert not set(r["Id"] for r in page2["records"]) & set(r["Id"] for r in more["records"])


@check
def query_all_iter_and_relationship_fields():
    seen = 0
    for row in SF.query_all_iter("SELECT Id, Account.Name FROM Opportunity WHERE AccountId != null LIMIT 250"):
        assert row["attributes"]["type"] == "Opportunity"
        assert row["Account"]["attributes"]["type"] == "Account" and row["Account"]["Name"], row
        seen += 1
    assert seen == 250, seen


@check
def bad_soql_is_malformed_request():
    exc = expect_raises(SalesforceMalformedRequest, SF.query, "SELEC Id FROM Opportunity")
    assert exc.status == 400 and exc.content[0]["errorCode"] == "MALFORMED_QUERY", exc.content
    exc = expect_raises(SalesforceMalformedRequest, SF.query, "SELECT NoSuchField__c FROM Opportunity")
    assert exc.content[0]["errorCode"] == "INVALID_FIELD", exc.content


@check
def create_errors_are_malformed_request_with_the_documented_body():
    exc = expect_raises(SalesforceMalformedRequest, SF.Opportunity.create, {"Name": "no stage"})
    body = exc.content[0]
    assert body["errorCode"] == "REQUIRED_FIELD_MISSING", body
    assert set(body["fields"]) >= {"StageName", "CloseDate"}, body
    exc = expect_raises(SalesforceMalformedRequest, SF.Opportunity.create, new_opportunity(StageName="Nope"))
    assert exc.content[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", exc.content


@check
def unknown_id_is_resource_not_found():
    exc = expect_raises(SalesforceResourceNotFound, SF.Opportunity.get, "006000000000000AAA")
    assert exc.status == 404 and exc.content[0]["errorCode"] == "NOT_FOUND", exc.content
    expect_raises(SalesforceResourceNotFound, SF.Opportunity.get_by_custom_id, "dealbridge_id__c", ext_id("missing"))
    expect_raises(SalesforceResourceNotFound, SF.Opportunity.update, "006000000000000AAA", {"Name": "x"})


@check
def unknown_session_is_expired_session():
    stale = Salesforce(instance_url=BASE_URL, session_id="00D000000000001!stale", version=VERSION)
    exc = expect_raises(SalesforceExpiredSession, stale.query, "SELECT Id FROM User")
    assert exc.content[0]["errorCode"] == "INVALID_SESSION_ID", exc.content


@check
def expired_session_is_renewed_by_logging_in_again():
    set_faults({"token_lifetime_secs": 0})  # every token is dead on arrival
    try:
        sf = soap_login()
        # The client logs in again on each INVALID_SESSION_ID and gives up after three tries.
        expect_raises(SalesforceExpiredSession, sf.query, "SELECT Id FROM User LIMIT 1")
    finally:
        set_faults({})
    logins_before = login_count()
    assert sf.query("SELECT Id FROM User LIMIT 1")["totalSize"] == 1
    assert login_count() == logins_before + 1, "one new login after INVALID_SESSION_ID"


def login_count():
    calls = requests.get(f"{CONTROL_URL}/__emulator/requests", timeout=10).json()
    return sum(c["count"] for c in calls["calls"] if "/services/Soap/" in c["route"])


@check
def describe_and_describe_global():
    desc = SF.Opportunity.describe()
    assert desc["name"] == "Opportunity" and desc["keyPrefix"] == "006"
    fields = {f["name"]: f for f in desc["fields"]}
    assert fields["dealbridge_id__c"]["externalId"] is True and fields["dealbridge_id__c"]["unique"] is True
    stages = [p["value"] for p in fields["StageName"]["picklistValues"] if p["active"]]
    assert "Prospecting" in stages and "Closed Won" in stages, stages
    glob = SF.describe()
    names = {o["name"] for o in glob["sobjects"]}
    assert {"Opportunity", "Account", "Contact", "OpportunityContactRole", "User"} <= names, names
    assert SF.limits()["DailyApiRequests"]["Max"] > 0
    assert SF.api_usage["api-usage"].total > 0


def soql_datetime(text):
    """The latestDateCovered text (2026-05-20T20:49:00.000+0000) as a SOQL datetime literal."""
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").strftime("%Y-%m-%dT%H:%M:%SZ")


@check
def updated_and_deleted_agree_with_soql():
    # Windows are whole minutes and end no later than now, so compare with SOQL over the window
    # the API says it covered instead of waiting for the current minute to close.
    now = datetime.datetime.now(datetime.timezone.utc)
    start = (now - datetime.timedelta(days=29)).replace(second=0, microsecond=0)
    doomed = SF.Opportunity.create(new_opportunity(dealbridge_id__c=ext_id("window")))["id"]
    SF.Opportunity.delete(doomed)
    updated = SF.Opportunity.updated(start, now + datetime.timedelta(minutes=1))
    covered = soql_datetime(updated["latestDateCovered"])
    since = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    live = SF.query_all(
        f"SELECT Id FROM Opportunity WHERE SystemModstamp >= {since} AND SystemModstamp < {covered}"
    )
    assert sorted(updated["ids"]) == sorted(r["Id"] for r in live["records"]), (len(updated["ids"]), live["totalSize"])
    assert updated["ids"], "the demo org has opportunities modified within the last 29 days"
    assert doomed not in updated["ids"], "deleted records are listed by deleted/, not updated/"

    deleted = SF.Opportunity.deleted(start, now + datetime.timedelta(minutes=1))
    for key in ("earliestDateAvailable", "latestDateCovered"):
        datetime.datetime.strptime(deleted[key], "%Y-%m-%dT%H:%M:%S.%f%z")
    gone = SF.query_all("SELECT Id, IsDeleted FROM Opportunity WHERE IsDeleted = true", include_deleted=True)
    gone_ids = {r["Id"] for r in gone["records"]}
    for record in deleted["deletedRecords"]:
        assert record["id"] in gone_ids, record
        assert record["deletedDate"] < deleted["latestDateCovered"], record
    assert doomed in gone_ids


@check
def composite_collections_through_restful():
    records = [
        {"attributes": {"type": "Opportunity"}, **new_opportunity(dealbridge_id__c=ext_id(f"coll-{i}"))}
        for i in range(3)
    ]
    records.append({"attributes": {"type": "Opportunity"}, "Name": "missing stage"})
    created = SF.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": records})
    assert [r["success"] for r in created] == [True, True, True, False], created
    assert created[3]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING", created[3]
    ids = [r["id"] for r in created[:3]]
    got = SF.restful("composite/sobjects/Opportunity", params={"ids": ",".join(ids), "fields": "Id,dealbridge_id__c"})
    assert [g["dealbridge_id__c"] for g in got] == [ext_id(f"coll-{i}") for i in range(3)], got
    upserted = SF.restful(
        "composite/sobjects/Opportunity/dealbridge_id__c",
        method="PATCH",
        json={"allOrNone": False, "records": [
            {"attributes": {"type": "Opportunity"}, "dealbridge_id__c": ext_id("coll-0"), "Description": "upserted"},
            {"attributes": {"type": "Opportunity"}, **new_opportunity(dealbridge_id__c=ext_id("coll-new"))},
        ]},
    )
    assert [(u["success"], u["created"]) for u in upserted] == [(True, False), (True, True)], upserted
    ids.append(upserted[1]["id"])
    gone = SF.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids), "allOrNone": "false"})
    assert all(g["success"] for g in gone) and [g["id"] for g in gone] == ids, gone


@check
def is_sandbox_reads_the_organization():
    assert SF.is_sandbox() is False
    org = SF.query("SELECT Id, Name, OrganizationType FROM Organization")["records"][0]
    assert org["Id"].startswith("00D") and org["OrganizationType"], org


@check
def child_subqueries_and_aggregates_through_query():
    rows = SF.query(
        "SELECT Id, (SELECT ContactId, Role, IsPrimary FROM OpportunityContactRoles) "
        "FROM Opportunity ORDER BY Id LIMIT 200"
    )["records"]
    nested = [r["OpportunityContactRoles"] for r in rows]
    assert any(n is None for n in nested), nested[:5]
    with_roles = [n for n in nested if n is not None]
    assert with_roles and all(n["done"] and n["totalSize"] == len(n["records"]) for n in with_roles), with_roles[:2]
    assert all(c["attributes"]["type"] == "OpportunityContactRole" for n in with_roles for c in n["records"])
    groups = SF.query("SELECT StageName, COUNT(Id) FROM Opportunity GROUP BY StageName")["records"]
    total = SF.query("SELECT COUNT() FROM Opportunity")["totalSize"]
    assert sum(g["expr0"] for g in groups) == total, (groups, total)
    assert all(g["attributes"]["type"] == "AggregateResult" for g in groups)


run("simple-salesforce")
