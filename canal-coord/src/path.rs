//! Canal's node layout under `/otter/canal`, byte for byte (docs/protocol.md#coordinator-layout).

/// Root of everything Canal writes.
pub const ROOT: &str = "/otter/canal";
/// Parent of the server registration nodes.
pub const CLUSTER: &str = "/otter/canal/cluster";
/// Parent of the per-destination nodes.
pub const DESTINATIONS: &str = "/otter/canal/destinations";

/// `/otter/canal/cluster/{ip:port}`: a server's ephemeral registration.
pub fn server_cluster_node(address: &str) -> String {
    format!("{CLUSTER}/{address}")
}

/// `/otter/canal/destinations/{dest}`.
pub fn destination(dest: &str) -> String {
    format!("{DESTINATIONS}/{dest}")
}

/// `/otter/canal/destinations/{dest}/running`: the destination's active server.
pub fn server_running(dest: &str) -> String {
    format!("{DESTINATIONS}/{dest}/running")
}

/// The persistent epoch node that goes with a running node: its path plus `-epoch`
/// (`/otter/canal/destinations/{dest}/running-epoch`,
/// `/otter/canal/destinations/{dest}/{clientId}/running-epoch`). A sibling, since an ephemeral
/// node cannot have children; not numeric, so Java Canal, which takes only numeric children of
/// `{dest}` for clients, ignores it. Holds the count of activations as decimal text.
pub fn running_epoch(running: &str) -> String {
    format!("{running}-epoch")
}

/// `/otter/canal/destinations/{dest}/running-epoch`: the destination's activation epoch.
pub fn server_running_epoch(dest: &str) -> String {
    running_epoch(&server_running(dest))
}

/// `/otter/canal/destinations/{dest}/cluster`: parent of the destination's candidate servers.
pub fn destination_cluster(dest: &str) -> String {
    format!("{DESTINATIONS}/{dest}/cluster")
}

/// `/otter/canal/destinations/{dest}/cluster/{ip:port}`: a server's ephemeral candidacy.
pub fn destination_cluster_node(dest: &str, address: &str) -> String {
    format!("{DESTINATIONS}/{dest}/cluster/{address}")
}

/// `/otter/canal/destinations/{dest}/{clientId}`: a subscribed client (a Java `short`).
pub fn client(dest: &str, client_id: i16) -> String {
    format!("{DESTINATIONS}/{dest}/{client_id}")
}

/// `/otter/canal/destinations/{dest}/{clientId}/running`: the client's active consumer.
pub fn client_running(dest: &str, client_id: i16) -> String {
    format!("{DESTINATIONS}/{dest}/{client_id}/running")
}

/// `/otter/canal/destinations/{dest}/{clientId}/running-epoch`: the client's activation epoch.
pub fn client_running_epoch(dest: &str, client_id: i16) -> String {
    running_epoch(&client_running(dest, client_id))
}

/// `/otter/canal/destinations/{dest}/{clientId}/cursor`: the client's cursor (LogPosition JSON).
pub fn client_cursor(dest: &str, client_id: i16) -> String {
    format!("{DESTINATIONS}/{dest}/{client_id}/cursor")
}

/// `/otter/canal/destinations/{dest}/{clientId}/filter`: the subscription filter (raw UTF-8).
pub fn client_filter(dest: &str, client_id: i16) -> String {
    format!("{DESTINATIONS}/{dest}/{client_id}/filter")
}

/// `/otter/canal/destinations/{dest}/schema`: the destination's shared schema history (canal-rs
/// only; not numeric, so Java Canal, which reads numeric children as clients, ignores it).
pub fn schema_history(dest: &str) -> String {
    format!("{DESTINATIONS}/{dest}/schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_canals() {
        assert_eq!(
            server_cluster_node("10.20.144.51:11111"),
            "/otter/canal/cluster/10.20.144.51:11111"
        );
        assert_eq!(server_running("example"), "/otter/canal/destinations/example/running");
        assert_eq!(
            destination_cluster_node("example", "10.20.144.51:11111"),
            "/otter/canal/destinations/example/cluster/10.20.144.51:11111"
        );
        assert_eq!(
            client_running("example", 1001),
            "/otter/canal/destinations/example/1001/running"
        );
        assert_eq!(
            server_running_epoch("example"),
            "/otter/canal/destinations/example/running-epoch"
        );
        assert_eq!(
            client_running_epoch("example", 1001),
            "/otter/canal/destinations/example/1001/running-epoch"
        );
        assert_eq!(client_cursor("example", 1001), "/otter/canal/destinations/example/1001/cursor");
        assert_eq!(client_filter("example", 1001), "/otter/canal/destinations/example/1001/filter");
    }
}
