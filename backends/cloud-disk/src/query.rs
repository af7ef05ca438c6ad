//! The EC2 Query protocol's request form: `Action`, `Version` and flattened parameters
//! (`VolumeId.1`, `Filter.1.Name`, `Filter.1.Value.1`, `TagSpecification.1.Tag.1.Key`),
//! sent as an `application/x-www-form-urlencoded` POST body encoded with AWS's rules.

/// The EC2 API version whose shapes `model.rs` reads.
pub const VERSION: &str = "2016-11-15";

/// One EC2 request's parameters, in the order added.
#[derive(Debug, Clone)]
pub struct Query {
    action: &'static str,
    params: Vec<(String, String)>,
    filters: usize,
    tag_specifications: usize,
}

impl Query {
    pub fn new(action: &'static str) -> Query {
        Query {
            action,
            params: vec![("Action".into(), action.into()), ("Version".into(), VERSION.into())],
            filters: 0,
            tag_specifications: 0,
        }
    }

    pub fn action(&self) -> &'static str {
        self.action
    }

    pub fn param(mut self, name: &str, value: impl Into<String>) -> Query {
        self.params.push((name.to_owned(), value.into()));
        self
    }

    /// `name` only when there is a value.
    pub fn optional(self, name: &str, value: Option<impl Into<String>>) -> Query {
        match value {
            Some(value) => self.param(name, value),
            None => self,
        }
    }

    /// A list parameter: `name.1`, `name.2`, …
    pub fn list<S: AsRef<str>>(mut self, name: &str, values: &[S]) -> Query {
        for (index, value) in values.iter().enumerate() {
            self = self.param(&format!("{name}.{}", index + 1), value.as_ref());
        }
        self
    }

    /// The next `Filter.N` with its name and values (matched as any-of).
    pub fn filter<S: AsRef<str>>(mut self, name: &str, values: &[S]) -> Query {
        self.filters += 1;
        let prefix = format!("Filter.{}", self.filters);
        self = self.param(&format!("{prefix}.Name"), name);
        self.list(&format!("{prefix}.Value"), values)
    }

    /// The next `TagSpecification.N`: tags for the `resource_type` the call creates.
    pub fn tag_specification(mut self, resource_type: &str, tags: &[(String, String)]) -> Query {
        self.tag_specifications += 1;
        let prefix = format!("TagSpecification.{}", self.tag_specifications);
        self = self.param(&format!("{prefix}.ResourceType"), resource_type);
        for (index, (key, value)) in tags.iter().enumerate() {
            let tag = format!("{prefix}.Tag.{}", index + 1);
            self = self.param(&format!("{tag}.Key"), key.as_str());
            self = self.param(&format!("{tag}.Value"), value.as_str());
        }
        self
    }

    /// The form body: `name=value` pairs joined by `&`, in the order added.
    pub fn encode(&self) -> String {
        self.params
            .iter()
            .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// AWS's percent-encoding: every byte of the UTF-8 text except `A-Z a-z 0-9 - _ . ~`
/// becomes `%XX` with upper-case hex (a space is `%20`, never `+`).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (a malformed escape stays as written; invalid UTF-8 is replaced).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_characters_only_stay_as_they_are() {
        assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(percent_encode("a b+c/d=e&f*"), "a%20b%2Bc%2Fd%3De%26f%2A");
        assert_eq!(percent_encode("ሴ"), "%E1%88%B4");
        assert_eq!(percent_encode(""), "");
    }

    #[test]
    fn decoding_undoes_encoding() {
        for text in ["AZaz09-_.~", "a b+c/d=e&f*", "ሴ", ""] {
            assert_eq!(percent_decode(&percent_encode(text)), text);
        }
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%2f"), "/");
    }

    #[test]
    fn flattened_parameters() {
        let query = Query::new("DescribeVolumes")
            .list("VolumeId", &["vol-1", "vol-2"])
            .filter("tag:CSIVolumeName", &["pvc 1"])
            .filter("status", &["available", "in-use"])
            .optional("MaxResults", Some("5"))
            .optional("NextToken", None::<String>);
        assert_eq!(query.action(), "DescribeVolumes");
        assert_eq!(
            query.encode(),
            "Action=DescribeVolumes&Version=2016-11-15&VolumeId.1=vol-1&VolumeId.2=vol-2\
             &Filter.1.Name=tag%3ACSIVolumeName&Filter.1.Value.1=pvc%201\
             &Filter.2.Name=status&Filter.2.Value.1=available&Filter.2.Value.2=in-use&MaxResults=5"
        );
    }

    #[test]
    fn tag_specifications() {
        let tags = vec![("CSIVolumeName".to_string(), "pvc-1".to_string()), ("team".to_string(), "a=b".to_string())];
        let query = Query::new("CreateVolume").tag_specification("volume", &tags);
        assert_eq!(
            query.encode(),
            "Action=CreateVolume&Version=2016-11-15&TagSpecification.1.ResourceType=volume\
             &TagSpecification.1.Tag.1.Key=CSIVolumeName&TagSpecification.1.Tag.1.Value=pvc-1\
             &TagSpecification.1.Tag.2.Key=team&TagSpecification.1.Tag.2.Value=a%3Db"
        );
    }
}
