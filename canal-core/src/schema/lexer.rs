//! A MySQL/MariaDB tokenizer for DDL: backquoted identifiers, quoted strings with escapes, numbers,
//! comments (`/* */`, `-- `, `#`) and executable version comments (`/*!50001 ... */`,
//! `/*M!100101 ... */`) whose contents are code. It never panics; malformed input is a
//! [`LexError`].

use thiserror::Error;

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// An unquoted word: keyword or identifier (compare keywords case-insensitively).
    Word,
    /// A backquoted identifier; `text` has the quotes removed and ``` `` ``` unescaped.
    QuotedIdent,
    /// A `'...'` string; `text` is the unescaped value.
    Str,
    /// A `"..."` string (an identifier under `ANSI_QUOTES`); `text` is the unescaped value.
    DoubleStr,
    /// A numeric literal as written.
    Number,
    /// `@name` or `@@name` (user or system variable), as written.
    Variable,
    /// Any other single character (`(`, `)`, `,`, `.`, `;`, `=`, ...).
    Punct,
}

/// One token with its byte offset in the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// Kind of token.
    pub kind: TokenKind,
    /// Text (unescaped for identifiers and strings).
    pub text: String,
    /// Byte offset of the token's first character.
    pub offset: usize,
}

impl Token {
    /// Whether this is the unquoted keyword `kw` (ASCII case-insensitive).
    pub fn is_kw(&self, kw: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(kw)
    }

    /// Whether this is the punctuation character `c`.
    pub fn is_punct(&self, c: char) -> bool {
        self.kind == TokenKind::Punct && self.text.len() == c.len_utf8() && self.text.starts_with(c)
    }
}

/// Why the input could not be tokenized.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LexError {
    /// A string or quoted identifier has no closing quote.
    #[error("unterminated {what} starting at byte {offset}")]
    Unterminated {
        /// `string`, `quoted identifier` or `comment`.
        what: &'static str,
        /// Byte offset of the opening quote.
        offset: usize,
    },
}

/// Splits `sql` into tokens, dropping whitespace and comments and keeping the contents of
/// executable comments (`/*!...*/`, `/*M!...*/`), because mysqldump and the server itself wrap real
/// DDL in them.
pub fn tokenize(sql: &str) -> Result<Vec<Token>, LexError> {
    let mut lx = Lexer { src: sql, pos: 0, in_exec_comment: false, out: Vec::new(), limit: None };
    lx.run()?;
    Ok(lx.out)
}

/// The first `max` tokens of `sql` (fewer if it is shorter): enough to classify statement DML,
/// whose text can be megabytes of VALUES, without tokenizing all of it.
pub(crate) fn tokenize_prefix(sql: &str, max: usize) -> Result<Vec<Token>, LexError> {
    let mut lx =
        Lexer { src: sql, pos: 0, in_exec_comment: false, out: Vec::new(), limit: Some(max) };
    lx.run()?;
    Ok(lx.out)
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    in_exec_comment: bool,
    out: Vec<Token>,
    limit: Option<usize>,
}

