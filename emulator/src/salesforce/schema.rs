//! The emulated org's metadata: objects, their fields and picklists, and the
//! `describe` documents built from them.
//!
//! Everything here is static data plus pure functions; it must never touch
//! record state.

use serde_json::{Value, json};

use super::API_VERSION;

/// A Salesforce field type (as `describe` names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Id,
    Reference,
    String,
    TextArea,
    Picklist,
    Email,
    Phone,
    Url,
    Currency,
    Double,
    Percent,
    Int,
    Boolean,
    Date,
    DateTime,
}

impl FieldType {
    pub fn describe_name(self) -> &'static str {
        match self {
            FieldType::Id => "id",
            FieldType::Reference => "reference",
            FieldType::String => "string",
            FieldType::TextArea => "textarea",
            FieldType::Picklist => "picklist",
            FieldType::Email => "email",
            FieldType::Phone => "phone",
            FieldType::Url => "url",
            FieldType::Currency => "currency",
            FieldType::Double => "double",
            FieldType::Percent => "percent",
            FieldType::Int => "int",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::DateTime => "datetime",
        }
    }
    fn soap_type(self) -> &'static str {
        match self {
            FieldType::Id | FieldType::Reference => "tns:ID",
            FieldType::Currency | FieldType::Double | FieldType::Percent => "xsd:double",
            FieldType::Int => "xsd:int",
            FieldType::Boolean => "xsd:boolean",
            FieldType::Date => "xsd:date",
            FieldType::DateTime => "xsd:dateTime",
            _ => "xsd:string",
        }
    }
    /// Whether values are text (length-checked).
    pub fn is_text(self) -> bool {
        matches!(
            self,
            FieldType::String
                | FieldType::TextArea
                | FieldType::Picklist
                | FieldType::Email
                | FieldType::Phone
                | FieldType::Url
        )
    }
    pub fn is_number(self) -> bool {
        matches!(
            self,
            FieldType::Currency | FieldType::Double | FieldType::Percent | FieldType::Int
        )
    }
}

/// One field of an object.
#[derive(Debug, Clone)]
pub struct FieldDef {
    pub name: &'static str,
    pub label: &'static str,
    pub ty: FieldType,
    /// Maximum length of text fields (0 for others).
    pub length: u32,
    /// Required on create (not nillable, no default).
    pub required: bool,
    pub nillable: bool,
    pub createable: bool,
    pub updateable: bool,
    pub external_id: bool,
    pub unique: bool,
    pub reference_to: &'static [&'static str],
    pub relationship_name: Option<&'static str>,
    pub picklist: &'static [&'static str],
    pub restricted_picklist: bool,
    /// Only present in multi-currency orgs.
    pub multi_currency_only: bool,
    /// Value set by the emulator on create when none is given.
    pub defaulted: bool,
}

const fn field(name: &'static str, label: &'static str, ty: FieldType) -> FieldDef {
    FieldDef {
        name,
        label,
        ty,
        length: 0,
        required: false,
        nillable: true,
        createable: true,
        updateable: true,
        external_id: false,
        unique: false,
        reference_to: &[],
        relationship_name: None,
        picklist: &[],
        restricted_picklist: false,
        multi_currency_only: false,
        defaulted: false,
    }
}

impl FieldDef {
    const fn len(mut self, n: u32) -> Self {
        self.length = n;
        self
    }
    const fn req(mut self) -> Self {
        self.required = true;
        self.nillable = false;
        self
    }
    const fn system(mut self) -> Self {
        self.createable = false;
        self.updateable = false;
        self
    }
    const fn not_null(mut self) -> Self {
        self.nillable = false;
        self
    }
    const fn defaulted(mut self) -> Self {
        self.defaulted = true;
        self
    }
    const fn create_only(mut self) -> Self {
        self.updateable = false;
        self
    }
    const fn refs(mut self, to: &'static [&'static str], rel: &'static str) -> Self {
        self.reference_to = to;
        self.relationship_name = Some(rel);
        self.length = 18;
        self
    }
    const fn pick(mut self, values: &'static [&'static str], restricted: bool) -> Self {
        self.picklist = values;
        self.restricted_picklist = restricted;
        self.length = 255;
        self
    }
    const fn ext_id(mut self) -> Self {
        self.external_id = true;
        self.unique = true;
        self.length = 64;
        self
    }
    const fn multi_currency(mut self) -> Self {
        self.multi_currency_only = true;
        self
    }
}

