//! Small helpers for writing SQL text safely.

/// Quote an identifier the way PostgreSQL's `quote_ident` does: leave plain
/// lower-case names alone, double-quote everything else.
pub fn quote_ident(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !is_reserved(name);
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Quote a string literal (standard_conforming_strings on).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A conservative subset of PostgreSQL's reserved key words.
fn is_reserved(name: &str) -> bool {
    const RESERVED: &[&str] = &[
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "asymmetric",
        "both",
        "case",
        "cast",
        "check",
        "collate",
        "column",
        "constraint",
        "create",
        "current_catalog",
        "current_date",
        "current_role",
        "current_time",
        "current_timestamp",
        "current_user",
        "default",
        "deferrable",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "fetch",
        "for",
        "foreign",
        "from",
        "grant",
        "group",
        "having",
        "in",
        "initially",
        "intersect",
        "into",
        "lateral",
        "leading",
        "limit",
        "localtime",
        "localtimestamp",
        "not",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "placing",
        "primary",
        "references",
        "returning",
        "select",
        "session_user",
        "some",
        "symmetric",
        "table",
        "then",
        "to",
        "trailing",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "variadic",
        "when",
        "where",
        "window",
        "with",
        "user",
        "left",
        "right",
        "join",
        "inner",
        "outer",
        "full",
        "cross",
        "natural",
        "is",
        "isnull",
        "notnull",
        "like",
        "ilike",
        "similar",
        "between",
        "over",
        "verbose",
        "freeze",
        "binary",
        "concurrently",
        "tablesample",
        "authorization",
    ];
    RESERVED.contains(&name)
}

/// Split a possibly schema-qualified name like `s.t` or `"My S"."T"` into
/// (schema, name), folding unquoted parts to lower case as PostgreSQL does.
pub fn split_qualified_name(input: &str) -> Option<(Option<String>, String)> {
    let mut parts = Vec::new();
    let mut chars = input.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_alphanumeric() || c == '_' || c == '$') {
                    return None;
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            return None;
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => continue,
            Some(_) => return None,
        }
    }
    match parts.len() {
        1 => Some((None, parts.pop()?)),
        2 => {
            let name = parts.pop()?;
            Some((parts.pop(), name))
        }
        _ => None,
    }
}

/// A stable 64-bit FNV-1a hash of `text`, as 16 hex digits. The same text
/// hashes the same on every platform and in every release.
pub fn stable_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Parse an expression the engine generated itself (a failure is a bug).
pub(crate) fn parse_expr(text: &str) -> sqlparser::ast::Expr {
    sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .expect("generated expression parses")
}

/// Parse a FROM list the generator wrote (`a CROSS JOIN b LEFT JOIN ...`).
pub(crate) fn parse_from(text: &str) -> Vec<sqlparser::ast::TableWithJoins> {
    let query = sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
        .try_with_sql(&format!("SELECT 1 FROM {text}"))
        .and_then(|mut p| p.parse_query())
        .expect("generated FROM list parses");
    match *query.body {
        sqlparser::ast::SetExpr::Select(select) => select.from,
        _ => unreachable!("a SELECT parses as one"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_fnv1a() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(stable_hash(""), "cbf29ce484222325");
        assert_eq!(stable_hash("a"), "af63dc4c8601ec8c");
        assert_eq!(stable_hash("foobar"), "85944171f73967e8");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("abc"), "abc");
        assert_eq!(quote_ident("Abc"), "\"Abc\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("select"), "\"select\"");
        assert_eq!(quote_ident("1x"), "\"1x\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn splitting() {
        assert_eq!(split_qualified_name("t"), Some((None, "t".into())));
        assert_eq!(
            split_qualified_name("S.T"),
            Some((Some("s".into()), "t".into()))
        );
        assert_eq!(
            split_qualified_name("\"My S\".\"T\"\"x\""),
            Some((Some("My S".into()), "T\"x".into()))
        );
        assert_eq!(split_qualified_name("a.b.c"), None);
        assert_eq!(split_qualified_name("a b"), None);
        assert_eq!(split_qualified_name(""), None);
    }
}
