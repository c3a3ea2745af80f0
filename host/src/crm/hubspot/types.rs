//! HubSpot wire types: records, pages, batch inputs and per-input outcomes, search requests
//! and the change-scan cursor, associations v4, pipelines, owners and properties.
//!
//! Property values are strings on the wire; this module reads numbers and booleans a server
//! might send as strings too, and always writes strings. It must never do I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::errors::BatchError;

/// Property values to write, by internal name. An empty string clears a property.
pub type Properties = BTreeMap<String, String>;

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

fn lenient_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

fn lenient_props<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Option<String>>, D::Error> {
    let m = Option::<BTreeMap<String, Value>>::deserialize(d)?.unwrap_or_default();
    Ok(m.into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Null => None,
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            };
            (k, v)
        })
        .collect())
}

/// A CRM record (`{"id","properties","createdAt","updatedAt","archived"}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HsObject {
    /// The record id (numeric, as a string).
    #[serde(deserialize_with = "lenient_string")]
    pub id: String,
    /// Property values (strings, or null when unset).
    #[serde(default, deserialize_with = "lenient_props")]
    pub properties: BTreeMap<String, Option<String>>,
    /// Creation time (ISO-8601).
    #[serde(default)]
    pub created_at: Option<String>,
    /// Last update time (ISO-8601).
    #[serde(default)]
    pub updated_at: Option<String>,
    /// Archived (deleted) record.
    #[serde(default)]
    pub archived: bool,
    /// Associations, when asked for with `associations=`.
    #[serde(default)]
    pub associations: Option<Value>,
    /// Echo of the batch input's trace id (batch create/update/upsert).
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub object_write_trace_id: Option<String>,
    /// Batch upsert: whether the record was created.
    #[serde(default)]
    pub new: Option<bool>,
}

impl HsObject {
    /// A property's value (None when unset or null).
    pub fn prop(&self, name: &str) -> Option<&str> {
        self.properties.get(name).and_then(|v| v.as_deref())
    }

    /// `hs_lastmodifieddate` in epoch milliseconds.
    pub fn last_modified_ms(&self) -> Option<i64> {
        self.prop("hs_lastmodifieddate")
            .and_then(parse_timestamp_ms)
    }

    /// The id as a number.
    pub fn numeric_id(&self) -> Option<u64> {
        self.id.parse().ok()
    }
}

/// Parses a HubSpot timestamp: epoch milliseconds, or ISO-8601.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The cursor of a list call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NextPage {
    /// Pass as `after`.
    #[serde(deserialize_with = "lenient_string")]
    pub after: String,
    /// The next page's URL.
    #[serde(default)]
    pub link: Option<String>,
}

/// Paging of a list or search answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Paging {
    /// The next page, when there is one.
    #[serde(default)]
    pub next: Option<NextPage>,
}

/// One page of a list call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ListPage<T> {
    /// This page's items.
    #[serde(default = "Vec::new")]
    pub results: Vec<T>,
    /// The next page.
    #[serde(default)]
    pub paging: Option<Paging>,
}

impl<T> ListPage<T> {
    /// The `after` of the next page, if any.
    pub fn next_after(&self) -> Option<&str> {
        self.paging
            .as_ref()
            .and_then(|p| p.next.as_ref())
            .map(|n| n.after.as_str())
    }
}

/// Who defined an association type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AssociationCategory {
    /// HubSpot's own types (deal→contact 3, deal→company 341, ...).
    HubspotDefined,
    /// A label the portal defined.
    UserDefined,
    /// A label an integration defined.
    IntegratorDefined,
}

/// An association type (category and numeric id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationType {
    /// The category.
    pub association_category: AssociationCategory,
    /// The type id.
    pub association_type_id: u32,
}

impl AssociationType {
    /// A HubSpot-defined type.
    pub const fn hubspot(id: u32) -> Self {
        Self {
            association_category: AssociationCategory::HubspotDefined,
            association_type_id: id,
        }
    }

