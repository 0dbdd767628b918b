//! Seeded schemas, data and DML streams.
//!
//! Tables have 2 to 4 columns of integer, bigint, numeric, text, boolean,
//! date and json types, nullable or NOT NULL, with or without a bigint
//! primary key, and sometimes indexes; some keyless tables are partitioned
//! (on `c0`, with a DEFAULT partition) or inheritance parents with a child
//! that inserts also target. Values come from small, skewed domains so
//! duplicates, NULLs and join matches are common. DML never violates a
//! constraint: primary keys come from a counter, and key updates shift a
//! key by a multiple of a large stride, which keeps keys unique.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// int
    Int,
    /// bigint
    BigInt,
    /// numeric(12,2)
    Numeric,
    /// text
    Text,
    /// boolean
    Bool,
    /// date
    Date,
    /// json: no hash function and no equality, so only projected,
    /// counted and tested for NULL
    Json,
}

/// Types that compare and combine with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// int, bigint, numeric
    Num,
    /// text
    Text,
    /// boolean
    Bool,
    /// date
    Date,
    /// json (opaque: see [`Ty::Json`])
    Json,
}

impl Ty {
    const ALL: [Ty; 7] = [
        Ty::Int,
        Ty::BigInt,
        Ty::Numeric,
        Ty::Text,
        Ty::Bool,
        Ty::Date,
        Ty::Json,
    ];

    /// SQL type name.
    pub fn sql(self) -> &'static str {
        match self {
            Ty::Int => "int",
            Ty::BigInt => "bigint",
            Ty::Numeric => "numeric(12,2)",
            Ty::Text => "text",
            Ty::Bool => "boolean",
            Ty::Date => "date",
            Ty::Json => "json",
        }
    }

    /// Its family.
    pub fn family(self) -> Family {
        match self {
            Ty::Int | Ty::BigInt | Ty::Numeric => Family::Num,
            Ty::Text => Family::Text,
            Ty::Bool => Family::Bool,
            Ty::Date => Family::Date,
            Ty::Json => Family::Json,
        }
    }

    /// Whether values compare with `=` (and so may be keys or compared).
    pub fn comparable(self) -> bool {
        self != Ty::Json
    }
}

/// A column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Name.
    pub name: String,
    /// Type.
    pub ty: Ty,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

/// How a table stores its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One ordinary table.
    Plain,
    /// Range-partitioned on `c0`: `[0,3)`, `[3,6)` and a DEFAULT partition.
    Partitioned,
    /// An inheritance parent with one child `<name>_c` that inserts may target.
    Inherited,
}

/// A table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Name.
    pub name: String,
    /// How it stores its rows.
    pub layout: Layout,
    /// Whether it has a bigint primary key column `id` (first).
    pub keyed: bool,
    /// Its columns, `id` first when keyed.
    pub columns: Vec<Column>,
    /// Indexed column names.
    pub indexes: Vec<String>,
}

impl Table {
    /// `CREATE TABLE` and `CREATE INDEX` statements.
    pub fn ddl(&self) -> Vec<String> {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                if self.keyed && c.name == "id" {
                    "id bigint PRIMARY KEY".to_string()
                } else {
                    format!(
                        "{} {}{}",
                        c.name,
                        c.ty.sql(),
                        if c.nullable { "" } else { " NOT NULL" }
                    )
                }
            })
            .collect();
        let t = &self.name;
        let mut out = match self.layout {
            Layout::Plain => vec![format!("CREATE TABLE {t} ({})", cols.join(", "))],
            Layout::Partitioned => vec![
                format!(
                    "CREATE TABLE {t} ({}) PARTITION BY RANGE (c0)",
                    cols.join(", ")
                ),
                format!("CREATE TABLE {t}_p0 PARTITION OF {t} FOR VALUES FROM (0) TO (3)"),
                format!("CREATE TABLE {t}_p1 PARTITION OF {t} FOR VALUES FROM (3) TO (6)"),
                format!("CREATE TABLE {t}_pd PARTITION OF {t} DEFAULT"),
            ],
            Layout::Inherited => vec![
                format!("CREATE TABLE {t} ({})", cols.join(", ")),
                format!("CREATE TABLE {t}_c () INHERITS ({t})"),
            ],
        };
        for c in &self.indexes {
            out.push(format!("CREATE INDEX ON {t} ({c})"));
        }
        out
    }

    /// A unique row locator, as compared and as selected: `ctid` is unique
    /// only within one table of a partition or inheritance tree.
    fn row_locator(&self) -> (&'static str, &'static str) {
        match self.layout {
            Layout::Plain => ("ctid", "ctid"),
            _ => ("(tableoid, ctid)", "tableoid, ctid"),
        }
    }

    fn data_columns(&self) -> Vec<&Column> {
        self.columns
            .iter()
            .filter(|c| !(self.keyed && c.name == "id"))
            .collect()
    }
}

