//! The synchronous quorum: which followers must hold a record before it counts as replicated,
//! written like PostgreSQL's `synchronous_standby_names`.
//!
//! # Syntax
//!
//! ```text
//! FIRST k (a, b, c)   the first k healthy members in list (priority) order
//! ANY k (a, b, c)     any k members
//! k (a, b)            PostgreSQL's older form of FIRST k (a, b)
//! a, b                PostgreSQL's bare list: FIRST 1 (a, b)
//! ```
//!
//! Keywords are case-insensitive and whitespace may appear between any two tokens. A name is
//! `[A-Za-z0-9_.-]+` or a double-quoted string (a `"` inside it is written `""`); names are
//! case-sensitive, unique and non-empty, the list is non-empty and `1 <= k <= members`.
//! [`QuorumSpec`]'s `Display` writes the canonical form, `FIRST 1 (a, b)`, which parses back to
//! the same spec. (PostgreSQL's `*` wildcard is not supported: members are named nodes.)
//!
//! # Semantics
//!
//! [`QuorumSpec::evaluate`] takes each member's health and the highest LSN it has acknowledged
//! as durable, and returns the LSN the quorum has reached:
//! - `ANY k`: the k-th largest acknowledged LSN over all members. An LSN a member acknowledged
//!   stays counted when the member goes down: the record is on its disk.
//! - `FIRST k`: the synchronous set is the first k healthy members in list order, filled up with
//!   the highest-priority unhealthy members when fewer than k are healthy; the LSN is the
//!   smallest in that set.
//!
//! In both modes the quorum is `available` when at least k members are healthy. The LSN is
//! never above the k-th largest acknowledged LSN (so at least k members hold it), but it is not
//! monotonic across calls: when the FIRST set changes it can fall. Keeping the commit LSN from
//! going backwards is the caller's job. This module is pure: no I/O, no clock.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the synchronous members are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuorumMode {
    /// The first k healthy members in list order (priority).
    First,
    /// Any k members.
    Any,
}

impl QuorumMode {
    /// The keyword, as the canonical form writes it: `FIRST` or `ANY`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuorumMode::First => "FIRST",
            QuorumMode::Any => "ANY",
        }
    }
}

/// A parsed `FIRST k (...)` / `ANY k (...)` specification.
///
/// Build one with [`FromStr`]; a spec assembled by hand must pass [`QuorumSpec::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QuorumSpec {
    /// How the synchronous members are chosen.
    pub mode: QuorumMode,
    /// How many members must hold a record: `1..=members.len()`.
    pub k: usize,
    /// The members' node names in priority order; unique and non-empty.
    pub members: Vec<String>,
}

/// One member's state, as the replication layer sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberState<'a> {
    /// The member's node name.
    pub name: &'a str,
    /// Whether the member is connected and keeping up.
    pub healthy: bool,
    /// The highest LSN the member has acknowledged as durable.
    pub lsn: u64,
}

/// What the quorum has reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumOutcome {
    /// The highest LSN the quorum holds.
    pub lsn: u64,
    /// Whether at least k members are healthy.
    pub available: bool,
    /// The k members `lsn` is taken from: indices into `QuorumSpec::members`, ascending.
    pub chosen: Vec<usize>,
}

/// Why a quorum specification was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid synchronous quorum {input:?}: expected {expected} at character {position}")]
#[non_exhaustive]
pub struct QuorumParseError {
    /// The text that was parsed.
    pub input: String,
    /// Where the problem is: a character (not byte) offset into `input`, counting from 0.
    pub position: usize,
    /// What was expected there.
    pub expected: String,
}

impl QuorumSpec {
    /// Asserts the spec's invariants: `1 <= k <= members`, members unique and non-empty.
    pub fn check_invariants(&self) {
        if let Err(e) = self.validate() {
            panic!("quorum {self}: {e}");
        }
    }

    /// Whether `name` is one of the members.
    pub fn is_member(&self, name: &str) -> bool {
        self.member_index(name).is_some()
    }