/// Name of the external-id (cross-reference) field on Opportunity, Account and Contact.
pub const EXTERNAL_ID_FIELD: &str = "dealbridge_id__c";

/// The stages of the standard Opportunity sales process:
/// (label, default probability, closed, won, forecast category).
pub const STAGES: &[(&str, f64, bool, bool, &str)] = &[
    ("Prospecting", 10.0, false, false, "Pipeline"),
    ("Qualification", 10.0, false, false, "Pipeline"),
    ("Needs Analysis", 20.0, false, false, "Pipeline"),
    ("Value Proposition", 50.0, false, false, "Pipeline"),
    ("Id. Decision Makers", 60.0, false, false, "Pipeline"),
    ("Perception Analysis", 70.0, false, false, "Pipeline"),
    ("Proposal/Price Quote", 75.0, false, false, "Pipeline"),
    ("Negotiation/Review", 90.0, false, false, "Pipeline"),
    ("Closed Won", 100.0, true, true, "Closed"),
    ("Closed Lost", 0.0, true, false, "Omitted"),
];
const STAGE_NAMES: &[&str] = &[
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
];
/// ISO codes of the multi-currency org's active currencies; the first is the corporate currency.
pub const CURRENCIES: &[&str] = &["USD", "EUR", "GBP", "JPY", "CAD", "AUD"];
const OPP_TYPES: &[&str] = &[
    "Existing Customer - Upgrade",
    "Existing Customer - Replacement",
    "Existing Customer - Downgrade",
    "New Customer",
];
const LEAD_SOURCES: &[&str] = &[
    "Web",
    "Phone Inquiry",
    "Partner Referral",
    "Purchased List",
    "Other",
];
const FORECAST: &[&str] = &["Omitted", "Pipeline", "BestCase", "Forecast", "Closed"];
const ACCOUNT_TYPES: &[&str] = &[
    "Prospect",
    "Customer - Direct",
    "Customer - Channel",
    "Channel Partner / Reseller",
    "Installation Partner",
    "Technology Partner",
    "Other",
];
const INDUSTRIES: &[&str] = &[
    "Agriculture",
    "Banking",
    "Chemicals",
    "Communications",
    "Construction",
    "Consulting",
    "Education",
    "Electronics",
    "Energy",
    "Engineering",
    "Finance",
    "Healthcare",
    "Insurance",
    "Manufacturing",
    "Media",
    "Retail",
    "Technology",
    "Transportation",
    "Utilities",
    "Other",
];
/// OpportunityContactRole.Role values.
pub const ROLES: &[&str] = &[
    "Business User",
    "Decision Maker",
    "Economic Buyer",
    "Economic Decision Maker",
    "Evaluator",
    "Executive Sponsor",
    "Influencer",
    "Technical Buyer",
    "Other",
];

use FieldType as T;

fn system_fields(owner: bool) -> Vec<FieldDef> {
    let mut v = vec![
        field("IsDeleted", "Deleted", T::Boolean)
            .system()
            .not_null()
            .defaulted(),
        field("CreatedDate", "Created Date", T::DateTime)
            .system()
            .not_null()
            .defaulted(),
        field("CreatedById", "Created By ID", T::Reference)
            .refs(&["User"], "CreatedBy")
            .system()
            .not_null()
            .defaulted(),
        field("LastModifiedDate", "Last Modified Date", T::DateTime)
            .system()
            .not_null()
            .defaulted(),
        field("LastModifiedById", "Last Modified By ID", T::Reference)
            .refs(&["User"], "LastModifiedBy")
            .system()
            .not_null()
            .defaulted(),
        field("SystemModstamp", "System Modstamp", T::DateTime)
            .system()
            .not_null()
            .defaulted(),
    ];
    if owner {
        v.push(
            field("OwnerId", "Owner ID", T::Reference)
                .refs(&["User"], "Owner")
                .not_null()
                .defaulted(),
        );
    }
    v
}

/// One object of the org.
#[derive(Debug)]
pub struct ObjectDef {
    pub name: &'static str,
    pub label: &'static str,
    pub label_plural: &'static str,
    pub key_prefix: &'static str,
    /// Whether the REST API may create, update and delete it.
    pub writable: bool,
    pub fields: Vec<FieldDef>,
}

