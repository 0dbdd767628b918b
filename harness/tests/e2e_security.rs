//! The privilege-attack suite: ordinary roles against real clusters.
//!
//! Each test plays an attacker (or a careless owner) through the public SQL
//! API and ordinary SQL, then asserts that the attacker gained nothing (no
//! role attribute, no code run under another identity, no data it may not
//! read) and that capture and refresh stayed exact. Attacker code is a
//! "hijack kit": operators, functions, aggregates and type names (domains,
//! which `::type` casts resolve by name) that shadow what the extension
//! calls, each of which records `current_user` and tries to make its owner
//! a superuser. See docs/SECURITY.md for the trust model being tested.

use std::time::{Duration, Instant};

use harness::cluster::Cluster;
use harness::testkit::{database, dedicated_cluster, first_column, shared_cluster};
use oracles::compare::differences;
use postgres::Client;

/// The hijack kit, created in `schema` by `attacker`: everything records
/// `(current_user, hook)` in `schema.seen` and tries `ALTER ROLE attacker
/// SUPERUSER`, then behaves like the built-in it shadows.
fn hijack_kit(schema: &str, attacker: &str) -> String {
    let mut sql = String::new();
    if schema != "public" {
        sql.push_str(&format!(
            "CREATE SCHEMA {schema}; GRANT USAGE ON SCHEMA {schema} TO PUBLIC;\n"
        ));
    }
    sql.push_str(&format!(
        "CREATE TABLE {schema}.seen (usr text, hook text);
         GRANT INSERT ON {schema}.seen TO PUBLIC;
         CREATE FUNCTION {schema}.trap(hook text) RETURNS boolean LANGUAGE plpgsql
         SET search_path = pg_catalog, pg_temp AS $f$
         BEGIN
           INSERT INTO {schema}.seen VALUES (current_user, hook);
           BEGIN
             EXECUTE 'ALTER ROLE {attacker} SUPERUSER';
           EXCEPTION WHEN OTHERS THEN NULL;
           END;
           RETURN true;
         END $f$;
         GRANT EXECUTE ON FUNCTION {schema}.trap(text) TO PUBLIC;\n"
    ));
    // Operators, on the types the extension compares.
    let types = [
        ("text", "text"),
        ("oid", "oid"),
        ("\"char\"", "char"),
        ("xid8", "xid8"),
        ("bigint", "int8"),
        ("integer", "int4"),
        ("name", "name"),
        ("regclass", "regclass"),
        ("boolean", "bool"),
        ("timestamptz", "timestamptz"),
    ];
    for (ty, tag) in types {
        for (op, base, fname) in [("=", "=", "eq"), ("<>", "<>", "ne")] {
            sql.push_str(&format!(
                "CREATE FUNCTION {schema}.h_{fname}_{tag}(a {ty}, b {ty}) RETURNS boolean LANGUAGE sql
                 SET search_path = pg_catalog, pg_temp
                 AS $f$ SELECT {schema}.trap('{op}({tag})') AND a OPERATOR(pg_catalog.{base}) b $f$;
                 CREATE OPERATOR {schema}.{op} (LEFTARG = {ty}, RIGHTARG = {ty}, FUNCTION = {schema}.h_{fname}_{tag});\n"
            ));
        }
    }
    // Operators the scheduler's due check needs an implicit cast for.
    sql.push_str(&format!(
        "CREATE FUNCTION {schema}.h_mul(a bigint, b interval) RETURNS interval LANGUAGE sql
         SET search_path = pg_catalog, pg_temp
         AS $f$ SELECT CASE WHEN {schema}.trap('*(bigint,interval)') THEN a::float8 * b END $f$;
         CREATE OPERATOR {schema}.* (LEFTARG = bigint, RIGHTARG = interval, FUNCTION = {schema}.h_mul);
         CREATE FUNCTION {schema}.h_le(a timestamptz, b timestamptz) RETURNS boolean LANGUAGE sql
         SET search_path = pg_catalog, pg_temp
         AS $f$ SELECT {schema}.trap('<=(timestamptz)') AND a OPERATOR(pg_catalog.<=) b $f$;
         CREATE OPERATOR {schema}.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = {schema}.h_le);\n"
    ));
    // Functions the extension calls, with exact signatures.
    let functions = [
        (
            "format",
            "f text, a regclass",
            "text",
            "pg_catalog.format(f, a)",
        ),
        (
            "format",
            "f text, a text",
            "text",
            "pg_catalog.format(f, a)",
        ),
        ("format", "f text, a oid", "text", "pg_catalog.format(f, a)"),
        (
            "format",
            "f text, a timestamptz, b text",
            "text",
            "pg_catalog.format(f, a, b)",
        ),
        (
            "to_regclass",
            "a text",
            "regclass",
            "pg_catalog.to_regclass(a)",
        ),
        (
            "current_setting",
            "a text",
            "text",
            "pg_catalog.current_setting(a)",
        ),
        (
            "current_setting",
            "a text, b boolean",
            "text",
            "pg_catalog.current_setting(a, b)",
        ),
        (
            "set_config",
            "a text, b text, c boolean",
            "text",
            "pg_catalog.set_config(a, b, c)",
        ),
        ("now", "", "timestamptz", "pg_catalog.now()"),
        (
            "clock_timestamp",
            "",
            "timestamptz",
            "pg_catalog.clock_timestamp()",
        ),
        (
            "pg_current_xact_id",
            "",
            "xid8",
            "pg_catalog.pg_current_xact_id()",
        ),
        (
            "pg_current_snapshot",
            "",
            "pg_snapshot",
            "pg_catalog.pg_current_snapshot()",
        ),
        (
            "pg_visible_in_snapshot",
            "a xid8, b pg_snapshot",
            "boolean",
            "pg_catalog.pg_visible_in_snapshot(a, b)",
        ),
        (
            "array_to_string",
            "a text[], b text",
            "text",
            "pg_catalog.array_to_string(a, b)",
        ),
        (
            "format_type",
            "a oid, b integer",
            "text",
            "pg_catalog.format_type(a, b)",
        ),
        ("quote_ident", "a text", "text", "pg_catalog.quote_ident(a)"),
    ];
    for (i, (name, args, ret, body)) in functions.iter().enumerate() {
        sql.push_str(&format!(
            "CREATE FUNCTION {schema}.{name}({args}) RETURNS {ret} LANGUAGE sql
             SET search_path = pg_catalog, pg_temp
             AS $f$ SELECT CASE WHEN {schema}.trap('{name}#{i}') THEN {body} END $f$;\n"
        ));
    }
    sql.push_str(&format!(
        "CREATE FUNCTION {schema}.hash_record_extended(a record, b bigint) RETURNS bigint LANGUAGE plpgsql
         SET search_path = pg_catalog, pg_temp
         AS $f$ BEGIN PERFORM {schema}.trap('hash_record_extended'); RETURN pg_catalog.hash_record_extended(a, b); END $f$;
         CREATE FUNCTION {schema}.jsonb_array_elements_text(a jsonb) RETURNS SETOF text LANGUAGE sql
         SET search_path = pg_catalog, pg_temp
         AS $f$ SELECT v FROM pg_catalog.jsonb_array_elements_text(a) v WHERE {schema}.trap('jsonb_array_elements_text') $f$;
         CREATE FUNCTION {schema}.agg_step(s bigint) RETURNS bigint LANGUAGE sql
         SET search_path = pg_catalog, pg_temp
         AS $f$ SELECT CASE WHEN {schema}.trap('count(*)') THEN s + 1 END $f$;
         CREATE AGGREGATE {schema}.count(*) (SFUNC = {schema}.agg_step, STYPE = bigint, INITCOND = '0');
         CREATE FUNCTION {schema}.max_step(s bigint, v bigint) RETURNS bigint LANGUAGE sql
         SET search_path = pg_catalog, pg_temp
         AS $f$ SELECT CASE WHEN {schema}.trap('max(bigint)') THEN CASE WHEN s IS NULL OR v > s THEN v ELSE s END END $f$;
         CREATE AGGREGATE {schema}.max(bigint) (SFUNC = {schema}.max_step, STYPE = bigint);\n"
    ));
    // Type names: a cast `x::text` finds the type by name, so a domain
    // called `text` earlier on the path runs its CHECK on every cast.
    for ty in [
        "text",
        "oid",
        "regclass",
        "xid8",
        "pg_snapshot",
        "jsonb",
        "name",
    ] {
        sql.push_str(&format!(
            "CREATE DOMAIN {schema}.{ty} AS pg_catalog.{ty} CHECK ({schema}.trap('cast to {ty}'));\n"
        ));
    }
    sql
}

