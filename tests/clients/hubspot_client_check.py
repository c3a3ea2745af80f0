"""Drives the HubSpot emulator with HubSpot's official Python client, unchanged.

The only change from talking to the real HubSpot is the base URL, set as
``host`` in the client's configuration (and the emulator's CA as
``ssl_ca_cert``). Every call deserializes into the client's models, which
check required fields and allowed values, so a shape the real API would not
send fails here.

Environment: HS_BASE_URL (the emulator's https URL), HS_TOKEN (the
private-app token), HS_CA_CERT (the emulator's CA certificate),
HS_CONTROL_URL (the emulator's control API, http), HS_DEVELOPER_API_KEY and
HS_APP_ID (the developer key and app id of the Webhooks v3 API). The checks run with
HubSpot's rate limits switched off (through the control API) so that bursts
of calls never meet a 429 by chance; one check switches a tiny limit on to
see the 429 itself.
"""

import json
import uuid
import urllib.request
from decimal import Decimal

from hubspot import HubSpot
from hubspot.crm.associations.v4 import (
    AssociationSpec,
    BatchInputPublicAssociationMultiArchive,
    BatchInputPublicAssociationMultiPost,
    BatchInputPublicDefaultAssociationMultiPost,
    BatchInputPublicFetchAssociationsBatchRequest,
    PublicAssociationMultiArchive,
    PublicAssociationMultiPost,
    PublicDefaultAssociationMultiPost,
    PublicFetchAssociationsBatchRequest,
)
from hubspot.crm.associations.v4 import PublicObjectId as AssocObjectId
from hubspot.crm.deals import (
    ApiException,
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchInputSimplePublicObjectId,
    BatchReadInputSimplePublicObjectId,
    BatchResponseSimplePublicObject,
    BatchResponseSimplePublicObjectWithErrors,
    BatchResponseSimplePublicUpsertObject,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObject,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectId,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.properties import PropertyCreate
from hubspot.webhooks import (
    BatchInputSubscriptionBatchUpdateRequest,
    SettingsChangeRequest,
    SettingsResponse,
    SubscriptionBatchUpdateRequest,
    SubscriptionCreateRequest,
    SubscriptionPatchRequest,
    SubscriptionResponse,
    ThrottlingSettings,
)
from hubspot.webhooks import ApiException as WebhooksApiException

from checks import check, env, expect_raises, run

CONTROL_URL = env("HS_CONTROL_URL").rstrip("/")


def set_rate_limits(settings):
    request = urllib.request.Request(
        f"{CONTROL_URL}/__emulator/rate-limits", data=json.dumps(settings).encode(), method="PUT",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, response.status


NO_LIMITS = {"ten_secondly": None, "interval_ms": 10000, "search_per_second": None, "daily": None}
set_rate_limits(NO_LIMITS)

CLIENT = HubSpot(
    access_token=env("HS_TOKEN"),
    host=env("HS_BASE_URL").rstrip("/"),
    ssl_ca_cert=env("HS_CA_CERT"),
)
DEALS = CLIENT.crm.deals
RUN = uuid.uuid4().hex[:8]
UNIQUE_PROPERTY = f"sdk_check_key_{RUN}"
STAGE = "appointmentscheduled"


def deal_properties(name, **more):
    props = {"dealname": f"sdk {RUN} {name}", "pipeline": "default", "dealstage": STAGE}
    props.update(more)
    return props


def create_deal(name, **more):
    return DEALS.basic_api.create(SimplePublicObjectInputForCreate(properties=deal_properties(name, **more)))


def error_body(exc):
    body = json.loads(exc.body)
    for key in ("status", "message", "correlationId", "category"):
        assert key in body, f"{key} missing from error body {body}"
    assert body["status"] == "error", body
    return body


@check
def create_get_update_archive_round_trip():
    deal = create_deal("crud", amount="1234.50", description="first")
    assert isinstance(deal, SimplePublicObject)
    assert deal.id and deal.id.isdigit(), deal.id
    assert deal.archived is False and deal.created_at and deal.updated_at
    assert deal.properties["dealname"] == f"sdk {RUN} crud"
    assert deal.properties["hs_object_id"] == deal.id
    got = DEALS.basic_api.get_by_id(deal.id, properties=["dealname", "amount", "description", "dealstage"])
    # Number properties come back as numbers written out ("1234.5"), still strings.
    assert Decimal(got.properties["amount"]) == Decimal("1234.50"), got.properties
    assert got.properties["description"] == "first"
    updated = DEALS.basic_api.update(deal.id, SimplePublicObjectInput(properties={"description": "second"}))
    assert updated.properties["description"] == "second" and updated.updated_at >= got.updated_at
    assert DEALS.basic_api.archive(deal.id) is None
    exc = expect_raises(ApiException, DEALS.basic_api.get_by_id, deal.id)
    assert exc.status == 404, exc.status
    body = error_body(exc)
    assert body["category"] == "OBJECT_NOT_FOUND", body
    archived = DEALS.basic_api.get_by_id(deal.id, archived=True)
    assert archived.archived is True and archived.archived_at, archived


@check
def get_page_pages_through_every_deal_exactly_once():
    ids, after, pages = [], None, 0
    while True:
        page = DEALS.basic_api.get_page(limit=7, after=after, properties=["dealname"])
        pages += 1
        ids.extend(d.id for d in page.results)
        if page.paging is None:
            break
        after = page.paging.next.after
        assert page.paging.next.link, page.paging
    assert pages > 1 and len(ids) == len(set(ids)), (pages, len(ids), len(set(ids)))
    every = DEALS.get_all(properties=["dealname"])
    assert sorted(d.id for d in every) == sorted(ids)


@check
def get_with_associations():
    deal_with_contact = None
    for deal in DEALS.get_all(associations=["contacts"]):
        if deal.associations and deal.associations.get("contacts"):
            deal_with_contact = deal
            break
    assert deal_with_contact is not None, "the demo portal has deals with contacts"
    assoc = deal_with_contact.associations["contacts"]
    assert assoc.results[0].id and assoc.results[0].type, assoc


@check
def unknown_deal_and_bad_property_are_api_exceptions():
    exc = expect_raises(ApiException, DEALS.basic_api.get_by_id, "999999999999")
    assert exc.status == 404
    error_body(exc)
    exc = expect_raises(ApiException, create_deal, "bad stage", dealstage="no-such-stage")
    assert exc.status == 400, exc.status
    body = error_body(exc)
    assert body["category"] == "VALIDATION_ERROR", body


@check
def bad_token_is_401_with_the_documented_body():
    bad = HubSpot(access_token="pat-na1-wrong", host=env("HS_BASE_URL"), ssl_ca_cert=env("HS_CA_CERT"))
    exc = expect_raises(ApiException, bad.crm.deals.basic_api.get_page)
    assert exc.status == 401
    assert error_body(exc)["category"] == "INVALID_AUTHENTICATION"


@check
def properties_with_history_on_read_and_batch_read():
    deal = create_deal("history", amount="10")
    DEALS.basic_api.update(deal.id, SimplePublicObjectInput(properties={"amount": "20"}))
    got = DEALS.basic_api.get_by_id(deal.id, properties_with_history=["amount", "dealname"])
    amounts = got.properties_with_history["amount"]
    assert [h.value for h in amounts] == ["20", "10"], amounts
    assert all(h.source_type and h.timestamp for h in amounts), amounts
    assert amounts[0].timestamp >= amounts[1].timestamp
    read = DEALS.batch_api.read(BatchReadInputSimplePublicObjectId(
        inputs=[SimplePublicObjectId(id=deal.id)], properties=["dealname"], properties_with_history=["amount"],
    ))
    assert [h.value for h in read.results[0].properties_with_history["amount"]] == ["20", "10"], read.results[0]
    DEALS.basic_api.archive(deal.id)


@check
def batch_create_read_update_archive():
    created = DEALS.batch_api.create(BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
        {"properties": deal_properties(f"batch {i}", amount=str(100 + i))} for i in range(3)
    ]))
    assert isinstance(created, BatchResponseSimplePublicObject), type(created)
    assert created.status == "COMPLETE" and len(created.results) == 3
    assert created.started_at and created.completed_at
    ids = [d.id for d in created.results]
    read = DEALS.batch_api.read(BatchReadInputSimplePublicObjectId(
        inputs=[SimplePublicObjectId(id=i) for i in ids], properties=["amount", "dealname"], properties_with_history=[],
    ))
    assert isinstance(read, BatchResponseSimplePublicObject), type(read)
    assert sorted(d.properties["amount"] for d in read.results) == ["100", "101", "102"]
    updated = DEALS.batch_api.update(BatchInputSimplePublicObjectBatchInput(inputs=[
        SimplePublicObjectBatchInput(id=i, properties={"description": f"batch-updated {i}"}) for i in ids
    ]))
    assert isinstance(updated, BatchResponseSimplePublicObject), type(updated)
    assert {d.id: d.properties["description"] for d in updated.results} == {i: f"batch-updated {i}" for i in ids}
    assert DEALS.batch_api.archive(BatchInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=i) for i in ids])) is None
    gone = DEALS.batch_api.read(BatchReadInputSimplePublicObjectId(
        inputs=[SimplePublicObjectId(id=i) for i in ids], properties=["dealname"], properties_with_history=[],
    ))
    assert isinstance(gone, BatchResponseSimplePublicObjectWithErrors), type(gone)
    assert gone.num_errors == 3 or sum(len(e.context.get("ids", [])) for e in gone.errors) == 3, gone.errors
    assert gone.results == [] and gone.errors[0].category == "OBJECT_NOT_FOUND", gone


