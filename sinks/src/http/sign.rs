//! Standard Webhooks signing (<https://www.standardwebhooks.com/>): the
//! receiver checks `webhook-signature` = `v1,` + base64(HMAC-SHA256(secret,
//! `{webhook-id}.{webhook-timestamp}.{body}`)) in constant time, and the
//! timestamp against replays. The id is the request's idempotency key.

use base64::Engine;
use sha2::{Digest, Sha256};

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    for part in message {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The three headers of a signed request.
pub fn headers(
    secret: &[u8],
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let ts = timestamp.to_string();
    let mac = hmac_sha256(secret, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    [
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", ts),
        (
            "webhook-signature",
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac)
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2, and the Standard Webhooks example.
    #[test]
    fn known_answers() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let secret = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let [_, _, (_, sig)] = headers(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
