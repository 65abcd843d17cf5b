//! Passwords out of sight: [`redact_url`] for what backbone shows, `scrub_password` for texts
//! from elsewhere that might quote one.

/// `url` with the password of its user info (`user:password@`) replaced by `***`, and the
/// values of `pass=` and `password=` query parameters too (a unix socket URL's credentials).
///
/// ```
/// use backbone_redis::settings::redact_url;
///
/// assert_eq!(redact_url("redis://bb:Sup3rS3cret@127.0.0.1:99999"), "redis://bb:***@127.0.0.1:99999");
/// assert_eq!(redact_url("rediss://:token@host:6380/0"), "rediss://:***@host:6380/0");
/// assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
/// assert_eq!(
///     redact_url("redis://u:a,b@10.0.0.1:7000,redis://u:a,b@10.0.0.2:7000"),
///     "redis://u:***@10.0.0.1:7000,redis://u:***@10.0.0.2:7000"
/// );
/// assert_eq!(redact_url("redis+unix:///run/redis.sock"), "redis+unix:///run/redis.sock");
/// assert_eq!(
///     redact_url("redis+unix:///run/redis.sock?user=bb&pass=s3cret&db=1"),
///     "redis+unix:///run/redis.sock?user=bb&pass=***&db=1"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    split_seeds(url)
        .into_iter()
        .map(redact_one)
        .collect::<Vec<_>>()
        .join(",")
}

/// The URLs of a comma-separated list of a cluster's seed nodes (one URL gives itself). A
/// comma splits only where a URL scheme follows, so a comma inside a password splits nothing.
pub(crate) fn split_seeds(url: &str) -> Vec<&str> {
    const SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+unix://", "unix://"];
    let mut seeds = Vec::new();
    let mut start = 0;
    for (at, _) in url.match_indices(',') {
        let rest = url[at + 1..].trim_start();
        if SCHEMES.iter().any(|scheme| rest.starts_with(scheme)) {
            seeds.push(url[start..at].trim());
            start = at + 1;
        }
    }
    seeds.push(url[start..].trim());
    seeds
}

fn redact_one(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{user_info}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = query
                .split_once('#')
                .map_or((query, None), |(q, f)| (q, Some(f)));
            let masked: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_password_param(name) => format!("{name}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            format!("{path}?{}{fragment}", masked.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// `text` with every password of `url` (user info, `pass=`, `password=`) replaced by `***`:
/// for texts that come from elsewhere (redis-rs) and might quote it.
pub(crate) fn scrub_password(url: &str, mut text: String) -> String {
    for seed in split_seeds(url) {
        text = scrub_one(seed, text);
    }
    text
}

fn scrub_one(url: &str, mut text: String) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return text;
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let mut secrets: Vec<&str> = Vec::new();
    if let Some((_, password)) = authority
        .rsplit_once('@')
        .and_then(|(info, _)| info.split_once(':'))
    {
        secrets.push(password);
    }
    if let Some((_, query)) = rest.split_once('?') {
        let query = query.split('#').next().unwrap_or_default();
        for pair in query.split('&') {
            if let Some((name, value)) = pair.split_once('=') {
                if is_password_param(name) {
                    secrets.push(value);
                }
            }
        }
    }
    for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "***");
    }
    text
}

fn is_password_param(name: &str) -> bool {
    name.eq_ignore_ascii_case("pass") || name.eq_ignore_ascii_case("password")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_split_only_before_a_scheme() {
        assert_eq!(
            split_seeds("redis://a:1, redis://b:2,rediss://c:3"),
            ["redis://a:1", "redis://b:2", "rediss://c:3"]
        );
        assert_eq!(split_seeds("redis://u:p,w@a:1"), ["redis://u:p,w@a:1"]);
        let text = scrub_password("redis://u:p1@a:1,redis://u:p2@b:2", "p1 and p2".into());
        assert_eq!(text, "*** and ***");
    }
}