@check
def batch_create_with_an_invalid_value_is_400_for_the_whole_batch():
    before = DEALS.search_api.do_search(PublicObjectSearchRequest(
        filter_groups=[FilterGroup(filters=[Filter(property_name="description", operator="EQ", value=f"invalid-{RUN}")])],
    )).total
    exc = expect_raises(ApiException, DEALS.batch_api.create, BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
        {"properties": deal_properties("valid", description=f"invalid-{RUN}")},
        {"properties": deal_properties("invalid", description=f"invalid-{RUN}", amount="lots")},
    ]))
    assert exc.status == 400
    body = error_body(exc)
    assert body["category"] == "VALIDATION_ERROR" and body["errors"][0]["code"] == "INVALID_DECIMAL", body
    after = DEALS.search_api.do_search(PublicObjectSearchRequest(
        filter_groups=[FilterGroup(filters=[Filter(property_name="description", operator="EQ", value=f"invalid-{RUN}")])],
    )).total
    assert before == after == 0, "nothing of a refused batch is created"


@check
def batch_partial_failure_is_207_with_errors():
    deal = create_deal("partial")
    result = DEALS.batch_api.update(BatchInputSimplePublicObjectBatchInput(inputs=[
        SimplePublicObjectBatchInput(id=deal.id, properties={"description": "ok"}),
        SimplePublicObjectBatchInput(id="999999999999", properties={"description": "missing"}),
    ]))
    assert isinstance(result, BatchResponseSimplePublicObjectWithErrors), type(result)
    assert [d.id for d in result.results] == [deal.id]
    assert result.num_errors == 1 and result.errors[0].status == "error", result.errors
    assert result.errors[0].category == "OBJECT_NOT_FOUND", result.errors


