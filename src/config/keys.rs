//! The key tables of `mirror.toml`: typed access to one table's keys, with errors that name
//! the table, the key and the value wanted.

use std::time::Duration;

use toml::{Table, Value};

/// Typed access to one table's keys with errors that name the table, the key and the
/// expected value.
pub struct Keys<'a>(pub &'static str, pub &'a Table);

impl Keys<'_> {
    pub fn wrong(&self, key: &str, want: &str) -> String {
        format!(
            "[{}] {key} = {} is not {want}; fix the value",
            self.0, self.1[key]
        )
    }

    pub fn string(&self, key: &str) -> Result<Option<String>, String> {
        match self.1.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(key, "a string (put it in quotes)")),
        }
    }

    /// Host names: lowercase.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        let hosts = self.string_list(key, "[\"files.example.org\"]")?;
        Ok(hosts.map(|h| h.iter().map(|s| s.to_ascii_lowercase()).collect()))
    }

    /// A list of strings as written; `example` shows one in the error.
    pub fn string_list(&self, key: &str, example: &str) -> Result<Option<Vec<String>>, String> {
        let want = || self.wrong(key, &format!("a list of strings, e.g. {example}"));
        match self.1.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(want),
            Some(_) => Err(want()),
        }
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>, String> {
        match self.1.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong(key, "true or false")),
        }
    }

    pub fn integer(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, String> {
        match self.1.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) if (min..=max).contains(i) => Ok(Some(*i)),
            Some(_) => Err(self.wrong(key, &format!("a whole number from {min} to {max}"))),
        }
    }

    pub fn number(&self, key: &str, min: f64, max: f64) -> Result<Option<f64>, String> {
        let n = match self.1.get(key) {
            None => return Ok(None),
            Some(Value::Integer(i)) => *i as f64,
            Some(Value::Float(f)) => *f,
            Some(_) => return Err(self.wrong(key, &format!("a number from {min} to {max}"))),
        };
        if !(min..=max).contains(&n) {
            return Err(self.wrong(key, &format!("a number from {min} to {max}")));
        }
        Ok(Some(n))
    }

    pub fn seconds(&self, key: &str) -> Result<Option<Duration>, String> {
        let secs = match self.1.get(key) {
            None => return Ok(None),
            Some(Value::Integer(i)) => *i as f64,
            Some(Value::Float(f)) => *f,
            Some(_) => return Err(self.wrong(key, "a number of seconds")),
        };
        if !(0.0..=86_400.0).contains(&secs) {
            return Err(self.wrong(key, "a number of seconds from 0 to 86400"));
        }
        Ok(Some(Duration::from_secs_f64(secs)))
    }
}
