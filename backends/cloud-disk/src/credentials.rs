//! The AWS credentials a call signs with, read through `host.secret` (the CSI request's
//! `secrets` first, else the instance's granted host environment), and the redaction that
//! keeps them out of every message: errors reach the CO unchanged and logs are kept.

use std::fmt;

use kit::types::Error;

use crate::context::Platform;

pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

const REDACTED: &str = "[redacted]";

/// Prefixes of AWS access key ids (long-term, temporary, and principal ids that share the
/// shape); a word that starts with one and is long enough is redacted whoever it belongs to.
const KEY_ID_PREFIXES: [&str; 6] = ["AKIA", "ASIA", "AIDA", "AROA", "ANPA", "AGPA"];
const KEY_ID_MIN_LEN: usize = 16;

/// Header and signing terms whose value follows them (`Credential=AKIA…/…`,
/// `Signature=…`, `X-Amz-Security-Token: …`); the value is redacted up to the next
/// separator.
const LEADS: [&str; 5] =
    ["credential=", "signature=", "authorization:", "x-amz-security-token:", "x-amz-security-token="];

pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials { .. }")
    }
}

impl Credentials {
    /// Reads the credentials; a missing or empty one is `failed-precondition` naming the
    /// secret, never a value.
    pub fn load(platform: &dyn Platform) -> Result<Credentials, Error> {
        let required = |name: &str| {
            present(platform.secret(name)).ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "secret {name} is not set: put it in the CSI request's secrets or grant it to the instance (secret_env)"
                ))
            })
        };
        Ok(Credentials {
            access_key_id: required(ACCESS_KEY_ID)?,
            secret_access_key: required(SECRET_ACCESS_KEY)?,
            session_token: present(platform.secret(SESSION_TOKEN)),
        })
    }

    /// `text` with these credentials, anything shaped like an access key id, and the value
    /// of any signing header or term replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        let secrets = [Some(&self.secret_access_key), self.session_token.as_ref(), Some(&self.access_key_id)];
        for secret in secrets.into_iter().flatten() {
            text = text.replace(secret.as_str(), REDACTED);
        }
        redact_leads(&redact_key_ids(&text))
    }
}

fn present(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.trim().is_empty())
}

fn redact_key_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphanumeric()) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
        let word = &rest[..end];
        let key_like = word.len() >= KEY_ID_MIN_LEN
            && KEY_ID_PREFIXES.iter().any(|prefix| word.starts_with(prefix))
            && word.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        out.push_str(if key_like { REDACTED } else { word });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn redact_leads(text: &str) -> String {
    let mut text = text.to_owned();
    for lead in LEADS {
        let mut from = 0;
        while let Some(found) = text[from..].to_ascii_lowercase().find(lead) {
            let value_start = from + found + lead.len();
            let value = &text[value_start..];
            let skipped = value.len() - value.trim_start().len();
            let value_len = value
                .trim_start()
                .find(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '\'' || c == '<')
                .unwrap_or(value.trim_start().len());
            let start = value_start + skipped;
            text.replace_range(start..start + value_len, REDACTED);
            from = start + REDACTED.len();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::fake::{self, FakePlatform};

    fn credentials() -> Credentials {
        Credentials::load(&FakePlatform::new()).unwrap()
    }

    #[test]
    fn loads_from_host_secrets() {
        let credentials = credentials();
        assert_eq!(credentials.access_key_id, fake::ACCESS_KEY_ID);
        assert_eq!(credentials.secret_access_key, fake::SECRET_ACCESS_KEY);
        assert_eq!(credentials.session_token.as_deref(), Some(fake::SESSION_TOKEN));
        assert_eq!(format!("{credentials:?}"), "Credentials { .. }");
    }

    #[test]
    fn the_session_token_is_optional() {
        let platform = FakePlatform::new();
        platform.secrets.borrow_mut().insert(SESSION_TOKEN.into(), " ".into());
        assert_eq!(Credentials::load(&platform).unwrap().session_token, None);
        platform.secrets.borrow_mut().remove(SESSION_TOKEN);
        assert_eq!(Credentials::load(&platform).unwrap().session_token, None);
    }

    #[test]
    fn a_missing_key_is_named_without_values() {
        for missing in [ACCESS_KEY_ID, SECRET_ACCESS_KEY] {
            let platform = FakePlatform::new();
            platform.secrets.borrow_mut().insert(missing.into(), String::new());
            let Err(Error::FailedPrecondition(message)) = Credentials::load(&platform) else {
                panic!("expected failed-precondition for {missing}");
            };
            assert!(message.contains(missing), "{message}");
            for value in [fake::ACCESS_KEY_ID, fake::SECRET_ACCESS_KEY, fake::SESSION_TOKEN] {
                assert!(!message.contains(value), "{message}");
            }
        }
    }

    #[test]
    fn redaction_removes_credentials_and_their_shapes() {
        let credentials = credentials();
        let text = format!(
            "key {} secret {} token {} other AKIAIOSFODNN7EXAMPLE, \
             Authorization: AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/ec2/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf19 x-amz-security-token: abc",
            fake::ACCESS_KEY_ID,
            fake::SECRET_ACCESS_KEY,
            fake::SESSION_TOKEN
        );
        let redacted = credentials.redact(&text);
        for leaked in [
            fake::ACCESS_KEY_ID,
            fake::SECRET_ACCESS_KEY,
            fake::SESSION_TOKEN,
            "AKIAIOSFODNN7EXAMPLE",
            "AKID/20150830",
            "5fa00fa3",
            "abc",
            "AWS4-HMAC-SHA256",
        ] {
            assert!(!redacted.contains(leaked), "{leaked} in {redacted}");
        }
        assert!(redacted.starts_with("key [redacted] secret [redacted] token [redacted] other [redacted],"));
        assert!(redacted.contains("SignedHeaders=host;x-amz-date"), "{redacted}");
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let credentials = credentials();
        let text = "The volume 'vol-0123456789abcdef0' does not exist. AKIA is short; ASIAlowercase stays";
        assert_eq!(credentials.redact(text), text);
    }
}