@check
def create_unique_property_then_batch_upsert_by_it():
    prop = CLIENT.crm.properties.core_api.create("deals", PropertyCreate(
        name=UNIQUE_PROPERTY, label="SDK check key", type="string", field_type="text",
        group_name="dealinformation", has_unique_value=True,
    ))
    assert prop.name == UNIQUE_PROPERTY and prop.has_unique_value is True and prop.created_at, prop
    listed = CLIENT.crm.properties.core_api.get_all("deals")
    names = {p.name for p in listed.results}
    assert {UNIQUE_PROPERTY, "dealname", "dealstage", "amount"} <= names

    def upsert(key, description):
        return DEALS.batch_api.upsert(BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
            SimplePublicObjectBatchInputUpsert(
                id_property=UNIQUE_PROPERTY, id=key,
                properties=deal_properties(f"upsert {key}", description=description),
            )
        ]))

    first = upsert(f"key-{RUN}", "v1")
    assert isinstance(first, BatchResponseSimplePublicUpsertObject), type(first)
    assert first.results[0].new is True and first.results[0].properties[UNIQUE_PROPERTY] == f"key-{RUN}"
    second = upsert(f"key-{RUN}", "v2")
    assert second.results[0].new is False and second.results[0].id == first.results[0].id
    assert second.results[0].properties["description"] == "v2"