    /// `name`'s index in `members`, if it is a member.
    pub fn member_index(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|member| member == name)
    }

    /// Checks the invariants the parser guarantees, for a spec built by hand.
    ///
    /// # Errors
    /// A sentence naming the broken rule.
    pub fn validate(&self) -> Result<(), String> {
        if self.members.is_empty() {
            return Err("quorum: the member list is empty".to_owned());
        }
        if self.k == 0 || self.k > self.members.len() {
            return Err(format!(
                "quorum: k = {} must be between 1 and the number of members, {}",
                self.k,
                self.members.len()
            ));
        }
        for (i, name) in self.members.iter().enumerate() {
            if name.is_empty() {
                return Err(format!("quorum: member {i} has an empty name"));
            }
            if self.members[..i].contains(name) {
                return Err(format!("quorum: member {name:?} is listed twice"));
            }
        }
        Ok(())
    }

    /// The LSN the quorum has reached given each member's state (see the module doc).
    ///
    /// `states` may be in any order and may name non-members (ignored); a member missing from
    /// it counts as unhealthy with LSN 0. If a name appears twice, the last entry counts.
    ///
    /// # Panics
    /// If the spec breaks [`QuorumSpec::validate`]'s rules on k.
    pub fn evaluate(&self, states: &[MemberState<'_>]) -> QuorumOutcome {
        let mut scratch = QuorumScratch::default();
        let (lsn, available) = self.evaluate_in(states.iter().copied(), &mut scratch);
        QuorumOutcome {
            lsn,
            available,
            chosen: scratch.chosen,
        }
    }

    /// [`QuorumSpec::evaluate`] into `scratch`, which keeps the chosen members: the quorum's LSN
    /// and whether it is available. Allocates nothing once `scratch` has grown to the member
    /// count (the commit tracker evaluates three levels on every acknowledgement).
    ///
    /// # Panics
    /// If the spec breaks [`QuorumSpec::validate`]'s rules on k.
    pub fn evaluate_in<'a>(
        &self,
        states: impl IntoIterator<Item = MemberState<'a>>,
        scratch: &mut QuorumScratch,
    ) -> (u64, bool) {
        let n = self.members.len();
        assert!(
            self.k >= 1 && self.k <= n,
            "quorum k out of range: k={} members={n}",
            self.k
        );
        let QuorumScratch {
            healthy,
            lsns,
            chosen,
        } = scratch;
        healthy.clear();
        healthy.resize(n, false);
        lsns.clear();
        lsns.resize(n, 0);
        for state in states {
            if let Some(i) = self.member_index(state.name) {
                healthy[i] = state.healthy;
                lsns[i] = state.lsn;
            }
        }
        let healthy_count = healthy.iter().filter(|&&h| h).count();
        match self.mode {
            QuorumMode::Any => largest_k(lsns, self.k, chosen),
            QuorumMode::First => first_k(healthy, self.k, chosen),
        }
        chosen.sort_unstable();
        let lsn = chosen.iter().map(|&i| lsns[i]).min().unwrap_or(0);
        debug_assert_eq!(chosen.len(), self.k);
        debug_assert!(
            lsn <= kth_largest(lsns, self.k),
            "quorum lsn {lsn} above k-th largest"
        );
        (lsn, healthy_count >= self.k)
    }
}

/// Buffers [`QuorumSpec::evaluate_in`] reuses from one evaluation to the next.
#[derive(Debug, Clone, Default)]
pub struct QuorumScratch {
    healthy: Vec<bool>,
    lsns: Vec<u64>,
    /// The k members the last evaluation's LSN was taken from: indices into
    /// `QuorumSpec::members`, ascending.
    chosen: Vec<usize>,
}

impl QuorumScratch {
    /// The members the last evaluation chose, as [`QuorumOutcome::chosen`].
    pub fn chosen(&self) -> &[usize] {
        &self.chosen
    }
}

/// Into `out`: the indices of the k largest LSNs; ties go to the higher-priority (lower) index.
fn largest_k(lsns: &[u64], k: usize, out: &mut Vec<usize>) {
    out.clear();
    out.extend(0..lsns.len());
    out.sort_by(|&a, &b| lsns[b].cmp(&lsns[a]).then(a.cmp(&b)));
    out.truncate(k);
}

