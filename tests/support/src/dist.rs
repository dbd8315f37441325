//! Small but valid distributions for installing with real pip and uv: a wheel with a
//! `.dist-info` (METADATA, WHEEL, RECORD with real hashes) and an sdist with PKG-INFO.

use std::io::Write;

use sha2::Digest;

pub struct Dist {
    pub filename: String,
    pub bytes: Vec<u8>,
    /// The wheel's METADATA, which is also its PEP 658 sidecar.
    pub metadata: Vec<u8>,
}

fn metadata(name: &str, version: &str, requires: &[&str]) -> Vec<u8> {
    let mut m = format!(
        "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nRequires-Python: >=3.7\n"
    );
    for r in requires {
        m.push_str(&format!("Requires-Dist: {r}\n"));
    }
    m.into_bytes()
}

/// RECORD's hash form: urlsafe base64 without padding.
pub fn record_hash(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let digest = sha2::Sha256::digest(bytes);
    let mut out = String::new();
    for chunk in digest.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    format!("sha256={out}")
}

pub fn wheel(name: &str, version: &str, requires: &[&str]) -> Dist {
    let module = name.replace('-', "_");
    let dist_info = format!("{module}-{version}.dist-info");
    let meta = metadata(name, version, requires);
    let files: Vec<(String, Vec<u8>)> = vec![
        (format!("{module}/__init__.py"), format!("VERSION = {version:?}\n").into_bytes()),
        (format!("{dist_info}/METADATA"), meta.clone()),
        (
            format!("{dist_info}/WHEEL"),
            b"Wheel-Version: 1.0\nGenerator: pymirror-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_vec(),
        ),
    ];
    let mut record = String::new();
    for (path, bytes) in &files {
        record.push_str(&format!("{path},{},{}\n", record_hash(bytes), bytes.len()));
    }
    record.push_str(&format!("{dist_info}/RECORD,,\n"));
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    for (path, bytes) in files.iter().chain(std::iter::once(&(
        format!("{dist_info}/RECORD"),
        record.into_bytes(),
    ))) {
        zip.start_file(path.as_str(), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    Dist {
        filename: format!("{module}-{version}-py3-none-any.whl"),
        bytes: zip.finish().unwrap().into_inner(),
        metadata: meta,
    }
}

pub fn sdist(name: &str, version: &str) -> Dist {
    let module = name.replace('-', "_");
    let top = format!("{module}-{version}");
    let meta = metadata(name, version, &[]);
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, bytes) in [
        (format!("{top}/PKG-INFO"), meta.clone()),
        (format!("{top}/{module}/__init__.py"), b"".to_vec()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        tar.append_data(&mut header, path, bytes.as_slice())
            .unwrap();
    }
    Dist {
        filename: format!("{top}.tar.gz"),
        bytes: tar.into_inner().unwrap().finish().unwrap(),
        metadata: meta,
    }
}
