//! A parser for the SOQL subset clients use: field lists (with parent
//! relationship paths such as `Account.Name`), `COUNT()`, `WHERE` with
//! `= != <> < <= > >= IN NOT IN LIKE`, `AND`/`OR`/`NOT` and parentheses,
//! string/number/boolean/null/date/datetime literals and a few date literals
//! (`TODAY`, `YESTERDAY`, `TOMORROW`, `LAST_N_DAYS:n`, `NEXT_N_DAYS:n`),
//! `ORDER BY ... ASC|DESC NULLS FIRST|LAST`, `LIMIT` and `OFFSET`; child
//! relationship subqueries in the field list (`(SELECT ... FROM
//! OpportunityContactRoles WHERE ... ORDER BY ... LIMIT n)`), and the
//! aggregate functions `COUNT(field)`, `COUNT_DISTINCT`, `MIN`, `MAX`, `SUM`
//! and `AVG` with optional aliases and `GROUP BY`.
//!
//! It only parses: names are resolved against the schema elsewhere. It must
//! never panic on any input; every problem is a [`ParseError`] with a column.

use chrono::NaiveDate;

/// A parse failure at a 1-based column.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("ERROR at Row:1:Column:{column}\n{message}")]
pub struct ParseError {
    pub message: String,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub select: Select,
    pub from: String,
    pub from_pos: usize,
    pub filter: Option<Cond>,
    pub group_by: Vec<FieldPath>,
    pub order: Vec<OrderItem>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    /// `COUNT()`.
    Count,
    Items(Vec<SelectItem>),
}

impl Select {
    /// Whether any item is an aggregate function.
    pub fn has_aggregates(&self) -> bool {
        matches!(self, Select::Items(items) if items.iter().any(|i| matches!(i, SelectItem::Aggregate(_))))
    }
}

/// One item of a field list.
#[derive(Debug, Clone, PartialEq)]
pub enum SelectItem {
    Field(FieldPath),
    Aggregate(Aggregate),
    /// A child relationship subquery.
    Children(Box<SubQuery>),
}

/// An aggregate function such as `COUNT(Id)` or `MAX(Amount) top`.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub func: AggFunc,
    pub field: FieldPath,
    pub alias: Option<String>,
    pub pos: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    Count,
    CountDistinct,
    Min,
    Max,
    Sum,
    Avg,
}

impl AggFunc {
    fn parse(name: &str) -> Option<AggFunc> {
        Some(match name.to_ascii_uppercase().as_str() {
            "COUNT" => AggFunc::Count,
            "COUNT_DISTINCT" => AggFunc::CountDistinct,
            "MIN" => AggFunc::Min,
            "MAX" => AggFunc::Max,
            "SUM" => AggFunc::Sum,
            "AVG" => AggFunc::Avg,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            AggFunc::Count => "COUNT",
            AggFunc::CountDistinct => "COUNT_DISTINCT",
            AggFunc::Min => "MIN",
            AggFunc::Max => "MAX",
            AggFunc::Sum => "SUM",
            AggFunc::Avg => "AVG",
        }
    }
}

/// `(SELECT fields FROM ChildRelationship [WHERE ...] [ORDER BY ...] [LIMIT n])`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubQuery {
    pub fields: Vec<FieldPath>,
    pub relationship: String,
    pub relationship_pos: usize,
    pub filter: Option<Cond>,
    pub order: Vec<OrderItem>,
    pub limit: Option<u64>,
}

/// `Name` or `Account.Name`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPath {
    pub parts: Vec<String>,
    pub pos: usize,
}

