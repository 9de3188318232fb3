//! The certificate expiration health check's parts: RabbitMQ's time window (`{within}/{unit}`),
//! the certificates of a PEM file that expire within it, and their expiry dates as RabbitMQ
//! writes them (`2026-12-09 4:55:34`, UTC).

use x509_parser::pem::Pem;
use x509_parser::time::ASN1Time;

const DAY_SECS: i64 = 86_400;

/// `{within}/{unit}` in seconds, or RabbitMQ's reason for refusing it. A month is 30 days and
/// a year 365 days; a negative window looks into the past, as RabbitMQ takes it.
pub fn window_secs(within: &str, unit: &str) -> Result<i64, &'static str> {
    let within: i64 = within.parse().map_err(|_| "Invalid expiration value.")?;
    let unit_secs = match unit {
        "days" => DAY_SECS,
        "weeks" => 7 * DAY_SECS,
        "months" => 30 * DAY_SECS,
        "years" => 365 * DAY_SECS,
        _ => return Err("Time unit not recognised. Supported units: days, weeks, months, years."),
    };
    Ok(within.saturating_mul(unit_secs))
}

/// The expiry dates of the certificates in `pem` that expire before `deadline_secs` (seconds
/// since the epoch); an error if a block is not a certificate.
pub fn expiring(pem: &[u8], deadline_secs: i64) -> Result<Vec<String>, String> {
    let mut dates = Vec::new();
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("not PEM: {e}"))?;
        let cert = block.parse_x509().map_err(|e| format!("not a certificate: {e}"))?;
        let not_after = cert.validity().not_after;
        if not_after.timestamp() < deadline_secs {
            dates.push(date(&not_after));
        }
    }
    Ok(dates)
}

/// RabbitMQ's form of a date: the hour without a leading zero.
fn date(t: &ASN1Time) -> String {
    let t = t.to_datetime();
    format!("{}-{:02}-{:02} {}:{:02}:{:02}", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, date_time_ymd};

    use super::*;

    fn pem_expiring(year: i32, month: u8, day: u8) -> String {
        let mut params = CertificateParams::default();
        params.not_after = date_time_ymd(year, month, day);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn windows_in_rabbitmq_s_units() {
        assert_eq!(window_secs("2", "days"), Ok(2 * DAY_SECS));
        assert_eq!(window_secs("1", "weeks"), Ok(7 * DAY_SECS));
        assert_eq!(window_secs("1", "years"), Ok(365 * DAY_SECS));
        assert_eq!(window_secs("-1", "days"), Ok(-DAY_SECS));
        assert_eq!(window_secs("x", "days"), Err("Invalid expiration value."));
        assert!(window_secs("1", "fortnights").is_err_and(|e| e.starts_with("Time unit not recognised")));
    }

    #[test]
    fn certificates_expiring_within_the_window_are_named_with_their_date() {
        let pem = pem_expiring(2030, 1, 2);
        let jan_1_2030 = 1_893_456_000;
        assert_eq!(expiring(pem.as_bytes(), jan_1_2030), Ok(vec![]));
        assert_eq!(expiring(pem.as_bytes(), jan_1_2030 + 2 * 86_400), Ok(vec!["2030-01-02 0:00:00".to_owned()]));
        assert!(expiring(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", 0).is_err());
    }
}
