//! The differential statement specialised, at refresh time, to the sources
//! that have changes to consume.
//!
//! The stored statement (generated at creation) must be right whichever
//! sources changed, so it reads every other occurrence of a join as an
//! *old state*: the table plus its negated delta. PostgreSQL cannot drive
//! an index lookup into such a union, so a small delta joined with a large
//! table scans the table. Knowing which sources changed, the core writes a
//! statement that reads unchanged sources as plain tables and combines the
//! changed ones by inclusion-exclusion over new states
//! (`pg_trickle_core::delta::plan_refresh_for_changes`).
//!
//! Which sources changed is checked just before the statement runs, so a
//! change can commit in between. The statement therefore also reports
//! whether a source it assumed unchanged had changes to consume; the
//! refresh then recomputes FULL (see `refresh.rs`). Nothing is lost either
//! way.
//!
//! The stored statement came from one plan, whose fingerprint
//! (`pg_trickle_core::delta::plan_fingerprint`: a hash of every input of
//! the generated SQL) is stored beside it. A refresh analyses the query
//! again and specialises only when the fresh analysis has the same
//! fingerprint: the same sources in the same parameter order, the same
//! model, columns and storage name. Otherwise (the catalog moved under the
//! query, or the stream table predates fingerprints) the stored statement
//! runs, as it always may.
//!
//! Specialised statements are cached per backend, keyed by the fingerprint
//! (a re-plan changes it) and the set of changed sources, and are
//! validated once before first use; when validation fails the stored
//! statement is used.
//!
//! The one for *every* captured source having changes (each refresh of a
//! stream table over one source) is made with the plan instead
//! ([`all_changed`]) and stored beside the general statement, so that a new
//! connection runs it without analysing the query again. It came from the
//! same analysis as the general statement, so it is exactly as current.

use std::cell::RefCell;
use std::collections::HashMap;

use pg_trickle_core::analyze::Analysis;
use pg_trickle_core::catalog::OutputColumn;
use pg_trickle_core::delta::{plan_fingerprint, plan_refresh_for_changes, RefreshPlan, SqlPhase};

use crate::security::Owner;
use crate::spi::in_subtransaction;

/// Most cached statements per backend; the cache is emptied when full.
const MAX_CACHED: usize = 256;

/// A specialised differential statement and the phases it consists of.
#[derive(Clone)]
pub struct Specialised {
    /// The statement a refresh runs; its fifth result column is the guard.
    pub sql: String,
    /// Every phase, as `stream_table_sql` lists them.
    pub phases: Vec<SqlPhase>,
}

type Key = (i64, String, Vec<u32>);

thread_local! {
    static CACHE: RefCell<HashMap<Key, Option<Specialised>>> = RefCell::new(HashMap::new());
}

/// What the specialisation needs to know about a stream table.
pub struct Target<'a> {
    /// Catalog id.
    pub id: i64,
    /// The fingerprint of the plan the stored statement came from (None:
    /// unknown, never specialise).
    pub fingerprint: Option<&'a str>,
    /// The defining query.
    pub query: &'a str,
    /// Its owner and the search_path it was created under.
    pub owner: &'a Owner,
    /// The storage relation's oid.
    pub relid: u32,
    /// The storage relation's qualified name.
    pub storage: &'a str,
}

/// The statement specialised to the sources in `changed` (relation oids),
/// or `None` to use the stored one.
pub fn specialised(t: &Target, changed: &[u32]) -> Option<Specialised> {
    let fingerprint = t.fingerprint?;
    let mut changed = changed.to_vec();
    changed.sort_unstable();
    let key = (t.id, fingerprint.to_string(), changed.clone());
    if let Some(hit) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
        return hit;
    }
    let made = build(t, fingerprint, &changed);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= MAX_CACHED {
            c.clear();
        }
        c.insert(key, made.clone());
    });
    made
}

fn build(t: &Target, fingerprint: &str, changed: &[u32]) -> Option<Specialised> {
    let analysis = crate::planning::analyze_query(t.query, t.owner, Some(t.relid)).ok()?;
    let columns = crate::planning::storage_columns(t.relid);
    let same_plan =
        |storage: &str| plan_fingerprint(&analysis, t.query, storage, &columns) == fingerprint;
    // Creation names the storage schema-qualified; a re-plan names it as
    // `regclass` prints it under the stream table's search_path. The
    // fingerprint covers the name, so it also says which one was used.
    let printed;
    let storage = if same_plan(t.storage) {
        t.storage
    } else {
        printed = t
            .owner
            .resolve_names(|| crate::spi::relation_name(t.relid))
            .unwrap_or_default();
        if !same_plan(&printed) {
            return None;
        }
        printed.as_str()
    };
    let plan = plan_refresh_for_changes(
        &analysis,
        t.query,
        storage,
        &columns,
        &occurrences(&analysis, changed),
    );
    let sql = validated(&plan, t.owner, t.storage)?;
    Some(Specialised {
        sql,
        phases: plan.phases,
    })
}

/// The indexes of the analysis's sources that are one of `changed`
/// (every occurrence of a relation read twice).
fn occurrences(analysis: &Analysis, changed: &[u32]) -> Vec<usize> {
    analysis
        .sources
        .iter()
        .enumerate()
        .filter(|(_, s)| changed.contains(&s.oid))
        .map(|(i, _)| i)
        .collect()
}

/// The plan's differential statement, if it prepares as the owner; a
/// warning names the stream table when it does not.
fn validated(plan: &RefreshPlan, owner: &Owner, storage: &str) -> Option<String> {
    let sql = plan.diff_sql.clone()?;
    let (check, nargs, owner) = (sql.clone(), plan.diff_nargs(), owner.clone());
    let valid = in_subtransaction(move || owner.run(|| crate::spi::prepare_only(&check, nargs)));
    if let Err(f) = valid {
        // A cancel or lock failure is not a verdict on the statement.
        f.reraise_if_transient();
        pgrx::warning!(
            "pg_trickle: the differential statement of {} specialised to its changed sources did not validate ({}: {}); using the general one",
            storage,
            f.sqlstate,
            f.message
        );
        return None;
    }
    Some(sql)
}

/// The differential statement specialised to every source `plan` reads
/// changes of, made from the plan's own analysis (see the module comment),
/// if it validates.
pub fn all_changed(
    analysis: &Analysis,
    plan: &RefreshPlan,
    (query, storage, columns): (&str, &str, &[OutputColumn]),
    owner: &Owner,
) -> Option<String> {
    let captured: Vec<u32> = plan
        .diff_sources
        .iter()
        .map(|i| analysis.sources[*i].oid)
        .collect();
    if captured.is_empty() {
        return None;
    }
    let all = occurrences(analysis, &captured);
    validated(
        &plan_refresh_for_changes(analysis, query, storage, columns, &all),
        owner,
        storage,
    )
}
