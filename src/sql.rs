//! The bottom floor every stage may use: the SQL dialect sqlora speaks, a result's values and
//! a result set. Plain data with display rules; it imports nothing of sqlora's own.
//!
//! Never connects, parses or runs anything (that is `db`'s and `guard`'s job).

/// The SQL dialects sqlora speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SQLite",
            Dialect::Postgres => "PostgreSQL",
            Dialect::MySql => "MySQL",
        }
    }
}

/// One cell of a result. Types without a variant of their own (dates, times, intervals, json,
/// arrays, uuid, enums) arrive as the database's own text rendering.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// An exact numeric (DECIMAL/NUMERIC, unsigned 64-bit) in its decimal text, never rounded.
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
}

impl Value {
    /// Display text (NULL as `NULL`, bytes as hex).
    pub fn display(&self) -> String {
        match self {
            Value::Null => "NULL".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Decimal(d) => d.clone(),
            Value::Float(f) => format_float(*f),
            Value::Text(s) => s.clone(),
            Value::Bytes(b) => {
                let hex: String = b.iter().take(32).map(|x| format!("{x:02x}")).collect();
                if b.len() > 32 {
                    format!("\\x{hex}… ({} bytes)", b.len())
                } else {
                    format!("\\x{hex}")
                }
            }
        }
    }
}

fn format_float(f: f64) -> String {
    if f.is_finite() && f == f.trunc() && f.abs() < 1e15 {
        format!("{f:.1}")
    } else {
        let s = format!("{f}");
        s
    }
}

/// The result of a statement or a shell command: what every renderer takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// True when more rows existed than the row cap allowed.
    pub truncated: bool,
}

impl std::str::FromStr for Dialect {
    type Err = String;

    /// Accepts the display names and the usual spellings, in any case: `sqlite`,
    /// `postgres`/`postgresql`, `mysql`/`mariadb`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sqlite" | "sqlite3" => Ok(Dialect::Sqlite),
            "postgres" | "postgresql" | "pg" => Ok(Dialect::Postgres),
            "mysql" | "mariadb" => Ok(Dialect::MySql),
            other => Err(format!(
                "unknown SQL dialect `{other}` (use sqlite, postgres or mysql)"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Dialect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Dialect {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_names_round_trip() {
        for d in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
            assert_eq!(d.name().parse::<Dialect>(), Ok(d));
        }
        assert_eq!("MariaDB".parse::<Dialect>(), Ok(Dialect::MySql));
        assert!("oracle".parse::<Dialect>().is_err());
    }
}
