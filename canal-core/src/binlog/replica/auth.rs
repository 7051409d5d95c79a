//! Pure authentication logic: scrambles for `mysql_native_password` and `caching_sha2_password`
//! (fast path), and the RSA password encryption of caching_sha2's full path over plain TCP
//! (PEM/DER parsing done here with bounds checks so a bad key is an error, never a panic).

use mysql_common::crypto::rsa::{GetRandom, Padding, Pkcs1OaepPadding, PublicKey};
use mysql_common::num_bigint::BigUint;
use mysql_common::scramble::{scramble_native, scramble_sha256};

use super::error::ReplicaError;

/// `mysql_native_password`.
pub(crate) const NATIVE: &str = "mysql_native_password";
/// `caching_sha2_password` (MySQL 8 default).
pub(crate) const CACHING_SHA2: &str = "caching_sha2_password";

/// caching_sha2 `AuthMoreData` status: the fast path succeeded, an OK packet follows.
pub(crate) const SHA2_FAST_AUTH_OK: u8 = 3;
/// caching_sha2 `AuthMoreData` status: the server needs the clear password (TLS or RSA).
pub(crate) const SHA2_PERFORM_FULL_AUTH: u8 = 4;
/// Client request for the server's RSA public key.
pub(crate) const SHA2_REQUEST_PUBLIC_KEY: u8 = 2;

/// The auth response for `plugin` given the server's nonce, or `None` if this client cannot
/// speak that plugin.
pub(crate) fn scramble_for(plugin: &str, password: &str, nonce: &[u8]) -> Option<Vec<u8>> {
    let pw = password.as_bytes();
    match plugin {
        NATIVE => Some(scramble_native(nonce, pw).map(|s| s.to_vec()).unwrap_or_default()),
        CACHING_SHA2 => Some(scramble_sha256(nonce, pw).map(|s| s.to_vec()).unwrap_or_default()),
        _ => None,
    }
}

/// Encrypts `password` for caching_sha2's full authentication over an unencrypted connection:
/// `(password || NUL) XOR nonce` (nonce repeated), RSA-OAEP (SHA-1) with the server's PEM key.
///
/// # Errors
/// [`ReplicaError::AuthUnsupported`] when the key cannot be parsed, is too small, or the
/// password is too long for it.
pub(crate) fn rsa_encrypt_password(
    password: &str,
    nonce: &[u8],
    pem: &[u8],
) -> Result<Vec<u8>, ReplicaError> {
    let bad = |reason: String| ReplicaError::AuthUnsupported {
        plugin: CACHING_SHA2.into(),
        reason: format!("cannot use the server's RSA public key: {reason}"),
    };
    if nonce.is_empty() {
        return Err(bad("empty nonce".into()));
    }
    let (modulus, exponent) = parse_rsa_public_key_pem(pem).map_err(bad)?;
    if modulus.bits() < 512 || exponent.bits() == 0 {
        return Err(bad(format!("modulus of {} bits is too small", modulus.bits())));
    }
    let key = PublicKey::new(modulus, exponent);
    let mut msg: Vec<u8> = password.as_bytes().to_vec();
    msg.push(0);
    for (i, b) in msg.iter_mut().enumerate() {
        *b ^= nonce[i % nonce.len()];
    }
    let k = key.num_octets();
    // OAEP with SHA-1 carries at most k - 2*20 - 2 bytes.
    if msg.len() + 42 > k {
        return Err(bad(format!(
            "a {}-byte password does not fit a {k}-byte RSA key",
            msg.len() - 1
        )));
    }
    // Pad first so the padding's own length checks cannot fire inside encrypt_block.
    let padded = Pkcs1OaepPadding::new(GetRandom).pub_pad(&msg, k);
    let c = BigUint::from_bytes_be(&padded).modpow(key.exponent(), key.modulus());
    let mut out = c.to_bytes_be();
    while out.len() < k {
        out.insert(0, 0);
    }
    Ok(out)
}

