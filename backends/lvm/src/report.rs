//! The JSON reports of `lvs` and `vgs` (`--reportformat json --units b --nosuffix`), read
//! into typed rows.
//!
//! Every report names its columns explicitly ([`LV_COLUMNS`], [`VG_COLUMNS`]) so its shape
//! does not depend on the host's lvm.conf; every value is a JSON string, sizes are whole
//! bytes. Output that is not such a report (garbage, a missing column, a size that is not a
//! number) is `internal`: the backend never guesses at what lvm meant.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use kit::types::Error;

/// The `lvs` columns every LV report asks for.
pub const LV_COLUMNS: &str = "lv_name,vg_name,lv_size,lv_tags,lv_attr,pool_lv,origin,lv_time,data_percent";

/// The `vgs` columns every VG report asks for.
pub const VG_COLUMNS: &str = "vg_name,vg_extent_size,vg_free";

/// One row of an `lvs` report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lv {
    pub name: String,
    pub vg: String,
    /// Bytes; the virtual size of a thin LV, the COW area of a COW snapshot.
    pub size: u64,
    /// Comma-separated (see `tags.rs`).
    pub tags: String,
    /// `lv_attr`: the first character is the volume type.
    pub attr: String,
    /// The thin pool of a thin LV (empty otherwise).
    pub pool: String,
    /// The origin of a snapshot (empty otherwise; empty for a thin snapshot whose origin
    /// was removed).
    pub origin: String,
    /// Creation time, as lvm prints it (see `lvtime.rs`).
    pub time: String,
    /// How full a thin pool's data is, as a decimal percentage; empty when not reported.
    pub data_percent: String,
}

impl Lv {
    fn volume_type(&self) -> Option<char> {
        self.attr.chars().next()
    }

    /// A thin LV (a thin volume or thin snapshot) in a pool.
    pub fn is_thin(&self) -> bool {
        self.volume_type() == Some('V')
    }

    pub fn is_thin_pool(&self) -> bool {
        self.volume_type() == Some('t')
    }

    /// A COW snapshot of a thick LV, valid (`s`) or invalidated by an overflow (`S`).
    pub fn is_cow_snapshot(&self) -> bool {
        matches!(self.volume_type(), Some('s' | 'S'))
    }

    /// A COW snapshot that overflowed and can no longer be read.
    pub fn is_invalid_snapshot(&self) -> bool {
        self.volume_type() == Some('S')
    }
}

/// One row of a `vgs` report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vg {
    pub name: String,
    /// Bytes; never 0.
    pub extent_size: u64,
    /// Unallocated bytes.
    pub free: u64,
}

/// The rows of an `lvs` report.
pub fn parse_lvs(stdout: &[u8]) -> Result<Vec<Lv>, Error> {
    let sections: Vec<LvSection> = parse_report(stdout, "lvs")?;
    sections
        .into_iter()
        .flat_map(|section| section.lv)
        .map(|row| {
            Ok(Lv {
                size: bytes("lvs", "lv_size", &row.lv_size)?,
                name: row.lv_name,
                vg: row.vg_name,
                tags: row.lv_tags,
                attr: row.lv_attr,
                pool: row.pool_lv,
                origin: row.origin,
                time: row.lv_time,
                data_percent: row.data_percent,
            })
        })
        .collect()
}

/// The rows of a `vgs` report.
pub fn parse_vgs(stdout: &[u8]) -> Result<Vec<Vg>, Error> {
    let sections: Vec<VgSection> = parse_report(stdout, "vgs")?;
    sections
        .into_iter()
        .flat_map(|section| section.vg)
        .map(|row| {
            let extent_size = bytes("vgs", "vg_extent_size", &row.vg_extent_size)?;
            if extent_size == 0 {
                return Err(Error::Internal(format!("lvm vgs reported an extent size of 0 for {:?}", row.vg_name)));
            }
            Ok(Vg { extent_size, free: bytes("vgs", "vg_free", &row.vg_free)?, name: row.vg_name })
        })
        .collect()
}

#[derive(Deserialize)]
struct Report<S> {
    report: Vec<S>,
}

#[derive(Deserialize)]
struct LvSection {
    lv: Vec<LvRow>,
}

#[derive(Deserialize)]
struct LvRow {
    lv_name: String,
    vg_name: String,
    lv_size: String,
    lv_tags: String,
    lv_attr: String,
    pool_lv: String,
    origin: String,
    lv_time: String,
    data_percent: String,
}

#[derive(Deserialize)]
struct VgSection {
    vg: Vec<VgRow>,
}

#[derive(Deserialize)]
struct VgRow {
    vg_name: String,
    vg_extent_size: String,
    vg_free: String,
}

fn parse_report<S: DeserializeOwned>(stdout: &[u8], command: &str) -> Result<Vec<S>, Error> {
    serde_json::from_slice::<Report<S>>(stdout)
        .map(|report| report.report)
        .map_err(|err| Error::Internal(format!("lvm {command} printed no report this backend can read: {err}")))
}