impl ObjectDef {
    /// Index of a field by case-insensitive name.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|f| f.name.eq_ignore_ascii_case(name))
    }
    /// Index of a field visible in this org (respects the multi-currency switch).
    pub fn visible_field(&self, name: &str, multi_currency: bool) -> Option<usize> {
        self.field_index(name)
            .filter(|i| multi_currency || !self.fields[*i].multi_currency_only)
    }
    /// The reference field whose relationship name is `rel` (case-insensitive).
    pub fn relationship(&self, rel: &str) -> Option<usize> {
        self.fields.iter().position(|f| {
            f.relationship_name
                .is_some_and(|r| r.eq_ignore_ascii_case(rel))
        })
    }
    pub fn url(&self) -> String {
        format!("/services/data/{API_VERSION}/sobjects/{}", self.name)
    }
}

/// A child relationship: the records of `child` whose `field` references a
/// `parent` record, named `name` in SOQL subqueries and `describe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildRelationship {
    pub parent: &'static str,
    pub name: &'static str,
    pub child: &'static str,
    pub field: &'static str,
    pub cascade_delete: bool,
}

/// Every child relationship of the org.
pub const CHILD_RELATIONSHIPS: &[ChildRelationship] = &[
    ChildRelationship {
        parent: "Opportunity",
        name: "OpportunityContactRoles",
        child: "OpportunityContactRole",
        field: "OpportunityId",
        cascade_delete: true,
    },
    ChildRelationship {
        parent: "Account",
        name: "Contacts",
        child: "Contact",
        field: "AccountId",
        cascade_delete: false,
    },
    ChildRelationship {
        parent: "Account",
        name: "Opportunities",
        child: "Opportunity",
        field: "AccountId",
        cascade_delete: false,
    },
    ChildRelationship {
        parent: "Contact",
        name: "OpportunityContactRoles",
        child: "OpportunityContactRole",
        field: "ContactId",
        cascade_delete: true,
    },
];

/// All objects of the org.
pub struct Schema {
    pub objects: Vec<ObjectDef>,
}

/// Index of each object in [`Schema::objects`].
pub mod obj {
    pub const OPPORTUNITY: usize = 0;
    pub const ACCOUNT: usize = 1;
    pub const CONTACT: usize = 2;
    pub const OCR: usize = 3;
    pub const USER: usize = 4;
    pub const RECORD_TYPE: usize = 5;
    pub const STAGE: usize = 6;
    pub const ORGANIZATION: usize = 7;
}

