//! SASL for AMQP: the PLAIN and AMQPLAIN mechanisms offered in `connection.start`, decoded
//! into a name and password that the broker's users check ([`lepus_broker::users`]), and
//! EXTERNAL, offered on TLS connections of a listener that verifies client certificates: the
//! user named by the certificate ([`crate::cert_name`]) logs in without a password, as with
//! RabbitMQ's `rabbitmq_auth_mechanism_ssl`.

use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};
use lepus_broker::users::{LoginError, Users};
use lepus_protocol::{Decoder, FieldValue};

/// The mechanisms offered in `connection.start`, in RabbitMQ's order.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";
/// The same with EXTERNAL, on a TLS connection whose listener verifies client certificates.
pub const MECHANISMS_WITH_EXTERNAL: &str = "PLAIN AMQPLAIN EXTERNAL";

/// What SASL EXTERNAL would log in as on a connection: `None` where it is not offered;
/// otherwise the name from the client's certificate, or why there is none.
pub type External = Option<Result<String, AuthError>>;

/// Why a login failed; the text goes to the log, never to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unsupported authentication mechanism '{}'", .0.escape_debug())]
    UnknownMechanism(String),
    #[error("malformed {0} response")]
    Malformed(&'static str),
    #[error("the client presented no TLS certificate")]
    NoPeerCertificate,
    #[error(transparent)]
    CertificateName(#[from] crate::cert_name::CertNameError),
    #[error(transparent)]
    Login(#[from] LoginError),
}

/// Runs a SASL exchange of one step (PLAIN, AMQPLAIN and EXTERNAL are all single-step);
/// returns the user's name. `external` is what EXTERNAL would log in as on this connection.
pub fn authenticate(
    users: &Users,
    mechanism: &[u8],
    response: &Bytes,
    peer: IpAddr,
    external: &External,
) -> Result<String, AuthError> {
    let (name, password) = match (mechanism, external) {
        (b"PLAIN", _) => parse_plain(response)?,
        (b"AMQPLAIN", _) => parse_amqplain(response)?,
        // The response (an authorization identity, if any) is ignored, as RabbitMQ does.
        (b"EXTERNAL", Some(name)) => {
            return Ok(users.login_external(name.as_ref().map_err(Clone::clone)?, peer)?.name.clone());
        }
        (other, _) => return Err(AuthError::UnknownMechanism(String::from_utf8_lossy(other).into_owned())),
    };
    Ok(users.login(&name, &password, peer)?.name.clone())
}

/// What EXTERNAL logs in as, given the client's verified certificate (DER), if it sent one.
pub fn external_name(certificate: Option<&[u8]>, from: crate::cert_name::CertLoginFrom) -> Result<String, AuthError> {
    let der = certificate.ok_or(AuthError::NoPeerCertificate)?;
    Ok(crate::cert_name::login_name(der, from)?)
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
        let login = |response: &'static [u8]| authenticate(&u, b"PLAIN", &Bytes::from_static(response), PEER, &None);
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
        assert!(authenticate(&users(), b"AMQPLAIN", &response, PEER, &None).is_ok());
    }

    #[test]
    fn unknown_mechanism_is_refused() {
        assert_eq!(
            authenticate(&users(), b"CRAM-MD5", &Bytes::new(), PEER, &Some(Ok("alice".into()))).unwrap_err(),
            AuthError::UnknownMechanism("CRAM-MD5".into())
        );
    }

    #[test]
    fn external_only_where_offered_and_for_an_existing_user() {
        let u = users();
        let external = |e: External| authenticate(&u, b"EXTERNAL", &Bytes::new(), PEER, &e);
        assert_eq!(external(None), Err(AuthError::UnknownMechanism("EXTERNAL".into())));
        assert_eq!(external(Some(Ok("alice".into()))), Ok("alice".into()));
        assert_eq!(
            external(Some(Ok("mallory".into()))),
            Err(AuthError::Login(LoginError::NoSuchUser("mallory".into())))
        );
        assert_eq!(external(Some(Err(AuthError::NoPeerCertificate))), Err(AuthError::NoPeerCertificate));
        assert_eq!(external_name(None, Default::default()), Err(AuthError::NoPeerCertificate));
    }
}