/// Fail, naming what it saw, when `attacker` became a superuser or any
/// hijack in `schema` ran as a role other than the attacker.
fn assert_no_escalation(su: &mut Client, schema: &str, attacker: &str, context: &str) {
    let rolsuper: bool = su
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
            &[&attacker],
        )
        .unwrap()
        .get(0);
    let elevated: Vec<(String, String)> = su
        .query(
            &format!(
                "SELECT usr, string_agg(DISTINCT hook, ', ' ORDER BY hook) FROM {schema}.seen \
                 WHERE usr <> $1 GROUP BY usr ORDER BY usr"
            ),
            &[&attacker],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        !rolsuper && elevated.is_empty(),
        "{context}: {attacker} escalated (superuser now: {rolsuper}); its hijacks ran as other roles: {elevated:?}"
    );
}

/// The SQLSTATE of a failed statement, or "ok".
fn sqlstate(r: Result<impl Sized, postgres::Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e
            .as_db_error()
            .map(|d| d.code().code().to_string())
            .unwrap_or_else(|| format!("client error: {e}")),
    }
}

/// The SQLSTATE and message of a failed statement.
fn failure(r: Result<impl Sized, postgres::Error>) -> (String, String) {
    match r {
        Ok(_) => ("ok".into(), String::new()),
        Err(e) => match e.as_db_error() {
            Some(d) => (d.code().code().to_string(), d.message().to_string()),
            None => (format!("client error: {e}"), String::new()),
        },
    }
}

fn connect_as(cluster: &Cluster, db: &str, role: &str) -> Client {
    cluster
        .connect_as(db, role)
        .unwrap_or_else(|e| panic!("connecting to {db} as {role}: {e}"))
}

fn exec(db: &mut Client, sql: &str) {
    db.batch_execute(sql)
        .unwrap_or_else(|e| panic!("{}\n{sql}", harness::cluster::describe(&e)));
}

/// Roles are cluster-wide; tests name theirs with their own prefix.
fn create_roles(su: &mut Client, roles: &[&str]) {
    for r in roles {
        exec(su, &format!("CREATE ROLE {r} LOGIN"));
    }
}

fn refresh(db: &mut Client, st: &str) -> Result<(), postgres::Error> {
    db.execute("SELECT pgtrickle.refresh_stream_table($1)", &[&st])
        .map(|_| ())
}

fn assert_exact(db: &mut Client, st: &str, query: &str) {
    if let Some(d) = differences(db, st, query).unwrap() {
        panic!("{st} differs from its query:\n{d}");
    }
}

