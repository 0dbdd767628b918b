//! A stream table being kept fresh by the scheduler, shown step by step.
//!
//! Runs in the database the scheduler watches (`postgres`): creates a source
//! table, a DIFFERENTIAL stream table refreshed every second, then changes
//! the source a few times and waits for the scheduler to catch up, checking
//! the stream table against its query each time.

pub mod command;

use std::time::{Duration, Instant};

use postgres::Client;

use crate::cluster::describe;
use oracles::compare::differences as compare;
use oracles::engine_api::{last_refresh, Ran};
use oracles::gen::DmlGen;
use pg_trickle_core::ir::Mode;

const QUERY: &str =
    "SELECT region, count(*) AS orders, sum(amount) AS revenue, max(amount) AS largest \
                     FROM demo_orders GROUP BY region";

/// Run the demo, printing what happens. Errors are readable reports.
pub fn run(db: &mut Client, seed: u64, rounds: usize) -> Result<(), String> {
    let e = |err: postgres::Error| describe(&err);
    db.batch_execute(
        "DROP TABLE IF EXISTS demo_orders CASCADE;
         CREATE EXTENSION IF NOT EXISTS pg_trickle;
         CREATE TABLE demo_orders (id bigserial PRIMARY KEY, region text NOT NULL, amount numeric(10,2) NOT NULL);
         INSERT INTO demo_orders (region, amount)
           SELECT (ARRAY['north','south','east','west'])[1 + g % 4], (g % 97) * 1.25 FROM generate_series(1, 1000) g;",
    )
    .map_err(e)?;
    db.execute(
        "SELECT pgtrickle.create_stream_table('demo_sales', $1, '1s', 'DIFFERENTIAL')",
        &[&QUERY],
    )
    .map_err(e)?;
    println!("demo: stream table demo_sales = {QUERY}");
    println!("demo: refreshed by the scheduler every 1s");
    let mut gen = DmlGen::new(seed);
    for round in 1..=rounds {
        let region = ["north", "south", "east", "west", "central"][gen.below(5)];
        let amount = gen.below(500) as f64 + 0.5;
        let changes = [
            format!("INSERT INTO demo_orders (region, amount) VALUES ('{region}', {amount})"),
            format!(
                "UPDATE demo_orders SET amount = amount + 1 WHERE id = {}",
                1 + gen.below(1000)
            ),
            format!("DELETE FROM demo_orders WHERE id = {}", 1 + gen.below(1000)),
        ];
        for c in &changes {
            db.batch_execute(c).map_err(e)?;
        }
        let start = Instant::now();
        loop {
            if compare(db, "demo_sales", QUERY).map_err(e)?.is_none() {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "round {round}: the scheduler did not refresh demo_sales within 30 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let ran = last_refresh(db, "demo_sales").map_err(e)?.map(|r| r.ran);
        let mode = ran.as_ref().map(Ran::to_string).unwrap_or_default();
        println!(
            "demo: round {round}: {} changes -> demo_sales fresh after {} ms ({mode})",
            changes.len(),
            start.elapsed().as_millis()
        );
        if ran != Some(Ran::Mode(Mode::Differential)) {
            return Err(format!(
                "round {round}: the scheduler refreshed with {mode}, not DIFFERENTIAL"
            ));
        }
    }
    for row in db
        .query(
            "SELECT region, orders, revenue::text, largest::text FROM demo_sales ORDER BY region",
            &[],
        )
        .map_err(e)?
    {
        println!(
            "demo:   {:<8} orders={:<5} revenue={:<10} largest={}",
            row.get::<_, String>(0),
            row.get::<_, i64>(1),
            row.get::<_, String>(2),
            row.get::<_, String>(3)
        );
    }
    Ok(())
}
