//! The inbound contract: what one webhook event becomes. Owned by the mapping issue; delivered by `deliver`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One action produced by a mapping rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    CreateContact(Contact),
    UpsertContact(Contact),
    UpdateContact(ContactUpdate),
    CustomEvent(CustomEvent),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_id: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
    #[serde(default, rename = "list_ids", skip_serializing_if = "Vec::is_empty")]
    pub list_ids: Vec<i64>,
}

/// Identifies the contact an update applies to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identifier {
    Email(String),
    ExtId(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContactUpdate {
    pub identifier: Identifier,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub list_ids: Vec<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomEvent {
    pub event_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_id: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub contact_properties: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub event_properties: Map<String, Value>,
}
