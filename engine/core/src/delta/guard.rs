//! The guard of a specialised plan: whether a source it assumed unchanged
//! had changes to consume after all (the refresh then recomputes FULL).

use super::Gen;

impl Gen<'_> {
    /// `, (EXISTS (...) OR ...)::text`: whether a source assumed unchanged
    /// had changes to consume after all, or nothing for a general plan.
    pub(super) fn guard_column(&mut self) -> String {
        if self.changed.is_none() {
            return String::new();
        }
        let checks: Vec<String> = self
            .guarded
            .clone()
            .into_iter()
            .map(|s| {
                let consumed = self.consumed(s);
                format!(
                    "EXISTS (SELECT 1 FROM {} b WHERE {consumed})",
                    self.changes_of(s)
                )
            })
            .collect();
        if checks.is_empty() {
            ", 'false'".into()
        } else {
            format!(", ({})::text", checks.join(" OR "))
        }
    }
}