/// A writer that may only write a captured source (plus create schemas)
/// hijacks operators, functions and type names on its own search_path;
/// none of the triggers the extension installs on the source may run the
/// writer's code with anyone else's rights, and capture must stay exact.
#[test]
fn a_writer_cannot_escalate_through_capture_or_source_triggers() {
    let mut su = database("sec_capture");
    create_roles(&mut su, &["cap_writer"]);
    exec(
        &mut su,
        "GRANT CREATE ON DATABASE t_sec_capture TO cap_writer;
         CREATE TABLE src (k int, v text);
         INSERT INTO src VALUES (1, 'a'), (2, 'b'), (2, 'b');
         GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON src TO cap_writer;
         SELECT pgtrickle.create_stream_table('flat', 'SELECT k, v FROM src', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('agg', 'SELECT k, count(*) AS n FROM src GROUP BY k', NULL, 'DIFFERENTIAL');",
    );
    let cluster = shared_cluster();
    let mut w = connect_as(cluster, "t_sec_capture", "cap_writer");
    exec(&mut w, &hijack_kit("evil", "cap_writer"));
    exec(&mut w, "SET search_path = evil, pg_catalog, public");
    for (what, stmt) in [
        ("INSERT", "INSERT INTO public.src VALUES (3, 'c'), (3, 'c')"),
        (
            "UPDATE",
            "UPDATE public.src SET v = 'z' WHERE k OPERATOR(pg_catalog.=) 1",
        ),
        (
            "DELETE",
            "DELETE FROM public.src WHERE k OPERATOR(pg_catalog.=) 3",
        ),
    ] {
        if let Err(e) = w.batch_execute(stmt) {
            panic!(
                "the writer's {what} failed: {}",
                harness::cluster::describe(&e)
            );
        }
        assert_no_escalation(&mut su, "evil", "cap_writer", what);
    }
    for st in ["flat", "agg"] {
        refresh(&mut su, st).unwrap();
    }
    assert_exact(&mut su, "flat", "SELECT k, v FROM src");
    assert_exact(
        &mut su,
        "agg",
        "SELECT k, count(*) AS n FROM src GROUP BY k",
    );
    exec(&mut w, "TRUNCATE public.src");
    exec(&mut w, "INSERT INTO public.src VALUES (9, 'after')");
    assert_no_escalation(&mut su, "evil", "cap_writer", "TRUNCATE");
    for st in ["flat", "agg"] {
        refresh(&mut su, st).unwrap();
    }
    assert_exact(&mut su, "flat", "SELECT k, v FROM src");
    assert_exact(
        &mut su,
        "agg",
        "SELECT k, count(*) AS n FROM src GROUP BY k",
    );
    // The writer still cannot see or forge changes.
    let buffer: String = su
        .query_one(
            "SELECT buffer_name FROM pgtrickle.pgt_change_buffers WHERE source_relid = 'src'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    exec(&mut w, "RESET search_path");
    for stmt in [
        format!("SELECT * FROM {buffer}"),
        format!("INSERT INTO {buffer} (op) VALUES ('I')"),
        format!("DELETE FROM {buffer}"),
    ] {
        assert_eq!(sqlstate(w.batch_execute(&stmt)), "42501", "writer: {stmt}");
    }
}

/// Every capture and trigger function the extension creates is SECURITY
/// DEFINER only where it must be, and then pins its search_path.
#[test]
fn every_security_definer_function_pins_its_search_path() {
    let mut su = database("sec_definer");
    exec(
        &mut su,
        "CREATE TABLE s1 (k int, v text); CREATE TABLE s2 (k int);
         SELECT pgtrickle.create_stream_table('d1', 'SELECT s1.k, v FROM s1 JOIN s2 ON s1.k = s2.k', NULL, 'DIFFERENTIAL');",
    );
    let unpinned: Vec<String> = first_column(&mut su, "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname IN ('pgtrickle', 'pgtrickle_changes') AND p.prosecdef \
             AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false) ORDER BY 1",
            &[]);
    assert!(
        unpinned.is_empty(),
        "SECURITY DEFINER functions without a pinned search_path: {unpinned:?}"
    );
    // Capture runs no SECURITY DEFINER code: both sources' row triggers
    // call the one C function, and no per-source function is left.
    let per_source: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = 'pgtrickle_changes'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(per_source, 0, "functions in pgtrickle_changes");
    let capture: Vec<String> = first_column(
        &mut su,
        "SELECT t.tgrelid::regclass::text || ' ' || t.tgfoid::regprocedure::text FROM pg_trigger t \
         WHERE t.tgname = 'pgt_capture' ORDER BY 1",
        &[],
    );
    assert_eq!(
        capture,
        ["s1 pgtrickle._capture_row()", "s2 pgtrickle._capture_row()"]
    );
    // Nothing the extension installs may be executed by PUBLIC unless it is part of the API.
    let internal: Vec<String> = first_column(&mut su, "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname IN ('pgtrickle', 'pgtrickle_changes') \
             AND (p.proname LIKE '\\_%' OR n.nspname = 'pgtrickle_changes' \
                  OR p.prorettype IN ('trigger'::regtype, 'event_trigger'::regtype)) \
             AND has_function_privilege('public', p.oid, 'EXECUTE') ORDER BY 1",
            &[]);
    assert!(
        internal.is_empty(),
        "internal functions executable by PUBLIC: {internal:?}"
    );
}

/// The capture trigger function cannot be turned against another role's
/// source: an ordinary role may not create a trigger with it, and a
/// trigger naming one source on another table (which only a superuser
/// could create) refuses the write instead of forging changes.
#[test]
fn the_capture_function_cannot_forge_another_sources_changes() {
    let mut su = database("sec_forge");
    create_roles(&mut su, &["forger"]);
    exec(
        &mut su,
        "CREATE TABLE victim (k int, v int);
         INSERT INTO victim VALUES (1, 1);
         SELECT pgtrickle.create_stream_table('vst', 'SELECT k, sum(v) AS s FROM victim GROUP BY k', NULL, 'DIFFERENTIAL');
         CREATE TABLE public.mine (k int, v int);
         ALTER TABLE public.mine OWNER TO forger;",
    );
    let victim: u32 = su
        .query_one("SELECT 'victim'::regclass::oid", &[])
        .unwrap()
        .get(0);
    let cluster = shared_cluster();
    let mut f = connect_as(cluster, "t_sec_forge", "forger");
    let forge = format!(
        "CREATE TRIGGER forge AFTER INSERT ON public.mine FOR EACH ROW EXECUTE FUNCTION pgtrickle._capture_row('{victim}')"
    );
    assert_eq!(sqlstate(f.batch_execute(&forge)), "42501", "{forge}");
    // A superuser's misplaced trigger: the write is refused and names both.
    exec(&mut su, &forge);
    let (state, message) = failure(f.batch_execute("INSERT INTO public.mine VALUES (1, 100)"));
    assert_eq!(state, "42501", "{message}");
    assert!(
        message.contains("victim") && message.contains("mine"),
        "{message}"
    );
    exec(&mut su, "DROP TRIGGER forge ON public.mine");
    exec(&mut f, "INSERT INTO public.mine VALUES (1, 100)");
    refresh(&mut su, "vst").unwrap();
    assert_exact(
        &mut su,
        "vst",
        "SELECT k, sum(v) AS s FROM victim GROUP BY k",
    );
}

/// An ordinary role that owns its stream table calls every API function
/// with a search_path that puts its hijack kit before pg_catalog: nothing
/// the extension runs with its own rights may resolve to the kit.
#[test]
fn the_api_never_runs_the_callers_code_with_other_rights() {
    let mut su = database("sec_api_path");
    create_roles(&mut su, &["api_alice"]);
    exec(
        &mut su,
        "GRANT CREATE ON DATABASE t_sec_api_path TO api_alice;
         CREATE SCHEMA app AUTHORIZATION api_alice;",
    );
    let cluster = shared_cluster();
    let mut a = connect_as(cluster, "t_sec_api_path", "api_alice");
    exec(&mut a, &hijack_kit("evil", "api_alice"));
    exec(
        &mut a,
        "CREATE TABLE app.src (k int, v int);
         INSERT INTO app.src SELECT i % 4, i FROM generate_series(1, 20) i;",
    );
    exec(&mut a, "SET search_path = evil, pg_catalog, app");
    let calls = [
        "SELECT pgtrickle.create_stream_table('app.st', 'SELECT k, sum(v) AS s FROM app.src GROUP BY k', NULL, 'DIFFERENTIAL')",
        "SELECT pgtrickle.create_stream_table('app.flat', 'SELECT k, v FROM app.src WHERE v > 3', '1h', 'AUTO')",
        "INSERT INTO app.src VALUES (1, 100), (7, 7)",
        "SELECT pgtrickle.refresh_stream_table('app.st')",
        "SELECT pgtrickle.alter_stream_table('app.st', schedule => '1h')",
        "SELECT pgtrickle.alter_stream_table('app.flat', refresh_mode => 'FULL')",
        "SELECT pgtrickle.alter_stream_table('app.flat', refresh_mode => 'DIFFERENTIAL')",
        "SELECT pgtrickle.hold_stream_table('app.st', 'maintenance')",
        "SELECT pgtrickle.resume_stream_table('app.st')",
        "SELECT pgtrickle.hold_all_stream_tables('all of mine')",
        "SELECT pgtrickle.resume_all_stream_tables()",
        "SELECT pgtrickle.discard_changes('app.st', 'disk')",
        "SELECT pgtrickle.resume_capture('app.st')",
        "SELECT pgtrickle.refresh_stream_table('app.st')",
        "SELECT * FROM pgtrickle.stream_table_status()",
        "SELECT * FROM pgtrickle.change_buffer_status()",
        "SELECT pgtrickle.explain_stream_table('app.st')",
        "SELECT pgtrickle.explain_stream_table('app.st', 'text')",
        "SELECT pgtrickle.explain_stream_table('app.st', 'dot')",
        "SELECT * FROM pgtrickle.stream_table_sql('app.st')",
        "ALTER TABLE app.src ADD COLUMN extra int",
        "SELECT pgtrickle.refresh_stream_table('app.flat')",
        "SELECT pgtrickle.drop_stream_table('app.flat')",
        "DROP TABLE app.st",
    ];
    for call in calls {
        if let Err(e) = a.batch_execute(call) {
            panic!("{call}: {}", harness::cluster::describe(&e));
        }
        assert_no_escalation(&mut su, "evil", "api_alice", call);
    }
}

/// A shared schema everybody may create in (PostgreSQL's default before
/// 15) holds an attacker's kit. The scheduler and the handlers that run on
/// DDL (as the extension) must never reach it.
#[test]
fn a_shared_schema_kit_never_runs_in_the_scheduler_or_ddl_handlers() {
    let cluster = dedicated_cluster(
        "sec-shared-schema",
        &["pg_trickle.scheduler_interval_ms = 100"],
    );
    let mut su = cluster.connect("postgres").unwrap();
    exec(
        &mut su,
        "CREATE EXTENSION pg_trickle;
         CREATE ROLE pub_mallory LOGIN;
         GRANT CREATE ON SCHEMA public TO PUBLIC;",
    );
    let mut m = connect_as(&cluster, "postgres", "pub_mallory");
    exec(&mut m, &hijack_kit("public", "pub_mallory"));
    exec(
        &mut m,
        "CREATE TABLE public.msrc (k int, v int);
         INSERT INTO public.msrc VALUES (1, 1), (2, 2);
         GRANT SELECT ON public.msrc TO PUBLIC;",
    );
    // A superuser's stream tables over the attacker's table, refreshed by the scheduler.
    exec(
        &mut su,
        "SELECT pgtrickle.create_stream_table('sched_flat', 'SELECT k, v FROM msrc', '1s', 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('sched_full', 'SELECT k, v FROM msrc', '1s', 'FULL');",
    );
    exec(&mut m, "INSERT INTO public.msrc VALUES (3, 3)");
    wait_until(&mut su, "the scheduler refreshed sched_flat", |db| {
        differences(db, "sched_flat", "SELECT k, v FROM msrc")
            .unwrap()
            .is_none()
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_no_escalation(&mut su, "public", "pub_mallory", "scheduler");
    // DDL on the source by its owner runs the extension's event triggers.
    exec(&mut m, "ALTER TABLE public.msrc ADD COLUMN extra int");
    assert_no_escalation(&mut su, "public", "pub_mallory", "ALTER TABLE of a source");
    exec(&mut m, "INSERT INTO public.msrc VALUES (4, 4, 4)");
    wait_until(&mut su, "the scheduler refreshed after the ALTER", |db| {
        differences(db, "sched_flat", "SELECT k, v FROM msrc")
            .unwrap()
            .is_none()
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_no_escalation(&mut su, "public", "pub_mallory", "scheduler after ALTER");
}

fn wait_until(db: &mut Client, what: &str, mut ok: impl FnMut(&mut Client) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok(db) {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Nobody but the extension reads or writes change buffers or the catalog,
/// and the internal functions cannot be called.
#[test]
fn change_buffers_and_catalog_are_closed_to_ordinary_roles() {
    let mut su = database("sec_catalog");
    create_roles(&mut su, &["cat_alice", "cat_mallory"]);
    exec(
        &mut su,
        "CREATE TABLE base (k int, v int); INSERT INTO base VALUES (1, 1);
         GRANT SELECT ON base TO cat_alice;
         GRANT CREATE ON SCHEMA public TO cat_alice;",
    );
    let cluster = shared_cluster();
    let mut a = connect_as(cluster, "t_sec_catalog", "cat_alice");
    exec(
        &mut a,
        "SELECT pgtrickle.create_stream_table('alice_st', 'SELECT k, v FROM base', NULL, 'DIFFERENTIAL')",
    );
    let (st_id, buffer): (i64, String) = su
        .query_one(
            "SELECT st.id, b.buffer_name FROM pgtrickle.pgt_stream_tables st, pgtrickle.pgt_change_buffers b \
             WHERE st.relid = 'alice_st'::regclass AND b.source_relid = 'base'::regclass",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    let mut m = connect_as(cluster, "t_sec_catalog", "cat_mallory");
    let attempts = vec![
        format!("SELECT * FROM {buffer}"),
        format!("INSERT INTO {buffer} (op) VALUES ('D')"),
        format!("UPDATE {buffer} SET op = 'I'"),
        format!("DELETE FROM {buffer}"),
        format!("TRUNCATE {buffer}"),
        "SELECT * FROM pgtrickle.pgt_stream_tables".into(),
        "SELECT query FROM pgtrickle.pgt_stream_tables".into(),
        "SELECT * FROM pgtrickle.pgt_sources".into(),
        "SELECT * FROM pgtrickle.pgt_change_buffers".into(),
        "SELECT * FROM pgtrickle.pgt_refresh_history".into(),
        "UPDATE pgtrickle.pgt_stream_tables SET needs_reinit = true".into(),
        "DELETE FROM pgtrickle.pgt_sources".into(),
        "INSERT INTO pgtrickle.pgt_refresh_history (st_id, started_at, finished_at, mode, initiated_by) VALUES (1, now(), now(), 'x', 'y')".into(),
        "UPDATE pgtrickle.pgt_change_buffers SET capture_state = 'discarding'".into(),
        "TRUNCATE pgtrickle.pgt_refresh_history".into(),
        format!("SELECT pgtrickle._forget_stream_table({st_id})"),
        "SELECT pgtrickle._source_altered('base'::regclass)".into(),
        "SELECT pgtrickle._regenerate()".into(),
        "SELECT nextval('pgtrickle.pgt_stream_tables_id_seq')".into(),
    ];
    for who in ["cat_mallory", "cat_alice"] {
        let client = if who == "cat_mallory" { &mut m } else { &mut a };
        for stmt in &attempts {
            let got = sqlstate(client.batch_execute(stmt));
            assert_eq!(
                got, "42501",
                "{who}: {stmt}: expected 42501 (permission denied)"
            );
        }
    }
    // Nothing changed behind the extension's back.
    exec(&mut su, "INSERT INTO base VALUES (2, 2)");
    refresh(&mut a, "alice_st").unwrap();
    assert_exact(&mut a, "alice_st", "SELECT k, v FROM base");
}

/// A role may build stream tables only over what it may read: directly,
/// through its own view, a subquery, a CTE, a function it calls, or
/// another stream table. Each refusal is 42501 and leaves nothing behind.
#[test]
fn stream_tables_over_unreadable_relations_are_refused() {
    let mut su = database("sec_unreadable");
    create_roles(&mut su, &["unr_alice", "unr_bob"]);
    exec(
        &mut su,
        "CREATE TABLE secret (k int, pin text); INSERT INTO secret VALUES (1, '1234');
         CREATE TABLE open_t (k int); INSERT INTO open_t VALUES (1), (2);
         GRANT SELECT ON open_t TO unr_alice, unr_bob;
         GRANT SELECT ON secret TO unr_bob;
         GRANT CREATE ON SCHEMA public TO unr_alice, unr_bob;
         CREATE VIEW granted_view AS SELECT k FROM secret;
         GRANT SELECT ON granted_view TO unr_alice;",
    );
    let cluster = shared_cluster();
    let mut b = connect_as(cluster, "t_sec_unreadable", "unr_bob");
    exec(
        &mut b,
        "SELECT pgtrickle.create_stream_table('bob_st', 'SELECT k, pin FROM secret', NULL, 'DIFFERENTIAL')",
    );
    let mut a = connect_as(cluster, "t_sec_unreadable", "unr_alice");
    exec(
        &mut a,
        "CREATE VIEW alice_view AS SELECT k, pin FROM secret;
         CREATE FUNCTION peek(int) RETURNS text LANGUAGE sql AS 'SELECT pin FROM secret WHERE k = $1';",
    );
    let queries = [
        "SELECT k, pin FROM secret",
        "SELECT k, pin FROM alice_view",
        "SELECT s.k FROM (SELECT k FROM secret) s",
        "SELECT k FROM open_t WHERE EXISTS (SELECT 1 FROM secret)",
        "SELECT k, (SELECT max(pin) FROM secret) AS p FROM open_t",
        "WITH c AS (SELECT k FROM secret) SELECT k FROM c",
        "SELECT o.k FROM open_t o JOIN secret s ON s.k = o.k",
        "SELECT k, peek(k) AS p FROM open_t",
        "SELECT k, pin FROM bob_st",
        "SELECT k FROM open_t UNION ALL SELECT k FROM secret",
    ];
    for (i, q) in queries.iter().enumerate() {
        for mode in ["AUTO", "DIFFERENTIAL", "FULL"] {
            let name = format!("refused_{i}_{}", mode.to_lowercase());
            let (state, msg) = failure(a.execute(
                "SELECT pgtrickle.create_stream_table($1, $2, NULL, $3)",
                &[&name, q, &mode],
            ));
            let allowed = state == "42501" || (mode == "DIFFERENTIAL" && state == "0A000");
            assert!(allowed, "{q} ({mode}): expected 42501, got {state} {msg}");
            let left: i64 = su
                .query_one("SELECT count(*) FROM pg_class WHERE relname = $1", &[&name])
                .unwrap()
                .get(0);
            assert_eq!(left, 0, "{q} ({mode}): a half-created {name} was left");
        }
    }
    // No capture was installed on the secret table by the refusals.
    let triggers: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'secret'::regclass AND NOT tgisinternal",
            &[],
        )
        .unwrap()
        .get(0);
    let bob_reads: i64 = su
        .query_one(
            "SELECT count(*) FROM pgtrickle.pgt_sources WHERE source_relid = 'secret'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        bob_reads == 0 || triggers > 0,
        "capture state of secret is inconsistent"
    );
    let alice_sources: i64 = su
        .query_one(
            "SELECT count(*) FROM pgtrickle.pgt_stream_tables st WHERE st.name LIKE '%refused%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(alice_sources, 0);
    // A view granted to alice is how an owner shares data: allowed, like a materialized view.
    exec(
        &mut a,
        "SELECT pgtrickle.create_stream_table('via_grant', 'SELECT k FROM granted_view', NULL, 'AUTO')",
    );
    assert_exact(&mut a, "via_grant", "SELECT k FROM granted_view");
}

/// The scheduler refreshes as the stream table's owner: a function in the
/// defining query runs with the owner's rights, cannot escalate, and a
/// revoked SELECT makes the scheduled refresh fail with 42501, recorded in
/// status and history, without applying anything.
#[test]
fn the_scheduler_refreshes_as_the_owner_and_nothing_more() {
    let cluster = dedicated_cluster("sec-scheduler", &["pg_trickle.scheduler_interval_ms = 100"]);
    let mut su = cluster.connect("postgres").unwrap();
    exec(
        &mut su,
        "CREATE EXTENSION pg_trickle;
         CREATE ROLE sch_alice LOGIN;
         CREATE SCHEMA alice AUTHORIZATION sch_alice;
         CREATE TABLE shared (k int, v int); INSERT INTO shared VALUES (1, 1);
         GRANT SELECT ON shared TO sch_alice;",
    );
    let mut a = connect_as(&cluster, "postgres", "sch_alice");
    exec(
        &mut a,
        "CREATE TABLE alice.log (at timestamptz DEFAULT clock_timestamp(), usr text, sess text, attempt text, outcome text);
         CREATE FUNCTION alice.probe(k int) RETURNS int LANGUAGE plpgsql AS $f$
         BEGIN
           INSERT INTO alice.log (usr, sess, attempt, outcome) VALUES (current_user, session_user, 'call', 'ran');
           BEGIN
             EXECUTE 'ALTER ROLE sch_alice SUPERUSER';
             INSERT INTO alice.log (usr, sess, attempt, outcome) VALUES (current_user, session_user, 'ALTER ROLE', 'succeeded');
           EXCEPTION WHEN OTHERS THEN
             INSERT INTO alice.log (usr, sess, attempt, outcome) VALUES (current_user, session_user, 'ALTER ROLE', SQLSTATE);
           END;
           BEGIN
             EXECUTE 'SET ROLE postgres';
             INSERT INTO alice.log (usr, sess, attempt, outcome) VALUES (current_user, session_user, 'SET ROLE', 'succeeded');
           EXCEPTION WHEN OTHERS THEN
             INSERT INTO alice.log (usr, sess, attempt, outcome) VALUES (current_user, session_user, 'SET ROLE', SQLSTATE);
           END;
           RETURN k;
         END $f$;
         CREATE TABLE alice.t (k int); INSERT INTO alice.t VALUES (1), (2);
         SELECT pgtrickle.create_stream_table('alice.probed', 'SELECT k, alice.probe(k) AS p FROM alice.t', '1s', 'AUTO');
         SELECT pgtrickle.create_stream_table('alice.who', 'SELECT k, current_user::text AS who FROM alice.t', '1s', 'FULL');
         SELECT pgtrickle.create_stream_table('alice.diff', 'SELECT k, v FROM shared', '1s', 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('alice.whole', 'SELECT k, v FROM shared', '1s', 'FULL');",
    );
    exec(&mut a, "TRUNCATE alice.log; INSERT INTO alice.t VALUES (3)");
    wait_until(&mut a, "the scheduler refreshed alice.probed", |db| {
        db.query_one("SELECT count(*) FROM alice.probed", &[])
            .unwrap()
            .get::<_, i64>(0)
            == 3
    });
    let by_scheduler: i64 = su
        .query_one(
            "SELECT count(*) FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables s ON s.id = h.st_id \
             WHERE s.relid = 'alice.probed'::regclass AND h.initiated_by = 'scheduler' AND h.error_sqlstate IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(by_scheduler >= 1, "no scheduled refresh of alice.probed");
    let log: Vec<(String, String, String)> = a
        .query(
            "SELECT usr, attempt, outcome FROM alice.log ORDER BY at",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(!log.is_empty(), "the probe never ran");
    assert!(
        log.iter()
            .all(|(usr, _, outcome)| usr == "sch_alice" && outcome != "succeeded"),
        "the defining query's function ran with other rights or escalated: {log:?}"
    );
    let rolsuper: bool = su
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'sch_alice'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!rolsuper, "sch_alice became a superuser");
    wait_until(&mut a, "the scheduler refreshed alice.who", |db| {
        db.query_one("SELECT count(*) FROM alice.who", &[])
            .unwrap()
            .get::<_, i64>(0)
            == 3
    });
    let who: Vec<String> = first_column(&mut a, "SELECT DISTINCT who FROM alice.who", &[]);
    assert_eq!(who, vec!["sch_alice".to_string()], "refresh ran as {who:?}");

    // Revoke SELECT: the next scheduled refreshes fail with 42501 and apply nothing.
    exec(
        &mut su,
        "REVOKE SELECT ON shared FROM sch_alice; INSERT INTO shared VALUES (2, 2);",
    );
    for st in ["alice.diff", "alice.whole"] {
        wait_until(&mut a, &format!("{st} failed with 42501 in status"), |db| {
            db.query_opt(
                "SELECT 1 FROM pgtrickle.stream_table_status() WHERE name = $1 AND last_error_sqlstate = '42501'",
                &[&st],
            )
            .unwrap()
            .is_some()
        });
        let rows: i64 = a
            .query_one(&format!("SELECT count(*) FROM {st}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(rows, 1, "{st} applied changes its owner may no longer read");
        let history: i64 = su
            .query_one(
                "SELECT count(*) FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables s ON s.id = h.st_id \
                 WHERE s.relid = $1::text::regclass AND h.initiated_by = 'scheduler' AND h.error_sqlstate = '42501'",
                &[&st],
            )
            .unwrap()
            .get(0);
        assert!(history >= 1, "{st}: no 42501 in the refresh history");
        assert_eq!(
            sqlstate(refresh(&mut a, st)),
            "42501",
            "manual refresh of {st}"
        );
        // Not even a superuser's manual refresh reads it with other rights.
        assert_eq!(
            sqlstate(refresh(&mut su, st)),
            "42501",
            "superuser refresh of {st}"
        );
    }
    // Grant again: the next refresh catches up exactly.
    exec(&mut su, "GRANT SELECT ON shared TO sch_alice");
    refresh(&mut a, "alice.diff").unwrap();
    assert_exact(&mut a, "alice.diff", "SELECT k, v FROM shared");
}

/// A DIFFERENTIAL refresh reads its change buffers through a grant for
/// its own statement only: a function the defining query calls, running
/// inside that very refresh, still cannot read a buffer.
#[test]
fn a_defining_query_cannot_read_change_buffers_during_its_refresh() {
    let mut su = database("sec_buffer_grant");
    create_roles(&mut su, &["grant_alice"]);
    exec(
        &mut su,
        "CREATE SCHEMA alice AUTHORIZATION grant_alice;
         CREATE TABLE src (k int, v int); INSERT INTO src VALUES (1, 1);
         GRANT SELECT, INSERT ON src TO grant_alice;",
    );
    let buffer_probe = "SELECT pgtrickle.create_stream_table('alice.plain', 'SELECT k, v FROM src', NULL, 'DIFFERENTIAL')";
    let cluster = shared_cluster();
    let mut a = connect_as(cluster, "t_sec_buffer_grant", "grant_alice");
    exec(&mut a, buffer_probe);
    let buffer: String = su
        .query_one(
            "SELECT buffer_name FROM pgtrickle.pgt_change_buffers WHERE source_relid = 'src'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    // Declared IMMUTABLE (a lie) so that the query stays DIFFERENTIAL and
    // the function runs inside the differential statement, once per new
    // row. It returns k when reading the buffer was refused and -k when it
    // succeeded, so the stream table itself shows what happened.
    exec(
        &mut a,
        &format!(
            "CREATE FUNCTION alice.peek(k int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
             DECLARE n bigint;
             BEGIN
               SELECT count(*) INTO n FROM {buffer};
               RETURN -k;
             EXCEPTION WHEN insufficient_privilege THEN
               RETURN k;
             END $f$;
             SELECT pgtrickle.create_stream_table('alice.peeking', 'SELECT alice.peek(k) AS k, v FROM src', NULL, 'DIFFERENTIAL');
             INSERT INTO src VALUES (2, 2), (3, 3);"
        ),
    );
    refresh(&mut a, "alice.peeking").unwrap();
    exec(&mut su, "INSERT INTO src VALUES (4, 4)");
    refresh(&mut su, "alice.peeking").unwrap();
    let keys: Vec<i32> = first_column(&mut a, "SELECT k FROM alice.peeking ORDER BY v", &[]);
    assert_eq!(
        keys,
        vec![1, 2, 3, 4],
        "a negative key is a change buffer read by the defining query's function inside a refresh"
    );
    let modes: Vec<String> = first_column(
        &mut a,
        "SELECT mode FROM pgtrickle.refresh_history('alice.peeking') ORDER BY finished_at",
        &[],
    );
    assert_eq!(modes, ["FULL", "DIFFERENTIAL", "DIFFERENTIAL"]);
    assert_exact(
        &mut a,
        "alice.peeking",
        "SELECT alice.peek(k) AS k, v FROM src",
    );
}

/// Hostile text in every argument is quoted or refused with a clear
/// SQLSTATE; it never runs as SQL and never yields an internal error.
#[test]
fn hostile_identifiers_in_every_argument_are_quoted_or_refused() {
    let mut su = database("sec_hostile");
    create_roles(&mut su, &["hos_alice"]);
    exec(
        &mut su,
        "CREATE SCHEMA \"we.ird\" AUTHORIZATION hos_alice;
         GRANT CREATE ON SCHEMA public TO hos_alice;
         CREATE TABLE victim (x int); INSERT INTO victim VALUES (1);
         CREATE TABLE base (k int, v text); INSERT INTO base VALUES (1, 'a');
         GRANT SELECT ON base TO hos_alice;",
    );
    let cluster = shared_cluster();
    let mut a = connect_as(cluster, "t_sec_hostile", "hos_alice");
    let long = "x".repeat(100);
    // Each name and whether it must be created ("ok") or refused with a SQLSTATE.
    let names: Vec<(String, &str)> = vec![
        ("\"a'b\"".into(), "ok"),
        ("a'b".into(), "42602"),
        ("\"semi;colon\"".into(), "ok"),
        ("x; DROP TABLE victim; --".into(), "42602"),
        ("\"x; DROP TABLE victim; --\"".into(), "ok"),
        ("\"$$dollar$$\"".into(), "ok"),
        ("\"back\\slash\"".into(), "ok"),
        ("\"ünïcødé\"".into(), "ok"),
        ("\"%s%d%n\"".into(), "ok"),
        ("\"we.ird\".\"na.me\"".into(), "ok"),
        ("\"we.ird\".\"q\"\"uote\"".into(), "ok"),
        (long.clone(), "ok"),
        (format!("\"{}\"", long.to_uppercase()), "ok"),
        ("\"\"".into(), "42602"),
        ("".into(), "42602"),
        ("a.b.c.d".into(), "42602"),
        ("\"unterminated".into(), "42602"),
        ("nosuchschema.st".into(), "3F000"),
    ];
    let hostile_text = "'); DROP TABLE victim; -- $$ \" %s \\";
    for (name, want) in &names {
        let created = a.execute(
            "SELECT pgtrickle.create_stream_table($1, 'SELECT k, v FROM base', NULL, 'DIFFERENTIAL')",
            &[name],
        );
        let (state, msg) = failure(created);
        assert_eq!(&state, want, "create {name:?}: {msg}");
        if state != "ok" {
            continue;
        }
        let calls: Vec<(&str, Vec<&(dyn postgres::types::ToSql + Sync)>)> = vec![
            ("SELECT pgtrickle.refresh_stream_table($1)", vec![name]),
            (
                "SELECT pgtrickle.alter_stream_table($1, schedule => '1h')",
                vec![name],
            ),
            (
                "SELECT pgtrickle.hold_stream_table($1, $2)",
                vec![name, &hostile_text],
            ),
            (
                "SELECT 1 / count(*)::int FROM pgtrickle.stream_table_status() \
                 WHERE to_regclass(name) = to_regclass($1) AND position($2 in cdc_reason) > 0",
                vec![name, &hostile_text],
            ),
            ("SELECT pgtrickle.resume_stream_table($1)", vec![name]),
            (
                "SELECT pgtrickle.discard_changes($1, $2)",
                vec![name, &hostile_text],
            ),
            ("SELECT pgtrickle.resume_capture($1)", vec![name]),
            ("SELECT pgtrickle.refresh_stream_table($1)", vec![name]),
            (
                "SELECT pgtrickle.explain_stream_table($1)::text",
                vec![name],
            ),
            (
                "SELECT pgtrickle.explain_stream_table($1, 'text')",
                vec![name],
            ),
            (
                "SELECT pgtrickle.explain_stream_table($1, 'dot')",
                vec![name],
            ),
            (
                "SELECT count(*) FROM pgtrickle.stream_table_sql($1)",
                vec![name],
            ),
            (
                "SELECT pgtrickle.alter_stream_table($1, refresh_mode => 'FULL')",
                vec![name],
            ),
            ("SELECT pgtrickle.drop_stream_table($1)", vec![name]),
        ];
        for (sql, params) in calls {
            if let Err(e) = a.execute(sql, &params) {
                panic!("{name:?}: {sql}: {}", harness::cluster::describe(&e));
            }
        }
        let (state, msg) = failure(a.execute(
            "SELECT 1 FROM pg_class WHERE oid = to_regclass($1)",
            &[name],
        ));
        assert_eq!(state, "ok", "{msg}");
    }
    // Hostile queries, schedules and modes.
    for (query, schedule, mode, want) in [
        ("SELECT 1 AS one; DROP TABLE victim", None, "AUTO", "42601"),
        (
            "SELECT k FROM base; DROP TABLE victim; --",
            None,
            "AUTO",
            "42601",
        ),
        (
            "SELECT k FROM base",
            Some("1s; DROP TABLE victim"),
            "AUTO",
            "22023",
        ),
        (
            "SELECT k FROM base",
            None,
            "DIFFERENTIAL'; DROP TABLE victim; --",
            "22023",
        ),
        ("DROP TABLE victim", None, "AUTO", "42601"),
    ] {
        let got = sqlstate(a.execute(
            "SELECT pgtrickle.create_stream_table('h_q', $1, $2, $3)",
            &[&query, &schedule, &mode],
        ));
        assert_eq!(got, want, "{query:?} {schedule:?} {mode:?}");
    }
    exec(
        &mut a,
        "SELECT pgtrickle.create_stream_table('h_fmt', 'SELECT k FROM base', NULL, 'DIFFERENTIAL')",
    );
    let (state, msg) = failure(a.execute(
        "SELECT pgtrickle.explain_stream_table('h_fmt', $1)",
        &[&hostile_text],
    ));
    assert_eq!(state, "22023", "{msg}");
    // A dollar-quoted literal is just a value.
    exec(
        &mut a,
        "SELECT pgtrickle.create_stream_table('lit', $q$SELECT k, $x$'); DROP TABLE victim; --$x$ AS t FROM base$q$, NULL, 'DIFFERENTIAL')",
    );
    assert_exact(
        &mut a,
        "lit",
        "SELECT k, $x$'); DROP TABLE victim; --$x$ AS t FROM base",
    );
    let victim: i64 = su
        .query_one("SELECT count(*) FROM victim", &[])
        .unwrap()
        .get(0);
    assert_eq!(victim, 1);
}

/// Another role cannot control, inspect or drop a stream table it does not
/// own; a member of the owning role can, and so can a superuser.
#[test]
fn a_non_owner_cannot_control_or_inspect_someone_elses_stream_table() {
    let mut su = database("sec_owner");
    create_roles(&mut su, &["own_alice", "own_mallory", "own_bob"]);
    exec(
        &mut su,
        "GRANT own_alice TO own_bob;
         CREATE TABLE base (k int, v int); INSERT INTO base VALUES (1, 1);
         GRANT SELECT ON base TO own_alice, own_mallory;
         GRANT CREATE ON SCHEMA public TO own_alice, own_mallory;",
    );
    let cluster = shared_cluster();
    let mut a = connect_as(cluster, "t_sec_owner", "own_alice");
    exec(
        &mut a,
        "SELECT pgtrickle.create_stream_table('alice_st', 'SELECT k, v FROM base WHERE v > 0', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('alice_sched', 'SELECT k FROM base', '1h', 'DIFFERENTIAL');",
    );
    let mut m = connect_as(cluster, "t_sec_owner", "own_mallory");
    exec(
        &mut m,
        "SELECT pgtrickle.create_stream_table('mallory_st', 'SELECT k FROM base', NULL, 'DIFFERENTIAL')",
    );
    let controls = [
        "SELECT pgtrickle.refresh_stream_table('alice_st')",
        "SELECT pgtrickle.alter_stream_table('alice_st', schedule => '1s')",
        "SELECT pgtrickle.alter_stream_table('alice_st', refresh_mode => 'FULL')",
        "SELECT pgtrickle.hold_stream_table('alice_st')",
        "SELECT pgtrickle.resume_stream_table('alice_st')",
        "SELECT pgtrickle.discard_changes('alice_st')",
        "SELECT pgtrickle.resume_capture('alice_st')",
        "SELECT pgtrickle.drop_stream_table('alice_st')",
        "SELECT pgtrickle.explain_stream_table('alice_st')",
        "SELECT pgtrickle.explain_stream_table('alice_st', 'text')",
        "SELECT pgtrickle.explain_stream_table('alice_st', 'dot')",
        "SELECT * FROM pgtrickle.stream_table_sql('alice_st')",
        "DROP TABLE alice_st",
        "INSERT INTO alice_st VALUES (9, 9)",
        "SELECT pgtrickle.discard_all_changes()",
        "SELECT pgtrickle.resume_all_capture()",
        "SELECT * FROM pgtrickle.evaluate_backpressure()",
    ];
    for c in controls {
        let (state, msg) = failure(m.batch_execute(c));
        assert_eq!(state, "42501", "mallory: {c}: {msg}");
    }
    let held: i64 = m
        .query_one("SELECT pgtrickle.hold_all_stream_tables('mine only')", &[])
        .unwrap()
        .get(0);
    assert_eq!(held, 1, "hold_all held more than mallory's own");
    let st_status: Vec<String> = first_column(
        &mut m,
        "SELECT name FROM pgtrickle.stream_table_status()",
        &[],
    );
    assert_eq!(st_status, vec!["public.mallory_st".to_string()]);
    let (alice_held, alice_reinit): (bool, bool) = su
        .query_one(
            "SELECT held, needs_reinit FROM pgtrickle.pgt_stream_tables WHERE relid = 'alice_st'::regclass",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(!alice_held && !alice_reinit, "mallory changed alice_st");
    let resumed: i64 = m
        .query_one("SELECT pgtrickle.resume_all_stream_tables()", &[])
        .unwrap()
        .get(0);
    assert_eq!(resumed, 1);
    // Held by alice: mallory's resume_all does not touch it.
    exec(
        &mut a,
        "SELECT pgtrickle.hold_stream_table('alice_sched', 'mine')",
    );
    m.query_one("SELECT pgtrickle.resume_all_stream_tables()", &[])
        .unwrap();
    let still_held: bool = su
        .query_one(
            "SELECT held FROM pgtrickle.pgt_stream_tables WHERE relid = 'alice_sched'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(still_held, "mallory resumed alice's held stream table");
    // Change buffers: mallory sees the source it may read, not its history.
    let bufs: i64 = m
        .query_one("SELECT count(*) FROM pgtrickle.change_buffer_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(bufs, 1);
    // A member of the owning role may, and so may a superuser.
    let mut b = connect_as(cluster, "t_sec_owner", "own_bob");
    exec(
        &mut b,
        "SELECT pgtrickle.refresh_stream_table('alice_st');
         SELECT pgtrickle.hold_stream_table('alice_st', 'bob');
         SELECT pgtrickle.resume_stream_table('alice_st');
         SELECT pgtrickle.explain_stream_table('alice_st');",
    );
    let bob_sees: i64 = b
        .query_one(
            "SELECT count(*) FROM pgtrickle.stream_table_status() WHERE name LIKE 'public.alice%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(bob_sees, 2);
    exec(&mut su, "SELECT pgtrickle.refresh_stream_table('alice_st')");
    // A monitor sees every stream table and its definition, and controls none.
    exec(
        &mut su,
        "CREATE ROLE own_watch LOGIN; GRANT pg_monitor TO own_watch",
    );
    let mut w = connect_as(cluster, "t_sec_owner", "own_watch");
    let watched: i64 = w
        .query_one("SELECT count(*) FROM pgtrickle.stream_table_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(watched, 3, "a pg_monitor member sees every stream table");
    exec(
        &mut w,
        "SELECT pgtrickle.explain_stream_table('alice_st', 'text');
         SELECT count(*) FROM pgtrickle.stream_table_sql('alice_st');
         SELECT count(*) FROM pgtrickle.refresh_history('alice_st');
         SELECT count(*) FROM pgtrickle.change_buffer_status();",
    );
    for c in [
        "SELECT pgtrickle.refresh_stream_table('alice_st')",
        "SELECT pgtrickle.hold_stream_table('alice_st')",
        "SELECT pgtrickle.drop_stream_table('alice_st')",
    ] {
        assert_eq!(sqlstate(w.batch_execute(c)), "42501", "monitor: {c}");
    }
    assert_eq!(
        sqlstate(m.batch_execute("SELECT * FROM pgtrickle.refresh_history('alice_st')")),
        "42501"
    );
    // Ownership moves with the table, as for a materialized view.
    exec(&mut su, "ALTER TABLE mallory_st OWNER TO own_alice");
    exec(
        &mut a,
        "SELECT pgtrickle.refresh_stream_table('mallory_st')",
    );
    assert_eq!(
        sqlstate(m.batch_execute("SELECT pgtrickle.refresh_stream_table('mallory_st')")),
        "42501"
    );
    exec(&mut b, "SELECT pgtrickle.drop_stream_table('alice_st')");
}

/// An ordinary role runs the whole life of its stream tables; a writer
/// with only INSERT on the source is captured.
#[test]
fn an_ordinary_role_runs_the_whole_lifecycle() {
    let mut su = database("sec_lifecycle");
    create_roles(&mut su, &["life_alice", "life_writer"]);
    exec(&mut su, "CREATE SCHEMA app AUTHORIZATION life_alice;");
    let cluster = shared_cluster();
    let mut a = connect_as(cluster, "t_sec_lifecycle", "life_alice");
    let q = "SELECT k, count(*) AS n, sum(v) AS s FROM app.orders GROUP BY k";
    exec(
        &mut a,
        &format!(
            "CREATE TABLE app.orders (k int, v numeric);
             INSERT INTO app.orders SELECT i % 3, i FROM generate_series(1, 30) i;
             GRANT USAGE ON SCHEMA app TO life_writer;
             GRANT INSERT ON app.orders TO life_writer;
             SELECT pgtrickle.create_stream_table('app.totals', '{q}', NULL, 'DIFFERENTIAL');
             SELECT pgtrickle.create_stream_table('app.top', 'SELECT k, n FROM app.totals WHERE n > 5', NULL, 'DIFFERENTIAL');"
        ),
    );
    let owner: String = su
        .query_one(
            "SELECT relowner::regrole::text FROM pg_class WHERE oid = 'app.totals'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, "life_alice");
    let mut w = connect_as(cluster, "t_sec_lifecycle", "life_writer");
    exec(&mut w, "INSERT INTO app.orders VALUES (1, 1000), (5, 5)");
    for step in [
        "SELECT pgtrickle.refresh_stream_table('app.totals')",
        "SELECT pgtrickle.refresh_stream_table('app.top')",
        "SELECT pgtrickle.alter_stream_table('app.totals', schedule => '1h')",
        "SELECT pgtrickle.hold_stream_table('app.totals', 'batch load')",
        "SELECT pgtrickle.resume_stream_table('app.totals')",
        "SELECT pgtrickle.discard_changes('app.totals', 'disk')",
        "SELECT pgtrickle.resume_capture('app.totals')",
        "SELECT pgtrickle.refresh_stream_table('app.totals')",
        "SELECT pgtrickle.alter_stream_table('app.totals', refresh_mode => 'FULL')",
        "SELECT pgtrickle.alter_stream_table('app.totals', refresh_mode => 'DIFFERENTIAL')",
        "SELECT pgtrickle.refresh_stream_table('app.totals')",
    ] {
        exec(&mut a, step);
    }
    exec(&mut w, "INSERT INTO app.orders VALUES (2, 2)");
    exec(
        &mut a,
        "SELECT pgtrickle.refresh_stream_table('app.totals')",
    );
    assert_exact(&mut a, "app.totals", q);
    let mode: String = a
        .query_one(
            "SELECT last_refresh_mode FROM pgtrickle.stream_table_status() WHERE name = 'app.totals'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(mode, "DIFFERENTIAL");
    exec(
        &mut a,
        "SELECT pgtrickle.drop_stream_table('app.top'); SELECT pgtrickle.drop_stream_table('app.totals');",
    );
    let left: i64 = su
        .query_one("SELECT count(*) FROM pgtrickle.pgt_change_buffers", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        left, 0,
        "capture left behind after the last reader was dropped"
    );
}

/// A source with row-level security gives the stream table exactly the
/// rows its owner may see, as a materialized view does; DIFFERENTIAL is
/// refused for such a source (the change buffer would bypass the policy).
#[test]
fn row_level_security_gives_the_owner_exactly_its_rows() {
    let mut su = database("sec_rls");
    create_roles(&mut su, &["rls_alice", "rls_bob"]);
    exec(
        &mut su,
        "CREATE TABLE docs (owner text, body text);
         INSERT INTO docs VALUES ('rls_alice', 'a1'), ('rls_bob', 'b1'), ('rls_alice', 'a2');
         ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
         CREATE POLICY mine ON docs USING (owner = current_user);
         GRANT SELECT ON docs TO rls_alice;
         CREATE TABLE notes (owner text, body text);
         INSERT INTO notes VALUES ('rls_alice', 'n1'), ('rls_bob', 'n2');
         GRANT SELECT ON notes TO rls_alice;
         GRANT CREATE ON SCHEMA public TO rls_alice;",
    );
    let cluster = shared_cluster();
    let mut a = connect_as(cluster, "t_sec_rls", "rls_alice");
    let (state, msg) = failure(a.batch_execute(
        "SELECT pgtrickle.create_stream_table('d_diff', 'SELECT owner, body FROM docs', NULL, 'DIFFERENTIAL')",
    ));
    assert_eq!(state, "0A000", "{msg}");
    assert!(
        msg.contains("row-level security") && msg.contains("docs"),
        "{msg}"
    );
    exec(
        &mut a,
        "SELECT pgtrickle.create_stream_table('d_auto', 'SELECT owner, body FROM docs', NULL, 'AUTO');
         CREATE MATERIALIZED VIEW d_mv AS SELECT owner, body FROM docs;",
    );
    let reason: String = a
        .query_one(
            "SELECT fallback_reason FROM pgtrickle.stream_table_status() WHERE name = 'public.d_auto'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(reason.contains("row-level security"), "{reason}");
    exec(
        &mut su,
        "INSERT INTO docs VALUES ('rls_bob', 'b2'), ('rls_alice', 'a3')",
    );
    exec(
        &mut a,
        "SELECT pgtrickle.refresh_stream_table('d_auto'); REFRESH MATERIALIZED VIEW d_mv;",
    );
    assert_exact(&mut a, "d_auto", "SELECT owner, body FROM d_mv");
    let n: i64 = a
        .query_one("SELECT count(*) FROM d_auto", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 3, "alice's stream table holds rows its policy hides");
    // A policy switched on after creation: the stream table stops being
    // maintained from the change buffer and sees only alice's rows.
    exec(
        &mut a,
        "SELECT pgtrickle.create_stream_table('n_auto', 'SELECT owner, body FROM notes', NULL, 'AUTO')",
    );
    exec(
        &mut su,
        "ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
         CREATE POLICY mine ON notes USING (owner = current_user);
         INSERT INTO notes VALUES ('rls_bob', 'n3'), ('rls_alice', 'n4');",
    );
    exec(&mut a, "SELECT pgtrickle.refresh_stream_table('n_auto')");
    assert_exact(&mut a, "n_auto", "SELECT owner, body FROM notes");
    let n: i64 = a
        .query_one("SELECT count(*) FROM n_auto", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "n_auto holds rows alice's policy hides");
}

/// A backend keeps the plans of the statements a refresh runs, among them
/// the probe that checks the owner may still read what the defining query
/// reads. A privilege revoked between two refreshes in one session is
/// still refused: the checks run whenever a kept plan starts.
#[test]
fn a_privilege_revoked_between_refreshes_of_one_session_is_refused() {
    let mut su = database("sec_kept_probe");
    create_roles(&mut su, &["kept_owner"]);
    exec(
        &mut su,
        "CREATE TABLE kept_src (k int PRIMARY KEY, g int, v int);
         INSERT INTO kept_src SELECT i, i % 4, i FROM generate_series(1, 40) i;
         CREATE SCHEMA kept AUTHORIZATION kept_owner;
         GRANT SELECT ON kept_src TO kept_owner;",
    );
    let mut owner = connect_as(shared_cluster(), "t_sec_kept_probe", "kept_owner");
    exec(
        &mut owner,
        // A projection: its differential statement reads only the change
        // buffer, so only the probe can see the revoked privilege.
        "SELECT pgtrickle.create_stream_table('kept.sums', 'SELECT k, v FROM public.kept_src WHERE v > 0', NULL, 'DIFFERENTIAL');",
    );
    // More refreshes than PostgreSQL needs before it keeps a generic plan.
    for i in 1..=8 {
        exec(
            &mut su,
            &format!("UPDATE kept_src SET v = v + 1 WHERE k = {i}"),
        );
        refresh(&mut owner, "kept.sums").unwrap();
    }
    exec(
        &mut su,
        "REVOKE SELECT ON kept_src FROM kept_owner; UPDATE kept_src SET v = v + 1 WHERE k = 9;",
    );
    assert_eq!(
        sqlstate(refresh(&mut owner, "kept.sums")),
        "42501",
        "a refresh in the same session read a source its owner may no longer read"
    );
}

/// A refresh of a few changes runs its statement's kept generic plan
/// (`pg_trickle_core::plan_reuse`), whose change buffers are read under a
/// grant marked on a copy of the plan for that run only. Refreshes of an
/// ordinary role's join, past the runs after which a kept plan is built
/// again and across a backlog planned afresh, stay exact; a privilege
/// revoked on the table the statement joins is refused at the next
/// refresh (by the privilege probe that precedes every DIFFERENTIAL
/// statement, and by PostgreSQL's checks at every run of a plan), and
/// granted back, the changes are applied.
#[test]
fn kept_refresh_plans_stay_exact_and_check_privileges_at_every_run() {
    let mut su = database("sec_kept_plan");
    create_roles(&mut su, &["kplan_owner"]);
    exec(
        &mut su,
        "CREATE TABLE kp_a (k int PRIMARY KEY, v int NOT NULL);
         CREATE TABLE kp_b (k int PRIMARY KEY, w int NOT NULL);
         INSERT INTO kp_a SELECT i, i FROM generate_series(1, 200) i;
         INSERT INTO kp_b SELECT i, i * 10 FROM generate_series(1, 200) i;
         CREATE SCHEMA kplan AUTHORIZATION kplan_owner;
         GRANT SELECT ON kp_a, kp_b TO kplan_owner;",
    );
    let query = "SELECT a.k, a.v, b.w FROM public.kp_a a JOIN public.kp_b b ON a.k = b.k";
    let mut owner = connect_as(shared_cluster(), "t_sec_kept_plan", "kplan_owner");
    exec(
        &mut owner,
        &format!("SELECT pgtrickle.create_stream_table('kplan.joined', '{query}', NULL, 'DIFFERENTIAL');"),
    );
    let runs = pg_trickle_core::plan_reuse::MAX_RUNS as i32 + 20;
    for i in 1..=runs {
        exec(
            &mut su,
            &format!("UPDATE kp_a SET v = v + 1 WHERE k = {}", 1 + i % 200),
        );
        refresh(&mut owner, "kplan.joined").unwrap();
        if i % 64 == 0 {
            assert_exact(&mut owner, "kplan.joined", query);
        }
    }
    assert_exact(&mut owner, "kplan.joined", query);
    // A backlog past the bound is planned for its run; the kept plan
    // serves the next few changes again.
    let backlog = pg_trickle_core::plan_reuse::MAX_CHANGES + 36;
    exec(
        &mut su,
        &format!("UPDATE kp_a SET v = v - 1 WHERE k <= {backlog}"),
    );
    refresh(&mut owner, "kplan.joined").unwrap();
    assert_exact(&mut owner, "kplan.joined", query);
    exec(&mut su, "UPDATE kp_a SET v = v + 7 WHERE k = 3");
    refresh(&mut owner, "kplan.joined").unwrap();
    assert_exact(&mut owner, "kplan.joined", query);
    exec(
        &mut su,
        "REVOKE SELECT ON kp_b FROM kplan_owner; UPDATE kp_a SET v = v + 1 WHERE k = 5;",
    );
    assert_eq!(
        sqlstate(refresh(&mut owner, "kplan.joined")),
        "42501",
        "a refresh read a table its owner may no longer read"
    );
    exec(&mut su, "GRANT SELECT ON kp_b TO kplan_owner");
    refresh(&mut owner, "kplan.joined").unwrap();
    assert_exact(&mut owner, "kplan.joined", query);
}