/// Into `out`: the first k healthy indices, then the first unhealthy ones until there are k.
fn first_k(healthy: &[bool], k: usize, out: &mut Vec<usize>) {
    let healthy_first = (0..healthy.len()).filter(|&i| healthy[i]);
    let unhealthy_next = (0..healthy.len()).filter(|&i| !healthy[i]);
    out.clear();
    out.extend(healthy_first.chain(unhealthy_next).take(k));
}

fn kth_largest(lsns: &[u64], k: usize) -> u64 {
    let mut sorted = lsns.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted[k - 1]
}

impl fmt::Display for QuorumSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (", self.mode.as_str(), self.k)?;
        for (i, name) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if !name.is_empty() && name.chars().all(is_name_char) {
                f.write_str(name)?;
            } else {
                write!(f, "\"{}\"", name.replace('"', "\"\""))?;
            }
        }
        f.write_str(")")
    }
}

impl FromStr for QuorumSpec {
    type Err = QuorumParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Parser::new(input).spec()
    }
}

impl TryFrom<String> for QuorumSpec {
    type Error = QuorumParseError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<QuorumSpec> for String {
    fn from(spec: QuorumSpec) -> String {
        spec.to_string()
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// A recursive-descent parser over the input's characters; `pos` is a character offset.
struct Parser<'a> {
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            chars: input.chars().collect(),
            pos: 0,
        }
    }