fn is_ident_char(c: char) -> bool {
    // MySQL allows any character from U+0080 up in unquoted identifiers.
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn push(&mut self, kind: TokenKind, text: String, offset: usize) {
        self.out.push(Token { kind, text, offset });
    }

    fn run(&mut self) -> Result<(), LexError> {
        while let Some(c) = self.peek() {
            if self.limit.is_some_and(|l| self.out.len() >= l) {
                break;
            }
            let start = self.pos;
            match c {
                c if c.is_whitespace() => {
                    self.bump();
                }
                '#' => self.skip_line(),
                '-' if self.rest().starts_with("--")
                    && self.peek_at(2).is_none_or(|c| c.is_whitespace() || c.is_control()) =>
                {
                    self.skip_line()
                }
                '/' if self.rest().starts_with("/*") => self.comment()?,
                '*' if self.in_exec_comment && self.rest().starts_with("*/") => {
                    self.pos += 2;
                    self.in_exec_comment = false;
                }
                '`' => {
                    let text = self.quoted('`', false, "quoted identifier")?;
                    self.push(TokenKind::QuotedIdent, text, start);
                }
                '\'' => {
                    let text = self.quoted('\'', true, "string")?;
                    self.push(TokenKind::Str, text, start);
                }
                '"' => {
                    let text = self.quoted('"', true, "string")?;
                    self.push(TokenKind::DoubleStr, text, start);
                }
                '@' => {
                    self.bump();
                    if self.peek() == Some('@') {
                        self.bump();
                    }
                    match self.peek() {
                        // `@'user'@'host'` and quoted variable names.
                        Some(q @ ('\'' | '"' | '`')) => {
                            self.quoted(q, q != '`', "string")?;
                        }
                        _ => {
                            while self.peek().is_some_and(|c| is_ident_char(c) || c == '.') {
                                self.bump();
                            }
                        }
                    }
                    let text = self.src[start..self.pos].to_owned();
                    self.push(TokenKind::Variable, text, start);
                }
                c if c.is_ascii_digit() => self.number_or_word(),
                '.' if self.peek_at(1).is_some_and(|c| c.is_ascii_digit())
                    && !self.prev_is_name() =>
                {
                    self.number_or_word()
                }
                c if is_ident_char(c) => {
                    while self.peek().is_some_and(is_ident_char) {
                        self.bump();
                    }
                    let text = self.src[start..self.pos].to_owned();
                    self.push(TokenKind::Word, text, start);
                }
                _ => {
                    self.bump();
                    let text = self.src[start..self.pos].to_owned();
                    self.push(TokenKind::Punct, text, start);
                }
            }
        }
        Ok(())
    }

    /// After a name, `.5x` is a qualifier dot followed by a name, not a number (`db.5tbl`).
    fn prev_is_name(&self) -> bool {
        self.out.last().is_some_and(|t| matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent))
    }

    fn skip_line(&mut self) {
        match self.rest().find('\n') {
            Some(i) => self.pos += i + 1,
            None => self.pos = self.src.len(),
        }
    }

    fn comment(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        let rest = self.rest();
        let exec_prefix = if rest.starts_with("/*!") {
            Some(3)
        } else if rest.starts_with("/*M!") {
            Some(4)
        } else {
            None
        };
        if let (Some(skip), false) = (exec_prefix, self.in_exec_comment) {
            // Executable comment: drop the marker and the optional version number; the body is code.
            self.pos += skip;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
            self.in_exec_comment = true;
            return Ok(());
        }
        match rest[2..].find("*/") {
            Some(i) => {
                self.pos += 2 + i + 2;
                Ok(())
            }
            None => Err(LexError::Unterminated { what: "comment", offset: start }),
        }
    }

    fn quoted(&mut self, q: char, escapes: bool, what: &'static str) -> Result<String, LexError> {
        let start = self.pos;
        self.bump();
        let mut text = String::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(LexError::Unterminated { what, offset: start });
            };
            if c == q {
                if self.peek() == Some(q) {
                    // A doubled quote stands for one quote character.
                    self.bump();
                    text.push(q);
                    continue;
                }
                return Ok(text);
            }
            if c == '\\' && escapes {
                let Some(e) = self.bump() else {
                    return Err(LexError::Unterminated { what, offset: start });
                };
                match e {
                    'n' => text.push('\n'),
                    't' => text.push('\t'),
                    'r' => text.push('\r'),
                    '0' => text.push('\0'),
                    'b' => text.push('\u{8}'),
                    'Z' => text.push('\u{1a}'),
                    // MySQL keeps the backslash for the LIKE wildcards.
                    '%' | '_' => {
                        text.push('\\');
                        text.push(e);
                    }
                    other => text.push(other),
                }
                continue;
            }
            text.push(c);
        }
    }

    fn number_or_word(&mut self) {
        let start = self.pos;
        let rest = self.rest();
        let is_hex = rest.len() > 2
            && (rest.starts_with("0x") || rest.starts_with("0b"))
            && rest[2..].chars().next().is_some_and(|c| c.is_ascii_hexdigit());
        if is_hex {
            self.pos += 2;
            while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                self.bump();
            }
        } else {
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
            if self.peek() == Some('.')
                && self.peek_at(1).is_none_or(|c| !is_ident_char(c) || c.is_ascii_digit())
            {
                self.bump();
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.bump();
                }
            }
            if matches!(self.peek(), Some('e' | 'E')) {
                let digit_after = match self.peek_at(1) {
                    Some('+' | '-') => self.peek_at(2).is_some_and(|c| c.is_ascii_digit()),
                    Some(c) => c.is_ascii_digit(),
                    None => false,
                };
                if digit_after {
                    self.bump();
                    if matches!(self.peek(), Some('+' | '-')) {
                        self.bump();
                    }
                    while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                        self.bump();
                    }
                }
            }
        }
        if self.peek().is_some_and(is_ident_char) {
            // Identifiers may start with digits (`2024_orders`): the whole run is a word.
            while self.peek().is_some_and(is_ident_char) {
                self.bump();
            }
            let text = self.src[start..self.pos].to_owned();
            self.push(TokenKind::Word, text, start);
        } else {
            let text = self.src[start..self.pos].to_owned();
            self.push(TokenKind::Number, text, start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(TokenKind, String)> {
        tokenize(sql).unwrap().into_iter().map(|t| (t.kind, t.text)).collect()
    }

    #[test]
    fn quoted_identifiers_and_strings_unescape() {
        let toks = kinds(r"`a``b` 'it''s\n' 'x\'y' `x.y`");
        assert_eq!(
            toks,
            vec![
                (TokenKind::QuotedIdent, "a`b".into()),
                (TokenKind::Str, "it's\n".into()),
                (TokenKind::Str, "x'y".into()),
                (TokenKind::QuotedIdent, "x.y".into()),
            ]
        );
    }

    #[test]
    fn comments_are_skipped_and_version_comments_are_code() {
        let toks =
            kinds("/* c */ ALTER -- x\n TABLE # y\n /*!40000 t DISABLE */ KEYS /*M!100101 x*/");
        let words: Vec<_> = toks.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(words, ["ALTER", "TABLE", "t", "DISABLE", "KEYS", "x"]);
    }

    #[test]
    fn double_dash_needs_whitespace() {
        let toks = kinds("1--2");
        assert_eq!(toks.len(), 4);
    }

    #[test]
    fn numbers_and_digit_led_identifiers() {
        let toks = kinds("12 1.5 1e10 0x1F 2024_orders db.5t");
        assert_eq!(toks[0].0, TokenKind::Number);
        assert_eq!(toks[1], (TokenKind::Number, "1.5".into()));
        assert_eq!(toks[2], (TokenKind::Number, "1e10".into()));
        assert_eq!(toks[3], (TokenKind::Number, "0x1F".into()));
        assert_eq!(toks[4], (TokenKind::Word, "2024_orders".into()));
        assert_eq!(toks[5], (TokenKind::Word, "db".into()));
        assert_eq!(toks[6], (TokenKind::Punct, ".".into()));
        assert_eq!(toks[7], (TokenKind::Word, "5t".into()));
    }

    #[test]
    fn unterminated_inputs_are_errors() {
        assert!(matches!(tokenize("'abc"), Err(LexError::Unterminated { what: "string", .. })));
        assert!(matches!(tokenize("`abc"), Err(LexError::Unterminated { .. })));
        assert!(matches!(tokenize("/* abc"), Err(LexError::Unterminated { what: "comment", .. })));
        assert!(tokenize("'a\\").is_err());
    }
}
