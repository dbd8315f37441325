//! The slice of XML-RPC that Warehouse's mirror methods use (<https://xmlrpc.com/spec.md>).
//!
//! Hand-written rather than a general XML library: the replies are tag soup with no attributes,
//! and owning the parser lets it refuse hostile input (deep nesting, huge bodies, unknown
//! entities) with one clear error instead of following whatever a library tolerates.

use crate::types::text::shown;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Double(f64),
    Str(String),
    Nil,
    Array(Vec<Value>),
    Struct(Vec<(String, Value)>),
}

#[derive(Debug, thiserror::Error)]
pub enum XmlRpcError {
    #[error("malformed XML-RPC reply: {0}")]
    Malformed(String),
    #[error("XML-RPC fault {code}: {message}")]
    Fault { code: i64, message: String },
}

/// Nesting deeper than any Warehouse reply (array of arrays) is refused, not recursed into.
const MAX_DEPTH: usize = 16;
/// The most text a number (`<int>`, `<double>`, `<boolean>`) may hold, whitespace included.
const NUMBER_TEXT: usize = 64;

pub fn method_call(method: &str, params: &[Value]) -> String {
    let mut out =
        format!("<?xml version=\"1.0\"?>\n<methodCall><methodName>{method}</methodName><params>");
    for p in params {
        out.push_str("<param>");
        write_value(&mut out, p);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>\n");
    out
}

fn write_value(out: &mut String, v: &Value) {
    out.push_str("<value>");
    match v {
        Value::Int(i) => out.push_str(&format!("<int>{i}</int>")),
        Value::Bool(b) => out.push_str(&format!("<boolean>{}</boolean>", u8::from(*b))),
        Value::Double(d) => out.push_str(&format!("<double>{d}</double>")),
        Value::Str(s) => {
            out.push_str("<string>");
            out.push_str(
                &s.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;"),
            );
            out.push_str("</string>");
        }
        Value::Nil => out.push_str("<nil/>"),
        Value::Array(items) => {
            out.push_str("<array><data>");
            items.iter().for_each(|i| write_value(out, i));
            out.push_str("</data></array>");
        }
        Value::Struct(members) => {
            out.push_str("<struct>");
            for (k, v) in members {
                out.push_str(&format!("<member><name>{k}</name>"));
                write_value(out, v);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
    }
    out.push_str("</value>");
}

/// Parse a `<methodResponse>`: the single returned value, or the fault it carries.
pub fn parse_response(body: &str) -> Result<Value, XmlRpcError> {
    let mut p = Parser {
        tokens: Tokens { s: body, pos: 0 },
        peeked: None,
    };
    p.open("methodResponse")?;
    let tag = p.next_open()?;
    match tag.as_str() {
        "params" => {
            p.open("param")?;
            let v = p.value(0)?;
            p.close("param")?;
            p.close("params")?;
            p.close("methodResponse")?;
            Ok(v)
        }
        "fault" => {
            let v = p.value(0)?;
            let field = |name: &str| match &v {
                Value::Struct(m) => m.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
                _ => None,
            };
            let code = match field("faultCode") {
                Some(Value::Int(c)) => c,
                _ => 0,
            };
            let message = match field("faultString") {
                Some(Value::Str(s)) => s,
                _ => String::from("(no message)"),
            };
            Err(XmlRpcError::Fault {
                code,
                message: shown(&message),
            })
        }
        other => Err(malformed(format!("unexpected <{other}> in methodResponse"))),
    }
}

/// Every message quoting upstream's XML goes through [`shown`]: cut, control characters
/// escaped.
fn malformed(s: impl Into<String>) -> XmlRpcError {
    XmlRpcError::Malformed(shown(&s.into()))
}

#[derive(Debug, PartialEq)]
enum Token {
    Open(String),
    Close(String),
    Empty(String),
    Text(String),
}

struct Tokens<'a> {
    s: &'a str,
    pos: usize,
}

impl Tokens<'_> {
    fn next(&mut self) -> Result<Option<Token>, XmlRpcError> {
        loop {
            let rest = &self.s[self.pos..];
            if rest.is_empty() {
                return Ok(None);
            }
            if let Some(after) = rest.strip_prefix('<') {
                if after.starts_with('?') || after.starts_with("!--") {
                    let end = if after.starts_with('?') { "?>" } else { "-->" };
                    let close = rest
                        .find(end)
                        .ok_or_else(|| malformed("unterminated declaration or comment"))?;
                    self.pos += close + end.len();
                    continue;
                }
                let close = rest
                    .find('>')
                    .ok_or_else(|| malformed("unterminated tag"))?;
                let inner = &rest[1..close];
                self.pos += close + 1;
                return Ok(Some(if let Some(name) = inner.strip_prefix('/') {
                    Token::Close(name.trim().to_owned())
                } else if let Some(name) = inner.strip_suffix('/') {
                    Token::Empty(name.trim().to_owned())
                } else {
                    Token::Open(inner.trim().to_owned())
                }));
            }
            let end = rest.find('<').unwrap_or(rest.len());
            self.pos += end;
            return Ok(Some(Token::Text(unescape(&rest[..end])?)));
        }
    }
}

fn unescape(raw: &str) -> Result<String, XmlRpcError> {
    if !raw.contains('&') {
        return Ok(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..]
            .find(';')
            .ok_or_else(|| malformed("unterminated entity"))?
            + amp;
        let entity = &rest[amp + 1..semi];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| malformed(format!("unknown entity &{entity};")))?
            }
        };
        out.push(c);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

