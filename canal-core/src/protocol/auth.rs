//! Canal's password scramble (MySQL `mysql_native_password` style, docs/protocol.md#auth) and the server's
//! accept/reject decision for `canal.user` / `canal.passwd`.
//!
//! The server stores `canal.passwd` = hex(SHA1(SHA1(plain))). The client proves it knows `plain`
//! by sending `token = SHA1(seed ‖ SHA1(SHA1(plain))) XOR SHA1(plain)` (as lowercase hex text) for
//! the 8-byte seed the server put in its handshake.

use sha1::{Digest, Sha1};

/// Length of the handshake seed Java Canal's server sends.
pub const SEED_LEN: usize = 8;

/// Length of a SHA1 digest, and so of a scramble token and a stored password hash.
pub const DIGEST_LEN: usize = 20;

/// A fresh random handshake seed.
pub fn random_seed() -> [u8; SEED_LEN] {
    rand::random()
}

fn sha1(parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// `SHA1(SHA1(plain))`: what `canal.passwd` holds (as hex).
pub fn password_hash(plain: &[u8]) -> [u8; DIGEST_LEN] {
    sha1(&[&sha1(&[plain])])
}

/// `canal.passwd` for a plain password: lowercase hex of [`password_hash`] (MySQL's `PASSWORD()`
/// prints the same digits in uppercase after a `*`; both spellings are accepted).
pub fn password_hash_hex(plain: &[u8]) -> String {
    hex_encode(&password_hash(plain))
}

/// The client's token: `SHA1(seed ‖ SHA1(SHA1(password))) XOR SHA1(password)`.
pub fn scramble(seed: &[u8], password: &[u8]) -> [u8; DIGEST_LEN] {
    let stage1 = sha1(&[password]);
    let stage2 = sha1(&[&stage1]);
    let mut token = sha1(&[seed, &stage2]);
    for (t, s) in token.iter_mut().zip(stage1) {
        *t ^= s;
    }
    token
}

/// What a Java client puts in `ClientAuth.password` (as UTF-8 bytes): the lowercase hex of
/// [`scramble`], or the empty string when it has no password.
pub fn client_password(seed: &[u8], password: &str) -> String {
    if password.is_empty() {
        String::new()
    } else {
        hex_encode(&scramble(seed, password.as_bytes()))
    }
}

/// Server side: does `token` prove knowledge of the password whose [`password_hash`] is `stage2`?
/// Computes `cand = SHA1(seed ‖ stage2) XOR token` and accepts iff `SHA1(cand) == stage2`.
///
/// Like Java, only the first 20 bytes of `token` are used; a shorter token (Java fails with an
/// exception there) is rejected.
pub fn check_scramble(seed: &[u8], token: &[u8], stage2: &[u8]) -> bool {
    let Some(token) = token.first_chunk::<DIGEST_LEN>() else {
        return false;
    };
    let mut cand = sha1(&[seed, stage2]);
    for (c, t) in cand.iter_mut().zip(token) {
        *c ^= t;
    }
    constant_time_eq(&sha1(&[&cand]), stage2)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lowercase hex of `bytes` (Java's `SecurityUtil.byte2HexStr`).
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Text that is not hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a hex string")]
pub struct HexError {
    /// The rejected text.
    pub text: String,
}

/// Parses hex like Java's `SecurityUtil.hexStr2Bytes`: case-insensitive, and an odd-length string
/// reads as if left-padded with `0`.
///
/// # Errors
/// [`HexError`] if a character is not a hex digit.
pub fn hex_decode(text: &str) -> Result<Vec<u8>, HexError> {
    let err = || HexError { text: text.to_owned() };
    let digits = text
        .chars()
        .map(|c| c.to_digit(16).map(|d| d as u8))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(err)?;
    let pad = digits.len() % 2;
    let mut out = Vec::with_capacity(digits.len().div_ceil(2));
    let (head, rest) = digits.split_at(pad);
    out.extend(head.iter().copied());
    out.extend(rest.chunks_exact(2).map(|p| (p[0] << 4) | p[1]));
    Ok(out)
}

/// A `canal.user` / `canal.passwd` pair the server cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// `canal.user` is set but `canal.passwd` is empty (Java refuses to start too).
    #[error("canal.user {user:?} is set but canal.passwd is empty")]
    UserWithoutPasswd {
        /// The configured user.
        user: String,
    },
    /// `canal.passwd` is not hex.
    #[error("canal.passwd is not hex (expected SHA1(SHA1(password)) as 40 hex digits)")]
    PasswdNotHex(#[source] HexError),
    /// `canal.passwd` is hex but not a 20-byte SHA1 digest; no client could ever log in (Java
    /// starts anyway and rejects everyone; we refuse to start).
    #[error("canal.passwd decodes to {len} bytes, not a 20-byte SHA1(SHA1(password))")]
    PasswdWrongLength {
        /// Decoded length in bytes.
        len: usize,
    },
}

/// Why the server rejected a ClientAuth. The server answers every one of them with
/// `ACK{400, "auth failed for user:<name>"}` ([`super::packets::auth_failed`]) and keeps the
/// connection open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// `canal.user` is set and the client's user name differs.
    #[error("user {user:?} is not the configured canal.user")]
    UnknownUser {
        /// The user name the client sent.
        user: String,
    },
    /// A password is configured but the client sent none.
    #[error("user {user:?} sent no password")]
    MissingPassword {
        /// The user name the client sent.
        user: String,
    },
    /// The client's password field is not UTF-8 hex of at least 20 bytes (e.g. a plaintext
    /// password from an old canal-go client).
    #[error("user {user:?} sent a malformed password token")]
    MalformedPassword {
        /// The user name the client sent.
        user: String,
    },
    /// The token does not match the configured password.
    #[error("wrong password for user {user:?}")]
    WrongPassword {
        /// The user name the client sent.
        user: String,
    },
}

/// The server's credentials: `canal.user` and the decoded `canal.passwd`.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    user: String,
    stage2: Option<[u8; DIGEST_LEN]>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is password-equivalent for this protocol: keep it out of logs.
        f.debug_struct("AuthConfig")
            .field("user", &self.user)
            .field("passwd", &self.stage2.map(|_| "<set>"))
            .finish()
    }
}

