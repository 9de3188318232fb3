//! SASL for AMQP: the PLAIN and AMQPLAIN mechanisms offered in `connection.start`, decoded
//! into a name and password that the broker's users check ([`lepus_broker::users`]).

use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};
use lepus_broker::users::{LoginError, Users};
use lepus_protocol::{Decoder, FieldValue};

/// The mechanisms offered in `connection.start`, in RabbitMQ's order.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";

/// Why a login failed; the text goes to the log, never to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unsupported authentication mechanism '{}'", .0.escape_debug())]
    UnknownMechanism(String),
    #[error("malformed {0} response")]
    Malformed(&'static str),
    #[error(transparent)]
    Login(#[from] LoginError),
}

/// Runs a SASL exchange of one step (both PLAIN and AMQPLAIN are single-step); returns the
/// user's name.
pub fn authenticate(users: &Users, mechanism: &[u8], response: &Bytes, peer: IpAddr) -> Result<String, AuthError> {
    let (name, password) = match mechanism {
        b"PLAIN" => parse_plain(response)?,
        b"AMQPLAIN" => parse_amqplain(response)?,
        other => return Err(AuthError::UnknownMechanism(String::from_utf8_lossy(other).into_owned())),
    };
    Ok(users.login(&name, &password, peer)?.name.clone())
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
    use lepus_broker::users::User;
    use lepus_protocol::{Encoder, FieldTable};

    /// One user; the loopback rule and hashing are the broker's (tested in `users`).
    fn users() -> Users {
        let mut u = Users::new(Vec::new());
        u.add(User::new("alice", "s3cret", &[]));
        u
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn plain_decodes_name_and_password() {
        let u = users();
        let login = |response: &'static [u8]| authenticate(&u, b"PLAIN", &Bytes::from_static(response), PEER);
        assert_eq!(login(b"\0alice\0s3cret"), Ok("alice".into()));
        assert_eq!(login(b"ignored-authzid\0alice\0s3cret"), Ok("alice".into()));
        assert_eq!(login(b"\0alice\0nope"), Err(AuthError::Login(LoginError::BadCredentials("alice".into()))));
        assert_eq!(login(b"alice"), Err(AuthError::Malformed("PLAIN")));
        assert_eq!(login(b"\0alice\0s3cret\0extra"), Err(AuthError::Malformed("PLAIN")));
    }

    #[test]
    fn amqplain_table_without_length_prefix() {
        let table = FieldTable::new().with("LOGIN", "alice").with("PASSWORD", "s3cret");
        let mut buf = BytesMut::new();
        lepus_protocol::table::encode_table(&table, &mut Encoder::new(&mut buf));
        let response = Bytes::from(buf.split_off(4));
        assert!(authenticate(&users(), b"AMQPLAIN", &response, PEER).is_ok());
    }

    #[test]
    fn unknown_mechanism_is_refused() {
        assert_eq!(
            authenticate(&users(), b"EXTERNAL", &Bytes::new(), PEER).unwrap_err(),
            AuthError::UnknownMechanism("EXTERNAL".into())
        );
    }
}
