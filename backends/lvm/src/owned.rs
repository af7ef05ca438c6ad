//! Our volumes and snapshots among the LVs of the volume group: an LV counts only when its
//! tags claim it (`tags.rs`), and a request's id that is not well-formed names nothing.

use std::collections::BTreeMap;

use kit::types::Error;

use crate::context::Ctx;
use crate::ids::{Id, Kind};
use crate::lvm;
use crate::report::Lv;
use crate::tags::{self, Claim};

/// One of our LVs and what its tags say.
#[derive(Clone, Debug)]
pub struct Owned {
    pub claim: Claim,
    pub lv: Lv,
}

impl Owned {
    fn of(kind: Kind, lv: &Lv) -> Option<Owned> {
        tags::claim(kind, lv).map(|claim| Owned { claim, lv: lv.clone() })
    }
}

/// Our object with id `id` among `lvs`.
pub fn in_list(lvs: &[Lv], id: &Id) -> Option<Owned> {
    lvs.iter().find(|lv| lv.name == id.as_str()).and_then(|lv| Owned::of(id.kind(), lv))
}

/// Our object of `kind` with id `id`, if the volume group has it.
pub fn find(ctx: &Ctx, kind: Kind, id: &str) -> Result<Option<Owned>, Error> {
    let Some(id) = Id::parse(kind, id) else { return Ok(None) };
    Ok(lvm::lv(ctx, id.as_str())?.and_then(|lv| Owned::of(kind, &lv)))
}

/// Like [`find`], `not-found` when there is no such object.
pub fn require(ctx: &Ctx, kind: Kind, id: &str) -> Result<Owned, Error> {
    find(ctx, kind, id)?.ok_or_else(|| Error::NotFound(format!("{} {id:?} does not exist", kind.noun())))
}

/// Our objects of `kind` among `lvs`, by id.
pub fn sorted(kind: Kind, lvs: &[Lv]) -> BTreeMap<Id, Owned> {
    lvs.iter().filter_map(|lv| Owned::of(kind, lv)).map(|owned| (owned.claim.id.clone(), owned)).collect()
}