@check
def search_with_filters_sorts_and_paging():
    tag = f"search-{RUN}"
    created = DEALS.batch_api.create(BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
        {"properties": deal_properties(f"{tag} {i}", amount=str(10 * i), description=tag)} for i in range(12)
    ]))
    assert len(created.results) == 12
    request = {
        "filter_groups": [FilterGroup(filters=[
            Filter(property_name="description", operator="EQ", value=tag),
            Filter(property_name="amount", operator="GTE", value="20"),
        ])],
        "sorts": [{"propertyName": "amount", "direction": "DESCENDING"}],
        "properties": ["amount", "dealname"],
        "limit": 4,
    }
    amounts, after = [], None
    while True:
        page = DEALS.search_api.do_search(PublicObjectSearchRequest(after=after, **request))
        assert page.total == 10, page.total
        amounts.extend(int(d.properties["amount"]) for d in page.results)
        if page.paging is None:
            break
        after = page.paging.next.after
    assert amounts == [10 * i for i in range(11, 1, -1)], amounts
    either = DEALS.search_api.do_search(PublicObjectSearchRequest(
        filter_groups=[
            FilterGroup(filters=[Filter(property_name="amount", operator="EQ", value="0"),
                                 Filter(property_name="description", operator="EQ", value=tag)]),
            FilterGroup(filters=[Filter(property_name="amount", operator="EQ", value="110"),
                                 Filter(property_name="description", operator="EQ", value=tag)]),
        ],
        properties=["amount"], limit=100,
    ))
    assert sorted(d.properties["amount"] for d in either.results) == ["0", "110"]


@check
def bad_search_is_400():
    exc = expect_raises(ApiException, DEALS.search_api.do_search, PublicObjectSearchRequest(
        filter_groups=[FilterGroup(filters=[Filter(property_name="amount", operator="SOMETIMES", value="1")])],
    ))
    assert exc.status == 400
    assert error_body(exc)["category"] == "VALIDATION_ERROR"


@check
def associations_v4_basic_and_batch():
    assoc = CLIENT.crm.associations.v4
    deal = create_deal("assoc")
    contacts = CLIENT.crm.contacts.basic_api.get_page(limit=3).results
    assert len(contacts) == 3
    made = assoc.basic_api.create_default("deals", deal.id, "contacts", contacts[0].id)
    assert made.status == "COMPLETE" and made.results, made
    labeled = assoc.basic_api.create("deals", deal.id, "contacts", contacts[1].id, [
        AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=3)
    ])
    # HubSpot sends these ids as JSON numbers; the client's models hold them as strings.
    assert (labeled.from_object_id, labeled.to_object_id) == (deal.id, contacts[1].id), labeled
    page = assoc.basic_api.get_page("deals", deal.id, "contacts")
    assert sorted(str(r.to_object_id) for r in page.results) == sorted([contacts[0].id, contacts[1].id])
    assert all(any(t.type_id == 3 for t in r.association_types) for r in page.results), page
    batch = assoc.batch_api.create("deals", "contacts", BatchInputPublicAssociationMultiPost(inputs=[
        PublicAssociationMultiPost(_from=AssocObjectId(id=deal.id), to=AssocObjectId(id=contacts[2].id), types=[
            AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=3)
        ])
    ]))
    assert batch.status == "COMPLETE" and len(batch.results) == 1, batch
    defaults = assoc.batch_api.create_default("deals", "companies", BatchInputPublicDefaultAssociationMultiPost(inputs=[
        PublicDefaultAssociationMultiPost(_from=AssocObjectId(id=deal.id),
                                          to=AssocObjectId(id=CLIENT.crm.companies.basic_api.get_page(limit=1).results[0].id))
    ]))
    assert defaults.status == "COMPLETE" and defaults.results, defaults
    read = assoc.batch_api.get_page("deals", "contacts", BatchInputPublicFetchAssociationsBatchRequest(inputs=[
        PublicFetchAssociationsBatchRequest(id=deal.id)
    ]))
    assert len(read.results) == 1 and len(read.results[0].to) == 3, read
    assert read.results[0]._from.id == deal.id
    assoc.batch_api.archive("deals", "contacts", BatchInputPublicAssociationMultiArchive(inputs=[
        PublicAssociationMultiArchive(_from=AssocObjectId(id=deal.id), to=[AssocObjectId(id=contacts[2].id)])
    ]))
    assoc.basic_api.archive("deals", deal.id, "contacts", contacts[1].id)
    left = assoc.basic_api.get_page("deals", deal.id, "contacts")
    assert [str(r.to_object_id) for r in left.results] == [contacts[0].id], left


