//! Label selectors: parsing the `labelSelector` query string and metav1.LabelSelector, and
//! matching them against an object's labels.
//!
//! The string syntax is upstream's:
//!
//! ```text
//! selector    ::= requirement ( "," requirement )*
//! requirement ::= [ "!" ] KEY [ ( "=" | "==" | "!=" | ">" | "<" ) VALUE | ( "in" | "notin" ) "(" VALUES ")" ]
//! ```
//!
//! `a` requires the key to exist, `!a` requires it not to; `>`/`<` compare integers. The
//! requirements are kept sorted by key (stable), set values sorted and deduplicated, so that
//! [`LabelSelector`]'s `Display` is the canonical form upstream prints.
//!
//! A selector that is absent (`None`) is *not* handled here: some APIs read a missing
//! `spec.selector` as "select nothing" (e.g. PodDisruptionBudget, NetworkPolicy peers treat it
//! differently), others as "select everything". The caller decides; an empty [`LabelSelector`]
//! (no requirements) always matches everything.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::{Map, Value};

use crate::names;

/// A parse error, with the upstream wording.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// The operator of one requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)`.
    NotIn,
    /// `key=a`.
    Equals,
    /// `key==a`.
    DoubleEquals,
    /// `key!=a`.
    NotEquals,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>5`.
    GreaterThan,
    /// `key<5`.
    LessThan,
}

impl Operator {
    /// The operator's name as upstream's `selection.Operator` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

/// One requirement: a key, an operator and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

/// Quotes a string the way Go's `%q` does (close enough for error messages).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%#v` of a `[]string`.
fn go_string_slice(values: &[String]) -> String {
    if values.is_empty() {
        return "[]string(nil)".to_string();
    }
    let inner = values
        .iter()
        .map(|v| go_quote(v))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[]string{{{inner}}}")
}

/// Upstream's `field.Invalid(path, value, detail).Error()`.
fn invalid(path: &str, quoted_value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {quoted_value}: {detail}")
}

/// Upstream's aggregate of errors: one message as is, several as `[a, b]` (duplicates dropped).
fn aggregate(errs: Vec<String>) -> Option<SelectorError> {
    let mut unique: Vec<String> = Vec::new();
    for e in errs {
        if !unique.contains(&e) {
            unique.push(e);
        }
    }
    match unique.len() {
        0 => None,
        1 => Some(SelectorError(unique.remove(0))),
        _ => Some(SelectorError(format!("[{}]", unique.join(", ")))),
    }
}

fn key_error(path: &str, key: &str) -> Option<String> {
    let errs = names::qualified_name(key);
    if errs.is_empty() {
        None
    } else {
        Some(invalid(path, &go_quote(key), &errs.join("; ")))
    }
}

impl Requirement {
    /// Builds a requirement, validating it as upstream's `NewRequirement` does: the key must be a
    /// qualified name, the values label values; `in`/`notin` need values, `=`/`==`/`!=` exactly
    /// one, `exists`/`!` none, `gt`/`lt` exactly one integer.
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Self, SelectorError> {
        let key = key.into();
        let mut errs = Vec::new();
        if let Some(e) = key_error("key", &key) {
            errs.push(e);
        }
        Self::check_values(&key, operator, &values, &mut errs);
        match aggregate(errs) {
            Some(e) => Err(e),
            None => Ok(Requirement {
                key,
                operator,
                values,
            }),
        }
    }