    /// deal → contact (3, confirmed).
    pub const DEAL_TO_CONTACT: Self = Self::hubspot(3);
    /// contact → deal (4, unverified).
    pub const CONTACT_TO_DEAL: Self = Self::hubspot(4);
    /// deal → company (341, confirmed).
    pub const DEAL_TO_COMPANY: Self = Self::hubspot(341);
    /// deal → company, primary (5, unverified).
    pub const DEAL_TO_COMPANY_PRIMARY: Self = Self::hubspot(5);
    /// company → deal (342, unverified).
    pub const COMPANY_TO_DEAL: Self = Self::hubspot(342);
    /// company → deal, primary (6, unverified).
    pub const COMPANY_TO_DEAL_PRIMARY: Self = Self::hubspot(6);
}

/// An association to create with a new record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssociationSpec {
    /// The other record.
    pub to: RecordRef,
    /// The types (labels) to create.
    pub types: Vec<AssociationType>,
}

/// A reference to a record by id (`{"id": "..."}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRef {
    /// The id.
    #[serde(deserialize_with = "lenient_string")]
    pub id: String,
}

impl RecordRef {
    /// A reference to `id`.
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: id.into() }
    }
}

/// One record to create.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CreateInput {
    /// Its properties.
    pub properties: Properties,
    /// Associations to create with it.
    pub associations: Vec<AssociationSpec>,
}

/// One record to update (by id, or by the batch's `idProperty`) or upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateInput {
    /// The record id, or the unique property's value.
    pub id: String,
    /// The properties to write.
    pub properties: Properties,
}

/// The outcome of one batch input.
pub type BatchItem = Result<HsObject, BatchError>;

/// The outcome of a batch call: one item per input, in input order, plus any error that
/// could not be tied to an input.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchOutcome {
    /// One entry per input, in the order given.
    pub items: Vec<BatchItem>,
    /// Errors HubSpot reported that name no input.
    pub unattributed: Vec<BatchError>,
}

impl BatchOutcome {
    /// Inputs that failed, with their index.
    pub fn failures(&self) -> impl Iterator<Item = (usize, &BatchError)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
    }

    /// True when every input succeeded.
    pub fn all_ok(&self) -> bool {
        self.unattributed.is_empty() && self.items.iter().all(Result::is_ok)
    }
}

/// The raw batch response.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchResponse {
    #[serde(default)]
    pub results: Vec<HsObject>,
    #[serde(default)]
    pub errors: Vec<super::errors::ErrorBody>,
}

/// A search filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operator {
    /// Equal.
    Eq,
    /// Not equal.
    Neq,
    /// Less than.
    Lt,
    /// Less or equal.
    Lte,
    /// Greater than.
    Gt,
    /// Greater or equal.
    Gte,
    /// Between `value` and `highValue`.
    Between,
    /// One of `values`.
    In,
    /// None of `values`.
    NotIn,
    /// Has a value.
    HasProperty,
    /// Has no value.
    NotHasProperty,
    /// Contains the token.
    ContainsToken,
}

/// One search filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// The property.
    pub property_name: String,
    /// The operator.
    pub operator: Operator,
    /// The value (most operators).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The upper value of `BETWEEN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high_value: Option<String>,
    /// The values of `IN` / `NOT_IN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

impl Filter {
    /// A filter with one value.
    pub fn new(property: impl Into<String>, operator: Operator, value: impl Into<String>) -> Self {
        Self {
            property_name: property.into(),
            operator,
            value: Some(value.into()),
            high_value: None,
            values: None,
        }
    }

    /// An `IN` / `NOT_IN` filter.
    pub fn in_list(property: impl Into<String>, operator: Operator, values: Vec<String>) -> Self {
        Self {
            property_name: property.into(),
            operator,
            value: None,
            high_value: None,
            values: Some(values),
        }
    }
}

/// Filters that must all hold (AND); groups are OR'ed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct FilterGroup {
    /// The filters.
    pub filters: Vec<Filter>,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Direction {
    /// Ascending.
    Ascending,
    /// Descending.
    Descending,
}

/// A sort.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sort {
    /// The property.
    pub property_name: String,
    /// The direction.
    pub direction: Direction,
}

