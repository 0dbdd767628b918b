//! Every `pg_trickle.*` setting, declared once.
//!
//! The extension registers its GUCs from [`SETTINGS`]; documentation is
//! generated from the same table.

/// The type and bounds of a setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SettingKind {
    /// A boolean with its default.
    Bool {
        /// Default value.
        default: bool,
    },
    /// An integer with its default and bounds.
    Int {
        /// Default value.
        default: i32,
        /// Smallest allowed value.
        min: i32,
        /// Largest allowed value.
        max: i32,
    },
    /// A string with its default.
    Text {
        /// Default value.
        default: &'static str,
    },
}

/// When a change to a setting takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingContext {
    /// Needs a server restart (postmaster).
    Restart,
    /// Takes effect on reload (sighup).
    Reload,
    /// Any session may change it (userset).
    Session,
}

/// One setting's metadata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    /// Name without the `pg_trickle.` prefix.
    pub name: &'static str,
    /// Type, default, bounds.
    pub kind: SettingKind,
    /// Unit shown by `SHOW` (PostgreSQL unit string) or empty.
    pub unit: &'static str,
    /// When a change takes effect.
    pub context: SettingContext,
    /// Documentation category.
    pub category: &'static str,
    /// One-paragraph description: exactly what the setting does.
    pub description: &'static str,
    /// Experimental settings are shown as such everywhere.
    pub experimental: bool,
}

/// All settings.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "enabled",
        kind: SettingKind::Bool { default: true },
        unit: "",
        context: SettingContext::Reload,
        category: "Scheduler",
        description: "When off, the scheduler background worker refreshes nothing; manual refreshes still work.",
        experimental: false,
    },
    Setting {
        name: "scheduler_interval_ms",
        kind: SettingKind::Int { default: 1000, min: 50, max: 600_000 },
        unit: "ms",
        context: SettingContext::Reload,
        category: "Scheduler",
        description: "How often the scheduler wakes to look for stream tables whose schedule is due. The scheduler only polls: it does not wake on commits.",
        experimental: false,
    },
    Setting {
        name: "database",
        kind: SettingKind::Text { default: "postgres" },
        unit: "",
        context: SettingContext::Restart,
        category: "Scheduler",
        description: "The database the scheduler background worker connects to. Stream tables in other databases refresh only manually.",
        experimental: false,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unique_and_defaults_in_bounds() {
        let mut names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SETTINGS.len());
        for s in SETTINGS {
            if let SettingKind::Int { default, min, max } = s.kind {
                assert!(min <= default && default <= max, "{}", s.name);
            }
            assert!(!s.description.is_empty());
        }
    }
}
