//! What a distribution's file name says, read by one parser for everyone: the filters (its
//! package type and tags) and the upstream client (a file's version when only a PEP 691 page
//! lists it). Naming rules: PEP 427 wheels (`name-ver(-build)?-python-abi-platform.whl`),
//! sdists (`name-ver.tar.gz`, `.zip`, …), eggs (`name-ver-pyX.Y(-platform).egg`) and the
//! legacy installers (`.exe`, `.msi`, `.rpm`, `.dmg`).

use super::ProjectName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PackageType {
    Sdist,
    Wheel,
    Egg,
    Wininst,
    Msi,
    Rpm,
    Dmg,
    Dumb,
}

/// Upstream's names (the JSON API `packagetype`) and the short names the config also accepts.
const PACKAGE_TYPES: &[(&str, &str, PackageType)] = &[
    ("sdist", "sdist", PackageType::Sdist),
    ("bdist_wheel", "wheel", PackageType::Wheel),
    ("bdist_egg", "egg", PackageType::Egg),
    ("bdist_wininst", "exe", PackageType::Wininst),
    ("bdist_msi", "msi", PackageType::Msi),
    ("bdist_rpm", "rpm", PackageType::Rpm),
    ("bdist_dmg", "dmg", PackageType::Dmg),
    ("bdist_dumb", "dumb", PackageType::Dumb),
];

impl PackageType {
    /// `sdist`, `bdist_wheel`, …, or the short form `wheel`, `egg`, `exe`, `msi`, `rpm`,
    /// `dmg`, `dumb`.
    pub fn from_name(name: &str) -> Option<PackageType> {
        let name = name.trim().to_ascii_lowercase();
        PACKAGE_TYPES
            .iter()
            .find(|(long, short, _)| name == *long || name == *short)
            .map(|(.., t)| *t)
    }

    pub fn name(self) -> &'static str {
        PACKAGE_TYPES
            .iter()
            .find(|(.., t)| *t == self)
            .map(|(long, ..)| *long)
            .expect("every type is listed")
    }

    pub fn names() -> String {
        PACKAGE_TYPES
            .iter()
            .map(|(long, short, _)| format!("{short} ({long})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// File name extensions and the package type each one means, longest first where one ends
/// another (`.tar.gz` before `.gz` would matter; none of ours overlap otherwise).
const EXTENSIONS: &[(&str, PackageType)] = &[
    (".whl", PackageType::Wheel),
    (".egg", PackageType::Egg),
    (".exe", PackageType::Wininst),
    (".msi", PackageType::Msi),
    (".rpm", PackageType::Rpm),
    (".dmg", PackageType::Dmg),
    (".tar.gz", PackageType::Sdist),
    (".tar.bz2", PackageType::Sdist),
    (".tar.xz", PackageType::Sdist),
    (".tgz", PackageType::Sdist),
    (".tar", PackageType::Sdist),
    (".zip", PackageType::Sdist),
];

/// Archive extensions of sdists and of `bdist_dumb` files (whose platform precedes them).
pub const ARCHIVE_EXTENSIONS: &[&str] = &[".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip"];

/// A distribution file name split into its stem and the package type its extension means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DistFilename<'a> {
    /// The name without its extension, as written (case kept).
    pub stem: &'a str,
    /// What the extension means (`bdist_dumb` archives read as sdists here; upstream's
    /// `packagetype` field tells them apart).
    pub packagetype: PackageType,
}

/// A wheel's PEP 427 fields, each as written (tag sets keep their `.` separators).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelName<'a> {
    /// `None` when the name has no field between the project and the tags.
    pub version: Option<&'a str>,
    pub python: &'a str,
    pub abi: &'a str,
    pub platform: &'a str,
}

impl<'a> DistFilename<'a> {
    /// `None` when the extension is none a distribution uses (compared ignoring case).
    pub fn parse(filename: &'a str) -> Option<DistFilename<'a>> {
        EXTENSIONS.iter().find_map(|(ext, packagetype)| {
            let cut = filename.len().checked_sub(ext.len())?;
            (filename.is_char_boundary(cut) && filename[cut..].eq_ignore_ascii_case(ext)).then(
                || DistFilename {
                    stem: &filename[..cut],
                    packagetype: *packagetype,
                },
            )
        })
    }

    /// The PEP 427 fields of a wheel (`None` for other files or a malformed wheel name).
    pub fn wheel(&self) -> Option<WheelName<'a>> {
        if self.packagetype != PackageType::Wheel {
            return None;
        }
        let parts: Vec<&str> = self.stem.rsplitn(4, '-').collect();
        let [platform, abi, python, rest] = parts[..] else {
            return None;
        };
        let version = rest.split('-').nth(1);
        Some(WheelName {
            version,
            python,
            abi,
            platform,
        })
    }

    /// The version of `project` this file is of: wheels from their second field; other files
    /// from what follows the project's name (which may itself contain `-`).
    pub fn version(&self, project: &ProjectName) -> Option<String> {
        if self.packagetype == PackageType::Wheel {
            return self.stem.split('-').nth(1).map(str::to_owned);
        }
        let stem = if self.packagetype == PackageType::Egg {
            // name-ver-pyX.Y(-plat)
            self.stem.rsplitn(2, "-py").last()?
        } else {
            self.stem
        };
        let parts: Vec<&str> = stem.split('-').collect();
        (1..parts.len()).find_map(|k| {
            let name = parts[..k].join("-");
            (ProjectName::new(&name).ok().as_ref() == Some(project)).then(|| parts[k..].join("-"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_names_of_every_kind() {
        let whl =
            DistFilename::parse("numpy-1.26.4-cp312-cp312-manylinux_2_17_x86_64.whl").unwrap();
        assert_eq!(whl.packagetype, PackageType::Wheel);
        let w = whl.wheel().unwrap();
        assert_eq!(
            (w.version, w.python, w.abi, w.platform),
            (Some("1.26.4"), "cp312", "cp312", "manylinux_2_17_x86_64")
        );
        let built = DistFilename::parse("cryptography-42.0.5-1-cp39-abi3-win_amd64.whl").unwrap();
        assert_eq!(built.wheel().unwrap().version, Some("42.0.5"));
        assert_eq!(DistFilename::parse("x-1.0.TAR.GZ").unwrap().stem, "x-1.0");
        assert_eq!(DistFilename::parse("x-1.0.txt"), None);
        assert_eq!(DistFilename::parse("bad.whl").unwrap().wheel(), None);
    }
}
