//! Where a repository URL points (a local path or a remote host), and whether that host may be
//! used: link-local and cloud metadata addresses never, others as `allowed_hosts` says. Pure, so
//! the server (at submit) and the worker (right before each fetch) apply the same rules.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

/// A repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoTarget<'a> {
    /// A local path, as written after any `file://` (absolute if the URL was valid).
    Local(&'a str),
    /// A repository on another host.
    Remote(Remote<'a>),
}

/// The parts of a remote repository URL that policy and credential handling need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote<'a> {
    /// `http`, `https`, `ssh`, `git`, or `scp` for the `user@host:path` form.
    pub scheme: &'static str,
    /// What stands before the `@` of the authority (`user` or `user:password`), still encoded.
    pub userinfo: Option<&'a str>,
    /// Byte range of `userinfo@` in the URL, for removing it.
    pub userinfo_span: Option<Range<usize>>,
    /// The host as written, without IPv6 brackets.
    pub host: &'a str,
    /// The host and port as written (`host:8080`, `[::1]:22`), as git names it to credential
    /// helpers.
    pub host_port: &'a str,
}

/// Splits a repository URL into a local path or a remote one; anything else (another scheme,
/// a `transport::address` remote helper, a relative path) is refused with a message.
/// Checks nothing else: [`crate::validate::check_repo`] does that at submit.
pub fn parse(repo: &str) -> Result<RepoTarget<'_>, String> {
    if repo.starts_with('/') {
        return Ok(RepoTarget::Local(repo));
    }
    let lower = repo.to_ascii_lowercase();
    if lower.starts_with("file://") {
        return Ok(RepoTarget::Local(&repo["file://".len()..]));
    }
    for scheme in ["http", "https", "ssh", "git"] {
        let prefix_len = scheme.len() + 3;
        if lower.len() >= prefix_len
            && lower.starts_with(scheme)
            && &lower[scheme.len()..prefix_len] == "://"
        {
            let start = prefix_len;
            let rest = &repo[start..];
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..end];
            let (userinfo, userinfo_span, host_port) = match authority.rfind('@') {
                Some(at) => (
                    Some(&authority[..at]),
                    Some(start..start + at + 1),
                    &authority[at + 1..],
                ),
                None => (None, None, authority),
            };
            let host = host_of(host_port)
                .ok_or_else(|| format!("'{}' has no host", crate::redact::redact(repo)))?;
            return Ok(RepoTarget::Remote(Remote {
                scheme,
                userinfo,
                userinfo_span,
                host,
                host_port,
            }));
        }
    }
    let is_transport = |i: usize| {
        i > 0
            && repo[..i]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    };
    // Another scheme (git would hand it to a remote helper), or `<transport>::<address>`
    // (`ext::`, `fd::`), which runs arbitrary helpers.
    let foreign = lower.contains("://") || repo.find("::").is_some_and(is_transport);
    // git's scp-like syntax, `[user@]host:path`: a colon before any slash.
    if !foreign {
        if let Some(colon) = scp_colon(repo) {
            let front = &repo[..colon];
            let (userinfo, userinfo_span, host_port) = match front.rfind('@') {
                Some(at) => (Some(&front[..at]), Some(0..at + 1), &front[at + 1..]),
                None => (None, None, front),
            };
            let host = host_port
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host_port);
            if !host.is_empty() {
                return Ok(RepoTarget::Remote(Remote {
                    scheme: "scp",
                    userinfo,
                    userinfo_span,
                    host,
                    host_port,
                }));
            }
        }
    }
    Err(format!(
        "'{}' is neither an http(s)://, ssh://, git:// or user@host:path URL nor an absolute local path",
        crate::redact::redact(repo)
    ))
}

/// Where the host part of an scp-like URL ends: the first ':' outside brackets, if it comes
/// before any '/'.
fn scp_colon(repo: &str) -> Option<usize> {
    let mut in_brackets = false;
    for (i, c) in repo.char_indices() {
        match c {
            '[' => in_brackets = true,
            ']' => in_brackets = false,
            ':' if !in_brackets => return (i > 0).then_some(i),
            '/' => return None,
            _ => {}
        }
    }
    None
}