impl FieldPath {
    pub fn display(&self) -> String {
        self.parts.join(".")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    Date(NaiveDate),
    DateTime(i64),
    /// A relative date literal: whole days from `start_offset` (relative to
    /// today, inclusive) to `end_offset` (exclusive).
    DateRange {
        start_offset: i64,
        end_offset: i64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp {
        field: FieldPath,
        op: Op,
        value: Literal,
        pos: usize,
    },
    In {
        field: FieldPath,
        negated: bool,
        values: Vec<Literal>,
        pos: usize,
    },
    Like {
        field: FieldPath,
        pattern: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderItem {
    pub field: FieldPath,
    pub descending: bool,
    /// Nulls first: the default is first for ascending, last for descending.
    pub nulls_first: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Date(NaiveDate),
    DateTime(i64),
    Comma,
    Dot,
    Colon,
    LParen,
    RParen,
    Op(Op),
    Eof,
}

struct Lexer<'a> {
    chars: Vec<char>,
    i: usize,
    _src: &'a str,
}

fn err(message: impl Into<String>, column: usize) -> ParseError {
    ParseError {
        message: message.into(),
        column,
    }
}

impl<'a> Lexer<'a> {
    fn tokens(src: &'a str) -> Result<Vec<(Tok, usize)>, ParseError> {
        let mut lx = Lexer {
            chars: src.chars().collect(),
            i: 0,
            _src: src,
        };
        let mut out = Vec::new();
        loop {
            let (t, pos) = lx.next()?;
            let eof = t == Tok::Eof;
            out.push((t, pos));
            if eof {
                return Ok(out);
            }
        }
    }

    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    fn next(&mut self) -> Result<(Tok, usize), ParseError> {
        while self.peek(0).is_some_and(char::is_whitespace) {
            self.i += 1;
        }
        let pos = self.i + 1;
        let Some(c) = self.peek(0) else {
            return Ok((Tok::Eof, pos));
        };
        let single = |t: Tok, lx: &mut Lexer| {
            lx.i += 1;
            Ok((t, pos))
        };
        match c {
            ',' => single(Tok::Comma, self),
            '.' => single(Tok::Dot, self),
            ':' => single(Tok::Colon, self),
            '(' => single(Tok::LParen, self),
            ')' => single(Tok::RParen, self),
            '=' => single(Tok::Op(Op::Eq), self),
            '!' if self.peek(1) == Some('=') => {
                self.i += 2;
                Ok((Tok::Op(Op::Ne), pos))
            }
            '<' => {
                self.i += 1;
                match self.peek(0) {
                    Some('=') => {
                        self.i += 1;
                        Ok((Tok::Op(Op::Le), pos))
                    }
                    Some('>') => {
                        self.i += 1;
                        Ok((Tok::Op(Op::Ne), pos))
                    }
                    _ => Ok((Tok::Op(Op::Lt), pos)),
                }
            }
            '>' => {
                self.i += 1;
                if self.peek(0) == Some('=') {
                    self.i += 1;
                    Ok((Tok::Op(Op::Ge), pos))
                } else {
                    Ok((Tok::Op(Op::Gt), pos))
                }
            }
            '\'' => self.string(pos),
            c if c.is_ascii_digit()
                || (c == '-' && self.peek(1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                self.number_or_date(pos)
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = self.i;
                while self
                    .peek(0)
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
                {
                    self.i += 1;
                }
                Ok((Tok::Ident(self.chars[start..self.i].iter().collect()), pos))
            }
            other => Err(err(format!("unexpected token: '{other}'"), pos)),
        }
    }

    fn string(&mut self, pos: usize) -> Result<(Tok, usize), ParseError> {
        self.i += 1;
        let mut s = String::new();
        loop {
            match self.peek(0) {
                None => return Err(err("unterminated string literal", pos)),
                Some('\'') => {
                    self.i += 1;
                    return Ok((Tok::Str(s), pos));
                }
                Some('\\') => {
                    let e = self
                        .peek(1)
                        .ok_or_else(|| err("unterminated string literal", pos))?;
                    let c = match e {
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        '\'' | '"' | '\\' => e,
                        // Kept escaped so LIKE can tell a literal % or _ from a wildcard.
                        '%' | '_' => {
                            s.push('\\');
                            e
                        }
                        other => {
                            return Err(err(
                                format!("Invalid string literal escape sequence: \\{other}"),
                                self.i + 1,
                            ));
                        }
                    };
                    s.push(c);
                    self.i += 2;
                }
                Some(c) => {
                    s.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn number_or_date(&mut self, pos: usize) -> Result<(Tok, usize), ParseError> {
        let start = self.i;
        if self.peek(0) == Some('-') {
            self.i += 1;
        }
        while self
            .peek(0)
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '+'))
        {
            self.i += 1;
        }
        let text: String = self.chars[start..self.i].iter().collect();
        if text.len() >= 10 && text.as_bytes().get(4) == Some(&b'-') {
            if text.len() == 10 {
                return NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                    .map(|d| (Tok::Date(d), pos))
                    .map_err(|_| {
                        err(
                            format!(
                                "line 1:{} no viable alternative at character '{text}'",
                                pos - 1
                            ),
                            pos,
                        )
                    });
            }
            return super::value::parse_datetime(&text)
                .filter(|_| {
                    text.contains('T')
                        && (text.ends_with('Z')
                            || text[10..].contains('+')
                            || text[10..].contains('-'))
                })
                .map(|ms| (Tok::DateTime(ms), pos))
                .ok_or_else(|| {
                    err(
                        format!(
                            "line 1:{} no viable alternative at character '{text}'",
                            pos - 1
                        ),
                        pos,
                    )
                });
        }
        text.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(|n| (Tok::Num(n), pos))
            .ok_or_else(|| err(format!("unexpected token: '{text}'"), pos))
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
}

fn is_kw(t: &Tok, kw: &str) -> bool {
    matches!(t, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
}

const RESERVED: &[&str] = &[
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "LIMIT", "OFFSET",
    "ASC", "DESC", "NULLS", "NULL", "TRUE", "FALSE", "GROUP", "HAVING",
];

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].0
    }
    fn pos(&self) -> usize {
        self.toks[self.i.min(self.toks.len() - 1)].1
    }
    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }
    fn unexpected(&self) -> ParseError {
        let what = match self.peek() {
            Tok::Eof => "<EOF>".to_string(),
            Tok::Ident(s) => s.clone(),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Num(n) => n.to_string(),
            Tok::Date(d) => d.to_string(),
            Tok::DateTime(_) => "datetime".into(),
            Tok::Comma => ",".into(),
            Tok::Dot => ".".into(),
            Tok::Colon => ":".into(),
            Tok::LParen => "(".into(),
            Tok::RParen => ")".into(),
            Tok::Op(_) => "operator".into(),
        };
        err(format!("unexpected token: '{what}'"), self.pos())
    }
    fn expect_kw(&mut self, kw: &str) -> Result<(), ParseError> {
        if is_kw(self.peek(), kw) {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        if is_kw(self.peek(), kw) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn ident(&mut self) -> Result<(String, usize), ParseError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Ident(s) if !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&s)) => {
                self.bump();
                Ok((s, pos))
            }
            _ => Err(self.unexpected()),
        }
    }
    fn field(&mut self) -> Result<FieldPath, ParseError> {
        let (first, pos) = self.ident()?;
        let mut parts = vec![first];
        while *self.peek() == Tok::Dot {
            self.bump();
            parts.push(self.ident()?.0);
        }
        Ok(FieldPath { parts, pos })
    }

    fn tok_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.i + k).map(|t| &t.0)
    }