fn bytes(command: &str, column: &str, value: &str) -> Result<u64, Error> {
    value
        .parse()
        .map_err(|_| Error::Internal(format!("lvm {command} reported {column} {value:?}, not a whole number of bytes")))
}

/// Reports as lvm 2.03.16 prints them, for the tests of this crate.
#[cfg(test)]
pub mod fixtures {
    /// `lvs … vgcap`, captured (an LV with a foreign tag and a tag that looks like ours).
    pub const LVS_CAPTURED: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"csi-a", "vg_name":"vgcap", "lv_size":"209715200", "lv_tags":"a=b/c+d_e.f-g!h:i&j#k,wasmcsi.name=6162", "lv_attr":"-wi-XX----", "pool_lv":"", "origin":"", "lv_time":"2026-11-21 11:22:03 +0000", "data_percent":"", "segtype":"linear", "lv_active":"unknown"}
              ]
          }
      ]
  }
"#;

    /// `lvs … vgcap` with no LV (also printed for `lvs vgcap/nonexist`), captured.
    pub const LVS_EMPTY: &str = r#"  {
      "report": [
          {
              "lv": [
              ]
          }
      ]
  }
"#;

    /// `vgs … vgcap`, captured.
    pub const VGS_CAPTURED: &str = r#"  {
      "report": [
          {
              "vg": [
                  {"vg_name":"vgcap", "vg_size":"1069547520", "vg_free":"1069547520", "vg_extent_size":"4194304", "vg_extent_count":"255", "vg_free_count":"255"}
              ]
          }
      ]
  }
"#;
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn captured_lvs_report() {
        let lvs = parse_lvs(LVS_CAPTURED.as_bytes()).unwrap();
        assert_eq!(
            lvs,
            [Lv {
                name: "csi-a".into(),
                vg: "vgcap".into(),
                size: 209_715_200,
                tags: "a=b/c+d_e.f-g!h:i&j#k,wasmcsi.name=6162".into(),
                attr: "-wi-XX----".into(),
                pool: String::new(),
                origin: String::new(),
                time: "2026-11-21 11:22:03 +0000".into(),
                data_percent: String::new(),
            }]
        );
        assert!(!lvs[0].is_thin() && !lvs[0].is_thin_pool() && !lvs[0].is_cow_snapshot());
        assert_eq!(parse_lvs(LVS_EMPTY.as_bytes()).unwrap(), []);
    }

    #[test]
    fn captured_vgs_report() {
        assert_eq!(
            parse_vgs(VGS_CAPTURED.as_bytes()).unwrap(),
            [Vg { name: "vgcap".into(), extent_size: 4 << 20, free: 1_069_547_520 }]
        );
        let empty = LVS_EMPTY.replace("\"lv\"", "\"vg\"");
        assert_eq!(parse_vgs(empty.as_bytes()).unwrap(), []);
    }

    #[test]
    fn volume_types_come_from_the_first_attr_character() {
        let lv = |attr: &str| Lv { attr: attr.into(), ..parse_lvs(LVS_CAPTURED.as_bytes()).unwrap().remove(0) };
        assert!(lv("twi-a-tz--").is_thin_pool());
        assert!(lv("Vwi-a-tz--").is_thin());
        assert!(lv("Vwi---tz-k").is_thin());
        assert!(lv("swi-a-s---").is_cow_snapshot() && !lv("swi-a-s---").is_invalid_snapshot());
        assert!(lv("Swi-I-s---").is_cow_snapshot() && lv("Swi-I-s---").is_invalid_snapshot());
        for attr in ["owi-a-s---", "-wi-a-----", ""] {
            let lv = lv(attr);
            assert!(!lv.is_thin() && !lv.is_thin_pool() && !lv.is_cow_snapshot(), "{attr:?}");
        }
    }

    #[test]
    fn anything_but_a_report_is_internal() {
        let missing_column = LVS_CAPTURED.replace("\"lv_tags\":", "\"tags\":");
        let bad_size = LVS_CAPTURED.replace("\"209715200\"", "\"200m\"");
        let number = LVS_CAPTURED.replace("\"209715200\"", "209715200");
        for garbage in ["", "not json", "{}", "{\"report\": {}}", &missing_column, &bad_size, &number] {
            assert!(matches!(parse_lvs(garbage.as_bytes()), Err(Error::Internal(_))), "{garbage:?}");
        }
        let zero_extent = VGS_CAPTURED.replace("\"4194304\"", "\"0\"");
        assert!(matches!(parse_vgs(zero_extent.as_bytes()), Err(Error::Internal(_))));
        assert!(matches!(parse_vgs(LVS_CAPTURED.as_bytes()), Err(Error::Internal(_))));
    }
}