/// The host of `host[:port]` or `[v6][:port]`; `None` if empty or malformed.
fn host_of(host_port: &str) -> Option<&str> {
    let host = if let Some(inner) = host_port.strip_prefix('[') {
        let close = inner.find(']')?;
        let after = &inner[close + 1..];
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        &inner[..close]
    } else {
        match host_port.rfind(':') {
            Some(i) => &host_port[..i],
            None => host_port,
        }
    };
    (!host.is_empty()).then_some(host)
}

/// Host names of cloud metadata services (compared without case or trailing dot).
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Why a host may never be fetched from, whatever `allowed_hosts` says: link-local addresses
/// (169.254.0.0/16, fe80::/10, in any spelling an URL parser accepts, IPv4-mapped or NAT64
/// included) and the addresses and names of cloud metadata services. `None` if it may be.
/// Only literal hosts are recognised; a name that resolves to such an address is not.
pub fn forbidden_host(host: &str) -> Option<&'static str> {
    let h = normalise(host);
    if METADATA_NAMES.contains(&h.as_str()) {
        return Some("cloud metadata service");
    }
    if let Some(v4) = parse_ipv4_loose(&h) {
        return forbidden_v4(v4);
    }
    let v6_text = h.split('%').next().unwrap_or("");
    if let Ok(v6) = v6_text.parse::<Ipv6Addr>() {
        let s = v6.segments();
        if s[0] & 0xffc0 == 0xfe80 {
            return Some("link-local address");
        }
        // AWS's IPv6 instance metadata endpoint.
        if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
            return Some("cloud metadata service");
        }
        if let Some(v4) = v6.to_ipv4_mapped() {
            return forbidden_v4(v4);
        }
        // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
        if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
            let o = v6.octets();
            return forbidden_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
        }
    }
    None
}

/// [`forbidden_host`] for IPv4.
fn forbidden_v4(v4: Ipv4Addr) -> Option<&'static str> {
    if v4.is_link_local() {
        Some("link-local address")
    } else if v4 == Ipv4Addr::new(100, 100, 100, 200) {
        // Alibaba Cloud's metadata service.
        Some("cloud metadata service")
    } else {
        None
    }
}

/// An IPv4 address in any form `inet_aton` (and so curl and ssh) accepts: 1 to 4 parts, each
/// decimal, octal (leading 0) or hex (0x), the last one filling the remaining bytes.
fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or(p.strip_prefix("0X")) {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if p.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        let v = if digits.is_empty() {
            0
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        values.push(v);
    }
    let (last, front) = values.split_last()?;
    if front.iter().any(|&v| v > 255) {
        return None;
    }
    let last_bits = 8 * (4 - front.len() as u32);
    if *last >= 1u64 << last_bits {
        return None;
    }
    let mut addr: u64 = 0;
    for (i, v) in front.iter().enumerate() {
        addr |= v << (24 - 8 * i as u32);
    }
    addr |= last;
    Some(Ipv4Addr::from(u32::try_from(addr).ok()?))
}

/// Lower case, no IPv6 brackets, no trailing dot.
fn normalise(host: &str) -> String {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
}

/// True if `host` matches `pattern`: equal (ignoring case), `*.example.com` for any host under
/// example.com (not example.com itself), or `*` for any host.
pub fn host_matches(host: &str, pattern: &str) -> bool {
    let host = normalise(host);
    let pattern = normalise(pattern);
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => !pattern.is_empty() && host == pattern,
    }
}

/// Checks one host: never a forbidden one ([`forbidden_host`]); with a non-empty
/// `allowed_hosts`, one that matches a pattern ([`host_matches`]).
pub fn check_host(host: &str, allowed_hosts: &[String]) -> Result<(), String> {
    if let Some(why) = forbidden_host(host) {
        return Err(format!(
            "repository host '{host}' is a {why} and is never allowed"
        ));
    }
    if !allowed_hosts.is_empty() && !allowed_hosts.iter().any(|p| host_matches(host, p)) {
        return Err(format!(
            "repository host '{host}' is not an allowed host ({}; see --allowed-hosts)",
            allowed_hosts.join(", ")
        ));
    }
    Ok(())
}