/// Parses an RSA public key in PEM (`BEGIN PUBLIC KEY` = SubjectPublicKeyInfo, or
/// `BEGIN RSA PUBLIC KEY` = PKCS#1) into (modulus, exponent).
pub(crate) fn parse_rsa_public_key_pem(pem: &[u8]) -> Result<(BigUint, BigUint), String> {
    let text = std::str::from_utf8(pem).map_err(|_| "key is not text".to_string())?;
    let start = text.find("-----BEGIN ").ok_or("no PEM header")?;
    let after = &text[start + 11..];
    let label_end = after.find("-----").ok_or("bad PEM header")?;
    let label = &after[..label_end];
    let body_start = &after[label_end + 5..];
    let end = body_start.find("-----END ").ok_or("no PEM footer")?;
    let der = base64_decode(&body_start[..end])?;
    let mut top = Der::new(&der);
    let seq = top.expect(0x30)?;
    let mut seq = Der::new(seq);
    let rsa_key = match label {
        "RSA PUBLIC KEY" => return read_rsa_key(seq),
        "PUBLIC KEY" => {
            let _alg = seq.expect(0x30)?;
            let bits = seq.expect(0x03)?;
            match bits.split_first() {
                Some((0, key)) => key,
                _ => return Err("bit string with unused bits".into()),
            }
        }
        other => return Err(format!("unexpected PEM label '{other}'")),
    };
    let mut inner = Der::new(rsa_key);
    read_rsa_key(Der::new(inner.expect(0x30)?))
}

fn read_rsa_key(mut seq: Der<'_>) -> Result<(BigUint, BigUint), String> {
    let n = seq.expect(0x02)?;
    let e = seq.expect(0x02)?;
    Ok((BigUint::from_bytes_be(n), BigUint::from_bytes_be(e)))
}

/// A minimal DER TLV reader (definite lengths only).
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn new(b: &'a [u8]) -> Self {
        Der(b)
    }

    fn expect(&mut self, tag: u8) -> Result<&'a [u8], String> {
        let (&t, rest) = self.0.split_first().ok_or("truncated DER")?;
        if t != tag {
            return Err(format!("DER tag 0x{t:02x} where 0x{tag:02x} was expected"));
        }
        let (&l, mut rest) = rest.split_first().ok_or("truncated DER length")?;
        let len = if l < 0x80 {
            usize::from(l)
        } else {
            let n = usize::from(l & 0x7F);
            if n == 0 || n > 4 || rest.len() < n {
                return Err("unsupported DER length".into());
            }
            let v = rest[..n].iter().fold(0usize, |acc, &b| acc << 8 | usize::from(b));
            rest = &rest[n..];
            v
        };
        if rest.len() < len {
            return Err("DER value runs past the end".into());
        }
        let (v, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(v)
    }
}

fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return Err(format!("invalid base64 byte 0x{c:02x}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // `openssl genrsa 1024 | openssl rsa -pubout` (test key only).
    const PUB_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCyr/2dCG8LWmjPKAae9GQ1Fc9/
byE+gJO8m99CNxWwIk9wm/9ubgrH8o6jQt75yfxsKGS+Cgw/3BBECG6TT0pRdywR
3nPGoRMAk4tZ9TEJWvv/JfvKO+Jm3w6XJIFfVnE9oTg5ZR6KHNzKeuc74kZn1cEh
ZcuSk4EYSsAcrzNYcwIDAQAB
-----END PUBLIC KEY-----
";

    #[test]
    fn native_scramble_matches_reference() {
        // Empty password → empty response (the server expects an empty auth string).
        assert_eq!(scramble_for(NATIVE, "", b"01234567890123456789"), Some(Vec::new()));
        assert_eq!(scramble_for(NATIVE, "canal", b"01234567890123456789").unwrap().len(), 20);
        assert_eq!(scramble_for(CACHING_SHA2, "canal", b"01234567890123456789").unwrap().len(), 32);
        assert_eq!(scramble_for("dialog", "x", b""), None);
    }

    #[test]
    fn pem_parse_and_encrypt() {
        let (n, e) = parse_rsa_public_key_pem(PUB_PEM.as_bytes()).unwrap();
        assert_eq!(n.bits(), 1024);
        assert_eq!(e, BigUint::from(65537u32));
        let out =
            rsa_encrypt_password("secret", b"01234567890123456789", PUB_PEM.as_bytes()).unwrap();
        assert_eq!(out.len(), 128);
        let long = "x".repeat(200);
        assert!(rsa_encrypt_password(&long, b"0123", PUB_PEM.as_bytes()).is_err());
    }

    #[test]
    fn bad_keys_are_errors() {
        for bad in [
            "",
            "-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\nMIGfMA0GCSqGSIb3\n-----END PUBLIC KEY-----",
            "-----BEGIN RSA PUBLIC KEY-----\nMAYCAQACAQA=\n-----END RSA PUBLIC KEY-----",
        ] {
            assert!(rsa_encrypt_password("pw", b"0123", bad.as_bytes()).is_err(), "{bad}");
        }
        // Every truncation of a real key is an error or a value, never a panic.
        for n in 0..PUB_PEM.len() {
            let _ = rsa_encrypt_password("pw", b"0123", &PUB_PEM.as_bytes()[..n]);
        }
    }
}