    fn query(&mut self) -> Result<Query, ParseError> {
        self.expect_kw("SELECT")?;
        let select = if is_kw(self.peek(), "COUNT")
            && self.tok_at(1) == Some(&Tok::LParen)
            && self.tok_at(2) == Some(&Tok::RParen)
        {
            self.bump();
            self.bump();
            self.bump();
            Select::Count
        } else {
            let mut items = vec![self.select_item()?];
            while *self.peek() == Tok::Comma {
                self.bump();
                items.push(self.select_item()?);
            }
            Select::Items(items)
        };
        self.expect_kw("FROM")?;
        let (from, from_pos) = self.ident()?;
        let filter = self.where_clause()?;
        let mut group_by = Vec::new();
        if self.eat_kw("GROUP") {
            self.expect_kw("BY")?;
            if is_kw(self.peek(), "ROLLUP") || is_kw(self.peek(), "CUBE") {
                return Err(err(
                    "GROUP BY ROLLUP and CUBE are not supported by this emulator",
                    self.pos(),
                ));
            }
            group_by.push(self.field()?);
            while *self.peek() == Tok::Comma {
                self.bump();
                group_by.push(self.field()?);
            }
        }
        if is_kw(self.peek(), "HAVING") {
            return Err(err("HAVING is not supported by this emulator", self.pos()));
        }
        let order = self.order_by()?;
        let limit = self.limit_clause()?;
        let offset = if self.eat_kw("OFFSET") {
            Some(self.count_arg("OFFSET")?)
        } else {
            None
        };
        if *self.peek() != Tok::Eof {
            return Err(self.unexpected());
        }
        Ok(Query {
            select,
            from,
            from_pos,
            filter,
            group_by,
            order,
            limit,
            offset,
        })
    }