/// `POST .../search` body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchRequest {
    /// OR'ed groups (at most 5; at most 10 filters a group and 25 in all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filter_groups: Vec<FilterGroup>,
    /// Sorts (HubSpot applies one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sorts: Vec<Sort>,
    /// Properties to return.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<String>,
    /// Page size (at most 200).
    pub limit: u32,
    /// Offset cursor (must stay below 10,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Free-text query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// A search answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SearchPage {
    /// Matches of the whole query.
    #[serde(default)]
    pub total: u64,
    /// This page.
    #[serde(default)]
    pub results: Vec<HsObject>,
    /// The next page.
    #[serde(default)]
    pub paging: Option<Paging>,
}

/// Where a change scan stands, in `(hs_lastmodifieddate, hs_object_id)` order. What remains
/// is every record with a later time, plus those at `modified_ms` whose id is above
/// `after_id` (all of them when `after_id` is `None`). Safe to checkpoint after every page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanCursor {
    /// Epoch milliseconds.
    pub modified_ms: i64,
    /// The last id done at `modified_ms`.
    pub after_id: Option<u64>,
}

impl ScanCursor {
    /// A scan of everything modified at or after `modified_ms`.
    pub fn from_ms(modified_ms: i64) -> Self {
        Self {
            modified_ms,
            after_id: None,
        }
    }
}

/// What a change scan reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRequest {
    /// `deals`, `companies`, `contacts`...
    pub object_type: String,
    /// The end of the window (exclusive), epoch milliseconds.
    pub until_ms: i64,
    /// Properties to return (the modification property is always added).
    pub properties: Vec<String>,
    /// The property holding the modification time: `None` means `hs_lastmodifieddate`
    /// (deals, companies); contacts use `lastmodifieddate`
    /// (see [`ScanRequest::DEFAULT_MODIFIED_PROPERTY`]).
    pub modified_property: Option<String>,
    /// More filters AND'ed to the scan's own (e.g. `pipeline IN ...`); at most 7.
    pub extra_filters: Vec<Filter>,
    /// Page size (1–200).
    pub page_size: u32,
}

impl ScanRequest {
    /// The modification property of deals and companies.
    pub const DEFAULT_MODIFIED_PROPERTY: &'static str = "hs_lastmodifieddate";

    /// The property the scan orders and filters by.
    pub fn modified_property(&self) -> &str {
        self.modified_property
            .as_deref()
            .unwrap_or(Self::DEFAULT_MODIFIED_PROPERTY)
    }
}

/// One step of a change scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanPage {
    /// Records in `(hs_lastmodifieddate, id)` order.
    pub records: Vec<HsObject>,
    /// Where to continue (checkpoint this after handling `records`).
    pub next: ScanCursor,
    /// True when the window is exhausted.
    pub done: bool,
}

/// One association to create (v4 batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationInput {
    /// From record id.
    pub from: String,
    /// To record id.
    pub to: String,
    /// Types (labels); use the HubSpot-defined default type for a plain association.
    pub types: Vec<AssociationType>,
}

/// A type as v4 reads report it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationTypeInfo {
    /// The category.
    pub category: AssociationCategory,
    /// The type id.
    pub type_id: u32,
    /// The label (None for the unlabeled default).
    #[serde(default)]
    pub label: Option<String>,
}

/// One associated record (v4).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociatedRecord {
    /// Its id.
    #[serde(deserialize_with = "lenient_string")]
    pub to_object_id: String,
    /// The association's types.
    #[serde(default)]
    pub association_types: Vec<AssociationTypeInfo>,
}

/// One result of a v4 batch read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AssociationsOf {
    /// The record read.
    pub from: RecordRef,
    /// Its associated records.
    #[serde(default)]
    pub to: Vec<AssociatedRecord>,
    /// More associations, when there are over a page.
    #[serde(default)]
    pub paging: Option<Paging>,
}

/// A pipeline stage.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStage {
    /// Internal id (the `dealstage` value).
    pub id: String,
    /// Label.
    pub label: String,
    /// Order.
    #[serde(default)]
    pub display_order: i64,
    /// `probability`, `isClosed` (strings).
    #[serde(default, deserialize_with = "lenient_meta")]
    pub metadata: BTreeMap<String, String>,
    /// Archived.
    #[serde(default)]
    pub archived: bool,
}

