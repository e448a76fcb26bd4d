//! Label selectors: the `labelSelector` string syntax and metav1.LabelSelector, matched
//! against an object's labels. Shared by the API server's lists and watches and, later, the
//! controllers and the scheduler.
//!
//! Syntax: requirements separated by commas, each `key`, `!key`, `key=value`, `key==value`,
//! `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key>n` or `key<n`; all must hold.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::{Map, Value};

use crate::names;

/// A selector that could not be parsed, with the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// The operator of one requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `=` or `==`.
    Equals,
    /// `!=`.
    NotEquals,
    /// `in (...)`.
    In,
    /// `notin (...)`.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>n`.
    GreaterThan,
    /// `key<n`.
    LessThan,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub operator: Operator,
    /// The values (one for equality and comparisons, none for existence).
    pub values: BTreeSet<String>,
}

impl Requirement {
    fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        let errs = names::qualified_name(key);
        if !errs.is_empty() {
            return Err(SelectorError(format!(
                "key: Invalid value: {key:?}: {}",
                errs.join("; ")
            )));
        }
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(SelectorError("values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty".into()));
            }
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                return Err(SelectorError(
                    "values: Invalid value: exact-match compatibility requires one single value"
                        .into(),
                ));
            }
            Operator::GreaterThan | Operator::LessThan
                if values.len() != 1 || values[0].parse::<i64>().is_err() =>
            {
                return Err(SelectorError(format!(
                    "values[0]: Invalid value: {:?}: for 'Gt', 'Lt' operators, the value must be an integer",
                    values.first().cloned().unwrap_or_default()
                )));
            }
            _ => {}
        }
        if !matches!(operator, Operator::GreaterThan | Operator::LessThan) {
            for v in &values {
                let errs = names::label_value(v);
                if !errs.is_empty() {
                    return Err(SelectorError(format!(
                        "values[0][{key}]: Invalid value: {v:?}: {}",
                        errs.join("; ")
                    )));
                }
            }
        }
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values: values.into_iter().collect(),
        })
    }

    fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        let value = get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(&v)),
            Operator::NotEquals | Operator::NotIn => {
                value.is_none_or(|v| !self.values.contains(&v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(v), Some(limit)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|l| l.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    v > limit
                } else {
                    v < limit
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.iter().next().map(String::as_str).unwrap_or("");
        let list = self.values.iter().cloned().collect::<Vec<_>>().join(",");
        match self.operator {
            Operator::Equals => write!(f, "{}={first}", self.key),
            Operator::NotEquals => write!(f, "{}!={first}", self.key),
            Operator::In => write!(f, "{} in ({list})", self.key),
            Operator::NotIn => write!(f, "{} notin ({list})", self.key),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::GreaterThan => write!(f, "{}>{first}", self.key),
            Operator::LessThan => write!(f, "{}<{first}", self.key),
        }
    }
}

/// A parsed label selector: every requirement must hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Open,
    Close,
    Comma,
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
}

fn tokenize(s: &str) -> Result<Vec<Token>, SelectorError> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '(' => (out.push(Token::Open), i += 1).1,
            ')' => (out.push(Token::Close), i += 1).1,
            ',' => (out.push(Token::Comma), i += 1).1,
            '>' => (out.push(Token::Gt), i += 1).1,
            '<' => (out.push(Token::Lt), i += 1).1,
            '!' if next == Some('=') => (out.push(Token::NotEq), i += 2).1,
            '!' => (out.push(Token::Not), i += 1).1,
            '=' if next == Some('=') => (out.push(Token::DoubleEq), i += 2).1,
            '=' => (out.push(Token::Eq), i += 1).1,
            _ => {
                let start = i;
                while i < chars.len() && !" \t\n(),!=<>".contains(chars[i]) {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn word(&mut self, what: &str) -> Result<String, SelectorError> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w),
            other => Err(SelectorError(format!(
                "found '{}', expected: {what}",
                describe(other.as_ref())
            ))),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek() == Some(&Token::Not) {
            self.next();
            let key = self.word("identifier after '!'")?;
            return Requirement::new(&key, Operator::DoesNotExist, vec![]);
        }
        let key = self.word("identifier")?;
        let op = match self.peek() {
            None | Some(Token::Comma) => return Requirement::new(&key, Operator::Exists, vec![]),
            Some(Token::Eq | Token::DoubleEq) => Operator::Equals,
            Some(Token::NotEq) => Operator::NotEquals,
            Some(Token::Gt) => Operator::GreaterThan,
            Some(Token::Lt) => Operator::LessThan,
            Some(Token::Word(w)) if w == "in" => Operator::In,
            Some(Token::Word(w)) if w == "notin" => Operator::NotIn,
            other => {
                return Err(SelectorError(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    describe(other)
                )));
            }
        };
        self.next();
        let values = match op {
            Operator::In | Operator::NotIn => {
                if self.next() != Some(Token::Open) {
                    return Err(SelectorError(
                        "found no '(', expected: '(' after 'in' or 'notin'".into(),
                    ));
                }
                let mut values = Vec::new();
                loop {
                    match self.next() {
                        Some(Token::Word(w)) => {
                            values.push(w);
                            match self.next() {
                                Some(Token::Comma) => continue,
                                Some(Token::Close) => break,
                                other => {
                                    return Err(SelectorError(format!(
                                        "found '{}', expected: ',' or ')'",
                                        describe(other.as_ref())
                                    )));
                                }
                            }
                        }
                        Some(Token::Close) if values.is_empty() => break,
                        Some(Token::Comma) => values.push(String::new()),
                        other => {
                            return Err(SelectorError(format!(
                                "found '{}', expected: ',', ')' or identifier",
                                describe(other.as_ref())
                            )));
                        }
                    }
                }
                values
            }
            _ => match self.peek() {
                Some(Token::Word(_)) => vec![self.word("value")?],
                _ => vec![String::new()],
            },
        };
        Requirement::new(&key, op, values)
    }
}

