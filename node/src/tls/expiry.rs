//! When a certificate expires, for the log lines of a start and a reload: read from its DER
//! by hand (the validity field sits at a fixed place in every X.509 certificate), so no X.509
//! parser joins the dependency tree for one date. rustls has already checked the certificate
//! is well-formed; anything unexpected here gives `None` ("unknown"), never an error.

/// The `notAfter` of the DER certificate `der`, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn not_after(der: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial
    // INTEGER, signature SEQUENCE, issuer SEQUENCE, validity SEQUENCE { notBefore, notAfter }
    // … } … }
    let (certificate, _) = element(der, SEQUENCE)?;
    let (mut tbs, _) = element(certificate, SEQUENCE)?;
    if tbs.first() == Some(&VERSION) {
        tbs = element(tbs, VERSION)?.1;
    }
    let (_serial, tbs) = element(tbs, INTEGER)?;
    let (_signature, tbs) = element(tbs, SEQUENCE)?;
    let (_issuer, tbs) = element(tbs, SEQUENCE)?;
    let (validity, _) = element(tbs, SEQUENCE)?;
    let (_not_before, validity) = time(validity)?;
    let (not_after, _) = time(validity)?;
    Some(not_after)
}

const INTEGER: u8 = 0x02;
const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The contents of the DER element of tag `tag` at the start of `input`, and what follows it.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the low bits count the length's bytes (at most 4 here).
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes
            .iter()
            .fold(0usize, |length, byte| (length << 8) | usize::from(*byte));
        (length, rest)
    };
    (rest.len() >= length).then(|| rest.split_at(length))
}

/// A UTCTime or GeneralizedTime at the start of `input`, formatted, and what follows it.
fn time(input: &[u8]) -> Option<(String, &[u8])> {
    let tag = *input.first()?;
    let (contents, rest) = element(input, tag)?;
    let text = std::str::from_utf8(contents).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let full = match (tag, digits.len()) {
        // RFC 5280: a two-digit year YY is 19YY when YY >= 50, else 20YY.
        (UTC_TIME, 12) => {
            let century = if digits < "50" { "20" } else { "19" };
            format!("{century}{digits}")
        }
        (GENERALIZED_TIME, 14) => digits.to_string(),
        _ => return None,
    };
    let part = |range: std::ops::Range<usize>| full.get(range);
    Some((
        format!(
            "{}-{}-{}T{}:{}:{}Z",
            part(0..4)?,
            part(4..6)?,
            part(6..8)?,
            part(8..10)?,
            part(10..12)?,
            part(12..14)?
        ),
        rest,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate_expiring(year: i32) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["node-1".to_string()])
            .expect("certificate parameters");
        params.not_after = rcgen::date_time_ymd(year, 3, 4);
        let key = rcgen::KeyPair::generate().expect("a key");
        params
            .self_signed(&key)
            .expect("a certificate")
            .der()
            .to_vec()
    }

    #[test]
    fn the_expiry_is_read_from_utc_and_generalized_times() {
        // rcgen writes UTCTime before 2050 and GeneralizedTime from then on, as RFC 5280 asks.
        assert_eq!(
            not_after(&certificate_expiring(2031)).as_deref(),
            Some("2031-03-04T00:00:00Z")
        );
        assert_eq!(
            not_after(&certificate_expiring(2061)).as_deref(),
            Some("2061-03-04T00:00:00Z")
        );
    }

    #[test]
    fn anything_else_is_unknown() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(b"\x30\x82\xff"), None);
        let mut truncated = certificate_expiring(2031);
        truncated.truncate(40);
        assert_eq!(not_after(&truncated), None);
    }
}