fn lenient_meta<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(lenient_props(d)?
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect())
}

/// A pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    /// Internal id (`default` for the default deal pipeline).
    pub id: String,
    /// Label.
    pub label: String,
    /// Order.
    #[serde(default)]
    pub display_order: i64,
    /// Archived.
    #[serde(default)]
    pub archived: bool,
    /// Stages.
    #[serde(default)]
    pub stages: Vec<PipelineStage>,
}

/// A stage of a new pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewStage {
    /// Label.
    pub label: String,
    /// Order.
    pub display_order: i64,
    /// For deals: `probability` ("0.0"–"1.0") and `isClosed`.
    pub metadata: BTreeMap<String, String>,
}

/// A pipeline to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewPipeline {
    /// Label, e.g. `Salesforce - Default pipeline`.
    pub label: String,
    /// Order.
    pub display_order: i64,
    /// Stages.
    pub stages: Vec<NewStage>,
}

/// An owner (`/crm/v3/owners`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// Owner id (the `hubspot_owner_id` value).
    #[serde(deserialize_with = "lenient_string")]
    pub id: String,
    /// Email, matched with Salesforce users.
    #[serde(default)]
    pub email: Option<String>,
    /// First name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// The HubSpot user id.
    #[serde(default)]
    pub user_id: Option<u64>,
    /// Archived.
    #[serde(default)]
    pub archived: bool,
}

/// An option of an enumeration property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyOption {
    /// Label.
    pub label: String,
    /// Internal value.
    pub value: String,
    /// Order.
    #[serde(default)]
    pub display_order: i64,
    /// Hidden in forms.
    #[serde(default)]
    pub hidden: bool,
}

/// A property definition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyDefinition {
    /// Internal name.
    pub name: String,
    /// Label.
    #[serde(default)]
    pub label: String,
    /// `string`, `number`, `date`, `datetime`, `enumeration`, `bool`.
    #[serde(rename = "type")]
    pub property_type: String,
    /// `text`, `textarea`, `number`, `date`, `select`, `radio`, `checkbox`,
    /// `booleancheckbox`, `calculation_*`...
    #[serde(default)]
    pub field_type: String,
    /// Group.
    #[serde(default)]
    pub group_name: Option<String>,
    /// Options of enumerations.
    #[serde(default)]
    pub options: Vec<PropertyOption>,
    /// Values are unique (usable as `idProperty`).
    #[serde(default)]
    pub has_unique_value: bool,
    /// Calculated by HubSpot.
    #[serde(default)]
    pub calculated: bool,
}