    fn error(&self, position: usize, expected: impl Into<String>) -> QuorumParseError {
        QuorumParseError {
            input: self.input.to_owned(),
            position,
            expected: expected.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// The unquoted word starting at `from`, and the offset just after it.
    fn word_at(&self, from: usize) -> (String, usize) {
        let mut end = from;
        while self.chars.get(end).copied().is_some_and(is_name_char) {
            end += 1;
        }
        (self.chars[from..end].iter().collect(), end)
    }

    /// The first non-whitespace character at or after `from`.
    fn next_significant(&self, from: usize) -> Option<char> {
        self.chars[from..]
            .iter()
            .copied()
            .find(|c| !c.is_whitespace())
    }

    fn spec(mut self) -> Result<QuorumSpec, QuorumParseError> {
        self.skip_ws();
        if self.peek().is_none() {
            return Err(self.error(self.pos, "a member name, FIRST or ANY"));
        }
        let (word, after) = self.word_at(self.pos);
        let follows = self.next_significant(after);
        let keyword = if word.eq_ignore_ascii_case("first") {
            Some(QuorumMode::First)
        } else if word.eq_ignore_ascii_case("any") {
            Some(QuorumMode::Any)
        } else {
            None
        };
        // A keyword followed by ',' or the end is a member that happens to be called that.
        let spec = match keyword {
            Some(mode) if !matches!(follows, None | Some(',')) => {
                self.pos = after;
                self.skip_ws();
                self.counted(mode)?
            }
            _ if !word.is_empty()
                && word.chars().all(|c| c.is_ascii_digit())
                && follows == Some('(') =>
            {
                self.counted(QuorumMode::First)?
            }
            _ => self.bare_list()?,
        };
        self.skip_ws();
        match self.peek() {
            None => Ok(spec),
            Some(_) => Err(self.error(self.pos, "the end of the input")),
        }
    }

    /// `k (name, ...)`, after the mode keyword.
    fn counted(&mut self, mode: QuorumMode) -> Result<QuorumSpec, QuorumParseError> {
        let k_pos = self.pos;
        let (digits, after) = self.word_at(k_pos);
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(self.error(
                k_pos,
                format!("the number of synchronous members after {}", mode.as_str()),
            ));
        }
        self.pos = after;
        self.skip_ws();
        if self.peek() != Some('(') {
            return Err(self.error(self.pos, "'(' and the member list"));
        }
        self.pos += 1;
        let (members, positions) = self.list()?;
        self.skip_ws();
        if self.peek() != Some(')') {
            return Err(self.error(self.pos, "',' or ')'"));
        }
        self.pos += 1;
        let k = digits.parse::<usize>().unwrap_or(usize::MAX);
        if k == 0 || k > members.len() {
            let expected = format!("k between 1 and {} (the number of members)", members.len());
            return Err(self.error(k_pos, expected));
        }
        self.check_unique(&members, &positions)?;
        Ok(QuorumSpec { mode, k, members })
    }

    /// PostgreSQL's bare `a, b`: `FIRST 1 (a, b)`.
    fn bare_list(&mut self) -> Result<QuorumSpec, QuorumParseError> {
        let (members, positions) = self.list()?;
        self.skip_ws();
        if self.peek().is_some() {
            return Err(self.error(self.pos, "',' or the end of the input"));
        }
        self.check_unique(&members, &positions)?;
        Ok(QuorumSpec {
            mode: QuorumMode::First,
            k: 1,
            members,
        })
    }

    /// One or more comma-separated names, with where each starts.
    fn list(&mut self) -> Result<(Vec<String>, Vec<usize>), QuorumParseError> {
        let mut members = Vec::new();
        let mut positions = Vec::new();
        loop {
            self.skip_ws();
            positions.push(self.pos);
            members.push(self.name()?);
            self.skip_ws();
            if self.peek() != Some(',') {
                return Ok((members, positions));
            }
            self.pos += 1;
        }
    }

    fn name(&mut self) -> Result<String, QuorumParseError> {
        if self.peek() == Some('"') {
            return self.quoted_name();
        }
        let (word, after) = self.word_at(self.pos);
        if word.is_empty() {
            return Err(self.error(self.pos, "a member name ([A-Za-z0-9_.-]+ or \"quoted\")"));
        }
        self.pos = after;
        Ok(word)
    }

    fn quoted_name(&mut self) -> Result<String, QuorumParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut name = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error(self.pos, "a closing '\"'")),
                Some('"') if self.chars.get(self.pos + 1) == Some(&'"') => {
                    name.push('"');
                    self.pos += 2;
                }
                Some('"') => break,
                Some(c) => {
                    name.push(c);
                    self.pos += 1;
                }
            }
        }
        self.pos += 1;
        if name.is_empty() {
            return Err(self.error(start, "a non-empty member name"));
        }
        Ok(name)
    }

    fn check_unique(
        &self,
        members: &[String],
        positions: &[usize],
    ) -> Result<(), QuorumParseError> {
        for (i, name) in members.iter().enumerate() {
            if members[..i].contains(name) {
                let expected = format!("a member not listed before ({name:?} is listed twice)");
                return Err(self.error(positions[i], expected));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(text: &str) -> QuorumSpec {
        text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses() {
        use QuorumMode::{Any, First};
        let cases: &[(&str, QuorumMode, usize, &[&str])] = &[
            ("FIRST 1 (a, b)", First, 1, &["a", "b"]),
            ("first 2 (a,b,c)", First, 2, &["a", "b", "c"]),
            ("  FiRsT\t3\n( a , b , c )  ", First, 3, &["a", "b", "c"]),
            ("ANY 1 (a)", Any, 1, &["a"]),
            (
                "any 2(node-1.east, node_2)",
                Any,
                2,
                &["node-1.east", "node_2"],
            ),
            ("a, b", First, 1, &["a", "b"]),
            ("  solo  ", First, 1, &["solo"]),
            ("2 (a, b, c)", First, 2, &["a", "b", "c"]),
            (
                "ANY 1 (\"has space\", \"quo\"\"te\", \"(,)\")",
                Any,
                1,
                &["has space", "quo\"te", "(,)"],
            ),
            ("first, any", First, 1, &["first", "any"]),
            ("FIRST 1 (first, any)", First, 1, &["first", "any"]),
            ("any", First, 1, &["any"]),
            ("\"ANY\" , b", First, 1, &["ANY", "b"]),
            ("FIRST 01 (a)", First, 1, &["a"]),
        ];
        for &(text, mode, k, members) in cases {
            let got = spec(text);
            assert_eq!(
                got,
                QuorumSpec {
                    mode,
                    k,
                    members: names(members)
                },
                "{text:?}"
            );
            assert_eq!(got.validate(), Ok(()), "{text:?}");
        }
    }

    #[test]
    fn parse_errors_point_at_the_problem() {
        // (input, position, a word the expectation must contain)
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "member name"),
            ("   ", 3, "member name"),
            ("FIRST (a, b)", 6, "number"),
            ("ANY x (a)", 4, "number"),
            ("FIRST 1 a, b", 8, "'('"),
            ("FIRST 1 (a, b", 13, "')'"),
            ("FIRST 1 (a b)", 11, "')'"),
            ("FIRST 1 ()", 9, "member name"),
            ("FIRST 1 (a,)", 11, "member name"),
            ("FIRST 0 (a)", 6, "between 1 and 1"),
            ("ANY 3 (a, b)", 4, "between 1 and 2"),
            ("ANY 99999999999999999999999 (a)", 4, "between 1 and 1"),
            ("FIRST 1 (a, b, a)", 15, "listed twice"),
            ("a, a", 3, "listed twice"),
            ("FIRST 1 (a) extra", 12, "end of the input"),
            ("a b", 2, "','"),
            ("a, ", 3, "member name"),
            ("a, \"unterminated", 16, "closing"),
            ("a, \"\"", 3, "non-empty"),
            ("a; b", 1, "','"),
            ("*", 0, "member name"),
            ("FIRST 1 (é)", 9, "member name"),
            ("\"é\", é", 5, "member name"),
        ];
        for &(text, position, expected) in cases {
            let error = text.parse::<QuorumSpec>().expect_err(text);
            assert_eq!(error.input, text);
            assert_eq!(error.position, position, "{text:?}: {error}");
            assert!(error.expected.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let cases: &[(&str, &str)] = &[
            ("a, b", "FIRST 1 (a, b)"),
            ("first 2 ( a ,b,c )", "FIRST 2 (a, b, c)"),
            ("any 1 (x)", "ANY 1 (x)"),
            ("2 (a, b)", "FIRST 2 (a, b)"),
            (
                "ANY 1 (\"has space\", \"q\"\"\", ok.1)",
                "ANY 1 (\"has space\", \"q\"\"\", ok.1)",
            ),
            ("first, any", "FIRST 1 (first, any)"),
        ];
        for &(text, canonical) in cases {
            let parsed = spec(text);
            assert_eq!(parsed.to_string(), canonical, "{text:?}");
            assert_eq!(spec(canonical), parsed, "{text:?}");
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        let parsed = spec("any 2 (a, b, c)");
        let json = serde_json::to_string(&parsed).expect("serialize");
        assert_eq!(json, "\"ANY 2 (a, b, c)\"");
        let back: QuorumSpec = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, parsed);
        let bad = serde_json::from_str::<QuorumSpec>("\"ANY 3 (a)\"").expect_err("k too big");
        assert!(bad.to_string().contains("between 1 and 1"), "{bad}");
    }

    #[test]
    fn validate_rejects_hand_built_specs() {
        let cases: &[(QuorumMode, usize, &[&str], &str)] = &[
            (QuorumMode::Any, 1, &[], "empty"),
            (QuorumMode::Any, 0, &["a"], "k = 0"),
            (QuorumMode::First, 3, &["a", "b"], "k = 3"),
            (QuorumMode::First, 1, &["a", ""], "empty name"),
            (QuorumMode::First, 1, &["a", "b", "a"], "twice"),
        ];
        for &(mode, k, members, expected) in cases {
            let spec = QuorumSpec {
                mode,
                k,
                members: names(members),
            };
            let error = spec.validate().expect_err(expected);
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn membership() {
        let s = spec("ANY 1 (a, b)");
        assert!(s.is_member("a") && s.is_member("b"));
        assert!(!s.is_member("c") && !s.is_member("A"));
        assert_eq!(s.member_index("b"), Some(1));
    }

    /// (name, healthy, lsn)
    type State = (&'static str, bool, u64);

    struct Case {
        name: &'static str,
        spec: &'static str,
        states: &'static [State],
        lsn: u64,
        available: bool,
        chosen: &'static [usize],
    }

    const EVALUATE_CASES: &[Case] = &[
        Case {
            name: "ANY 1 of 2, one down: the down member's ack still counts",
            spec: "ANY 1 (a, b)",
            states: &[("a", false, 90), ("b", true, 50)],
            lsn: 90,
            available: true,
            chosen: &[0],
        },
        Case {
            name: "ANY 1 of 2, both up",
            spec: "ANY 1 (a, b)",
            states: &[("a", true, 10), ("b", true, 50)],
            lsn: 50,
            available: true,
            chosen: &[1],
        },
        Case {
            name: "ANY 2 of 2",
            spec: "ANY 2 (a, b)",
            states: &[("b", true, 70), ("a", true, 40)],
            lsn: 40,
            available: true,
            chosen: &[0, 1],
        },
        Case {
            name: "ANY 2 of 2, one down: unavailable, acks held",
            spec: "ANY 2 (a, b)",
            states: &[("a", false, 40), ("b", true, 70)],
            lsn: 40,
            available: false,
            chosen: &[0, 1],
        },
        Case {
            name: "ANY 2 of 3: second largest",
            spec: "ANY 2 (a, b, c)",
            states: &[("a", true, 10), ("b", true, 30), ("c", true, 20)],
            lsn: 20,
            available: true,
            chosen: &[1, 2],
        },
        Case {
            name: "ANY 2 of 3, ties go to priority",
            spec: "ANY 2 (a, b, c)",
            states: &[("a", true, 20), ("b", true, 20), ("c", true, 20)],
            lsn: 20,
            available: true,
            chosen: &[0, 1],
        },
        Case {
            name: "FIRST 1 (a, b), a down: b is synchronous",
            spec: "FIRST 1 (a, b)",
            states: &[("a", false, 90), ("b", true, 50)],
            lsn: 50,
            available: true,
            chosen: &[1],
        },
        Case {
            name: "FIRST 1 (a, b), both up: a, even though b is ahead",
            spec: "FIRST 1 (a, b)",
            states: &[("a", true, 30), ("b", true, 50)],
            lsn: 30,
            available: true,
            chosen: &[0],
        },
        Case {
            name: "FIRST 2 of 3, all up: a and b",
            spec: "FIRST 2 (a, b, c)",
            states: &[("a", true, 30), ("b", true, 20), ("c", true, 99)],
            lsn: 20,
            available: true,
            chosen: &[0, 1],
        },
        Case {
            name: "FIRST 2 of 3, b down: a and c",
            spec: "FIRST 2 (a, b, c)",
            states: &[("a", true, 30), ("b", false, 20), ("c", true, 99)],
            lsn: 30,
            available: true,
            chosen: &[0, 2],
        },
        Case {
            name: "FIRST 2 of 3, two down: filled with the highest-priority down member",
            spec: "FIRST 2 (a, b, c)",
            states: &[("a", false, 5), ("b", false, 20), ("c", true, 99)],
            lsn: 5,
            available: false,
            chosen: &[0, 2],
        },
        Case {
            name: "none healthy, ANY",
            spec: "ANY 1 (a, b)",
            states: &[("a", false, 5), ("b", false, 8)],
            lsn: 8,
            available: false,
            chosen: &[1],
        },
        Case {
            name: "none healthy, FIRST",
            spec: "FIRST 1 (a, b)",
            states: &[("a", false, 5), ("b", false, 8)],
            lsn: 5,
            available: false,
            chosen: &[0],
        },
        Case {
            name: "no states at all",
            spec: "FIRST 2 (a, b, c)",
            states: &[],
            lsn: 0,
            available: false,
            chosen: &[0, 1],
        },
        Case {
            name: "missing member counts as down at 0; strangers ignored",
            spec: "ANY 2 (a, b)",
            states: &[("a", true, 10), ("zed", true, 100)],
            lsn: 0,
            available: false,
            chosen: &[0, 1],
        },
        Case {
            name: "a repeated name: the last entry counts",
            spec: "ANY 1 (a)",
            states: &[("a", true, 10), ("a", false, 7)],
            lsn: 7,
            available: false,
            chosen: &[0],
        },
    ];

    #[test]
    fn evaluate() {
        for case in EVALUATE_CASES {
            let states: Vec<MemberState<'_>> = case
                .states
                .iter()
                .map(|&(name, healthy, lsn)| MemberState { name, healthy, lsn })
                .collect();
            let outcome = spec(case.spec).evaluate(&states);
            let expected = QuorumOutcome {
                lsn: case.lsn,
                available: case.available,
                chosen: case.chosen.to_vec(),
            };
            assert_eq!(outcome, expected, "{}", case.name);
        }
    }

    fn arb_spec_and_states() -> impl Strategy<Value = (QuorumSpec, Vec<(bool, u64)>)> {
        (1usize..7).prop_flat_map(|n| {
            (
                any::<bool>(),
                1..=n,
                prop::collection::vec((any::<bool>(), 0u64..50), n),
            )
                .prop_map(move |(any_mode, k, states)| {
                    let mode = if any_mode {
                        QuorumMode::Any
                    } else {
                        QuorumMode::First
                    };
                    let members = (0..n).map(|i| format!("m{i}")).collect();
                    (QuorumSpec { mode, k, members }, states)
                })
        })
    }

    proptest! {
        #[test]
        fn evaluating_into_a_reused_scratch_is_evaluating(
            cases in prop::collection::vec(arb_spec_and_states(), 1..8)
        ) {
            let mut scratch = QuorumScratch::default();
            for (spec, raw) in &cases {
                let states: Vec<MemberState<'_>> = spec
                    .members
                    .iter()
                    .zip(raw)
                    .map(|(name, &(healthy, lsn))| MemberState { name, healthy, lsn })
                    .collect();
                let outcome = spec.evaluate(&states);
                let (lsn, available) = spec.evaluate_in(states.iter().copied(), &mut scratch);
                prop_assert_eq!((lsn, available), (outcome.lsn, outcome.available));
                prop_assert_eq!(scratch.chosen(), &outcome.chosen[..]);
            }
        }
    }

    proptest! {
        #[test]
        fn lsn_never_above_kth_largest((spec, raw) in arb_spec_and_states(), seed in any::<u64>()) {
            let mut states: Vec<MemberState<'_>> = spec
                .members
                .iter()
                .zip(&raw)
                .map(|(name, &(healthy, lsn))| MemberState { name, healthy, lsn })
                .collect();
            // Any order: rotate by the seed.
            let len = states.len();
            states.rotate_left((seed as usize) % len);
            let outcome = spec.evaluate(&states);
            let lsns: Vec<u64> = raw.iter().map(|&(_, lsn)| lsn).collect();
            prop_assert!(outcome.lsn <= kth_largest(&lsns, spec.k));
            prop_assert_eq!(outcome.chosen.len(), spec.k);
            let min_chosen = outcome.chosen.iter().map(|&i| lsns[i]).min();
            prop_assert_eq!(Some(outcome.lsn), min_chosen);
            let healthy = raw.iter().filter(|&&(h, _)| h).count();
            prop_assert_eq!(outcome.available, healthy >= spec.k);
            if spec.mode == QuorumMode::Any {
                prop_assert_eq!(outcome.lsn, kth_largest(&lsns, spec.k));
            }
        }

        #[test]
        fn display_round_trips(
            any_mode in any::<bool>(),
            members in prop::collection::btree_set("[a-z0-9 _.\"(),-]{1,8}", 1..5),
            k_seed in any::<usize>(),
        ) {
            let members: Vec<String> = members.into_iter().collect();
            let k = 1 + k_seed % members.len();
            let mode = if any_mode { QuorumMode::Any } else { QuorumMode::First };
            let spec = QuorumSpec { mode, k, members };
            prop_assert_eq!(spec.to_string().parse::<QuorumSpec>(), Ok(spec.clone()));
        }
    }
}
