//! A client of canal-server's admin API (docs/operations.md "Admin API"): one HTTP/1.1 request
//! on its metrics port, the JSON answer back. Used by `canal-server admin …` and
//! `canal-client status --admin`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The server could not be reached, or the connection broke.
    #[error("asking {address}'s admin API")]
    Io {
        /// `host:port` of the metrics port.
        address: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No complete answer within the limit.
    #[error("{address} did not answer within {limit:?}")]
    Timeout {
        /// `host:port` of the metrics port.
        address: String,
        /// The limit.
        limit: Duration,
    },
    /// The server answered with an error status (its message, when it gave one).
    #[error("{address} answered {status}: {message}")]
    Refused {
        /// `host:port` of the metrics port.
        address: String,
        /// The HTTP status.
        status: u16,
        /// The `error` field of the JSON body, else the body.
        message: String,
    },
    /// The answer is not an HTTP response with a JSON body.
    #[error("{address} answered something that is not an admin API reply: {reason}")]
    BadReply {
        /// `host:port` of the metrics port.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Sends `method target` (e.g. `GET /admin/destinations`) with the bearer `token` (none when
/// `None` or empty) and returns the JSON body of a 200 answer.
///
/// # Errors
/// [`AdminError`]: unreachable, no answer within `limit`, an error status, or not JSON.
pub async fn request(
    address: &str,
    method: &str,
    target: &str,
    token: Option<&str>,
    limit: Duration,
) -> Result<serde_json::Value, AdminError> {
    let io = async {
        let mut sock = tokio::net::TcpStream::connect(address).await?;
        let auth = match token.filter(|t| !t.is_empty()) {
            Some(t) => format!("Authorization: Bearer {t}\r\n"),
            None => String::new(),
        };
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        sock.read_to_end(&mut buf).await?;
        std::io::Result::Ok(buf)
    };
    let buf = tokio::time::timeout(limit, io)
        .await
        .map_err(|_| AdminError::Timeout { address: address.to_owned(), limit })?
        .map_err(|source| AdminError::Io { address: address.to_owned(), source })?;
    parse_reply(address, &String::from_utf8_lossy(&buf))
}

/// The JSON body of a 200 reply; the server's message for any other status.
fn parse_reply(address: &str, text: &str) -> Result<serde_json::Value, AdminError> {
    let bad = |reason: String| AdminError::BadReply { address: address.to_owned(), reason };
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(bad(format!("no HTTP header in {} bytes", text.len())));
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("no status in {:?}", head.lines().next().unwrap_or(""))))?;
    let json = serde_json::from_str::<serde_json::Value>(body);
    if status != 200 {
        // The server's `{"error": …}` when it sent one, else the body as it came.
        let error = json.as_ref().ok().and_then(|v| v["error"].as_str());
        let message = error.unwrap_or(body.trim()).to_owned();
        return Err(AdminError::Refused { address: address.to_owned(), status, message });
    }
    json.map_err(|e| bad(format!("status 200 without a JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed_or_typed_errors() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}";
        assert_eq!(parse_reply("x", ok).unwrap()["a"], 1);
        let refused = "HTTP/1.1 401 Unauthorized\r\n\r\n{\"error\":\"token required\"}";
        match parse_reply("x", refused) {
            Err(AdminError::Refused { status: 401, message, .. }) => {
                assert_eq!(message, "token required")
            }
            other => panic!("{other:?}"),
        }
        let plain = "HTTP/1.1 404 Not Found\r\n\r\nno such path\n";
        assert!(matches!(
            parse_reply("x", plain),
            Err(AdminError::Refused { status: 404, message, .. }) if message == "no such path"
        ));
        for bad in ["", "garbage", "HTTP/1.1 OK\r\n\r\n{}", "HTTP/1.1 200 OK\r\n\r\nnot json"] {
            assert!(matches!(parse_reply("x", bad), Err(AdminError::BadReply { .. })), "{bad:?}");
        }
    }

    /// A server that accepts and never answers: a typed timeout, not a hang.
    #[tokio::test]
    async fn a_silent_server_is_a_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let hold = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(sock);
        });
        let limit = Duration::from_millis(300);
        let err = request(&address, "GET", "/admin/destinations", None, limit).await.unwrap_err();
        assert!(matches!(err, AdminError::Timeout { .. }), "{err:?}");
        hold.abort();
    }
}