/// A schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// Tables `t0`, `t1`, ...
    pub tables: Vec<Table>,
}

/// Generates a schema.
pub fn schema(rng: &mut ChaCha8Rng) -> Schema {
    let n = rng.gen_range(2..=5);
    let tables = (0..n)
        .map(|i| {
            let keyed = rng.gen_bool(0.4);
            let mut columns = Vec::new();
            if keyed {
                columns.push(Column {
                    name: "id".into(),
                    ty: Ty::BigInt,
                    nullable: false,
                });
            }
            // Every table gets a nullable-or-not int column c0, so joins always have a partner.
            columns.push(Column {
                name: "c0".into(),
                ty: Ty::Int,
                nullable: rng.gen_bool(0.7),
            });
            for j in 1..rng.gen_range(2..=4) {
                columns.push(Column {
                    name: format!("c{j}"),
                    ty: *Ty::ALL.choose(rng).expect("types"),
                    nullable: rng.gen_bool(0.7),
                });
            }
            let mut indexes = Vec::new();
            for c in &columns {
                if c.name != "id" && c.ty.comparable() && rng.gen_bool(0.2) {
                    indexes.push(c.name.clone());
                }
            }
            // A primary key would have to include the partition key.
            let layout = match (keyed, rng.gen_range(0..10)) {
                (false, 0..=1) => Layout::Partitioned,
                (false, 2) => Layout::Inherited,
                _ => Layout::Plain,
            };
            Table {
                name: format!("t{i}"),
                layout,
                keyed,
                columns,
                indexes,
            }
        })
        .collect();
    Schema { tables }
}

const WORDS: &[&str] = &["a", "b", "B", "cc", "", "x y", "O'Hara"];

/// A literal of type `ty`; never NULL when `nullable` is false.
pub fn literal(rng: &mut ChaCha8Rng, ty: Ty, nullable: bool) -> String {
    if nullable && rng.gen_ratio(1, 6) {
        return "NULL".into();
    }
    // Skew: half of the values come from the first quarter of the domain.
    let small = |rng: &mut ChaCha8Rng, n: i64| {
        if rng.gen_bool(0.5) {
            rng.gen_range(0..(n / 4).max(1))
        } else {
            rng.gen_range(0..n)
        }
    };
    match ty {
        Ty::Int => small(rng, 8).to_string(),
        Ty::BigInt => (small(rng, 8) * 3_000_000_019).to_string(),
        Ty::Numeric => format!("{}.{:02}", small(rng, 20), rng.gen_range(0..4) * 25),
        Ty::Text => format!(
            "'{}'",
            WORDS.choose(rng).expect("words").replace('\'', "''")
        ),
        Ty::Bool => if rng.gen_bool(0.5) { "true" } else { "false" }.into(),
        Ty::Date => format!("DATE '2024-01-{:02}'", 1 + small(rng, 8)),
        Ty::Json => {
            let n = small(rng, 4);
            match rng.gen_range(0..4) {
                0 => format!("'{{\"n\": {n}}}'"),
                1 => format!("'{{\"n\":{n}}}'"),
                2 => format!("'[{n}]'"),
                _ => "'null'".into(),
            }
        }
    }
}

/// Stride by which key updates shift primary keys (larger than any key
/// the counter hands out, so shifted keys never collide).
const KEY_STRIDE: i64 = 1_000_000;

/// Generates rows and DML for a schema; keeps the key counters.
pub struct Writer {
    next_id: Vec<i64>,
    shifts: i64,
}