@check
def pipelines_and_stages():
    pipelines = CLIENT.crm.pipelines.pipelines_api.get_all("deals")
    default = next(p for p in pipelines.results if p.id == "default")
    assert default.label and default.created_at and default.archived is False
    stage_ids = [s.id for s in default.stages]
    assert STAGE in stage_ids and "closedwon" in stage_ids, stage_ids
    won = next(s for s in default.stages if s.id == "closedwon")
    assert won.metadata["isClosed"] == "true" and won.metadata["probability"] == "1.0", won.metadata
    one = CLIENT.crm.pipelines.pipelines_api.get_by_id("deals", "default")
    assert [s.id for s in one.stages] == stage_ids
    stages = CLIENT.crm.pipelines.pipeline_stages_api.get_all("deals", "default")
    assert [s.id for s in stages.results] == stage_ids


@check
def owners_list_and_get():
    owners = CLIENT.crm.owners.owners_api.get_page(limit=100)
    assert owners.results, owners
    first = owners.results[0]
    assert first.id and first.email and first.user_id and first.created_at and first.archived is False, first
    assert CLIENT.crm.owners.owners_api.get_by_id(int(first.id)).email == first.email
    by_email = CLIENT.crm.owners.owners_api.get_page(email=first.email)
    assert [o.id for o in by_email.results] == [first.id]



@check
def duplicate_unique_value_is_409_conflict_and_get_by_id_property_finds_it():
    key = f"unique-{RUN}"
    deal = create_deal("unique", **{UNIQUE_PROPERTY: key})
    exc = expect_raises(ApiException, create_deal, "unique again", **{UNIQUE_PROPERTY: key})
    assert exc.status == 409, exc.status
    assert error_body(exc)["category"] == "CONFLICT"
    found = DEALS.basic_api.get_by_id(key, id_property=UNIQUE_PROPERTY, properties=[UNIQUE_PROPERTY])
    assert found.id == deal.id and found.properties[UNIQUE_PROPERTY] == key, found


@check
def archived_deals_are_listed_only_with_archived_true():
    deal = create_deal("to archive")
    DEALS.basic_api.archive(deal.id)
    live = {d.id for d in DEALS.get_all()}
    assert deal.id not in live
    archived = DEALS.get_all(archived=True)
    assert deal.id in {d.id for d in archived} and all(d.archived for d in archived)


@check
def contacts_and_companies_round_trip():
    from hubspot.crm.contacts import SimplePublicObjectInputForCreate as ContactInput

    email = f"sdk-{RUN}@example.com"
    contact = CLIENT.crm.contacts.basic_api.create(ContactInput(properties={"email": email, "firstname": "Sdk"}))
    got = CLIENT.crm.contacts.basic_api.get_by_id(contact.id, properties=["email", "firstname"])
    assert got.properties["email"] == email and got.properties["firstname"] == "Sdk", got.properties
    companies = CLIENT.crm.companies.basic_api.get_page(limit=5, properties=["name"])
    assert len(companies.results) == 5 and all(c.properties.get("name") for c in companies.results)


