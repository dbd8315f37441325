//! PEP 440 versions and version specifiers, with the semantics of PyPA's `packaging` (which is
//! what pip applies): the ordering of `Version`, prefix matching for `==1.26.*`, the special
//! cases of `<` and `>` around pre-, post- and local releases, and the pre-release rule of
//! specifier sets ([`SpecifierSet::select`]).
//!
//! <https://packaging.python.org/en/latest/specifications/version-specifiers/>

use std::cmp::Ordering;
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// The grammar of the specification's appendix (also `packaging.version.VERSION_PATTERN`).
static VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)^\s*v?
        (?:(?P<epoch>[0-9]+)!)?
        (?P<release>[0-9]+(?:\.[0-9]+)*)
        (?P<pre>[-_.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_.]?(?P<pre_n>[0-9]+)?)?
        (?P<post>(?:-(?P<post_n1>[0-9]+))|(?:[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>[0-9]+)?))?
        (?P<dev>[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?
        (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
        \s*$",
    )
    .expect("the PEP 440 pattern compiles")
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PreKind {
    Alpha,
    Beta,
    Rc,
}

/// A local version label segment: numbers sort above strings, as in `packaging`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Local {
    Text(String),
    Number(u64),
}

/// A parsed, normalized PEP 440 version. Equality follows ordering (`1.0 == 1.0.0`).
#[derive(Debug, Clone)]
pub struct Version {
    epoch: u64,
    release: Vec<u64>,
    pre: Option<(PreKind, u64)>,
    post: Option<u64>,
    dev: Option<u64>,
    local: Vec<Local>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a PEP 440 version")]
pub struct InvalidVersion(pub String);

impl std::str::FromStr for Version {
    type Err = InvalidVersion;

    fn from_str(s: &str) -> Result<Version, InvalidVersion> {
        let bad = || InvalidVersion(s.chars().take(100).collect());
        let caps = VERSION.captures(s).ok_or_else(bad)?;
        let number = |name: &str| -> Result<Option<u64>, InvalidVersion> {
            caps.name(name)
                .map(|m| m.as_str().parse::<u64>().map_err(|_| bad()))
                .transpose()
        };
        let release = caps["release"]
            .split('.')
            .map(|n| n.parse::<u64>().map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        let pre = match caps.name("pre_l") {
            None => None,
            Some(l) => {
                let kind = match l.as_str().to_ascii_lowercase().as_str() {
                    "a" | "alpha" => PreKind::Alpha,
                    "b" | "beta" => PreKind::Beta,
                    _ => PreKind::Rc, // c, rc, pre, preview
                };
                Some((kind, number("pre_n")?.unwrap_or(0)))
            }
        };
        let post = match caps.name("post") {
            None => None,
            Some(_) => Some(number("post_n1")?.or(number("post_n2")?).unwrap_or(0)),
        };
        let dev = match caps.name("dev") {
            None => None,
            Some(_) => Some(number("dev_n")?.unwrap_or(0)),
        };
        let local = caps
            .name("local")
            .map(|l| {
                l.as_str()
                    .split(['-', '_', '.'])
                    .map(|seg| match seg.parse::<u64>() {
                        Ok(n) if seg.bytes().all(|b| b.is_ascii_digit()) => Local::Number(n),
                        _ => Local::Text(seg.to_ascii_lowercase()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Version {
            epoch: number("epoch")?.unwrap_or(0),
            release,
            pre,
            post,
            dev,
            local,
        })
    }
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        s.parse().ok()
    }

    /// Pre-releases and developmental releases (`1.0a1`, `1.0rc2`, `1.0.dev3`).
    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some() || self.dev.is_some()
    }

    pub fn is_postrelease(&self) -> bool {
        self.post.is_some()
    }

    /// The version without its local label.
    fn public(&self) -> Version {
        Version {
            local: Vec::new(),
            ..self.clone()
        }
    }

    /// Epoch and release only (`packaging`'s `base_version`).
    fn base(&self) -> Version {
        Version {
            epoch: self.epoch,
            release: self.release.clone(),
            pre: None,
            post: None,
            dev: None,
            local: Vec::new(),
        }
    }

    /// Release without trailing zeros, for comparing (`1.0` and `1` are equal).
    fn trimmed_release(&self) -> &[u64] {
        let end = self
            .release
            .iter()
            .rposition(|&n| n != 0)
            .map_or(0, |i| i + 1);
        &self.release[..end]
    }

    /// Whether the epoch and release start with `prefix`, the release zero-padded first
    /// (`==1.26.*` matches `1.26`, `1.26.0rc1` and `1.26.3`, not `1.2` or `1`).
    fn has_prefix(&self, epoch: u64, prefix: &[u64]) -> bool {
        self.epoch == epoch
            && prefix
                .iter()
                .enumerate()
                .all(|(i, p)| self.release.get(i).copied().unwrap_or(0) == *p)
    }
}

/// `packaging`'s sort key: a dev-only release sorts before the pre-releases of its version,
/// a final release after them; post-releases after the final one; local labels last.
impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        fn pre_key(v: &Version) -> (u8, Option<(PreKind, u64)>) {
            match (v.pre, v.post, v.dev) {
                (None, None, Some(_)) => (0, None),
                (None, _, _) => (2, None),
                (pre, _, _) => (1, pre),
            }
        }
        fn dev_key(v: &Version) -> (bool, u64) {
            match v.dev {
                Some(n) => (false, n),
                None => (true, 0),
            }
        }
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| self.trimmed_release().cmp(other.trimmed_release()))
            .then_with(|| pre_key(self).cmp(&pre_key(other)))
            .then_with(|| self.post.cmp(&other.post))
            .then_with(|| dev_key(self).cmp(&dev_key(other)))
            .then_with(|| self.local.cmp(&other.local))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// The normalized form (`1.0-RC1` → `1.0rc1`, `1.0-1` → `1.0.post1`).
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != 0 {
            write!(f, "{}!", self.epoch)?;
        }
        let release: Vec<String> = self.release.iter().map(u64::to_string).collect();
        f.write_str(&release.join("."))?;
        if let Some((kind, n)) = self.pre {
            let l = match kind {
                PreKind::Alpha => "a",
                PreKind::Beta => "b",
                PreKind::Rc => "rc",
            };
            write!(f, "{l}{n}")?;
        }
        if let Some(n) = self.post {
            write!(f, ".post{n}")?;
        }
        if let Some(n) = self.dev {
            write!(f, ".dev{n}")?;
        }
        if !self.local.is_empty() {
            let local: Vec<String> = self
                .local
                .iter()
                .map(|l| match l {
                    Local::Text(s) => s.clone(),
                    Local::Number(n) => n.to_string(),
                })
                .collect();
            write!(f, "+{}", local.join("."))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Compatible,
    Equal,
    NotEqual,
    LessEqual,
    GreaterEqual,
    Less,
    Greater,
    Arbitrary,
}

impl Operator {
    fn as_str(self) -> &'static str {
        match self {
            Operator::Compatible => "~=",
            Operator::Equal => "==",
            Operator::NotEqual => "!=",
            Operator::LessEqual => "<=",
            Operator::GreaterEqual => ">=",
            Operator::Less => "<",
            Operator::Greater => ">",
            Operator::Arbitrary => "===",
        }
    }
}

#[derive(Debug, Clone)]
enum Target {
    Version(Version),
    /// `==X.Y.*` / `!=X.Y.*`: epoch and release prefix.
    Prefix(u64, Vec<u64>),
    /// `===text`: compared as a string.
    Text(String),
}

/// One clause, e.g. `>=4.2` or `==1.26.*`.
#[derive(Debug, Clone)]
pub struct Specifier {
    op: Operator,
    target: Target,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{text:?} is not a PEP 440 version specifier ({why})")]
pub struct InvalidSpecifier {
    pub text: String,
    pub why: &'static str,
}

impl std::str::FromStr for Specifier {
    type Err = InvalidSpecifier;

    fn from_str(s: &str) -> Result<Specifier, InvalidSpecifier> {
        let s = s.trim();
        let bad = |why| InvalidSpecifier {
            text: s.chars().take(100).collect(),
            why,
        };
        // Longest operators first: `===` before `==`, `<=` before `<`.
        let ops = [
            ("===", Operator::Arbitrary),
            ("~=", Operator::Compatible),
            ("==", Operator::Equal),
            ("!=", Operator::NotEqual),
            ("<=", Operator::LessEqual),
            (">=", Operator::GreaterEqual),
            ("<", Operator::Less),
            (">", Operator::Greater),
        ];
        let (op, rest) = ops
            .iter()
            .find_map(|(text, op)| s.strip_prefix(text).map(|rest| (*op, rest.trim())))
            .ok_or_else(|| bad("it must start with ~=, ==, !=, <=, >=, <, > or ==="))?;
        if rest.is_empty() {
            return Err(bad("no version after the operator"));
        }
        if op == Operator::Arbitrary {
            if rest.contains(char::is_whitespace) || rest.contains([',', ';']) {
                return Err(bad("=== takes one word"));
            }
            return Ok(Specifier {
                op,
                target: Target::Text(rest.to_owned()),
            });
        }
        if let Some(prefix) = rest.strip_suffix(".*") {
            if !matches!(op, Operator::Equal | Operator::NotEqual) {
                return Err(bad("only == and != take a .* wildcard"));
            }
            let v: Version = prefix
                .parse()
                .map_err(|_| bad("the part before .* is not a version"))?;
            if v.pre.is_some() || v.post.is_some() || v.dev.is_some() || !v.local.is_empty() {
                return Err(bad("a .* wildcard may follow only release numbers"));
            }
            return Ok(Specifier {
                op,
                target: Target::Prefix(v.epoch, v.release),
            });
        }
        let v: Version = rest.parse().map_err(|_| bad("not a valid version"))?;
        if !v.local.is_empty() && !matches!(op, Operator::Equal | Operator::NotEqual) {
            return Err(bad(
                "a local version (+label) is allowed only with == and !=",
            ));
        }
        if op == Operator::Compatible && v.release.len() < 2 {
            return Err(bad("~= needs at least two release numbers, e.g. ~=1.4"));
        }
        Ok(Specifier {
            op,
            target: Target::Version(v),
        })
    }
}

impl Specifier {
    /// Whether the clause names a pre-release, which makes a set accept pre-releases.
    fn names_prerelease(&self) -> bool {
        match &self.target {
            Target::Version(v) => self.op != Operator::NotEqual && v.is_prerelease(),
            Target::Text(t) => Version::parse(t).is_some_and(|v| v.is_prerelease()),
            Target::Prefix(..) => false,
        }
    }

    /// The comparison alone, without the pre-release rule (see [`SpecifierSet::select`]).
    /// `raw` is the version as upstream wrote it (for `===`); `version` its parse, if any.
    fn matches(&self, raw: &str, version: Option<&Version>) -> bool {
        let target = match &self.target {
            Target::Text(t) => {
                return raw.trim().eq_ignore_ascii_case(t)
                    || version.is_some_and(|v| v.to_string().eq_ignore_ascii_case(t));
            }
            Target::Prefix(epoch, prefix) => {
                let Some(v) = version else { return false };
                let hit = v.has_prefix(*epoch, prefix);
                return if self.op == Operator::Equal {
                    hit
                } else {
                    !hit
                };
            }
            Target::Version(t) => t,
        };
        let Some(v) = version else { return false };
        match self.op {
            Operator::Equal | Operator::NotEqual => {
                let equal = if target.local.is_empty() {
                    v.public() == *target
                } else {
                    v == target
                };
                equal == (self.op == Operator::Equal)
            }
            Operator::Compatible => {
                let prefix = &target.release[..target.release.len() - 1];
                v.public() >= *target && v.has_prefix(target.epoch, prefix)
            }
            Operator::LessEqual => v.public() <= *target,
            Operator::GreaterEqual => v.public() >= *target,
            // `<3.1` does not match 3.1's own pre-releases, unless it names a pre-release.
            Operator::Less => {
                let own_pre =
                    !target.is_prerelease() && v.is_prerelease() && v.base() == target.base();
                v < target && !own_pre
            }
            // `>3.1` matches neither 3.1's post-releases (unless it names one) nor 3.1+local.
            Operator::Greater => {
                let same_base = v.base() == target.base();
                let own_post = !target.is_postrelease() && v.is_postrelease() && same_base;
                let own_local = !v.local.is_empty() && same_base;
                v > target && !own_post && !own_local
            }
            Operator::Arbitrary => unreachable!("handled with its text target"),
        }
    }
}

impl fmt::Display for Specifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.op.as_str())?;
        match &self.target {
            Target::Version(v) => write!(f, "{v}"),
            Target::Text(t) => f.write_str(t),
            Target::Prefix(epoch, release) => {
                let v = Version {
                    epoch: *epoch,
                    release: release.clone(),
                    pre: None,
                    post: None,
                    dev: None,
                    local: Vec::new(),
                };
                write!(f, "{v}.*")
            }
        }
    }
}

/// Comma-separated clauses that must all match, e.g. `>=4.2,<5`. Empty: every version.
#[derive(Debug, Clone, Default)]
pub struct SpecifierSet(Vec<Specifier>);

impl std::str::FromStr for SpecifierSet {
    type Err = InvalidSpecifier;

    fn from_str(s: &str) -> Result<SpecifierSet, InvalidSpecifier> {
        if s.trim().is_empty() {
            return Ok(SpecifierSet::default());
        }
        s.split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(SpecifierSet)
    }
}

impl SpecifierSet {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn matches(&self, raw: &str, version: Option<&Version>) -> bool {
        self.0.iter().all(|s| s.matches(raw, version))
    }

    /// The versions the set selects among a project's `versions` (raw text and parse), the
    /// way pip chooses: pre-releases only when a clause names one, or when no final release
    /// matches (PEP 440, "Handling of pre-releases"). Unparseable versions match only `===`.
    pub fn select<'a>(&self, versions: &[(&'a str, Option<&Version>)]) -> Vec<&'a str> {
        let hits: Vec<(&'a str, bool)> = versions
            .iter()
            .filter(|(raw, v)| self.matches(raw, *v))
            .map(|(raw, v)| (*raw, v.is_some_and(Version::is_prerelease)))
            .collect();
        let allow_pre = self.0.iter().any(Specifier::names_prerelease)
            || hits.iter().all(|(_, is_pre)| *is_pre);
        hits.into_iter()
            .filter(|(_, is_pre)| allow_pre || !is_pre)
            .map(|(raw, _)| raw)
            .collect()
    }

    /// Whether `raw` matches every clause, pre-release or not (for blocklists: `django<3`
    /// blocks 2.2rc1 too).
    pub fn contains_any(&self, raw: &str, version: Option<&Version>) -> bool {
        self.matches(raw, version)
    }
}