struct Parser<'a> {
    tokens: Tokens<'a>,
    peeked: Option<Token>,
}

impl Parser<'_> {
    /// Next token that is not inter-element whitespace.
    fn next(&mut self) -> Result<Token, XmlRpcError> {
        loop {
            let t = match self.peeked.take() {
                Some(t) => t,
                None => self
                    .tokens
                    .next()?
                    .ok_or_else(|| malformed("reply ends early"))?,
            };
            match &t {
                Token::Text(s) if s.trim().is_empty() => continue,
                _ => return Ok(t),
            }
        }
    }

    fn peek(&mut self) -> Result<&Token, XmlRpcError> {
        if self.peeked.is_none() {
            let t = self.next()?;
            self.peeked = Some(t);
        }
        Ok(self.peeked.as_ref().expect("just filled"))
    }

    fn next_open(&mut self) -> Result<String, XmlRpcError> {
        match self.next()? {
            Token::Open(n) => Ok(n),
            t => Err(malformed(format!("expected an opening tag, found {t:?}"))),
        }
    }

    fn open(&mut self, name: &str) -> Result<(), XmlRpcError> {
        match self.next()? {
            Token::Open(n) if n == name => Ok(()),
            t => Err(malformed(format!("expected <{name}>, found {t:?}"))),
        }
    }

    fn close(&mut self, name: &str) -> Result<(), XmlRpcError> {
        match self.next()? {
            Token::Close(n) if n == name => Ok(()),
            t => Err(malformed(format!("expected </{name}>, found {t:?}"))),
        }
    }

    /// Text up to the closing tag, keeping whitespace (it is significant in strings).
    fn text_until(&mut self, name: &str) -> Result<String, XmlRpcError> {
        self.text_within(name, usize::MAX)
    }

    /// A number's text: at most `NUMBER_TEXT` bytes, so a crafted 200 MB `<int>` is refused
    /// without being copied again or echoed.
    fn number_text(&mut self, name: &str) -> Result<String, XmlRpcError> {
        self.text_within(name, NUMBER_TEXT)
    }

    fn text_within(&mut self, name: &str, limit: usize) -> Result<String, XmlRpcError> {
        let mut text = String::new();
        loop {
            let t = match self.peeked.take() {
                Some(t) => t,
                None => self
                    .tokens
                    .next()?
                    .ok_or_else(|| malformed("reply ends early"))?,
            };
            match t {
                Token::Text(s) if text.len() + s.len() > limit => {
                    return Err(malformed(format!(
                        "<{name}> holds {} bytes or more, more than a number can",
                        text.len() + s.len()
                    )));
                }
                Token::Text(s) => text.push_str(&s),
                Token::Close(n) if n == name => return Ok(text),
                t => return Err(malformed(format!("expected text in <{name}>, found {t:?}"))),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, XmlRpcError> {
        if depth > MAX_DEPTH {
            return Err(malformed("values nested too deeply"));
        }
        match self.next()? {
            Token::Empty(n) if n == "value" => return Ok(Value::Str(String::new())),
            Token::Open(n) if n == "value" => {}
            t => return Err(malformed(format!("expected <value>, found {t:?}"))),
        }
        // An untyped value is a string; whitespace inside it is content.
        let first = match self.peeked.take() {
            Some(t) => t,
            None => self
                .tokens
                .next()?
                .ok_or_else(|| malformed("reply ends early"))?,
        };
        let typed = match first {
            Token::Close(n) if n == "value" => return Ok(Value::Str(String::new())),
            Token::Text(s) => match self.tokens.next()? {
                Some(Token::Close(n)) if n == "value" => return Ok(Value::Str(s)),
                Some(Token::Open(n)) if s.trim().is_empty() => Token::Open(n),
                Some(Token::Empty(n)) if s.trim().is_empty() => Token::Empty(n),
                t => return Err(malformed(format!("unexpected {t:?} in <value>"))),
            },
            t => t,
        };
        let v = match typed {
            Token::Empty(n) if n == "nil" => Value::Nil,
            Token::Empty(n) if n == "string" => Value::Str(String::new()),
            Token::Open(n) => match n.as_str() {
                "int" | "i4" | "i8" => {
                    let t = self.number_text(&n)?;
                    Value::Int(
                        t.trim()
                            .parse()
                            .map_err(|_| malformed(format!("bad integer {t:?}")))?,
                    )
                }
                "boolean" => match self.number_text(&n)?.trim() {
                    "1" => Value::Bool(true),
                    "0" => Value::Bool(false),
                    t => return Err(malformed(format!("bad boolean {t:?}"))),
                },
                "double" => {
                    let t = self.number_text(&n)?;
                    Value::Double(
                        t.trim()
                            .parse()
                            .map_err(|_| malformed(format!("bad double {t:?}")))?,
                    )
                }
                "string" | "dateTime.iso8601" | "base64" => Value::Str(self.text_until(&n)?),
                "nil" => {
                    self.close("nil")?;
                    Value::Nil
                }
                "array" => {
                    match self.next()? {
                        Token::Empty(d) if d == "data" => {
                            self.close("array")?;
                            return self.end_value(Value::Array(Vec::new()));
                        }
                        Token::Open(d) if d == "data" => {}
                        t => return Err(malformed(format!("expected <data>, found {t:?}"))),
                    }
                    let mut items = Vec::new();
                    while !matches!(self.peek()?, Token::Close(n) if n == "data") {
                        items.push(self.value(depth + 1)?);
                    }
                    self.close("data")?;
                    self.close("array")?;
                    Value::Array(items)
                }
                "struct" => {
                    let mut members = Vec::new();
                    while !matches!(self.peek()?, Token::Close(n) if n == "struct") {
                        self.open("member")?;
                        self.open("name")?;
                        let name = self.text_until("name")?;
                        let v = self.value(depth + 1)?;
                        self.close("member")?;
                        members.push((name, v));
                    }
                    self.close("struct")?;
                    Value::Struct(members)
                }
                other => return Err(malformed(format!("unknown type <{other}>"))),
            },
            t => return Err(malformed(format!("unexpected {t:?} in <value>"))),
        };
        self.end_value(v)
    }

    fn end_value(&mut self, v: Value) -> Result<Value, XmlRpcError> {
        self.close("value")?;
        Ok(v)
    }
}

/// `list_packages_with_serial` → (display name, serial) pairs (a list, not a map: at 740k
/// projects the hash table alone would be tens of MB more, for lookups nobody makes).
pub fn as_name_serials(v: Value) -> Result<Vec<(String, u64)>, XmlRpcError> {
    let Value::Struct(members) = v else {
        return Err(malformed(
            "list_packages_with_serial did not return a struct",
        ));
    };
    members
        .into_iter()
        .map(|(name, v)| match v {
            Value::Int(s) if s >= 0 => Ok((name, s as u64)),
            other => Err(malformed(format!("serial of {name:?} is {other:?}"))),
        })
        .collect()
}

/// One `changelog_since_serial` row: `[name, version, timestamp, action, serial]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangelogRow {
    pub name: String,
    pub version: Option<String>,
    pub action: String,
    pub serial: u64,
}

pub fn as_changelog(v: Value) -> Result<Vec<ChangelogRow>, XmlRpcError> {
    let Value::Array(rows) = v else {
        return Err(malformed("changelog_since_serial did not return an array"));
    };
    rows.into_iter()
        .map(|row| match row {
            Value::Array(fields) => match <[Value; 5]>::try_from(fields) {
                Ok(
                    [
                        Value::Str(name),
                        version,
                        _timestamp,
                        action,
                        Value::Int(serial),
                    ],
                ) if serial >= 0 => Ok(ChangelogRow {
                    name,
                    version: match version {
                        Value::Str(s) => Some(s),
                        _ => None,
                    },
                    action: match action {
                        Value::Str(s) => s,
                        _ => String::new(),
                    },
                    serial: serial as u64,
                }),
                Ok(other) => Err(malformed(format!("bad changelog row {other:?}"))),
                Err(fields) => Err(malformed(format!(
                    "changelog row has {} fields, not 5",
                    fields.len()
                ))),
            },
            other => Err(malformed(format!("changelog row is {other:?}"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_python_style_changelog() {
        let body = r#"<?xml version='1.0'?>
<methodResponse>
<params>
<param>
<value><array><data>
<value><array><data>
<value><string>Foo_Bar</string></value>
<value><string>1.0</string></value>
<value><int>1700000000</int></value>
<value><string>add py3 file foo_bar-1.0-py3-none-any.whl</string></value>
<value><int>42</int></value>
</data></array></value>
<value><array><data>
<value>a &amp; b &#60;x&#x3E;</value>
<value><nil/></value>
<value><int>1700000001</int></value>
<value><string>create</string></value>
<value><i4>43</i4></value>
</data></array></value>
</data></array></value>
</param>
</params>
</methodResponse>
"#;
        let rows = as_changelog(parse_response(body).unwrap()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "Foo_Bar");
        assert_eq!(rows[0].version.as_deref(), Some("1.0"));
        assert_eq!(rows[0].serial, 42);
        assert_eq!(rows[1].name, "a & b <x>");
        assert_eq!(rows[1].version, None);
        assert_eq!(rows[1].serial, 43);
    }

    #[test]
    fn parses_a_listing_and_round_trips_our_own_encoding() {
        let listing = Value::Struct(vec![
            ("A".into(), Value::Int(7)),
            ("b.c".into(), Value::Int(9)),
        ]);
        let body = method_call("x", std::slice::from_ref(&listing))
            .replace("methodCall><methodName>x</methodName>", "methodResponse>")
            .replace("</methodCall>", "</methodResponse>");
        let listed = as_name_serials(parse_response(&body).unwrap()).unwrap();
        assert_eq!(listed, vec![("A".to_string(), 7), ("b.c".to_string(), 9)]);
    }

    #[test]
    fn reports_faults_and_refuses_hostile_input() {
        let fault = "<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>-32500</int></value></member><member><name>faultString</name><value><string>nope</string></value></member></struct></value></fault></methodResponse>";
        assert!(matches!(
            parse_response(fault),
            Err(XmlRpcError::Fault { code: -32500, .. })
        ));
        let deep = format!(
            "<methodResponse><params><param>{}{}</param></params></methodResponse>",
            "<value><array><data>".repeat(100),
            "</data></array></value>".repeat(100)
        );
        assert!(parse_response(&deep).is_err());
        assert!(parse_response("<methodResponse><params>").is_err());
        assert!(parse_response("not xml at all").is_err());
        assert!(parse_response("<methodResponse><params><param><value>&bogus;</value></param></params></methodResponse>").is_err());
        // A huge number is refused in a message of bounded size, not echoed.
        let huge = format!(
            "<methodResponse><params><param><value><int>{}</int></value></param></params></methodResponse>",
            "9".repeat(1 << 20)
        );
        let err = parse_response(&huge).unwrap_err().to_string();
        assert!(
            err.len() < 200 && err.contains("more than a number"),
            "{err}"
        );
        let padded = "<methodResponse><params><param><value><int>  42  </int></value></param></params></methodResponse>";
        assert_eq!(parse_response(padded).unwrap(), Value::Int(42));
    }
}
