//! Reading the host's apt configuration (to reuse its Debian mirror) and
//! `/etc/os-release`. Pure parsing, no side effects.

use std::fs;
use std::path::Path;

/// One apt source entry (from a one-line `.list` file or a deb822 `.sources` paragraph).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `deb` and/or `deb-src`.
    pub types: Vec<String>,
    /// Repository URIs.
    pub uris: Vec<String>,
    /// Suites (`bookworm`, `bookworm-updates`, ...).
    pub suites: Vec<String>,
    /// Components (`main`, ...).
    pub components: Vec<String>,
}

/// Parses a classic one-line-style sources.list
/// (`deb [opts] URI SUITE COMPONENT...`). Comments and `deb-src` lines are kept out.
pub fn parse_one_line(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let mut rest = rest.trim_start();
        if rest.starts_with('[') {
            match rest.find(']') {
                Some(end) => rest = rest[end + 1..].trim_start(),
                None => continue,
            }
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(Source {
            types: vec!["deb".into()],
            uris: vec![uri.into()],
            suites: vec![suite.into()],
            components: words.map(String::from).collect(),
        });
    }
    out
}

/// Parses a deb822-style `.sources` file. Paragraphs with `Enabled: no` are dropped.
pub fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut flush = |fields: &mut Vec<(String, String)>| {
        if fields.is_empty() {
            return;
        }
        let get = |key: &str| -> Vec<String> {
            fields
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(key))
                .flat_map(|(_, v)| v.split_whitespace().map(String::from))
                .collect()
        };
        let enabled = get("Enabled");
        if !enabled.iter().any(|v| v.eq_ignore_ascii_case("no")) {
            out.push(Source {
                types: get("Types"),
                uris: get("URIs"),
                suites: get("Suites"),
                components: get("Components"),
            });
        }
        fields.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut fields);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            // Continuation of the previous field.
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    flush(&mut fields);
    out
}

/// Reads all apt sources of the host under `etc_apt` (normally `/etc/apt`):
/// `sources.list` and the `.list` / `.sources` files in `sources.list.d`.
pub fn read_host_sources(etc_apt: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    if let Ok(text) = fs::read_to_string(etc_apt.join("sources.list")) {
        out.extend(parse_one_line(&text));
    }
    let mut files: Vec<_> = fs::read_dir(etc_apt.join("sources.list.d"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("list") => out.extend(parse_one_line(&text)),
            Some("sources") => out.extend(parse_deb822(&text)),
            _ => {}
        }
    }
    out
}

/// Picks the Debian archive mirror from the host's sources: the URI of a
/// binary (`deb`) source of the host's release `codename` (not the security
/// archive), with `main`. Falls back to any `deb` source of a suite of that
/// release (`bookworm-updates`, `bookworm-backports`). Only http(s) URIs.
pub fn pick_mirror(sources: &[Source], codename: &str) -> Option<String> {
    let usable = |s: &&Source, uri: &str| {
        s.types.iter().any(|t| t == "deb")
            && (uri.starts_with("http://") || uri.starts_with("https://"))
            && !uri.contains("security")
    };
    let exact = sources.iter().find_map(|s| {
        let uri = s.uris.first()?;
        (usable(&s, uri)
            && s.suites.iter().any(|x| x == codename)
            && (s.components.is_empty() || s.components.iter().any(|c| c == "main")))
        .then(|| uri.clone())
    });
    let prefix = format!("{codename}-");
    let loose = || {
        sources.iter().find_map(|s| {
            let uri = s.uris.first()?;
            (usable(&s, uri)
                && s.suites
                    .iter()
                    .any(|x| x.starts_with(&prefix) && !x.ends_with("-security")))
            .then(|| uri.clone())
        })
    };
    exact
        .or_else(loose)
        .map(|u| u.trim_end_matches('/').to_string())
}

