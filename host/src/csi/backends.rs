//! The loaded backend instances and how a request reaches one: by the StorageClass
//! `backend` parameter at creation (the default instance when there is only one or one is
//! marked default), and by the instance prefix of an id afterwards.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::Status;

use super::ids;
use crate::runtime::{Backend, Features};

/// Parameters as a backend sees them: sorted `(key, value)` pairs.
type Params = Vec<(String, String)>;

/// StorageClass parameter that names the backend instance.
pub const BACKEND_PARAMETER: &str = "backend";
/// Parameters the CO adds for itself; backends never see them.
const CO_PREFIX: &str = "csi.storage.k8s.io/";

pub struct Backends {
    list: Vec<Arc<Backend>>,
    default: Option<usize>,
}

impl Backends {
    /// `default` names the instance marked default in the config, if any.
    pub fn new(list: Vec<Backend>, default: Option<&str>) -> Backends {
        let default = match list.len() {
            1 => Some(0),
            _ => default.and_then(|d| list.iter().position(|b| b.name() == d)),
        };
        Backends { list: list.into_iter().map(Arc::new).collect(), default }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.list.iter()
    }

    /// Whether any loaded backend declares every feature in `features`.
    pub fn any(&self, features: Features) -> bool {
        self.list.iter().any(|b| b.info.features.contains(features))
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Backend>> {
        self.list.iter().find(|b| b.name() == name)
    }

    /// Picks the instance `parameters` select and returns the parameters it should see:
    /// without the selector and the CO's `csi.storage.k8s.io/*` keys, sorted by key.
    pub fn select(&self, parameters: &HashMap<String, String>) -> Result<(&Arc<Backend>, Params), Status> {
        let backend = match parameters.get(BACKEND_PARAMETER) {
            Some(name) => self.by_name(name).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "parameter {BACKEND_PARAMETER}={name:?} names no backend; loaded: {}",
                    self.names()
                ))
            })?,
            None => self.default.map(|i| &self.list[i]).ok_or_else(|| {
                Status::invalid_argument(format!("parameter {BACKEND_PARAMETER} is required; loaded: {}", self.names()))
            })?,
        };
        let mut passed: Vec<(String, String)> = parameters
            .iter()
            .filter(|(k, _)| k.as_str() != BACKEND_PARAMETER && !k.starts_with(CO_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        passed.sort();
        Ok((backend, passed))
    }

    /// The instance and backend-local id a qualified id names; `None` when malformed or
    /// when no loaded instance has that name (so the object cannot exist here).
    pub fn route<'a>(&self, id: &'a str) -> Option<(&Arc<Backend>, &'a str)> {
        let (instance, local) = ids::split(id)?;
        Some((self.by_name(instance)?, local))
    }

    fn names(&self) -> String {
        self.list.iter().map(|b| b.name()).collect::<Vec<_>>().join(", ")
    }
}
