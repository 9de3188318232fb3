//! Users and SASL: the PLAIN and AMQPLAIN mechanisms, password checks, and RabbitMQ's rule
//! that some users (guest by default) may only log in from loopback.
//!
//! Passwords are stored as RabbitMQ stores them (`rabbit_password_hashing_sha256`):
//! a random 4-byte salt followed by SHA-256(salt ‖ password), so definitions can later be
//! imported from RabbitMQ unchanged.

use std::collections::HashMap;
use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};
use lepus_protocol::{Decoder, FieldValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The mechanisms offered in `connection.start`, in RabbitMQ's order.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub tags: Vec<String>,
    /// salt (4 bytes) ‖ SHA-256(salt ‖ password).
    password_hash: Vec<u8>,
}

impl User {
    pub fn new(name: &str, password: &str, tags: &[&str]) -> User {
        let mut salt = [0u8; 4];
        // A failing OS RNG leaves a zero salt: still a correct hash, only less salted.
        let _ = getrandom::fill(&mut salt);
        User {
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            password_hash: hash(&salt, password),
        }
    }

    pub fn check_password(&self, password: &[u8]) -> bool {
        if self.password_hash.len() != 36 {
            return false;
        }
        let salt = &self.password_hash[..4];
        let mut h = Sha256::new();
        h.update(salt);
        h.update(password);
        let digest = h.finalize();
        digest.as_slice().ct_eq(&self.password_hash[4..]).into()
    }
}

fn hash(salt: &[u8; 4], password: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&h.finalize());
    out
}

/// Why a login failed; the text goes to the log, never to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unsupported authentication mechanism '{0}'")]
    UnknownMechanism(String),
    #[error("malformed {0} response")]
    Malformed(&'static str),
    #[error("user '{0}' does not exist or gave a wrong password")]
    BadCredentials(String),
    #[error("user '{0}' can only connect via localhost")]
    LoopbackOnly(String),
}

/// The user database.
#[derive(Debug, Default)]
pub struct Users {
    users: HashMap<String, User>,
    loopback_only: Vec<String>,
}

impl Users {
    pub fn new(loopback_only: Vec<String>) -> Users {
        Users { users: HashMap::new(), loopback_only }
    }

    pub fn add(&mut self, user: User) {
        self.users.insert(user.name.clone(), user);
    }

    /// Runs a SASL exchange of one step (both PLAIN and AMQPLAIN are single-step).
    pub fn authenticate(&self, mechanism: &[u8], response: &Bytes, peer: IpAddr) -> Result<&User, AuthError> {
        let (name, password) = match mechanism {
            b"PLAIN" => parse_plain(response)?,
            b"AMQPLAIN" => parse_amqplain(response)?,
            other => return Err(AuthError::UnknownMechanism(String::from_utf8_lossy(other).into_owned())),
        };
        let user = self
            .users
            .get(&name)
            .filter(|u| u.check_password(&password))
            .ok_or_else(|| AuthError::BadCredentials(name.clone()))?;
        if self.loopback_only.contains(&name) && !is_loopback(peer) {
            return Err(AuthError::LoopbackOnly(name));
        }
        Ok(user)
    }
}

/// Loopback, including IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`; authzid is ignored.
fn parse_plain(response: &[u8]) -> Result<(String, Vec<u8>), AuthError> {
    let mut parts = response.split(|b| *b == 0);
    let (Some(_authzid), Some(user), Some(pass), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("PLAIN"));
    };
    let user = std::str::from_utf8(user).map_err(|_| AuthError::Malformed("PLAIN"))?;
    Ok((user.to_owned(), pass.to_vec()))
}

/// AMQPLAIN: a field table without its length prefix, holding `LOGIN` and `PASSWORD`.
fn parse_amqplain(response: &Bytes) -> Result<(String, Vec<u8>), AuthError> {
    let mut framed = BytesMut::with_capacity(response.len() + 4);
    framed.put_u32(response.len() as u32);
    framed.extend_from_slice(response);
    let mut d = Decoder::new(framed.freeze(), "AMQPLAIN response");
    let table = lepus_protocol::table::decode_table(&mut d).map_err(|_| AuthError::Malformed("AMQPLAIN"))?;
    let text = |key| match table.get(key) {
        Some(FieldValue::LongStr(b)) | Some(FieldValue::Bytes(b)) => Ok(b.to_vec()),
        _ => Err(AuthError::Malformed("AMQPLAIN")),
    };
    let user = String::from_utf8(text("LOGIN")?).map_err(|_| AuthError::Malformed("AMQPLAIN"))?;
    Ok((user, text("PASSWORD")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lepus_protocol::{Encoder, FieldTable};

    fn users() -> Users {
        let mut u = Users::new(vec!["guest".into()]);
        u.add(User::new("guest", "guest", &["administrator"]));
        u.add(User::new("alice", "s3cret", &[]));
        u
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const REMOTE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn plain_accepts_right_password_only() {
        let u = users();
        assert!(u.authenticate(b"PLAIN", &Bytes::from_static(b"\0alice\0s3cret"), REMOTE).is_ok());
        assert_eq!(
            u.authenticate(b"PLAIN", &Bytes::from_static(b"\0alice\0nope"), REMOTE).unwrap_err(),
            AuthError::BadCredentials("alice".into())
        );
        assert_eq!(
            u.authenticate(b"PLAIN", &Bytes::from_static(b"alice"), REMOTE).unwrap_err(),
            AuthError::Malformed("PLAIN")
        );
    }

    #[test]
    fn guest_only_from_loopback() {
        let u = users();
        let guest = Bytes::from_static(b"\0guest\0guest");
        assert!(u.authenticate(b"PLAIN", &guest, LOCAL).is_ok());
        assert!(u.authenticate(b"PLAIN", &guest, "::1".parse().unwrap()).is_ok());
        assert!(u.authenticate(b"PLAIN", &guest, "::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert_eq!(u.authenticate(b"PLAIN", &guest, REMOTE).unwrap_err(), AuthError::LoopbackOnly("guest".into()));
    }

    #[test]
    fn amqplain_table_without_length_prefix() {
        let table = FieldTable::new().with("LOGIN", "alice").with("PASSWORD", "s3cret");
        let mut buf = BytesMut::new();
        lepus_protocol::table::encode_table(&table, &mut Encoder::new(&mut buf));
        let response = Bytes::from(buf.split_off(4));
        assert!(users().authenticate(b"AMQPLAIN", &response, LOCAL).is_ok());
    }

    #[test]
    fn unknown_mechanism_is_refused() {
        assert_eq!(
            users().authenticate(b"EXTERNAL", &Bytes::new(), LOCAL).unwrap_err(),
            AuthError::UnknownMechanism("EXTERNAL".into())
        );
    }

    #[test]
    fn rabbitmq_hash_format_verifies() {
        // Test vector from RabbitMQ's password hashing docs: salt 908DC60A, password test12.
        let salt = [0x90, 0x8D, 0xC6, 0x0A];
        let user = User { name: "t".into(), tags: vec![], password_hash: hash(&salt, "test12") };
        assert!(user.check_password(b"test12"));
        assert!(!user.check_password(b"test13"));
        let expected = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR";
        assert_eq!(base64_encode(&user.password_hash), expected);
    }

    fn base64_encode(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in bytes.chunks(3) {
            let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }
}