fn describe(t: Option<&Token>) -> String {
    match t {
        None => "end of string".into(),
        Some(Token::Word(w)) => w.clone(),
        Some(Token::Open) => "(".into(),
        Some(Token::Close) => ")".into(),
        Some(Token::Comma) => ",".into(),
        Some(Token::Not) => "!".into(),
        Some(Token::Eq) => "=".into(),
        Some(Token::DoubleEq) => "==".into(),
        Some(Token::NotEq) => "!=".into(),
        Some(Token::Gt) => ">".into(),
        Some(Token::Lt) => "<".into(),
    }
}

/// Where a selector reads labels from.
pub trait Labels {
    /// The value of a label.
    fn label(&self, key: &str) -> Option<String>;
}

impl Labels for Map<String, Value> {
    fn label(&self, key: &str) -> Option<String> {
        self.get(key).and_then(Value::as_str).map(String::from)
    }
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

impl LabelSelector {
    /// Parses the string form.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser {
            tokens: tokenize(s)?,
            pos: 0,
        };
        let mut requirements = Vec::new();
        if parser.tokens.is_empty() {
            return Ok(Self::default());
        }
        loop {
            requirements.push(parser.requirement()?);
            match parser.next() {
                None => break,
                Some(Token::Comma) => continue,
                other => {
                    return Err(SelectorError(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        describe(other.as_ref())
                    )));
                }
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// Converts a metav1.LabelSelector. An empty one selects everything; callers that treat a
    /// missing selector as "nothing" decide that themselves.
    pub fn from_api(sel: &meta::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::new(k, Operator::Equals, vec![v.clone()])?);
        }
        for expr in sel.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            };
            let values = expr.values.clone().unwrap_or_default();
            if matches!(op, Operator::Exists | Operator::DoesNotExist) && !values.is_empty() {
                return Err(SelectorError(
                    "values: Invalid value: values set must be empty for exists and does not exist"
                        .into(),
                ));
            }
            requirements.push(Requirement::new(&expr.key, op, values)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &impl Labels) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches(&|k| labels.label(k)))
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        write!(f, "{}", parts.join(","))
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

    #[test]
    fn every_operator_matches_as_upstream() {
        let l = labels(json!({"app": "web", "tier": "front", "n": "5"}));
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "app in (web,db)",
            "app notin (db)",
            "app",
            "!missing",
            "n>3",
            "n<6",
            "app=web,tier=front",
            "missing!=x",
            "missing notin (a)",
        ];
        for s in yes {
            assert!(
                LabelSelector::parse(s).unwrap().matches(&l),
                "{s} should match"
            );
        }
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "app notin (web)",
            "missing",
            "!app",
            "n>5",
            "n<5",
            "missing in (a)",
            "app=web,tier=back",
        ];
        for s in no {
            assert!(
                !LabelSelector::parse(s).unwrap().matches(&l),
                "{s} should not match"
            );
        }
    }

    #[test]
    fn whitespace_is_tolerated_and_display_is_canonical() {
        let s = LabelSelector::parse("  app  in ( web , db ),  !x , tier = front ").unwrap();
        assert_eq!(s.to_string(), "app in (db,web),!x,tier=front");
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for bad in [
            "app in (web",
            "app in web",
            "=web",
            "app=web,",
            "app===web",
            "Bad Key=x",
            "app=-bad",
            "n>x",
            "app in ()",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn api_selectors_convert() {
        let sel: meta::LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}, {"key": "canary", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        let s = LabelSelector::from_api(&sel).unwrap();
        assert!(s.matches(&labels(json!({"app": "web", "tier": "front"}))));
        assert!(!s.matches(&labels(
            json!({"app": "web", "tier": "front", "canary": "1"})
        )));
        assert!(
            LabelSelector::from_api(&meta::LabelSelector::default())
                .unwrap()
                .is_empty()
        );
        let bad: meta::LabelSelector =
            serde_json::from_value(json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}))
                .unwrap();
        assert!(LabelSelector::from_api(&bad).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,60}") {
            let _ = LabelSelector::parse(&s);
        }

        #[test]
        fn generated_selectors_round_trip(keys in prop::collection::vec("[a-z]{1,6}", 1..4), vals in prop::collection::vec("[a-z0-9]{1,6}", 1..4), op in 0usize..6) {
            let parts: Vec<String> = keys.iter().zip(vals.iter().cycle()).map(|(k, v)| match op {
                0 => format!("{k}={v}"),
                1 => format!("{k}!={v}"),
                2 => format!("{k} in ({v})"),
                3 => format!("{k} notin ({v})"),
                4 => k.clone(),
                _ => format!("!{k}"),
            }).collect();
            let parsed = LabelSelector::parse(&parts.join(",")).unwrap();
            let again = LabelSelector::parse(&parsed.to_string()).unwrap();
            prop_assert_eq!(parsed, again);
        }
    }
}