impl AuthConfig {
    /// An open server: anybody may connect (empty `canal.user` and `canal.passwd`).
    pub fn open() -> Self {
        Self { user: String::new(), stage2: None }
    }

    /// From `canal.user` and `canal.passwd` (hex of SHA1(SHA1(password)), any case, as configured).
    ///
    /// # Errors
    /// [`AuthConfigError`] if a user is set without a password, or the password is not the hex of a
    /// 20-byte digest.
    pub fn new(user: &str, passwd_hex: &str) -> Result<Self, AuthConfigError> {
        if passwd_hex.is_empty() {
            if !user.is_empty() {
                return Err(AuthConfigError::UserWithoutPasswd { user: user.to_owned() });
            }
            return Ok(Self::open());
        }
        let bytes = hex_decode(passwd_hex).map_err(AuthConfigError::PasswdNotHex)?;
        let stage2 = <[u8; DIGEST_LEN]>::try_from(bytes.as_slice())
            .map_err(|_| AuthConfigError::PasswdWrongLength { len: bytes.len() })?;
        Ok(Self { user: user.to_owned(), stage2: Some(stage2) })
    }

    /// Whether any check happens at all (a password is configured).
    pub fn requires_password(&self) -> bool {
        self.stage2.is_some()
    }

    /// Java Canal's decision for a ClientAuth: if `canal.user` is empty or equals `username`, then
    /// accept when no password is configured, reject an empty client password, else verify the
    /// scrambled token against `seed`; a different user is rejected.
    ///
    /// `password` is `ClientAuth.password` as sent: UTF-8 bytes of the hex token.
    ///
    /// # Errors
    /// [`AuthError`] says why the client is rejected.
    pub fn authenticate(
        &self,
        seed: &[u8],
        username: &str,
        password: &[u8],
    ) -> Result<(), AuthError> {
        let user = || username.to_owned();
        if !self.user.is_empty() && self.user != username {
            return Err(AuthError::UnknownUser { user: user() });
        }
        let Some(stage2) = &self.stage2 else {
            return Ok(());
        };
        if password.is_empty() {
            return Err(AuthError::MissingPassword { user: user() });
        }
        let token = std::str::from_utf8(password)
            .ok()
            .and_then(|s| hex_decode(s).ok())
            .filter(|t| t.len() >= DIGEST_LEN)
            .ok_or_else(|| AuthError::MalformedPassword { user: user() })?;
        if check_scramble(seed, &token, stage2) {
            Ok(())
        } else {
            Err(AuthError::WrongPassword { user: user() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_password_hashes() {
        assert_eq!(
            password_hash_hex(b"canal"),
            "E3619321C1A937C46A0D8BD1DAC39F93B27D4458".to_lowercase()
        );
        assert_eq!(
            password_hash_hex(b"admin"),
            "4ACFE3202A5FF5CF467898FC58AAB1D615029441".to_lowercase()
        );
    }

    #[test]
    fn hex_rules() {
        assert_eq!(hex_decode("").unwrap(), Vec::<u8>::new());
        assert_eq!(hex_decode("aBcD").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(hex_decode("abc").unwrap(), vec![0x0a, 0xbc]);
        assert_eq!(hex_decode("f").unwrap(), vec![0x0f]);
        assert!(hex_decode("0g").is_err());
        assert!(hex_decode("+1").is_err());
        assert_eq!(hex_encode(&[0, 0x0f, 0xff]), "000fff");
    }

    #[test]
    fn scramble_round_trip_and_decision_table() {
        let seed = [1, 2, 3, 4, 5, 6, 7, 8];
        let token = client_password(&seed, "canal");
        assert_eq!(token.len(), 40);
        assert_eq!(token, token.to_lowercase());
        assert_eq!(client_password(&seed, ""), "");

        let upper = AuthConfig::new("canal", "E3619321C1A937C46A0D8BD1DAC39F93B27D4458").unwrap();
        assert!(upper.requires_password());
        assert_eq!(upper.authenticate(&seed, "canal", token.as_bytes()), Ok(()));
        // Token is read case-insensitively too.
        assert_eq!(upper.authenticate(&seed, "canal", token.to_uppercase().as_bytes()), Ok(()));
        assert!(matches!(
            upper.authenticate(&[9; 8], "canal", token.as_bytes()),
            Err(AuthError::WrongPassword { .. })
        ));
        assert!(matches!(
            upper.authenticate(&seed, "other", token.as_bytes()),
            Err(AuthError::UnknownUser { .. })
        ));
        assert!(matches!(
            upper.authenticate(&seed, "canal", b""),
            Err(AuthError::MissingPassword { .. })
        ));
        assert!(matches!(
            upper.authenticate(&seed, "canal", b"canal"),
            Err(AuthError::MalformedPassword { .. })
        ));
        assert!(matches!(
            upper.authenticate(&seed, "canal", b"abcdef"),
            Err(AuthError::MalformedPassword { .. })
        ));
        let wrong = client_password(&seed, "admin");
        assert!(matches!(
            upper.authenticate(&seed, "canal", wrong.as_bytes()),
            Err(AuthError::WrongPassword { .. })
        ));

        // Empty canal.user: any user name, password still checked.
        let any_user = AuthConfig::new("", &password_hash_hex(b"admin")).unwrap();
        assert_eq!(any_user.authenticate(&seed, "x", wrong.as_bytes()), Ok(()));
        // Longer token: only the first 20 bytes count, as in Java.
        let long = format!("{wrong}00");
        assert_eq!(any_user.authenticate(&seed, "x", long.as_bytes()), Ok(()));

        // No password configured: everyone in, even with garbage passwords.
        let open = AuthConfig::new("", "").unwrap();
        assert_eq!(open, AuthConfig::open());
        assert_eq!(open.authenticate(&seed, "u", b"plaintext"), Ok(()));
        assert_eq!(AuthConfig::new("", "").unwrap().authenticate(&seed, "", b""), Ok(()));
    }

    #[test]
    fn bad_configs() {
        assert!(matches!(
            AuthConfig::new("canal", ""),
            Err(AuthConfigError::UserWithoutPasswd { .. })
        ));
        assert!(matches!(AuthConfig::new("", "xyz"), Err(AuthConfigError::PasswdNotHex(_))));
        assert!(matches!(
            AuthConfig::new("", "abc"),
            Err(AuthConfigError::PasswdWrongLength { len: 2 })
        ));
        // Odd length left-padded: 39 digits whose padded form is a valid hash.
        let (pw, h) = (0u32..)
            .map(|i| (i, password_hash_hex(i.to_string().as_bytes())))
            .find(|(_, h)| h.starts_with('0'))
            .unwrap();
        let padded = AuthConfig::new("", &h[1..]).unwrap();
        let seed = [3; 8];
        let token = client_password(&seed, &pw.to_string());
        assert_eq!(padded.authenticate(&seed, "", token.as_bytes()), Ok(()));
        let cfg = format!("{:?}", AuthConfig::new("u", &h).unwrap());
        assert!(!cfg.contains(&h), "{cfg}");
    }

    #[test]
    fn seeds_are_random() {
        assert_ne!(random_seed(), random_seed());
    }
}