    /// A field, an aggregate function (with an optional alias), or a child
    /// relationship subquery.
    fn select_item(&mut self) -> Result<SelectItem, ParseError> {
        if *self.peek() == Tok::LParen {
            self.bump();
            return Ok(SelectItem::Children(Box::new(self.subquery()?)));
        }
        if let Tok::Ident(name) = self.peek().clone()
            && self.tok_at(1) == Some(&Tok::LParen)
        {
            let pos = self.pos();
            let Some(func) = AggFunc::parse(&name) else {
                return Err(err(
                    format!("function {name} is not supported by this emulator"),
                    pos,
                ));
            };
            self.bump();
            self.bump();
            let field = self.field()?;
            if *self.peek() != Tok::RParen {
                return Err(self.unexpected());
            }
            self.bump();
            let alias = match self.peek() {
                Tok::Ident(a) if !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(a)) => {
                    let a = a.clone();
                    self.bump();
                    Some(a)
                }
                _ => None,
            };
            return Ok(SelectItem::Aggregate(Aggregate {
                func,
                field,
                alias,
                pos,
            }));
        }
        Ok(SelectItem::Field(self.field()?))
    }

    /// The inside of `( ... )` after the opening parenthesis, through the
    /// closing one.
    fn subquery(&mut self) -> Result<SubQuery, ParseError> {
        self.expect_kw("SELECT")?;
        let mut fields = Vec::new();
        loop {
            if *self.peek() == Tok::LParen {
                return Err(err(
                    "a relationship subquery cannot contain another subquery",
                    self.pos(),
                ));
            }
            if matches!(self.peek(), Tok::Ident(_)) && self.tok_at(1) == Some(&Tok::LParen) {
                return Err(err(
                    "aggregate functions are not supported in relationship subqueries",
                    self.pos(),
                ));
            }
            fields.push(self.field()?);
            if *self.peek() == Tok::Comma {
                self.bump();
            } else {
                break;
            }
        }
        self.expect_kw("FROM")?;
        let (relationship, relationship_pos) = self.ident()?;
        let filter = self.where_clause()?;
        let order = self.order_by()?;
        let limit = self.limit_clause()?;
        if *self.peek() != Tok::RParen {
            return Err(self.unexpected());
        }
        self.bump();
        Ok(SubQuery {
            fields,
            relationship,
            relationship_pos,
            filter,
            order,
            limit,
        })
    }

    fn where_clause(&mut self) -> Result<Option<Cond>, ParseError> {
        if self.eat_kw("WHERE") {
            Ok(Some(self.or()?))
        } else {
            Ok(None)
        }
    }

    fn limit_clause(&mut self) -> Result<Option<u64>, ParseError> {
        if self.eat_kw("LIMIT") {
            Ok(Some(self.count_arg("LIMIT")?))
        } else {
            Ok(None)
        }
    }

    fn order_by(&mut self) -> Result<Vec<OrderItem>, ParseError> {
        let mut order = Vec::new();
        if self.eat_kw("ORDER") {
            self.expect_kw("BY")?;
            loop {
                let field = self.field()?;
                let descending = if self.eat_kw("DESC") {
                    true
                } else {
                    self.eat_kw("ASC");
                    false
                };
                let nulls_first = if self.eat_kw("NULLS") {
                    if self.eat_kw("FIRST") {
                        true
                    } else {
                        self.expect_kw("LAST")?;
                        false
                    }
                } else {
                    !descending
                };
                order.push(OrderItem {
                    field,
                    descending,
                    nulls_first,
                });
                if *self.peek() == Tok::Comma {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        Ok(order)
    }

    fn count_arg(&mut self, what: &str) -> Result<u64, ParseError> {
        let pos = self.pos();
        match self.bump() {
            Tok::Num(n) if n >= 0.0 && n.fract() == 0.0 => Ok(n as u64),
            _ => Err(err(format!("{what} must be a non-negative integer"), pos)),
        }
    }

    fn or(&mut self) -> Result<Cond, ParseError> {
        let mut left = self.and()?;
        while self.eat_kw("OR") {
            let right = self.and()?;
            left = Cond::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn and(&mut self) -> Result<Cond, ParseError> {
        let mut left = self.not()?;
        while self.eat_kw("AND") {
            let right = self.not()?;
            left = Cond::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn not(&mut self) -> Result<Cond, ParseError> {
        if self.eat_kw("NOT") {
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        self.primary()
    }
    fn primary(&mut self) -> Result<Cond, ParseError> {
        if *self.peek() == Tok::LParen {
            self.bump();
            let c = self.or()?;
            if *self.peek() != Tok::RParen {
                return Err(self.unexpected());
            }
            self.bump();
            return Ok(c);
        }
        let field = self.field()?;
        let pos = self.pos();
        if self.eat_kw("LIKE") {
            return match self.bump() {
                Tok::Str(pattern) => Ok(Cond::Like { field, pattern }),
                _ => Err(err("LIKE needs a string pattern", pos)),
            };
        }
        let negated = if is_kw(self.peek(), "NOT")
            && self.toks.get(self.i + 1).is_some_and(|t| is_kw(&t.0, "IN"))
        {
            self.bump();
            true
        } else {
            false
        };
        if self.eat_kw("IN") {
            if *self.peek() != Tok::LParen {
                return Err(self.unexpected());
            }
            self.bump();
            let mut values = vec![self.literal()?];
            while *self.peek() == Tok::Comma {
                self.bump();
                values.push(self.literal()?);
            }
            if *self.peek() != Tok::RParen {
                return Err(self.unexpected());
            }
            self.bump();
            return Ok(Cond::In {
                field,
                negated,
                values,
                pos,
            });
        }
        match self.bump() {
            Tok::Op(op) => {
                let value = self.literal()?;
                Ok(Cond::Cmp {
                    field,
                    op,
                    value,
                    pos,
                })
            }
            _ => Err(err("expecting a comparison operator", pos)),
        }
    }
    fn literal(&mut self) -> Result<Literal, ParseError> {
        let pos = self.pos();
        match self.bump() {
            Tok::Str(s) => Ok(Literal::Str(s)),
            Tok::Num(n) => Ok(Literal::Num(n)),
            Tok::Date(d) => Ok(Literal::Date(d)),
            Tok::DateTime(t) => Ok(Literal::DateTime(t)),
            Tok::Ident(s) => {
                let up = s.to_ascii_uppercase();
                match up.as_str() {
                    "TRUE" => Ok(Literal::Bool(true)),
                    "FALSE" => Ok(Literal::Bool(false)),
                    "NULL" => Ok(Literal::Null),
                    "TODAY" => Ok(Literal::DateRange {
                        start_offset: 0,
                        end_offset: 1,
                    }),
                    "YESTERDAY" => Ok(Literal::DateRange {
                        start_offset: -1,
                        end_offset: 0,
                    }),
                    "TOMORROW" => Ok(Literal::DateRange {
                        start_offset: 1,
                        end_offset: 2,
                    }),
                    "LAST_N_DAYS" | "NEXT_N_DAYS" => {
                        if *self.peek() != Tok::Colon {
                            return Err(err(format!("{up} needs a day count, e.g. {up}:30"), pos));
                        }
                        self.bump();
                        let n = self.count_arg(&up)? as i64;
                        Ok(if up == "LAST_N_DAYS" {
                            Literal::DateRange {
                                start_offset: -n,
                                end_offset: 1,
                            }
                        } else {
                            Literal::DateRange {
                                start_offset: 0,
                                end_offset: n + 1,
                            }
                        })
                    }
                    _ => Err(err(format!("unexpected token: '{s}'"), pos)),
                }
            }
            _ => {
                self.i = self.i.saturating_sub(1);
                Err(self.unexpected())
            }
        }
    }
}

/// Parses one SOQL statement.
pub fn parse(src: &str) -> Result<Query, ParseError> {
    let toks = Lexer::tokens(src)?;
    Parser { toks, i: 0 }.query()
}

/// Whether `text` matches a SOQL LIKE `pattern` (`%` any run, `_` one
/// character, `\%`/`\_` literal; case-insensitive).
pub fn like(pattern: &str, text: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        Any,
        One,
        Ch(char),
    }
    let mut ps = Vec::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        ps.push(match c {
            '%' => P::Any,
            '_' => P::One,
            '\\' => match it.next() {
                Some(e) => P::Ch(e.to_ascii_lowercase()),
                None => P::Ch('\\'),
            },
            c => P::Ch(c.to_ascii_lowercase()),
        });
    }
    let t: Vec<char> = text.chars().map(|c| c.to_ascii_lowercase()).collect();
    // Iterative matching with backtracking on the last `%`.
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < ps.len() && (ps[pi] == P::One || ps[pi] == P::Ch(t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < ps.len() && ps[pi] == P::Any {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < ps.len() && ps[pi] == P::Any {
        pi += 1;
    }
    pi == ps.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_typical_sync_query() {
        let q = parse(
            "SELECT Id, Name, Account.Name FROM Opportunity WHERE SystemModstamp >= 2026-01-01T00:00:00Z \
             AND (StageName IN ('Prospecting','Closed Won') OR NOT Amount < 100.5) AND Name LIKE 'Acme%' \
             ORDER BY SystemModstamp ASC, Id DESC NULLS LAST LIMIT 200 OFFSET 10",
        )
        .unwrap();
        assert_eq!(q.from, "Opportunity");
        match &q.select {
            Select::Items(f) => {
                assert!(matches!(&f[2], SelectItem::Field(p) if p.parts == vec!["Account", "Name"]))
            }
            Select::Count => panic!("expected fields"),
        }
        assert_eq!(q.order.len(), 2);
        assert!(q.order[1].descending && !q.order[1].nulls_first);
        assert_eq!(q.limit, Some(200));
        assert_eq!(q.offset, Some(10));
        assert!(matches!(q.filter, Some(Cond::And(..))));
    }

    #[test]
    fn parses_count_and_literals() {
        let q = parse("select count() from Contact where Email != null and CreatedDate = LAST_N_DAYS:7 and IsDeleted = false").unwrap();
        assert_eq!(q.select, Select::Count);
        let q = parse(
            "SELECT Id FROM Opportunity WHERE CloseDate > 2026-05-20 AND Amount NOT IN (1, -2.5)",
        )
        .unwrap();
        assert!(q.filter.is_some());
    }

    #[test]
    fn reports_errors_with_columns() {
        let e = parse("SELECT Id FROM").unwrap_err();
        assert!(e.message.contains("<EOF>"), "{e}");
        let e = parse("SELECT Id, FROM Opportunity").unwrap_err();
        assert_eq!(e.column, 12);
        assert!(parse("SELECT Id FROM Opportunity WHERE Name = 'open").is_err());
        assert!(parse("SELECT Id FROM Opportunity LIMIT -1").is_err());
        assert!(parse("SELECT Id FROM Opportunity WHERE Amount > ").is_err());
        assert!(parse("SELECT Id FROM Opportunity garbage").is_err());
        assert!(
            parse("SELECT Id, (SELECT Id FROM OpportunityContactRoles FROM Opportunity").is_err()
        );
        assert!(parse("SELECT Id, (SELECT (SELECT Id FROM X) FROM Y) FROM Opportunity").is_err());
        assert!(
            parse("SELECT COUNT(Id) FROM Opportunity GROUP BY StageName HAVING COUNT(Id) > 1")
                .is_err()
        );
        assert!(parse("SELECT FORMAT(Amount) FROM Opportunity").is_err());
        assert!(parse("").is_err());
        assert!(parse("SELECT Id FROM Opportunity WHERE CloseDate > 2026-13-45").is_err());
    }

    #[test]
    fn parses_subqueries_and_aggregates() {
        let q = parse(
            "SELECT Id, Name, (SELECT ContactId, Role FROM OpportunityContactRoles WHERE IsPrimary = true ORDER BY Role LIMIT 5) FROM Opportunity",
        )
        .unwrap();
        let Select::Items(items) = &q.select else {
            panic!("items")
        };
        let SelectItem::Children(sub) = &items[2] else {
            panic!("subquery: {items:?}")
        };
        assert_eq!(sub.relationship, "OpportunityContactRoles");
        assert_eq!(sub.fields.len(), 2);
        assert!(sub.filter.is_some());
        assert_eq!(sub.limit, Some(5));
        let q = parse("SELECT StageName, COUNT(Id), MAX(Amount) top FROM Opportunity GROUP BY StageName ORDER BY StageName").unwrap();
        assert!(q.select.has_aggregates());
        assert_eq!(q.group_by.len(), 1);
        let Select::Items(items) = &q.select else {
            panic!("items")
        };
        assert!(
            matches!(&items[2], SelectItem::Aggregate(a) if a.func == AggFunc::Max && a.alias.as_deref() == Some("top"))
        );
        assert_eq!(
            parse("SELECT COUNT() FROM Opportunity").unwrap().select,
            Select::Count
        );
    }

    #[test]
    fn like_matches() {
        assert!(like("Acme%", "ACME Corp"));
        assert!(like("%corp", "Acme Corp"));
        assert!(like("A_me", "Acme"));
        assert!(!like("A_me", "Acmme"));
        assert!(like("100\\%", "100%"));
        assert!(!like("100\\%", "1000"));
        assert!(like("%", ""));
    }
}