/// Normalized, sorted clauses, e.g. `<5,>=4.2`: equal sets print equally.
impl fmt::Display for SpecifierSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        parts.sort();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_and_normalizes_every_spelling() {
        for (raw, normal) in [
            ("1.0", "1.0"),
            ("v1.0", "1.0"),
            (" 1.0 ", "1.0"),
            ("1!2.0", "1!2.0"),
            ("1.0a1", "1.0a1"),
            ("1.0-alpha.1", "1.0a1"),
            ("1.0.beta2", "1.0b2"),
            ("1.0c3", "1.0rc3"),
            ("1.0-RC3", "1.0rc3"),
            ("1.0pre", "1.0rc0"),
            ("1.0preview4", "1.0rc4"),
            ("1.0-1", "1.0.post1"),
            ("1.0.post", "1.0.post0"),
            ("1.0-rev2", "1.0.post2"),
            ("1.0r3", "1.0.post3"),
            ("1.0.dev", "1.0.dev0"),
            ("1.0-dev5", "1.0.dev5"),
            ("1.0a1.post2.dev3", "1.0a1.post2.dev3"),
            ("1.0+Ubuntu-1", "1.0+ubuntu.1"),
            ("2024.01.05", "2024.1.5"),
        ] {
            assert_eq!(v(raw).to_string(), normal, "{raw}");
        }
        for bad in [
            "",
            "1.0-beta-final",
            "one",
            "1.0.",
            "1..0",
            "1.0+",
            "1.0+a..b",
            "1.0 1",
        ] {
            assert!(Version::parse(bad).is_none(), "{bad:?} parsed");
        }
        assert!(Version::parse("99999999999999999999999").is_none());
    }

    #[test]
    fn orders_like_packaging() {
        // The ordering example of the specification, in ascending order.
        let ascending = [
            "1.0.dev456",
            "1.0a1",
            "1.0a2.dev456",
            "1.0a12.dev456",
            "1.0a12",
            "1.0b1.dev456",
            "1.0b2",
            "1.0b2.post345.dev456",
            "1.0b2.post345",
            "1.0rc1.dev456",
            "1.0rc1",
            "1.0",
            "1.0+abc.5",
            "1.0+abc.7",
            "1.0+5",
            "1.0.post456.dev34",
            "1.0.post456",
            "1.0.15",
            "1.1.dev1",
            "2.0",
            "1!0.1",
        ];
        for pair in ascending.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(v("1.0"), v("1.0.0"));
        assert_eq!(v("1.0"), v("1"));
        assert!(v("1.0.0.1") > v("1.0"));
        assert!(v("10.0") > v("9.9"));
    }

    #[test]
    fn prerelease_detection() {
        for pre in [
            "1.0a1",
            "1.0rc1",
            "1.0.dev0",
            "1.0b2.post1",
            "1.0.post1.dev2",
        ] {
            assert!(v(pre).is_prerelease(), "{pre}");
        }
        for fin in ["1.0", "1.0.post1", "1.0+local"] {
            assert!(!v(fin).is_prerelease(), "{fin}");
        }
    }

    fn matches(spec: &str, version: &str) -> bool {
        let s: Specifier = spec.parse().unwrap_or_else(|e| panic!("{e}"));
        s.matches(version, Version::parse(version).as_ref())
    }

    #[test]
    fn specifier_comparisons() {
        let yes = [
            ("==2.0", "2.0"),
            ("==2.0", "2"),
            ("==2.0", "2.0+deadbeef"),
            ("==2.0+deadbeef", "2.0+deadbeef"),
            ("==1.26.*", "1.26"),
            ("==1.26.*", "1.26.0rc1"),
            ("==1.26.*", "1.26.4"),
            ("==1.26.*", "1.26.4+local"),
            ("==1.*", "1.99"),
            ("==1.0.*", "1"),
            ("!=1.26.*", "1.27"),
            ("!=2.0", "2.1"),
            ("~=2.2", "2.3"),
            ("~=2.2", "2.2"),
            ("~=1.4.5", "1.4.9"),
            ("~=2.2.post3", "2.9"),
            ("~=1.4.5a4", "1.4.5"),
            (">=4.2", "4.2"),
            (">=4.2", "5.0rc1"),
            ("<=2.0", "2.0+local"),
            ("<3.1", "3.0"),
            ("<3.1", "3.0.dev0"),
            ("<3.1rc1", "3.1a1"),
            (">3.1", "3.2.post0"),
            (">3.1.post1", "3.1.post2"),
            (">1.7", "1.7.1"),
            ("===1.0", "1.0"),
            ("===foobar", "FooBar"),
        ];
        for (spec, version) in yes {
            assert!(matches(spec, version), "{spec} should match {version}");
        }
        let no = [
            ("==2.0", "2.0.1"),
            ("==2.0+deadbeef", "2.0+cafe"),
            ("==1.26.*", "1.2"),
            ("==1.26.*", "1"),
            ("==1.26.*", "1.27.0"),
            ("==1.26.*", "1!1.26.0"),
            ("!=1.26.*", "1.26.1"),
            ("!=2.0", "2.0+local"),
            ("~=2.2", "3.0"),
            ("~=2.2", "2.1"),
            ("~=1.4.5", "1.5.0"),
            (">=4.2", "4.1.9"),
            ("<3.1", "3.1rc1"),
            ("<3.1", "3.1.dev0"),
            ("<3.1", "3.1"),
            (">3.1", "3.1.post0"),
            (">3.1", "3.1+local"),
            (">3.1", "3.1"),
            ("===1.0", "1.0.0"),
            (">=1.0", "not-a-version"),
        ];
        for (spec, version) in no {
            assert!(!matches(spec, version), "{spec} should not match {version}");
        }
    }

    #[test]
    fn bad_specifiers_are_refused_with_a_reason() {
        for bad in [
            "4.2",
            ">=",
            "=>4.2",
            "~=1",
            ">=1.0.*",
            "==1.0a1.*",
            "<1.0+local",
            ">=x",
            "== 1 2",
        ] {
            assert!(bad.parse::<Specifier>().is_err(), "{bad:?} parsed");
        }
        assert!("".parse::<SpecifierSet>().unwrap().is_empty());
        assert!(">=1,".parse::<SpecifierSet>().is_err());
    }

    fn select<'a>(spec: &str, versions: &[&'a str]) -> Vec<&'a str> {
        let set: SpecifierSet = spec.parse().unwrap();
        let parsed: Vec<_> = versions.iter().map(|s| Version::parse(s)).collect();
        let pairs: Vec<_> = versions
            .iter()
            .zip(&parsed)
            .map(|(r, p)| (*r, p.as_ref()))
            .collect();
        set.select(&pairs)
    }

    #[test]
    fn sets_follow_the_prerelease_rule() {
        let all = ["4.1", "4.2", "4.2.1", "5.0a1", "5.0rc1", "5.0"];
        assert_eq!(select(">=4.2", &all), ["4.2", "4.2.1", "5.0"]);
        assert_eq!(select(">=4.2,<5", &all), ["4.2", "4.2.1"]);
        // Naming a pre-release lets pre-releases in.
        assert_eq!(select(">=5.0a1", &all), ["5.0a1", "5.0rc1", "5.0"]);
        // Only pre-releases match: they are what pip would install.
        assert_eq!(select(">4.2.1,!=5.0", &all), ["5.0a1", "5.0rc1"]);
        // `<5.0` leaves out 5.0's own pre-releases even when a clause names a pre-release.
        assert_eq!(select(">=5.0.dev0,<5.0", &all), Vec::<&str>::new());
        assert_eq!(select(">=5.1", &["5.0", "6.0b1"]), ["6.0b1"]);
        assert_eq!(select(">=6", &["5.0", "6.0b1"]), Vec::<&str>::new());
        assert_eq!(
            select("==1.26.*", &["1.25.2", "1.26.0rc1", "1.26.0", "1.26.4"]),
            ["1.26.0", "1.26.4"]
        );
        assert_eq!(select("", &["1.0", "2.0b1"]), ["1.0"]);
    }

    #[test]
    fn sets_print_canonically() {
        let a: SpecifierSet = "<5 , >=4.2.0".parse().unwrap();
        let b: SpecifierSet = ">=4.2.0,<5".parse().unwrap();
        assert_eq!(a.to_string(), b.to_string());
        assert_eq!(a.to_string(), "<5,>=4.2.0");
        let w: SpecifierSet = "== 1.26.*".parse().unwrap();
        assert_eq!(w.to_string(), "==1.26.*");
    }
}