impl Writer {
    /// A writer for `schema`.
    pub fn new(schema: &Schema) -> Self {
        Writer {
            next_id: vec![1; schema.tables.len()],
            shifts: 0,
        }
    }

    fn row(&mut self, rng: &mut ChaCha8Rng, t: &Table, ti: usize) -> (String, String) {
        let mut cols = Vec::new();
        let mut vals = Vec::new();
        if t.keyed {
            cols.push("id".to_string());
            vals.push(self.next_id[ti].to_string());
            self.next_id[ti] += 1;
        }
        for c in t.data_columns() {
            cols.push(c.name.clone());
            vals.push(literal(rng, c.ty, c.nullable));
        }
        (cols.join(", "), vals.join(", "))
    }

    /// An INSERT of `n` rows into table `ti`.
    pub fn insert(&mut self, rng: &mut ChaCha8Rng, schema: &Schema, ti: usize, n: usize) -> String {
        let t = &schema.tables[ti];
        let mut cols = String::new();
        let rows: Vec<String> = (0..n)
            .map(|_| {
                let (c, v) = self.row(rng, t, ti);
                cols = c;
                format!("({v})")
            })
            .collect();
        let target = if t.layout == Layout::Inherited && rng.gen_bool(0.5) {
            format!("{}_c", t.name)
        } else {
            t.name.clone()
        };
        format!("INSERT INTO {target} ({cols}) VALUES {}", rows.join(", "))
    }

    fn predicate(rng: &mut ChaCha8Rng, t: &Table) -> String {
        let c = t.columns.choose(rng).expect("columns");
        if !c.ty.comparable() {
            return format!("{} IS NULL", c.name);
        }
        match rng.gen_range(0..4) {
            0 if c.nullable => format!("{} IS NULL", c.name),
            1 if c.ty.family() == Family::Num => {
                format!("{} < {}", c.name, literal(rng, c.ty, false))
            }
            _ => format!("{} = {}", c.name, literal(rng, c.ty, false)),
        }
    }

    /// One DML statement against a random table.
    pub fn statement(&mut self, rng: &mut ChaCha8Rng, schema: &Schema) -> String {
        let ti = rng.gen_range(0..schema.tables.len());
        let t = &schema.tables[ti];
        match rng.gen_range(0..12) {
            0..=3 => {
                let n = rng.gen_range(1..=3);
                self.insert(rng, schema, ti, n)
            }
            4 if !t.keyed => {
                // A multi-row insert copying rows (duplicates in a keyless table).
                let p = Self::predicate(rng, t);
                format!("INSERT INTO {0} SELECT * FROM {0} WHERE {p}", t.name)
            }
            5..=6 => {
                let data = t.data_columns();
                let c = data.choose(rng).expect("data columns");
                let v = literal(rng, c.ty, c.nullable);
                let p = Self::predicate(rng, t);
                format!("UPDATE {} SET {} = {v} WHERE {p}", t.name, c.name)
            }
            7 if t.keyed => {
                self.shifts += 1;
                let p = Self::predicate(rng, t);
                format!(
                    "UPDATE {} SET id = id + {} WHERE {p}",
                    t.name,
                    self.shifts * KEY_STRIDE
                )
            }
            8..=9 => {
                let p = Self::predicate(rng, t);
                format!("DELETE FROM {} WHERE {p}", t.name)
            }
            _ => {
                let p = Self::predicate(rng, t);
                let (compared, selected) = t.row_locator();
                format!(
                    "DELETE FROM {0} WHERE {compared} IN (SELECT {selected} FROM {0} WHERE {p} LIMIT 1)",
                    t.name
                )
            }
        }
    }

    /// A step: 1 to 4 statements, sometimes in a transaction that rolls back.
    pub fn step(&mut self, rng: &mut ChaCha8Rng, schema: &Schema) -> Vec<String> {
        let n = rng.gen_range(1..=4);
        let mut out: Vec<String> = (0..n).map(|_| self.statement(rng, schema)).collect();
        if rng.gen_ratio(1, 8) {
            out.insert(0, "BEGIN".into());
            out.push("ROLLBACK".into());
        }
        out
    }
}