impl Schema {
    pub fn new() -> Schema {
        let mut opp = vec![
            field("Id", "Opportunity ID", T::Id)
                .system()
                .not_null()
                .defaulted(),
        ];
        opp.extend([
            field("AccountId", "Account ID", T::Reference).refs(&["Account"], "Account"),
            field("RecordTypeId", "Record Type ID", T::Reference)
                .refs(&["RecordType"], "RecordType")
                .defaulted(),
            field("Name", "Name", T::String).len(120).req(),
            field("Description", "Description", T::TextArea).len(32000),
            field("StageName", "Stage", T::Picklist)
                .pick(STAGE_NAMES, true)
                .req(),
            field("Amount", "Amount", T::Currency),
            field("Probability", "Probability (%)", T::Percent).defaulted(),
            field("CloseDate", "Close Date", T::Date).req(),
            field("Type", "Opportunity Type", T::Picklist).pick(OPP_TYPES, false),
            field("NextStep", "Next Step", T::String).len(255),
            field("LeadSource", "Lead Source", T::Picklist).pick(LEAD_SOURCES, false),
            field("IsClosed", "Closed", T::Boolean)
                .system()
                .not_null()
                .defaulted(),
            field("IsWon", "Won", T::Boolean)
                .system()
                .not_null()
                .defaulted(),
            field("ForecastCategoryName", "Forecast Category", T::Picklist)
                .pick(FORECAST, true)
                .defaulted(),
            field("CurrencyIsoCode", "Opportunity Currency", T::Picklist)
                .pick(CURRENCIES, true)
                .multi_currency()
                .defaulted(),
            field(EXTERNAL_ID_FIELD, "dealbridge ID", T::String).ext_id(),
        ]);
        opp.extend(system_fields(true));

        let mut account = vec![
            field("Id", "Account ID", T::Id)
                .system()
                .not_null()
                .defaulted(),
        ];
        account.extend([
            field("Name", "Account Name", T::String).len(255).req(),
            field("Type", "Account Type", T::Picklist).pick(ACCOUNT_TYPES, false),
            field("Industry", "Industry", T::Picklist).pick(INDUSTRIES, false),
            field("Website", "Website", T::Url).len(255),
            field("Phone", "Account Phone", T::Phone).len(40),
            field("BillingCity", "Billing City", T::String).len(40),
            field("BillingCountry", "Billing Country", T::String).len(80),
            field("AnnualRevenue", "Annual Revenue", T::Currency),
            field("NumberOfEmployees", "Employees", T::Int),
            field("Description", "Account Description", T::TextArea).len(32000),
            field("CurrencyIsoCode", "Account Currency", T::Picklist)
                .pick(CURRENCIES, true)
                .multi_currency()
                .defaulted(),
            field(EXTERNAL_ID_FIELD, "dealbridge ID", T::String).ext_id(),
        ]);
        account.extend(system_fields(true));

        let mut contact = vec![
            field("Id", "Contact ID", T::Id)
                .system()
                .not_null()
                .defaulted(),
        ];
        contact.extend([
            field("AccountId", "Account ID", T::Reference).refs(&["Account"], "Account"),
            field("FirstName", "First Name", T::String).len(40),
            field("LastName", "Last Name", T::String).len(80).req(),
            field("Name", "Full Name", T::String)
                .len(121)
                .system()
                .not_null()
                .defaulted(),
            field("Email", "Email", T::Email).len(80),
            field("Phone", "Business Phone", T::Phone).len(40),
            field("Title", "Title", T::String).len(128),
            field("CurrencyIsoCode", "Contact Currency", T::Picklist)
                .pick(CURRENCIES, true)
                .multi_currency()
                .defaulted(),
            field(EXTERNAL_ID_FIELD, "dealbridge ID", T::String).ext_id(),
        ]);
        contact.extend(system_fields(true));

        let mut ocr = vec![
            field("Id", "Contact Role ID", T::Id)
                .system()
                .not_null()
                .defaulted(),
        ];
        ocr.extend([
            field("OpportunityId", "Opportunity ID", T::Reference)
                .refs(&["Opportunity"], "Opportunity")
                .req()
                .create_only(),
            field("ContactId", "Contact ID", T::Reference)
                .refs(&["Contact"], "Contact")
                .req(),
            field("Role", "Role", T::Picklist).pick(ROLES, false),
            field("IsPrimary", "Primary", T::Boolean)
                .not_null()
                .defaulted(),
        ]);
        ocr.extend(system_fields(false));

        let mut user = vec![
            field("Id", "User ID", T::Id)
                .system()
                .not_null()
                .defaulted(),
        ];
        user.extend([
            field("Username", "Username", T::String).len(80).system(),
            field("FirstName", "First Name", T::String).len(40).system(),
            field("LastName", "Last Name", T::String).len(80).system(),
            field("Name", "Full Name", T::String).len(121).system(),
            field("Email", "Email", T::Email).len(128).system(),
            field("Alias", "Alias", T::String).len(8).system(),
            field("IsActive", "Active", T::Boolean).system(),
        ]);
        user.extend(system_fields(false));

        let mut rt = vec![
            field("Id", "Record Type ID", T::Id)
                .system()
                .not_null()
                .defaulted(),
        ];
        rt.extend([
            field("Name", "Record Type Label", T::String)
                .len(80)
                .system(),
            field("DeveloperName", "Record Type Name", T::String)
                .len(80)
                .system(),
            field("SobjectType", "SObject Type Name", T::Picklist).system(),
            field("Description", "Description", T::String)
                .len(255)
                .system(),
            field("IsActive", "Active", T::Boolean).system(),
        ]);
        rt.extend(system_fields(false));

        let mut stage = vec![
            field("Id", "Opportunity Stage ID", T::Id)
                .system()
                .not_null()
                .defaulted(),
        ];
        stage.extend([
            field("MasterLabel", "Master Label", T::String)
                .len(255)
                .system(),
            field("ApiName", "Api Name", T::String).len(255).system(),
            field("IsActive", "Is Active", T::Boolean).system(),
            field("SortOrder", "Sort Order", T::Int).system(),
            field("IsClosed", "Closed", T::Boolean).system(),
            field("IsWon", "Won", T::Boolean).system(),
            field("ForecastCategoryName", "Forecast Category", T::Picklist)
                .pick(FORECAST, true)
                .system(),
            field("DefaultProbability", "Probability (%)", T::Percent).system(),
            field("Description", "Description", T::String)
                .len(255)
                .system(),
        ]);
        stage.extend(system_fields(false));

        let mut organization = vec![
            field("Id", "Organization ID", T::Id)
                .system()
                .not_null()
                .defaulted(),
        ];
        organization.extend([
            field("Name", "Name", T::String).len(80).system(),
            field("Division", "Division", T::String).len(80).system(),
            field("OrganizationType", "Edition", T::Picklist)
                .pick(
                    &[
                        "Developer Edition",
                        "Enterprise Edition",
                        "Professional Edition",
                        "Unlimited Edition",
                    ],
                    true,
                )
                .system(),
            field("IsSandbox", "Is Sandbox", T::Boolean).system(),
            field("InstanceName", "Instance Name", T::String)
                .len(5)
                .system(),
            field("NamespacePrefix", "Namespace Prefix", T::String)
                .len(15)
                .system(),
            field("IsReadOnly", "Is Read Only", T::Boolean).system(),
            field("DefaultLocaleSidKey", "Locale", T::Picklist).system(),
            field("LanguageLocaleKey", "Language", T::Picklist).system(),
            field("TimeZoneSidKey", "Time Zone", T::Picklist).system(),
            field("TrialExpirationDate", "Trial Expiration Date", T::DateTime).system(),
        ]);
        organization.extend(system_fields(false));

        Schema {
            objects: vec![
                ObjectDef {
                    name: "Opportunity",
                    label: "Opportunity",
                    label_plural: "Opportunities",
                    key_prefix: "006",
                    writable: true,
                    fields: opp,
                },
                ObjectDef {
                    name: "Account",
                    label: "Account",
                    label_plural: "Accounts",
                    key_prefix: "001",
                    writable: true,
                    fields: account,
                },
                ObjectDef {
                    name: "Contact",
                    label: "Contact",
                    label_plural: "Contacts",
                    key_prefix: "003",
                    writable: true,
                    fields: contact,
                },
                ObjectDef {
                    name: "OpportunityContactRole",
                    label: "Opportunity Contact Role",
                    label_plural: "Opportunity Contact Role",
                    key_prefix: "00K",
                    writable: true,
                    fields: ocr,
                },
                ObjectDef {
                    name: "User",
                    label: "User",
                    label_plural: "Users",
                    key_prefix: "005",
                    writable: false,
                    fields: user,
                },
                ObjectDef {
                    name: "RecordType",
                    label: "Record Type",
                    label_plural: "Record Types",
                    key_prefix: "012",
                    writable: false,
                    fields: rt,
                },
                ObjectDef {
                    name: "OpportunityStage",
                    label: "Opportunity Stage",
                    label_plural: "Opportunity Stages",
                    key_prefix: "01J",
                    writable: false,
                    fields: stage,
                },
                ObjectDef {
                    name: "Organization",
                    label: "Organization",
                    label_plural: "Organizations",
                    key_prefix: "00D",
                    writable: false,
                    fields: organization,
                },
            ],
        }
    }

