//! `$VAR` / `${VAR}` expansion over the whole config text, with the rules of Go's
//! `os.Expand` as Litestream uses it (`$PID` is the process id, unknown variables
//! become empty).
//!
//! One deliberate difference: `$$` is an escape for a literal `$`. Go maps `$$` to the
//! (practically always empty) variable named `$`, which left no way to write a dollar
//! sign in an expanded file; nothing that worked under Litestream changes meaning.

/// Environment lookup used by the parser; tests pass a fake one.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expands `$NAME`, `${NAME}` and the shell specials (`$1`, `$?`, …) in `text`.
pub fn expand_env(text: &str, env: EnvLookup<'_>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        match shell_name(after) {
            Name::Var(name, width) => {
                if let Some(value) = lookup(name, env) {
                    out.push_str(&value);
                }
                rest = &after[width..];
            }
            Name::Escape => {
                out.push('$');
                rest = &after[1..];
            }
            Name::BadSyntax(width) => rest = &after[width..],
            Name::None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn lookup(name: &str, env: EnvLookup<'_>) -> Option<String> {
    if name == "PID" {
        return Some(std::process::id().to_string());
    }
    env(name)
}

enum Name<'a> {
    /// A variable name and how many bytes after the `$` it spans.
    Var(&'a str, usize),
    /// `$$`.
    Escape,
    /// Malformed `${…`: Go eats this many bytes.
    BadSyntax(usize),
    /// A lone `$`, kept as is.
    None,
}

fn is_special(b: u8) -> bool {
    matches!(b, b'*' | b'#' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9')
}

fn is_alnum(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphanumeric()
}

fn shell_name(s: &str) -> Name<'_> {
    let bytes = s.as_bytes();
    match bytes.first() {
        None => Name::None,
        Some(b'$') => Name::Escape,
        Some(b'{') => {
            if bytes.len() > 2 && (is_special(bytes[1]) || bytes[1] == b'$') && bytes[2] == b'}' {
                return Name::Var(&s[1..2], 3);
            }
            match s.find('}') {
                Some(1) => Name::BadSyntax(2),
                Some(end) => Name::Var(&s[1..end], end + 1),
                None => Name::BadSyntax(1),
            }
        }
        Some(&b) if is_special(b) => Name::Var(&s[..1], 1),
        Some(_) => {
            let len = bytes.iter().take_while(|b| is_alnum(**b)).count();
            if len == 0 { Name::None } else { Name::Var(&s[..len], len) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "BUCKET" => Some("my-bucket".into()),
            "A_1" => Some("x".into()),
            "1" => Some("one".into()),
            _ => None,
        }
    }

    fn exp(s: &str) -> String {
        expand_env(s, &env)
    }

    #[test]
    fn expands_like_go_os_expand() {
        assert_eq!(exp("bucket: $BUCKET"), "bucket: my-bucket");
        assert_eq!(exp("bucket: ${BUCKET}/x"), "bucket: my-bucket/x");
        assert_eq!(exp("$A_1-$A_1"), "x-x");
        assert_eq!(exp("${MISSING}|$MISSING|"), "||");
        assert_eq!(exp("$1abc"), "oneabc");
        assert_eq!(exp("a$"), "a$");
        assert_eq!(exp("a $ b $/c"), "a $ b $/c");
        assert_eq!(exp("x${}y"), "xy");
        assert_eq!(exp("x${y"), "xy");
        assert_eq!(exp("pä$BUCKET€"), "pämy-bucket€");
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        assert_eq!(exp("pa$$word"), "pa$word");
        assert_eq!(exp("$$BUCKET"), "$BUCKET");
        assert_eq!(exp("${$}"), "");
    }

    #[test]
    fn pid_is_the_process_id() {
        assert_eq!(exp("/tmp/$PID.db"), format!("/tmp/{}.db", std::process::id()));
    }
}
