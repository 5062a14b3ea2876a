//! The deployed functions by name, replaced atomically; what an admin deployed or deleted is
//! never undone by the boot-time functions still being compiled.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::functions::Deployed;

/// The deployed functions by name. Replacing one swaps an `Arc`: requests in flight finish on
/// the version they started with.
#[derive(Default)]
pub struct Registry {
    functions: RwLock<BTreeMap<String, Arc<Deployed>>>,
    /// Names an admin deployed or deleted (or that were restored from the function store):
    /// boot-time functions of the same name do not replace them.
    admin_owned: Mutex<HashSet<String>>,
}

impl Registry {
    fn admin_owned(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.admin_owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Deploys `function` on an admin's behalf (also a function restored from the store);
    /// returns whether it replaced one.
    pub fn insert_admin(&self, function: Deployed) -> bool {
        let mut owned = self.admin_owned();
        owned.insert(function.name.clone());
        self.insert(function)
    }

    /// Deletes `name` on an admin's behalf; returns whether it existed.
    pub fn remove_admin(&self, name: &str) -> bool {
        let mut owned = self.admin_owned();
        owned.insert(name.to_string());
        self.remove(name)
    }

    /// Deploys a boot-time function unless an admin owns its name; returns whether it was
    /// deployed.
    pub fn insert_boot(&self, function: Deployed) -> bool {
        let owned = self.admin_owned();
        if owned.contains(&function.name) {
            return false;
        }
        self.insert(function);
        true
    }

    /// Whether an admin owns `name` (a boot-time function of that name is not deployed).
    pub fn is_admin_owned(&self, name: &str) -> bool {
        self.admin_owned().contains(name)
    }

    /// How many functions are deployed.
    pub fn len(&self) -> usize {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether no function is deployed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The function named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Deployed>> {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Deploys `function`, replacing a previous version; returns whether one was replaced.
    fn insert(&self, function: Deployed) -> bool {
        let name = function.name.clone();
        self.functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, Arc::new(function))
            .is_some()
    }

    /// Removes `name`; returns whether it existed.
    fn remove(&self, name: &str) -> bool {
        self.functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some()
    }

    /// All functions, by name.
    pub fn list(&self) -> Vec<Arc<Deployed>> {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::functions::Compiler;
    use crate::limits::FunctionLimits;

    fn compiler() -> Compiler {
        Compiler::new(Arc::new(keyvalue::MemoryStore::new()))
    }

    #[test]
    fn registry_replaces_atomically() {
        let c = compiler();
        let reg = Registry::default();
        let v1 = c
            .compile(
                "f",
                br#"(module (func (export "_start") (result i32) i32.const 1))"#,
                FunctionLimits::default(),
            )
            .unwrap();
        let v2 = c
            .compile(
                "f",
                br#"(module (func (export "_start") (result i32) i32.const 2))"#,
                FunctionLimits::default(),
            )
            .unwrap();
        assert!(!reg.insert_admin(v1));
        let held = reg.get("f").unwrap();
        assert!(reg.insert_admin(v2));
        assert_ne!(
            held.sha256,
            reg.get("f").unwrap().sha256,
            "old version still usable by its holder"
        );
        assert!(reg.remove_admin("f"));
        assert!(reg.get("f").is_none());
        assert!(!reg.remove_admin("f"));
    }

    #[test]
    fn boot_functions_do_not_replace_what_an_admin_deployed_or_deleted() {
        let c = compiler();
        let reg = Registry::default();
        let wat =
            |n: u32| format!(r#"(module (func (export "_start") (result i32) i32.const {n}))"#);
        let compile = |name: &str, n| {
            c.compile(name, wat(n).as_bytes(), FunctionLimits::default())
                .unwrap()
        };
        assert!(reg.insert_boot(compile("fresh", 1)));
        reg.insert_admin(compile("deployed", 2));
        let admin_sha = reg.get("deployed").unwrap().sha256.clone();
        assert!(!reg.insert_boot(compile("deployed", 3)));
        assert_eq!(reg.get("deployed").unwrap().sha256, admin_sha);
        assert!(!reg.remove_admin("deleted"));
        assert!(!reg.insert_boot(compile("deleted", 4)));
        assert!(reg.get("deleted").is_none());
        assert_eq!(reg.len(), 2);
    }
}
