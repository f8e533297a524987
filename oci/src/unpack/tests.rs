//! Layers built here, benign and malicious, read back through `extract`.

use super::*;
use std::io::Write;

/// A tar entry written byte by byte, so that malicious names and links can be made.
fn entry(out: &mut Vec<u8>, path: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut header = tar::Header::new_old();
    {
        let old = header.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn finish(mut out: Vec<u8>) -> Vec<u8> {
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(tar).unwrap();
    encoder.finish().unwrap()
}

fn file(path: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    entry(&mut out, path, tar::EntryType::Regular, "", data);
    finish(out)
}

#[test]
fn wanted_files_come_out_of_a_gzip_layer_stack() {
    let mut lower = Vec::new();
    entry(&mut lower, "configs/", tar::EntryType::Directory, "", b"");
    entry(
        &mut lower,
        "configs/a/catalog.json",
        tar::EntryType::Regular,
        "",
        b"{\"a\":1}",
    );
    entry(
        &mut lower,
        "./configs/b/catalog.json",
        tar::EntryType::Regular,
        "",
        b"{\"b\":1}",
    );
    entry(
        &mut lower,
        "usr/bin/opm",
        tar::EntryType::Regular,
        "",
        b"binary",
    );
    let lower = gzip(&finish(lower));
    let upper = gzip(&file("configs/a/catalog.json", b"{\"a\":2}"));
    let tree = extract(
        &[(OCI_LAYER_GZIP, &lower), (DOCKER_LAYER_GZIP, &upper)],
        &["/configs"],
        Limits::default(),
    )
    .unwrap();
    assert_eq!(
        tree.file("configs/a/catalog.json"),
        Some(&b"{\"a\":2}"[..]),
        "upper layer wins"
    );
    assert_eq!(
        tree.file("/configs/b/catalog.json"),
        Some(&b"{\"b\":1}"[..])
    );
    assert_eq!(tree.file("usr/bin/opm"), None, "not wanted");
    assert_eq!(tree.files_under("configs").count(), 2);
}

#[test]
fn whiteouts_and_opaque_directories_remove_lower_content() {
    let mut lower = Vec::new();
    entry(
        &mut lower,
        "configs/a/catalog.json",
        tar::EntryType::Regular,
        "",
        b"a",
    );
    entry(
        &mut lower,
        "configs/b/catalog.json",
        tar::EntryType::Regular,
        "",
        b"b",
    );
    entry(
        &mut lower,
        "metadata/annotations.yaml",
        tar::EntryType::Regular,
        "",
        b"x",
    );
    entry(
        &mut lower,
        "metadata/old.yaml",
        tar::EntryType::Regular,
        "",
        b"y",
    );
    let lower = finish(lower);
    let mut upper = Vec::new();
    entry(
        &mut upper,
        "configs/.wh.a",
        tar::EntryType::Regular,
        "",
        b"",
    );
    entry(
        &mut upper,
        "metadata/.wh..wh..opq",
        tar::EntryType::Regular,
        "",
        b"",
    );
    entry(
        &mut upper,
        "metadata/annotations.yaml",
        tar::EntryType::Regular,
        "",
        b"new",
    );
    let upper = finish(upper);
    let tree = extract(
        &[(OCI_LAYER_TAR, &lower), (OCI_LAYER_TAR, &upper)],
        &["configs", "metadata"],
        Limits::default(),
    )
    .unwrap();
    assert_eq!(tree.file("configs/a/catalog.json"), None, "whited out");
    assert_eq!(tree.file("configs/b/catalog.json"), Some(&b"b"[..]));
    assert_eq!(
        tree.file("metadata/old.yaml"),
        None,
        "the opaque dir hides lower files"
    );
    assert_eq!(
        tree.file("metadata/annotations.yaml"),
        Some(&b"new"[..]),
        "but not the layer's own"
    );
}

#[test]
fn zstd_layers_are_read() {
    // A zstd frame made by the reference encoder: `printf 'hello' | zstd` of a tar would be
    // bigger; ruzstd decodes raw blocks, so a frame with one raw block is enough here.
    let tar = file("configs/x.json", b"{}");
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd];
    // Frame header: single segment, 4-byte content size.
    frame.push(0b1010_0000);
    frame.extend_from_slice(&(tar.len() as u32).to_le_bytes());
    // One raw block, last: header = size << 3 | type(0) << 1 | last(1).
    let block_header = ((tar.len() as u32) << 3) | 1;
    frame.extend_from_slice(&block_header.to_le_bytes()[..3]);
    frame.extend_from_slice(&tar);
    let tree = extract(&[(OCI_LAYER_ZSTD, &frame)], &["configs"], Limits::default()).unwrap();
    assert_eq!(tree.file("configs/x.json"), Some(&b"{}"[..]));
}

fn refused(layers: &[(&str, &[u8])]) -> String {
    extract(layers, &["configs"], Limits::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn absolute_paths_and_dot_dot_are_refused() {
    let abs = file("/configs/x", b"");
    assert!(refused(&[(OCI_LAYER_TAR, &abs)]).contains("absolute paths are not allowed"));
    let up = file("configs/../../etc/passwd", b"");
    assert!(refused(&[(OCI_LAYER_TAR, &up)]).contains("`..` is not allowed"));
}

#[test]
fn symlink_and_hardlink_escapes_are_refused() {
    let mut out = Vec::new();
    entry(
        &mut out,
        "configs/evil",
        tar::EntryType::Symlink,
        "/etc",
        b"",
    );
    let abs = finish(out);
    assert!(refused(&[(OCI_LAYER_TAR, &abs)]).contains("leaves the image"));
    let mut out = Vec::new();
    entry(
        &mut out,
        "configs/evil",
        tar::EntryType::Symlink,
        "../../../etc",
        b"",
    );
    let rel = finish(out);
    assert!(refused(&[(OCI_LAYER_TAR, &rel)]).contains("leaves the image"));
    // A symlink to a directory inside, then a file written through it.
    let mut out = Vec::new();
    entry(
        &mut out,
        "configs/dir",
        tar::EntryType::Symlink,
        "../metadata",
        b"",
    );
    let link = finish(out);
    let through = file("configs/dir/x.json", b"{}");
    assert!(refused(&[(OCI_LAYER_TAR, &link), (OCI_LAYER_TAR, &through)]).contains("is a symlink"));
    let mut out = Vec::new();
    entry(
        &mut out,
        "configs/hard",
        tar::EntryType::Link,
        "../etc/shadow",
        b"",
    );
    let hard = finish(out);
    assert!(refused(&[(OCI_LAYER_TAR, &hard)]).contains("`..` is not allowed"));
    let mut out = Vec::new();
    entry(
        &mut out,
        "configs/hard",
        tar::EntryType::Link,
        "etc/shadow",
        b"",
    );
    let dangling = finish(out);
    assert!(refused(&[(OCI_LAYER_TAR, &dangling)]).contains("is not a file in the image"));
}

#[test]
fn device_files_are_refused() {
    let mut out = Vec::new();
    entry(&mut out, "configs/sda", tar::EntryType::Block, "", b"");
    let block = finish(out);
    assert!(refused(&[(OCI_LAYER_TAR, &block)]).contains("device files are not allowed"));
    let mut out = Vec::new();
    entry(&mut out, "configs/tty", tar::EntryType::Char, "", b"");
    let char_dev = finish(out);
    assert!(refused(&[(OCI_LAYER_TAR, &char_dev)]).contains("device files are not allowed"));
}

#[test]
fn decompression_bombs_stop_at_the_cap() {
    // 64 MiB of zeros compress to about 64 KiB.
    let tar = file("configs/zeros", &vec![0u8; 64 << 20]);
    let bomb = gzip(&tar);
    assert!(bomb.len() < 1 << 20);
    let err = extract(
        &[(OCI_LAYER_GZIP, &bomb)],
        &["configs"],
        Limits {
            max_bytes: 8 << 20,
            max_entries: 100,
        },
    )
    .unwrap_err();
    assert_eq!(err, UnpackError::TooManyBytes { limit: 8 << 20 });
    let mut many = Vec::new();
    for i in 0..50 {
        entry(
            &mut many,
            &format!("configs/f{i}"),
            tar::EntryType::Regular,
            "",
            b"",
        );
    }
    let many = finish(many);
    let err = extract(
        &[(OCI_LAYER_TAR, &many)],
        &["configs"],
        Limits {
            max_bytes: 1 << 30,
            max_entries: 10,
        },
    )
    .unwrap_err();
    assert_eq!(err, UnpackError::TooManyEntries { limit: 10 });
}

#[test]
fn unknown_layer_types_and_corrupt_layers_say_so() {
    let err = extract(&[("application/x-rar", b"")], &[], Limits::default()).unwrap_err();
    assert!(err
        .to_string()
        .contains("not a tar layer this reader knows"));
    let err = extract(&[(OCI_LAYER_GZIP, b"not gzip")], &[], Limits::default()).unwrap_err();
    assert!(
        matches!(err, UnpackError::Corrupt { layer: 0, .. }),
        "{err}"
    );
}

#[test]
fn layers_below_an_opaque_whiteout_of_the_wanted_path_are_not_read() {
    let corrupt = b"not a gzip stream at all".to_vec();
    let mut upper = Vec::new();
    entry(
        &mut upper,
        "configs/.wh..wh..opq",
        tar::EntryType::Regular,
        "",
        b"",
    );
    entry(
        &mut upper,
        "configs/a.json",
        tar::EntryType::Regular,
        "",
        b"{}",
    );
    let upper = gzip(&finish(upper));
    let layers = [(OCI_LAYER_GZIP, &corrupt[..]), (OCI_LAYER_GZIP, &upper[..])];
    let tree = extract(&layers, &["configs"], Limits::default()).unwrap();
    assert_eq!(tree.file("configs/a.json"), Some(&b"{}"[..]));
    // Another wanted path needs the lower layer, which is then read (and found corrupt).
    assert!(matches!(
        extract(&layers, &["configs", "etc"], Limits::default()),
        Err(UnpackError::Corrupt { layer: 0, .. })
    ));
    // So does a layer without the whiteout.
    let plain = gzip(&file("configs/a.json", b"{}"));
    let layers = [(OCI_LAYER_GZIP, &corrupt[..]), (OCI_LAYER_GZIP, &plain[..])];
    assert!(matches!(
        extract(&layers, &["configs"], Limits::default()),
        Err(UnpackError::Corrupt { layer: 0, .. })
    ));
}