@check
def properties_get_by_name_and_pipeline_stage_by_id():
    prop = CLIENT.crm.properties.core_api.get_by_name("deals", "dealstage")
    assert prop.type == "enumeration" and prop.options, prop
    assert STAGE in [o.value for o in prop.options]
    stage = CLIENT.crm.pipelines.pipeline_stages_api.get_by_id("deals", "default", STAGE)
    assert stage.id == STAGE and stage.metadata["isClosed"] == "false", stage


@check
def rate_limited_calls_are_429_in_hubspots_shape():
    set_rate_limits({"ten_secondly": 1, "interval_ms": 60000, "search_per_second": None, "daily": None})
    try:
        statuses = []
        for _ in range(3):
            try:
                DEALS.basic_api.get_page(limit=1)
                statuses.append(200)
            except ApiException as exc:
                statuses.append(exc.status)
                limited = exc
        assert statuses.count(429) >= 2, statuses
        body = json.loads(limited.body)
        assert body["status"] == "error" and body["errorType"] == "RATE_LIMIT" and body["correlationId"], body
        assert limited.headers["X-HubSpot-RateLimit-Max"] == "1", dict(limited.headers)
    finally:
        set_rate_limits(NO_LIMITS)


@check
def webhooks_settings_and_subscriptions_with_the_developer_key():
    developer = HubSpot(
        api_key=env("HS_DEVELOPER_API_KEY"),
        host=env("HS_BASE_URL").rstrip("/"),
        ssl_ca_cert=env("HS_CA_CERT"),
    )
    app_id = int(env("HS_APP_ID"))
    settings_api = developer.webhooks.settings_api
    subscriptions_api = developer.webhooks.subscriptions_api
    settings = settings_api.configure(
        app_id,
        SettingsChangeRequest(
            target_url="https://hooks.example.com/hubspot",
            throttling=ThrottlingSettings(max_concurrent_requests=10),
        ),
    )
    assert isinstance(settings, SettingsResponse), settings
    assert settings.target_url == "https://hooks.example.com/hubspot" and settings.created_at, settings
    assert settings_api.get_all(app_id).throttling.max_concurrent_requests == 10
    created = subscriptions_api.create(
        app_id,
        SubscriptionCreateRequest(event_type="deal.propertyChange", property_name="dealname", active=True),
    )
    assert isinstance(created, SubscriptionResponse) and created.id.isdigit(), created
    assert created.event_type == "deal.propertyChange" and created.property_name == "dealname", created
    listed = subscriptions_api.get_all(app_id).results
    assert created.id in [s.id for s in listed], listed
    paused = subscriptions_api.update(int(created.id), app_id, SubscriptionPatchRequest(active=False))
    assert paused.active is False, paused
    batch = subscriptions_api.update_batch(
        app_id,
        BatchInputSubscriptionBatchUpdateRequest(
            inputs=[SubscriptionBatchUpdateRequest(id=int(created.id), active=True)]
        ),
    )
    assert batch.status == "COMPLETE" and batch.results[0].active is True, batch
    assert subscriptions_api.get_by_id(int(created.id), app_id).active is True
    exc = expect_raises(
        WebhooksApiException,
        subscriptions_api.create,
        app_id,
        SubscriptionCreateRequest(event_type="deal.propertyChange", property_name="no_such_property"),
    )
    assert exc.status == 400 and error_body(exc)["category"] == "VALIDATION_ERROR", exc.body
    assert subscriptions_api.archive(int(created.id), app_id) is None
    assert settings_api.clear(app_id) is None
    exc = expect_raises(WebhooksApiException, settings_api.get_all, app_id + 1)
    assert exc.status == 404, exc.status


run("hubspot-api-client")