    fn check_values(key: &str, operator: Operator, values: &[String], errs: &mut Vec<String>) {
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    errs.push(invalid(
                        "values",
                        &go_string_slice(values),
                        "for 'in', 'notin' operators, values set can't be empty",
                    ));
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    errs.push(invalid(
                        "values",
                        &go_string_slice(values),
                        "exact-match compatibility requires one single value",
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    errs.push(invalid(
                        "values",
                        &go_string_slice(values),
                        "values set must be empty for exists and does not exist",
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(invalid(
                        "values",
                        &go_string_slice(values),
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(invalid(
                            &format!("values[{i}]"),
                            &go_quote(v),
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            let problems = names::label_value(v);
            if !problems.is_empty() {
                errs.push(invalid(
                    &format!("values[{i}][{key}]"),
                    &go_quote(v),
                    &problems.join("; "),
                ));
            }
        }
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values (empty for exists / does not exist).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether labels looked up through `get` satisfy the requirement.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                get(&self.key).is_some_and(has)
            }
            Operator::NotIn | Operator::NotEquals => get(&self.key).is_none_or(|v| !has(v)),
            Operator::Exists => get(&self.key).is_some(),
            Operator::DoesNotExist => get(&self.key).is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(actual) = get(&self.key).and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let [wanted] = self.values.as_slice() else {
                    return false;
                };
                let Ok(wanted) = wanted.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > wanted
                } else {
                    actual < wanted
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in (",
            Operator::NotIn => " notin (",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        f.write_str(op)?;
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        f.write_str(&values.join(","))?;
        if matches!(self.operator, Operator::In | Operator::NotIn) {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A parsed label selector: a conjunction of requirements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses the string form (`a=b,c!=d,e in (f,g),!h`). The empty string selects everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser::new(s);
        let mut requirements = parser.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Converts a metav1.LabelSelector: matchLabels become `=` requirements, matchExpressions
    /// `In`/`NotIn`/`Exists`/`DoesNotExist`. A selector with neither matches everything. (A
    /// missing selector is the caller's business: see the module documentation.)
    pub fn from_api(selector: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(labels) = &selector.match_labels {
            for (k, v) in labels {
                requirements.push(Requirement::new(
                    k.clone(),
                    Operator::Equals,
                    vec![v.clone()],
                )?);
            }
        }
        for expr in selector.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError(format!(
                        "{} is not a valid label selector operator",
                        go_quote(other)
                    )));
                }
            };
            requirements.push(Requirement::new(
                expr.key.clone(),
                op,
                expr.values.clone().unwrap_or_default(),
            )?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// A selector requiring exactly these labels (`a=b,c=d`), validated.
    pub fn from_map(labels: &BTreeMap<String, String>) -> Result<Self, SelectorError> {
        let requirements = labels
            .iter()
            .map(|(k, v)| Requirement::new(k.clone(), Operator::Equals, vec![v.clone()]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LabelSelector { requirements })
    }

    /// Adds a requirement, keeping the requirements sorted by key.
    pub fn push(&mut self, requirement: Requirement) {
        let at = self
            .requirements
            .partition_point(|r| r.key <= requirement.key);
        self.requirements.insert(at, requirement);
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether labels looked up through `get` match every requirement.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str> + Copy) -> bool {
        self.requirements.iter().all(|r| r.matches_with(get))
    }

    /// Whether the labels (an object's `metadata.labels`) match. Non-string values count as
    /// absent.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.matches_with(|k| labels.get(k).and_then(Value::as_str))
    }

    /// Whether the labels match.
    pub fn matches_btree(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// Whether the labels of an object (its `metadata.labels`, possibly missing) match.
    pub fn matches_object(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        self.matches_with(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value the selector requires for `key` when its first requirement on that key is an
    /// `=`, `==` or single-valued `in` (upstream's `RequiresExactMatch`).
    pub fn exact(&self, key: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == key)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for LabelSelector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer and parser, following upstream's grammar and error messages.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Error,
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn literal_token(s: &[u8]) -> Option<Token> {
    Some(match s {
        b")" => Token::ClosedPar,
        b"," => Token::Comma,
        b"!" => Token::DoesNotExist,
        b"==" => Token::DoubleEquals,
        b"=" => Token::Equals,
        b">" => Token::GreaterThan,
        b"in" => Token::In,
        b"<" => Token::LessThan,
        b"!=" => Token::NotEquals,
        b"notin" => Token::NotIn,
        b"(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// The next byte, or 0 at the end (a NUL byte reads as the end too, as upstream).
    fn read(&mut self) -> u8 {
        match self.s.as_bytes().get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => 0,
        }
    }

    fn unread(&mut self) {
        self.pos -= 1;
    }

    fn scan_id_or_keyword(&mut self) -> (Token, String) {
        let start = self.pos;
        let mut end;
        loop {
            end = self.pos;
            let c = self.read();
            if c == 0 {
                break;
            }
            if is_special(c) || is_whitespace(c) {
                self.unread();
                break;
            }
        }
        // The split points are ASCII bytes, so the slice is valid UTF-8.
        let text = &self.s[start..end];
        match literal_token(text.as_bytes()) {
            Some(t) => (t, text.to_string()),
            None => (Token::Identifier, text.to_string()),
        }
    }

    fn scan_special(&mut self) -> (Token, String) {
        let mut buffer = Vec::new();
        let mut last: Option<(Token, usize)> = None;
        loop {
            let c = self.read();
            if c == 0 {
                break;
            }
            if !is_special(c) {
                self.unread();
                break;
            }
            buffer.push(c);
            if let Some(t) = literal_token(&buffer) {
                last = Some((t, buffer.len()));
            } else if last.is_some() {
                self.unread();
                break;
            }
        }
        match last {
            Some((t, n)) => (t, String::from_utf8_lossy(&buffer[..n]).into_owned()),
            None => (
                Token::Error,
                format!(
                    "error expected: keyword found '{}'",
                    String::from_utf8_lossy(&buffer)
                ),
            ),
        }
    }

    fn lex(&mut self) -> (Token, String) {
        let mut c = self.read();
        while is_whitespace(c) {
            c = self.read();
        }
        if c == 0 {
            return (Token::End, String::new());
        }
        self.unread();
        if is_special(c) {
            self.scan_special()
        } else {
            self.scan_id_or_keyword()
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

type PResult<T> = Result<T, String>;

impl Parser {
    fn new(s: &str) -> Self {
        let mut lexer = Lexer { s, pos: 0 };
        let mut items = Vec::new();
        loop {
            let item = lexer.lex();
            let end = item.0 == Token::End;
            items.push(item);
            if end {
                break;
            }
        }
        Parser { items, position: 0 }
    }

    fn adjust(tok: Token, ctx: Context) -> Token {
        match (ctx, tok) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier,
            _ => tok,
        }
    }

    fn lookahead(&self, ctx: Context) -> (Token, String) {
        let (t, l) = &self.items[self.position.min(self.items.len() - 1)];
        (Self::adjust(*t, ctx), l.clone())
    }

    fn consume(&mut self, ctx: Context) -> (Token, String) {
        let item = self.lookahead(ctx);
        if self.position < self.items.len() - 1 {
            self.position += 1;
        }
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| SelectorError(format!("unable to parse requirement: {e}")))?;
                    requirements.push(r);
                    let (t, l) = self.consume(Context::Values);
                    match t {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(SelectorError(format!(
                                    "found '{l2}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(SelectorError(format!(
                                "found '{l}', expected: ',' or 'end of string'"
                            )));
                        }
                    }
                }
                Token::End => return Ok(requirements),
                _ => {
                    return Err(SelectorError(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    )));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> PResult<Requirement> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        let (operator, values) = match inferred {
            Some(op) => (op, Vec::new()),
            None => {
                let op = self.parse_operator()?;
                let values = match op {
                    Operator::In | Operator::NotIn => self.parse_values()?,
                    _ => self.parse_exact_value()?,
                };
                (op, values)
            }
        };
        let mut errs = Vec::new();
        Requirement::check_values(&key, operator, &values, &mut errs);
        match aggregate(errs) {
            Some(e) => Err(e.0),
            None => Ok(Requirement {
                key,
                operator,
                values,
            }),
        }
    }

    /// The key, and the operator when it is unary (`!key`, or a bare `key`).
    fn parse_key_and_infer_operator(&mut self) -> PResult<(String, Option<Operator>)> {
        let mut operator = None;
        let (mut tok, mut lit) = self.consume(Context::Values);
        if tok == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        if let Some(e) = key_error("<nil>", &lit) {
            return Err(e);
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::End || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((lit, operator))
    }

    fn parse_operator(&mut self) -> PResult<Operator> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => return Err(format!("found '{lit}', expected: {BINARY_OPERATORS}")),
        })
    }

    fn parse_values(&mut self) -> PResult<Vec<String>> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let set = self.parse_identifiers_list()?;
                let (t, _) = self.consume(Context::Values);
                if t != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(set)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    /// A comma-separated list of possibly empty values, returned sorted and deduplicated.
    fn parse_identifiers_list(&mut self) -> PResult<Vec<String>> {
        let mut set = std::collections::BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    set.insert(lit);
                    let (t2, l2) = self.lookahead(Context::Values);
                    match t2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(set.into_iter().collect()),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    let (t2, _) = self.lookahead(Context::Values);
                    if t2 == Token::ClosedPar {
                        set.insert(String::new());
                        return Ok(set.into_iter().collect());
                    }
                    if t2 == Token::Comma {
                        set.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> PResult<Vec<String>> {
        let (tok, _) = self.lookahead(Context::Values);
        if tok == Token::End || tok == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            Ok(vec![lit])
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> String {
        LabelSelector::parse(s).unwrap_err().0
    }

    #[test]
    fn the_empty_string_selects_everything() {
        let s = sel("");
        assert!(s.is_empty());
        assert!(s.matches(&Map::new()));
        assert_eq!(s.to_string(), "");
        assert!(sel("   ").is_empty());
    }

    #[test]
    fn equals_requires_the_value() {
        let s = sel("app=web");
        assert!(s.matches(&labels(json!({"app": "web"}))));
        assert!(!s.matches(&labels(json!({"app": "db"}))));
        assert!(!s.matches(&Map::new()));
        assert_eq!(s.requirements()[0].operator(), Operator::Equals);
    }

    #[test]
    fn double_equals_is_equals_and_keeps_its_spelling() {
        let s = sel("app==web");
        assert!(s.matches(&labels(json!({"app": "web"}))));
        assert_eq!(s.to_string(), "app==web");
    }

    #[test]
    fn not_equals_matches_other_values_and_missing_keys() {
        let s = sel("app!=web");
        assert!(!s.matches(&labels(json!({"app": "web"}))));
        assert!(s.matches(&labels(json!({"app": "db"}))));
        assert!(s.matches(&Map::new()));
    }

    #[test]
    fn in_requires_one_of_the_values() {
        let s = sel("env in (prod, dev)");
        assert!(s.matches(&labels(json!({"env": "dev"}))));
        assert!(!s.matches(&labels(json!({"env": "qa"}))));
        assert!(!s.matches(&Map::new()));
        assert_eq!(s.to_string(), "env in (dev,prod)");
    }

    #[test]
    fn notin_excludes_the_values_and_matches_missing_keys() {
        let s = sel("env notin (prod)");
        assert!(!s.matches(&labels(json!({"env": "prod"}))));
        assert!(s.matches(&labels(json!({"env": "dev"}))));
        assert!(s.matches(&Map::new()));
    }

    #[test]
    fn a_bare_key_requires_it_to_exist() {
        let s = sel("app");
        assert_eq!(s.requirements()[0].operator(), Operator::Exists);
        assert!(s.matches(&labels(json!({"app": ""}))));
        assert!(!s.matches(&Map::new()));
    }

    #[test]
    fn a_negated_key_requires_it_to_be_absent() {
        let s = sel("!app");
        assert_eq!(s.requirements()[0].operator(), Operator::DoesNotExist);
        assert!(!s.matches(&labels(json!({"app": "x"}))));
        assert!(s.matches(&Map::new()));
        assert_eq!(s.to_string(), "!app");
    }

    #[test]
    fn greater_and_less_than_compare_integers() {
        let s = sel("size>5");
        assert!(s.matches(&labels(json!({"size": "6"}))));
        assert!(!s.matches(&labels(json!({"size": "5"}))));
        assert!(!s.matches(&labels(json!({"size": "big"}))));
        assert!(!s.matches(&Map::new()));
        let s = sel("size<5");
        assert!(s.matches(&labels(json!({"size": "4"}))));
        assert!(!s.matches(&labels(json!({"size": "10"}))));
        assert_eq!(s.to_string(), "size<5");
    }

    #[test]
    fn greater_than_needs_an_integer() {
        assert_eq!(
            err("size>big"),
            "unable to parse requirement: values[0]: Invalid value: \"big\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
    }

    #[test]
    fn requirements_are_a_conjunction_sorted_by_key() {
        let s = sel("z=1 , a in (x),  !m,b");
        assert_eq!(s.to_string(), "a in (x),b,!m,z=1");
        assert!(s.matches(&labels(json!({"a": "x", "b": "", "z": "1"}))));
        assert!(!s.matches(&labels(json!({"a": "x", "b": "", "z": "1", "m": "q"}))));
    }

    #[test]
    fn whitespace_of_every_kind_is_tolerated() {
        let s = sel("\tapp \n=\r web ,  env  notin(a)");
        assert_eq!(s.to_string(), "app=web,env notin (a)");
    }

    #[test]
    fn an_empty_value_is_allowed() {
        assert_eq!(sel("a=").requirements()[0].values(), [""]);
        assert_eq!(sel("a=,b").to_string(), "a=,b");
        assert_eq!(sel("a in ()").requirements()[0].values(), [""]);
        assert_eq!(sel("a in (,b)").requirements()[0].values(), ["", "b"]);
        assert_eq!(sel("a in (b,)").requirements()[0].values(), ["", "b"]);
        assert_eq!(sel("a in (b,,c)").to_string(), "a in (,b,c)");
        assert!(sel("a=").matches(&labels(json!({"a": ""}))));
    }

    #[test]
    fn in_and_notin_may_be_keys_and_values() {
        let s = sel("in in (in,notin),notin");
        assert_eq!(s.to_string(), "in in (in,notin),notin");
        assert!(s.matches(&labels(json!({"in": "notin", "notin": "x"}))));
    }

    #[test]
    fn duplicate_set_values_are_dropped() {
        assert_eq!(sel("a in (b,b,a)").requirements()[0].values(), ["a", "b"]);
    }

    #[test]
    fn prefixed_keys_are_accepted() {
        let s = sel("app.kubernetes.io/name=web");
        assert!(s.matches(&labels(json!({"app.kubernetes.io/name": "web"}))));
    }

    #[test]
    fn an_unknown_operator_is_reported_with_the_list() {
        assert_eq!(
            err("a ! b"),
            "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            err("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
    }

    #[test]
    fn an_unclosed_parenthesis_is_reported() {
        assert_eq!(
            err("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            err("a in (b c)"),
            "unable to parse requirement: found 'c', expected: ',' or ')'"
        );
    }

    #[test]
    fn a_set_without_parenthesis_is_reported() {
        assert_eq!(
            err("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            err("a in (="),
            "unable to parse requirement: found '=', expected: ',', ')' or identifier"
        );
        assert_eq!(
            err("a in (b,=)"),
            "unable to parse requirement: found '=', expected: ',', or identifier"
        );
    }

    #[test]
    fn trailing_or_doubled_commas_are_reported() {
        assert_eq!(err("a,"), "found '', expected: identifier after ','");
        assert_eq!(err("a,,b"), "found ',', expected: identifier after ','");
        assert_eq!(
            err(",a"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
    }

    #[test]
    fn garbage_after_a_requirement_is_reported() {
        assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(err("!a=b"), "found '=', expected: ',' or 'end of string'");
        assert_eq!(
            err("a=(b)"),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(
            err("!"),
            "unable to parse requirement: found '', expected: identifier"
        );
    }

    #[test]
    fn an_invalid_key_is_reported_with_a_nil_path() {
        assert_eq!(
            err("-a=b"),
            "unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
    }

    #[test]
    fn an_invalid_value_is_reported_with_its_key() {
        let e = err("app=-web");
        assert!(
            e.starts_with(
                "unable to parse requirement: values[0][app]: Invalid value: \"-web\": a valid label must be an empty string"
            ),
            "{e}"
        );
        let e = err(&format!("app={}", "a".repeat(64)));
        assert!(e.ends_with("\": must be no more than 63 characters"), "{e}");
        let e = err(&format!("app={}-", "a".repeat(63)));
        assert!(
            e.contains("must be no more than 63 characters; a valid label"),
            "{e}"
        );
    }

    #[test]
    fn several_value_errors_are_aggregated_in_brackets() {
        let e = err("a>b_");
        assert!(
            e.starts_with(
                "unable to parse requirement: [values[0]: Invalid value: \"b_\": for 'Gt'"
            ),
            "{e}"
        );
        assert!(e.contains(", values[0][a]: Invalid value: \"b_\""), "{e}");
        assert!(e.ends_with("]"), "{e}");
    }

    #[test]
    fn a_nul_byte_ends_the_input_as_upstream() {
        assert_eq!(err("a, \0b"), "found '', expected: identifier after ','");
        // A NUL right after a token is swallowed with it, as upstream's lexer does.
        assert_eq!(sel("a,\0b").to_string(), "a,b");
    }

    #[test]
    fn from_api_converts_match_labels_and_expressions() {
        let api: metav1::LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "tier", "operator": "NotIn", "values": ["db"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "app", "operator": "Exists"}
            ]
        }))
        .unwrap();
        let s = LabelSelector::from_api(&api).unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,app,!canary,env in (dev,prod),tier notin (db)"
        );
        assert!(s.matches(&labels(json!({"app": "web", "env": "prod"}))));
        assert!(!s.matches(&labels(json!({"app": "web", "env": "prod", "canary": "1"}))));
        assert_eq!(s.exact("app"), Some("web"));
    }

    #[test]
    fn an_empty_api_selector_matches_everything() {
        let s = LabelSelector::from_api(&metav1::LabelSelector::default()).unwrap();
        assert!(s.is_empty());
        assert!(s.matches(&labels(json!({"x": "y"}))));
    }

    #[test]
    fn from_api_rejects_unknown_operators_and_bad_values() {
        let bad_op: metav1::LabelSelector = serde_json::from_value(json!({
            "matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]
        }))
        .unwrap();
        assert_eq!(
            LabelSelector::from_api(&bad_op).unwrap_err().0,
            "\"Gt\" is not a valid label selector operator"
        );
        let empty_in: metav1::LabelSelector = serde_json::from_value(json!({
            "matchExpressions": [{"key": "a", "operator": "In", "values": []}]
        }))
        .unwrap();
        assert_eq!(
            LabelSelector::from_api(&empty_in).unwrap_err().0,
            "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
        );
        let exists_values: metav1::LabelSelector = serde_json::from_value(json!({
            "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x", "y"]}]
        }))
        .unwrap();
        assert_eq!(
            LabelSelector::from_api(&exists_values).unwrap_err().0,
            "values: Invalid value: []string{\"x\", \"y\"}: values set must be empty for exists and does not exist"
        );
        let bad_key: metav1::LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"a b": "c"}
        }))
        .unwrap();
        assert!(
            LabelSelector::from_api(&bad_key)
                .unwrap_err()
                .0
                .starts_with("key: Invalid value: \"a b\": name part must consist")
        );
    }

    #[test]
    fn exact_returns_single_valued_equality() {
        let s = sel("a=1,b in (2),c in (3,4),d!=5");
        assert_eq!(s.exact("a"), Some("1"));
        assert_eq!(s.exact("b"), Some("2"));
        assert_eq!(s.exact("c"), None);
        assert_eq!(s.exact("d"), None);
        assert_eq!(s.exact("e"), None);
    }

    #[test]
    fn btree_and_object_matching_agree() {
        let s = sel("app=web,!x");
        let mut m = BTreeMap::new();
        m.insert("app".to_string(), "web".to_string());
        assert!(s.matches_btree(&m));
        assert!(s.matches_object(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!s.matches_object(&json!({"metadata": {}})));
        assert!(sel("!x").matches_object(&json!({})));
    }

    #[test]
    fn from_map_and_push_keep_keys_sorted() {
        let mut m = BTreeMap::new();
        m.insert("b".to_string(), "2".to_string());
        m.insert("a".to_string(), "1".to_string());
        let mut s = LabelSelector::from_map(&m).unwrap();
        s.push(Requirement::new("aa", Operator::Exists, vec![]).unwrap());
        assert_eq!(s.to_string(), "a=1,aa,b=2");
    }

    #[test]
    fn go_quote_escapes_like_go() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\x01é\"");
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        (
            proptest::option::of("[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z0-9]{1,4}){0,2}"),
            "[A-Za-z0-9]([A-Za-z0-9_.-]{0,10}[A-Za-z0-9])?",
        )
            .prop_map(|(prefix, name)| match prefix {
                Some(p) => format!("{p}/{name}"),
                None => name,
            })
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        "([A-Za-z0-9]([A-Za-z0-9_.-]{0,10}[A-Za-z0-9])?)?"
    }

    fn requirement_strategy() -> impl Strategy<Value = String> {
        (
            key_strategy(),
            0..9u8,
            proptest::collection::vec(value_strategy(), 1..4),
            -1000i64..1000,
        )
            .prop_map(|(k, op, vals, n)| match op {
                0 => format!("{k}={}", vals[0]),
                1 => format!("{k} == {}", vals[0]),
                2 => format!("{k}!={}", vals[0]),
                3 => format!("{k} in ({})", vals.join(",")),
                4 => format!("{k}  notin ( {} )", vals.join(" , ")),
                5 => k,
                6 => format!("!{k}"),
                7 => format!("{k}>{}", n.abs()),
                _ => format!("{k} < {}", n.abs()),
            })
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic_the_parser(s in ".*") {
            let _ = LabelSelector::parse(&s);
        }

        #[test]
        fn selector_like_strings_never_panic_the_parser(s in "[a-z!=<>(), \\t-]{0,30}") {
            if let Ok(sel) = LabelSelector::parse(&s) {
                let again = LabelSelector::parse(&sel.to_string());
                prop_assert_eq!(again, Ok(sel));
            }
        }

        #[test]
        fn valid_selectors_round_trip_through_display(
            reqs in proptest::collection::vec(requirement_strategy(), 0..5)
        ) {
            let text = reqs.join(",");
            let parsed = LabelSelector::parse(&text);
            prop_assert!(parsed.is_ok(), "{text:?}: {parsed:?}");
            let parsed = parsed.unwrap();
            let printed = parsed.to_string();
            prop_assert_eq!(LabelSelector::parse(&printed), Ok(parsed.clone()));
            prop_assert_eq!(LabelSelector::parse(&printed).unwrap().to_string(), printed);
        }
    }
}