/// A property to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewProperty {
    /// Internal name (lower-case letters, digits, underscores).
    pub name: String,
    /// Label.
    pub label: String,
    /// `string`, `number`, `enumeration`...
    #[serde(rename = "type")]
    pub property_type: String,
    /// `text`, `select`...
    pub field_type: String,
    /// Group, e.g. `dealinformation`.
    pub group_name: String,
    /// Options of enumerations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<PropertyOption>,
    /// Unique values (for a cross-reference key usable by `batch/upsert`).
    pub has_unique_value: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_strings_nulls_and_stray_numbers() {
        let o: HsObject = serde_json::from_str(
            r#"{"id":"512","properties":{"amount":"17.5","closedate":null,"hs_object_id":512,
               "hs_lastmodifieddate":"2026-05-20T20:49:32.123Z"},"createdAt":"2026-05-20T20:49:32.000Z",
               "updatedAt":"2026-05-20T20:49:32.123Z","archived":false}"#,
        )
        .unwrap();
        assert_eq!(o.prop("amount"), Some("17.5"));
        assert_eq!(o.prop("closedate"), None);
        assert_eq!(o.prop("hs_object_id"), Some("512"));
        assert_eq!(o.last_modified_ms(), Some(1_779_310_172_123));
        assert_eq!(o.numeric_id(), Some(512));
    }

    #[test]
    fn timestamps_parse_as_epoch_ms_or_iso() {
        assert_eq!(parse_timestamp_ms("1779310172123"), Some(1_779_310_172_123));
        assert_eq!(
            parse_timestamp_ms("2026-05-20T20:49:32.123Z"),
            Some(1_779_310_172_123)
        );
        assert_eq!(parse_timestamp_ms("tomorrow"), None);
    }

    #[test]
    fn search_request_serializes_to_the_wire_shape() {
        let r = SearchRequest {
            filter_groups: vec![FilterGroup {
                filters: vec![
                    Filter::new("hs_lastmodifieddate", Operator::Gte, "1000"),
                    Filter::in_list("pipeline", Operator::In, vec!["default".into()]),
                ],
            }],
            sorts: vec![Sort {
                property_name: "hs_lastmodifieddate".into(),
                direction: Direction::Ascending,
            }],
            properties: vec!["dealname".into()],
            limit: 100,
            after: None,
            query: None,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "filterGroups":[{"filters":[
                    {"propertyName":"hs_lastmodifieddate","operator":"GTE","value":"1000"},
                    {"propertyName":"pipeline","operator":"IN","values":["default"]}]}],
                "sorts":[{"propertyName":"hs_lastmodifieddate","direction":"ASCENDING"}],
                "properties":["dealname"],"limit":100})
        );
    }

    #[test]
    fn association_types_serialize_as_hubspot_expects() {
        let v = serde_json::to_value(AssociationType::DEAL_TO_COMPANY).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"associationCategory":"HUBSPOT_DEFINED","associationTypeId":341})
        );
        let read: AssociationsOf = serde_json::from_str(
            r#"{"from":{"id":"1"},"to":[{"toObjectId":42,"associationTypes":[{"category":"USER_DEFINED","typeId":7,"label":"Champion"}]}]}"#,
        )
        .unwrap();
        assert_eq!(read.to[0].to_object_id, "42");
        assert_eq!(
            read.to[0].association_types[0].label.as_deref(),
            Some("Champion")
        );
    }

    #[test]
    fn pipelines_parse_stage_metadata() {
        let p: Pipeline = serde_json::from_str(
            r#"{"id":"default","label":"Sales","displayOrder":0,"archived":false,
               "stages":[{"id":"appointmentscheduled","label":"Appointment","displayOrder":0,
               "metadata":{"probability":"0.2","isClosed":"false"}}]}"#,
        )
        .unwrap();
        assert_eq!(p.stages[0].metadata["probability"], "0.2");
    }
}

// ----- access token info, webhook settings and subscriptions -----

/// What HubSpot says of the client's own private-app token
/// (`POST /oauth/v2/private-apps/get/access-token-info`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenInfo {
    /// The private app the token belongs to.
    #[serde(rename = "appId", alias = "app_id")]
    pub app_id: u64,
    /// The portal (hub) it reaches.
    #[serde(rename = "hubId", alias = "hub_id")]
    pub hub_id: u64,
    /// The user who made the token, when HubSpot says.
    #[serde(default, rename = "userId", alias = "user_id")]
    pub user_id: Option<u64>,
    /// The scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// How fast HubSpot may deliver to the target URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookThrottling {
    /// Deliveries in flight at once.
    pub max_concurrent_requests: u32,
    /// HubSpot's period word (`SECONDLY`), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
}

/// An app's webhook settings (`/webhooks/v3/{appId}/settings`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSettings {
    /// The URL HubSpot delivers events to.
    pub target_url: String,
    /// The delivery throttle.
    #[serde(default)]
    pub throttling: Option<WebhookThrottling>,
}

/// One of an app's webhook subscriptions (`/webhooks/v3/{appId}/subscriptions`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSubscription {
    /// Its id (HubSpot sends a string of digits).
    #[serde(deserialize_with = "lenient_string")]
    pub id: String,
    /// The event type: `deal.creation`, `contact.propertyChange`, ...
    pub event_type: String,
    /// The property of a `propertyChange` subscription.
    #[serde(default)]
    pub property_name: Option<String>,
    /// Whether HubSpot delivers its events.
    #[serde(default)]
    pub active: bool,
}