/// Checks the host of a repository URL against [`check_host`]; local paths pass (they are
/// governed by the allowed local roots). For the server to call after `check_repo`.
pub fn check_repo_host(repo: &str, allowed_hosts: &[String]) -> Result<(), String> {
    match parse(repo.trim())? {
        RepoTarget::Local(_) => Ok(()),
        RepoTarget::Remote(r) => check_host(r.host, allowed_hosts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(url: &str) -> Remote<'_> {
        match parse(url).unwrap() {
            RepoTarget::Remote(r) => r,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn parses_the_url_forms_git_accepts() {
        let r = remote("https://user:tok@Git.Example.com:8443/a/b.git");
        assert_eq!(
            (r.scheme, r.userinfo, r.host, r.host_port),
            (
                "https",
                Some("user:tok"),
                "Git.Example.com",
                "Git.Example.com:8443"
            )
        );
        assert_eq!(
            &"https://user:tok@Git.Example.com:8443/a/b.git"[r.userinfo_span.unwrap()],
            "user:tok@"
        );
        let r = remote("ssh://git@[fe80::1%25eth0]:22/x");
        assert_eq!((r.scheme, r.host), ("ssh", "fe80::1%25eth0"));
        let r = remote("git@github.com:o/r.git");
        assert_eq!(
            (r.scheme, r.userinfo, r.host),
            ("scp", Some("git"), "github.com")
        );
        let r = remote("git@[::1]:o/r.git");
        assert_eq!(r.host, "::1");
        assert_eq!(remote("git://h/a").host, "h");
        assert_eq!(
            parse("/srv/git/a").unwrap(),
            RepoTarget::Local("/srv/git/a")
        );
        assert_eq!(
            parse("FILE:///srv/git/a").unwrap(),
            RepoTarget::Local("/srv/git/a")
        );
        for bad in [
            "ext::sh -c touch% /tmp/pwned",
            "fd::3",
            "relative/path",
            "ftp://h/a",
            "https://",
            "https://u:p@/x",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        // The password never reaches the message.
        assert!(!parse("https://u:hunter2@/x")
            .unwrap_err()
            .contains("hunter2"));
    }

    #[test]
    fn link_local_and_metadata_hosts_are_always_refused() {
        for h in [
            "169.254.169.254",
            "169.254.0.1",
            "[fe80::1]",
            "fe80::1%eth0",
            "FEBF::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "fd00:ec2::254",
            "100.100.100.200",
            "metadata.google.internal",
            "Metadata.Google.Internal.",
            // inet_aton spellings of 169.254.169.254, which curl and ssh accept too.
            "2852039166",
            "0xa9fea9fe",
            "0251.0376.0251.0376",
            "169.254.43518",
            "169.16689662",
            "169.254.169.254.",
        ] {
            assert!(forbidden_host(h).is_some(), "{h}");
            assert!(check_host(h, &[]).is_err(), "{h}");
            assert!(check_host(h, &["*".into()]).is_err(), "{h}");
        }
        for h in [
            "github.com",
            "127.0.0.1",
            "10.0.0.1",
            "169.255.0.1",
            "::1",
            "fec0::1",
            "metadata.example.com",
            "1.2.3.4.5",
            "999.1.1.1",
        ] {
            assert_eq!(forbidden_host(h), None, "{h}");
        }
        assert!(check_repo_host("http://169.254.169.254/latest", &[]).is_err());
        assert!(check_repo_host("git@[fe80::1]:x", &[]).is_err());
        assert!(check_repo_host("https://u:p@0xa9fea9fe/x", &[])
            .unwrap_err()
            .contains("link-local"));
    }

    #[test]
    fn allowed_hosts_patterns() {
        let allowed = vec!["git.example.com".to_string(), "*.corp.example".to_string()];
        for ok in [
            "https://git.example.com/a.git",
            "https://GIT.example.com./a.git",
            "ssh://git@git.example.com:2222/a",
            "git@build.corp.example:fw.git",
            "https://a.b.corp.example/x",
            "/srv/git/local",
        ] {
            assert_eq!(check_repo_host(ok, &allowed), Ok(()), "{ok}");
        }
        for bad in [
            "https://example.com/a.git",
            "https://git.example.com.evil.org/a.git",
            "https://corp.example/x",
            "https://evilcorp.example/x",
            "https://git.example.com@evil.org/x",
        ] {
            let e = check_repo_host(bad, &allowed).unwrap_err();
            assert!(e.contains("not an allowed host"), "{bad}: {e}");
        }
        // No list: any host (but the forbidden ones).
        assert_eq!(check_repo_host("https://anything.org/x", &[]), Ok(()));
        assert!(host_matches("x.y", "*"));
        assert!(!host_matches("x.y", ""));
    }
}
