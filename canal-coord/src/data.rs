//! The JSON documents Canal keeps in running nodes: `ServerRunningData` and `ClientRunningData`,
//! with Java Canal's bytes (fastjson: alphabetical keys, nulls omitted, no whitespace).

use serde::{Deserialize, Serialize};

/// What a running node's JSON must offer to the running-node policy.
pub trait RunningData:
    Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + std::fmt::Debug + 'static
{
    /// Identity of the owner (`ip:port`), compared by string equality as Canal does.
    fn address(&self) -> &str;
    /// `false` asks the owner to release (an operator's switch).
    fn active(&self) -> bool;
    /// The JSON bytes Java Canal writes.
    fn to_bytes(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
    /// Parses the node's bytes (unknown fields ignored, as Java does).
    ///
    /// # Errors
    /// The JSON error when the bytes are not such a document.
    fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// `/otter/canal/destinations/{dest}/running`: `{"active":true,"address":"10.20.144.51:11111"}`.
///
/// Field order is the JSON key order (alphabetical, as fastjson writes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRunningData {
    /// `false` makes the owner release the destination.
    #[serde(default = "yes")]
    pub active: bool,
    /// `registerIp:port` of the owning server.
    pub address: String,
    /// Legacy cluster id: omitted when absent, preserved when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<i64>,
}

impl ServerRunningData {
    /// Active data for this server's address.
    pub fn new(address: impl Into<String>) -> Self {
        ServerRunningData { active: true, address: address.into(), cid: None }
    }
}

impl RunningData for ServerRunningData {
    fn address(&self) -> &str {
        &self.address
    }
    fn active(&self) -> bool {
        self.active
    }
}

/// `/otter/canal/destinations/{dest}/{clientId}/running`:
/// `{"active":true,"address":"10.12.48.171:50544","clientId":1001}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRunningData {
    /// `false` makes the owner release.
    #[serde(default = "yes")]
    pub active: bool,
    /// `ip` or `ip:port` of the consuming process.
    pub address: String,
    /// The client id (a Java `short`).
    #[serde(rename = "clientId")]
    pub client_id: i16,
}

impl ClientRunningData {
    /// Active data for this client.
    pub fn new(address: impl Into<String>, client_id: i16) -> Self {
        ClientRunningData { active: true, address: address.into(), client_id }
    }
}

impl RunningData for ClientRunningData {
    fn address(&self) -> &str {
        &self.address
    }
    fn active(&self) -> bool {
        self.active
    }
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_running_data_round_trips_byte_for_byte() {
        let java = br#"{"active":true,"address":"10.20.144.51:11111","cid":1}"#;
        let d = ServerRunningData::from_bytes(java).unwrap();
        assert_eq!(d.cid, Some(1));
        assert_eq!(d.to_bytes(), java);
        let modern = br#"{"active":true,"address":"10.20.144.51:11111"}"#;
        let d = ServerRunningData::from_bytes(modern).unwrap();
        assert_eq!(d, ServerRunningData::new("10.20.144.51:11111"));
        assert_eq!(d.to_bytes(), modern);
        let off = br#"{"active":false,"address":"10.20.144.51:11111"}"#;
        assert!(!ServerRunningData::from_bytes(off).unwrap().active);
        assert_eq!(ServerRunningData::from_bytes(off).unwrap().to_bytes(), off);
    }

    #[test]
    fn client_running_data_round_trips_byte_for_byte() {
        let java = br#"{"active":true,"address":"10.12.48.171:50544","clientId":1001}"#;
        let d = ClientRunningData::from_bytes(java).unwrap();
        assert_eq!(d, ClientRunningData::new("10.12.48.171:50544", 1001));
        assert_eq!(d.to_bytes(), java);
    }

    #[test]
    fn readers_ignore_order_and_unknown_fields() {
        let d =
            ServerRunningData::from_bytes(br#"{"address":"a:1","extra":3,"active":true}"#).unwrap();
        assert_eq!(d.to_bytes(), br#"{"active":true,"address":"a:1"}"#);
    }
}