    /// Object index by case-insensitive name.
    pub fn object_index(&self, name: &str) -> Option<usize> {
        self.objects
            .iter()
            .position(|o| o.name.eq_ignore_ascii_case(name))
    }

    /// Object index by the key prefix of an id.
    pub fn object_for_id(&self, id: &str) -> Option<usize> {
        let prefix = id.get(..3)?;
        self.objects.iter().position(|o| o.key_prefix == prefix)
    }
}

impl Default for Schema {
    fn default() -> Self {
        Schema::new()
    }
}

/// The `describe` document of one field.
fn describe_field(f: &FieldDef, default_stage: Option<&str>) -> Value {
    let picklist: Vec<Value> = f
        .picklist
        .iter()
        .map(|v| json!({"active": true, "defaultValue": default_stage == Some(*v), "label": v, "validFor": null, "value": v}))
        .collect();
    let (precision, scale) = match f.ty {
        FieldType::Currency => (18, 2),
        FieldType::Percent => (3, 0),
        FieldType::Double => (18, 2),
        _ => (0, 0),
    };
    json!({
        "aggregatable": !matches!(f.ty, FieldType::TextArea),
        "autoNumber": false,
        "byteLength": if f.ty.is_text() || matches!(f.ty, FieldType::Id | FieldType::Reference) { f.length * 3 } else { 0 },
        "calculated": false,
        "caseSensitive": false,
        "createable": f.createable,
        "custom": f.name.ends_with("__c"),
        "defaultValue": null,
        "defaultedOnCreate": f.defaulted,
        "dependentPicklist": false,
        "digits": if f.ty == FieldType::Int { 9 } else { 0 },
        "externalId": f.external_id,
        "filterable": !matches!(f.ty, FieldType::TextArea),
        "groupable": !matches!(f.ty, FieldType::TextArea | FieldType::Currency | FieldType::Double | FieldType::Percent | FieldType::DateTime),
        "idLookup": f.external_id || f.ty == FieldType::Id,
        "label": f.label,
        "length": if f.ty.is_text() || matches!(f.ty, FieldType::Id | FieldType::Reference) { f.length } else { 0 },
        "name": f.name,
        "nameField": f.name == "Name",
        "nillable": f.nillable,
        "picklistValues": picklist,
        "precision": precision,
        "referenceTo": f.reference_to,
        "relationshipName": f.relationship_name,
        "restrictedPicklist": f.restricted_picklist,
        "scale": scale,
        "soapType": f.ty.soap_type(),
        "sortable": !matches!(f.ty, FieldType::TextArea),
        "type": f.ty.describe_name(),
        "unique": f.unique,
        "updateable": f.updateable,
    })
}

