//! The user name SASL EXTERNAL takes from a verified client certificate, as RabbitMQ's
//! `rabbitmq_auth_mechanism_ssl` does (`ssl_cert_login_from`): the subject's common name, or
//! its whole distinguished name in RabbitMQ's RFC 4514 form (RDNs last to first, joined by
//! `,`; multi-valued RDNs by `+`; RabbitMQ's short attribute names, else the dotted OID; values
//! escaped as RFC 4514 asks, and every byte below 32 or from 126 up as `\XX`).

use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::prelude::{AttributeTypeAndValue, FromDer, X509Certificate, X509Name};

/// Which part of the certificate's subject is the user name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertLoginFrom {
    /// The subject's CN (several CNs are joined with `,`, as RabbitMQ does).
    #[default]
    CommonName,
    /// The whole subject, e.g. `CN=client,O=Example,C=GB`.
    DistinguishedName,
}

/// Why a certificate gave no user name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertNameError {
    #[error("the client certificate cannot be parsed")]
    Unparsable,
    #[error("no common name found in the client certificate's subject")]
    NoName,
}

/// The login name in a DER-encoded certificate.
pub fn login_name(der: &[u8], from: CertLoginFrom) -> Result<String, CertNameError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| CertNameError::Unparsable)?;
    match from {
        CertLoginFrom::CommonName => common_name(cert.subject()),
        CertLoginFrom::DistinguishedName => Ok(distinguished_name(cert.subject())),
    }
}

fn common_name(subject: &X509Name<'_>) -> Result<String, CertNameError> {
    let names: Vec<String> = subject.iter_common_name().map(value_text).collect();
    if names.is_empty() {
        return Err(CertNameError::NoName);
    }
    Ok(names.join(","))
}

/// The subject in RabbitMQ's form (its `rabbitmqctl list_connections peer_cert_subject`).
pub fn distinguished_name(subject: &X509Name<'_>) -> String {
    let rdns: Vec<String> = subject.iter().map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join("+")).collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn attribute(attribute: &AttributeTypeAndValue<'_>) -> String {
    let oid = attribute.attr_type().to_id_string();
    let value = escape(value_text(attribute).as_bytes());
    match short_name(&oid) {
        Some(name) => format!("{name}={value}"),
        None => format!("{oid}={value}"),
    }
}

/// RabbitMQ's names for the attribute types it knows.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.4" => "SN",
        "2.5.4.42" => "GIVENNAME",
        "2.5.4.43" => "INITIALS",
        "2.5.4.44" => "GENERATIONQUALIFIER",
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "TITLE",
        "2.5.4.6" => "C",
        "2.5.4.5" => "SERIALNUMBER",
        "2.5.4.65" => "PSEUDONYM",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "EMAILADDRESS",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// An attribute's value as text: the directory string types decoded, anything else in hex.
fn value_text(attribute: &AttributeTypeAndValue<'_>) -> String {
    if let Ok(s) = attribute.as_str() {
        return s.to_owned();
    }
    let value = attribute.attr_value();
    let data = value.data;
    match value.tag() {
        Tag::BmpString => {
            let units = data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
        }
        Tag::UniversalString => data
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        Tag::TeletexString => data.iter().map(|&b| char::from(b)).collect(),
        _ => {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            format!("#{hex}")
        }
    }
}

/// RFC 4514 escaping as RabbitMQ applies it, byte by byte over the UTF-8 text.
fn escape(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.len().saturating_sub(1);
    for (i, &b) in value.iter().enumerate() {
        match b {
            b' ' | b'#' if i == 0 => {
                out.push('\\');
                out.push(char::from(b));
            }
            b' ' if i == last => out.push_str("\\ "),
            b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b if !(32..126).contains(&b) => out.push_str(&format!("\\{b:02X}")),
            b => out.push(char::from(b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert(subject: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for (t, v) in subject {
            dn.push(t.clone(), *v);
        }
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn common_name_is_taken_as_is() {
        let der = cert(&[(DnType::CountryName, "GB"), (DnType::CommonName, "app, one")]);
        assert_eq!(login_name(&der, CertLoginFrom::CommonName), Ok("app, one".into()));
    }

    #[test]
    fn distinguished_name_is_last_rdn_first_without_spaces() {
        let der = cert(&[
            (DnType::CountryName, "GB"),
            (DnType::OrganizationName, "Example, Ltd"),
            (DnType::OrganizationalUnitName, "ops"),
            (DnType::CommonName, "client"),
        ]);
        assert_eq!(
            login_name(&der, CertLoginFrom::DistinguishedName),
            Ok("CN=client,OU=ops,O=Example\\, Ltd,C=GB".into())
        );
    }

    #[test]
    fn no_common_name_is_refused_and_garbage_is_unparsable() {
        let der = cert(&[(DnType::OrganizationName, "Example")]);
        assert_eq!(login_name(&der, CertLoginFrom::CommonName), Err(CertNameError::NoName));
        assert_eq!(login_name(b"nope", CertLoginFrom::CommonName), Err(CertNameError::Unparsable));
    }

    #[test]
    fn escaping_follows_rabbitmq() {
        assert_eq!(escape(b"#a#"), "\\#a#");
        assert_eq!(escape(b" a b "), "\\ a b\\ ");
        assert_eq!(escape(b"a+b;c<d>e\"f\\g"), "a\\+b\\;c\\<d\\>e\\\"f\\\\g");
        assert_eq!(escape("é~\n".as_bytes()), "\\C3\\A9\\7E\\0A");
        assert_eq!(escape(b" "), "\\ ");
        assert_eq!(escape(b""), "");
    }
}
