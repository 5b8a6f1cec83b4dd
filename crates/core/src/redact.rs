//! Hiding credentials in URLs before they are shown (API answers, logs, error messages).

/// Removes user:password@ (and any token) from URLs in a text, for logs and errors.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        let end = after.find(ends_url).unwrap_or(after.len());
        let (url, tail) = after.split_at(end);
        // Userinfo ends at the last '@' before any query or fragment. Scanning past '/' too
        // means a password with an unescaped '/' is still hidden, at the price of hiding the
        // host of the odd URL whose path holds an '@'.
        let query_at = url.find(['?', '#']).unwrap_or(url.len());
        let (front, query) = url.split_at(query_at);
        match front.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&front[at..]);
            }
            None => out.push_str(front),
        }
        out.push_str(&redact_query(query));
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Characters that end a URL inside a log line or message.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\'' | '"' | '<' | '>' | '`')
}

/// Blanks the values of query parameters that look like credentials (`?private_token=...`).
fn redact_query(query: &str) -> String {
    let Some(params) = query.strip_prefix('?') else {
        return query.to_string();
    };
    let (params, fragment) = match params.find('#') {
        Some(i) => params.split_at(i),
        None => (params, ""),
    };
    let params: Vec<String> = params
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    format!("?{}{fragment}", params.join("&"))
}

/// True for query parameter names that carry credentials.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["token", "pass", "secret", "key", "auth", "sig", "cred"]
        .iter()
        .any(|s| k.contains(s))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn hides_userinfo_and_token_parameters() {
        assert_eq!(
            redact("https://user:secret@host/x.git"),
            "https://***@host/x.git"
        );
        assert_eq!(
            redact("clone https://h/r?private_token=abc&x=1 failed"),
            "clone https://h/r?private_token=***&x=1 failed"
        );
        assert_eq!(redact("/srv/git/fw"), "/srv/git/fw");
        assert_eq!(redact("git@host:org/fw.git"), "git@host:org/fw.git");
    }
}