/// Object-level attributes shared by describe and describeGlobal.
fn object_summary(o: &ObjectDef) -> serde_json::Map<String, Value> {
    let url = o.url();
    let v = json!({
        "activateable": false,
        "createable": o.writable,
        "custom": false,
        "customSetting": false,
        "deletable": o.writable,
        "deprecatedAndHidden": false,
        "feedEnabled": false,
        "keyPrefix": o.key_prefix,
        "label": o.label,
        "labelPlural": o.label_plural,
        "layoutable": true,
        "mergeable": false,
        "mruEnabled": false,
        "name": o.name,
        "queryable": true,
        "replicateable": true,
        "retrieveable": true,
        "searchable": o.writable,
        "triggerable": o.writable,
        "undeletable": o.writable,
        "updateable": o.writable,
        "urls": {
            "sobject": url,
            "describe": format!("{url}/describe"),
            "rowTemplate": format!("{url}/{{ID}}"),
        },
    });
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// `GET /sobjects/` (describeGlobal).
pub fn describe_global(schema: &Schema) -> Value {
    let sobjects: Vec<Value> = schema
        .objects
        .iter()
        .map(|o| Value::Object(object_summary(o)))
        .collect();
    json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": sobjects})
}

/// `GET /sobjects/{name}/describe`.
pub fn describe(
    o: &ObjectDef,
    multi_currency: bool,
    record_types: &[(String, String, String)],
) -> Value {
    let mut m = object_summary(o);
    let default_stage = (o.name == "Opportunity").then_some("Prospecting");
    let fields: Vec<Value> = o
        .fields
        .iter()
        .filter(|f| multi_currency || !f.multi_currency_only)
        .map(|f| describe_field(f, default_stage.filter(|_| f.name == "StageName")))
        .collect();
    m.insert("fields".into(), Value::Array(fields));
    let mut infos: Vec<Value> = record_types
        .iter()
        .enumerate()
        .map(|(i, (id, name, dev))| {
            json!({"active": true, "available": true, "defaultRecordTypeMapping": i == 0, "developerName": dev,
                   "master": false, "name": name, "recordTypeId": id,
                   "urls": {"layout": format!("{}/describe/layouts/{id}", o.url())}})
        })
        .collect();
    infos.push(json!({"active": true, "available": true, "defaultRecordTypeMapping": record_types.is_empty(),
        "developerName": "Master", "master": true, "name": "Master", "recordTypeId": "012000000000000AAA",
        "urls": {"layout": format!("{}/describe/layouts/012000000000000AAA", o.url())}}));
    m.insert("recordTypeInfos".into(), Value::Array(infos));
    let children: Vec<Value> = CHILD_RELATIONSHIPS
        .iter()
        .filter(|c| c.parent == o.name)
        .map(|c| json!({"cascadeDelete": c.cascade_delete, "childSObject": c.child, "deprecatedAndHidden": false, "field": c.field, "relationshipName": c.name, "restrictedDelete": false}))
        .collect();
    m.insert("childRelationships".into(), Value::Array(children));
    Value::Object(m)
}

/// `GET /sobjects/{name}` (basic information).
pub fn basic_info(o: &ObjectDef) -> Value {
    json!({"objectDescribe": Value::Object(object_summary(o)), "recentItems": []})
}
