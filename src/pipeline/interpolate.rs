//! `${VAR}` and `${VAR:-default}` in pipeline files, so that secrets stay in
//! the environment. `$${` writes a literal `${`.
//!
//! Interpolation is done on the text before YAML parsing (as Vector does), so
//! a variable may stand for a number or a bool too. Every substituted value is
//! remembered, so error messages can redact it: a secret never reaches a log.

/// The text with variables replaced, the values substituted (to redact), and
/// the unset variables with their line and column (1-based).
pub struct Interpolated {
    pub text: String,
    pub substituted: Vec<String>,
    pub missing: Vec<(String, usize, usize)>,
}

pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Interpolated {
    let mut out = String::with_capacity(text.len());
    let mut substituted = Vec::new();
    let mut missing = Vec::new();
    let (mut line, mut col) = (1, 1);
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        let (before, after) = rest.split_at(i);
        out.push_str(before);
        for c in before.chars() {
            if c == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        if let Some(lit) = after.strip_prefix("$${") {
            out.push_str("${");
            col += 3;
            rest = lit;
            continue;
        }
        let Some(body_start) = after.strip_prefix("${") else {
            out.push('$');
            col += 1;
            rest = &after[1..];
            continue;
        };
        let Some(end) = body_start.find('}') else {
            out.push_str(after);
            rest = "";
            break;
        };
        let body = &body_start[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        match lookup(name)
            .filter(|v| !v.is_empty())
            .or_else(|| default.map(str::to_string))
        {
            Some(v) => {
                if !v.is_empty() && default != Some(v.as_str()) {
                    substituted.push(v.clone());
                }
                out.push_str(&v);
            }
            None => missing.push((name.to_string(), line, col)),
        }
        col += body.len() + 3;
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    Interpolated {
        text: out,
        substituted,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.internal".into()),
            "PASSWORD" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_variables_and_defaults() {
        let r = interpolate(
            "url: postgres://u:${PASSWORD}@${HOST}/x\nport: ${PORT:-5432}\n",
            env,
        );
        assert_eq!(
            r.text,
            "url: postgres://u:s3cret@db.internal/x\nport: 5432\n"
        );
        assert!(r.substituted.contains(&"s3cret".to_string()));
        assert!(r.missing.is_empty());
    }

    #[test]
    fn empty_variable_takes_the_default() {
        assert_eq!(interpolate("a: ${EMPTY:-d}", env).text, "a: d");
    }

    #[test]
    fn reports_unset_variables_with_position() {
        let r = interpolate("a: 1\nb: x${NOPE}\n", env);
        assert_eq!(r.missing, vec![("NOPE".to_string(), 2, 5)]);
    }

    #[test]
    fn escapes_and_lone_dollars_stay() {
        assert_eq!(
            interpolate("a: $${HOST} costs $5", env).text,
            "a: ${HOST} costs $5"
        );
    }
}