/// Whether some source already provides `suite` (e.g. `bookworm-backports`).
pub fn has_suite(sources: &[Source], suite: &str) -> bool {
    sources
        .iter()
        .any(|s| s.types.iter().any(|t| t == "deb") && s.suites.iter().any(|x| x == suite))
}

/// The deb822 text of a sources file that adds `suite` from `mirror`.
pub fn backports_sources_file(mirror: &str, suite: &str) -> String {
    format!(
        "# Added by the winsys test bed (cargo xtask): newer qemu and libgbm-dev.\n\
         Types: deb\n\
         URIs: {mirror}\n\
         Suites: {suite}\n\
         Components: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
}

/// Reads a field (`ID`, `VERSION_CODENAME`) from os-release text.
pub fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "Types: deb\n\
# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
URIs: http://deb.debian.org/debian\n\
Suites: bookworm bookworm-updates\n\
Components: main\n\
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
\n\
Types: deb\n\
URIs: http://deb.debian.org/debian-security\n\
Suites: bookworm-security\n\
Components: main\n\
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

    #[test]
    fn deb822_host_file() {
        let s = parse_deb822(DEB822);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].suites, vec!["bookworm", "bookworm-updates"]);
        assert_eq!(s[1].uris, vec!["http://deb.debian.org/debian-security"]);
        assert_eq!(
            pick_mirror(&s, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        assert!(!has_suite(&s, "bookworm-backports"));
    }

    #[test]
    fn deb822_security_first_and_disabled() {
        let text = "Types: deb\nURIs: http://security.debian.org/debian-security\nSuites: bookworm-security\n\n\
Types: deb\nURIs: http://old.example/debian\nSuites: bookworm\nEnabled: no\n\n\
Types: deb deb-src\nURIs: https://mirror.example/debian/\nSuites: bookworm\nComponents: main contrib\n";
        let s = parse_deb822(text);
        assert_eq!(s.len(), 2);
        assert_eq!(
            pick_mirror(&s, "bookworm").as_deref(),
            Some("https://mirror.example/debian")
        );
    }

    #[test]
    fn one_line_sources() {
        let text = "# comment\n\
deb-src http://src.example/debian bookworm main\n\
deb [arch=amd64 signed-by=/x.gpg] http://ftp.de.debian.org/debian/ bookworm main contrib # trailing\n\
deb http://security.debian.org/debian-security bookworm-security main\n\
deb cdrom:[Debian GNU/Linux]/ bookworm main\n";
        let s = parse_one_line(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].components, vec!["main", "contrib"]);
        assert_eq!(
            pick_mirror(&s, "bookworm").as_deref(),
            Some("http://ftp.de.debian.org/debian")
        );
    }

    #[test]
    fn mirror_fallbacks() {
        let s = parse_one_line("deb http://m.example/debian bookworm-updates main\n");
        assert_eq!(
            pick_mirror(&s, "bookworm").as_deref(),
            Some("http://m.example/debian")
        );
        let s = parse_one_line(
            "deb http://security.debian.org/debian-security bookworm-security main\n",
        );
        assert_eq!(pick_mirror(&s, "bookworm"), None);
        assert_eq!(pick_mirror(&[], "bookworm"), None);
    }

    #[test]
    fn backports_file_roundtrip() {
        let text = backports_sources_file("http://deb.debian.org/debian", "bookworm-backports");
        let s = parse_deb822(&text);
        assert!(has_suite(&s, "bookworm-backports"));
        assert_eq!(s[0].uris, vec!["http://deb.debian.org/debian"]);
    }

    #[test]
    fn os_release() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_CODENAME=bookworm\n";
        assert_eq!(os_release_field(text, "ID").as_deref(), Some("debian"));
        assert_eq!(
            os_release_field(text, "VERSION_CODENAME").as_deref(),
            Some("bookworm")
        );
        assert_eq!(os_release_field(text, "NOPE"), None);
    }
}
